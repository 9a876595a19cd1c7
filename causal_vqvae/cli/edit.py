"""Command line: edit an image with a trained model, or draw a traversal grid of every action.

    python -m causal_vqvae.edit --model DIR --image in.png --action scale+ --out out.png
    python -m causal_vqvae.edit --model DIR --image in.png --action scale+ --action shape- --out out.png
    python -m causal_vqvae.edit --model DIR --image c.png --analogy a.png b.png --out out.png
    python -m causal_vqvae.edit --model DIR --image in.png --traverse --steps 3 --out grid.png

An edit is written at the input's size and mode. The traversal grid is at the model's resolution:
one row per factor, columns -S..+S (the factor's "-" action applied S times on the left, its "+"
action on the right, the reconstruction in the centre), then a row with every action applied once.
The output is written atomically (temporary file + rename). Exit status 2 on a usage or input error.

Importing this module also keeps ``causal_vqvae.edit(image, action, model)`` working: see the end.
"""

from __future__ import annotations

import argparse
import os
import sys
import types
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import torch
from einops import rearrange
from PIL import Image

from . import api
from .io import atomic_write
from .model import CausalVQVAE

__all__ = ["GRID_PAD", "GRID_BACKGROUND", "Traversal", "traverse", "grid_image", "write_image", "main"]

GRID_PAD = 2  # pixels between cells and around the grid
GRID_BACKGROUND = 0.5  # grey: visible against both black (dSprites) and bright backgrounds


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
    names = api.action_names(model)
    factors = api.factor_actions(model)
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
    rows, columns, channels, side, _ = traversal.frames.shape
    height, width = rows * side + (rows + 1) * pad, columns * side + (columns + 1) * pad
    canvas = torch.full((channels, height, width), GRID_BACKGROUND)
    for row in range(rows):
        for column in range(columns):
            top, left = pad + row * (side + pad), pad + column * (side + pad)
            canvas[:, top:top + side, left:left + side] = traversal.frames[row, column]
    pixels = (canvas * 255.0).round().clamp(0, 255).to(torch.uint8)
    if channels == 1:
        return Image.fromarray(pixels[0].numpy())
    return Image.fromarray(np.ascontiguousarray(rearrange(pixels[:3], "c h w -> h w c").numpy()))


def _image_format(out: Path) -> str:
    fmt = Image.registered_extensions().get(out.suffix.lower())
    if fmt is None or fmt not in Image.SAVE:
        raise ValueError(f"cannot tell an image format from the name {out}; end it in .png (lossless) or .jpg")
    return fmt


def check_output(out: Path) -> str:
    """Fail early, before any work: the image format of ``out`` and a writable directory for it."""
    fmt = _image_format(out)
    parent = out.parent
    if parent.exists() and not parent.is_dir():
        raise OSError(
            f"cannot write {out}: {parent} is a file, not a directory; choose an output path inside a directory"
        )
    if not parent.is_dir():
        raise OSError(f"output directory {parent} does not exist; create it first")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OSError(
            f"cannot write to the output directory {parent}: permission denied; choose a writable directory "
            "or change its permissions"
        )
    return fmt


def write_image(image: Image.Image, out: str | os.PathLike) -> Path:
    """Save ``image`` to ``out`` atomically (a temporary file next to it, then ``os.replace``), in the
    format its extension names; JPEG gets RGB or L."""
    out = Path(out)
    fmt = _image_format(out)
    if fmt == "JPEG" and image.mode not in ("L", "RGB"):
        image = image.convert("RGB")
    atomic_write(out, lambda temp: image.save(temp, format=fmt))
    return out


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def add_method_and_device(parser: argparse.ArgumentParser, method_help: str) -> None:
    """The ``--method`` and ``--device`` arguments that ``edit`` and ``retrieve`` share."""
    parser.add_argument("--method", choices=api.RETRIEVAL_METHODS, default=api.DEFAULT_RETRIEVAL_METHOD,
                        help=f"{method_help} (default {api.DEFAULT_RETRIEVAL_METHOD})")
    parser.add_argument("--device", default=None,
                        help="torch device, e.g. cpu or cuda (default: cuda if available, else cpu)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m causal_vqvae.edit",
        description="Edit an image by causal intervention on its VQ-VAE codes, or draw a traversal grid.",
    )
    parser.add_argument("--model", required=True, metavar="DIR",
                        help="model directory written by save_pretrained (config.json + model.safetensors)")
    parser.add_argument("--image", required=True, metavar="PATH",
                        help="input image file; another size or mode is converted, with a note on stderr")
    parser.add_argument("--out", required=True, metavar="PATH",
                        help="output image file (.png, .jpg, ...); its directory must exist and be writable")
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--action", action="append", metavar="ACTION",
                      help="action name (e.g. scale+) or id; repeat to apply several in the given order")
    what.add_argument("--traverse", action="store_true",
                      help="write a grid: one row per factor stepping -S..+S, then every action applied once")
    what.add_argument("--analogy", nargs=2, metavar=("A", "B"),
                      help="apply to --image the action that turns image A into image B (retrieved by the model)")
    parser.add_argument("--steps", type=_positive_int, default=3, metavar="S",
                        help="with --traverse: steps each way along every factor (default 3)")
    add_method_and_device(parser, "with --analogy: retrieve the action by the transition model or the learned head")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    out = Path(args.out)

    def fail(message: str) -> NoReturn:
        parser.exit(2, f"{parser.prog}: error: {message}\n")

    try:
        check_output(out)
    except (OSError, ValueError) as error:
        fail(str(error))
    try:
        model = api.load(args.model, device=args.device)
        with api.report_conversions():
            if args.traverse:
                x, _ = api.to_batch(args.image, model)
                traversal = traverse(model, x, args.steps)
                result, done = grid_image(traversal), _legend(traversal)
            elif args.analogy:
                result, name = api.analogy(*args.analogy, args.image, model, method=args.method)
                done = f"applied {name} (retrieved from {args.analogy[0]} -> {args.analogy[1]}, method {args.method})"
            else:
                actions = api.parse_actions(model, args.action)
                result = api.edit(args.image, actions, model)
                done = "applied " + ", ".join(api.action_names(model)[a] for a in actions)
    except (OSError, ValueError, TypeError) as error:
        fail(str(error))
    try:
        write_image(result, out)
    except OSError as error:
        fail(f"cannot write {out}: {error.strerror or error}")
    print(f"wrote {out}: {done}")
    return 0


def _legend(traversal: Traversal) -> str:
    rows, columns, _, side, _ = traversal.frames.shape
    lines = [f"{rows} rows x {columns} columns of {side}x{side} cells"]
    lines += [f"  row {i + 1}: {name}" for i, name in enumerate(traversal.rows)]
    return "\n".join(lines)


class _CallableModule(types.ModuleType):
    """The package re-exports :func:`causal_vqvae.api.edit` as ``causal_vqvae.edit``, but importing
    this module makes Python set the package attribute ``edit`` to the module. Calling the module
    forwards to the function, so ``causal_vqvae.edit(image, action, model)`` works whatever was
    imported first."""

    def __call__(self, image: Any, action: Any, model: api.ModelLike) -> Any:
        return api.edit(image, action, model)


sys.modules[__name__].__class__ = _CallableModule

if __name__ == "__main__":
    sys.exit(main())
