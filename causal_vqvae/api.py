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

import difflib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from einops import rearrange
from PIL import Image

from .images import (
    ImageConversionWarning,
    Restore,
    _to_batch,
    report_conversions,
    to_batch,
)
from .locate import resolve_model
from .model import CausalVQVAE

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
    "traverse",
    "grid_image",
    "labelled_grid_image",
]

RETRIEVAL_METHODS = ("transition", "head")
# The default, as in CausalVQVAE.retrieve: on 5,000 held-out twin pairs the released models retrieve
# 99.98% (3D Shapes) and 99.86% (dSprites) of actions with the head, 99.66% and 97.54% by transition
# (benchmarks/results/edits/bench_*_edit1000_retrieval_cpu.json).
DEFAULT_RETRIEVAL_METHOD = "head"
ModelLike = CausalVQVAE | str | os.PathLike
_DIRECTIONS = {"+": 1, "-": -1, "+1": 1, "-1": -1, "plus": 1, "minus": -1}
GRID_PAD = 2  # pixels between cells and around a traversal grid
GRID_BACKGROUND = 0.5  # grey: visible against both black (dSprites) and bright backgrounds


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


# ------------------------------------------------------------------------------------- actions
def action_names(model: CausalVQVAE) -> tuple[str, ...]:
    """The A action names of ``model`` (``action_<id>`` where the config has none)."""
    config = model.config
    return tuple(config.action_name(i) for i in range(config.num_actions))


def factor_actions(model: CausalVQVAE) -> dict[str, dict[int, int]]:
    """``{factor: {-1: id, +1: id}}`` read from the action names, in the order factors first appear.
    A factor has only the directions that are named (an empty dict when no name ends in -/+)."""
    table: dict[str, dict[int, int]] = {}
    for action_id, name in enumerate(action_names(model)):
        if len(name) > 1 and name[-1] in "+-":
            table.setdefault(name[:-1], {})[1 if name[-1] == "+" else -1] = action_id
    return table


def _valid_actions(model: CausalVQVAE, near: str | None = None) -> str:
    """The valid actions by name and id; with ``near``, the names closest to it first."""
    names = action_names(model)
    listed = ", ".join(f"{name} ({i})" for i, name in enumerate(names))
    close = difflib.get_close_matches(near, names, n=3, cutoff=0.5) if near else []
    hint = f"did you mean {' or '.join(close)}? " if close else ""
    return f"{hint}valid actions: {listed}"


def _direction(value: Any) -> int | None:
    """+1 / -1 for a direction token ("+", "-", +1, -1, "plus", "minus"), else None."""
    if isinstance(value, (bool, np.bool_)):
        return None
    if isinstance(value, (int, np.integer)):
        return int(value) if int(value) in (1, -1) else None
    if isinstance(value, str):
        return _DIRECTIONS.get(value.strip().lower())
    return None


def _is_pair(action: Any, names: Sequence[str]) -> bool:
    """A 2-sequence (factor, direction) is one action; ("scale+", "shape-") or ("scale+", 1), whose
    first item is itself an action name, is a sequence of two."""
    return (
        isinstance(action, (tuple, list))
        and len(action) == 2
        and isinstance(action[0], str)
        and action[0].strip() not in names
        and _direction(action[1]) is not None
    )


def _pair_id(model: CausalVQVAE, factor: str, direction: int) -> int:
    table = factor_actions(model)
    name = factor.strip()
    if name not in table:
        raise ValueError(f"unknown factor {factor!r} in ({factor!r}, {direction:+d}); {_valid_actions(model)}")
    if direction not in table[name]:
        raise ValueError(f"factor {name!r} has no {'+' if direction > 0 else '-'} action; {_valid_actions(model)}")
    return table[name][direction]


def _single_id(model: CausalVQVAE, action: Any) -> int:
    names = action_names(model)
    if isinstance(action, (torch.Tensor, np.ndarray)) and action.ndim == 0:
        action = action.item()
    if isinstance(action, (bool, np.bool_)):
        raise TypeError(f"{action!r} is not an action; {_valid_actions(model)}")
    if isinstance(action, (int, np.integer)):
        if not 0 <= int(action) < len(names):
            raise ValueError(f"action id {int(action)} out of range [0, {len(names)}); {_valid_actions(model)}")
        return int(action)
    if isinstance(action, str):
        name = action.strip()
        if name in names:
            return names.index(name)
        if name.isascii() and name.isdigit():
            return _single_id(model, int(name))
        factors = factor_actions(model)
        if name in factors:
            raise ValueError(
                f"{name!r} is a factor, not an action: add a direction, e.g. {name + '+'!r} or ({name!r}, +1); "
                f"{_valid_actions(model)}"
            )
        if len(name) > 1 and name[-1] in "+-" and factors and name[:-1] not in factors:
            dataset = f"{model.config.dataset} model" if model.config.dataset else "model"
            raise ValueError(
                f"unknown action {action!r}: this {dataset} has no factor {name[:-1]!r}; {_valid_actions(model, name)}"
            )
        raise ValueError(f"unknown action {action!r}; {_valid_actions(model, name)}")
    raise TypeError(
        f"cannot read {action!r} ({type(action).__name__}) as an action: give an id, a name, a "
        f"(factor, direction) pair or a list of those; {_valid_actions(model)}"
    )


def parse_actions(model: CausalVQVAE, action: Any) -> list[int]:
    """Action ids, in the order to apply them, for ``action``: an id, a name (``"scale+"``), a
    ``(factor, direction)`` pair with direction +1/-1/"+"/"-", or a list/tuple of those (nested
    lists are flattened). Raises ValueError/TypeError listing every valid action."""
    if _is_pair(action, action_names(model)):
        direction = _direction(action[1])
        assert direction is not None
        return [_pair_id(model, action[0], direction)]
    if isinstance(action, (list, tuple)):
        if not action:
            raise ValueError(f"empty action sequence: give at least one action; {_valid_actions(model)}")
        factors = factor_actions(model)
        if isinstance(action, tuple) and isinstance(action[0], str) and action[0].strip() in factors:
            # a (factor, direction) pair whose direction is not one: say so, not "a factor, not an action"
            shown = f"({', '.join(repr(a) for a in action)})"
            raise ValueError(f"{shown} is not a (factor, direction) pair: the direction must be +1, -1, '+' or '-' "
                             f"after one factor, e.g. ({action[0].strip()!r}, +1); {_valid_actions(model)}")
        return [action_id for item in action for action_id in parse_actions(model, item)]
    return [_single_id(model, action)]


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


# ------------------------------------------------------------------------------------- traversal
@dataclass(frozen=True)
class Traversal:
    frames: torch.Tensor  # (R, W, C, S, S) float in [0, 1]; empty cells are GRID_BACKGROUND
    labels: tuple[tuple[str, ...], ...]  # (R, W) what every cell shows, "" for an empty cell
    rows: tuple[str, ...]  # (R,) what every row shows


@torch.no_grad()
def traverse(model: CausalVQVAE, x: torch.Tensor, steps: int = 3) -> Traversal:
    """Traversal of one image ``x`` (1, C, S, S): per factor, its "-" and "+" actions applied
    1..``steps`` times in code space (columns -steps..+steps, centre = reconstruction), then every
    action applied once. All chains run batched, and all frames decode in one pass."""
    if x.dim() != 4 or x.shape[0] != 1:
        raise ValueError(f"traverse takes one image (1, C, S, S), got shape {tuple(x.shape)}")
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    names = action_names(model)
    factors = factor_actions(model)
    num_rows, width = len(factors) + 1, max(2 * steps + 1, len(names))
    codes = model.encode_codes(x)  # (1, N)
    cells: dict[tuple[int, int], torch.Tensor] = {}
    labels = [[""] * width for _ in range(num_rows)]

    chains = [  # (row, direction, action id) of every factor's - and + action
        (row, sign, action) for row, moves in enumerate(factors.values()) for sign, action in sorted(moves.items())
    ]
    for row in range(len(factors)):
        cells[row, steps] = codes[0]
        labels[row][steps] = "reconstruction"
    if chains:
        ids = torch.tensor([action for _, _, action in chains], device=codes.device)
        current = codes.expand(len(chains), -1)
        for step in range(1, steps + 1):
            current = model.edit_codes(current, ids)
            for (row, sign, action), row_codes in zip(chains, current):
                cells[row, steps + sign * step] = row_codes
                labels[row][steps + sign * step] = f"{names[action]} x{step}"
    once = model.edit_codes(codes.expand(len(names), -1), torch.arange(len(names), device=codes.device))
    for action, action_codes in enumerate(once):
        cells[num_rows - 1, action] = action_codes
        labels[num_rows - 1][action] = names[action]

    positions = list(cells)
    decoded = model.decode_codes(torch.stack([cells[p] for p in positions])).float().cpu()  # (P, C, S, S)
    frames = torch.full((num_rows, width, *decoded.shape[1:]), GRID_BACKGROUND)
    for (row, column), frame in zip(positions, decoded):
        frames[row, column] = frame
    row_names = (*(f"{factor}: - x{steps} .. + x{steps}" for factor in factors), "every action once")
    return Traversal(frames, tuple(tuple(r) for r in labels), row_names)


def grid_image(traversal: Traversal, pad: int = GRID_PAD) -> Image.Image:
    """One PIL image (L for 1 channel, else RGB) of the traversal's cells with ``pad`` pixels of
    grey around each: width W * S + (W + 1) * pad, height R * S + (R + 1) * pad."""
    from torchvision.utils import make_grid  # imported here: only pictures need it

    columns, channels = traversal.frames.shape[1], traversal.frames.shape[2]
    cells = rearrange(traversal.frames.float(), "r c ch h w -> (r c) ch h w")
    canvas = make_grid(cells, nrow=columns, padding=pad, pad_value=GRID_BACKGROUND)  # 1 channel -> 3 copies
    pixels = (canvas * 255.0).round().clamp(0, 255).to(torch.uint8)
    if channels == 1:
        return Image.fromarray(pixels[0].numpy())
    return Image.fromarray(np.ascontiguousarray(rearrange(pixels[:3], "c h w -> h w c").numpy()))


LABEL_SCALE = 2  # a labelled grid's cells are drawn this many times larger (nearest neighbour)
LABEL_LEFT = 120  # pixels left of the cells for the row names
LABEL_LINE = 14  # pixels per line of text


def labelled_grid_image(traversal: Traversal, title: str) -> Image.Image:
    """The traversal grid (:func:`grid_image`, cells ``LABEL_SCALE`` times larger) that explains
    itself: ``title`` above, a header naming the columns of the factor rows (the reconstruction in
    the centre, ``-k`` / ``+k`` steps around it), each row's factor on its left, and the action
    under each cell of the last row. Always RGB."""
    from PIL import ImageDraw

    grid = grid_image(traversal).convert("RGB")
    grid = grid.resize((grid.width * LABEL_SCALE, grid.height * LABEL_SCALE), Image.NEAREST)
    rows, columns = traversal.frames.shape[:2]
    side = traversal.frames.shape[-1] * LABEL_SCALE
    pad = GRID_PAD * LABEL_SCALE
    top, bottom = 2 * LABEL_LINE + 4, LABEL_LINE + 4
    canvas = Image.new("RGB", (LABEL_LEFT + grid.width, top + grid.height + bottom), "white")
    canvas.paste(grid, (LABEL_LEFT, top))
    draw = ImageDraw.Draw(canvas)
    draw.text((4, 2), title, fill="black")
    steps = (sum(1 for label in traversal.labels[0] if label) - 1) // 2 if rows > 1 else 0

    def column_x(column: int) -> int:
        return LABEL_LEFT + pad + column * (side + pad)

    for offset in range(-steps, steps + 1):
        text = "recon." if offset == 0 else f"{offset:+d}"
        draw.text((column_x(steps + offset) + 2, LABEL_LINE + 2), text, fill="black")
    for row, name in enumerate(traversal.rows):
        y = top + pad + row * (side + pad) + side // 2 - LABEL_LINE // 2
        factor = name.split(":")[0] if row < rows - 1 else "each action:"
        draw.text((4, y), factor, fill="black")
    last = top + pad + (rows - 1) * (side + pad) + side + 2
    for column, label in enumerate(traversal.labels[-1]):
        if label:
            draw.text((column_x(column) + 2, last), label, fill="black")
    return canvas


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
