"""CelebA: attribute bits, a folder reader, a parquet reader and an index of attribute pairs.

Where the images come from
--------------------------
* :func:`read_celeba_folder` reads the torchvision folder layout::

      ROOT/celeba/img_align_celeba/000001.jpg ...   (178 x 218 aligned JPEGs)
      ROOT/celeba/list_attr_celeba.txt               count line, 40 names, rows "000001.jpg -1  1 ..."
      ROOT/celeba/list_eval_partition.txt            "000001.jpg 0" (0 train, 1 valid, 2 test)

  with its own parser: torchvision's ``CelebA`` checks md5 sums, so it rejects any fixture or twin.
* :func:`read_celeba_parquet` reads local parquet copies (Hugging Face style: an ``image`` column
  and one column per attribute) through ``datasets.load_dataset("parquet", ...)`` offline.
* :mod:`datamodules.celeba_twin` writes a procedural twin in the exact folder layout (and a parquet
  copy) so that all of this runs offline; its faces are drawn *from* the attribute bits.

Both readers decode every image of the split once, preprocess it with :func:`preprocess_face`
(centre crop + box resize to 64 x 64) and store the result in a ``.npy`` memmap cache
(:func:`~datamodules.sources.build_memmap_cache`); labels are the 40 attribute bits as int64 0/1
in :data:`CELEBA_ATTRIBUTES` order.

Pairs
-----
CelebA has no interventions: a pair ``(x, a, x')`` for the action ``Smiling+`` is two *different*
photos whose chosen attribute bits agree except that ``x`` is not smiling and ``x'`` is.
:class:`AttributePairIndex` groups the images by their pattern of chosen bits and samples such
pairs; action ids follow ``ActionSpace(celeba_space(attributes))`` (factor-major, minus then plus).
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import re
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .factors import ActionSpace, Factor, FactorSpace
from .sources import ArraySource, build_memmap_cache, default_cache_root, open_memmap_cache

log = logging.getLogger(__name__)

__all__ = [
    "CELEBA_ATTRIBUTES",
    "DEFAULT_PAIR_ATTRIBUTES",
    "CELEBA_SPLITS",
    "IMAGE_SIZE",
    "celeba_space",
    "parse_attr_file",
    "parse_partition_file",
    "preprocess_face",
    "read_celeba_folder",
    "read_celeba_parquet",
    "AttributePairIndex",
]

CELEBA_ATTRIBUTES: tuple[str, ...] = (
    "5_o_Clock_Shadow", "Arched_Eyebrows", "Attractive", "Bags_Under_Eyes", "Bald",
    "Bangs", "Big_Lips", "Big_Nose", "Black_Hair", "Blond_Hair",
    "Blurry", "Brown_Hair", "Bushy_Eyebrows", "Chubby", "Double_Chin",
    "Eyeglasses", "Goatee", "Gray_Hair", "Heavy_Makeup", "High_Cheekbones",
    "Male", "Mouth_Slightly_Open", "Mustache", "Narrow_Eyes", "No_Beard",
    "Oval_Face", "Pale_Skin", "Pointy_Nose", "Receding_Hairline", "Rosy_Cheeks",
    "Sideburns", "Smiling", "Straight_Hair", "Wavy_Hair", "Wearing_Earrings",
    "Wearing_Hat", "Wearing_Lipstick", "Wearing_Necklace", "Wearing_Necktie", "Young",
)  # fmt: skip
"""The 40 CelebA attributes in the order of ``list_attr_celeba.txt``."""

DEFAULT_PAIR_ATTRIBUTES: tuple[str, ...] = CELEBA_ATTRIBUTES[:10]
"""Attributes used for pairs unless told otherwise: the first 10 of the file."""

CELEBA_SPLITS: dict[str, int | None] = {"train": 0, "valid": 1, "test": 2, "all": None}
"""Split names accepted by the readers and their code in ``list_eval_partition.txt``."""

IMAGE_SIZE = 64
ALIGNED_SIZE = (178, 218)  # (width, height) of img_align_celeba
CROP_SIZE = 140  # side of the centred square cropped from a 178 x 218 image
PREPROCESS_VERSION = 1  # bump when preprocess_face changes: it is part of every cache key

ATTR_FILE = "list_attr_celeba.txt"
_ATTR_VALUES = frozenset({"1", "-1"})
PARTITION_FILE = "list_eval_partition.txt"
IMAGE_DIR = "img_align_celeba"


# ------------------------------------------------------------------------------------------------
# factor space
# ------------------------------------------------------------------------------------------------
def _check_attributes(attributes: Sequence[str]) -> tuple[str, ...]:
    if isinstance(attributes, str):
        attributes = [attributes]
    attributes = tuple(attributes)
    if not attributes:
        raise ValueError(f"choose at least one CelebA attribute; valid names: {', '.join(CELEBA_ATTRIBUTES)}")
    unknown = [a for a in attributes if a not in CELEBA_ATTRIBUTES]
    if unknown:
        raise ValueError(
            f"unknown CelebA attribute(s) {unknown}; valid names (file order): {', '.join(CELEBA_ATTRIBUTES)}"
        )
    if len(set(attributes)) != len(attributes):
        raise ValueError(f"CelebA attributes must not repeat, got {list(attributes)}")
    return attributes


def celeba_space(attributes: Sequence[str] = DEFAULT_PAIR_ATTRIBUTES) -> FactorSpace:
    """Factor space ``"celeba"``: one binary factor (values 0.0, 1.0, not cyclic) per attribute.

    With :class:`~datamodules.factors.ActionSpace` this gives the actions ``Smiling-`` (id 2k) and
    ``Smiling+`` (id 2k+1) for the k-th chosen attribute.
    """
    attributes = _check_attributes(attributes)
    return FactorSpace("celeba", tuple(Factor(a, 2, (0.0, 1.0)) for a in attributes))


# ------------------------------------------------------------------------------------------------
# text files
# ------------------------------------------------------------------------------------------------
def _read_lines(path: Path) -> list[str]:
    """Lines of a text file without their ``\\n`` / ``\\r\\n`` endings (index i is line i + 1)."""
    data = Path(path).read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise ValueError(f"{path}, line {line}: not a text file (undecodable byte)") from None
    lines = text.split("\n")
    return [ln[:-1] if ln.endswith("\r") else ln for ln in lines]


def _last_content_line(lines: list[str]) -> int:
    """Number of lines up to the last non-blank one (trailing blank lines are ignored)."""
    n = len(lines)
    while n > 0 and not lines[n - 1].strip():
        n -= 1
    return n


def parse_attr_file(path: str | os.PathLike) -> tuple[list[str], list[str], np.ndarray]:
    """Parse ``list_attr_celeba.txt``: ``(filenames, attribute names, bits (N, K) uint8 0/1)``.

    Format: line 1 the number of images, line 2 the attribute names, then one row per image:
    ``000001.jpg -1  1  1 ...`` with -1 (absent) or 1 (present). Fields may be separated by any run
    of spaces or tabs; CRLF line ends, trailing whitespace and blank lines (which are skipped) are
    tolerated. Columns are returned in the file's order (K = 40 for the real file).

    Raises ``ValueError`` naming the file and the line for a missing or malformed header, a row
    with the wrong number of fields, a value other than -1/1, a repeated filename, or a count on
    line 1 that does not match the rows.
    """
    path = Path(path)
    lines = _read_lines(path)
    end = _last_content_line(lines)
    if end == 0:
        raise ValueError(f"{path}, line 1: the attribute file is empty; expected the image count")
    first = lines[0].split()
    if len(first) != 1 or not first[0].isdigit():
        raise ValueError(
            f"{path}, line 1: expected the number of images (a single integer), got {lines[0][:80]!r}; "
            "the file must start with a count line and a line of attribute names"
        )
    count = int(first[0])
    if end < 2:
        raise ValueError(f"{path}, line 2: missing header line with the attribute names")
    names = lines[1].split()
    if not names:
        raise ValueError(f"{path}, line 2: missing header line with the attribute names (line is blank)")
    if any(re.fullmatch(r"[-+]?\d+", t) for t in names) or names[0].lower().endswith((".jpg", ".png", ".jpeg")):
        raise ValueError(
            f"{path}, line 2: missing header: expected the attribute names "
            f"(e.g. {' '.join(CELEBA_ATTRIBUTES[:3])} ...), got a data row {lines[1][:60]!r}"
        )
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise ValueError(f"{path}, line 2: attribute names repeat: {dup}")
    k = len(names)

    filenames: list[str] = []
    rows: list[bytes] = []  # one byte per value (0/1): compact even for the 202,599 real rows
    line_numbers: list[int] = []
    valid = _ATTR_VALUES
    for i in range(2, end):
        parts = lines[i].split()
        if not parts:
            continue
        if len(parts) != k + 1:
            raise ValueError(
                f"{path}, line {i + 1}: expected a filename and {k} values (-1/1), one per attribute on "
                f"line 2, got {len(parts) - 1} value(s) after {parts[0]!r}: {lines[i][:80]!r}; "
                "fix that line or download the attribute file again"
            )
        values = parts[1:]
        if not valid.issuperset(values):
            c = next(j for j, v in enumerate(values) if v not in valid)
            raise ValueError(
                f"{path}, line {i + 1}: value {values[c]!r} for attribute {names[c]!r} of "
                f"{parts[0]}; values must be -1 or 1"
            )
        filenames.append(parts[0])
        rows.append(bytes([v == "1" for v in values]))
        line_numbers.append(i + 1)

    if len(filenames) != count:
        raise ValueError(
            f"{path}, line 1: the count says {count} images but the file has {len(filenames)} rows "
            f"(lines 3..{end}); the file is truncated or the count is wrong"
        )
    bits = np.frombuffer(b"".join(rows), dtype=np.uint8).reshape(len(rows), k).copy()
    if len(set(filenames)) != len(filenames):
        seen: dict[str, int] = {}
        for name, ln in zip(filenames, line_numbers):
            if name in seen:
                raise ValueError(f"{path}, line {ln}: {name} is listed again (first on line {seen[name]})")
            seen[name] = ln
    return filenames, names, bits


def parse_partition_file(path: str | os.PathLike) -> dict[str, int]:
    """Parse ``list_eval_partition.txt``: ``{filename: split}`` with 0 train, 1 valid, 2 test.

    Rows are ``000001.jpg 0`` with no header; separators, line ends and blank lines are handled as in
    :func:`parse_attr_file`. Raises ``ValueError`` naming the file and line for a row without
    exactly two fields, a split other than 0/1/2, a repeated filename, or an empty file.
    """
    path = Path(path)
    lines = _read_lines(path)
    out: dict[str, int] = {}
    first_line: dict[str, int] = {}
    for i, line in enumerate(lines):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2:
            raise ValueError(
                f"{path}, line {i + 1}: expected '<filename> <split>' (2 fields), got {len(parts)}: {line[:80]!r}"
            )
        name, split = parts
        if split not in ("0", "1", "2"):
            raise ValueError(
                f"{path}, line {i + 1}: split {split!r} for {name}; must be 0 (train), 1 (valid) or 2 (test)"
            )
        if name in out:
            raise ValueError(f"{path}, line {i + 1}: {name} is listed again (first on line {first_line[name]})")
        out[name] = int(split)
        first_line[name] = i + 1
    if not out:
        raise ValueError(f"{path}, line 1: the partition file is empty; expected rows '000001.jpg 0'")
    return out


# ------------------------------------------------------------------------------------------------
# preprocessing
# ------------------------------------------------------------------------------------------------
def _crop_box(width: int, height: int) -> tuple[float, float, float, float]:
    if (width, height) == ALIGNED_SIZE:
        side = float(CROP_SIZE)
    else:
        side = float(min(round(width * CROP_SIZE / ALIGNED_SIZE[0]), width, height))
        side = max(side, 1.0)
    left = (width - side) / 2.0
    top = (height - side) / 2.0
    return (left, top, left + side, top + side)


def preprocess_face(img: Image.Image) -> np.ndarray:
    """One aligned CelebA image -> ``(64, 64, 3)`` uint8 RGB, the common CelebA-64 recipe.

    * **Colour**: any mode other than RGB is converted with ``Image.convert("RGB")`` (grayscale is
      replicated to 3 channels, palette images are expanded, an alpha channel is dropped).
    * **Crop**: the centred 140 x 140 square of the 178 x 218 aligned image (columns 19..158,
      rows 39..178), which holds the face from the hairline to the chin. An image of any other
      size gets the centred square whose side is ``round(140 / 178 * width)``, clipped to the
      shorter side, i.e. the same framing for a rescaled copy of the aligned images, and a centre
      square crop for anything else.
    * **Resize**: to 64 x 64 with PIL's ``BOX`` filter, done in the same call as the crop (PIL's
      ``resize(box=...)``, sub-pixel exact). Box is exact area averaging for a 2.19x reduction: every
      source pixel counts equally, so there is no aliasing, and unlike ``LANCZOS`` it has no
      negative lobes, hence no ringing halos at the hard hair/background edges and no overshoot
      clipping; it is also the fastest antialiasing filter. The slight extra sharpness of Lanczos is
      not worth artefacts that the model would have to reproduce.
    """
    if img.mode != "RGB":
        if img.mode == "P" and "transparency" in img.info:
            img = img.convert("RGBA")
        img = img.convert("RGB")
    box = _crop_box(*img.size)
    out = img.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BOX, box=box)
    arr = np.asarray(out, dtype=np.uint8)
    if arr.shape != (IMAGE_SIZE, IMAGE_SIZE, 3):  # pragma: no cover - convert("RGB") guarantees it
        raise ValueError(f"preprocessing produced shape {arr.shape}")
    return arr


def _decode_file(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as im:
            return preprocess_face(im)
    except FileNotFoundError:
        raise FileNotFoundError(f"CelebA image {path} is listed in the attribute file but missing on disk") from None
    except (OSError, ValueError) as e:
        raise ValueError(f"cannot decode CelebA image {path}: {e}") from e


def _decode_bytes(data: bytes, what: str) -> np.ndarray:
    try:
        with Image.open(io.BytesIO(data)) as im:
            return preprocess_face(im)
    except (OSError, ValueError) as e:
        raise ValueError(f"cannot decode image {what}: {e}") from e


def _num_workers() -> int:
    return max(1, min(8, (os.cpu_count() or 1)))


# ------------------------------------------------------------------------------------------------
# folder reader
# ------------------------------------------------------------------------------------------------
def _check_split(split: str) -> None:
    if split not in CELEBA_SPLITS:
        raise ValueError(f"unknown CelebA split {split!r}; choose one of {', '.join(CELEBA_SPLITS)}")


def _stat_key(path: Path) -> str:
    st = path.stat()
    return f"{st.st_size}:{st.st_mtime_ns}"


def _short_hash(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()[:12]


_DOWNLOAD_HINT = (
    "Get the 'Align&Cropped Images' (img_align_celeba.zip) and the annotation files from the CelebA "
    "site and unpack them into that folder (torchvision layout), or write an offline procedural twin "
    "with datamodules.celeba_twin.write_celeba_twin(root)."
)


def _celeba_paths(root: Path) -> tuple[Path, Path, Path, Path]:
    base = root / "celeba"
    if not base.is_dir():
        hint = ""
        if (root / IMAGE_DIR).is_dir() or (root / ATTR_FILE).exists():
            hint = f" {root} looks like the celeba folder itself: pass its parent {root.parent} as root."
        raise FileNotFoundError(
            f"no 'celeba' folder in {root}: expected {base}/ holding {IMAGE_DIR}/, {ATTR_FILE} and "
            f"{PARTITION_FILE}.{hint} {_DOWNLOAD_HINT}"
        )
    img_dir, attr, part = base / IMAGE_DIR, base / ATTR_FILE, base / PARTITION_FILE
    if not img_dir.is_dir():
        raise FileNotFoundError(
            f"missing image folder {img_dir} (the 178x218 aligned JPEGs 000001.jpg ...). Unzip "
            f"img_align_celeba.zip inside {base}. {_DOWNLOAD_HINT}"
        )
    if not attr.is_file():
        raise FileNotFoundError(
            f"missing attribute file {ATTR_FILE} in {base} (expected {attr}); it holds the 40 attribute "
            f"bits of every image. {_DOWNLOAD_HINT}"
        )
    return base, img_dir, attr, part


def read_celeba_folder(
    root: str | os.PathLike, split: str = "train", cache_root: str | os.PathLike | None = None
) -> ArraySource:
    """Images and attribute bits of one split of a CelebA folder (torchvision layout) via a memmap cache.

    ``root`` is the folder that *contains* ``celeba/``; ``split`` is ``"train"``, ``"valid"``,
    ``"test"`` or ``"all"`` (``"all"`` does not need the partition file). Every image of the split
    is decoded once, preprocessed by :func:`preprocess_face` and stored under
    ``cache_root or default_cache_root()`` in ``celeba-{split}-{hash}``, the hash covering the root
    path, the size and mtime of the attribute (and partition) file and the preprocessing version;
    later calls open the cache directly. Rows follow the attribute file's order; labels are the 40
    bits (int64 0/1) in :data:`CELEBA_ATTRIBUTES` order, whatever the column order of the file.

    Raises ``FileNotFoundError`` for a missing folder or file (saying which, where and what to do),
    an empty image folder, or images listed in the attribute file but absent from the image folder,
    and ``ValueError`` for malformed text files.
    """
    _check_split(split)
    root = Path(root).expanduser()
    base, img_dir, attr, part = _celeba_paths(root)
    if split != "all" and not part.is_file():
        raise FileNotFoundError(
            f"missing partition file {PARTITION_FILE} in {base} (expected {part}); it assigns every image "
            f"to train/valid/test and is needed for split {split!r} (split='all' works without it). "
            f"{_DOWNLOAD_HINT}"
        )

    key = f"{root.resolve()}|attr={_stat_key(attr)}"
    if split != "all":
        key += f"|part={_stat_key(part)}"
    key += f"|pre={PREPROCESS_VERSION}"
    cache_dir = Path(cache_root or default_cache_root()) / f"celeba-{split}-{_short_hash(key)}"
    description = f"CelebA folder {root} ({split})"
    if (cache_dir / "meta.json").exists():
        images, labels, _ = open_memmap_cache(cache_dir)
        log.info("%s: using cache %s", description, cache_dir)
        return ArraySource(images, labels, description=description, space=None)

    filenames, names, bits = parse_attr_file(attr)
    if sorted(names) != sorted(CELEBA_ATTRIBUTES):
        missing = [a for a in CELEBA_ATTRIBUTES if a not in names]
        extra = [a for a in names if a not in CELEBA_ATTRIBUTES]
        raise ValueError(
            f"{attr}, line 2: the header does not list the 40 CelebA attributes "
            f"(missing {missing}, unexpected {extra})"
        )
    bits = bits[:, [names.index(a) for a in CELEBA_ATTRIBUTES]]

    if split == "all":
        rows = np.arange(len(filenames))
    else:
        partition = parse_partition_file(part)
        code = CELEBA_SPLITS[split]
        unassigned = [f for f in filenames if f not in partition]
        if unassigned:
            raise ValueError(
                f"{len(unassigned)} image(s) of {attr} have no split in {part}, e.g. {unassigned[:5]}; "
                "the two files do not belong together"
            )
        rows = np.array([i for i, f in enumerate(filenames) if partition[f] == code], dtype=np.int64)
    if len(rows) == 0:
        raise ValueError(f"split {split!r} of {base} holds no image (attribute file {attr}, partition file {part})")

    try:
        on_disk = set(os.listdir(img_dir))
    except OSError as e:  # pragma: no cover - permissions
        raise FileNotFoundError(f"cannot list the image folder {img_dir}: {e}") from e
    if not on_disk:
        raise FileNotFoundError(
            f"the image folder {img_dir} is empty; unzip img_align_celeba.zip there so that it holds "
            f"{filenames[0] if filenames else '000001.jpg'} ... {_DOWNLOAD_HINT}"
        )
    split_files = [filenames[i] for i in rows]
    absent = [f for f in split_files if f not in on_disk]
    if absent:
        nested = " (it holds a nested img_align_celeba/ folder: move its files up one level)" if (
            img_dir / IMAGE_DIR).is_dir() else ""
        raise FileNotFoundError(
            f"{len(absent)} image(s) listed in {attr} for split {split!r} are missing from {img_dir}"
            f"{nested}: {', '.join(absent[:5])}{' ...' if len(absent) > 5 else ''}; re-extract the images "
            "or fix the attribute file"
        )

    labels = bits[rows].astype(np.int64)
    paths = [img_dir / f for f in split_files]

    with ThreadPoolExecutor(max_workers=_num_workers()) as pool:

        def read_chunk(start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
            imgs = np.stack(list(pool.map(_decode_file, paths[start:stop])))
            return imgs, labels[start:stop]

        build_memmap_cache(
            cache_dir,
            num_rows=len(rows),
            image_shape=(IMAGE_SIZE, IMAGE_SIZE, 3),
            num_labels=len(CELEBA_ATTRIBUTES),
            read_chunk=read_chunk,
            meta={
                "dataset": "celeba",
                "source": "folder",
                "root": str(root.resolve()),
                "split": split,
                "attributes": list(CELEBA_ATTRIBUTES),
                "preprocess": f"centre crop 140/178, BOX resize to {IMAGE_SIZE} (v{PREPROCESS_VERSION})",
                "filenames": split_files,
            },
            chunk=1024,
            desc=f"CelebA {split}: decoding",
        )
    images, labels_mm, _ = open_memmap_cache(cache_dir)
    return ArraySource(images, labels_mm, description=description, space=None)


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
    if (cache_dir / "meta.json").exists():
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
    dd = datasets.load_dataset("parquet", data_files=load_files, cache_dir=str(cache_root / "hf-datasets"))
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

    with ThreadPoolExecutor(max_workers=_num_workers()) as pool:

        def read_chunk(start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
            cells = images_only[start:stop][img_col].to_pylist()
            where = [f"row {start + i} of {split}" for i in range(len(cells))]
            imgs = np.stack(list(pool.map(_image_bytes, cells, where)))
            return imgs, labels[start:stop]

        build_memmap_cache(
            cache_dir,
            num_rows=len(ds),
            image_shape=(IMAGE_SIZE, IMAGE_SIZE, 3),
            num_labels=len(CELEBA_ATTRIBUTES),
            read_chunk=read_chunk,
            meta={
                "dataset": "celeba",
                "source": "parquet",
                "files": [str(Path(f).resolve()) for f in files_of_split],
                "split": split,
                "columns": mapping,
                "attributes": list(CELEBA_ATTRIBUTES),
                "preprocess": f"centre crop 140/178, BOX resize to {IMAGE_SIZE} (v{PREPROCESS_VERSION})",
            },
            chunk=1024,
            desc=f"CelebA parquet {split}: decoding",
        )
    images, labels_mm, _ = open_memmap_cache(cache_dir)
    return ArraySource(images, labels_mm, description=description, space=None)


# ------------------------------------------------------------------------------------------------
# pairs
# ------------------------------------------------------------------------------------------------
def _uniforms(generator, shape: tuple[int, ...]) -> np.ndarray:
    """float64 uniforms in [0, 1) from a numpy Generator, a torch Generator or an int seed."""
    if isinstance(generator, np.random.Generator):
        return generator.random(shape)
    if isinstance(generator, torch.Generator):
        return torch.rand(shape, generator=generator, dtype=torch.float64).numpy()
    if isinstance(generator, (int, np.integer)) and not isinstance(generator, bool):
        return np.random.default_rng(int(generator)).random(shape)
    raise TypeError(
        f"generator must be a numpy Generator, a torch Generator or an int seed, got {type(generator).__name__}"
    )


class AttributePairIndex:
    """Pairs of images that differ in exactly one chosen attribute, for the actions of ``celeba_space``.

    ``bits`` is ``(N, len(all_names))`` (e.g. the 40 labels of an :class:`ArraySource`) or already
    ``(N, len(attributes))``, with values 0/1. Images are grouped by their pattern of chosen bits.
    For the action ``A+`` (attribute ``A`` at position k among ``attributes``) the sources are the
    images with bit k = 0 and the targets the images whose pattern equals the source's with bit k
    set; ``A-`` is the reverse. Attributes that are not chosen are free to differ. Action ids are
    those of ``ActionSpace(celeba_space(attributes))``: ``2k`` for ``A-``, ``2k + 1`` for ``A+``.
    """

    def __init__(
        self,
        bits: np.ndarray,
        attributes: Sequence[str] = DEFAULT_PAIR_ATTRIBUTES,
        all_names: Sequence[str] = CELEBA_ATTRIBUTES,
    ) -> None:
        self.attributes = _check_attributes(attributes)
        self.all_names = tuple(all_names)
        self.space = celeba_space(self.attributes)
        self.action_space = ActionSpace(self.space)
        if isinstance(bits, torch.Tensor):
            bits = bits.cpu().numpy()
        bits = np.asarray(bits)
        k = len(self.attributes)
        if bits.ndim != 2:
            raise ValueError(f"bits must be (N, {len(self.all_names)}) or (N, {k}), got shape {bits.shape}")
        if bits.shape[1] == len(self.all_names):
            not_there = [a for a in self.attributes if a not in self.all_names]
            if not_there:
                raise ValueError(f"attributes {not_there} are not among all_names {list(self.all_names)}")
            bits = bits[:, [self.all_names.index(a) for a in self.attributes]]
        elif bits.shape[1] != k:
            raise ValueError(
                f"bits must have {len(self.all_names)} columns (all attributes) or {k} (the chosen ones), "
                f"got shape {bits.shape}"
            )
        if bits.size and not np.isin(bits, (0, 1)).all():
            raise ValueError("bits must hold 0/1 values (convert -1/1 with bits > 0)")
        self.bits = bits.astype(np.uint8)
        self.num_rows = int(bits.shape[0])

        codes = (self.bits.astype(np.int64) << np.arange(k, dtype=np.int64)).sum(axis=1)
        self._codes = codes
        uniq, inverse, counts = np.unique(codes, return_inverse=True, return_counts=True)
        self._patterns = uniq  # sorted pattern codes
        self._counts = counts.astype(np.int64)
        self._rows = np.argsort(inverse, kind="stable").astype(np.int64)  # rows grouped by pattern
        self._offsets = np.concatenate([[0], np.cumsum(self._counts)[:-1]]).astype(np.int64)

        # Per action: (source groups, target groups, cumulative pair counts).
        self._tables: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        for action in self.action_space:
            bit = np.int64(1) << action.factor
            without = np.nonzero((uniq & bit) == 0)[0]
            partner = uniq[without] | bit
            pos = np.searchsorted(uniq, partner)
            inside = pos < len(uniq)
            found = np.zeros(len(partner), dtype=bool)
            found[inside] = uniq[pos[inside]] == partner[inside]
            low, high = without[found], pos[found]
            src, tgt = (high, low) if action.direction < 0 else (low, high)
            weights = self._counts[src] * self._counts[tgt]
            self._tables.append((src, tgt, np.cumsum(weights)))

    def __len__(self) -> int:
        return self.num_rows

    def pair_counts(self) -> dict[str, int]:
        """``{action name: number of (source, target) pairs}``, in action-id order."""
        return {
            a.name: int(table[2][-1]) if len(table[2]) else 0 for a, table in zip(self.action_space, self._tables)
        }

    def pattern_counts(self) -> dict[tuple[int, ...], int]:
        """``{chosen-bit pattern: number of images}``."""
        k = len(self.attributes)
        return {
            tuple(int(c >> i) & 1 for i in range(k)): int(n) for c, n in zip(self._patterns, self._counts)
        }

    def _action_weights(self, weights) -> np.ndarray:
        counts = np.array(list(self.pair_counts().values()), dtype=np.float64)
        if weights is None or (isinstance(weights, str) and weights == "balanced"):
            w = np.ones(len(counts))
        elif isinstance(weights, str) and weights == "proportional":
            w = counts.copy()
        elif isinstance(weights, str):
            raise ValueError(f"weights must be 'balanced', 'proportional', a sequence or a dict, got {weights!r}")
        elif isinstance(weights, Mapping):
            w = np.zeros(len(counts))
            for name, value in weights.items():
                w[self.action_space.parse(name)] = float(value)
        else:
            w = np.asarray(weights, dtype=np.float64).reshape(-1)
            if w.shape != (len(counts),):
                raise ValueError(
                    f"weights need one value per action ({len(counts)}: {', '.join(self.action_space.names)}), "
                    f"got {w.shape[0]}"
                )
        if (w < 0).any() or not np.isfinite(w).all():
            raise ValueError("action weights must be finite and non-negative")
        if counts.sum() == 0:
            raise ValueError(
                f"no action has a pair among {self.num_rows} images: no two images differ in exactly one of "
                f"{list(self.attributes)}; use more images or fewer attributes"
            )
        w = np.where(counts > 0, w, 0.0)  # actions without pairs are never sampled
        if w.sum() <= 0:
            with_pairs = [n for n, c in zip(self.action_space.names, counts) if c > 0]
            raise ValueError(f"the given weights put no mass on an action with pairs; actions with pairs: {with_pairs}")
        return w / w.sum()

    def sample(self, n: int, generator, weights=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Draw ``n`` pairs: ``(source rows, action ids, target rows)``, three int64 numpy arrays.

        ``generator`` is a ``numpy.random.Generator``, a ``torch.Generator`` or an int seed; the
        result depends only on its state. ``weights`` sets how often each action is drawn:
        ``None``/``"balanced"`` (equal for every action that has pairs), ``"proportional"`` (to its
        pair count), a sequence with one weight per action id, or ``{action name: weight}``.
        Actions without pairs are never drawn. Within an action the pair is uniform over all of its
        (source, target) pairs.
        """
        n = int(n)
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        probs = self._action_weights(weights)
        u = _uniforms(generator, (n, 4))
        cum = np.cumsum(probs)
        cum[-1] = 1.0
        actions = np.searchsorted(cum, u[:, 0], side="right")
        actions = np.minimum(actions, len(probs) - 1)
        # Guard against float edge cases landing on a zero-probability action.
        zero = probs[actions] == 0
        if zero.any():
            valid = np.nonzero(probs > 0)[0]
            actions[zero] = valid[np.searchsorted(valid, actions[zero]).clip(max=len(valid) - 1)]
        src_rows = np.empty(n, dtype=np.int64)
        tgt_rows = np.empty(n, dtype=np.int64)
        for a in np.unique(actions):
            idx = np.nonzero(actions == a)[0]
            src, tgt, cumw = self._tables[a]
            j = np.searchsorted(cumw, u[idx, 1] * cumw[-1], side="right").clip(max=len(cumw) - 1)
            gs, gt = src[j], tgt[j]
            ps = np.minimum((u[idx, 2] * self._counts[gs]).astype(np.int64), self._counts[gs] - 1)
            pt = np.minimum((u[idx, 3] * self._counts[gt]).astype(np.int64), self._counts[gt] - 1)
            src_rows[idx] = self._rows[self._offsets[gs] + ps]
            tgt_rows[idx] = self._rows[self._offsets[gt] + pt]
        return src_rows, actions.astype(np.int64), tgt_rows
