"""The Lightning callbacks a training run adds to its stages beside :mod:`.monitoring`'s:
:class:`NonFiniteGuard` (stop on a NaN or infinite loss before a damaged checkpoint is written),
:class:`BestWeights` (keep the weights of a stage's best validation) and :class:`StageProgressBar`
(the stage, its step and the training loss on Lightning's progress bar)."""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import TQDMProgressBar
from pytorch_lightning.plugins.io import TorchCheckpointIO

from ..files import atomic_write, write_json
from ..model import CausalVQVAE

__all__ = ["NonFiniteLossError", "NonFiniteGuard", "BestWeights", "RunFolderCheckpointIO", "StageProgressBar"]


class RunFolderCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoints written where they live: to a temporary file beside the checkpoint,
    flushed to disk, then renamed over it. Lightning's own writer stages the file elsewhere and
    moves it, a copy across file systems that a full disk or a kill can leave half-written under
    the checkpoint's real name; here the previous checkpoint stays whole until the new one is."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | os.PathLike,
                        storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options, got {storage_options!r}")
        try:
            atomic_write(path, lambda temp: torch.save(checkpoint, temp))
        # torch.save reports a full disk as a RuntimeError of its zip writer ("file write failed")
        except (OSError, RuntimeError) as error:
            text = str(error).strip()
            reason = getattr(error, "strerror", None) or (text.splitlines()[0] if text else type(error).__name__)
            raise OSError(f"cannot write the checkpoint {path}: {reason}; the last complete checkpoint is kept: "
                          "make room (a full disk?), then continue with --resume last") from None


class StageProgressBar(TQDMProgressBar):
    """Lightning's progress bar (steps of the epoch, rate, time left), described by the stage and
    its step out of the stage's steps, with the training loss read where the bar refreshes (a read
    is a device sync, so not every step) and without Lightning's version number."""

    def __init__(self, stage: str, refresh_rate: int = 10) -> None:
        super().__init__(refresh_rate=refresh_rate)
        self.stage = stage
        self.loss: float | None = None

    def on_train_epoch_start(self, trainer: pl.Trainer, *args: Any) -> None:
        super().on_train_epoch_start(trainer, *args)
        if self.train_progress_bar is not None:
            self.train_progress_bar.set_description(f"{self.stage} from step {trainer.global_step} of {trainer.max_steps}")

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        bar = self.train_progress_bar
        if bar is not None and self._should_update(batch_idx + 1, bar.total):
            loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
            if isinstance(loss, torch.Tensor):
                self.loss = float(loss.detach())
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)

    def get_metrics(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, Any]:
        items = super().get_metrics(trainer, pl_module)
        items.pop("v_num", None)
        if self.loss is not None:
            items["loss"] = f"{self.loss:.4g}"
        return items


class NonFiniteLossError(RuntimeError):
    """The training loss was NaN or infinite; ``step`` is the first optimiser step where it was."""

    def __init__(self, stage: str, step: int, last_good_step: int | None) -> None:
        self.stage, self.step, self.last_good_step = stage, step, last_good_step
        kept = ("no checkpoint had been written yet" if last_good_step is None
                else f"the last good checkpoint (step {last_good_step}) is kept")
        super().__init__(f"stage {stage}: the training loss was not finite (NaN or inf) at step {step}; "
                         f"training stopped and {kept}")


class NonFiniteGuard(pl.Callback):
    """Stop training when the loss is NaN or infinite, before a checkpoint of the damaged weights.

    Each step folds "is the loss finite" into a device tensor (no host sync); the flag is read
    every ``check_every`` steps (make it the checkpoint interval, or a divisor of it) and at the
    last step. Lightning runs checkpoint callbacks after all others, so a raise here comes before
    the save, and the last checkpoint on disk is one whose steps were all finite.
    """

    def __init__(self, check_every: int) -> None:
        if check_every < 1:
            raise ValueError(f"check_every must be >= 1, got {check_every}")
        self.check_every = check_every
        self.last_good_step: int | None = None
        self._first_bad: torch.Tensor | None = None

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # A run resumed from step k starts from the checkpoint of step k, which was good.
        self.last_good_step = trainer.global_step or None

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs, batch, batch_idx: int
    ) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        step = trainer.global_step  # steps done, this one included
        if self._first_bad is None:
            self._first_bad = torch.full((), -1, dtype=torch.long, device=loss.device)
        bad = ~torch.isfinite(loss.detach()) & (self._first_bad < 0)
        self._first_bad = torch.where(bad, torch.full_like(self._first_bad, step), self._first_bad)
        if step % self.check_every == 0 or step >= (trainer.max_steps or 0):
            first_bad = int(trainer.strategy.reduce(self._first_bad.float(), reduce_op="max"))
            if first_bad >= 0:
                raise NonFiniteLossError(getattr(pl_module, "stage", "?"), first_bad, self.last_good_step)
            self.last_good_step = step


class BestWeights(pl.Callback):
    """Keep on disk the weights of a stage's best validation so far: the highest ``monitor`` among
    the validations at step ``from_step`` or later (ties: the later one).

    ``directory`` holds the model of that validation, saved by ``save_pretrained`` in
    ``step-<N>/``, and ``best.json``, which names it with its step, score and validation metrics.
    ``best.json`` is written after the model and atomically, and a replaced model is deleted only
    after it, so ``best.json`` always names a complete model; a resumed run reads it back. Only
    global rank zero writes (every rank sees the same synced metrics)."""

    INDEX = "best.json"

    def __init__(self, directory: str | os.PathLike, monitor: str, from_step: int) -> None:
        self.directory = Path(directory)
        self.monitor = monitor
        self.from_step = from_step

    def best(self) -> dict[str, Any] | None:
        """``{"step", "score", "monitor", "path", "metrics"}`` of the kept validation, or None."""
        try:
            return json.loads((self.directory / self.INDEX).read_text())
        except FileNotFoundError:
            return None

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # A kept model from after the step training starts at is another run's (a fresh run in the
        # same directory starts at 0, a resumed one at its checkpoint's step): forget it.
        best = self.best()
        if best is not None and best["step"] > trainer.global_step and trainer.is_global_zero:
            (self.directory / self.INDEX).unlink()
            shutil.rmtree(self.directory / best["path"], ignore_errors=True)
        trainer.strategy.barrier()

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or trainer.global_step < self.from_step:
            return
        value = trainer.callback_metrics.get(self.monitor)
        score = float(value) if value is not None else math.nan
        if not math.isfinite(score):
            return
        best = self.best()
        if best is not None and (score < best["score"] or best["step"] == trainer.global_step):
            return
        if trainer.is_global_zero:
            self._write(pl_module.model, trainer.global_step, score, trainer.callback_metrics)

    def _write(self, model: CausalVQVAE, step: int, score: float, metrics: dict[str, Any]) -> None:
        name = f"step-{step:07d}"
        val = {k: float(v) for k, v in metrics.items() if k.startswith("val/")}
        model.save_pretrained(self.directory / name, extra_metadata={"step": step, "val_metrics": val})
        write_json(self.directory / self.INDEX,
                   {"step": step, "score": score, "monitor": self.monitor, "path": name, "metrics": val})
        # The replaced model, and any left by a run killed between a save and its index.
        for stale in self.directory.glob("step-*"):
            if stale.name != name:
                shutil.rmtree(stale, ignore_errors=True)
