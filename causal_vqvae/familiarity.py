"""Is an image like the ones the model was trained on? Judged by how well the model reconstructs it.

A model reconstructs images like its training data closely and others badly: on the released 3D
Shapes model, held-out twin renders reconstruct with a mean squared error of at most 1.4e-3 (99th
percentile 1.1e-3), the real 3D Shapes frames with about 3e-3, and faces, gray portraits or noise
with 3.5e-2 to 0.19 (``scripts/calibrate_familiarity.py``, ``benchmarks/results/familiarity/``). :func:`calibrate` records the error's distribution on
held-out images of the training data in the model's ``metadata.json`` (``train`` does it for every
stage it saves); :func:`check_familiar` warns (:class:`UnfamiliarImageWarning`) when an input's error
is above ``FACTOR`` times the recorded 99th percentile: an edit of such an image is not to be
trusted. A model saved without the record is not checked.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import torch

__all__ = ["FACTOR", "METADATA_KEY", "UnfamiliarImageWarning", "calibrate", "check_familiar",
           "reconstruction_errors"]

FACTOR = 10.0  # above FACTOR x the 99th percentile of held-out errors, an image is unfamiliar
METADATA_KEY = "reconstruction_error"  # where metadata.json keeps the calibration


class UnfamiliarImageWarning(UserWarning):
    """An input image is far from what the model was trained on (its reconstruction error is high)."""


@torch.no_grad()
def reconstruction_errors(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """(B,) mean squared error of each image of ``x`` (B, C, S, S) in [0, 1] against its
    reconstruction through the model's codes."""
    reconstruction = model.decode_codes(model.encode_codes(x)).float()
    return (reconstruction - x.float()).pow(2).flatten(1).mean(1)


def calibrate(model: torch.nn.Module, images: torch.Tensor, data: str, batch: int = 256) -> dict[str, Any]:
    """The record :func:`check_familiar` reads: quantiles of the reconstruction error of ``images``
    (held-out images of the training data, named by ``data``) and the threshold above which an image
    is unfamiliar."""
    errors = torch.cat([reconstruction_errors(model, images[i:i + batch]) for i in range(0, len(images), batch)])
    p50, p99 = (float(q) for q in torch.quantile(errors.double(), torch.tensor([0.5, 0.99], dtype=torch.float64)))
    return {"data": data, "images": len(errors), "p50": p50, "p99": p99, "max": float(errors.max()),
            "factor": FACTOR, "threshold": FACTOR * p99}


def threshold(model: torch.nn.Module) -> float | None:
    """The error above which ``model`` calls an image unfamiliar, or None when it has no record."""
    metadata = getattr(model, "pretrained_metadata", None)
    record = metadata.get(METADATA_KEY) if isinstance(metadata, Mapping) else None
    value = record.get("threshold") if isinstance(record, Mapping) else None
    return float(value) if isinstance(value, (int, float)) and value > 0 else None


def check_familiar(model: torch.nn.Module, x: torch.Tensor, stacklevel: int = 2) -> None:
    """Warn when an image of ``x`` is unfamiliar to ``model`` (see the module's docstring)."""
    limit = threshold(model)
    if limit is None:
        return
    errors = reconstruction_errors(model, x)
    far = [(i, float(e)) for i, e in enumerate(errors) if e > limit]
    if not far:
        return
    which = "the image" if len(errors) == 1 else f"{len(far)} of {len(errors)} images (e.g. image {far[0][0]})"
    data = model.pretrained_metadata[METADATA_KEY].get("data", "its training data")
    warnings.warn(
        f"{which} looks unlike what this model was trained on ({data}): reconstruction error "
        f"{far[0][1]:.2g}, above {limit:.2g} ({FACTOR:g}x the 99th percentile of held-out images); "
        "its edits are unlikely to be faithful", UnfamiliarImageWarning, stacklevel=stacklevel + 1)
