"""3D Shapes: the reader for the real file.

The real file (``3dshapes.h5``: ``images`` (480000, 64, 64, 3) uint8, ``labels`` (480000, 6)
float64 holding factor *values*) is converted once, in contiguous chunks, into a memory-mapped cache.
Class indices are rebuilt from the row index (rows are in index order, orientation fastest) and the
stored values are checked against them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..sources import (
    ArraySource,
    build_memmap_cache,
    cached_arrays,
    check_row_count,
    default_cache_root,
    file_cache_key,
)
from .space import IMAGE_SIZE, SHAPES3D

__all__ = ["read_shapes3d"]

FILE_NAME = "3dshapes.h5"


# --------------------------------------------------------------------------------------------------
# Reader for the real file
# --------------------------------------------------------------------------------------------------
_IMAGES_SHAPE = (IMAGE_SIZE, IMAGE_SIZE, 3)
_READ_CHUNK = 4800  # rows per h5 read: contiguous, ~59 MB of images
_LABEL_TOLERANCE = 1e-6
_FILE_ERRORS = (OSError, RuntimeError, KeyError, EOFError)


def _corrupt(path: Path, what: object) -> ValueError:
    return ValueError(
        f"cannot read 3D Shapes file {path}: it looks truncated or corrupt ({what}). Download {FILE_NAME} "
        "again from deepmind/3d-shapes, or run without --data-root to use the procedural twin."
    )


def _check_datasets(path: Path, handle) -> int:
    """Check keys, shapes and dtypes of an open h5 file; return its number of rows."""
    expected = (f"expected 'images' (N, 64, 64, 3) uint8 and 'labels' (N, 6) float as in DeepMind's "
                f"{FILE_NAME}; point --data-root at the original file, or leave it out to use the procedural twin")
    missing = [k for k in ("images", "labels") if k not in handle]
    if missing:
        raise ValueError(f"3D Shapes file {path} lacks {', '.join(repr(k) for k in missing)} "
                         f"(found keys {sorted(handle.keys())}); {expected}")
    images, labels = handle["images"], handle["labels"]
    if not hasattr(images, "shape") or not hasattr(labels, "shape"):
        raise ValueError(f"3D Shapes file {path}: 'images' and 'labels' must be datasets, not groups; {expected}")
    if images.ndim != 4 or tuple(images.shape[1:]) != _IMAGES_SHAPE or images.dtype != np.uint8:
        raise ValueError(f"3D Shapes file {path}: 'images' is {tuple(images.shape)} {images.dtype}; {expected}")
    if (labels.ndim != 2 or labels.shape[1] != SHAPES3D.num_factors or labels.shape[0] != images.shape[0]
            or labels.dtype.kind != "f"):
        raise ValueError(f"3D Shapes file {path}: 'labels' is {tuple(labels.shape)} {labels.dtype} beside "
                         f"{images.shape[0]} images; {expected}")
    return int(images.shape[0])


def _check_labels(path: Path, start: int, labels: np.ndarray, classes: np.ndarray) -> None:
    """Stored factor values of rows ``start..`` must be those of the states in index order."""
    expected = SHAPES3D.values(torch.from_numpy(classes)).numpy()
    bad = np.abs(labels - expected) > _LABEL_TOLERANCE
    if bad.any():
        row, factor = (int(i) for i in np.argwhere(bad)[0])
        raise ValueError(
            f"3D Shapes file {path}: row {start + row} stores {SHAPES3D.names[factor]} = {labels[row, factor]:g}, "
            f"but row {start + row} of the dataset's index order (orientation fastest) has "
            f"{expected[row, factor]:g}. The rows must be in the original order with values on the "
            f"original grids (hues 0.0..0.9); use the unmodified {FILE_NAME}."
        )


def read_shapes3d(path: str | Path, cache_root: str | Path | None = None, *,
                  allow_subset: bool = False) -> ArraySource:
    """Read the real ``3dshapes.h5`` (a file, or a folder holding it) through a memory-mapped cache.

    The first call converts the file in contiguous chunks into ``(N, 64, 64, 3)`` uint8 images and
    ``(N, 6)`` int64 classes (rebuilt from the row index and checked against the stored values)
    under ``cache_root or default_cache_root()``; later calls for the same file (same name, size and
    mtime) open the cache directly, and batches read only the memmap (``ArraySource.fetch``).

    By default the file must hold all 480,000 states. ``allow_subset=True`` accepts a file with fewer
    rows, which must then be the first states in index order.
    """
    path = Path(path).expanduser()
    if path.is_dir():
        path = path / FILE_NAME
    if not path.is_file():
        raise FileNotFoundError(
            f"3D Shapes file not found at {path.resolve()}; download {FILE_NAME} from deepmind/3d-shapes and "
            "point --data-root at it or its folder. Without --data-root the procedural twin is used."
        )
    cache_dir = Path(cache_root or default_cache_root()) / file_cache_key("shapes3d", path)
    images, labels, _ = cached_arrays(cache_dir, lambda: _convert(path, cache_dir, allow_subset))
    check_row_count(path, len(images), SHAPES3D.num_states, allow_subset, dataset="3D Shapes",
                    hint=f"Use the original {FILE_NAME}")
    return ArraySource(images=images, labels=labels, description=f"3D Shapes real file {path}", space=SHAPES3D)


def _convert(path: Path, cache_dir: Path, allow_subset: bool) -> None:
    import h5py  # only needed for the real file

    try:
        handle = h5py.File(path, "r")
    except _FILE_ERRORS as e:
        raise _corrupt(path, f"{type(e).__name__}: {e}") from e
    with handle:
        num_rows = _check_datasets(path, handle)
        check_row_count(path, num_rows, SHAPES3D.num_states, allow_subset, dataset="3D Shapes",
                        hint=f"Use the original {FILE_NAME}")
        images, labels = handle["images"], handle["labels"]

        def read_chunk(start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
            try:
                imgs = images[start:stop]
                labs = np.asarray(labels[start:stop], dtype=np.float64)
            except _FILE_ERRORS as e:
                raise _corrupt(path, f"rows {start}:{stop}: {type(e).__name__}: {e}") from e
            classes = SHAPES3D.unravel(torch.arange(start, stop)).numpy()
            _check_labels(path, start, labs, classes)
            return imgs, classes

        build_memmap_cache(
            cache_dir,
            num_rows=num_rows,
            image_shape=_IMAGES_SHAPE,
            num_labels=SHAPES3D.num_factors,
            read_chunk=read_chunk,
            meta={
                "dataset": "shapes3d",
                "source": str(path.resolve()),
                "factors": list(SHAPES3D.names),
                "sizes": list(SHAPES3D.sizes),
                "values": [list(f.values) for f in SHAPES3D.factors],
                "full": num_rows == SHAPES3D.num_states,
            },
            chunk=_READ_CHUNK,
            desc=f"caching {path.name}",
        )
