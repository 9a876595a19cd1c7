"""PSNR between DeepMind's real 3D Shapes frames and the nearest render of each twin version.

For each of the 53 frames of DeepMind's 3D Shapes GIF (``shared/data/shapes3d_real_frames.npz``:
the frame cut off, the 223x223 picture area-downsampled to 64x64, :func:`real_frames_64`), find
the render nearest to it (least squared error) among **all 480,000 factor states**, for each twin
version, and report the PSNR (dB, [0, 255]). The search is exact (``fidelity.nearest_states``): every state is rendered once and
8x8 block-averaged, the block-averaged squared error is a lower bound on the full one (Jensen, per
block), and full renders are compared in increasing order of the bound until it passes the best.

The bound: the GIF's upscaling and palette limit what any renderer can reach. Each version's nearest
renders are sent through the same trip (:func:`gif_round_trip`: 64 -> 223x223 upscale, GIF frame,
one palette of <= 256 colours for all frames, cut, area-downsample) and compared with themselves.
Also reported: the PSNR between the real frames and the round-tripped nearest renders (both sides
degraded alike).

    OMP_NUM_THREADS=1 python benchmarks/shapes3d_twin_psnr.py [--versions 1 2 3 4] [--out-dir DIR]

Writes ``shapes3d_twin_psnr.json`` and ``shapes3d_twin_versions_vs_real.png`` (real | each version |
real minus the last version) under ``--out-dir`` (default ``benchmarks/results/shapes3d_twin_fidelity``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from datamodules.shapes3d import (
    IMAGE_SIZE,
    SHAPES3D,
    TWIN_VERSIONS,
    render_shapes3d,
    shapes3d_surface_weights,
)
from datamodules.shapes3d.fidelity import (
    gif_round_trip,
    nearest_states,
    psnr,
    real_frames_64,
)

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_FRAMES = ROOT.parent / "shared" / "data" / "shapes3d_real_frames.npz"
FIGURE_FRAMES = (0, 7, 14, 16, 20, 30, 40, 52)
BOUND_VARIANTS = (("bicubic", "shared"), ("bilinear", "shared"), ("nearest", "shared"), ("bicubic", "per_image"))


def stats(values: torch.Tensor) -> dict:
    v = values.double()
    return {"mean": round(float(v.mean()), 3), "median": round(float(v.median()), 3),
            "min": round(float(v.min()), 3), "max": round(float(v.max()), 3)}


def search(targets: torch.Tensor, version: str) -> tuple[dict, list[dict], torch.Tensor]:
    """Nearest state of every frame under a twin version: (summary, per frame, nearest renders)."""
    t0 = time.perf_counter()
    shapes3d_surface_weights(scene=TWIN_VERSIONS[version])
    t_table = time.perf_counter() - t0
    index, _ = nearest_states(targets, version)
    seconds = time.perf_counter() - t0
    renders = render_shapes3d(SHAPES3D.unravel(index), version=version)
    scores = psnr(renders * 255, targets * 255)
    per_frame = [{"frame": k, "psnr_db": round(float(scores[k]), 3), "state_index": int(index[k]),
                  "classes": dict(zip(SHAPES3D.names, SHAPES3D.unravel(index[k]).tolist())),
                  "mean_abs_error": round(float((renders[k] - targets[k]).abs().mean() * 255), 3)}
                 for k in range(len(index))]
    bound = {f"{resample}_{palette}_palette": stats(psnr(renders * 255, gif_round_trip(renders, resample, palette)))
             for resample, palette in BOUND_VARIANTS}
    # The same nearest renders sent through the GIF's trip first: the real frames' degradation on both sides.
    tripped = psnr(gif_round_trip(renders), targets * 255)
    summary = {"psnr_db": stats(scores), "mean_abs_error": round(float((renders - targets).abs().mean() * 255), 3),
               "psnr_db_render_round_tripped": stats(tripped), "gif_round_trip_bound_db": bound,
               "seconds": {"table": round(t_table, 2), "search": round(seconds, 2)}}
    return summary, per_frame, renders


def figure(targets: torch.Tensor, renders: dict[str, torch.Tensor], scores: dict[str, list[float]], path: Path) -> None:
    """One row per picked frame: real | the nearest render of each version | real minus the last version's
    (x2 around grey)."""
    zoom, gap, label = 3, 6, 14
    tile = IMAGE_SIZE * zoom
    versions = list(renders)
    new = renders[versions[-1]]
    columns = ["real (GIF, cut, 64x64)"] + [f"nearest twin v{v}" for v in versions] + [f"real - v{versions[-1]}, x2"]
    width = len(columns) * (tile + gap) + gap
    height = label + len(FIGURE_FRAMES) * (tile + gap + label) + gap
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for c, name in enumerate(columns):
        draw.text((gap + c * (tile + gap), 2), name, fill=(0, 0, 0))

    def paste(img: torch.Tensor, row: int, col: int) -> None:
        array = img.clamp(0, 255).round().byte().permute(1, 2, 0).numpy()
        canvas.paste(Image.fromarray(array).resize((tile, tile), Image.NEAREST),
                     (gap + col * (tile + gap), label + row * (tile + gap + label)))

    for row, k in enumerate(FIGURE_FRAMES):
        paste(targets[k] * 255, row, 0)
        for col, v in enumerate(versions, 1):
            paste(renders[v][k] * 255, row, col)
        paste(128 + 2 * 255 * (targets[k] - new[k]), row, len(versions) + 1)
        text = f"frame {k}: " + ", ".join(f"v{v} {scores[v][k]:.1f} dB" for v in versions)
        draw.text((gap, label + row * (tile + gap + label) + tile + 1), text, fill=(0, 0, 0))
    canvas.save(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=Path, default=DEFAULT_FRAMES)
    parser.add_argument("--versions", nargs="+", default=sorted(TWIN_VERSIONS), choices=sorted(TWIN_VERSIONS))
    parser.add_argument("--out-dir", type=Path, default=ROOT / "benchmarks" / "results" / "shapes3d_twin_fidelity")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default: %(default)s)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    with np.load(args.frames) as data:
        targets = (real_frames_64(data["images"]) / 255).float()
    report = {"frames": int(targets.shape[0]), "states_searched": SHAPES3D.num_states,
              "metric": "PSNR (dB, [0, 255]) between a real GIF frame (frame cut off: rows 2..224, columns "
                        "2..224; exact area-downsample 223 -> 64) and the exact nearest twin render (least "
                        "squared error over all 480,000 states), float renders",
              "bound": "PSNR between each nearest render and itself after the GIF round trip "
                       "(uint8, PIL upscale 64 -> 223, GIF frame, median-cut palette of <= 256 colours, cut, "
                       "area-downsample); keys name the upscale filter and whether one palette is shared by all frames",
              "command": " ".join(f"{k}={os.environ[k]}" for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS") if k in os.environ)
                         + " python " + " ".join(sys.argv),
              "torch_threads": torch.get_num_threads(), "versions": {}}
    per_frame, renders = {}, {}
    for version in args.versions:
        summary, per_frame[version], renders[version] = search(targets, version)
        report["versions"][version] = summary
        print(f"version {version}: {json.dumps(summary)}", flush=True)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "shapes3d_twin_psnr.json").write_text(
        json.dumps({"summary": report, "per_frame": per_frame}, indent=2) + "\n")
    figure(targets, renders, {v: [r["psnr_db"] for r in per_frame[v]] for v in args.versions},
           args.out_dir / "shapes3d_twin_versions_vs_real.png")


if __name__ == "__main__":
    main()
