"""Command line: edit an image with a trained model, or draw a traversal grid of every action.

    python -m causal_vqvae.cli.edit --model DIR --image in.png --action scale+ --out out.png
    python -m causal_vqvae.cli.edit --model DIR --image in.png --action scale+ --action shape- --out out.png
    python -m causal_vqvae.cli.edit --model DIR --image c.png --analogy a.png b.png --out out.png
    python -m causal_vqvae.cli.edit --model DIR --image in.png --traverse --steps 3 --out grid.png

An edit is written at the input's size and mode. The traversal grid is at the model's resolution:
one row per factor, columns -S..+S (the factor's "-" action applied S times on the left, its "+"
action on the right, the reconstruction in the centre), then a row with every action applied once.
The output is written atomically (temporary file + rename). Exit status 2 on a usage or input error.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from .. import api
from ..images import check_output, write_image

__all__ = ["build_parser", "main"]


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
        prog="python -m causal_vqvae.cli.edit",
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
                traversal = api.traverse(model, x, args.steps)
                result, done = api.grid_image(traversal), _legend(traversal)
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


def _legend(traversal: api.Traversal) -> str:
    rows, columns, _, side, _ = traversal.frames.shape
    lines = [f"{rows} rows x {columns} columns of {side}x{side} cells"]
    lines += [f"  row {i + 1}: {name}" for i, name in enumerate(traversal.rows)]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
