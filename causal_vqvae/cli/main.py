"""``causal-vqvae``: one command, a subcommand per job.

    causal-vqvae train    --data dsprites --preset cpu-small --out runs/mine
    causal-vqvae edit     --model runs/mine --image in.png --action scale+
    causal-vqvae retrieve --model shapes3d_twin a.png b.png
    causal-vqvae bench    --model shapes3d_twin --data shapes3d --pairs 1000
    causal-vqvae preview  --data shapes3d
    causal-vqvae ui       --model shapes3d_twin      (the web editor; pip install "causal-vqvae[ui]")

``python -m causal_vqvae`` is the same command; ``python train.py`` is ``causal-vqvae train``. A
subcommand's module is imported only when it runs, so ``--help`` answers without loading torch.
"""

from __future__ import annotations

import difflib
import importlib
import os
import sys
from collections.abc import Sequence

from .common import DEBUG_VARIABLE, run_command

__all__ = ["COMMANDS", "main"]

PROG = "causal-vqvae"
# name -> (module with main(argv, prog), one line of help)
COMMANDS = {
    "train": ("causal_vqvae.cli.train", "train a model on dSprites, 3D Shapes or CelebA (one GPU, several, or the CPU)"),
    "edit": ("causal_vqvae.cli.edit", "edit an image by an action (e.g. scale+), or draw every action's traversal"),
    "retrieve": ("causal_vqvae.cli.retrieve", "rank the actions that could have turned image A into image B"),
    "bench": ("causal_vqvae.cli.bench", "benchmark retrieval and edit exactness of a model on a procedural twin"),
    "preview": ("causal_vqvae.cli.preview", "draw a dataset's factors of variation (and write a sample image)"),
    "ui": ("causal_vqvae.cli.ui", "serve the web editor: edit step by step and retrieve actions in a browser"),
}


def usage() -> str:
    width = max(len(name) for name in COMMANDS)
    lines = [f"usage: {PROG} COMMAND [options]    ({PROG} COMMAND --help for a command's options)", "",
             "Image editing by causal intervention on VQ-VAE codes.", "", "commands:"]
    lines += [f"  {name:<{width}}  {text}" for name, (_, text) in COMMANDS.items()]
    lines += ["", "Every command takes --device auto|cpu|cuda|cuda:N|mps where it computes, and --json.",
              f"A mistake in the input prints one line and exits with status 2; {DEBUG_VARIABLE}=1 shows the "
              "traceback."]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0 if argv else 2
    if argv[0] == "--version":
        from importlib.metadata import PackageNotFoundError, version

        try:
            print(f"{PROG} {version('causal_vqvae')}")
        except PackageNotFoundError:
            print(f"{PROG} (not installed as a package)")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        close = difflib.get_close_matches(name, list(COMMANDS), n=1)
        hint = f"; did you mean {close[0]}?" if close else ""
        print(f"{PROG}: error: unknown command {name!r}{hint} (commands: {', '.join(COMMANDS)})", file=sys.stderr)
        return 2
    prog = f"{PROG} {name}"
    module = importlib.import_module(COMMANDS[name][0])
    return run_command(lambda args: module.main(args, prog=prog), rest, prog)


def entry() -> None:
    """The console script."""
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())


if __name__ == "__main__":
    entry()
