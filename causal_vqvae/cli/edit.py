"""Command line: edit an image with a trained model, or draw a traversal grid of every action.

    causal-vqvae edit --model shapes3d_twin --image in.png --action scale+ [--out out.png]
    causal-vqvae edit --model runs/mine --image in.png --action scale+ --action shape- --out out.png
    causal-vqvae edit --model DIR --image c.png --analogy a.png b.png --out out.png
    causal-vqvae edit --model DIR --image in.png --traverse --steps 3 --out grid.png

(``python -m causal_vqvae.cli.edit`` is the same command.) An edit is written at the input's size
and mode. The traversal grid is at the model's resolution: one row per factor, columns -S..+S (the
factor's "-" action applied S times on the left, its "+" action on the right, the reconstruction in
the centre), then a row with every action applied once. Without ``--out`` the result goes under
``out/edit/``. The output is written atomically (temporary file + rename). Exit status 2 on a usage
or input error, with one line saying what was wrong.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from ..locate import CHECKPOINTS, RELEASED_NAMES
from .common import (
    Parser,
    add_device,
    add_json,
    add_model,
    command,
    positive_int,
    print_json,
    resolve_device,
)

__all__ = ["MAX_STEPS", "build_parser", "main"]

PROG = "python -m causal_vqvae.cli.edit"
MAX_STEPS = 40  # --steps: the longest factor (dSprites orientation) has 40 values
RETRIEVAL_METHODS = ("transition", "head")  # causal_vqvae.api.RETRIEVAL_METHODS, without importing torch
DEFAULT_RETRIEVAL_METHOD = "head"


def _steps(text: str) -> int:
    value = positive_int(text)
    if value > MAX_STEPS:
        raise argparse.ArgumentTypeError(f"at most {MAX_STEPS} steps each way (no factor has more values), got {value}")
    return value


def add_method_and_device(parser: argparse.ArgumentParser, method_help: str) -> None:
    """The ``--method``, ``--device`` and ``--json`` arguments that ``edit`` and ``retrieve`` share."""
    parser.add_argument("--method", choices=RETRIEVAL_METHODS, default=DEFAULT_RETRIEVAL_METHOD,
                        help=f"{method_help} (default {DEFAULT_RETRIEVAL_METHOD})")
    add_device(parser)
    add_json(parser)


def released_actions() -> str:
    """The actions of each released model, read from its config.json (no torch)."""
    lines = []
    for name in RELEASED_NAMES:
        try:
            names = json.loads((CHECKPOINTS / name / "config.json").read_text())["action_names"]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        lines.append(f"  {name}: {' '.join(names)}")
    if not lines:
        return "Each model names its actions <factor>+ and <factor>- (e.g. scale+)."
    return "actions of the released models (any model: <factor>+ and <factor>-):\n" + "\n".join(lines)


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    parser = Parser(
        prog=prog,
        description="Edit an image by causal intervention on its VQ-VAE codes, or draw a traversal grid.",
        epilog=released_actions(), formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_model(parser)
    parser.add_argument("--image", required=True, metavar="PATH",
                        help="input image file; another size or mode is converted, with a note on stderr")
    parser.add_argument("--out", default=None, metavar="PATH",
                        help="output image file (.png, .jpg, ...), or a folder to write it in (default: out/edit/)")
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--action", action="append", metavar="ACTION",
                      help="action name (e.g. scale+, listed below) or id; repeat to apply several in order")
    what.add_argument("--traverse", action="store_true",
                      help="write a grid: one row per factor stepping -S..+S, then every action applied once")
    what.add_argument("--analogy", nargs=2, metavar=("A", "B"),
                      help="apply to --image the action that turns image A into image B (retrieved by the model)")
    parser.add_argument("--plain", action="store_true",
                        help="with --traverse: the cells alone, at the model's resolution (no title, labels or scaling)")
    parser.add_argument("--steps", type=_steps, default=3, metavar="S",
                        help=f"with --traverse: steps each way along every factor (default 3, at most {MAX_STEPS})")
    add_method_and_device(parser, "with --analogy: retrieve the action by the transition model or the learned head")
    return parser


def main(argv: Sequence[str] | None = None, prog: str = PROG) -> int:
    """Run the command; a user's mistake is printed and ends in CommandExit (status 2)."""
    return command(lambda args: _run(args, prog), argv, prog)


def _default_out(args: argparse.Namespace) -> Path:
    stem = Path(args.image).stem or "image"
    if args.traverse:
        name = f"{stem}_traverse.png"
    elif args.analogy:
        name = f"{stem}_analogy.png"
    else:
        name = f"{stem}_" + "_".join(args.action).replace("+", "plus").replace("-", "minus") + ".png"
    folder = Path(args.out) if args.out is not None else Path("out") / "edit"
    return folder / name


def _run(argv: Sequence[str] | None, prog: str) -> int:
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    if args.out is None or Path(args.out).is_dir() or not Path(args.out).suffix:
        out = _default_out(args)
    else:
        out = Path(args.out)

    from .. import api
    from ..images import check_output, image_format, write_image

    image_format(out)  # fail before any work on a format no writer has
    if out.parent.exists():
        check_output(out)  # and on a folder that cannot be written; a missing one is made with the result
    model = api.load(args.model, device=resolve_device(args.device))
    with api.report_conversions():
        if args.traverse:
            x, _ = api.to_batch(args.image, model)
            state = api.read_factor_state(args.image, model.config.dataset)  # a twin sample records it
            traversal = api.traverse(model, x, args.steps, state)
            title = f"{Path(args.image).name}: every action of {args.model}"
            result = api.grid_image(traversal) if args.plain else api.labelled_grid_image(traversal, title)
            done = _legend(traversal)
            applied = list(traversal.rows)
        elif args.analogy:
            result, name = api.analogy(*args.analogy, args.image, model, method=args.method)
            done = f"applied {name} (retrieved from {args.analogy[0]} -> {args.analogy[1]}, method {args.method})"
            applied = [name]
        else:
            actions = api.parse_actions(model, args.action)
            result = api.edit(args.image, actions, model)
            applied = [api.action_names(model)[a] for a in actions]
            done = "applied " + ", ".join(applied)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OSError(f"cannot make the output folder {out.parent}: {error.strerror or error}") from None
    check_output(out)
    try:
        write_image(result, out)
    except OSError as error:
        raise OSError(f"cannot write {out}: {error.strerror or error}") from None
    if args.json:
        record = {"out": str(out), "image": args.image, "model": str(args.model),
                  "mode": "traverse" if args.traverse else "analogy" if args.analogy else "edit",
                  "actions": applied}
        if args.traverse:  # the marked cells, row by row: "out of range", "no change" or ""
            record["marks"] = [list(row) for row in traversal.marks]
        print_json(record)
    else:
        print(f"wrote {out}: {done}")
    return 0


def _legend(traversal) -> str:
    from ..api import NO_CHANGE, OUT_OF_RANGE

    rows, columns, _, side, _ = traversal.frames.shape
    lines = [f"{rows} rows x {columns} columns of {side}x{side} cells"]
    lines += [f"  row {i + 1}: {name}" for i, name in enumerate(traversal.rows)]
    counts = {mark: sum(row.count(mark) for row in traversal.marks) for mark in (OUT_OF_RANGE, NO_CHANGE)}
    if counts[OUT_OF_RANGE]:
        lines.append(f"  {counts[OUT_OF_RANGE]} cells greyed and crossed: past the end of their factor's range "
                     "(read from the image's file)")
    if counts[NO_CHANGE]:
        lines.append(f"  {counts[NO_CHANGE]} cells greyed: the step changed no code")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
