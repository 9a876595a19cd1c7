"""CelebA: the reader of the torchvision folder layout.

:func:`read_celeba_folder` reads the torchvision folder layout::

    ROOT/celeba/img_align_celeba/000001.jpg ...   (178 x 218 aligned JPEGs)
    ROOT/celeba/list_attr_celeba.txt               count line, 40 names, rows "000001.jpg -1  1 ..."
    ROOT/celeba/list_eval_partition.txt            "000001.jpg 0" (0 train, 1 valid, 2 test)

with its own parser (:mod:`.files`): torchvision's ``CelebA`` checks md5 sums, so it rejects any
fixture or twin. Every image of the split is decoded once into a memmap cache (:mod:`.preprocess`).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from ..sources import (
    ArraySource,
    cache_damage,
    cached_arrays,
    default_cache_root,
    open_memmap_cache,
)
from .attributes import CELEBA_ATTRIBUTES
from .files import (
    ATTR_FILE,
    CELEBA_SPLITS,
    IMAGE_DIR,
    PARTITION_FILE,
    parse_attr_file,
    parse_partition_file,
)
from .preprocess import (
    PREPROCESS_VERSION,
    _decode_file,
    _short_hash,
    _stat_key,
    build_face_cache,
)

log = logging.getLogger(__name__)

__all__ = ["read_celeba_folder"]


# ------------------------------------------------------------------------------------------------
# folder reader
# ------------------------------------------------------------------------------------------------
def _check_split(split: str) -> None:
    if split not in CELEBA_SPLITS:
        raise ValueError(f"unknown CelebA split {split!r}; choose one of {', '.join(CELEBA_SPLITS)}")


_DOWNLOAD_HINT = (
    "Get the 'Align&Cropped Images' (img_align_celeba.zip) and the annotation files from the CelebA "
    "site and unpack them into that folder (torchvision layout), or write an offline procedural twin "
    "with datamodules.celeba.twin.write_celeba_twin(root)."
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
    if cache_damage(cache_dir) is None:
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

    def build() -> None:
        build_face_cache(cache_dir, labels, lambda pool, start, stop: list(pool.map(_decode_file, paths[start:stop])),
                         {"source": "folder", "root": str(root.resolve()), "split": split, "filenames": split_files},
                         f"CelebA {split}: decoding")

    images, labels_mm, _ = cached_arrays(cache_dir, build)
    return ArraySource(images, labels_mm, description=description, space=None)
