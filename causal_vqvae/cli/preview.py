"""Command line: draw a dataset's factors of variation, one row per factor (and write a sample).

    causal-vqvae preview --data shapes3d [--out out/] [--sample out/sample.png]

The drawing is :mod:`datamodules.preview`'s; this module gives it the command's name and its error
handling (one line and exit status 2 on a user's mistake).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from .common import command

__all__ = ["main"]

PROG = "python -m causal_vqvae.cli.preview"


def main(argv: Sequence[str] | None = None, prog: str = PROG) -> int:
    """Run the command; a user's mistake is printed and ends in CommandExit (status 2)."""

    def run(args: Sequence[str] | None) -> int:
        from datamodules.preview import main as preview

        preview(None if args is None else list(args), prog=prog)
        return 0

    return command(run, argv, prog)


if __name__ == "__main__":
    sys.exit(main())
