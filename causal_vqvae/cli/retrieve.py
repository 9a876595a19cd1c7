"""Command line: which action turns image A into image B?

    python -m causal_vqvae.cli.retrieve --model DIR a.png b.png [--method transition|head] [--top 5]

prints a table of rank, action and probability, most likely first. Exit status 2 on a usage or
input error.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import NoReturn

from .. import api
from .edit import _positive_int, add_method_and_device

__all__ = ["format_table", "main"]


def format_table(ranked: Sequence[tuple[str, float]]) -> str:
    """Rank, action and probability, one line each under a header."""
    width = max([len("action"), *(len(name) for name, _ in ranked)])
    lines = [f"{'rank':>4}  {'action':<{width}}  probability"]
    lines += [f"{rank:>4}  {name:<{width}}  {prob:11.4f}" for rank, (name, prob) in enumerate(ranked, start=1)]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m causal_vqvae.cli.retrieve",
        description="Rank the actions that could have turned image A into image B.",
    )
    parser.add_argument("--model", required=True, metavar="DIR",
                        help="model directory written by save_pretrained (config.json + model.safetensors)")
    parser.add_argument("image_a", metavar="A", help="the image before the action")
    parser.add_argument("image_b", metavar="B", help="the image after the action")
    parser.add_argument("--top", type=_positive_int, default=5, metavar="K",
                        help="show the K most likely actions (default 5; more than the model has shows all)")
    add_method_and_device(parser, "score every action with the transition model, or ask the learned retrieval head")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)

    def fail(message: str) -> NoReturn:
        parser.exit(2, f"{parser.prog}: error: {message}\n")

    try:
        model = api.load(args.model, device=args.device)
        top = min(args.top, model.config.num_actions)
        with api.report_conversions():
            ranked = api.retrieve_action(args.image_a, args.image_b, model, method=args.method, top_k=top)
    except (OSError, ValueError, TypeError) as error:
        fail(str(error))
    print(f"{args.image_a} -> {args.image_b} (method {args.method})")
    print(format_table(ranked))
    return 0


if __name__ == "__main__":
    sys.exit(main())
