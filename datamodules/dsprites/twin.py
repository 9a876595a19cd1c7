"""dSprites: the procedural twin, which renders any state.

The twin follows ``docs/datasets.md`` (fitted to DeepMind's published frames): a binary 64x64 image
whose pixel (row i, col j) is on iff its centre ``(j + 0.5, i + 0.5)`` lies inside a square, an ellipse
or a heart of the given scale, rotated counter-clockwise on screen by the orientation and centred at
``(16 + 32 * posX, 16 + 32 * posY)``. Rendering is vectorised over the batch and the pixels and runs on
the device of the class tensor, so a DataModule can render batches on the GPU.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from ..sources import TwinSource
from .space import (
    _ORIENTATION,
    _POSX,
    _POSY,
    _SCALE,
    _SHAPE,
    DSPRITES,
    IMAGE_SIZE,
    SHAPE_NAMES,
)

__all__ = ["dsprites_twin", "render_dsprites"]

# Shapes in local (u, v) pixel units at scale 1 (datasets.md).
_SQUARE_HALF_SIDE = 9.6
_ELLIPSE_AXES = (12.76, 7.22)
_HEART_VERTICES = 200
# The heart is tested through a table of horizontal slices (see _heart_slices_numpy); this many slices over
# its height makes the slice quantisation (~0.005 px) far finer than any pixel-centre spacing.
_HEART_ROWS = 4096


# --------------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------------
def _heart_polygon(num_vertices: int = _HEART_VERTICES) -> np.ndarray:
    """Vertices ``(num_vertices, 2)`` of the heart curve in local (u, v) units, v pointing down.

    The parameter runs over ``linspace(0, 2*pi, num_vertices)`` end point included, so the last
    vertex repeats the first: 199 distinct edges. Of the readings of "a 200-vertex polygon" this is
    the one that matches the real frames best (146 of 160 identical, against 140 without the end point).
    """
    s = np.linspace(0.0, 2 * np.pi, num_vertices)
    x = 9.6 * np.sin(s) ** 3
    y = -0.6625 * (13 * np.cos(s) - 5 * np.cos(2 * s) - 2 * np.cos(3 * s) - np.cos(4 * s)) - 1.4375
    return np.stack([x, y], axis=1)


@functools.lru_cache(maxsize=1)
def _heart_slices_numpy() -> tuple[float, float, np.ndarray]:
    """Horizontal slices of the heart polygon: ``(v0, dv, crossings (rows + 1, 4))``.

    Row ``r`` covers ``v`` in ``[v0 + r*dv, v0 + (r+1)*dv)`` and holds the sorted u coordinates where
    the horizontal line through the row's centre crosses the polygon, padded with +inf. A point is
    inside iff ``c0 <= u < c1`` or ``c2 <= u < c3`` (even-odd rule): the heart is at most two
    intervals wide, through its two lobes. The polygon test is thus exact in u and quantised only in
    v, and costs one table lookup per pixel instead of a test against 200 edges. The last row is
    empty and catches every v outside the heart.
    """
    poly = _heart_polygon()
    ys = poly[:, 1]
    margin = 0.5
    v0 = float(ys.min()) - margin
    dv = (float(ys.max()) + margin - v0) / _HEART_ROWS
    v = v0 + (np.arange(_HEART_ROWS) + 0.5) * dv  # (R,) row centres
    a, b = poly, np.roll(poly, -1, axis=0)  # edges a -> b, (E, 2) each
    # Half-open rule on y, so that a line through a vertex counts it exactly once.
    lo, hi = np.minimum(a[:, 1], b[:, 1]), np.maximum(a[:, 1], b[:, 1])
    hit = (v[:, None] >= lo) & (v[:, None] < hi)  # (R, E)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = (v[:, None] - a[:, 1]) / (b[:, 1] - a[:, 1])
    x = np.where(hit, a[:, 0] + t * (b[:, 0] - a[:, 0]), np.inf)
    x.sort(axis=1)
    counts = hit.sum(axis=1)
    if counts.max() > 4 or (counts % 2).any():
        raise AssertionError("heart polygon slices must cross it 0, 2 or 4 times")
    table = np.full((_HEART_ROWS + 1, 4), np.inf)
    table[:_HEART_ROWS] = x[:, :4]
    return v0, dv, table


@functools.lru_cache(maxsize=8)
def _render_tables(device: torch.device) -> dict[str, torch.Tensor | float]:
    """Factor value tables and the heart slices on ``device``, built once per device."""
    v0, dv, crossings = _heart_slices_numpy()

    def values(i: int) -> torch.Tensor:
        return torch.tensor(DSPRITES.factors[i].values, dtype=torch.float64, device=device)

    orientation = values(_ORIENTATION)
    return {
        "scale": values(_SCALE),
        "cos": torch.cos(orientation),
        "sin": torch.sin(orientation),
        "pos": values(_POSX),  # posX and posY share one grid
        "pixel": torch.arange(IMAGE_SIZE, dtype=torch.float64, device=device) + 0.5,
        "heart": torch.tensor(crossings, dtype=torch.float32, device=device),
        "heart_v0": v0,
        "heart_inv_dv": 1.0 / dv,
    }


def _default_chunk(device: torch.device) -> int:
    # A chunk's temporaries take ~100 bytes per pixel: ~0.4 MB per image. Small chunks keep them in
    # the CPU caches; on a GPU large chunks amortise the kernel launches.
    return 16384 if device.type == "cuda" else 256


# Half axes (u, v) of each shape's local frame, in pixels at scale 1: u and v are divided by them.
_SHAPE_AXES = {0: (_SQUARE_HALF_SIDE, _SQUARE_HALF_SIDE), 1: _ELLIPSE_AXES, 2: (1.0, 1.0)}


def _split_by_shape(device: torch.device) -> bool:
    """Render each image with its own shape only (CPU), or every shape for every image and select
    (GPU): splitting a batch by shape reads the shape ids back to the host, a sync on a GPU that
    costs more there than the extra arithmetic, while on the CPU the split is free."""
    return device.type == "cpu"


def _shape_mask(shape: int, terms: torch.Tensor, tables: dict) -> torch.Tensor:
    """Inside mask ``(n, 64, 64)`` bool of ``shape`` for the per-image column / row terms ``(n, 4, 64)``."""
    su, sv = _SHAPE_AXES[shape]
    # u = (col term 0 + row term 1) / su and v = (col term 2 + row term 3) / sv, as float32 maps
    t = torch.stack([terms[:, 0] / su, terms[:, 1] / su, terms[:, 2] / sv, terms[:, 3] / sv], 1).float()
    u, v = t[:, 0, None, :] + t[:, 1, :, None], t[:, 2, None, :] + t[:, 3, :, None]
    if shape == 0:  # square: |u|, |v| <= 9.6 (both scaled to 1)
        return torch.maximum(u.abs_(), v.abs_()) <= 1.0
    if shape == 1:  # ellipse, long axis along u
        return u.square_().add_(v.square_()) <= 1.0
    # heart: look up the slice of v, then test u against its crossings
    row = v.sub_(tables["heart_v0"]).mul_(tables["heart_inv_dv"]).floor_()
    # Rows above (-1) and below (R) the heart both land on the empty sentinel row R; the
    # remainder does it without the device sync that boolean-mask indexing would cost.
    row = row.clamp_(-1, _HEART_ROWS).long().remainder_(_HEART_ROWS + 1)
    # index_select on flat rows is several times faster on CPU than advanced indexing.
    crossings = tables["heart"].index_select(0, row.flatten()).view(*row.shape, 4)
    c0, c1, c2, c3 = crossings.unbind(-1)  # each (n, 64, 64)
    return ((c0 <= u) & (u < c1)) | ((c2 <= u) & (u < c3))


def _render_chunk(classes: torch.Tensor, out: torch.Tensor, tables: dict, split: bool) -> None:
    """Render ``classes (B, 6)`` into ``out (B, 64, 64)`` float32 (all on one device); ``split``:
    see :func:`_split_by_shape` (both give the same images)."""
    # Orientation 39 is 2*pi: fold it onto class 0 so the two render bit-identically.
    orientation = classes[:, _ORIENTATION] % DSPRITES.factors[_ORIENTATION].cycle
    inv_scale = 1.0 / tables["scale"][classes[:, _SCALE]]
    cos = tables["cos"][orientation] * inv_scale  # (B,)
    sin = tables["sin"][orientation] * inv_scale
    cx = 16.0 + 32.0 * tables["pos"][classes[:, _POSX]]
    cy = 16.0 + 32.0 * tables["pos"][classes[:, _POSY]]
    dx = tables["pixel"][None, :] - cx[:, None]  # (B, 64) per column
    dy = tables["pixel"][None, :] - cy[:, None]  # (B, 64) per row
    # u = cos*dx - sin*dy and v = sin*dx + cos*dy split into a column term plus a row term, so the
    # per-image trigonometry stays in float64 on (B, 64) and each full (B, 64, 64) map is one add.
    terms = torch.stack([cos[:, None] * dx, -sin[:, None] * dy, sin[:, None] * dx, cos[:, None] * dy], 1)

    shape = classes[:, _SHAPE]
    if not split:
        inside = _shape_mask(2, terms, tables)
        for s in (1, 0):
            inside = torch.where((shape == s)[:, None, None], _shape_mask(s, terms, tables), inside)
        out.copy_(inside)
        return
    for s in range(len(SHAPE_NAMES)):
        sel = (shape == s).nonzero().squeeze(1)
        if sel.numel():
            out.index_copy_(0, sel, _shape_mask(s, terms.index_select(0, sel), tables).to(out.dtype))


def render_dsprites(classes: torch.Tensor, *, chunk: int | None = None, check: bool = True) -> torch.Tensor:
    """Render dSprites states: ``classes (B, 6)`` long -> float32 ``(B, 1, 64, 64)`` in {0, 1}.

    Runs on the device of ``classes``, in chunks of ``chunk`` images to bound the temporaries
    (default: 256 on CPU, 16384 on CUDA). The result does not depend on ``chunk``. ``check=False``
    skips the range check of classes already checked (on a GPU the check is a host sync); the
    rendering itself makes none.
    """
    classes = DSPRITES.check(classes, values=check)
    if classes.dim() != 2:
        raise ValueError(f"render_dsprites takes classes of shape (B, 6); got {tuple(classes.shape)}")
    device = classes.device
    chunk = chunk or _default_chunk(device)
    if chunk < 1:
        raise ValueError(f"chunk must be positive, got {chunk}")
    tables = _render_tables(device)
    split = _split_by_shape(device)
    out = torch.empty(classes.shape[0], 1, IMAGE_SIZE, IMAGE_SIZE, dtype=torch.float32, device=device)
    for start in range(0, classes.shape[0], chunk):
        stop = min(start + chunk, classes.shape[0])
        _render_chunk(classes[start:stop], out[start:stop, 0], tables, split)
    return out


def dsprites_twin() -> TwinSource:
    """The procedural twin of dSprites: renders any state on the device of its classes."""
    return TwinSource(space=DSPRITES, channels=1, render=render_dsprites,
                      description="dSprites procedural twin")
