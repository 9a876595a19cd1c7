"""The CelebA twin on disk: :func:`write_celeba_twin` writes the exact torchvision folder layout::

    ROOT/celeba/img_align_celeba/000001.jpg ...        178 x 218 JPEGs (or ``image_size``)
    ROOT/celeba/list_attr_celeba.txt                    count, 40 names, "000001.jpg -1  1 ..."
    ROOT/celeba/list_eval_partition.txt                 first 80 % train, next 10 % valid, rest test
    ROOT/celeba/identity_CelebA.txt                     "000001.jpg 1" (every twin face is its own identity)
    ROOT/celeba/list_bbox_celeba.txt                    count + header, face box in image pixels
    ROOT/celeba/list_landmarks_align_celeba.txt         count + header, eyes / nose / mouth corners
    ROOT/celeba_twin.parquet                            ``image`` ({"bytes", "path"}) + attribute columns
    ROOT/celeba_twin.json                               how the twin was made (seed, sizes, version)

so that :func:`datamodules.celeba.read_celeba_folder` and :func:`~datamodules.celeba.read_celeba_parquet`
run on it unchanged.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from ..attributes import CELEBA_ATTRIBUTES
from .bits import _A, sample_attributes
from .face import render_face
from .identity import face_layout, twin_identity_seed

__all__ = ["TWIN_VERSION", "write_celeba_twin"]

TWIN_VERSION = 1


# ------------------------------------------------------------------------------------------------
# writing the folder
# ------------------------------------------------------------------------------------------------
def _landmarks(identity_seed: int, bits: np.ndarray, image_size) -> list[int]:
    lay = face_layout(identity_seed, image_size)
    ex, ey, my = lay["eye_dx"], lay["eye_y"], lay["mouth_y"]
    cx = lay["cx"]
    smile = 5.0 * image_size[1] / 218.0 if bits[_A["Smiling"]] else 0.0
    nose_y = (ey + my) / 2
    pts = [cx - ex, ey, cx + ex, ey, cx, nose_y, cx - lay["mouth_w"], my - smile, cx + lay["mouth_w"], my - smile]
    return [int(round(v)) for v in pts]


def _bbox(identity_seed: int, image_size) -> list[int]:
    lay = face_layout(identity_seed, image_size)
    x0, y0 = lay["face_left"], lay["face_top"]
    return [int(round(x0)), int(round(y0)), int(round(lay["face_right"] - x0)), int(round(lay["chin"] - y0))]


def write_celeba_twin(
    root: str | os.PathLike,
    num_images: int = 2000,
    seed: int = 0,
    image_size: tuple[int, int] = (178, 218),
    write_parquet: bool = True,
    overwrite: bool = False,
    jpeg_quality: int = 92,
) -> Path:
    """Write a procedural CelebA twin under ``root`` and return ``root`` (pass it to ``read_celeba_folder``).

    Writes ``root/celeba/`` in the exact torchvision layout (see the module docstring), plus
    ``root/celeba_twin.parquet`` (columns ``image`` = ``{"bytes": JPEG, "path": "000001.jpg"}`` as the
    ``datasets`` Image feature stores it, ``image_id``, ``celeb_id`` and the 40 attributes as
    bool; the same JPEG bytes as the folder) when ``write_parquet``, and ``root/celeba_twin.json``.
    Splits: the first 80 % of the images are train, the next 10 % valid, the rest test.

    Atomic: everything is written into a temporary folder under ``root`` and renamed into place at
    the end. An existing ``root/celeba`` raises ``FileExistsError`` unless ``overwrite``.
    ``image_size`` is (width, height).
    """
    num_images = int(num_images)
    if num_images < 1:
        raise ValueError(f"num_images must be >= 1, got {num_images}")
    if num_images > 999_999:
        raise ValueError("num_images must be below 1,000,000 (six-digit file names)")
    width, height = (int(v) for v in image_size)
    root = Path(root).expanduser()
    root.mkdir(parents=True, exist_ok=True)
    final = root / "celeba"
    parquet_path = root / "celeba_twin.parquet"
    if final.exists() and not overwrite:
        raise FileExistsError(f"{final} already exists; pass overwrite=True to replace it")
    if write_parquet:
        try:
            import pyarrow as pa  # noqa: PLC0415
            import pyarrow.parquet as pq  # noqa: PLC0415
        except ImportError as e:
            raise ImportError(
                "writing the parquet copy needs pyarrow (pip install pyarrow), or pass write_parquet=False"
            ) from e

    bits = sample_attributes(num_images, seed)
    names = [f"{i + 1:06d}.jpg" for i in range(num_images)]
    seeds = [twin_identity_seed(seed, i) for i in range(num_images)]
    n_train = num_images * 8 // 10
    n_valid = num_images // 10
    split = np.full(num_images, 2, dtype=np.int64)
    split[:n_train] = 0
    split[n_train:n_train + n_valid] = 1

    tmp = Path(tempfile.mkdtemp(prefix=".celeba_twin.tmp-", dir=root))
    try:
        base = tmp / "celeba"
        img_dir = base / "img_align_celeba"
        img_dir.mkdir(parents=True)
        jpegs: list[bytes] = []
        for i in range(num_images):
            img = render_face(bits[i], seeds[i], (width, height))
            buf = io.BytesIO()
            img.save(buf, format="JPEG", quality=jpeg_quality)
            data = buf.getvalue()
            (img_dir / names[i]).write_bytes(data)
            if write_parquet:
                jpegs.append(data)

        signed = np.where(bits > 0, 1, -1)
        lines = [str(num_images), " ".join(CELEBA_ATTRIBUTES) + " "]
        for name, row in zip(names, signed):
            lines.append(name + "".join(f" {v:2d}" for v in row))
        (base / "list_attr_celeba.txt").write_text("\n".join(lines) + "\n")
        (base / "list_eval_partition.txt").write_text("".join(f"{n} {s}\n" for n, s in zip(names, split)))
        (base / "identity_CelebA.txt").write_text("".join(f"{n} {i + 1}\n" for i, n in enumerate(names)))
        bbox_lines = [str(num_images), "image_id x_1 y_1 width height"]
        for name, s in zip(names, seeds):
            bbox_lines.append(f"{name:<10s}" + "".join(f" {v:5d}" for v in _bbox(s, (width, height))))
        (base / "list_bbox_celeba.txt").write_text("\n".join(bbox_lines) + "\n")
        lm_lines = [str(num_images),
                    "lefteye_x lefteye_y righteye_x righteye_y nose_x nose_y leftmouth_x leftmouth_y "
                    "rightmouth_x rightmouth_y"]
        for name, s, row in zip(names, seeds, bits):
            lm_lines.append(f"{name:<10s}" + "".join(f" {v:5d}" for v in _landmarks(s, row, (width, height))))
        (base / "list_landmarks_align_celeba.txt").write_text("\n".join(lm_lines) + "\n")

        meta = {
            "what": "procedural CelebA twin (not real CelebA images)",
            "twin_version": TWIN_VERSION,
            "num_images": num_images,
            "seed": int(seed),
            "image_size": [width, height],
            "splits": {"train": n_train, "valid": n_valid, "test": num_images - n_train - n_valid},
            "identity_seed": "datamodules.celeba.twin.twin_identity_seed(seed, index)",
        }
        (tmp / "celeba_twin.json").write_text(json.dumps(meta, indent=2))

        if write_parquet:
            features = {"image": {"_type": "Image"},
                        "image_id": {"dtype": "string", "_type": "Value"},
                        "celeb_id": {"dtype": "int64", "_type": "Value"}}
            features.update({a: {"dtype": "bool", "_type": "Value"} for a in CELEBA_ATTRIBUTES})
            arrays = {
                "image": pa.StructArray.from_arrays(
                    [pa.array(jpegs, pa.binary()), pa.array(names, pa.string())], names=["bytes", "path"]
                ),
                "image_id": pa.array(names, pa.string()),
                "celeb_id": pa.array(np.arange(1, num_images + 1, dtype=np.int64)),
            }
            arrays.update({a: pa.array(bits[:, j].astype(bool)) for j, a in enumerate(CELEBA_ATTRIBUTES)})
            table = pa.table(arrays).replace_schema_metadata(
                {"huggingface": json.dumps({"info": {"features": features}})}
            )
            pq.write_table(table, tmp / "celeba_twin.parquet", row_group_size=1000)

        # Move into place: the folder first, then the side files.
        if final.exists():
            shutil.rmtree(final)
        os.rename(base, final)
        os.replace(tmp / "celeba_twin.json", root / "celeba_twin.json")
        if write_parquet:
            os.replace(tmp / "celeba_twin.parquet", parquet_path)
        elif overwrite and parquet_path.exists():
            parquet_path.unlink()  # a stale copy would no longer match the folder
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return root
