"""The web editor's page (Gradio) and the steps behind it.

One model, chosen at the top (a released name from the list, or a model folder, a training run's
folder or a Hugging Face Hub id typed in), serves two tabs:

- **edit**: an input image, uploaded or drawn from the held-out images of the model's procedural
  twin ("draw a sample", by a seed); one button per action of the model, each applying that action
  to the current image with :func:`causal_vqvae.edit`; undo and reset; the result (with a download
  button) and the history of every step.
- **retrieve**: images A and B; :func:`causal_vqvae.retrieve_action` ranks the actions that could
  have turned A into B (the ``TOP_K`` most likely, in a table) and
  :func:`causal_vqvae.api.retrieval_image` draws A, B and A edited by each.

Images travel as PIL images in their own mode (a gray PNG stays gray: the API converts what the
model needs and converts back) and are served as PNG, so the page shows the API's result pixel for
pixel. A history is a list of ``(step, image)``, the input first; the steps (:func:`start`,
:func:`apply_action`, :func:`undo`, :func:`reset`, :func:`draw_sample`, :func:`retrieval`) are
plain functions, tested without a browser, and :func:`build_app` wires them to the page. A model is
loaded once per name and shared by every browser session; model calls run one at a time (the CPU
gains nothing from two, and the notes they raise are recorded process-wide). A mistake (no image
yet, a model that will not load) is a message on the page, never a traceback.
"""

from __future__ import annotations

import functools
import html
import random
import re
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from .. import api
from ..familiarity import UnfamiliarImageWarning
from ..images import ImageConversionWarning
from ..locate import RELEASED_NAMES
from ..pretrained import model_twin_version

if TYPE_CHECKING:
    import gradio
    import torch

    from ..model import CausalVQVAE

__all__ = [
    "CSS",
    "INPUT",
    "SAMPLE_POOL",
    "MAX_MODELS",
    "TOP_K",
    "UI_EXTRA",
    "History",
    "apply_action",
    "build_app",
    "describe",
    "draw_sample",
    "gallery",
    "import_gradio",
    "launch",
    "reset",
    "retrieval",
    "start",
    "undo",
]

UI_EXTRA = 'pip install "causal-vqvae[ui]"'
INPUT = "input"  # the name of a history's first step
SAMPLE_POOL = 64  # held-out twin images "draw a sample" picks from (rendered once per dataset)
TOP_K = 3  # actions a retrieval lists
MAX_MODELS = 4  # models a page keeps loaded at once
USER_ERRORS = (ValueError, TypeError, OSError)  # mistakes in what was given, shown as a message
# The page's style (Gradio takes it at launch: ``build_app(...).launch(css=CSS)``): images fill their
# box, drawn with square pixels (a 64x64 image is otherwise a stamp in a large frame, or a blur).
CSS = """
#input img, #result img, #image-a img, #image-b img { width: 100%; height: 100%; object-fit: contain; }
#input img, #result img, #image-a img, #image-b img, #history img, #retrieval img { image-rendering: pixelated; }
"""

History = list[tuple[str, Image.Image]]  # (the input or the action that made it, the image)
_COMPUTE = threading.Lock()  # one model call (or twin rendering) at a time


def import_gradio():
    """The ``gradio`` module, or an ImportError saying how to install it."""
    try:
        import gradio
    except ImportError as error:
        raise ImportError(f"the web editor needs Gradio, an optional extra: {UI_EXTRA}") from error
    return gradio


# ------------------------------------------------------------------------------------- the steps
def _noted(call: Callable[..., Any], *args: Any) -> tuple[Any, list[str]]:
    """``call(*args)`` under the compute lock, and the notes it raised: an image converted to fit
    the model, an image unlike the training data (a command line prints them; the page shows them).
    Other warnings are shown as usual."""
    with _COMPUTE, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ImageConversionWarning)
        warnings.simplefilter("always", UnfamiliarImageWarning)
        result = call(*args)
    notes = []
    for item in caught:
        if issubclass(item.category, (ImageConversionWarning, UnfamiliarImageWarning)):
            notes.append(str(item.message))
        else:
            warnings.showwarning(item.message, item.category, item.filename, item.lineno)
    return result, notes


def start(image: Image.Image | None) -> History:
    """The history of a new input: the input alone (empty without an image)."""
    return [] if image is None else [(INPUT, image)]


def apply_action(history: History, action: str, model: CausalVQVAE) -> tuple[History, list[str]]:
    """``history`` with one more step: ``action`` applied to its last image; and the notes the edit
    raised (see :func:`_noted`)."""
    if not history:
        raise ValueError("no image to edit yet: upload one, or draw a sample")
    edited, notes = _noted(api.edit, history[-1][1], action, model)
    return [*history, (action, edited)], notes


def undo(history: History) -> History:
    """``history`` without its last step (the input stays)."""
    return history[:-1] if len(history) > 1 else history


def reset(history: History) -> History:
    """The input alone."""
    return history[:1]


def current(history: History) -> Image.Image | None:
    """The image the next action applies to."""
    return history[-1][1] if history else None


def gallery(history: History) -> list[tuple[Image.Image, str]]:
    """The history as a gallery's ``(image, caption)`` items: ``0: input``, ``1: scale+``, ..."""
    return [(image, f"{step}: {name}") for step, (name, image) in enumerate(history)]


def to_pil(x: torch.Tensor) -> Image.Image:
    """One image (C, S, S), float in [0, 1], as a PIL image: L for one channel, RGB for three."""
    pixels = np.ascontiguousarray(x.float().clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).cpu().numpy())
    return Image.fromarray(pixels[:, :, 0] if pixels.shape[-1] == 1 else pixels)


@functools.lru_cache(maxsize=4)
def twin_images(dataset: str, twin_version: str = "1") -> torch.Tensor:
    """``SAMPLE_POOL`` held-out images (N, C, S, S) of ``dataset``'s procedural twin of renderer
    ``twin_version`` (of the real files where ``$CAUSAL_VQVAE_DATA_ROOT`` holds them and the version is
    "1"), rendered once per process (the CelebA twin is written to its cache folder on first use, which
    takes minutes)."""
    from datamodules.datamodule import (
        build_datamodule,  # the data layer: only this button needs it
    )

    module = build_datamodule(dataset, mode="images", num_workers=0, test_length=SAMPLE_POOL,
                              twin_version=twin_version)
    return module.sample_batch("test", size=SAMPLE_POOL)["image"]


def draw_sample(model: CausalVQVAE, seed: int) -> Image.Image:
    """A held-out image of the dataset (and 3D Shapes twin version) ``model`` was trained on, picked
    by ``seed`` among ``SAMPLE_POOL`` (the same seed, the same image)."""
    dataset = model.config.dataset
    if not dataset:
        raise ValueError("this model names no dataset, so there is no procedural twin to draw from: upload an image")
    # The 3D Shapes twin version the model was trained on, as training records it in metadata.json.
    version = (model_twin_version(model) or "1") if dataset == "shapes3d" else "1"
    with _COMPUTE:
        images = twin_images(dataset, version)
    return to_pil(images[random.Random(seed).randrange(len(images))])


def retrieval(image_a: Image.Image | None, image_b: Image.Image | None, model: CausalVQVAE,
              title: str) -> tuple[list[list[Any]], Image.Image, list[str]]:
    """The ``TOP_K`` most likely actions from A to B as table rows ``[action, "0.9876"]``, the
    picture of A, B and A edited by each, and the notes the model calls raised."""
    if image_a is None or image_b is None:
        raise ValueError("give both images: A (before) and B (after)")
    top_k = min(TOP_K, model.config.num_actions)

    def both() -> tuple[list[tuple[str, float]], Image.Image]:
        ranked = api.retrieve_action(image_a, image_b, model, top_k=top_k)
        return ranked, api.retrieval_image(image_a, image_b, ranked, model, title)

    (ranked, picture), notes = _noted(both)
    return [[name, f"{probability:.4f}"] for name, probability in ranked], picture, notes


def _plain(text: str) -> str:
    """``text`` with Markdown's special characters escaped: shown as written."""
    return re.sub(r"([\\`*_{}\[\]<>()#+\-.!|~])", r"\\\1", text)


def describe(name: str, model: CausalVQVAE) -> str:
    """One Markdown line about a loaded model: its dataset, image size and actions."""
    config = model.config
    size = f"{config.image_size}x{config.image_size}, {config.in_channels} channel(s)"
    actions = ", ".join(api.action_names(model))
    return (f"**{_plain(name)}** loaded: trained on {_plain(config.dataset or 'an unnamed dataset')}, "
            f"images {size}, {config.num_actions} actions: {_plain(actions)}")


# ------------------------------------------------------------------------------------- the page
def build_app(default_model: str | None = None, device: str = "cpu", any_model: bool = True) -> gradio.Blocks:
    """The editor as a Gradio app (call ``.launch()`` on it). ``default_model`` (a released name, a
    model folder, a run's folder or a Hub id) is loaded now, so a wrong one fails here; models are
    loaded on ``device``. ``any_model=False`` (a page served beyond this machine) offers only the
    released models and ``default_model``: visitors cannot make the server read a path of theirs.
    Raises ImportError (saying how to install it) without Gradio."""
    gr = import_gradio()
    models: dict[str, CausalVQVAE] = {}  # by the name they were loaded by, shared by all sessions
    allowed = None if any_model else {*RELEASED_NAMES, *([default_model] if default_model else [])}
    if default_model is not None:
        models[default_model] = api.load(default_model, device=device)

    def shown_errors(handler: Callable[..., Any]) -> Callable[..., Any]:
        """``handler`` with a user's mistake shown as an error message on the page."""

        @functools.wraps(handler)
        def run(*args: Any) -> Any:
            try:
                return handler(*args)
            except USER_ERRORS as error:
                raise gr.Error(str(error) or type(error).__name__, print_exception=False) from None

        return run

    def model_of(name: str | None) -> CausalVQVAE:
        if name not in models:
            raise ValueError("no model loaded yet: choose a released model, or type a folder and press load")
        return models[name]

    def show(history: History, notes: Sequence[str] = ()) -> tuple[History, Image.Image | None, list]:
        for note in notes:
            gr.Warning(html.escape(note))
        return history, current(history), gallery(history)

    def on_load(name: str | None, loaded: str | None) -> tuple[str | None, str]:
        """Load ``name``; on failure keep the model in use and say why, in the status box."""
        name = (name or "").strip()
        if not name:
            return loaded, "Choose a released model, or type a model folder, a run's folder or a Hub id."
        if allowed is not None and name not in allowed:
            return loaded, f"**This page loads only {', '.join(sorted(allowed))}**: it is served beyond its machine."
        try:
            with _COMPUTE:
                while len(models) >= MAX_MODELS:  # the oldest loaded model that no session started with goes
                    models.pop(next(k for k in models if k != default_model))
                models[name] = api.load(name, device=device)
        except Exception as error:  # noqa: BLE001 (whatever a file, a folder or the Hub got wrong: say it, go on)
            message = str(error) or type(error).__name__
            gr.Warning(f"could not load {html.escape(name)}")
            kept = f" (still using **{_plain(loaded)}**)" if loaded in models else ""
            return loaded, f"**Could not load {_plain(name)}**{kept}: {_plain(message)}"
        return name, describe(name, models[name])

    @shown_errors
    def on_action(action: str, history: History, name: str | None) -> tuple[History, Image.Image | None, list]:
        return show(*apply_action(history, action, model_of(name)))

    @shown_errors
    def on_sample(name: str | None, seed: float | None) -> tuple[Image.Image, int]:
        seed = int(seed or 0)
        return draw_sample(model_of(name), seed), seed + 1

    @shown_errors
    def on_retrieve(image_a: Image.Image | None, image_b: Image.Image | None,
                    name: str | None) -> tuple[list[list[Any]], Image.Image]:
        rows, picture, notes = retrieval(image_a, image_b, model_of(name), f"{name}: which action turns A into B?")
        for note in notes:
            gr.Warning(html.escape(note))
        return rows, picture

    @shown_errors
    def from_editor(history: History) -> tuple[Image.Image, Image.Image]:
        if not history:
            raise ValueError("the editor has no image yet: upload one, or draw a sample")
        return history[0][1], history[-1][1]

    released_default = default_model if default_model in RELEASED_NAMES else None
    typed_default = default_model if default_model is not None and released_default is None else ""
    # the image as given (its own mode), served as PNG: lossless, so the page shows the API's pixels
    image_options = {"type": "pil", "image_mode": None, "format": "png", "height": 280}
    with gr.Blocks(title="causal-vqvae editor", analytics_enabled=False) as app:
        gr.Markdown("# causal-vqvae: edit images by causal intervention on VQ-VAE codes")
        loaded = gr.State(default_model)
        history = gr.State([])
        with gr.Row(equal_height=True):
            released = gr.Dropdown(list(RELEASED_NAMES), value=released_default, label="released model")
            typed = gr.Textbox(value=typed_default, label="or a model folder, a training run's folder or a "
                               "Hugging Face Hub id (owner/name)", placeholder="runs/mine", scale=2,
                               visible=any_model)
            load_button = gr.Button("load", scale=0, min_width=80)
        status = gr.Markdown(describe(default_model, models[default_model]) if default_model else
                             "No model loaded yet: choose a released model, or type a folder and press load.",
                             elem_id="model-status")

        with gr.Tab("edit"):
            with gr.Row():
                with gr.Column():
                    source = gr.Image(label="input", sources=["upload", "clipboard"], elem_id="input",
                                      **image_options)
                    with gr.Row(equal_height=True):
                        seed = gr.Number(0, precision=0, minimum=0, label="sample seed")
                        sample_button = gr.Button("draw a sample")
                with gr.Column():
                    result = gr.Image(label="result", interactive=False, buttons=["download", "fullscreen"],
                                      elem_id="result", **image_options)
                    with gr.Row():
                        undo_button = gr.Button("undo")
                        reset_button = gr.Button("reset")

            @gr.render(inputs=loaded)
            def action_buttons(name: str | None) -> None:
                """One button per action of the model in use, drawn on page load and again when another
                model is loaded (by then ``steps``, the gallery below, exists)."""
                if name not in models:
                    gr.Markdown("Load a model to see its actions.")
                    return
                with gr.Row():
                    for action in api.action_names(models[name]):
                        gr.Button(action, size="sm", min_width=70).click(
                            functools.partial(on_action, action), [history, loaded], [history, result, steps])

            steps = gr.Gallery(label="history (the input, then each action)", columns=8, fit_columns=False,
                               height=200, object_fit="contain", format="png", elem_id="history")

        with gr.Tab("retrieve"):
            with gr.Row():
                image_a = gr.Image(label="A (before)", sources=["upload", "clipboard"], elem_id="image-a",
                                   **image_options)
                image_b = gr.Image(label="B (after)", sources=["upload", "clipboard"], elem_id="image-b",
                                   **image_options)
            with gr.Row():
                editor_button = gr.Button("take A and B from the editor (its input and result)")
                retrieve_button = gr.Button("which action turns A into B?", variant="primary")
            ranking = gr.Dataframe(headers=["action", "probability"], interactive=False,
                                   label=f"the {TOP_K} most likely actions")
            picture = gr.Image(label="A, B, and A edited by each action", interactive=False, elem_id="retrieval",
                               **image_options)

        released.input(on_load, [released, loaded], [loaded, status])
        load_button.click(on_load, [typed, loaded], [loaded, status])
        typed.submit(on_load, [typed, loaded], [loaded, status])
        source.change(lambda image: show(start(image)), source, [history, result, steps])
        sample_button.click(on_sample, [loaded, seed], [source, seed])
        undo_button.click(lambda h: show(undo(h)), history, [history, result, steps])
        reset_button.click(lambda h: show(reset(h)), history, [history, result, steps])
        editor_button.click(from_editor, history, [image_a, image_b])
        retrieve_button.click(on_retrieve, [image_a, image_b, loaded], [ranking, picture])
    return app


def launch(model: str | None = "shapes3d_twin", device: str = "cpu", host: str = "127.0.0.1", port: int = 7860,
           share: bool = False, json_output: bool = False) -> None:
    """Serve the editor of ``model`` at ``host:port`` (and a public gradio.live link with
    ``share``), print its address (with ``json_output``, as one JSON line: ``url``,
    ``share_url``, ``model``, ``device``), and return when interrupted (Ctrl+C)."""
    # Served beyond this machine (another host, or a public link): visitors choose among the
    # released models and the one given here, never a path or Hub id of their own.
    any_model = host in ("127.0.0.1", "localhost", "::1") and not share
    app = build_app(model, device, any_model=any_model)
    try:
        _, local_url, share_url = app.launch(server_name=host, server_port=port, share=share, css=CSS,
                                             prevent_thread_lock=True, quiet=True)
        if json_output:
            import json

            print(json.dumps({"url": local_url, "share_url": share_url, "model": model, "device": device}),
                  flush=True)
        else:
            print(f"causal-vqvae editor of {model or 'no model yet'} ({device}) at {local_url}", flush=True)
            if share_url:
                print(f"public link: {share_url}", flush=True)
            print("press Ctrl+C to stop", flush=True)
        while app.is_running:
            time.sleep(0.2)
    except KeyboardInterrupt:
        print("stopped", flush=True)
    finally:
        app.close(verbose=False)
