"""Command line: which action turns image A into image B?

    causal-vqvae retrieve --model MODEL a.png b.png [--method transition|head] [--top 5] [--json]

prints a table of rank, action and probability, most likely first (``--json``: the same as JSON);
``--out FILE|FOLDER`` also draws the answer: A, B, and A edited by each of the three most likely
actions, labelled with their probabilities (:func:`causal_vqvae.api.retrieval_image`).
``python -m causal_vqvae.cli.retrieve`` is the same command. Exit status 2 on a usage or input
error, with one line saying what was wrong.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from .common import Parser, add_model, command, positive_int, print_json, resolve_device
from .edit import add_method_and_device

__all__ = ["format_table", "main"]


def format_table(ranked: Sequence[tuple[str, float]]) -> str:
    """Rank, action and probability, one line each under a header."""
    width = max([len("action"), *(len(name) for name, _ in ranked)])
    lines = [f"{'rank':>4}  {'action':<{width}}  probability"]
    lines += [f"{rank:>4}  {name:<{width}}  {prob:11.4f}" for rank, (name, prob) in enumerate(ranked, start=1)]
    return "\n".join(lines)


PROG = "python -m causal_vqvae.cli.retrieve"
PICTURE_TOP = 3  # actions drawn in the --out picture


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    parser = Parser(prog=prog, description="Rank the actions that could have turned image A into image B.")
    add_model(parser)
    parser.add_argument("image_a", metavar="A", help="the image before the action")
    parser.add_argument("image_b", metavar="B", help="the image after the action")
    parser.add_argument("--top", type=positive_int, default=5, metavar="K",
                        help="show the K most likely actions (default 5; more than the model has shows all)")
    parser.add_argument("--out", default=None, metavar="PATH",
                        help=f"also write a picture: A, B and A edited by the {PICTURE_TOP} most likely actions "
                             "with their probabilities (a .png file, or a folder to write <A>_to_<B>.png in)")
    add_method_and_device(parser, "score every action with the transition model, or ask the learned retrieval head")
    return parser


def main(argv: Sequence[str] | None = None, prog: str = PROG) -> int:
    """Run the command; a user's mistake is printed and ends in CommandExit (status 2)."""
    return command(lambda args: _run(args, prog), argv, prog)


def _run(argv: Sequence[str] | None, prog: str) -> int:
    args = build_parser(prog).parse_args(argv)
    from .. import api

    out = _picture_path(args)
    model = api.load(args.model, device=resolve_device(args.device))
    top = min(max(args.top, PICTURE_TOP if out else 1), model.config.num_actions)
    with api.report_conversions():
        ranked = api.retrieve_action(args.image_a, args.image_b, model, method=args.method, top_k=top)
        if out is not None:
            title = f"{Path(args.image_a).name} -> {Path(args.image_b).name}: {args.model}, {args.method}"
            picture = api.retrieval_image(args.image_a, args.image_b, ranked[:PICTURE_TOP], model, title)
    if out is not None:
        from ..images import write_image

        out.parent.mkdir(parents=True, exist_ok=True)
        write_image(picture, out)
    ranked = ranked[:args.top]
    if args.json:
        print_json({"a": args.image_a, "b": args.image_b, "model": str(args.model), "method": args.method,
                    "ranked": [{"action": name, "probability": prob} for name, prob in ranked],
                    "out": None if out is None else str(out)})
        return 0
    print(f"{args.image_a} -> {args.image_b} (method {args.method})")
    print(format_table(ranked))
    if out is not None:
        print(f"wrote {out}: A, B and A edited by the {min(PICTURE_TOP, len(ranked))} most likely actions")
    return 0


def _picture_path(args: argparse.Namespace) -> Path | None:
    """The --out picture's path (a folder gets <A>_to_<B>.png), checked before any work."""
    if args.out is None:
        return None
    from ..images import check_output, image_format

    out = Path(args.out)
    if out.is_dir() or not out.suffix:
        out = out / f"{Path(args.image_a).stem or 'a'}_to_{Path(args.image_b).stem or 'b'}.png"
    image_format(out)
    if out.parent.exists():
        check_output(out)
    return out


if __name__ == "__main__":
    sys.exit(main())
