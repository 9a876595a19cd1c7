"""CelebA: the reader of local parquet copies.

:func:`read_celeba_parquet` reads local parquet copies (Hugging Face style: an ``image`` column
and one column per attribute) through ``datasets.load_dataset("parquet", ...)`` offline. Every
image is decoded once into a memmap cache (:mod:`.preprocess`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from ..sources import (
    ArraySource,
    cache_damage,
    cached_arrays,
    default_cache_root,
    open_memmap_cache,
)
from .attributes import CELEBA_ATTRIBUTES
from .preprocess import (
    PREPROCESS_VERSION,
    _decode_bytes,
    _decode_file,
    _short_hash,
    _stat_key,
    build_face_cache,
    preprocess_face,
)

__all__ = ["read_celeba_parquet"]


# ------------------------------------------------------------------------------------------------
# parquet reader
# ------------------------------------------------------------------------------------------------
def _normalise_files(files) -> dict[str, list[str]] | list[str]:
    if isinstance(files, (str, os.PathLike)):
        return [str(Path(files).expanduser())]
    if isinstance(files, Mapping):
        out: dict[str, list[str]] = {}
        for k, v in files.items():
            v = _normalise_files(v)
            out[str(k)] = v  # type: ignore[assignment]
        return out
    return [str(Path(f).expanduser()) for f in files]


def _all_files(data_files) -> list[str]:
    if isinstance(data_files, dict):
        return [f for v in data_files.values() for f in v]
    return list(data_files)


def _column_bits(values: np.ndarray, column: str, ours: str) -> np.ndarray:
    """0/1 bits from a bool, 0/1 or -1/1 column."""
    if values.dtype == bool:
        return values.astype(np.uint8)
    if values.dtype == object:
        if any(v is None for v in values):
            raise ValueError(f"column {column!r} (attribute {ours}) has missing values")
        try:
            values = values.astype(np.int64)
        except (TypeError, ValueError):
            raise ValueError(
                f"column {column!r} (attribute {ours}) holds {values[:3].tolist()}...; expected bool, 0/1 or -1/1"
            ) from None
    if not np.issubdtype(values.dtype, np.number):
        raise ValueError(
            f"column {column!r} (attribute {ours}) has dtype {values.dtype}; expected bool, 0/1 or -1/1"
        )
    if np.issubdtype(values.dtype, np.floating) and np.isnan(values).any():
        raise ValueError(f"column {column!r} (attribute {ours}) has missing values (NaN)")
    seen = set(np.unique(values).tolist())
    if seen <= {0, 1}:
        return (values == 1).astype(np.uint8)
    if seen <= {-1, 1}:
        return (values == 1).astype(np.uint8)
    raise ValueError(
        f"column {column!r} (attribute {ours}) holds the values {sorted(seen)[:10]}; expected bool, 0/1 or -1/1"
    )


def _image_bytes(value, where: str) -> np.ndarray:
    """Preprocess one cell of an image column: {'bytes','path'} dict, raw bytes, a path or a PIL image."""
    if isinstance(value, Image.Image):
        return preprocess_face(value)
    if isinstance(value, dict):
        data, path = value.get("bytes"), value.get("path")
        if data is not None:
            return _decode_bytes(data, where)
        if path:
            return _decode_file(Path(path))
        raise ValueError(f"image {where} has neither bytes nor a path")
    if isinstance(value, (bytes, bytearray, memoryview)):
        return _decode_bytes(bytes(value), where)
    if isinstance(value, str):
        return _decode_file(Path(value))
    raise ValueError(f"image {where}: cannot read a value of type {type(value).__name__}")


def read_celeba_parquet(
    files,
    split: str = "train",
    columns: Mapping[str, str] | None = None,
    cache_root: str | os.PathLike | None = None,
) -> ArraySource:
    """Images and attribute bits from local parquet files (Hugging Face copies of CelebA).

    ``files`` is one path, a list of paths (they form the split ``"train"``), or a dict
    ``{split: path(s)}`` as ``data_files`` of ``datasets.load_dataset``; ``split`` picks one. The
    files are loaded with ``datasets.load_dataset("parquet", data_files=...)`` with
    ``HF_DATASETS_OFFLINE=1``; ``datasets`` is imported here only, so the package works without it.

    ``columns`` maps our names to the file's column names; a name left out maps to itself. By
    default the file needs an ``image`` column (the ``datasets`` Image feature, i.e.
    ``{"bytes", "path"}`` structs, or raw encoded bytes / paths) and one column per name of
    :data:`CELEBA_ATTRIBUTES` holding bool, 0/1 or -1/1. Missing columns raise a ``ValueError``
    listing the missing and the available ones. Images are preprocessed with
    :func:`preprocess_face` into a memmap cache under ``cache_root or default_cache_root()``;
    the Arrow copy that ``datasets`` makes goes to ``<cache root>/hf-datasets``.
    """
    columns = dict(columns or {})
    unknown = [k for k in columns if k != "image" and k not in CELEBA_ATTRIBUTES]
    if unknown:
        raise ValueError(
            f"columns maps our names to the file's; unknown names {unknown}: use 'image' and the "
            f"CelebA attribute names ({', '.join(CELEBA_ATTRIBUTES[:3])}, ...)"
        )
    mapping = {name: columns.get(name, name) for name in ("image", *CELEBA_ATTRIBUTES)}

    data_files = _normalise_files(files)
    all_files = _all_files(data_files)
    if not all_files:
        raise ValueError("no parquet file given")
    absent = [f for f in all_files if not Path(f).is_file()]
    if absent:
        raise FileNotFoundError(f"parquet file(s) not found: {absent}")
    if isinstance(data_files, dict):
        if split not in data_files:
            raise ValueError(f"split {split!r} is not among the given data files' splits {sorted(data_files)}")
        files_of_split = data_files[split]
    else:
        if split != "train":
            raise ValueError(
                f"a plain list of parquet files forms the split 'train'; got split={split!r}. Pass a dict "
                "{split: files} to name splits"
            )
        files_of_split = data_files

    cache_root = Path(cache_root or default_cache_root())
    key = "|".join(f"{Path(f).resolve()}:{_stat_key(Path(f))}" for f in files_of_split)
    key += f"|{sorted(mapping.items())}|pre={PREPROCESS_VERSION}"
    cache_dir = cache_root / f"celeba-parquet-{split}-{_short_hash(key)}"
    description = f"CelebA parquet {', '.join(files_of_split)} ({split})"
    if cache_damage(cache_dir) is None:
        images, labels, _ = open_memmap_cache(cache_dir)
        return ArraySource(images, labels, description=description, space=None)

    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    try:
        import datasets  # noqa: PLC0415 - optional dependency, imported on use only
    except ImportError as e:
        raise ImportError(
            "read_celeba_parquet needs the Hugging Face 'datasets' package (pip install datasets); "
            "the folder reader read_celeba_folder does not"
        ) from e

    load_files = {split: files_of_split}
    try:
        dd = datasets.load_dataset("parquet", data_files=load_files, cache_dir=str(cache_root / "hf-datasets"))
    except Exception as error:  # pyarrow's ArrowInvalid and datasets' own errors: the file is not readable parquet
        if isinstance(error, ImportError):
            raise
        raise ValueError(f"cannot read the parquet file(s) {', '.join(files_of_split)}: {type(error).__name__}: "
                         f"{str(error).splitlines()[0] if str(error) else error!r}; the file is damaged, cut short or "
                         "not parquet: download it again") from None
    ds = dd[split]
    available = list(ds.column_names)
    missing = {ours: theirs for ours, theirs in mapping.items() if theirs not in available}
    if missing:
        lower = {c.lower(): c for c in available}
        guesses = {o: lower[t.lower()] for o, t in missing.items() if t.lower() in lower}
        guess = f" Close matches by case: {guesses}." if guesses else ""
        raise ValueError(
            f"parquet file(s) {files_of_split} lack column(s) {list(missing.values())} "
            f"(for our names {list(missing)}); available columns: {available}.{guess} Pass "
            "columns={our name: file column}, e.g. read_celeba_parquet(files, columns={'image': 'img', "
            "'Smiling': 'smiling'}); names left out map to themselves."
        )

    table = ds.with_format("arrow")
    bits = np.empty((len(ds), len(CELEBA_ATTRIBUTES)), dtype=np.uint8)
    for j, name in enumerate(CELEBA_ATTRIBUTES):
        col = table[mapping[name]]
        values = col.to_numpy(zero_copy_only=False) if hasattr(col, "to_numpy") else np.asarray(col)
        bits[:, j] = _column_bits(np.asarray(values), mapping[name], name)
    labels = bits.astype(np.int64)

    img_col = mapping["image"]
    images_only = ds.select_columns([img_col])
    feature = images_only.features[img_col]
    if isinstance(feature, datasets.Image) and feature.decode:
        images_only = images_only.cast_column(img_col, datasets.Image(decode=False))
    images_only = images_only.with_format("arrow")

    def decode_rows(pool: ThreadPoolExecutor, start: int, stop: int) -> list:
        cells = images_only[start:stop][img_col].to_pylist()
        return list(pool.map(_image_bytes, cells, [f"row {start + i} of {split}" for i in range(len(cells))]))

    def build() -> None:
        build_face_cache(cache_dir, labels, decode_rows,
                         {"source": "parquet", "files": [str(Path(f).resolve()) for f in files_of_split],
                          "split": split, "columns": mapping}, f"CelebA parquet {split}: decoding")

    images, labels_mm, _ = cached_arrays(cache_dir, build)
    return ArraySource(images, labels_mm, description=description, space=None)
