"""Command line: which action turns image A into image B?

    causal-vqvae retrieve --model MODEL a.png b.png [--method transition|head] [--top 5] [--json]

prints a table of rank, action and probability, most likely first (``--json``: the same as JSON).
``python -m causal_vqvae.cli.retrieve`` is the same command. Exit status 2 on a usage or input
error, with one line saying what was wrong.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .common import Parser, add_model, command, print_json, resolve_device
from .edit import _positive_int, add_method_and_device

__all__ = ["format_table", "main"]


def format_table(ranked: Sequence[tuple[str, float]]) -> str:
    """Rank, action and probability, one line each under a header."""
    width = max([len("action"), *(len(name) for name, _ in ranked)])
    lines = [f"{'rank':>4}  {'action':<{width}}  probability"]
    lines += [f"{rank:>4}  {name:<{width}}  {prob:11.4f}" for rank, (name, prob) in enumerate(ranked, start=1)]
    return "\n".join(lines)


PROG = "python -m causal_vqvae.cli.retrieve"


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    parser = Parser(prog=prog, description="Rank the actions that could have turned image A into image B.")
    add_model(parser)
    parser.add_argument("image_a", metavar="A", help="the image before the action")
    parser.add_argument("image_b", metavar="B", help="the image after the action")
    parser.add_argument("--top", type=_positive_int, default=5, metavar="K",
                        help="show the K most likely actions (default 5; more than the model has shows all)")
    add_method_and_device(parser, "score every action with the transition model, or ask the learned retrieval head")
    return parser


def main(argv: Sequence[str] | None = None, prog: str = PROG) -> int:
    """Run the command; a user's mistake is printed and ends in CommandExit (status 2)."""
    return command(lambda args: _run(args, prog), argv, prog)


def _run(argv: Sequence[str] | None, prog: str) -> int:
    args = build_parser(prog).parse_args(argv)
    from .. import api

    model = api.load(args.model, device=resolve_device(args.device))
    top = min(args.top, model.config.num_actions)
    with api.report_conversions():
        ranked = api.retrieve_action(args.image_a, args.image_b, model, method=args.method, top_k=top)
    if args.json:
        print_json({"a": args.image_a, "b": args.image_b, "model": str(args.model), "method": args.method,
                    "ranked": [{"action": name, "probability": prob} for name, prob in ranked]})
        return 0
    print(f"{args.image_a} -> {args.image_b} (method {args.method})")
    print(format_table(ranked))
    return 0


if __name__ == "__main__":
    sys.exit(main())
