"""How close is the 3D Shapes procedural twin to the real dataset?

(Mean absolute error of twin version 1 on whole GIF frames, as quoted in ``docs/datasets.md``. The PSNR
of every twin version after the GIF's frame is cut off, with the GIF's own bound, is
``benchmarks/shapes3d_twin_psnr.py``; see ``docs/twin_fidelity.md``.)

For each of the 53 real frames of DeepMind's 3D Shapes GIF (``shared/data/shapes3d_real_frames.npz``,
box-resized to 64x64), find the twin render nearest to it among **all 480,000 factor states**, by
mean absolute pixel error in 0..255 units, and report the errors.

The search is exact but cheap, using two facts:

* the twin renders thousands of images a second, so all 480,000 states are rendered once, in
  chunks, and average-pooled to 8x8;
* the mean absolute error between 8x8 block averages is a lower bound on the full-resolution error
  (``|sum (x - y)| <= sum |x - y|`` in every block).

So the pooled bound is computed for every (frame, state) pair, and full renders are compared in
increasing order of the bound until the bound exceeds the best error found: the result is the exact
nearest state, not an approximation.

The same search is run under ``DATASETS_MD_SCENE`` (the first recipe of ``docs/datasets.md``, before
the scene was fitted) for comparison; ``--skip-datasets-md`` leaves it out.

    python benchmarks/shapes3d_twin_fidelity.py [--frames PATH] [--out-dir benchmarks/results/shapes3d_twin_fidelity]

Writes ``shapes3d_twin_fidelity.json`` (per-frame best error and state of the twin; mean / median /
max, also without the GIF's 1-pixel border) and ``shapes3d_twin_vs_real.png`` (real frames above
their nearest renders). About a minute per scene on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from datamodules.shapes3d import (
    DATASETS_MD_SCENE,
    IMAGE_SIZE,
    SCENE,
    SHAPES3D,
    Shapes3DScene,
    render_shapes3d,
    shapes3d_surface_weights,
)

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_FRAMES = ROOT.parent / "shared" / "data" / "shapes3d_real_frames.npz"
POOL = 8  # block size of the lower bound (64x64 -> 8x8)
CHUNK = 2048  # states rendered at a time for the bounds
BATCH = 2048  # full renders compared at a time in the refinement
FIGURE_FRAMES = (0, 7, 14, 15, 16, 24, 30, 38, 47, 52)


def load_frames(path: Path) -> np.ndarray:
    """Real frames box-resized to ``(N, 64, 64, 3)`` uint8."""
    with np.load(path) as data:
        frames = data["images"]
    return np.stack([np.asarray(Image.fromarray(f).resize((IMAGE_SIZE, IMAGE_SIZE), Image.BOX)) for f in frames])


def lower_bounds(targets: torch.Tensor, scene: Shapes3DScene) -> torch.Tensor:
    """Pooled mean absolute error ``(N, 480000)`` (0..1 units) of every frame against every state."""
    pooled_t = F.avg_pool2d(targets, POOL).flatten(1)  # (N, 3P)
    bounds = torch.empty(targets.shape[0], SHAPES3D.num_states)
    for start in range(0, SHAPES3D.num_states, CHUNK):
        index = torch.arange(start, min(start + CHUNK, SHAPES3D.num_states))
        pooled = F.avg_pool2d(render_shapes3d(SHAPES3D.unravel(index), scene), POOL).flatten(1)
        bounds[:, index] = torch.cdist(pooled_t, pooled, p=1) / pooled_t.shape[1]
    return bounds


def nearest(target: torch.Tensor, bound: torch.Tensor, scene: Shapes3DScene) -> tuple[float, int, int]:
    """Exact nearest state to one frame: ``(error 0..1, state index, full renders compared)``."""
    order = torch.argsort(bound)
    best_err, best_idx, compared = float("inf"), -1, 0
    for start in range(0, order.numel(), BATCH):
        idx = order[start:start + BATCH]
        if float(bound[idx[0]]) >= best_err:
            break
        err = (render_shapes3d(SHAPES3D.unravel(idx), scene) - target).abs().mean(dim=(1, 2, 3))
        compared += idx.numel()
        i = int(err.argmin())
        if float(err[i]) < best_err:
            best_err, best_idx = float(err[i]), int(idx[i])
    return best_err, best_idx, compared


def figure(frames: np.ndarray, renders: np.ndarray, errors: list[float], picks: tuple[int, ...], path: Path) -> None:
    """Real frames (top) above their nearest renders (bottom), 3x upscaled, errors underneath."""
    zoom, gap, label = 3, 6, 14
    tile = IMAGE_SIZE * zoom
    width = len(picks) * (tile + gap) + gap
    height = 2 * tile + 3 * gap + 2 * label
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for col, k in enumerate(picks):
        x = gap + col * (tile + gap)
        for row, img in enumerate((frames[k], renders[k])):
            canvas.paste(Image.fromarray(img).resize((tile, tile), Image.NEAREST), (x, gap + row * (tile + gap)))
        draw.text((x, 2 * tile + 2 * gap), f"frame {k}: {errors[k]:.1f}", fill=(0, 0, 0))
    draw.text((gap, 2 * tile + 2 * gap + label),
              "top: real frame box-resized to 64x64; bottom: nearest twin render over all 480,000 states; "
              "number: mean absolute error (0..255)", fill=(0, 0, 0))
    canvas.save(path)


def search(targets: torch.Tensor, scene: Shapes3DScene) -> tuple[dict, list[dict]]:
    """Nearest state of every frame under ``scene``: ``(summary, per-frame results)``."""
    t0 = time.perf_counter()
    shapes3d_surface_weights(scene=scene)
    t_table = time.perf_counter() - t0
    bounds = lower_bounds(targets, scene)
    t_bounds = time.perf_counter() - t0 - t_table
    results, compared_total = [], 0
    for k in range(targets.shape[0]):
        err, idx, compared = nearest(targets[k], bounds[k], scene)
        compared_total += compared
        classes = SHAPES3D.unravel(torch.tensor(idx))
        results.append({
            "frame": k,
            "error": round(err * 255, 3),
            "state_index": idx,
            "classes": dict(zip(SHAPES3D.names, (int(c) for c in classes))),
            "values": dict(zip(SHAPES3D.names, (round(float(v), 4) for v in SHAPES3D.values(classes)))),
            "renders_compared": compared,
        })
    errors = [r["error"] for r in results]
    # The GIF's frames carry a light 1-pixel border (left and right columns, bottom row) that no
    # render has; the same nearest states scored without it show how much of the error it is.
    best = render_shapes3d(SHAPES3D.unravel(torch.tensor([r["state_index"] for r in results])), scene)
    inner = ((best - targets).abs()[:, :, :-1, 1:-1].mean(dim=(1, 2, 3)) * 255).tolist()
    summary = {
        "mean": round(float(np.mean(errors)), 3),
        "median": round(float(np.median(errors)), 3),
        "max": round(float(np.max(errors)), 3),
        "min": round(float(np.min(errors)), 3),
        "without_gif_border": {"mean": round(float(np.mean(inner)), 3), "median": round(float(np.median(inner)), 3),
                               "max": round(float(np.max(inner)), 3)},
        "full_renders_compared": compared_total,
        "seconds": {"table": round(t_table, 2), "bounds": round(t_bounds, 2),
                    "total": round(time.perf_counter() - t0, 2)},
    }
    return summary, results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=Path, default=DEFAULT_FRAMES)
    parser.add_argument("--out-dir", type=Path, default=ROOT / "benchmarks" / "results" / "shapes3d_twin_fidelity")
    parser.add_argument("--skip-datasets-md", action="store_true",
                        help="do not also search under the first recipe of datasets.md (for comparison)")
    args = parser.parse_args()

    frames = load_frames(args.frames)
    targets = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255
    summary, results = search(targets, SCENE)
    report = {
        "frames": len(frames),
        "states_searched": SHAPES3D.num_states,
        "metric": "mean absolute pixel error in 0..255 between a real frame box-resized to 64x64 and the "
                  "nearest twin render (float); exact nearest over all states",
        "torch_threads": torch.get_num_threads(),
        "twin": summary,
    }
    if not args.skip_datasets_md:
        report["datasets_md_scene"], _ = search(targets, DATASETS_MD_SCENE)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "shapes3d_twin_fidelity.json").write_text(
        json.dumps({"summary": report, "per_frame": results}, indent=2) + "\n")

    best = SHAPES3D.unravel(torch.tensor([r["state_index"] for r in results]))
    renders = (render_shapes3d(best) * 255).round().byte().permute(0, 2, 3, 1).numpy()
    figure(frames, renders, [r["error"] for r in results], FIGURE_FRAMES, args.out_dir / "shapes3d_twin_vs_real.png")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
