"""Traversal grids: every factor of one image stepped both ways, every action once, in one picture
that explains itself (``causal-vqvae edit --traverse``).

:func:`traverse` makes the cells, in code space, and marks the ones not to read as the factor moved:
steps past the end of a factor's range (when the image's state is known, e.g. a twin sample written
by ``causal-vqvae preview --sample``, which records it in the PNG: :func:`read_factor_state`) and
steps that changed no code. :func:`grid_image` draws the cells alone, :func:`labelled_grid_image`
with a title, headers, row names, the marks and their legend.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from einops import rearrange
from PIL import Image

from .actions import action_names, factor_actions
from .model import CausalVQVAE

__all__ = ["FactorState", "FACTOR_STATE_KEY", "read_factor_state", "OUT_OF_RANGE", "NO_CHANGE", "Traversal",
           "traverse", "grid_image", "labelled_grid_image"]

GRID_PAD = 2  # pixels between cells and around a traversal grid
GRID_BACKGROUND = 0.5  # grey: visible against both black (dSprites) and bright backgrounds


# The PNG text chunk in which `causal-vqvae preview --sample` records a twin image's factors:
# JSON {"dataset": NAME, "factors": [{"name", "value" (class), "size", "cyclic"}, ...]}.
FACTOR_STATE_KEY = "causal_vqvae:factors"


@dataclass(frozen=True)
class FactorState:
    """Where an image stands on one factor: class ``value`` among ``size``; ``cyclic`` factors wrap."""

    value: int
    size: int
    cyclic: bool = False

    def reaches(self, offset: int) -> bool:
        """Whether ``offset`` steps from here stay on the factor (always, where it wraps)."""
        return self.cyclic or 0 <= self.value + offset < self.size


def read_factor_state(path: str | os.PathLike, dataset: str | None = None) -> dict[str, FactorState]:
    """The factors an image file records (:data:`FACTOR_STATE_KEY`, written with a twin sample by
    ``causal-vqvae preview --sample``), ``{factor: FactorState}``; empty when the file records none,
    cannot be read, or records another ``dataset`` than the one given. Nothing else is read: any
    other image gives ``{}``."""
    try:
        with Image.open(Path(path).expanduser()) as opened:
            text = getattr(opened, "text", {}).get(FACTOR_STATE_KEY)
    except (OSError, ValueError):
        return {}
    try:
        record = json.loads(text) if text else {}
        if dataset is not None and record.get("dataset") != dataset:
            return {}
        return {str(f["name"]): FactorState(int(f["value"]), int(f["size"]), bool(f.get("cyclic", False)))
                for f in record.get("factors", ())}
    except (ValueError, TypeError, KeyError, AttributeError):
        return {}


# What a traversal cell's mark says (Traversal.marks; drawn by labelled_grid_image).
OUT_OF_RANGE = "out of range"  # past the end of a factor that does not wrap (the image's state is known)
NO_CHANGE = "no change"  # the step changed no code: the cell is the one before it


@dataclass(frozen=True)
class Traversal:
    frames: torch.Tensor  # (R, W, C, S, S) float in [0, 1]; empty cells are GRID_BACKGROUND
    labels: tuple[tuple[str, ...], ...]  # (R, W) what every cell shows, "" for an empty cell
    rows: tuple[str, ...]  # (R,) what every row shows
    marks: tuple[tuple[str, ...], ...] = ()  # (R, W) OUT_OF_RANGE, NO_CHANGE or ""; () for none


@torch.no_grad()
def traverse(model: CausalVQVAE, x: torch.Tensor, steps: int = 3,
             state: dict[str, FactorState] | None = None) -> Traversal:
    """Traversal of one image ``x`` (1, C, S, S): per factor, its "-" and "+" actions applied
    1..``steps`` times in code space (columns -steps..+steps, centre = reconstruction), then every
    action applied once. All chains run batched, and all frames decode in one pass.

    ``marks`` say which cells not to read as the factor moved: NO_CHANGE where a step changed no
    code (the cell repeats the one before it), and, given the image's ``state`` (``{factor:
    FactorState}``, e.g. :func:`~causal_vqvae.images.read_factor_state` of a twin sample written by
    ``causal-vqvae preview --sample``), OUT_OF_RANGE where the steps go past the end of a factor that
    does not wrap: no training pair shows what lies there."""
    if x.dim() != 4 or x.shape[0] != 1:
        raise ValueError(f"traverse takes one image (1, C, S, S), got shape {tuple(x.shape)}")
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    names = action_names(model)
    factors = factor_actions(model)
    state = state or {}
    num_rows, width = len(factors) + 1, max(2 * steps + 1, len(names))
    codes = model.encode_codes(x)  # (1, N)
    cells: dict[tuple[int, int], torch.Tensor] = {}
    labels = [[""] * width for _ in range(num_rows)]
    marks = [[""] * width for _ in range(num_rows)]

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
            previous, current = current, model.edit_codes(current, ids)
            unchanged = (current == previous).all(-1).tolist()
            for (row, sign, action), row_codes, same in zip(chains, current, unchanged):
                column = steps + sign * step
                cells[row, column] = row_codes
                labels[row][column] = f"{names[action]} x{step}"
                here = state.get(list(factors)[row])
                marks[row][column] = (OUT_OF_RANGE if here is not None and not here.reaches(sign * step)
                                      else NO_CHANGE if same else "")
    once = model.edit_codes(codes.expand(len(names), -1), torch.arange(len(names), device=codes.device))
    for action, action_codes in enumerate(once):
        cells[num_rows - 1, action] = action_codes
        labels[num_rows - 1][action] = names[action]
        name = names[action]
        here = state.get(name[:-1]) if len(name) > 1 and name[-1] in "+-" else None
        sign = 1 if name.endswith("+") else -1
        marks[num_rows - 1][action] = (OUT_OF_RANGE if here is not None and not here.reaches(sign)
                                       else NO_CHANGE if torch.equal(action_codes, codes[0]) else "")

    positions = list(cells)
    decoded = model.decode_codes(torch.stack([cells[p] for p in positions])).float().cpu()  # (P, C, S, S)
    frames = torch.full((num_rows, width, *decoded.shape[1:]), GRID_BACKGROUND)
    for (row, column), frame in zip(positions, decoded):
        frames[row, column] = frame
    row_names = (*(f"{factor}: - x{steps} .. + x{steps}" for factor in factors), "every action once")
    return Traversal(frames, tuple(tuple(r) for r in labels), row_names, tuple(tuple(r) for r in marks))


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


MARK_LEGEND = {
    OUT_OF_RANGE: "greyed, crossed: past the end of the factor's range (no training pair shows it)",
    NO_CHANGE: "greyed: the step changed no code (the same as the cell before it)",
}


def labelled_grid_image(traversal: Traversal, title: str) -> Image.Image:
    """The traversal grid (:func:`grid_image`, cells ``LABEL_SCALE`` times larger) that explains
    itself: ``title`` above, a header naming the columns of the factor rows (the reconstruction in
    the centre, framed, ``-k`` / ``+k`` steps around it), each row's factor on its left, the action
    under each cell of the last row, and the marked cells (:attr:`Traversal.marks`) greyed, crossed
    where out of range, with a legend of the marks shown under the grid. Always RGB."""
    from PIL import ImageDraw

    grid = grid_image(traversal).convert("RGB")
    grid = grid.resize((grid.width * LABEL_SCALE, grid.height * LABEL_SCALE), Image.NEAREST)
    rows, columns = traversal.frames.shape[:2]
    side = traversal.frames.shape[-1] * LABEL_SCALE
    pad = GRID_PAD * LABEL_SCALE
    shown = [mark for mark in MARK_LEGEND if any(mark in row for row in traversal.marks)]
    top, bottom = 2 * LABEL_LINE + 4, (1 + len(shown)) * LABEL_LINE + 4
    canvas = Image.new("RGB", (LABEL_LEFT + grid.width, top + grid.height + bottom), "white")
    canvas.paste(grid, (LABEL_LEFT, top))
    draw = ImageDraw.Draw(canvas)
    draw.text((4, 2), title, fill="black")
    steps = (sum(1 for label in traversal.labels[0] if label) - 1) // 2 if rows > 1 else 0

    def column_x(column: int) -> int:
        return LABEL_LEFT + pad + column * (side + pad)

    def row_y(row: int) -> int:
        return top + pad + row * (side + pad)

    for row, row_marks in enumerate(traversal.marks):
        for column, mark in enumerate(row_marks):
            if not mark:
                continue
            box = (column_x(column), row_y(row), column_x(column) + side, row_y(row) + side)
            cell = canvas.crop(box)
            canvas.paste(Image.blend(cell, Image.new("RGB", cell.size, (200, 200, 200)), 0.6), box)
            if mark == OUT_OF_RANGE:
                draw.line(box, fill=(160, 0, 0), width=2)
                draw.line((box[0], box[3], box[2], box[1]), fill=(160, 0, 0), width=2)
    for row in range(rows - 1):  # the reconstruction, framed
        x, y = column_x(steps), row_y(row)
        draw.rectangle((x - 1, y - 1, x + side, y + side), outline=(0, 90, 200), width=1)
    for offset in range(-steps, steps + 1):
        text = "recon." if offset == 0 else f"{offset:+d}"
        draw.text((column_x(steps + offset) + 2, LABEL_LINE + 2), text, fill="black")
    for row, name in enumerate(traversal.rows):
        y = row_y(row) + side // 2 - LABEL_LINE // 2
        factor = name.split(":")[0] if row < rows - 1 else "each action:"
        draw.text((4, y), factor, fill="black")
    last = row_y(rows - 1) + side + 2
    for column, label in enumerate(traversal.labels[-1]):
        if label:
            draw.text((column_x(column) + 2, last), label, fill="black")
    for line, mark in enumerate(shown, start=1):
        draw.text((4, last + line * LABEL_LINE), MARK_LEGEND[mark], fill="black")
    return canvas
