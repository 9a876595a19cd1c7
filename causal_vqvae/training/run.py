"""A training run: the stages in order, each handing its weights to the next (see
:mod:`causal_vqvae.cli.train` for the flags and the run folder's contents).

Configuration comes in layers: a preset, then the ``--config`` files in order, then the flags. Each stage
builds its DataModule (or a code pool of it), wraps the model in :class:`CausalVQVAEModule` and fits
it with Lightning, checkpointing every ``val_every`` steps so that ``--resume last`` continues
exactly; its weights are then saved with ``save_pretrained`` under ``OUT/<stage>``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import sys
import time
import warnings
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import pytorch_lightning as pl

from datamodules.datamodule import DEFAULT_TWIN_VERSION, TRAINER_KWARGS, DataConfig, build_datamodule

from ..config import ModelConfig
from ..familiarity import METADATA_KEY, calibrate
from ..model import CausalVQVAE
from ..pretrained import TWIN_VERSION_KEY, read_metadata
from ..validation import build_settings
from .callbacks import (
    BestWeights,
    NonFiniteGuard,
    NonFiniteLossError,
    RunFolderCheckpointIO,
    StageProgressBar,
)
from .code_pool import POOL_STAGES, CodePoolDataModule
from .config import BEST_FROM, STAGES, TrainConfig, stage_monitor
from .devices import ddp_strategy, device_name, resolve_devices
from .module import CausalVQVAEModule, CheckpointMismatchError
from .monitoring import MetricHistory, ValidationPictures
from .presets import PRESETS, read_overrides
from .rundir import (
    RunLock,
    check_checkpoint,
    check_same_run,
    claim_run_folder,
    finished,
    resume_checkpoint,
    stage_logger,
    writable_directory,
    write_run_json,
)

__all__ = ["compile_options", "run"]

log = logging.getLogger("train")
# Held-out images a saved model's reconstruction errors are calibrated on (causal_vqvae.familiarity).
CALIBRATION_IMAGES = 1024


def compile_options(args: argparse.Namespace) -> dict[str, Any] | None:
    """torch.compile's options for the training step functions; None: run them eagerly."""
    if not (args.compile or args.compile_mode):
        return None
    return {} if args.compile_mode in (None, "default") else {"mode": args.compile_mode}


def familiarity_record(model: CausalVQVAE, data: str, config: DataConfig, description: str) -> dict[str, Any]:
    """The reconstruction errors of held-out images of the run's data (:func:`calibrate`): what
    ``edit`` compares an input with to say it looks unlike the training data."""
    images = build_datamodule(data, config=replace(config, mode="images")).sample_batch(
        "val", size=min(CALIBRATION_IMAGES, config.val_length))["image"]
    was_training = model.training
    model.eval()
    try:
        return calibrate(model, images.to(next(model.parameters()).device), f"{description}, validation images")
    finally:
        model.train(was_training)


def run(args: argparse.Namespace, argv: list[str] | None = None) -> int:
    """Train as the flags ``args`` of :func:`causal_vqvae.cli.train.build_parser` say; ``argv``
    (default ``sys.argv``) is recorded in the run's config.json. Returns the exit status. The run
    folder is locked (:class:`RunLock`) while it trains, and released however the run ends."""
    with contextlib.ExitStack() as cleanup:
        return _run(args, argv, cleanup)


def _run(args: argparse.Namespace, argv: list[str] | None, cleanup: contextlib.ExitStack) -> int:
    # Under DDP every rank runs this script; the run's own files and log lines come from the first one
    # (ranks as Lightning's launcher, torchrun or SLURM give them).
    first_rank = all(os.environ.get(name, "0") == "0" for name in ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID"))
    logging.basicConfig(level=logging.INFO if first_rank else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    quiet_lightning()

    if args.resume and getattr(args, "overwrite", False):  # refused before anything is made or read
        raise SystemExit("--resume continues a run and --overwrite replaces it: give one of them")
    preset = PRESETS[args.preset]
    origins: dict[str, list[str]] = {}  # the --config files that set each section, for error messages
    overrides = read_overrides(args.config, origins)
    device_kwargs = resolve_devices(args.gpus, args.precision, args.accelerator)

    # ---- configurations: preset < --config files, in order < flags
    train_fields = {**preset["train"], **overrides.get("train", {})}
    if args.val_every is not None:
        train_fields["val_every"] = args.val_every
    if args.code_pool is not None:
        train_fields["code_pool"] = args.code_pool
    if args.keep is not None:
        train_fields["keep"] = args.keep

    def source(section: str) -> str:
        """Where a section's settings came from, for an error message: its --config files, or the preset."""
        return " ".join(f"--config {path}" for path in origins.get(section, ())) or f"--preset {args.preset}"

    train_config = build_settings(TrainConfig, train_fields, f"{source('train')}, train")
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
                         f"--config files' 'model' fields {sorted(set(model_overrides) - changeable)} (it may change "
                         "the training and scoring settings, CausalVQVAE.SETTINGS_FIELDS; with --stage head alone "
                         f"also {', '.join(CausalVQVAE.RETRIEVAL_HEAD_FIELDS)}; with --new-transition also the "
                         "graph and transition, CausalVQVAE.TRANSITION_FIELDS), or train from scratch without --init")
    if "causal" in stages and "vqvae" not in stages and args.init is None:
        raise SystemExit("the causal stage trains on a frozen autoencoder: pass --init DIR with a trained one "
                         "(e.g. OUT/vqvae), or run the vqvae stage first")
    if stages == ["head"] and args.init is None:
        raise SystemExit("the head stage retrains the retrieval head of a trained model: pass --init DIR "
                         "(e.g. OUT/causal or a released model)")
    if "decoder" in stages:
        if stages[-1] != "decoder":
            raise SystemExit(f"--stage {' --stage '.join(stages)}: the decoder stage fine-tunes the decoder of the "
                             "finished model, so it runs last: give it last")
        if args.init is None and stages == ["decoder"]:
            raise SystemExit("the decoder stage fine-tunes the decoder of a trained model: pass --init DIR "
                             "(e.g. OUT/causal or a released model)")
        transition_trained = bool({"causal", "joint"} & set(stages)) or (
            args.init is not None and read_metadata(args.init).get("stage") != "vqvae")
        if train_config.decoder_edit_weight > 0 and not transition_trained:
            untrained = (f"--init {args.init} is an autoencoder whose transition is untrained" if args.init else
                         f"the stages {', '.join(stages)} train no transition")
            raise SystemExit(f"{untrained}, and the decoder stage learns to render the transition's edits: run the "
                             "causal stage before it (or --init a model after its causal stage, e.g. OUT/causal), "
                             "or set train.decoder_edit_weight to 0 in a --config file")

    if getattr(args, "twin_version", None) is not None:  # the flag's mistake named as the flag's
        try:
            DataConfig(dataset=args.data, data_root=args.data_root, twin_version=args.twin_version)
        except ValueError as error:
            raise SystemExit(f"--twin-version {args.twin_version}: {error}") from None
    if getattr(args, "augment", None) is not None:
        args.augment = [name.strip() for name in args.augment.split(",") if name.strip()]
        try:
            DataConfig(dataset=args.data, data_root=args.data_root, augment=args.augment,
                       twin_version=args.twin_version or DEFAULT_TWIN_VERSION)
        except ValueError as error:
            raise SystemExit(f"--augment {','.join(args.augment)}: {error}") from None
    data_fields = {**preset["data"], **overrides.get("data", {})}
    for flag, key in [("batch_size", "batch_size"), ("frequency", "frequency"), ("num_workers", "num_workers"),
                      ("twin_version", "twin_version"), ("augment", "augment")]:
        if getattr(args, flag, None) is not None:
            data_fields[key] = getattr(args, flag)
    data_config = build_settings(DataConfig, data_fields, f"{source('data')}, data", dataset=args.data,
                                 data_root=args.data_root, seed=args.seed)

    if train_config.code_pool:
        devices = device_kwargs["devices"] * args.num_nodes
        given = "--code-pool" if args.code_pool is not None else f"{source('train')}: train.code_pool"
        if train_config.code_pool < data_config.batch_size * devices:
            raise SystemExit(f"{given} {train_config.code_pool} is smaller than one batch "
                             f"({data_config.batch_size} pairs x {devices} device(s)): pass a larger pool, e.g. 40000")
        if not set(stages) & set(POOL_STAGES) and args.code_pool is not None:
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
        if model_fields.get("latent_layout") == "tokens":  # a preset's relative positions and window need a grid
            for grid_only in ("transition_position", "transition_window"):
                if grid_only not in model_overrides:
                    model_fields.pop(grid_only, None)
        model = CausalVQVAE(build_settings(
            ModelConfig, model_fields, f"{source('model')}, model", in_channels=probe.channels, dataset=args.data,
            num_actions=len(actions), action_names=tuple(actions.names), seed=args.seed))
    log.info("data: %s | %d actions | model: %s, %s parameters", probe.description, len(actions),
             model.config.latent_layout, f"{model.parameter_counts()['total']:,}")

    if args.resume and args.resume != "last":
        check_checkpoint(args.resume)
    out = writable_directory(args.out)
    if first_rank:  # the lock first: a run still training in the folder is never touched
        cleanup.enter_context(RunLock(out))
        claim_run_folder(out, args.resume, getattr(args, "overwrite", False), init=args.init)
    resolved = {"data": {k: v for k, v in asdict(data_config).items() if k != "extra"},
                "model": model.config.to_dict(), "train": train_config.to_dict(), "stages": stages,
                "devices": device_kwargs, "num_nodes": args.num_nodes, "argv": sys.argv if argv is None else argv}
    if args.resume:
        check_same_run(out / "config.json", resolved)
        done = [s for s in stages if train_config.steps(s) > 0]
        if (out / "summary.json").is_file() and all(finished(out / s, train_config.steps(s)) for s in done):
            if getattr(args, "json", False):
                print(json.dumps({"out": str(out), "stages": done, "final": str(out / done[-1]), "finished": True}))
            else:
                print(f"--resume: the run in {out} has finished (stages {', '.join(done)}); nothing to resume. "
                      f"Its model: {out / done[-1]}", flush=True)
            return 0
    if first_rank:
        write_run_json(out / "config.json", resolved)

    pl.seed_everything(args.seed, workers=True)
    world = device_kwargs["devices"] * args.num_nodes
    summary = {}
    for stage in stages:
        steps = train_config.steps(stage)
        if steps == 0:
            continue
        stage_dir = out / stage
        checkpoints = stage_dir / "checkpoints"
        if args.resume == "last" and finished(stage_dir, steps):
            # Finished before the interruption: take its saved weights and go on to the next stage.
            model.load_state_dict(CausalVQVAE.from_pretrained(stage_dir, expect={"dataset": args.data}).state_dict())
            summary[stage] = json.loads((stage_dir / "metadata.json").read_text()).get("summary", {})
            log.info("stage %s: finished in the interrupted run, its weights reloaded from %s", stage, stage_dir)
            continue
        val_every = min(train_config.val_every, steps)
        epoch_length = data_config.batch_size * world * val_every
        # A pool larger than the pairs the stage trains on would encode pairs never drawn.
        pool = min(train_config.code_pool, steps * data_config.batch_size * world) if stage in POOL_STAGES else 0
        stage_data = replace(data_config, mode="images" if stage == "vqvae" else "pairs",
                             train_length=pool or epoch_length)
        dm = build_datamodule(args.data, config=stage_data)
        if pool:
            dm = CodePoolDataModule(dm, model, pool, epoch_length, seed=args.seed)
        module = CausalVQVAEModule(model, stage, train_config, compile_options=compile_options(args))
        guard = NonFiniteGuard(check_every=val_every)
        history = MetricHistory(stage_dir / "curves.json", samples_per_step=data_config.batch_size * world)
        callbacks = [
            guard,
            ValidationPictures(stage_dir / "pictures"),
            history,
            pl.callbacks.ModelCheckpoint(dirpath=checkpoints, save_last=True, every_n_train_steps=val_every,
                                         save_top_k=0),
        ]
        if not args.no_progress:
            callbacks.append(StageProgressBar(stage))
        best_weights = None
        if train_config.keep == "best":
            best_weights = BestWeights(checkpoints / "best", stage_monitor(stage, train_config),
                                       math.ceil(BEST_FROM * steps))
            callbacks.append(best_weights)
        trainer = pl.Trainer(
            max_steps=steps, num_nodes=args.num_nodes, logger=stage_logger(stage_dir), callbacks=callbacks,
            log_every_n_steps=min(50, val_every),  # gradient clipping: CausalVQVAEModule.on_before_optimizer_step
            enable_progress_bar=not args.no_progress, default_root_dir=stage_dir,
            num_sanity_val_steps=0, enable_model_summary=False, plugins=[RunFolderCheckpointIO()], **TRAINER_KWARGS,
            # Several processes (devices or nodes): DDP without its buffer copy at each step (see
            # ddp_strategy); a new strategy object per stage, as a Trainer binds its own.
            **{**device_kwargs, "strategy": ddp_strategy() if world > 1 else "auto"},
            # cuDNN picks the fastest convolution algorithms (1.3x on the H100 autoencoder step with
            # the fused AdamW: benchmarks/results/model_speed/model_speed_h100_grid_bf16_fused.json)
            benchmark=device_kwargs["accelerator"] == "gpu",
        )
        # An explicit checkpoint path continues the first stage of this run; later stages start afresh.
        resume = args.resume if args.resume == "last" or stage == stages[0] else None
        ckpt = resume_checkpoint(resume, checkpoints)
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
            record = {"stage": stage, "steps": steps, "seed": args.seed, "data": probe.description,
                      "device": device_name(device_kwargs), "wall_seconds": round(seconds, 1), "val_metrics": metrics,
                      "summary": summary[stage]}
            if probe.source is not None and probe.source.is_twin:  # bench renders this twin by default
                record[TWIN_VERSION_KEY] = data_config.twin_version
            try:  # a calibration that fails must not cost the stage's weights
                record[METADATA_KEY] = familiarity_record(model, args.data, data_config, probe.description)
            except Exception as error:  # noqa: BLE001 - any failure: saved without the record, and said
                log.warning("stage %s: no reconstruction-error record (%s: %s); the model is saved without it, and "
                            "edit will not warn on unfamiliar images", stage, type(error).__name__, error)
            model.save_pretrained(stage_dir, extra_metadata=record)
        log.info("stage %s done in %.0f s: %s", stage, seconds,
                 ", ".join(f"{k}={v:.4g}" for k, v in sorted(metrics.items())))
    if summary and first_rank:
        write_run_json(out / "summary.json", summary)
        if getattr(args, "json", False):
            print(json.dumps({"out": str(out), "stages": list(summary), "final": str(out / stages[-1]),
                              "summary": summary}, indent=2, default=str))
        else:
            print(_closing_screen(out, stages, args.data), flush=True)
    return 0


def quiet_lightning() -> None:
    """Keep Lightning's own chatter off the screen: its info lines (the devices, which this run logs
    itself, and tips for cloud services) and a deprecation warning it raises itself. Its warnings
    and errors still show."""
    for name in ("pytorch_lightning", "lightning_fabric", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")


def _closing_screen(out: Path, stages: list[str], data: str) -> str:
    """What a finished run wrote and the commands to run next."""
    twin = data in ("dsprites", "shapes3d")
    lines = [f"done: {out}/" + ", ".join(f"{stage}/" for stage in stages) + f" (the model: {out / stages[-1]})",
             f"  curves and pictures: {out / stages[-1] / 'pictures'}, tensorboard --logdir {out}", "next:",
             f"  causal-vqvae edit --model {out} --image IMAGE --traverse"]
    if twin:
        lines.append(f"  causal-vqvae bench --model {out} --data {data} --pairs 1000 --skip-baseline --skip-classifier")
    return "\n".join(lines)
