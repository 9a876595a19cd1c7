"""Editing and retrieval for people who have images, not tensors: ``load``, ``edit``,
``retrieve_action``, ``analogy``, ``traverse``.

Every function takes whatever image the caller has (a PIL image, a file path, a numpy array or a
torch tensor; one image or a batch), converts it to what the model reads (float (B, C, S, S) in
[0, 1], S = ``config.image_size``) and converts the result back to the same kind, size, mode and
dtype (:mod:`causal_vqvae.images`). A conversion that changes the image (resizing, a different
channel count) is reported by one :class:`ImageConversionWarning` per image, so nothing happens
silently.

An action is an id, a name (``"scale+"``), a ``(factor, direction)`` pair (``("scale", +1)``) or a
list of those applied in order. Names come from ``config.action_names`` alone: an action name is a
factor name followed by ``-`` or ``+``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image

from .actions import action_names, factor_actions, parse_actions
from .images import ImageConversionWarning, Restore, _to_batch, report_conversions, to_batch
from .locate import resolve_model
from .model import CausalVQVAE
from .traversal import (
    GRID_PAD,
    LABEL_LINE,
    LABEL_SCALE,
    NO_CHANGE,
    OUT_OF_RANGE,
    FactorState,
    Traversal,
    grid_image,
    labelled_grid_image,
    read_factor_state,
    traverse,
)

__all__ = [
    "ImageConversionWarning",
    "report_conversions",
    "Restore",
    "RETRIEVAL_METHODS",
    "load",
    "action_names",
    "factor_actions",
    "parse_actions",
    "to_batch",
    "edit",
    "retrieve_action",
    "analogy",
    "Traversal",
    "FactorState",
    "read_factor_state",
    "OUT_OF_RANGE",
    "NO_CHANGE",
    "traverse",
    "grid_image",
    "labelled_grid_image",
]

RETRIEVAL_METHODS = ("transition", "head")
# The default, as in CausalVQVAE.retrieve: on 5,000 held-out twin pairs the released models retrieve
# 99.98% (3D Shapes) and 99.94% (dSprites) of actions with the head, 99.96% and 99.66% by transition
# (experiments/twin_v4/longer_edit_loss_10000/, benchmarks/results/window/).
DEFAULT_RETRIEVAL_METHOD = "head"
ModelLike = CausalVQVAE | str | os.PathLike


# ------------------------------------------------------------------------------------- loading
def load(
    path: str | os.PathLike, device: str | torch.device | None = None, expect_dataset: str | None = None
) -> CausalVQVAE:
    """Load a model, ready to use: in eval mode, on ``device`` (default: cuda if available, else
    cpu). ``path``: a model directory written by ``save_pretrained`` (or a file inside it), a
    training run's folder (its final stage), a released model's name (``"shapes3d_twin"``,
    ``"dsprites_twin"``) or a Hugging Face Hub id (``"owner/name"``, read from the Hub's cache when
    there; :func:`causal_vqvae.locate.resolve_model`). ``expect_dataset`` refuses a model trained
    for another dataset."""
    if not isinstance(path, (str, os.PathLike)) or not str(path).strip():
        raise TypeError(f"load() takes a model folder, a training run's folder, a released name or a Hugging Face "
                        f"Hub id, got {path!r}" + (" (an empty name)" if isinstance(path, str) else
                                                   f" ({type(path).__name__})"))
    directory = resolve_model(path)
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    expect = None if expect_dataset is None else {"dataset": expect_dataset}
    return CausalVQVAE.from_pretrained(directory, map_location=torch.device(device), expect=expect).eval()


def _resolve_model(model: ModelLike) -> CausalVQVAE:
    if isinstance(model, CausalVQVAE):
        return model
    if isinstance(model, (str, os.PathLike)):
        return load(model)
    raise TypeError(
        f"model must be a CausalVQVAE or the path of a model directory, got {type(model).__name__}; "
        "use causal_vqvae.load(path) once and pass the model to every call"
    )


# ------------------------------------------------------------------------------------- editing
def edit(image: Any, action: Any, model: ModelLike) -> Any:
    """Apply ``action`` (an id, a name such as ``"scale+"``, a ``(factor, direction)`` pair, or a
    list of those applied in order, in code space) to ``image`` and return the result as the same
    kind of object at the input's size (see :func:`to_batch`; a path gives a PIL image). A batch
    gets the same action(s) on every image."""
    model = _resolve_model(model)
    ids = parse_actions(model, action)
    x, restore = _to_batch(image, model, stacklevel=3)
    return restore(model.edit_sequence(x, ids))


def _check_method(method: str) -> None:
    if method not in RETRIEVAL_METHODS:
        raise ValueError(f"unknown retrieval method {method!r}; use one of {RETRIEVAL_METHODS}")


def _pair_probs(
    image_a: Any, image_b: Any, model: CausalVQVAE, method: str, stacklevel: int
) -> tuple[torch.Tensor, bool]:
    """(P, A) action probabilities for the P pairs of (image_a, image_b), and whether it was a batch.
    A single image on one side is paired with every image of the other."""
    _check_method(method)
    xa, restore_a = _to_batch(image_a, model, stacklevel)
    xb, restore_b = _to_batch(image_b, model, stacklevel)
    count_a, count_b = xa.shape[0], xb.shape[0]
    if count_a != count_b and 1 not in (count_a, count_b):
        raise ValueError(f"image_a holds {count_a} images and image_b {count_b}: give as many, or one on a side")
    count = max(count_a, count_b)
    xa, xb = xa.expand(count, -1, -1, -1), xb.expand(count, -1, -1, -1)
    probs = model.retrieve(xa, xb, method=method).probs.float().cpu()  # (P, A)
    return probs, restore_a.batched or restore_b.batched


def _ranked(probs: torch.Tensor, names: Sequence[str], top_k: int) -> list[tuple[str, float]]:
    order = torch.argsort(probs, descending=True, stable=True)[:top_k]
    return [(names[i], float(probs[i])) for i in order.tolist()]


def retrieve_action(
    image_a: Any, image_b: Any, model: ModelLike, method: str = DEFAULT_RETRIEVAL_METHOD, top_k: int | None = None
) -> list[tuple[str, float]] | list[list[tuple[str, float]]]:
    """Which action turns ``image_a`` into ``image_b``? Ranked ``(name, probability)``, most likely
    first (ties by id), the ``top_k`` best (default all A, whose probabilities sum to 1). For batched
    inputs, one such list per pair. ``method``: "head" (the learned retrieval classifier, the
    default) or "transition" (score every action by the structural equations)."""
    model = _resolve_model(model)
    num_actions = model.config.num_actions
    if top_k is None:
        top_k = num_actions
    if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or not 1 <= top_k <= num_actions:
        raise ValueError(f"top_k must be an int in [1, {num_actions}] or None, got {top_k!r}")
    probs, batched = _pair_probs(image_a, image_b, model, method, stacklevel=4)
    names = action_names(model)
    ranked = [_ranked(row, names, int(top_k)) for row in probs]
    return ranked if batched else ranked[0]


def analogy(
    image_a: Any, image_b: Any, image_c: Any, model: ModelLike, method: str = DEFAULT_RETRIEVAL_METHOD
) -> tuple[Any, str | list[str]]:
    """A is to B as C is to ...: retrieve the most likely action from ``image_a`` to ``image_b`` and
    apply it to ``image_c``. Returns ``(edited C, action name)``, edited C of the same kind as
    ``image_c``; for a batched ``image_c`` the names are a list, one per image. One (A, B) pair
    serves every image of C; a batch of pairs needs as many images in C."""
    model = _resolve_model(model)
    probs, _ = _pair_probs(image_a, image_b, model, method, stacklevel=4)
    x, restore = _to_batch(image_c, model, stacklevel=3)
    pairs, count = probs.shape[0], x.shape[0]
    if pairs not in (1, count):
        raise ValueError(f"{pairs} (image_a, image_b) pairs for {count} images in image_c: give one pair or {count}")
    actions = probs.argmax(-1).expand(count).to(x.device)
    edited = restore(model.edit(x, actions))
    names = [action_names(model)[i] for i in actions.tolist()]
    return edited, names if restore.batched else names[0]


@torch.no_grad()
def retrieval_image(image_a: Any, image_b: Any, ranked: Sequence[tuple[str, float]], model: ModelLike,
                    title: str) -> Image.Image:
    """The picture of a retrieval: A, B, then A edited by each ranked action (``(name, probability)``
    as :func:`retrieve_action` gives them, best first), each cell headed by what it shows and the
    action's probability, ``title`` above. The edit that looks like B shows the answer. Always RGB."""
    from PIL import ImageDraw

    model = _resolve_model(model)
    xa, _ = _to_batch(image_a, model, stacklevel=3)
    xb, _ = _to_batch(image_b, model, stacklevel=3)
    if xa.shape[0] != 1 or xb.shape[0] != 1:
        raise ValueError("retrieval_image takes one image A and one image B, not batches")
    ids = [parse_actions(model, name)[0] for name, _ in ranked]
    edits = model.edit(xa.expand(len(ids), -1, -1, -1), torch.tensor(ids, device=xa.device))
    frames = torch.cat([xa, xb, edits.to(xa.dtype)]).float().cpu().unsqueeze(0)  # (1, 2 + k, C, S, S)
    labels = ("A", "B", *(f"{i}. {name}" for i, (name, _) in enumerate(ranked, start=1)))
    grid = grid_image(Traversal(frames, (labels,), ("retrieval",))).convert("RGB")
    grid = grid.resize((grid.width * LABEL_SCALE, grid.height * LABEL_SCALE), Image.NEAREST)
    side, pad = frames.shape[-1] * LABEL_SCALE, GRID_PAD * LABEL_SCALE
    top = 3 * LABEL_LINE + 4
    canvas = Image.new("RGB", (max(grid.width, 8 * len(title) + 8), top + grid.height), "white")
    canvas.paste(grid, (0, top))
    draw = ImageDraw.Draw(canvas)
    draw.text((4, 2), title, fill="black")
    notes = ("before", "after", *(f"p = {prob:.3f}" for _, prob in ranked))
    for column, (label, note) in enumerate(zip(labels, notes)):
        x = pad + column * (side + pad) + 2
        draw.text((x, LABEL_LINE + 2), label, fill="black")
        draw.text((x, 2 * LABEL_LINE + 2), note, fill="black")
    return canvas
