"""3D Shapes: the procedural twin, which renders any state.

The twin is the scene of :mod:`.scene` (a room, an object on the floor, a camera orbiting it).
Rendering is split so that a batch costs one gather and one small matrix product per image:

* the geometry depends only on (scale, shape, orientation), 8 * 4 * 15 = 480 combinations. They are
  ray-cast once (2x2 or 3x3 supersampling, soft floor shadow) into a table of per-pixel *surface weights*
  ``(480, 4, 64, 64)`` for the surfaces floor, wall, object and sky (:mod:`.raycast`).
* the hues only colour the surfaces, and all shading is linear in the colour, so an image is
  ``clamp(sum_s weight[combo, s] * colour[s], 0, 1)``: a gather of table rows and a ``(3, 4) @ (4, 4096)``
  product per image, on the device of the class tensor. Weights above 1 (the brightest floor) model
  the over-exposure of the real renders, which the final clamp saturates as a camera would.

Every state renders deterministically: no noise, no hidden factors.
"""

from __future__ import annotations

import functools

import torch

from ..sources import TwinSource
from .raycast import shapes3d_surface_weights
from .scene import DEFAULT_TWIN_VERSION, Shapes3DScene, twin_scene
from .space import (
    _FLOOR_HUE,
    _HUES,
    _NUM_ORIENTATIONS,
    _NUM_SHAPES,
    _OBJECT_HUE,
    _ORIENTATION,
    _SCALE,
    _SHAPE,
    _WALL_HUE,
    IMAGE_SIZE,
    SHAPES3D,
    SKY_RGB,
)

__all__ = ["hue_to_rgb", "render_shapes3d", "shapes3d_surface_colours", "shapes3d_twin"]


def hue_to_rgb(hue: torch.Tensor) -> torch.Tensor:
    """RGB in [0, 1] of HSV(hue, 1, 1), ``(...) -> (..., 3)``."""
    kw = {"dtype": hue.dtype, "device": hue.device}
    h6 = hue[..., None] * 6 - torch.tensor([3.0, 2.0, 4.0], **kw)
    return (torch.tensor([1.0, -1.0, -1.0], **kw) * h6.abs() + torch.tensor([-1.0, 2.0, 2.0], **kw)).clamp(0, 1)


@functools.lru_cache(maxsize=8)
def _colour_tables(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The hue palette ``(10, 3)`` and the sky colour ``(3,)`` on ``device``, built once per device
    (not copied from the host at every batch)."""
    palette = hue_to_rgb(torch.tensor(_HUES, dtype=torch.float32)).to(device)
    sky = (torch.tensor(SKY_RGB, dtype=torch.float32) / 255).to(device)
    return palette, sky


def shapes3d_surface_colours(classes: torch.Tensor, check: bool = True) -> torch.Tensor:
    """Colours ``(B, 4, 3)`` in [0, 1] of the floor, wall, object and sky of states ``(B, 6)``
    (``check``: as in :func:`render_shapes3d`)."""
    classes = SHAPES3D.check(classes, values=check)
    palette, sky = _colour_tables(classes.device)
    return torch.stack([palette[classes[:, _FLOOR_HUE]], palette[classes[:, _WALL_HUE]],
                        palette[classes[:, _OBJECT_HUE]], sky.expand(classes.shape[0], 3)], 1)


def render_shapes3d(classes: torch.Tensor, scene: Shapes3DScene | None = None, *, version: str | int | None = None,
                    check: bool = True) -> torch.Tensor:
    """Render states ``(B, 6)`` long -> ``(B, 3, 64, 64)`` float32 in [0, 1], on the classes' device.
    ``version`` names the renderer (``TWIN_VERSIONS``; default ``"1"``, the one the released models
    were trained on); ``scene`` passes a scene of one's own instead. ``check=False`` skips the range
    check of classes already checked (on a GPU the check is a host sync); the rendering itself makes
    none."""
    if scene is not None and version is not None:
        raise ValueError("render_shapes3d takes a scene or a version, not both")
    if scene is None:
        scene = twin_scene(DEFAULT_TWIN_VERSION if version is None else version)
    classes = SHAPES3D.check(classes, values=check)
    if classes.dim() != 2:
        raise ValueError(f"render_shapes3d takes a (B, 6) batch of states, got shape {tuple(classes.shape)}")
    table = shapes3d_surface_weights(classes.device, scene).flatten(2)  # (480, 4, HW)
    combo = (classes[:, _SCALE] * _NUM_SHAPES + classes[:, _SHAPE]) * _NUM_ORIENTATIONS + classes[:, _ORIENTATION]
    weights = table.index_select(0, combo)  # (B, 4, HW)
    colours = shapes3d_surface_colours(classes, check=False)  # (B, 4, 3)
    images = torch.bmm(colours.transpose(1, 2), weights)  # (B, 3, HW)
    return images.clamp_(0, 1).view(-1, 3, IMAGE_SIZE, IMAGE_SIZE)


def shapes3d_twin(version: str | int = DEFAULT_TWIN_VERSION) -> TwinSource:
    """The 3D Shapes procedural twin of renderer ``version`` (renders on the device of the class tensor).

    Version ``"1"`` (the default) is the twin the released models were trained on; ``"2"`` to ``"4"``
    are fitted ever closer to DeepMind's real frames (``docs/twin_fidelity.md``) and say so in their
    description."""
    version = str(version)
    twin_scene(version)  # an unknown version fails here, not at the first batch
    if version == DEFAULT_TWIN_VERSION:
        return TwinSource(space=SHAPES3D, channels=3, render=render_shapes3d, description="3D Shapes procedural twin")
    return TwinSource(space=SHAPES3D, channels=3, render=functools.partial(render_shapes3d, version=version),
                      description=f"3D Shapes procedural twin (renderer version {version})")
