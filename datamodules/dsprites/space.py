"""dSprites: its factor space :data:`DSPRITES` and the constants shared by the twin and the reader."""

from __future__ import annotations

import math

import numpy as np

from ..factors import Factor, FactorSpace

__all__ = ["DSPRITES", "IMAGE_SIZE", "SHAPE_NAMES"]

IMAGE_SIZE = 64
SHAPE_NAMES = ("square", "ellipse", "heart")


def _linspace(start: float, stop: float, num: int) -> tuple[float, ...]:
    return tuple(float(x) for x in np.linspace(start, stop, num))


DSPRITES = FactorSpace(
    "dsprites",
    (
        Factor("color", 1, (1.0,)),
        Factor("shape", 3, (1.0, 2.0, 3.0)),
        Factor("scale", 6, _linspace(0.5, 1.0, 6)),
        # linspace includes 2*pi: class 39 is the same image as class 0, so the cycle has 39 values.
        Factor("orientation", 40, _linspace(0.0, 2 * math.pi, 40), cyclic=True, period=39),
        Factor("posX", 32, _linspace(0.0, 1.0, 32)),
        Factor("posY", 32, _linspace(0.0, 1.0, 32)),
    ),
)

_SHAPE, _SCALE, _ORIENTATION, _POSX, _POSY = (
    DSPRITES.factor_index(name) for name in ("shape", "scale", "orientation", "posX", "posY")
)
