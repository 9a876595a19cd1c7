"""Write a PNG of factor traversals for any dataset, real file or procedural twin.

    python -m datamodules.preview --data shapes3d --out preview.png [--data-root DIR] [--seed 0]
    python -m datamodules.preview --data shapes3d --twin-version 2 --sample out/sample.png

``--twin-version`` picks the renderer of the 3D Shapes twin (``"1"``, the default, to ``"4"``, the
released model's and the closest to the real frames, ``docs/twin_fidelity.md``); a sample's PNG
records its factors and, for a twin, that version.

dSprites / 3D Shapes: one row per factor, each row moves that factor across its values (up to
``--steps`` evenly spaced classes) from one validation state. CelebA: one row per chosen attribute,
``--steps // 2`` validation pairs side by side (source | target of the ``<attribute>+`` action).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw
from PIL.PngImagePlugin import PngInfo

from .datamodule import DATASETS, CelebADataModule, build_datamodule
from .shapes3d.scene import TWIN_VERSIONS
from .sources import TwinSource

LABEL_WIDTH = 110


def _to_uint8(images: torch.Tensor) -> np.ndarray:
    """(B, C, H, W) float [0, 1] -> (B, H, W, 3) uint8."""
    arr = (images.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    return np.repeat(arr, 3, axis=-1) if arr.shape[-1] == 1 else arr


def factor_traversals(dm, steps: int = 10, seed: int = 0) -> tuple[list[str], list[np.ndarray]]:
    """Row labels and rows of uint8 images ``(n, H, W, 3)``, one row per factor with a size > 1."""
    space = dm.space
    base = dm.sample_batch("val", size=1 + seed)["factors"][seed]
    labels, rows = [], []
    for i, factor in enumerate(space.factors):
        if factor.size == 1:
            continue
        classes = np.unique(np.linspace(0, factor.size - 1, min(steps, factor.size)).round().astype(int))
        states = base.repeat(len(classes), 1)
        states[:, i] = torch.as_tensor(classes)
        if isinstance(dm.source, TwinSource):
            images = dm.source.render(states)
        else:
            images = dm.source.fetch(space.ravel(states).numpy()).permute(0, 3, 1, 2).float() / 255
        labels.append(f"{factor.name} 0..{factor.size - 1}")
        rows.append(_to_uint8(images))
    return labels, rows


def attribute_pairs(dm: CelebADataModule, steps: int = 10) -> tuple[list[str], list[np.ndarray]]:
    """One row per chosen attribute: validation pairs (x | x') for its ``+`` action."""
    batch = dm.sample_batch("val", size=512)
    labels, rows = [], []
    for action in dm.actions:
        if action.direction < 0:
            continue
        hit = (batch["action"] == action.id).nonzero()[:, 0][: max(1, steps // 2)]
        if len(hit) == 0:
            continue
        pairs = torch.stack([batch["image"][hit], batch["image_next"][hit]], 1).flatten(0, 1)
        labels.append(action.name)
        rows.append(_to_uint8(pairs))
    return labels, rows


def grid_image(labels: list[str], rows: list[np.ndarray], scale: int = 2, title: str = "") -> Image.Image:
    h, w = rows[0].shape[1:3]
    cols = max(len(r) for r in rows)
    top = 16 if title else 0
    canvas = Image.new("RGB", (LABEL_WIDTH + cols * w * scale, top + len(rows) * h * scale), "white")
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.text((4, 2), title, fill="black")
    for r, (label, row) in enumerate(zip(labels, rows)):
        y = top + r * h * scale
        draw.text((4, y + h * scale // 2 - 6), label, fill="black")
        for c, img in enumerate(row):
            tile = Image.fromarray(img).resize((w * scale, h * scale), Image.NEAREST)
            canvas.paste(tile, (LABEL_WIDTH + c * w * scale, y))
    return canvas


# The PNG text chunk that records a sample's factors; causal_vqvae.images.read_factor_state reads it
# (so that `causal-vqvae edit --traverse` marks the steps past a factor's range).
FACTOR_STATE_KEY = "causal_vqvae:factors"


def factor_state_info(dm, classes: torch.Tensor) -> PngInfo:
    """A PNG text chunk recording the factors ``classes`` (F,) of one image of ``dm``'s space (and,
    for a twin, its renderer version ``twin_version``)."""
    factors = [{"name": f.name, "value": int(c), "size": f.size, "cyclic": f.cyclic}
               for f, c in zip(dm.space.factors, classes.tolist())]
    record = {"dataset": dm.config.dataset, "factors": factors}
    if dm.source is not None and dm.source.is_twin:
        record["twin_version"] = dm.config.twin_version
    info = PngInfo()
    info.add_text(FACTOR_STATE_KEY, json.dumps(record))
    return info


def save_png_atomic(image: Image.Image, out: Path, info: PngInfo | None = None) -> None:
    """Write ``out`` through a temporary file in the same folder, so it is never half-written
    (``info``: PNG text chunks to write with it)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".png", dir=out.parent)
    os.close(fd)
    try:
        image.save(tmp, format="PNG", pnginfo=info)
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def main(argv: list[str] | None = None, prog: str | None = None) -> Path:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", choices=sorted(DATASETS), default="shapes3d", help="dataset to preview")
    parser.add_argument("--data-root", default=None, help="folder or file of the real dataset; omit for the twin")
    parser.add_argument("--twin-version", choices=sorted(TWIN_VERSIONS), default="1",
                        help="renderer version of the 3D Shapes procedural twin: 1 (default), 2, 3 or 4 (each closer "
                             "to the real frames; 4 is the released model's twin, docs/twin_fidelity.md); not with "
                             "--data-root")
    parser.add_argument("--out", type=Path, default=None,
                        help="PNG path, or a folder to write preview_<data>.png in (default: out/)")
    parser.add_argument("--steps", type=int, default=10, help="images per row")
    parser.add_argument("--seed", type=int, default=0, help="which validation state to traverse from")
    parser.add_argument("--scale", type=int, default=2, help="pixel upscaling of each tile")
    parser.add_argument("--cache-root", default=None, help="where memmap caches and the CelebA twin live")
    parser.add_argument("--twin-size", type=int, default=2000, help="CelebA twin: faces to write if absent")
    parser.add_argument("--sample", type=Path, default=None,
                        help="also write one held-out image (64x64 PNG), e.g. as input for "
                             "causal-vqvae edit")
    parser.add_argument("--json", action="store_true", help="print what was written as JSON on stdout")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    dm = build_datamodule(args.data, data_root=args.data_root, cache_root=args.cache_root,
                          twin_size=args.twin_size, batch_size=64, num_workers=0, twin_version=args.twin_version)
    dm.prepare_data()
    dm.setup()
    if isinstance(dm, CelebADataModule):
        labels, rows = attribute_pairs(dm, args.steps)
    else:
        labels, rows = factor_traversals(dm, args.steps, args.seed)
    kind = "procedural twin" if dm.source.is_twin else "real file"
    title = f"{args.data}: {dm.description} ({kind}), seed {args.seed}"
    out = args.out if args.out is not None else Path("out")
    if out.is_dir() or not out.suffix:
        out = out / f"preview_{args.data}.png"
    for path in (out, args.sample):
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
    save_png_atomic(grid_image(labels, rows, args.scale, title), out)
    written = {"preview": str(out), "rows": len(rows), "data": args.data, "source": kind,
               "description": dm.description}
    if dm.source.is_twin:
        written["twin_version"] = args.twin_version
    if not args.json:
        print(f"wrote {out} ({len(rows)} rows) from the {kind}")
    if args.sample:
        batch = dm.sample_batch("test", size=args.seed + 1)
        image = _to_uint8(batch["image"][args.seed:])[0]
        info = None if isinstance(dm, CelebADataModule) else factor_state_info(dm, batch["factors"][args.seed])
        save_png_atomic(Image.fromarray(image[..., 0] if dm.channels == 1 else image), args.sample, info)
        written["sample"] = str(args.sample)
        if not args.json:
            print(f"wrote {args.sample} (a held-out test image)")
    if args.json:
        print(json.dumps(written, indent=2))
    return out


if __name__ == "__main__":
    main()
