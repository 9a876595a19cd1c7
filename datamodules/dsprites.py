"""dSprites: its factor space, a procedural twin that renders any state, and a reader for the real file.

The twin follows ``docs/datasets.md`` (fitted to DeepMind's published frames): a binary 64x64 image
whose pixel (row i, col j) is on iff its centre ``(j + 0.5, i + 0.5)`` lies inside a square, an ellipse
or a heart of the given scale, rotated counter-clockwise on screen by the orientation and centred at
``(16 + 32 * posX, 16 + 32 * posY)``. Rendering is vectorised over the batch and the pixels and runs on
the device of the class tensor, so a DataModule can render batches on the GPU.

The real file (``dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz`` or its ``.hdf5`` twin) is converted
once into a memory-mapped cache; its pickled ``metadata`` entry is never loaded.
"""

from __future__ import annotations

import functools
import math
import zipfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import numpy as np
import torch

from .factors import Factor, FactorSpace
from .sources import (
    ArraySource,
    TwinSource,
    build_memmap_cache,
    check_row_count,
    default_cache_root,
    file_cache_key,
    open_memmap_cache,
)

__all__ = [
    "DSPRITES",
    "SHAPE_NAMES",
    "IMAGE_SIZE",
    "render_dsprites",
    "dsprites_twin",
    "read_dsprites",
]

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


# --------------------------------------------------------------------------------------------------
# Reading the real file
# --------------------------------------------------------------------------------------------------
_ZIP_MAGIC = b"PK\x03\x04"
_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
_IMAGES_SHAPE = (IMAGE_SIZE, IMAGE_SIZE)
_READ_CHUNK = 4096  # rows per conversion step: 16 MB of images

# What a damaged file raises from inside zipfile / zlib / h5py; turned into one clear ValueError.
_FILE_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, OSError, KeyError)


class _Reader:
    """The two arrays of a dSprites file: classes in memory, images streamed row by row."""

    num_rows: int
    classes: np.ndarray  # (N, 6) int64

    def read_images(self, start: int, stop: int) -> np.ndarray:  # (stop-start, 64, 64) uint8
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


def _corrupt(path: Path, what: object) -> ValueError:
    return ValueError(
        f"cannot read dSprites file {path}: it looks truncated or corrupt ({what}). Download "
        "dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz (or .hdf5) again, or run without "
        "--data-root to use the procedural twin."
    )


def _missing_keys(path: Path, missing: list[str], found: list[str]) -> ValueError:
    return ValueError(
        f"dSprites file {path} lacks the key(s) {missing}; keys found: {sorted(found)}. Expected the "
        "DeepMind file dsprites_ndarray_co1sh3sc6or40x32y32_64x64 (.npz or .hdf5): point --data-root at "
        "the original file, or leave it out to use the procedural twin."
    )


def _check_arrays(path: Path, images_shape: tuple[int, ...], images_dtype: np.dtype,
                  classes_shape: tuple[int, ...], classes_dtype: np.dtype) -> int:
    """Validate the arrays' shapes and dtypes; return the row count."""
    if len(images_shape) != 3 or tuple(images_shape[1:]) != _IMAGES_SHAPE:
        raise ValueError(f"dSprites file {path}: imgs must have shape (N, 64, 64), got {tuple(images_shape)}")
    if np.dtype(images_dtype) not in (np.dtype(np.uint8), np.dtype(np.bool_)):
        raise ValueError(f"dSprites file {path}: imgs must be uint8 0/1, got dtype {images_dtype}")
    if len(classes_shape) != 2 or classes_shape[1] != DSPRITES.num_factors:
        raise ValueError(
            f"dSprites file {path}: latents classes must have shape (N, {DSPRITES.num_factors}), "
            f"got {tuple(classes_shape)}"
        )
    if np.dtype(classes_dtype).kind not in "iu":
        raise ValueError(f"dSprites file {path}: latents classes must be integers, got dtype {classes_dtype}")
    if images_shape[0] != classes_shape[0]:
        raise ValueError(
            f"dSprites file {path}: {images_shape[0]} images but {classes_shape[0]} rows of latents classes"
        )
    return int(images_shape[0])


class _NpzReader(_Reader):
    """Streams ``imgs.npy`` out of the zip so the 3 GB image array never sits in memory at once."""

    def __init__(self, path: Path) -> None:
        self.path = path
        # allow_pickle=False: the file's `metadata` entry is a Python-2 pickle that must never be run.
        with np.load(path, allow_pickle=False) as npz:
            found = list(npz.files)
            missing = [k for k in ("imgs", "latents_classes") if k not in found]
            if missing:
                raise _missing_keys(path, missing, found)
            try:
                self.classes = np.asarray(npz["latents_classes"])
            except ValueError as e:  # e.g. an object array, which would need unpickling
                raise ValueError(f"dSprites file {path}: cannot read latents_classes ({e})") from e
        self._zip = zipfile.ZipFile(path)
        self._stream: IO[bytes] = self._zip.open("imgs.npy")
        try:
            self._read_header()
        except BaseException:
            self.close()
            raise

    def _read_header(self) -> None:
        path = self.path
        version = np.lib.format.read_magic(self._stream)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(self._stream)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(self._stream)
        else:
            raise ValueError(f"dSprites file {path}: unsupported .npy version {version} for imgs")
        if fortran:
            raise ValueError(f"dSprites file {path}: imgs is stored in Fortran order; expected C order")
        self.num_rows = _check_arrays(path, shape, dtype, self.classes.shape, self.classes.dtype)
        self._next_row = 0

    def read_images(self, start: int, stop: int) -> np.ndarray:
        # A zip member streams forwards only; build_memmap_cache reads its chunks in order.
        if start != self._next_row:
            raise RuntimeError(f"npz images are read in order: expected row {self._next_row}, got {start}")
        row_bytes = IMAGE_SIZE * IMAGE_SIZE
        data = self._stream.read((stop - start) * row_bytes)
        if len(data) != (stop - start) * row_bytes:
            raise EOFError(f"imgs ends after {start + len(data) // row_bytes} of {self.num_rows} rows")
        self._next_row = stop
        return np.frombuffer(data, dtype=np.uint8).reshape(stop - start, *_IMAGES_SHAPE)

    def close(self) -> None:
        self._stream.close()
        self._zip.close()


class _Hdf5Reader(_Reader):
    def __init__(self, path: Path) -> None:
        import h5py  # only needed for .hdf5 files

        self.path = path
        self._file = h5py.File(path, "r")
        found: list[str] = []
        self._file.visit(found.append)
        missing = [k for k in ("imgs", "latents/classes") if k not in self._file]
        if missing:
            self._file.close()
            raise _missing_keys(path, missing, found)
        try:
            self._images = self._file["imgs"]
            classes = self._file["latents/classes"]
            self.num_rows = _check_arrays(path, self._images.shape, self._images.dtype, classes.shape,
                                          classes.dtype)
            self.classes = np.asarray(classes[()])
        except BaseException:
            self._file.close()
            raise

    def read_images(self, start: int, stop: int) -> np.ndarray:
        return np.asarray(self._images[start:stop])

    def close(self) -> None:
        self._file.close()


@contextmanager
def _open_reader(path: Path) -> Iterator[_Reader]:
    """Open a dSprites file by its content (zip = npz, HDF5 signature = hdf5), translating the
    errors of a damaged file into one ValueError that says what to do."""
    with path.open("rb") as f:
        magic = f.read(8)
    if not magic:
        raise ValueError(
            f"dSprites file {path} is empty (0 bytes); download dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz "
            "(or .hdf5) again, or run without --data-root to use the procedural twin"
        )
    if magic.startswith(_ZIP_MAGIC):
        factory: Callable[[Path], _Reader] = _NpzReader
    elif magic == _HDF5_MAGIC:
        factory = _Hdf5Reader
    else:
        raise ValueError(
            f"{path} is neither an .npz (zip) nor an .hdf5 file (starts with {magic!r}); expected "
            "dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz or .hdf5"
        )
    try:
        reader = factory(path)
    except _FILE_ERRORS as e:
        raise _corrupt(path, f"{type(e).__name__}: {e}") from e
    try:
        yield reader
    finally:
        reader.close()


def _check_classes(path: Path, classes: np.ndarray, *, full: bool) -> np.ndarray:
    """Classes as int64 after checking their ranges and, for a full file, the row order."""
    classes = classes.astype(np.int64, copy=False)
    sizes = np.asarray(DSPRITES.sizes)
    bad = (classes < 0) | (classes >= sizes)
    if bad.any():
        row, factor = (int(i) for i in np.argwhere(bad)[0])
        raise ValueError(
            f"dSprites file {path}: row {row} has class {int(classes[row, factor])} for factor "
            f"{DSPRITES.names[factor]!r}, which has {DSPRITES.sizes[factor]} classes"
        )
    if full:
        # Rows must be the states in DSPRITES index order, or labels and images would silently
        # disagree with every other part of the code; the check is cheap enough to cover all rows.
        index = classes @ np.asarray(DSPRITES.bases, dtype=np.int64)
        wrong = np.flatnonzero(index != np.arange(len(classes)))
        if wrong.size:
            r = int(wrong[0])
            raise ValueError(
                f"dSprites file {path}: rows are not in dSprites index order (row {r} holds the state "
                f"{classes[r].tolist()} whose index is {int(index[r])}); expected the original DeepMind file"
            )
    return classes






def read_dsprites(path: str | Path, cache_root: str | Path | None = None, *,
                  allow_subset: bool = False) -> ArraySource:
    """Read the real dSprites file (``.npz`` or ``.hdf5``) through a memory-mapped cache.

    The first call converts the file, in chunks, into ``(N, 64, 64, 1)`` uint8 images (0/255) and
    ``(N, 6)`` int64 classes under ``cache_root or default_cache_root()``; later calls for the same
    file (same name, size and mtime) open the cache directly.

    By default the file must hold all 737,280 states in the dataset's index order. With
    ``allow_subset=True`` a file with fewer rows is accepted (its rows need not follow the index
    order, but every class must be valid); the source then has no factor-space row order.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"dSprites file not found at {path.resolve()}; download "
            "dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz (or .hdf5) from deepmind/dsprites-dataset and "
            "point --data-root at its folder. Without --data-root the procedural twin is used."
        )
    cache_dir = Path(cache_root or default_cache_root()) / file_cache_key("dsprites", path)
    description = f"dSprites real file {path}"
    if (cache_dir / "meta.json").exists():
        images, labels, meta = open_memmap_cache(cache_dir)
        check_row_count(path, len(images), DSPRITES.num_states, allow_subset, dataset="dSprites",
                        hint="Use the original DeepMind file")
    else:
        with _open_reader(path) as reader:
            check_row_count(path, reader.num_rows, DSPRITES.num_states, allow_subset, dataset="dSprites",
                        hint="Use the original DeepMind file")
            full = reader.num_rows == DSPRITES.num_states
            classes = _check_classes(path, reader.classes, full=full)

            def read_chunk(start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
                try:
                    raw = reader.read_images(start, stop)
                except _FILE_ERRORS as e:
                    raise _corrupt(path, f"{type(e).__name__}: {e}") from e
                if raw.dtype == np.bool_:
                    raw = raw.view(np.uint8)
                if raw.max(initial=0) > 1:
                    raise ValueError(
                        f"dSprites file {path}: imgs must hold 0/1, found {int(raw.max())} in rows {start}:{stop}"
                    )
                # 0/1 -> 0/255 so the cache reads like any other uint8 image source.
                return (raw * np.uint8(255))[..., None], classes[start:stop]

            build_memmap_cache(
                cache_dir,
                num_rows=reader.num_rows,
                image_shape=(*_IMAGES_SHAPE, 1),
                num_labels=DSPRITES.num_factors,
                read_chunk=read_chunk,
                meta={
                    "dataset": "dsprites",
                    "source": str(path.resolve()),
                    "factors": list(DSPRITES.names),
                    "sizes": list(DSPRITES.sizes),
                    "full": full,
                },
                chunk=_READ_CHUNK,
                desc=f"caching {path.name}",
            )
        images, labels, meta = open_memmap_cache(cache_dir)
    # Only a full file has rows in factor-space order (row == DSPRITES.ravel(classes)).
    space = DSPRITES if len(images) == DSPRITES.num_states else None
    return ArraySource(images, labels, description=description, space=space)
