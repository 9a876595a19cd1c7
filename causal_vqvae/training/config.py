"""What a training run is configured by, beside the model's own :class:`~causal_vqvae.ModelConfig`:
the stages, and :class:`TrainConfig`, the optimisation and loss weights of every stage."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from ..validation import build_settings

__all__ = ["COMPILE_MODES", "STAGES", "FROZEN_AUTOENCODER_STAGES", "KEEP_CHOICES", "STAGE_MONITOR", "BEST_FROM",
           "TrainConfig", "check_stage", "stage_monitor"]

# torch.compile's modes for the training step (train.py --compile-mode).
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
STAGES = ("vqvae", "causal", "joint", "head", "decoder")
FROZEN_AUTOENCODER_STAGES = ("causal", "head")  # stages that train on codes of a frozen autoencoder
KEEP_CHOICES = ("last", "best")
# The validation metric (higher is better) by which TrainConfig.keep = "best" picks a stage's weights.
STAGE_MONITOR = {
    "vqvae": "val/psnr",
    "causal": "val/retrieval_transition_acc",
    "joint": "val/retrieval_transition_acc",
    "head": "val/retrieval_head_acc",
    "decoder": "val/edit_psnr",  # val/psnr where train.decoder_edit_weight is 0: stage_monitor
}
# keep = "best" picks among the validations from this fraction of a stage's steps on.
BEST_FROM = 0.5


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation and loss weights of every stage (``steps`` of 0 skip a stage).

    vqvae_steps, causal_steps, joint_steps, head_steps, decoder_steps: optimiser steps per stage.
        ``head`` (0 by default) retrains the retrieval head alone, everything else frozen: e.g. a new
        head on a trained model (``train.py --stage head --init DIR``). ``decoder`` (0 by default)
        fine-tunes the decoder alone on pairs, everything else frozen, so codes, graph, edits' codes
        and retrieval stay exactly as they were (:meth:`CausalVQVAE.decoder_loss`).
    vqvae_lr, causal_lr, joint_lr, head_lr, decoder_lr: peak AdamW learning rates.
    decoder_edit_weight: in the decoder stage, the weight of the decoded edits against the pairs'
        second images beside the reconstruction of both images (0: reconstruction alone).
    causal_head_lr: the retrieval head's peak rate in the causal stage; 0 (default): the stage's
        rate, ``causal_lr``. The ``cpu-small`` preset trains its transition at 3e-3, a rate at which
        the convolutional head's hidden units can all die in the first steps (every pre-activation
        of its MLP negative: one seed of three retrieved 11% of test pairs, chance being 10%); at
        1e-3 the same seed learns (``experiments/demo_edits/``).
    graph_lr_scale: the graph's edge logits (node -> node adjacency and action -> node targets) train
        at this multiple of the stage's learning rate, with no weight decay. Adam moves a parameter
        by at most about its learning rate per step, and the budgets ask every logit to travel
        several units (from their start, +2 in the small presets and +5 by default, to about -3 for
        a dropped edge). At the stage's rate the logits could only fall in lockstep, pushed by the
        growing multipliers, and runs ended with no edge decided (every probability under 1/2;
        ``experiments/graph_lr/``).
    weight_decay: AdamW weight decay (not on the graph's edge logits: it would pull them to 1/2).
    warmup_steps: linear warm-up at the start of each stage, then cosine decay to
        ``min_lr_ratio`` x the peak at the stage's last step.
    grad_clip: gradient-norm clipping (0 = off).
    transition_weight: weight of the transition loss (mixture NLL + sparsity).
    retrieval_weight: weight of the retrieval head's cross-entropy.
    reconstruction_weight: weight of the autoencoder loss in the joint stage.
    val_every: optimiser steps between validations (also the length of a training "epoch").
    code_pool: the causal and head stages train on the codes of this many training pairs, encoded
        once by the frozen autoencoder when the stage starts (:mod:`causal_vqvae.training.code_pool`); 0
        renders (twins) or reads, and encodes, fresh pairs at every step. The vqvae and joint
        stages, which train the autoencoder, and the decoder stage, whose loss is on pixels, always
        read images.
    keep: the weights a stage saves and hands to the next. "last": those of its last step. "best":
        those of its validation with the highest :data:`STAGE_MONITOR` metric (validation PSNR for
        the vqvae stage, retrieval by transition for causal and joint, the head's retrieval for
        head, the decoded edits' PSNR for decoder, or the reconstructions' where
        ``decoder_edit_weight`` is 0: :func:`stage_monitor`), among the validations of the stage's second
        half (:data:`BEST_FROM`: the sparsity budgets reach their end values at half-way, and a
        denser graph of the first half could score higher). Ties go to the later validation.
        :class:`BestWeights` keeps them on disk.
    """

    vqvae_steps: int = 3000
    causal_steps: int = 3000
    joint_steps: int = 0
    head_steps: int = 0
    decoder_steps: int = 0
    vqvae_lr: float = 1e-3
    causal_lr: float = 5e-4
    joint_lr: float = 1e-4
    head_lr: float = 1e-3
    decoder_lr: float = 1e-3
    decoder_edit_weight: float = 1.0
    causal_head_lr: float = 0.0
    graph_lr_scale: float = 20.0
    weight_decay: float = 0.0
    warmup_steps: int = 100
    min_lr_ratio: float = 0.1
    grad_clip: float = 1.0
    transition_weight: float = 1.0
    retrieval_weight: float = 1.0
    reconstruction_weight: float = 1.0
    val_every: int = 500
    code_pool: int = 0
    keep: str = "last"

    def __post_init__(self) -> None:
        if self.keep not in KEEP_CHOICES:
            raise ValueError(f"TrainConfig.keep must be one of {KEEP_CHOICES}, got {self.keep!r}")
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, str):
                continue
            if value < 0:
                raise ValueError(f"TrainConfig.{f.name} must be >= 0, got {value}")
        if self.val_every < 1:
            raise ValueError(f"TrainConfig.val_every must be >= 1, got {self.val_every}")

    def steps(self, stage: str) -> int:
        return getattr(self, f"{check_stage(stage)}_steps")

    def lr(self, stage: str) -> float:
        return getattr(self, f"{check_stage(stage)}_lr")

    def head_lr_in(self, stage: str) -> float:
        """The retrieval head's own peak rate in ``stage`` (``causal_head_lr`` in the causal stage), or
        0 where the head trains at the stage's rate."""
        return self.causal_head_lr if check_stage(stage) == "causal" else 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "TrainConfig") -> TrainConfig:
        """The settings ``data`` checked (:func:`~causal_vqvae.validation.build_settings`: unknown
        keys, types and ranges, named with ``where``); missing keys take their defaults."""
        return build_settings(cls, data, where)


def stage_monitor(stage: str, config: TrainConfig) -> str:
    """The validation metric by which ``keep = "best"`` picks ``stage``'s weights (:data:`STAGE_MONITOR`):
    a decoder stage that learns reconstructions alone (``decoder_edit_weight`` 0) by their PSNR."""
    if check_stage(stage) == "decoder" and config.decoder_edit_weight == 0:
        return "val/psnr"
    return STAGE_MONITOR[stage]


def check_stage(stage: str) -> str:
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; stages are {STAGES}")
    return stage
