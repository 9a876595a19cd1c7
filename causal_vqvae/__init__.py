"""causal_vqvae: image editing by causal intervention on VQ-VAE codes.

The model is a plain ``torch.nn.Module`` (:class:`CausalVQVAE`, composed from :mod:`causal_vqvae.nn`);
training with Lightning lives in :mod:`causal_vqvae.training`, the benchmark's metrics and judges in
:mod:`causal_vqvae.eval`, the command lines in :mod:`causal_vqvae.cli`, each imported only when asked
for. The layers and what may import what: ``docs/architecture.md``.

The names below are imported on first use (PEP 562), so that ``import causal_vqvae.cli.main`` and
``causal-vqvae --help`` do not load torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "analogy": ".api",
    "edit": ".api",
    "load": ".api",
    "retrieve_action": ".api",
    "traverse": ".api",
    "AutoencoderLoss": ".model",
    "AutoencoderOutput": ".model",
    "CausalVQVAE": ".model",
    "DecoderLoss": ".model",
    "ModelConfig": ".config",
    "RetrievalLoss": ".model",
    "RetrievalOutput": ".nn.retrieval",
    "TransitionLoss": ".nn.transition",
    "TransitionOutput": ".nn.transition",
}
__all__ = [
    "analogy",
    "edit",
    "load",
    "retrieve_action",
    "traverse",
    "AutoencoderLoss",
    "AutoencoderOutput",
    "CausalVQVAE",
    "DecoderLoss",
    "ModelConfig",
    "RetrievalLoss",
    "RetrievalOutput",
    "TransitionLoss",
    "TransitionOutput",
]
__version__ = "0.1.0"

if TYPE_CHECKING:
    from .api import analogy, edit, load, retrieve_action, traverse
    from .config import ModelConfig
    from .model import AutoencoderLoss, AutoencoderOutput, CausalVQVAE, DecoderLoss, RetrievalLoss
    from .nn.retrieval import RetrievalOutput
    from .nn.transition import TransitionLoss, TransitionOutput


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'causal_vqvae' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name], __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
