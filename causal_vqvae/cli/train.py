"""Train a CausalVQVAE: ``python train.py --data shapes3d --gpus 4``.

Runs the stages in order (vqvae -> causal [-> joint] [-> head]); each hands its weights to the next and is
saved as ``OUT/<stage>/model.safetensors`` + ``config.json`` (loadable with
``CausalVQVAE.from_pretrained``), beside Lightning checkpoints for ``--resume``, the resolved
configuration (``OUT/config.json``) and logs. ``--stage causal --init OUT/vqvae`` runs one stage
from a saved model. ``--stage head --init DIR`` retrains only the retrieval head of a trained model;
with a ``--config`` file whose ``model`` section sets ``retrieval_head``/``retrieval_dim``/... it
first swaps in a new head of that shape. ``--stage causal --init DIR --new-transition`` trains a new
transition and graph on a trained autoencoder (the ``model`` section may then change the graph's
budgets and the transition's settings, ``CausalVQVAE.TRANSITION_FIELDS``). With ``--init``, the
``model`` section may always change the settings no weight depends on (``CausalVQVAE.SETTINGS_FIELDS``:
budgets and their schedule, losses, the retrieval score), e.g. to fine-tune a transition with its
budgets held from the first step. ``--code-pool N`` trains
the causal and head stages, whose autoencoder is frozen, on the codes of N training pairs encoded
once, rather than encoding fresh pairs at every step (``causal_vqvae.code_pool``).

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
``{"model": {...}, "train": {...}, "data": {...}}``.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import tempfile
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

log = logging.getLogger("train")

COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")

PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    # The design's model: grid 8x8 nodes, 64 codes of dim 128 in one codebook.
    "default": {"model": {}, "train": {}, "data": {}},
    # Two CPU cores, a few minutes: a narrower autoencoder, small transition, short stages. Graph
    # logits start at 2 rather than 5: Adam moves a logit ~lr per step, so in a short run logits
    # that start at 5 never cross the evaluation threshold and the graph stays dense.
    "cpu-small": {
        "model": {"hidden_dims": [32, 64, 64], "num_res_blocks": 1, "norm_groups": 8, "code_dim": 32,
                  "codebook_size": 32, "transition_dim": 64, "transition_layers": 2, "transition_heads": 4,
                  "target_head_dim": 32, "target_context_layers": 0, "retrieval_dim": 64,
                  "retrieval_layers": 1, "retrieval_heads": 4, "adjacency_init_logit": 2.0,
                  "target_init_logit": 2.0, "dual_lr": 0.05},
        "train": {"vqvae_steps": 600, "causal_steps": 900, "warmup_steps": 20, "val_every": 300,
                  "vqvae_lr": 2e-3, "causal_lr": 1e-3},
        "data": {"batch_size": 32, "val_length": 256},
    },
    # One GPU, minutes: a model small enough to ship (about 2.25M parameters, about 9 MB of float32
    # weights), with 256 codes rather than the design's 64, and the cpu-small graph settings for the
    # same reason as there. On 3D Shapes it retrieved better than the default preset (96.2% against
    # 89.9% by the head: benchmarks/results/h100/); on dSprites more codes make the codes less local
    # (benchmarks/results/dsprites_code_locality_cpu.json). The convolutional retrieval head is 64
    # wide: the released models' head (benchmarks/results/retrieval_head_cpu/); 128 would pass the
    # 10 MB release limit.
    "small": {
        "model": {"hidden_dims": [64, 128, 128], "num_res_blocks": 1, "code_dim": 64, "codebook_size": 256,
                  "transition_dim": 128, "transition_layers": 2, "transition_heads": 4, "target_head_dim": 64,
                  "retrieval_dim": 64, "retrieval_layers": 2, "retrieval_heads": 4, "adjacency_init_logit": 2.0,
                  "target_init_logit": 2.0, "dual_lr": 0.05},
        "train": {"vqvae_steps": 4000, "causal_steps": 4000, "val_every": 500, "vqvae_lr": 2e-3,
                  "causal_lr": 1e-3},
        "data": {"batch_size": 128},
    },
}


def build_parser() -> argparse.ArgumentParser:
    from causal_vqvae.training import STAGES
    from datamodules.datamodule import DATASETS

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", choices=sorted(DATASETS), default="shapes3d", help="dataset (default: %(default)s)")
    p.add_argument("--data-root", default=None,
                   help="real dataset file or its folder (default: $CAUSAL_VQVAE_DATA_ROOT, else the procedural twin)")
    p.add_argument("--gpus", "--devices", dest="gpus", type=int, default=None,
                   help="GPUs per machine (DDP when > 1); default: 1 if a GPU is present, else CPU; 0 forces CPU. "
                        "With --accelerator cpu: CPU processes per machine (DDP over gloo when > 1)")
    p.add_argument("--accelerator", choices=["auto", "gpu", "cpu"], default="auto",
                   help="'auto' (default): GPUs if present, else the CPU; 'cpu' trains on the CPU whatever is "
                        "present, in --devices processes (1 by default; more run the multi-process DDP path "
                        "without GPUs, for trying it out before a GPU job)")
    p.add_argument("--num-nodes", type=int, default=1, help="machines for multi-node DDP (default 1)")
    p.add_argument("--precision", default=None,
                   help="Lightning precision: bf16-mixed (default on GPU), 32-true (default on CPU), 16-mixed")
    p.add_argument("--batch-size", type=int, default=None, help="per-device batch size (default 64, preset may change)")
    p.add_argument("--max-steps", type=int, nargs="+", default=None, metavar="N",
                   help="optimiser steps per stage: one number for every stage, or one per stage run")
    p.add_argument("--max-epochs", type=int, default=None,
                   help="alternatively, validation intervals ('epochs' of --val-every steps) per stage")
    p.add_argument("--val-every", type=int, default=None, help="steps between validations (an epoch)")
    p.add_argument("--stage", choices=STAGES, action="append", default=None,
                   help="run only this stage (repeatable); default: vqvae then causal (then joint and head, "
                        "if they have steps)")
    p.add_argument("--init", default=None, help="start from a saved model directory (save_pretrained format)")
    p.add_argument("--new-transition", action="store_true",
                   help="with --init and the causal stage: train a new transition and graph (untrained, from the "
                        "model's seed) on the saved autoencoder, e.g. after changing the graph's budgets in the "
                        "--config file's model section; the retrieval head is kept")
    p.add_argument("--resume", default=None,
                   help="'last' to continue an interrupted run in --out from its last checkpoint (the same "
                        "flags as the run), or a .ckpt path to continue the first stage run from")
    p.add_argument("--seed", type=int, default=0, help="seeds weights, pair sampling and training (default 0)")
    p.add_argument("--out", default="runs/latest",
                   help="run directory: checkpoints, config, logs, pictures (default %(default)s)")
    p.add_argument("--preset", choices=sorted(PRESETS), default="default", help="configuration preset")
    p.add_argument("--config", default=None, help="JSON or YAML file of overrides: {model: {}, train: {}, data: {}}")
    p.add_argument("--layout", choices=["grid", "tokens"], default=None, help="latent layout (model.latent_layout)")
    p.add_argument("--frequency", default=None,
                   help="pair frequency: balanced, proportional, rare:<factor>:<ratio> (the imbalanced setting)")
    p.add_argument("--num-workers", type=int, default=None, help="DataLoader workers per device (default: auto)")
    p.add_argument("--code-pool", type=int, default=None, metavar="N",
                   help="causal and head stages: train on the codes of N training pairs, encoded once by the "
                        "frozen autoencoder, rather than encoding fresh pairs every step (train.code_pool; "
                        "default 0, fresh pairs)")
    p.add_argument("--keep", choices=["last", "best"], default=None,
                   help="the weights each stage saves and hands on: 'last' (its last step) or 'best' (its best "
                        "validation in the stage's second half, by PSNR for vqvae, retrieval by transition for "
                        "causal and joint; train.keep; default last)")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the model functions of the training step (GPU; the first steps compile)")
    p.add_argument("--compile-mode", choices=COMPILE_MODES, default=None,
                   help="torch.compile's mode (implies --compile): 'reduce-overhead' replays each step's graphs "
                        "as CUDA graphs (fewer kernel launches for small models), 'max-autotune' tunes kernels "
                        "longer (default: torch's default mode)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (logs only)")
    return p


def _compile_options(args: argparse.Namespace) -> dict[str, Any] | None:
    """torch.compile's options for the training step functions; None: run them eagerly."""
    if not (args.compile or args.compile_mode):
        return None
    return {} if args.compile_mode in (None, "default") else {"mode": args.compile_mode}


def _read_overrides(path: str | None) -> dict[str, dict[str, Any]]:
    if path is None:
        return {}
    file = Path(path)
    if not file.is_file():
        raise SystemExit(f"--config {file}: no such file")
    text = file.read_text()
    if file.suffix in (".yaml", ".yml"):
        import yaml

        data = yaml.safe_load(text)
    else:
        data = json.loads(text)
    if not isinstance(data, dict) or set(data) - {"model", "train", "data"}:
        raise SystemExit(f"--config {file}: expected a mapping with keys among model, train, data; got {data!r:.200}")
    return data


def resolve_devices(gpus: int | None, precision: str | None, accelerator: str = "auto") -> dict[str, Any]:
    """Trainer device arguments; a clear error when more GPUs are asked for than exist.

    ``accelerator="cpu"``: ``gpus`` (default 1) CPU processes, under DDP (gloo) when more than one."""
    import torch

    if accelerator not in ("auto", "gpu", "cpu"):
        raise SystemExit(f"--accelerator {accelerator}: choose auto, gpu or cpu")
    if accelerator == "cpu":
        processes = 1 if gpus is None else gpus
        if processes < 1:
            raise SystemExit(f"--devices must be >= 1 with --accelerator cpu (CPU processes), got {processes}")
        log.info("no GPU used: training on the %s%s", _device_name({"accelerator": "cpu"}),
                 f" in {processes} processes (DDP, gloo)" if processes > 1 else "")
        return {"accelerator": "cpu", "devices": processes, "precision": precision or "32-true",
                "strategy": "ddp" if processes > 1 else "auto"}
    available = torch.cuda.device_count()
    if gpus is None and accelerator == "gpu":
        gpus = 1
    if gpus == 0 and accelerator == "gpu":
        raise SystemExit("--gpus 0 asks for no GPU but --accelerator gpu for one; drop one of them")
    if gpus is None:
        gpus = 1 if available else 0
    if gpus < 0:
        raise SystemExit(f"--gpus must be >= 0, got {gpus}")
    if gpus > available:
        advice = ("run with --gpus 0 (CPU) or on a machine with GPUs" if available == 0
                  else f"use --gpus {available} or fewer")
        raise SystemExit(f"--gpus {gpus} asked for {gpus} GPU(s) but this machine has {available}; {advice}")
    if gpus == 0:
        log.info("no GPU used: training on the %s", _device_name({"accelerator": "cpu"}))
        return {"accelerator": "cpu", "devices": 1, "precision": precision or "32-true", "strategy": "auto"}
    return {"accelerator": "gpu", "devices": gpus, "precision": precision or "bf16-mixed",
            "strategy": "ddp" if gpus > 1 else "auto"}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Under DDP every rank runs this script; the run's own files and log lines come from the first one
    # (ranks as Lightning's launcher, torchrun or SLURM give them).
    first_rank = all(os.environ.get(name, "0") == "0" for name in ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID"))
    logging.basicConfig(level=logging.INFO if first_rank else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    import pytorch_lightning as pl

    from causal_vqvae.code_pool import POOL_STAGES, CodePoolDataModule
    from causal_vqvae.config import ModelConfig
    from causal_vqvae.model import CausalVQVAE
    from causal_vqvae.monitoring import MetricHistory, ValidationPictures
    from causal_vqvae.training import (BEST_FROM, STAGE_MONITOR, STAGES, BestWeights, CausalVQVAEModule,
                                       CheckpointMismatchError, NonFiniteGuard, NonFiniteLossError, TrainConfig,
                                       ddp_strategy)
    from datamodules.datamodule import TRAINER_KWARGS, DataConfig, build_datamodule

    preset = PRESETS[args.preset]
    overrides = _read_overrides(args.config)
    device_kwargs = resolve_devices(args.gpus, args.precision, args.accelerator)

    # ---- configurations: preset < --config file < flags
    train_fields = {**preset["train"], **overrides.get("train", {})}
    if args.val_every:
        train_fields["val_every"] = args.val_every
    if args.code_pool is not None:
        train_fields["code_pool"] = args.code_pool
    if args.keep is not None:
        train_fields["keep"] = args.keep
    train_config = TrainConfig.from_dict(train_fields)
    stages = args.stage or [s for s in STAGES if train_config.steps(s) > 0]
    if args.max_steps:
        if len(args.max_steps) not in (1, len(stages)):
            raise SystemExit(f"--max-steps takes one number or one per stage ({len(stages)}: {stages})")
        steps = args.max_steps * len(stages) if len(args.max_steps) == 1 else args.max_steps
        train_config = replace(train_config, **{f"{s}_steps": n for s, n in zip(stages, steps)})
    if args.max_epochs:
        train_config = replace(train_config, **{f"{s}_steps": args.max_epochs * train_config.val_every for s in stages})
    idle = [s for s in stages if train_config.steps(s) == 0]
    if args.stage and idle:
        raise SystemExit(f"--stage {' '.join(idle)} has 0 steps configured: pass --max-steps N")
    model_overrides = overrides.get("model", {})
    if args.new_transition and (args.init is None or "causal" not in stages):
        raise SystemExit("--new-transition replaces the transition and graph of a saved model by untrained ones: "
                         "pass --init DIR and run the causal stage (e.g. --stage causal)")
    changeable = set(CausalVQVAE.SETTINGS_FIELDS) | set(
        CausalVQVAE.TRANSITION_FIELDS if args.new_transition
        else CausalVQVAE.RETRIEVAL_HEAD_FIELDS if stages == ["head"] else ())
    if args.init and (args.layout or not set(model_overrides) <= changeable):
        raise SystemExit("--init takes the model's architecture from its config.json; drop --layout and the "
                         f"config file's 'model' fields {sorted(set(model_overrides) - changeable)} (it may change "
                         "the training and scoring settings, CausalVQVAE.SETTINGS_FIELDS; with --stage head alone "
                         f"also {', '.join(CausalVQVAE.RETRIEVAL_HEAD_FIELDS)}; with --new-transition also the "
                         "graph and transition, CausalVQVAE.TRANSITION_FIELDS), or train from scratch without --init")
    if "causal" in stages and "vqvae" not in stages and args.init is None:
        raise SystemExit("the causal stage trains on a frozen autoencoder: pass --init DIR with a trained one "
                         "(e.g. OUT/vqvae), or run the vqvae stage first")
    if stages == ["head"] and args.init is None:
        raise SystemExit("the head stage retrains the retrieval head of a trained model: pass --init DIR "
                         "(e.g. OUT/causal or a released model)")

    data_fields = {**preset["data"], **overrides.get("data", {})}
    for flag, key in [("batch_size", "batch_size"), ("frequency", "frequency"), ("num_workers", "num_workers")]:
        if getattr(args, flag) is not None:
            data_fields[key] = getattr(args, flag)
    data_config = DataConfig(dataset=args.data, data_root=args.data_root, seed=args.seed, **data_fields)

    if train_config.code_pool:
        devices = device_kwargs["devices"] * args.num_nodes
        if train_config.code_pool < data_config.batch_size * devices:
            raise SystemExit(f"--code-pool {train_config.code_pool} is smaller than one batch "
                             f"({data_config.batch_size} pairs x {devices} device(s)): pass a larger pool, e.g. 40000")
        if not set(stages) & set(POOL_STAGES):
            log.warning("--code-pool is for the %s stages, and this run has none: it trains on images",
                        " and ".join(POOL_STAGES))

    probe = build_datamodule(args.data, config=data_config)
    probe.prepare_data()
    actions = probe.actions
    if args.init:
        try:
            model = CausalVQVAE.from_pretrained(args.init, expect={"dataset": args.data})
        except (OSError, ValueError) as error:
            raise SystemExit(f"--init {args.init}: {error}") from None
        log.info("initialised from %s", args.init)
        if args.new_transition:
            fields = {k: v for k, v in model_overrides.items() if k in CausalVQVAE.TRANSITION_FIELDS}
            model = model.with_new_transition(**fields)
            log.info("new, untrained transition and graph%s", f": {fields}" if fields else "")
        elif fields := {k: v for k, v in model_overrides.items() if k in CausalVQVAE.RETRIEVAL_HEAD_FIELDS}:
            model = model.with_retrieval_head(**fields)
            log.info("new retrieval head: %s", fields)
        settings = {k: v for k, v in model_overrides.items()
                    if k in CausalVQVAE.SETTINGS_FIELDS and getattr(model.config, k) != v}
        if settings:
            model = model.with_settings(**settings)
            log.info("settings changed, every weight kept: %s", settings)
    else:
        model_fields = {**preset["model"], **model_overrides}
        if args.layout:
            model_fields["latent_layout"] = args.layout
        model = CausalVQVAE(ModelConfig(
            in_channels=probe.channels, dataset=args.data, num_actions=len(actions),
            action_names=tuple(actions.names), seed=args.seed, **model_fields))
    log.info("data: %s | %d actions | model: %s, %s parameters", probe.description, len(actions),
             model.config.latent_layout, f"{model.parameter_counts()['total']:,}")

    out = _writable_directory(Path(args.out))
    resolved = {"data": {k: v for k, v in asdict(data_config).items() if k != "extra"},
                "model": model.config.to_dict(), "train": train_config.to_dict(), "stages": stages,
                "devices": device_kwargs, "num_nodes": args.num_nodes, "argv": sys.argv if argv is None else argv}
    if args.resume:
        _check_same_run(out / "config.json", resolved)
    if first_rank:
        _write_json(out / "config.json", resolved)

    pl.seed_everything(args.seed, workers=True)
    world = device_kwargs["devices"] * args.num_nodes
    summary = {}
    for stage in stages:
        steps = train_config.steps(stage)
        if steps == 0:
            continue
        stage_dir = out / stage
        checkpoints = stage_dir / "checkpoints"
        if args.resume == "last" and _finished(stage_dir, steps):
            # Finished before the interruption: take its saved weights and go on to the next stage.
            model.load_state_dict(CausalVQVAE.from_pretrained(stage_dir, expect={"dataset": args.data}).state_dict())
            summary[stage] = json.loads((stage_dir / "metadata.json").read_text()).get("summary", {})
            log.info("stage %s: finished in the interrupted run, its weights reloaded from %s", stage, stage_dir)
            continue
        val_every = min(train_config.val_every, steps)
        epoch_length = data_config.batch_size * world * val_every
        pool = train_config.code_pool if stage in POOL_STAGES else 0
        stage_data = replace(data_config, mode="images" if stage == "vqvae" else "pairs",
                             train_length=pool or epoch_length)
        dm = build_datamodule(args.data, config=stage_data)
        if pool:
            dm = CodePoolDataModule(dm, model, pool, epoch_length, seed=args.seed)
        module = CausalVQVAEModule(model, stage, train_config, compile_options=_compile_options(args))
        guard = NonFiniteGuard(check_every=val_every)
        history = MetricHistory(stage_dir / "curves.json", samples_per_step=data_config.batch_size * world)
        callbacks = [
            guard,
            ValidationPictures(stage_dir / "pictures"),
            history,
            pl.callbacks.ModelCheckpoint(dirpath=checkpoints, save_last=True, every_n_train_steps=val_every,
                                         save_top_k=0),
        ]
        best_weights = None
        if train_config.keep == "best":
            best_weights = BestWeights(checkpoints / "best", STAGE_MONITOR[stage], math.ceil(BEST_FROM * steps))
            callbacks.append(best_weights)
        trainer = pl.Trainer(
            max_steps=steps, num_nodes=args.num_nodes, logger=_logger(stage_dir), callbacks=callbacks,
            log_every_n_steps=min(50, val_every),  # gradient clipping: CausalVQVAEModule.on_before_optimizer_step
            enable_progress_bar=not args.no_progress, default_root_dir=stage_dir,
            num_sanity_val_steps=0, **TRAINER_KWARGS,
            # Several processes (devices or nodes): DDP without its buffer copy at each step (see
            # ddp_strategy); a new strategy object per stage, as a Trainer binds its own.
            **{**device_kwargs, "strategy": ddp_strategy() if world > 1 else "auto"},
            # cuDNN picks the fastest convolution algorithms (1.3x on the H100 autoencoder step with
            # the fused AdamW: benchmarks/results/model_speed_h100_grid_bf16_fused.json)
            benchmark=device_kwargs["accelerator"] == "gpu",
        )
        # An explicit checkpoint path continues the first stage of this run; later stages start afresh.
        resume = args.resume if args.resume == "last" or stage == stages[0] else None
        ckpt = _resume_checkpoint(resume, checkpoints)
        start = time.perf_counter()
        log.info("stage %s: %d steps, batch %d x %d device(s)%s", stage, steps, data_config.batch_size, world,
                 f", resuming from {ckpt}" if ckpt else "")
        try:
            # weights_only: a Lightning checkpoint is state dicts and plain values, nothing to unpickle.
            trainer.fit(module, datamodule=dm, ckpt_path=ckpt, weights_only=True)
        except NonFiniteLossError as error:
            kept = f"; it is {checkpoints / 'last.ckpt'}" if error.last_good_step is not None else ""
            raise SystemExit(f"{error}{kept}. Lower the learning rate ({stage}_lr in --config) or the "
                             f"batch's difficulty, then continue with --resume last") from None
        except CheckpointMismatchError as error:
            raise SystemExit(f"--resume {ckpt}: {error}") from None
        # The schedule's last step rarely falls on the checkpoint interval: save it too, so a run
        # killed after this point resumes with this stage finished.
        # weights_only=False: the full state (optimiser, schedule, loops), as resuming needs.
        trainer.save_checkpoint(checkpoints / "last.ckpt", weights_only=False)
        if not any(k.startswith("val/") for k in trainer.callback_metrics):
            # resumed at the last step: nothing ran, so validate for the metrics
            trainer.validate(module, datamodule=dm, verbose=False, weights_only=True)
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
        kept: dict[str, Any] = {"keep": "last", "step": steps}
        if best_weights is not None:
            trainer.strategy.barrier()  # rank zero has written the last best model
            best = best_weights.best()
            # On a machine that does not share rank zero's disk, best() is None: that rank keeps its
            # last weights, and DDP gives every rank rank zero's weights when the next stage starts.
            if best is None and trainer.is_global_zero:
                log.warning("stage %s: no validation from step %d on to pick the best from; the last step's "
                            "weights are kept", stage, best_weights.from_step)
            elif best is not None:
                model.load_state_dict(CausalVQVAE.from_pretrained(best_weights.directory / best["path"]).state_dict())
                kept = {"keep": "best", "step": best["step"], "monitor": best["monitor"], "score": best["score"],
                        "val_last": metrics}
                metrics = best["metrics"]
                log.info("stage %s: keeping the weights of step %d (%s = %.4g; at the last step %.4g)", stage,
                         best["step"], best["monitor"], best["score"], kept["val_last"].get(best["monitor"], math.nan))
        seconds = time.perf_counter() - start
        # Wall-clock samples (images or pairs, every device) per second, validation included.
        rate = None if ckpt else round(steps * data_config.batch_size * world / seconds, 1)
        # seconds: this invocation; training_seconds: the stage's training time with the time before
        # an interruption carried over (as curves.json counts it), so a resumed stage reports its whole length.
        summary[stage] = {"seconds": seconds, "training_seconds": round(history.elapsed(), 3), "samples_per_s": rate,
                          "val": metrics, "kept": kept, "resumed_from": ckpt}
        if trainer.is_global_zero:
            model.save_pretrained(stage_dir, extra_metadata={
                "stage": stage, "steps": steps, "seed": args.seed, "data": probe.description,
                "device": _device_name(device_kwargs), "wall_seconds": round(seconds, 1), "val_metrics": metrics,
                "summary": summary[stage],
            })
        log.info("stage %s done in %.0f s: %s", stage, seconds,
                 ", ".join(f"{k}={v:.4g}" for k, v in sorted(metrics.items())))
    if summary and first_rank:
        _write_json(out / "summary.json", summary)
    return 0


def _write_json(path: Path, data: dict) -> None:
    """Write through a temporary file and rename, so ``path`` is never half-written."""
    from causal_vqvae.io import write_json

    write_json(path, data, default=str)


def _writable_directory(path: Path) -> Path:
    """``path`` created if needed; a clear exit when it is a file or cannot be written."""
    if path.exists() and not path.is_dir():
        raise SystemExit(f"--out {path}: exists and is not a directory; pass a directory for the run")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-"):
            pass
    except OSError as error:
        raise SystemExit(f"--out {path}: cannot write there ({error.strerror or error}); "
                         "pass a directory you can write to") from None
    return path


# Settings added after runs were written, with the value that reproduces a run written before them
# (before graph_lr_scale, the graph's edge logits trained at the stage's learning rate; before
# code_pool, every step encoded fresh pairs; before retrieval_score, validation scored retrieval by
# transition with the NLL; before keep, every stage kept its last step's weights).
ADDED_SETTINGS = {"train": {"graph_lr_scale": 1.0, "code_pool": 0, "keep": "last"},
                  "model": {"retrieval_score": "nll"}}


def _check_same_run(path: Path, resolved: dict[str, Any]) -> None:
    """A resumed run must be the run that was interrupted: same data, model, schedule and stages."""
    if not path.is_file():
        return
    before = json.loads(path.read_text())
    now = json.loads(json.dumps(resolved, default=str))  # as it would be written
    for settings in (before, now):  # settings that do not change what is trained
        for key in ("num_workers", "cache_root"):
            settings.get("data", {}).pop(key, None)
    older = {}  # settings the interrupted run predates, as it ran, where this run differs
    for section, added in ADDED_SETTINGS.items():
        for key, value in added.items():
            if isinstance(before.get(section), dict) and key not in before[section]:
                before[section][key] = value
                if now.get(section, {}).get(key) != value:
                    older[section] = {**older.get(section, {}), key: value}
    differ = [key for key in ("data", "model", "train", "stages", "num_nodes") if before.get(key) != now.get(key)]
    if differ:
        details = "; ".join(
            f"{key}: {_diff(before.get(key), now.get(key))}" for key in differ)
        hint = "" if not older else (f" (it predates {', '.join(k for s in older.values() for k in s)}: "
                                     f"add {json.dumps(older)} to the --config file)")
        raise SystemExit(f"--resume: {path} was written by a run with other settings ({details}); "
                         f"resume with the original flags{hint}, or pass a new --out to start a new run")


def _diff(before: Any, now: Any) -> str:
    if isinstance(before, dict) and isinstance(now, dict):
        keys = sorted(k for k in set(before) | set(now) if before.get(k) != now.get(k))
        return ", ".join(f"{k} was {before.get(k)!r}, now {now.get(k)!r}" for k in keys)
    return f"was {before!r}, now {now!r}"


def _resume_checkpoint(resume: str | None, checkpoints: Path) -> str | None:
    """The checkpoint a stage continues from: ``last`` is its own last.ckpt if there is one
    (none: the stage never reached its first checkpoint, so it starts over)."""
    if resume is None:
        return None
    path = checkpoints / "last.ckpt" if resume == "last" else Path(resume)
    if path.is_file():
        return str(path)
    if resume == "last":
        return None
    raise SystemExit(f"--resume {resume}: no such checkpoint; pass 'last' or the path of a .ckpt file")


def _finished(stage_dir: Path, steps: int) -> bool:
    """Whether a stage's model was saved after all its ``steps`` (so a resumed run can skip it)."""
    try:
        metadata = json.loads((stage_dir / "metadata.json").read_text())
    except (OSError, ValueError):
        return False
    return (stage_dir / "model.safetensors").is_file() and metadata.get("steps") == steps and "summary" in metadata


def _logger(stage_dir: Path):
    from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger

    try:
        import tensorboard  # noqa: F401

        return TensorBoardLogger(stage_dir, name="logs", version="")
    except ImportError:
        return CSVLogger(stage_dir, name="logs", version="")


def _device_name(device_kwargs: dict[str, Any]) -> str:
    import torch

    if device_kwargs["accelerator"] == "gpu":
        return f"{device_kwargs['devices']} x {torch.cuda.get_device_name(0)}"
    threads = torch.get_num_threads()
    processes = device_kwargs.get("devices", 1)
    return (f"{processes} x " if processes > 1 else "") + f"CPU ({threads} thread{'' if threads == 1 else 's'})"


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
