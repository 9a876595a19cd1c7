"""Staged training of :class:`CausalVQVAE` with PyTorch Lightning.

Stages, run in this order by ``train.py`` (each hands its weights to the next):

``vqvae``
    the autoencoder on single images: reconstruction + commitment (+ codebook in "loss" mode);
    the EMA codebook and dead-code restarts update inside the step.
``causal``
    the autoencoder frozen (eval mode, no codebook update); on pairs (x, a, x') the codes of both
    images feed the transition (mixture NLL of x' codes + sparsity of both graphs, dual ascent on
    the budgets) and the retrieval head (cross-entropy on the action).
``joint`` (optional)
    everything trained on pairs: the autoencoder losses of x and x' plus the causal losses.
``head`` (optional)
    the retrieval head alone, everything else frozen.
``decoder`` (optional, last)
    the decoder alone, everything else frozen (eval mode): on pairs (x, a, x'), the reconstruction
    of both images and the decoded edit of x by a against x' (``CausalVQVAE.decoder_loss``). Codes,
    graph, the codes of every edit and retrieval stay exactly as they were; the pictures get better.

Losses and their weights live in :class:`TrainConfig`; the model's own hyperparameters in
:class:`ModelConfig`. Validation runs on held-out pairs and logs reconstruction MSE / PSNR, the
transition's code accuracy and the PSNR of its decoded edits against the true second images,
retrieval accuracy of both methods (action and factor), codebook usage and graph size.

Under DDP each stage requires gradients of exactly the parameters its loss reaches (DDP refuses
one that gets none). Every buffer but the per-rank codebook usage counts is kept equal on all
ranks by construction: the EMA codebook statistics are all-reduced in the quantizer, its restart
picks broadcast from rank 0, and dual ascent steps every rank on the expected targets of all ranks'
examples pooled. :func:`~causal_vqvae.training.devices.ddp_strategy` therefore turns DDP's per-step
buffer broadcast off, which would overwrite the other ranks' usage counts with rank 0's.

Resuming is exact: the random draws of optimiser step ``t`` (graph masks, codebook restarts) come
from a generator seeded by (model seed, rank, t), so they do not depend on where a run was
restarted; weights, optimiser, schedule, EMA codebook and dual multipliers are in the Lightning
checkpoint; a checkpoint of another architecture, dataset or stage is refused, naming both.
:class:`~causal_vqvae.training.callbacks.NonFiniteGuard` stops training when the loss stops being
finite, before a checkpoint of the damaged weights can be written.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import pytorch_lightning as pl
import torch

from ..config import ModelConfig
from ..model import CausalVQVAE
from ..nn.compiling import compile_ready
from ..nn.transition import TransitionLoss
from .config import FROZEN_AUTOENCODER_STAGES, TrainConfig, check_stage
from .optim import (drop_untrained_from_vqvae_optimizer_state, optimizer_group_mismatch, parameter_groups,
                    regroup_optimizer_state)
from .rundir import ADDED_SETTINGS

__all__ = ["CausalVQVAEModule", "CheckpointMismatchError", "logs_training_step", "parameter_groups", "psnr"]

AUTOENCODER_PARTS = ("encoder", "decoder", "quantizer", "token_encoder", "token_decoder")
# Validation metrics shown on the progress bar (none from training steps: see training_step).
PROGRESS_BAR_METRICS = ("psnr", "retrieval_head_acc")


def psnr(mse: torch.Tensor) -> torch.Tensor:
    """PSNR in dB of per-image MSEs on [0, 1] images (capped at 100 dB for exact copies)."""
    return (10 * torch.log10(1.0 / mse.clamp_min(1e-10))).clamp_max(100.0)


def _warmup_cosine(step: int, total: int, warmup: int, floor: float) -> float:
    if warmup and step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))


# The model functions a training step runs; ``compile_options`` compiles these (validation stays eager).
STEP_FUNCTIONS = ("autoencoder_loss", "encode_codes", "transition_loss", "retrieval_loss", "decoder_loss")


class CausalVQVAEModule(pl.LightningModule):
    """Trains one stage of a :class:`CausalVQVAE` (the plain module is ``self.model``).

    ``compile_options``: None runs the training step eagerly; a dict (``{}`` for torch's defaults)
    wraps each of :data:`STEP_FUNCTIONS` in ``torch.compile(fn, **compile_options)``. Compiling the
    functions rather than the module leaves ``self.model`` and its checkpoint keys untouched, and
    reaches the losses, which ``torch.compile(model)`` would not (it compiles ``forward`` only).
    """

    def __init__(self, model: CausalVQVAE | Mapping[str, Any], stage: str, train_config: TrainConfig | None = None,
                 compile_options: dict[str, Any] | None = None, train: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        # Lightning's load_from_checkpoint calls this with the saved hyperparameters: the model's
        # config as a dict and the TrainConfig as ``train``; the checkpoint's weights follow.
        if isinstance(model, Mapping):
            model = CausalVQVAE(ModelConfig.from_dict(model, where="the checkpoint's hyper_parameters, model"))
        if train_config is None and train is not None:
            train_config = TrainConfig.from_dict(dict(train), where="the checkpoint's hyper_parameters, train")
        # Training mode whatever the model came in (from_pretrained returns it in eval mode, and
        # Lightning keeps a module's modes): stages that freeze parts put those back in
        # on_train_epoch_start. An eval-mode transition would train on thresholded, unsampled masks
        # and skip dual ascent.
        self.model = model.train()
        functions = {name: getattr(model, name) for name in STEP_FUNCTIONS}
        if compile_options is not None:
            compile_ready()  # the methods that must stay eager inside the compiled losses
            functions = {name: torch.compile(fn, **compile_options) for name, fn in functions.items()}
        self._step_functions = functions
        self._compiled = compile_options is not None
        self.stage = check_stage(stage)
        self.train_config = train_config or TrainConfig()
        self.save_hyperparameters(
            {"stage": stage, "model": model.config.to_dict(), "train": self.train_config.to_dict()}
        )
        # Exactly the parameters the stage's loss uses require a gradient, whatever an earlier stage
        # left: DDP refuses a parameter that requires one and gets none (the vqvae stage's loss
        # never reaches the transition or the head).
        model.requires_grad_(self.stage in ("causal", "joint"))
        if self.stage == "head":
            model.retrieval_head.requires_grad_(True)
        elif self.stage == "decoder":
            for part in self._decoder_parts():
                part.requires_grad_(True)
        else:
            for part in self._autoencoder_parts():
                part.requires_grad_(self.stage != "causal")
        self._pending_multiplier_update = None
        self._generator: torch.Generator | None = None

    # ------------------------------------------------------------------ helpers
    def _step_generator(self) -> torch.Generator:
        """The generator of this optimiser step on this rank, seeded by (seed, rank, step): DDP
        ranks draw different graph masks, and a resumed run draws what an unbroken one would."""
        if self._generator is None or self._generator.device != self.device:
            self._generator = torch.Generator(device=self.device)
        seed = (self.model.config.seed * 1_000_003 + self.global_rank) * 10_000_019 + self.global_step
        self._generator.manual_seed(seed % (2**63))
        return self._generator

    def _autoencoder_parts(self) -> list[torch.nn.Module]:
        return [getattr(self.model, n) for n in AUTOENCODER_PARTS if getattr(self.model, n, None) is not None]

    def _decoder_parts(self) -> list[torch.nn.Module]:
        return [part for part in (self.model.decoder, self.model.token_decoder) if part is not None]

    def _progress(self) -> float:
        total = self.train_config.steps(self.stage)
        return min(1.0, self.global_step / max(1, total))

    def on_train_epoch_start(self) -> None:
        # Frozen parts stay in eval mode, so no EMA / restart step touches the codebook.
        if self.stage == "causal":
            for part in self._autoencoder_parts():
                part.eval()
        elif self.stage in ("head", "decoder"):
            self.model.eval()
            for part in [self.model.retrieval_head] if self.stage == "head" else self._decoder_parts():
                part.train()
        self.model.quantizer.reset_usage()

    def _logs_this_step(self) -> bool:
        """Whether this training step logs its metrics (:func:`logs_training_step`)."""
        trainer = self._trainer
        if trainer is None:
            return True
        return logs_training_step(self.global_step + 1, trainer.log_every_n_steps, self.train_config.val_every,
                                  trainer.max_steps)

    # ------------------------------------------------------------------ training
    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        cfg = self.train_config
        logs = self._logs_this_step()
        if self._compiled:
            # A new iteration for CUDA graphs (compile mode "reduce-overhead"): the outputs of the
            # last step's graphs may be overwritten from here on. A no-op in the other modes.
            torch.compiler.cudagraph_mark_step_begin()
        if self.stage == "vqvae":
            x = batch["image"] if "image_next" not in batch else torch.cat([batch["image"], batch["image_next"]])
            ae = self._step_functions["autoencoder_loss"](x, generator=self._step_generator())
            if not logs:
                return ae.loss
            self.log_dict({
                "train/loss": ae.loss, "train/reconstruction": ae.reconstruction_loss,
                "train/commitment": ae.commitment_loss, "train/perplexity": ae.perplexity,
                "train/codes_used": ae.codes_used,
            }, prog_bar=False)
            # From the MSE of the [0, 1] reconstruction: reconstruction_loss is a BCE in "bce" mode.
            mse = (ae.output.reconstruction.detach() - x.float()).pow(2).mean()
            # Nothing from a training step goes on the progress bar: Lightning reads progress-bar
            # values back to the host after every step, a sync on a GPU (validation metrics go there).
            self.log("train/psnr", psnr(mse))
            return ae.loss

        if self.stage == "decoder":
            dl = self._step_functions["decoder_loss"](batch["image"], batch["image_next"], batch["action"],
                                                      edit_weight=cfg.decoder_edit_weight)
            if logs:
                self.log_dict({"train/loss": dl.loss, "train/reconstruction": dl.reconstruction_loss,
                               "train/edit_loss": dl.edit_loss, "train/psnr": psnr(dl.reconstruction_mse)})
                if cfg.decoder_edit_weight > 0:
                    self.log("train/edit_psnr", psnr(dl.edit_mse))
            return dl.loss

        action = batch["action"]
        if "codes" in batch:  # a code pool (causal_vqvae.training.code_pool), encoded by the frozen autoencoder
            if self.stage not in FROZEN_AUTOENCODER_STAGES:
                raise ValueError(f"the {self.stage} stage trains the autoencoder: it needs image pairs, "
                                 "not a code pool (code_pool is for the causal and head stages)")
            codes, target_codes = batch["codes"], batch["codes_next"]
        elif self.stage in FROZEN_AUTOENCODER_STAGES:
            with torch.no_grad():
                codes = self._step_functions["encode_codes"](batch["image"])
                target_codes = self._step_functions["encode_codes"](batch["image_next"])
        if self.stage == "head":
            rl = self._step_functions["retrieval_loss"](codes, target_codes, action)
            if logs:
                self.log_dict({"train/loss": rl.loss, "train/retrieval_acc": rl.accuracy})
            return rl.loss
        generator = self._step_generator()
        loss = action.new_zeros((), dtype=torch.float32)
        if self.stage == "joint":
            ae = self._step_functions["autoencoder_loss"](torch.cat([batch["image"], batch["image_next"]]),
                                                          generator=generator)
            codes, target_codes = ae.output.quantizer.codes.detach().chunk(2)
            loss = loss + cfg.reconstruction_weight * ae.loss
            if logs:
                self.log("train/reconstruction", ae.reconstruction_loss)
        tl = self._step_functions["transition_loss"](codes, action, target_codes, progress=self._progress(),
                                                     generator=generator)
        rl = self._step_functions["retrieval_loss"](codes, target_codes, action)
        loss = loss + cfg.transition_weight * tl.loss + cfg.retrieval_weight * rl.loss
        self._pending_multiplier_update = tl
        if not logs:
            return loss
        self.log_dict({
            "train/loss": loss, "train/transition_nll": tl.nll, "train/sparsity": tl.sparsity,
            "train/node_accuracy": tl.node_accuracy, "train/retrieval_loss": rl.loss,
            "train/intervened_nodes": tl.expected_targets.mean(), "train/parents": tl.expected_parents.mean(),
        })
        self.log("train/retrieval_acc", rl.accuracy)
        if tl.edit_mse is not None:
            self.log("train/edit_mse", tl.edit_mse)
        return loss

    def optimizer_step(self, *args, **kwargs) -> None:
        super().optimizer_step(*args, **kwargs)
        # Dual ascent after the optimiser step (the multipliers were used by this step's backward),
        # inside the step so that a checkpoint written at the end of the batch includes it.
        if self._pending_multiplier_update is not None:
            self.model.update_multipliers(self._pooled_over_ranks(self._pending_multiplier_update))
            self._pending_multiplier_update = None

    def _pooled_over_ranks(self, loss: TransitionLoss) -> TransitionLoss:
        """``loss`` with its expected targets per action those of all DDP ranks' batches pooled:
        the per-action sums and example counts are summed over the ranks (one small all-reduce, no
        host sync), so each example counts once whatever each rank's mix of actions, and every rank
        takes the same step: the multipliers stay equal on all ranks. The expected parents depend on
        the graph's parameters alone, equal on all ranks already."""
        trainer = self._trainer
        if trainer is None or trainer.world_size <= 1:
            return loss
        statistics = trainer.strategy.reduce(loss.target_statistics.detach().clone(), reduce_op="sum")
        expected = self.model.graph.pooled_expected_targets(statistics)
        return replace(loss, expected_targets=expected, target_statistics=statistics)

    # ------------------------------------------------------------------ validation
    def _evaluate(self, batch: dict[str, torch.Tensor], prefix: str) -> None:
        x, x_next, action = batch["image"], batch["image_next"], batch["action"]
        out = self.model(x)
        mse = (out.reconstruction - x.float()).pow(2).flatten(1).mean(1)
        metrics = {f"{prefix}/mse": mse.mean(), f"{prefix}/psnr": psnr(mse).mean(),
                   f"{prefix}/perplexity": out.quantizer.perplexity}
        if self.stage != "vqvae":
            codes = out.quantizer.codes
            target_codes = self.model.encode_codes(x_next)
            head = self.model.retrieve_codes(codes, target_codes, "head").action
            metrics.update({
                f"{prefix}/retrieval_head_acc": (head == action).float().mean(),
                # Action ids are factor-major (two per factor), so id // 2 is the factor.
                f"{prefix}/retrieval_head_factor_acc": (head // 2 == action // 2).float().mean(),
            })
        if self.stage in ("causal", "joint", "decoder"):  # the head stage leaves the rest as it was
            t = self.model.transition(codes, action, sample=False)
            edit_mse = (self.model.decode_codes(t.predicted_codes) - x_next.float()).pow(2).flatten(1).mean(1)
            correct = (t.predicted_codes == target_codes).float()
            by_transition = self.model.retrieve_codes(codes, target_codes, "transition").action
            metrics.update({
                f"{prefix}/edit_psnr": psnr(edit_mse).mean(),
                f"{prefix}/code_accuracy": correct.mean(),
                f"{prefix}/code_exact": correct.min(-1).values.mean(),
                f"{prefix}/retrieval_transition_acc": (by_transition == action).float().mean(),
                f"{prefix}/retrieval_transition_factor_acc": (by_transition // 2 == action // 2).float().mean(),
                f"{prefix}/intervened_nodes": t.intervened.float().sum(-1).mean(),
                f"{prefix}/changed_nodes": (codes != target_codes).float().sum(-1).mean(),
            })
        on_bar = {k: v for k, v in metrics.items() if k.split("/")[-1] in PROGRESS_BAR_METRICS}
        self.log_dict(on_bar, sync_dist=True, prog_bar=True)
        self.log_dict({k: v for k, v in metrics.items() if k not in on_bar}, sync_dist=True)

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def on_validation_epoch_end(self) -> None:
        self.log_dict({
            "val/graph_edges": self.model.graph.hard_adjacency().float().sum(),
            "val/codes_in_use": self._codes_in_use(),
        }, sync_dist=True)

    def _codes_in_use(self) -> torch.Tensor:
        """() distinct codes used since the epoch began, on any DDP rank (not the mean of the ranks'
        counts), averaged over the codebooks."""
        usage = self.model.quantizer.usage_counts
        trainer = self._trainer
        if trainer is not None and trainer.world_size > 1:
            usage = trainer.strategy.reduce(usage.clone(), reduce_op="sum")
        return (usage > 0).sum(-1).float().mean()

    # ------------------------------------------------------------------ checkpoints
    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Refuse a checkpoint of another architecture, dataset or stage before any weight is loaded."""
        saved = checkpoint.get("hyper_parameters", {})
        saved_model, saved_stage = saved.get("model"), saved.get("stage")
        if saved_model is None or saved_stage is None:
            raise CheckpointMismatchError(
                "the checkpoint was not written by causal_vqvae training (no model config or stage in its "
                "hyper_parameters); resume from a run directory of train.py")
        mine = self.model.config.to_dict()
        # A setting added since the checkpoint was written had the value that reproduces such a run.
        saved_model = {**{k: v for k, v in ADDED_SETTINGS["model"].items() if k in mine}, **saved_model}
        differ = {k: (saved_model.get(k), mine.get(k)) for k in sorted(set(mine) | set(saved_model))
                  if _comparable(saved_model.get(k)) != _comparable(mine.get(k))}
        if differ:
            listed = "; ".join(f"{k}: {a!r} in the checkpoint, {b!r} in this run" for k, (a, b) in differ.items())
            raise CheckpointMismatchError(
                f"the checkpoint holds a {_describe(saved_model)} model, this run builds a {_describe(mine)} one "
                f"({listed}); resume with the settings the run was started with, or start a new --out")
        if saved_stage != self.stage:
            raise CheckpointMismatchError(
                f"the checkpoint is of stage {saved_stage!r}, this is stage {self.stage!r}; resume each stage "
                "from its own OUT/<stage>/checkpoints/last.ckpt")
        drop_untrained_from_vqvae_optimizer_state(checkpoint, self.model, self.train_config)
        regroup_optimizer_state(checkpoint, self.model, self.train_config, self.stage)
        mismatch = optimizer_group_mismatch(checkpoint, self.model, self.train_config, self.stage)
        if mismatch:
            raise CheckpointMismatchError(mismatch)

    # ------------------------------------------------------------------ optimisation
    def _fused_adamw(self, param: torch.Tensor) -> bool | None:
        """True (one fused AdamW kernel per step) on CUDA, unless a gradient scaler scales the loss
        (``16-mixed``): the fused step unscales inside ``step()``, after the gradients must have been
        clipped. None (torch's default) elsewhere. The module is on its device by now."""
        if not param.is_cuda:
            return None
        plugin = getattr(self._trainer, "precision_plugin", None)
        return None if getattr(plugin, "scaler", None) is not None else True

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """Gradient-norm clipping to ``TrainConfig.grad_clip``. Done here, not by the Trainer's
        ``gradient_clip_val``: Lightning refuses that with an optimizer that unscales internally (the
        fused AdamW), even under bf16-mixed, which has no scaler. Under ``16-mixed`` the gradients are
        unscaled by now (Lightning unscales before this hook; the optimizer is not fused there)."""
        if self.train_config.grad_clip:  # parameters without a gradient are skipped by clip_grad_norm_
            params = [p for group in optimizer.param_groups for p in group["params"]]
            torch.nn.utils.clip_grad_norm_(params, self.train_config.grad_clip)

    def configure_optimizers(self):
        cfg = self.train_config
        groups = parameter_groups(self.model, cfg.lr(self.stage), cfg.graph_lr_scale, cfg.weight_decay,
                                  cfg.head_lr_in(self.stage))
        if not groups:
            raise RuntimeError(f"stage {self.stage!r} has nothing to train")
        optimizer = torch.optim.AdamW(groups, fused=self._fused_adamw(groups[0]["params"][0]))
        total = cfg.steps(self.stage)
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: _warmup_cosine(step, total, cfg.warmup_steps, cfg.min_lr_ratio)
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


def logs_training_step(step: int, log_every: int, val_every: int, max_steps: int) -> bool:
    """Whether training step ``step`` (counted from 1) logs its metrics: on the steps whose metrics
    the logger writes (every ``log_every``), before each validation (its ``curves.json`` row reads
    them) and at the stage's last step (``max_steps``; -1 or 0 for none). ``self.log`` costs Lightning
    about a millisecond of bookkeeping a call and a causal step logs nine values: on the CPU, a tenth
    of a ``cpu-small`` causal step went to values no logger writes."""
    return step % max(1, log_every) == 0 or step % max(1, val_every) == 0 or 0 < max_steps <= step


def _comparable(value: Any) -> Any:
    """Config values as compared across a checkpoint round trip (tuples come back as lists)."""
    return list(value) if isinstance(value, tuple) else value


def _describe(model_config: dict[str, Any]) -> str:
    return f"{model_config.get('dataset') or 'dataset-less'} / {model_config.get('latent_layout')}-layout"


class CheckpointMismatchError(ValueError):
    """A resume checkpoint of another architecture, dataset or stage than the run's."""


