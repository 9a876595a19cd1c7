"""Which differences between real 3D Shapes images and the twin cost a model its edits?

The released 3D Shapes model edits real frames worse than their twin renders (84.6% against 95.3%
exact, ``docs/twin_fidelity.md``). A real frame differs from its twin render in two ways: the
renderer (geometry, shading, edges) and the GIF it was published as (upscale, 256-colour palette,
downsample). This study sends held-out twin renders through one candidate difference at a time and
measures what each costs the model, with the same evaluation as ``bench --real-images``
(:func:`causal_vqvae.eval.real_images.evaluate_real_images`): the twin distance, the latent codes
that change, reconstruction and single-edit exactness against the clean render. A training
augmentation is worth having for the differences that cost as much as the real frames do.

    OMP_NUM_THREADS=2 python experiments/real_image_gap/real_image_gap.py \\
        [--model checkpoints/shapes3d_twin] [--states 150] [--seed 0] [--frames ../shared/data/shapes3d_real_frames.npz]

Writes ``experiments/real_image_gap/results/real_image_gap.json`` and prints a table.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from causal_vqvae import load  # noqa: E402
from causal_vqvae.eval.real_images import (  # noqa: E402
    RealImages,
    evaluate_real_images,
    load_real_images,
)
from datamodules.augment import blur, gif_border, resample  # noqa: E402
from datamodules.pairs import StateSamples  # noqa: E402
from datamodules.shapes3d import SHAPES3D, render_shapes3d  # noqa: E402
from datamodules.shapes3d.fidelity import gif_round_trip  # noqa: E402
from datamodules.sources import default_cache_root  # noqa: E402


def _uint8(x: torch.Tensor) -> np.ndarray:
    return (x.clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).numpy()


def _from_uint8(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a)).permute(0, 3, 1, 2).float() / 255


def jpeg(x: torch.Tensor, quality: int) -> torch.Tensor:
    out = []
    for image in _uint8(x):
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
        out.append(np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")))
    return _from_uint8(np.stack(out))


def perturbations(states: torch.Tensor, generator: torch.Generator) -> dict[str, torch.Tensor]:
    clean = render_shapes3d(states)
    n = len(clean)
    gain = 1 + 0.08 * (2 * torch.rand(n, 3, 1, 1, generator=generator) - 1)  # +-8% per channel
    return {
        "none (the clean render)": clean,
        "renderer version 2 of the same state": render_shapes3d(states, version="2"),
        "renderer version 3 of the same state": render_shapes3d(states, version="3"),
        "renderer version 4 of the same state": render_shapes3d(states, version="4"),
        "GIF round trip (bicubic upscale, shared palette)": (gif_round_trip(clean) / 255).float(),
        "version 2, then the GIF round trip": (gif_round_trip(render_shapes3d(states, version="2")) / 255).float(),
        "Gaussian blur, sigma 0.7 px": blur(clean, 0.7).clamp(0, 1),
        "resampled through 40x40": resample(clean, 40).clamp(0, 1),
        "colour gain +-8% per channel": (clean * gain).clamp(0, 1),
        "brightness +0.05": (clean + 0.05).clamp(0, 1),
        "JPEG quality 75": jpeg(clean, 75),
        "the GIF's frame left on (1-pixel border)": gif_border(clean),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="checkpoints/shapes3d_twin")
    parser.add_argument("--states", type=int, default=150, help="held-out test states")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--frames", default=str(ROOT.parent / "shared" / "data" / "shapes3d_real_frames.npz"))
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "real_image_gap.json")
    args = parser.parse_args()

    model = load(args.model, device="cpu").eval()
    states = StateSamples(SHAPES3D, "test", length=args.states, seed=args.seed).__getitems__(
        list(range(args.states)))["factors"]
    rows = {}
    if Path(args.frames).is_file():
        real = load_real_images(args.frames, cache_root=default_cache_root())
        rows["DeepMind's real frames (53, nearest states)"] = evaluate_real_images(model, real)
    generator = torch.Generator().manual_seed(args.seed)
    for name, images in perturbations(states, generator).items():
        start = time.perf_counter()
        rows[name] = evaluate_real_images(model, RealImages(images, states, name, "label"))
        rows[name]["seconds"] = round(time.perf_counter() - start, 1)
        print(f"{name}: {rows[name]['seconds']} s", flush=True)

    head = f"{'images':<50} {'PSNR to twin':>12} {'codes same':>10} {'recon dB':>9} {'exact %':>8} {'unch. %':>8}"
    lines = [head, "-" * len(head)]
    for name, r in rows.items():
        e = r["edits"]["from_real"]
        lines.append(f"{name:<50} {r['twin_distance_db']['mean']:>12.1f} {100 * r['code_agreement']:>10.1f} "
                     f"{r['reconstruction_db']['real']['mean']:>9.1f} {100 * e['exact']['rate']:>8.1f} "
                     f"{100 * e['unchanged']['rate']:>8.1f}")
    print("\n".join(lines))
    summary = {name: {"twin_distance_db": r["twin_distance_db"]["mean"], "code_agreement": r["code_agreement"],
                      "reconstruction_db": r["reconstruction_db"]["real"]["mean"],
                      "reconstruction_db_clean": r["reconstruction_db"]["twin"]["mean"],
                      "exact": r["edits"]["from_real"]["exact"], "unchanged": r["edits"]["from_real"]["unchanged"],
                      "exact_from_clean": r["edits"]["from_twin"]["exact"]["rate"],
                      "per_factor_exact": {f: v["exact"]["rate"]
                                           for f, v in r["edits"]["from_real"]["per_acted_factor"].items()}}
               for name, r in rows.items()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "command": "OMP_NUM_THREADS=2 python " + " ".join(sys.argv), "model": args.model, "states": args.states,
        "seed": args.seed, "data": "3D Shapes procedural twin version 1, held-out test states; real frames: "
        "shared/data/shapes3d_real_frames.npz", "device": "cpu", "torch": torch.__version__,
        "summary": summary}, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
