"""What the twin-study scripts (``edits_by_source_value.py``, ``chain_steps.py``) share: the model
and twin arguments, loading the model with its 3D Shapes renderer version, the heading they print,
the JSON record they write, and how a rate is printed."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from causal_vqvae import load
from causal_vqvae.eval.data import bench_twin_version
from causal_vqvae.files import write_json


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """``--model``, ``--data`` and ``--twin-version``."""
    parser.add_argument("--model", required=True, help="a model folder, a training run's folder or a released name")
    parser.add_argument("--data", required=True, choices=["dsprites", "shapes3d"])
    parser.add_argument("--twin-version", default=None,
                        help="3D Shapes renderer version (default: the model's own, from its metadata)")


def load_model(args: argparse.Namespace) -> tuple[Any, str, str]:
    """``(model in eval mode, twin version, heading)``: the heading names the model, its twin and
    where the version came from. Exits with a message for ``--twin-version`` on dSprites."""
    if args.twin_version is not None and args.data != "shapes3d":
        raise SystemExit(f"--twin-version is a 3D Shapes renderer version; {args.data} has one twin: drop it")
    model = load(args.model, device="cpu", expect_dataset=args.data).eval()
    if args.data != "shapes3d":
        return model, "1", f"{args.model} on the {args.data} twin"
    version, version_from = bench_twin_version(args.twin_version, model)
    return model, version, f"{args.model} on the {args.data} twin (renderer version {version}, from {version_from})"


def write_record(path: str, script: str, argv: list[str] | None, args: argparse.Namespace, version: str,
                 **figures: Any) -> None:
    """The JSON of a study: its command, model, data, twin version, device and seed, then ``figures``."""
    write_json(path, {
        "command": f"python scripts/{script} " + " ".join(sys.argv[1:] if argv is None else argv),
        "model": args.model, "data": f"{args.data} procedural twin", "twin_version": version,
        "device": "cpu", "seed": args.seed, **figures,
    })


def pct(rate: float | None) -> str:
    """A rate as a percentage, ``-`` for none."""
    return "-" if rate is None else f"{rate:.1%}"
