"""3D Shapes: its factor space :data:`SHAPES3D` and the constants of its factors and surfaces."""

from __future__ import annotations

import numpy as np

from ..factors import Factor, FactorSpace

__all__ = ["IMAGE_SIZE", "SHAPES3D", "SHAPE_NAMES", "SKY_RGB", "SURFACE_NAMES"]

IMAGE_SIZE = 64
SHAPE_NAMES = ("cube", "cylinder", "sphere", "capsule")
SURFACE_NAMES = ("floor", "wall", "object", "sky")
SKY_RGB = (153, 226, 249)

# Hues are 0.0, 0.1, ..., 0.9 (not linspace(0, 1, 10), which the dataset's README wrongly states).
_HUES = tuple(round(0.1 * i, 1) for i in range(10))

SHAPES3D = FactorSpace(
    "shapes3d",
    (
        Factor("floor_hue", 10, _HUES, cyclic=True),
        Factor("wall_hue", 10, _HUES, cyclic=True),
        Factor("object_hue", 10, _HUES, cyclic=True),
        Factor("scale", 8, tuple(float(x) for x in np.linspace(0.75, 1.25, 8))),
        Factor("shape", 4, (0.0, 1.0, 2.0, 3.0)),
        # Camera azimuth in degrees; -30 and +30 are different views, so not cyclic.
        Factor("orientation", 15, tuple(float(x) for x in np.linspace(-30.0, 30.0, 15))),
    ),
)

_FLOOR_HUE, _WALL_HUE, _OBJECT_HUE, _SCALE, _SHAPE, _ORIENTATION = range(6)
_FLOOR, _WALL, _OBJECT, _SKY = range(4)
_NUM_SCALES, _NUM_SHAPES, _NUM_ORIENTATIONS = SHAPES3D.sizes[_SCALE:]
_NUM_COMBOS = _NUM_SCALES * _NUM_SHAPES * _NUM_ORIENTATIONS  # geometry combinations (480)
