"""Data for causal_vqvae: factor spaces, real-file readers, procedural twins, pairs, DataModules.

Nothing here imports the model. Dataset modules (``dsprites``, ``shapes3d``, ``celeba``) are
imported on first use, so ``import datamodules`` stays light.
"""

from .factors import Action, ActionSpace, Factor, FactorSpace
from .pairs import StateSamples, TransitionPairs, factor_weights, split_of

__all__ = [
    "Action",
    "ActionSpace",
    "Factor",
    "FactorSpace",
    "StateSamples",
    "TransitionPairs",
    "build_datamodule",
    "factor_weights",
    "split_of",
]


def build_datamodule(dataset: str, **overrides):
    """The LightningDataModule for ``dataset`` (see :mod:`datamodules.datamodule`)."""
    from .datamodule import build_datamodule as build

    return build(dataset, **overrides)
