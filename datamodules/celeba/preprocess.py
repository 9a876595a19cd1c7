"""CelebA: decoding and preprocessing of the images, shared by the folder and the parquet reader.

Both readers decode every image of the split once, preprocess it with :func:`preprocess_face`
(centre crop + box resize to 64 x 64) and store the result in a ``.npy`` memmap cache
(:func:`~datamodules.sources.build_memmap_cache`); labels are the 40 attribute bits as int64 0/1
in :data:`~datamodules.celeba.CELEBA_ATTRIBUTES` order. The cache keys of both readers hash the
sources' sizes and mtimes and :data:`PREPROCESS_VERSION` (:func:`_stat_key`, :func:`_short_hash`).
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

__all__ = ["IMAGE_SIZE", "preprocess_face"]

IMAGE_SIZE = 64
ALIGNED_SIZE = (178, 218)  # (width, height) of img_align_celeba
CROP_SIZE = 140  # side of the centred square cropped from a 178 x 218 image
PREPROCESS_VERSION = 1  # bump when preprocess_face changes: it is part of every cache key


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


def build_face_cache(cache_dir: Path, labels: np.ndarray, decode_rows: Callable[[ThreadPoolExecutor, int, int], list],
                     meta: dict, desc: str) -> None:
    """Write the memmap cache of a CelebA split: ``decode_rows(pool, start, stop)`` gives the 64x64
    RGB faces of rows ``start:stop`` (decoded on ``pool``), ``labels`` their 40 attribute bits.
    ``meta`` (the source) gets the attributes and the preprocessing added. The folder and the
    parquet readers build through here."""
    from ..sources import build_memmap_cache
    from .attributes import CELEBA_ATTRIBUTES

    with ThreadPoolExecutor(max_workers=_num_workers()) as pool:
        build_memmap_cache(
            cache_dir, num_rows=len(labels), image_shape=(IMAGE_SIZE, IMAGE_SIZE, 3),
            num_labels=len(CELEBA_ATTRIBUTES),
            read_chunk=lambda start, stop: (np.stack(decode_rows(pool, start, stop)), labels[start:stop]),
            meta={"dataset": "celeba", **meta, "attributes": list(CELEBA_ATTRIBUTES),
                  "preprocess": f"centre crop 140/178, BOX resize to {IMAGE_SIZE} (v{PREPROCESS_VERSION})"},
            chunk=1024, desc=desc)


def _stat_key(path: Path) -> str:
    st = path.stat()
    return f"{st.st_size}:{st.st_mtime_ns}"


def _short_hash(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()[:12]
