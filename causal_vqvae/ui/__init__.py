"""The web editor, ``causal-vqvae ui``: pick a model, upload an image (or draw one from the model's
procedural twin), apply its actions one click at a time with undo, and ask which action turns one
image into another.

Optional: it needs Gradio (``pip install "causal-vqvae[ui]"``), imported only when an app is built,
so ``import causal_vqvae`` and ``import causal_vqvae.ui`` never load it.

    from causal_vqvae.ui import build_app
    build_app("dsprites_twin", device="cpu").launch()
"""

from __future__ import annotations

from .app import UI_EXTRA, build_app, launch

__all__ = ["UI_EXTRA", "build_app", "launch"]
