"""dSprites: the reader for the real file.

The real file (``dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz`` or its ``.hdf5`` twin) is converted
once into a memory-mapped cache; its pickled ``metadata`` entry is never loaded.
"""

from __future__ import annotations

import zipfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import numpy as np

from ..sources import (
    ArraySource,
    build_memmap_cache,
    cached_arrays,
    check_row_count,
    default_cache_root,
    file_cache_key,
)
from .space import DSPRITES, IMAGE_SIZE

__all__ = ["read_dsprites"]


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
    def build() -> None:
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

    images, labels, _ = cached_arrays(cache_dir, build)
    check_row_count(path, len(images), DSPRITES.num_states, allow_subset, dataset="dSprites",
                    hint="Use the original DeepMind file")
    # Only a full file has rows in factor-space order (row == DSPRITES.ravel(classes)).
    space = DSPRITES if len(images) == DSPRITES.num_states else None
    return ArraySource(images, labels, description=description, space=space)
