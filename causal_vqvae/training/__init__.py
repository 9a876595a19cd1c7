"""Training with PyTorch Lightning: everything a run needs that using a trained model does not.

- :mod:`.config`: the stages and :class:`TrainConfig`; :mod:`.presets`: ``--preset`` and ``--config``.
- :mod:`.module`: :class:`CausalVQVAEModule`, the LightningModule that trains one stage.
- :mod:`.code_pool`: a DataModule of pairs encoded once, for the stages whose autoencoder is frozen.
- :mod:`.callbacks`, :mod:`.monitoring`: stop on a non-finite loss, keep the best weights, pictures and
  curves after each validation.
- :mod:`.devices`: the Trainer's devices and the DDP strategy; :mod:`.rundir`: the run folder.
- :mod:`.run`: the stages in order (the body of ``python train.py``).

The names below are imported on first use, so ``import causal_vqvae.training.config`` stays light.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "STAGES": "config", "TrainConfig": "config", "CausalVQVAEModule": "module", "parameter_groups": "module",
    "CodePoolDataModule": "code_pool", "BestWeights": "callbacks", "NonFiniteGuard": "callbacks",
    "MetricHistory": "monitoring", "ValidationPictures": "monitoring", "ddp_strategy": "devices",
    "PRESETS": "presets", "run": "run",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
