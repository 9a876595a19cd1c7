"""Train a CausalVQVAE: ``python train.py --data shapes3d --gpus 4``.

Runs the stages in order (vqvae -> causal [-> joint] [-> head] [-> decoder]); each hands its weights to the
next and is saved as ``OUT/<stage>/model.safetensors`` + ``config.json`` (loadable with
``CausalVQVAE.from_pretrained``), beside Lightning checkpoints for ``--resume``, the resolved
configuration (``OUT/config.json``) and logs. ``--stage causal --init OUT/vqvae`` runs one stage
from a saved model. ``--stage head --init DIR`` retrains only the retrieval head of a trained model;
with a ``--config`` file whose ``model`` section sets ``retrieval_head``/``retrieval_dim``/... it
first swaps in a new head of that shape. ``--stage decoder --init DIR --max-steps N`` fine-tunes
only the decoder of a trained model, on the reconstructions and on the transition's decoded edits
against their true targets: sharper pictures, the same codes, edits' codes and retrieval.
``--stage causal --init DIR --new-transition`` trains a new transition and graph on a trained
autoencoder (the ``model`` section may then change the graph's budgets and the transition's
settings, ``CausalVQVAE.TRANSITION_FIELDS``). With ``--init``, the ``model`` section may always
change the settings no weight depends on (``CausalVQVAE.SETTINGS_FIELDS``: budgets and their
schedule, losses, the retrieval score), e.g. to fine-tune a transition with its budgets held from
the first step. ``--code-pool N`` trains the causal and head stages, whose autoencoder is frozen,
on the codes of N training pairs encoded once, rather than encoding fresh pairs at every step
(``causal_vqvae.training.code_pool``).

Devices: ``--gpus N`` (alias ``--devices``) trains on N GPUs, with DDP when N > 1, on each of
``--num-nodes`` machines; without a GPU it trains on the CPU and says so. ``--accelerator cpu
--devices N`` runs N CPU processes under DDP (gloo): the multi-process path, tried without GPUs.
``--precision`` defaults to bf16-mixed on GPU and 32-true on CPU.

Watching: scalars go to TensorBoard (``tensorboard --logdir OUT``; CSV files without TensorBoard);
after each validation, pictures (edits of held-out images beside their true targets, the learned
graph, codebook usage) go to TensorBoard and to ``OUT/<stage>/pictures/*.png``, and the metrics to
``OUT/<stage>/curves.json`` (one row per validation, with wall time and samples/s).

Interruptions: a Lightning checkpoint is written every ``--val-every`` steps and at the end of each
stage (``OUT/<stage>/checkpoints/last.ckpt``, written to a temporary name and renamed).
``--resume last`` continues a run killed at any point, SIGKILL included, from there, with exactly
the weights an unbroken run would reach: stages already finished are reloaded, and the checkpoint
restores optimiser, schedule, EMA codebook, dual multipliers and data position (random draws are
seeded per step). A resumed run must have the original settings. If the loss turns NaN or infinite,
training stops with the step where it happened, keeping the last good checkpoint.

``--preset cpu-small`` is a model and schedule small enough to learn something meaningful on two
CPU cores in a few minutes, ``--preset small`` a model of the released models' size for one GPU
(see PRESETS); ``--config FILE`` (JSON or YAML) overrides any field:
``{"model": {...}, "train": {...}, "data": {...}}``; given several times, later files override
earlier ones key by key.
"""

from __future__ import annotations

import argparse
import os
import sys

from .common import (
    TWIN_VERSIONS,
    TWIN_VERSIONS_HELP,
    Parser,
    add_json,
    command,
    device_name,
    positive_int,
    whole_number,
)

__all__ = ["build_parser", "main"]

PROG = "python train.py"


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    from datamodules.datamodule import DATASETS

    from ..training.config import COMPILE_MODES, STAGES
    from ..training.presets import PRESETS

    p = Parser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", choices=sorted(DATASETS), default="shapes3d", help="dataset (default: %(default)s)")
    p.add_argument("--data-root", default=None,
                   help="real dataset file or its folder (default: $CAUSAL_VQVAE_DATA_ROOT, else the procedural twin)")
    p.add_argument("--twin-version", choices=TWIN_VERSIONS, default=None,
                   help=f"renderer version of the 3D Shapes procedural twin (default 1): {TWIN_VERSIONS_HELP}. "
                        "Recorded in the run's config.json and each model's metadata.json, where bench reads it; "
                        "a version other than 1 cannot go with --data-root (real files have none) and uses the twin even if "
                        "$CAUSAL_VQVAE_DATA_ROOT is set. Also data.twin_version in a --config file")
    p.add_argument("--augment", default=None, metavar="NAMES",
                   help="augment the training images, for a model that holds up on real images; comma-separated: "
                        "renderer (3D Shapes: the nearest other twin renderer version, 1 -> 2, 2 -> 3, 3 -> 4, "
                        "4 -> 3, or data.renderer_version in a --config file; it always uses the twin), resample, "
                        "blur, jpeg, colour, border (datamodules/augment.py; experiments/real_image_gap says which "
                        "matter). Each applies to a training item with probability 0.3, or data.augment_probability "
                        "in a --config file (where data.augment also sets the names)")
    p.add_argument("--gpus", "--devices", dest="gpus", type=whole_number, default=None,
                   help="GPUs per machine (DDP when > 1); default: 1 if a GPU is present, else CPU; 0 forces CPU. "
                        "With --accelerator cpu: CPU processes per machine (DDP over gloo when > 1)")
    p.add_argument("--accelerator", choices=["auto", "gpu", "cpu"], default="auto",
                   help="'auto' (default): GPUs if present, else the CPU; 'cpu' trains on the CPU whatever is "
                        "present, in --devices processes (1 by default; more run the multi-process DDP path "
                        "without GPUs, for trying it out before a GPU job)")
    p.add_argument("--device", type=device_name, default=None, metavar="DEVICE",
                   help="auto, cpu or cuda: the same as --accelerator auto, cpu or gpu (cuda:N: run with "
                        "CUDA_VISIBLE_DEVICES=N instead; mps is not supported for training)")
    p.add_argument("--num-nodes", type=positive_int, default=1, help="machines for multi-node DDP (default 1)")
    p.add_argument("--precision", default=None,
                   help="Lightning precision: bf16-mixed (default on GPU), 32-true (default on CPU), 16-mixed")
    p.add_argument("--batch-size", type=positive_int, default=None, help="per-device batch size (default 64, preset may change)")
    p.add_argument("--max-steps", type=positive_int, nargs="+", default=None, metavar="N",
                   help="optimiser steps per stage: one number for every stage, or one per stage run")
    p.add_argument("--max-epochs", type=positive_int, default=None,
                   help="alternatively, validation intervals ('epochs' of --val-every steps) per stage")
    p.add_argument("--val-every", type=positive_int, default=None, help="steps between validations (an epoch)")
    p.add_argument("--stage", choices=STAGES, action="append", default=None,
                   help="run only this stage (repeatable); default: vqvae then causal (then joint, head and "
                        "decoder, if they have steps)")
    p.add_argument("--init", default=None, help="start from a saved model directory (save_pretrained format)")
    p.add_argument("--new-transition", action="store_true",
                   help="with --init and the causal stage: train a new transition and graph (untrained, from the "
                        "model's seed) on the saved autoencoder, e.g. after changing the graph's budgets in the "
                        "--config file's model section; the retrieval head is kept")
    p.add_argument("--resume", default=None,
                   help="'last' to continue an interrupted run in --out from its last checkpoint (the same "
                        "flags as the run), or a .ckpt path to continue the first stage run from")
    p.add_argument("--overwrite", action="store_true",
                   help="train in an --out that holds another run, removing that run's stages first (without it, "
                        "such a folder is refused: a run is never trained over by accident)")
    p.add_argument("--seed", type=whole_number, default=0, help="seeds weights, pair sampling and training (default 0)")
    p.add_argument("--out", default="runs/latest",
                   help="run directory: checkpoints, config, logs, pictures (default %(default)s)")
    p.add_argument("--preset", choices=sorted(PRESETS), default="default", help="configuration preset")
    p.add_argument("--config", action="append", default=None, metavar="FILE",
                   help="JSON or YAML file of overrides: {model: {}, train: {}, data: {}}; repeatable, a later file "
                        "overriding an earlier one's keys")
    p.add_argument("--layout", choices=["grid", "tokens"], default=None, help="latent layout (model.latent_layout)")
    p.add_argument("--frequency", default=None,
                   help="pair frequency: balanced, proportional, rare:<factor>:<ratio> (the imbalanced setting)")
    p.add_argument("--num-workers", type=whole_number, default=None, help="DataLoader workers per device (default: auto)")
    p.add_argument("--code-pool", type=whole_number, default=None, metavar="N",
                   help="causal and head stages: train on the codes of N training pairs, encoded once by the "
                        "frozen autoencoder, rather than encoding fresh pairs every step (train.code_pool; "
                        "default 0, fresh pairs)")
    p.add_argument("--keep", choices=["last", "best"], default=None,
                   help="the weights each stage saves and hands on: 'last' (its last step) or 'best' (its best "
                        "validation in the stage's second half, by PSNR for vqvae, retrieval by transition for "
                        "causal and joint, the head's retrieval for head, the decoded edits' PSNR for decoder; "
                        "train.keep; default last)")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the model functions of the training step (GPU; the first steps compile)")
    p.add_argument("--compile-mode", choices=COMPILE_MODES, default=None,
                   help="torch.compile's mode (implies --compile): 'reduce-overhead' replays each step's graphs "
                        "as CUDA graphs (fewer kernel launches for small models), 'max-autotune' tunes kernels "
                        "longer (default: torch's default mode)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (logs only)")
    add_json(p)
    return p


def main(argv: list[str] | None = None, prog: str = PROG) -> int:
    """Run the command; a user's mistake is printed and ends in CommandExit (status 2)."""
    return command(lambda args: _run(args, prog), argv, prog)


def _run(argv: list[str] | None, prog: str) -> int:
    args = build_parser(prog).parse_args(argv)
    if args.device is not None:
        if args.accelerator != "auto":
            raise SystemExit(f"--device {args.device} and --accelerator {args.accelerator}: give one of them")
        if args.device not in ("auto", "cpu", "cuda"):
            raise SystemExit(f"--device {args.device}: training takes auto, cpu or cuda (for one GPU of several, "
                             "run with CUDA_VISIBLE_DEVICES=N and --device cuda)")
        args.accelerator = {"auto": "auto", "cpu": "cpu", "cuda": "gpu"}[args.device]
    from ..training.run import run

    return run(args, argv)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main(prog="python -m causal_vqvae.cli.train"))
