"""Command line: serve the web editor in a browser.

    causal-vqvae ui [--model shapes3d_twin] [--device auto] [--host 127.0.0.1] [--port 7860] [--share]

(``python -m causal_vqvae.cli.ui`` is the same command.) The page (:mod:`causal_vqvae.ui`) loads a
model (the one given here first; another can be chosen on the page), edits an uploaded or sampled
image one action at a time with undo, and retrieves the action between two images. It prints its
address and serves until interrupted (Ctrl+C). Needs the optional Gradio:
``pip install "causal-vqvae[ui]"``; without it, or with a model that will not load or a port in
use, it prints one line and exits with status 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ..locate import RELEASED_NAMES
from .common import Parser, UserError, add_device, add_json, command, positive_int, resolve_device

__all__ = ["DEFAULT_MODEL", "DEFAULT_PORT", "build_parser", "main"]

PROG = "python -m causal_vqvae.cli.ui"
DEFAULT_MODEL = "shapes3d_twin"
DEFAULT_HOST = "127.0.0.1"  # this machine only; 0.0.0.0 serves the network
DEFAULT_PORT = 7860  # Gradio's usual port
MAX_PORT = 65535


def _port(text: str) -> int:
    value = positive_int(text)
    if value > MAX_PORT:
        raise argparse.ArgumentTypeError(f"a port is at most {MAX_PORT}, got {value}")
    return value


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    parser = Parser(prog=prog, description="Serve the web editor: edit images action by action, and retrieve "
                                           "the action between two images, in a browser.")
    parser.add_argument("--model", default=DEFAULT_MODEL, metavar="MODEL",
                        help=f"the model loaded first: a released model ({', '.join(RELEASED_NAMES)}), a model "
                             "folder, a training run's folder or a Hugging Face Hub id (owner/name); another can "
                             f"be loaded on the page (default {DEFAULT_MODEL})")
    add_device(parser)
    parser.add_argument("--host", default=DEFAULT_HOST, metavar="HOST",
                        help=f"address to serve at (default {DEFAULT_HOST}, this machine only; 0.0.0.0 for every "
                             "network interface)")
    parser.add_argument("--port", type=_port, default=DEFAULT_PORT, metavar="PORT",
                        help=f"port to serve at (default {DEFAULT_PORT})")
    parser.add_argument("--share", action="store_true",
                        help="also serve at a temporary public gradio.live address (off by default)")
    add_json(parser)
    return parser


def main(argv: Sequence[str] | None = None, prog: str = PROG) -> int:
    """Run the command; a user's mistake is printed and ends in CommandExit (status 2)."""
    return command(lambda args: _run(args, prog), argv, prog)


def _run(argv: Sequence[str] | None, prog: str) -> int:
    args = build_parser(prog).parse_args(argv)
    from ..ui.app import import_gradio, launch  # torch and Gradio: only when serving

    try:
        import_gradio()
    except ImportError as error:
        raise UserError(str(error)) from None
    launch(args.model, device=str(resolve_device(args.device)), host=args.host, port=args.port, share=args.share,
           json_output=args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
