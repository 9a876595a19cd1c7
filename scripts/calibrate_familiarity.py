"""Record a model's reconstruction errors on held-out images (``metadata.json``, key
``reconstruction_error``: what ``edit`` compares an input with to warn that it looks unlike the
training data), and report the errors of other kinds of image beside them.

    python scripts/calibrate_familiarity.py --model checkpoints/shapes3d_twin --data shapes3d --write \
        --report benchmarks/results/familiarity/shapes3d_twin.json

Training records this for every stage it saves; this script adds it to models saved before that (the
released ones). ``--report`` measures, with the same model: held-out twin images (of the model's 3D
Shapes twin version, and of version 1 for a model trained on another), the real frames of
``../shared/data`` (when present), CelebA-twin faces in colour and in gray, and uniform noise.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from causal_vqvae import load  # noqa: E402
from causal_vqvae.familiarity import FACTOR, METADATA_KEY, calibrate, reconstruction_errors, threshold  # noqa: E402
from causal_vqvae.files import write_json  # noqa: E402
from causal_vqvae.pretrained import METADATA_NAME, model_twin_version  # noqa: E402
from datamodules.datamodule import build_datamodule  # noqa: E402
from datamodules.shapes3d.fidelity import real_frames_64  # noqa: E402

SHARED = ROOT.parent / "shared" / "data"


def held_out(data: str, n: int, split: str = "val", twin_version: str = "1") -> tuple[torch.Tensor, str]:
    """``n`` held-out images of ``data`` (3D Shapes: its twin of renderer ``twin_version``) and their description."""
    dm = build_datamodule(data, mode="images", num_workers=0, val_length=n, test_length=n, twin_version=twin_version)
    dm.prepare_data()
    return dm.sample_batch(split, size=n)["image"], dm.description


def real_frames(data: str) -> torch.Tensor | None:
    """The shared real frames at the model's 64x64 (3D Shapes: the GIF's frames cut off and
    area-reduced, as ``bench --real-images`` reads them)."""
    path = SHARED / f"{data}_real_frames.npz"
    if not path.is_file():
        return None
    with np.load(path, allow_pickle=False) as archive:
        if data == "shapes3d":
            return (real_frames_64(archive["images"]) / 255).float()
        return torch.from_numpy(archive["imgs"]).float()[:, None]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="a model folder or a released name")
    parser.add_argument("--data", required=True, choices=["dsprites", "shapes3d", "celeba"])
    parser.add_argument("--images", type=int, default=1024, help="held-out images to calibrate on (default 1024)")
    parser.add_argument("--write", action="store_true", help="write the record into the model's metadata.json")
    parser.add_argument("--report", default=None, help="JSON: the errors of other kinds of image beside them")
    args = parser.parse_args(argv)

    from causal_vqvae.locate import resolve_model

    folder = resolve_model(args.model)
    model = load(folder, device="cpu")
    version = model_twin_version(model) or "1"  # 3D Shapes: the twin the model was trained on
    images, description = held_out(args.data, args.images, twin_version=version)
    record = calibrate(model, images, f"{description}, validation images")
    print(f"{folder}: held-out reconstruction error p50 {record['p50']:.2e}, p99 {record['p99']:.2e}, "
          f"max {record['max']:.2e}; unfamiliar above {record['threshold']:.2e}")
    if args.write:
        metadata = json.loads((folder / METADATA_NAME).read_text())
        write_json(folder / METADATA_NAME, {**metadata, METADATA_KEY: record}, sort_keys=True)
        print(f"wrote {METADATA_KEY} into {folder / METADATA_NAME}")
    # The report flags images as edit does: by the threshold the model carries, where it has one.
    carried = record["threshold"] if args.write else threshold(model)
    limit = record["threshold"] if carried is None else carried
    result = {"command": "python scripts/calibrate_familiarity.py " + " ".join(argv or sys.argv[1:]),
              "model": str(folder), "device": "cpu", "record": record, "threshold": limit,
              "threshold_from": "this calibration (not written)" if carried is None else "the model's metadata.json",
              "kinds": []}
    if args.report:
        gen = torch.Generator().manual_seed(0)
        test, _ = held_out(args.data, 256, split="test", twin_version=version)
        first = held_out(args.data, 256, split="test")[0] if args.data == "shapes3d" and version != "1" else None
        faces, _ = held_out("celeba", 64) if args.data != "celeba" else held_out("shapes3d", 64)
        gray = faces.mean(1, keepdim=True)
        if model.config.in_channels == 1:
            faces = gray
        else:
            gray = gray.expand(-1, 3, -1, -1)
        kinds = [("held-out twin images (test split)", test),
                 ("held-out twin images, version 1 renders", first),
                 ("real frames (shared GIF, frame cut)" if args.data == "shapes3d" else "real frames (shared)",
                  real_frames(args.data)),
                 ("CelebA-twin faces" if args.data != "celeba" else "3D Shapes twin renders", faces),
                 ("the same, gray", gray),
                 ("uniform noise", torch.rand(64, model.config.in_channels, 64, 64, generator=gen))]
        print(f"{'images':<40} {'n':>4} {'median error':>13} {'min error':>10} {'unfamiliar':>11}")
        for name, batch in kinds:
            if batch is None:
                continue
            errors = reconstruction_errors(model, batch)
            row = {"images": name, "n": len(errors), "median": float(errors.median()), "min": float(errors.min()),
                   "unfamiliar": float((errors > limit).float().mean())}
            result["kinds"].append(row)
            print(f"{name:<40} {row['n']:>4} {row['median']:>13.2e} {row['min']:>10.2e} {row['unfamiliar']:>10.1%}")
        write_json(Path(args.report), result)
        print(f"wrote {args.report} (unfamiliar: above {limit:.2e}, {FACTOR:g}x the held-out 99th percentile "
              f"of {result['threshold_from']})")
    return result


if __name__ == "__main__":
    main()
