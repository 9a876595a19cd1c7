"""How far is a twin version's render from the best any renderer of its kind could do?

A twin render is linear in the four surface colours (floor, wall, object, sky): ``image =
clamp(sum_s weight[s] * colour[s])``. Frames 24-52 of DeepMind's GIF show one geometry (the largest
capsule at +30 degrees) under 29 colourings, so each pixel's four weights can be solved for by least
squares over 87 colour values (channels the real frame clips, >= 250, left out). This prints how well
such per-pixel maps reproduce the frames (in-sample, and each frame left out of its own fit), how far
a version's maps are from them per surface, and how well a polynomial in the floor's world position
fits the clean floor pixels of all 53 frames (held-out splits), against the version's floor light.

    python experiments/twin_v3/surface_maps.py [--version 2]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from datamodules.shapes3d import SHAPES3D, TWIN_VERSIONS, raycast, shapes3d_surface_colours, shapes3d_surface_weights
from datamodules.shapes3d.fidelity import psnr, real_frames_64

ROOT = Path(__file__).resolve().parents[2]
FRAMES = ROOT.parent / "shared" / "data" / "shapes3d_real_frames.npz"
STATES = ROOT / "benchmarks" / "results" / "shapes3d_twin_fidelity" / "shapes3d_twin_psnr.json"
ONE_GEOMETRY = list(range(24, 53))


def solve_maps(colours: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
    """Per-pixel surface weights ``(4, P)`` from frames ``(F, 3, P)`` in [0, 1] of one geometry."""
    a = colours.permute(0, 2, 1).reshape(-1, 4)  # (F * 3, 4)
    y = frames.reshape(-1, frames.shape[-1])
    m = (y < 250 / 255).double()
    ata = torch.einsum("op,os,ot->pst", m, a, a) + 1e-6 * torch.eye(4, dtype=torch.float64)
    return torch.linalg.solve(ata, torch.einsum("op,os,op->ps", m, a, y)).T


def render(colours: torch.Tensor, maps: torch.Tensor) -> torch.Tensor:
    return (colours.permute(0, 2, 1) @ maps).clamp(0, 1) * 255


def floor_study(scene, frames, states, colours) -> None:
    origins, dirs = raycast._camera_rays(scene)
    ss, n = scene.supersample, dirs.shape[1]
    room, floor_xy, floor_mask = raycast._room(scene, origins, dirs)
    room_floor = F.avg_pool2d(room.view(15, 4, n, n)[:, :1], ss)[:, 0]
    floor_xy, floor_mask = floor_xy.view(15, n, n, 2), floor_mask.view(15, n, n).double()
    table = shapes3d_surface_weights("cpu", scene)

    def system(chosen, degree):
        rows, values, model = [], [], []
        for f in chosen:
            scale, shape, o = (int(v) for v in states[f, 3:])
            w = table[(scale * 4 + shape) * 15 + o].double()
            cover = F.avg_pool2d(floor_mask[o][None, None], ss)[0, 0]
            clean = (cover == 1) & ((w[0] - room_floor[o]).abs() < 1e-6) & (w[2] == 0)  # no shadow, no object
            clean = clean & clean.roll(1, 0) & clean.roll(-1, 0) & clean.roll(1, 1) & clean.roll(-1, 1)
            x, y = floor_xy[o].unbind(-1)
            phi = torch.stack([x**i * y**j for i in range(degree + 1) for j in range(degree + 1 - i)], -1)
            phi = F.avg_pool2d((phi * floor_mask[o][..., None]).permute(2, 0, 1)[None], ss)[0][:, clean].T
            for c in range(3):
                real = frames[f, c].reshape(64, 64)[clean]
                keep = real < 250 / 255
                rows.append(colours[f, 0, c] * phi[keep])
                values.append(real[keep])
                model.append(colours[f, 0, c] * w[0][clean][keep])
        return torch.cat(rows), torch.cat(values), torch.cat(model)

    splits = {"all 53 (in-sample)": (range(53), range(53)), "fit 0-23, test 24-52": (range(24), range(24, 53)),
              "fit 24-52, test 0-23": (range(24, 53), range(24)),
              "fit even, test odd": (range(0, 53, 2), range(1, 53, 2))}
    for degree in (2, 3, 4):
        for name, (fit, test) in splits.items():
            x, y, _ = system(list(fit), degree)
            solution = torch.linalg.lstsq(x, y[:, None]).solution[:, 0]
            x, y, model = system(list(test), degree)
            rmse = float((x @ solution - y).pow(2).mean().sqrt())
            print(f"floor, polynomial of degree {degree}, {name}: RMSE {rmse:.4f}"
                  f" (the version's floor light {float((model - y).pow(2).mean().sqrt()):.4f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--version", default="2", choices=sorted(TWIN_VERSIONS))
    args = parser.parse_args()
    with np.load(FRAMES) as data:
        frames = (real_frames_64(data["images"]).double() / 255).reshape(53, 3, -1)
    per_frame = json.loads(STATES.read_text())["per_frame"][args.version]
    states = SHAPES3D.unravel(torch.tensor([r["state_index"] for r in per_frame]))
    colours = shapes3d_surface_colours(states).double()
    c, y = colours[ONE_GEOMETRY], frames[ONE_GEOMETRY]
    maps = solve_maps(c, y)
    real = y.reshape(-1, 3, 64, 64) * 255
    print(f"per-pixel maps, frames 24-52: {float(psnr(render(c, maps).reshape(-1, 3, 64, 64), real).mean()):.2f} dB")
    left_out = [float(psnr(render(c[k:k + 1], solve_maps(c[[i for i in range(29) if i != k]],
                                                         y[[i for i in range(29) if i != k]])).reshape(1, 3, 64, 64),
                           real[k:k + 1])) for k in range(29)]
    print(f"each frame left out of its own fit: {np.mean(left_out):.2f} dB")
    scene = TWIN_VERSIONS[args.version]
    scale, shape, o = (int(v) for v in states[24, 3:])
    mine = shapes3d_surface_weights("cpu", scene)[(scale * 4 + shape) * 15 + o].double().reshape(4, -1)
    score = float(psnr(render(c, mine).reshape(-1, 3, 64, 64), real).mean())
    print(f"version {args.version} at those states: {score:.2f} dB")
    for s, name in enumerate(("floor", "wall", "object", "sky")):
        pure = (mine[s] > 0.99 * mine.clamp_min(0).sum(0)) & (mine[s] > 0.05)
        print(f"{name}: pixels where the version draws it alone {int(pure.sum())}, RMSE of its weight against the "
              f"map {float((mine[s] - maps[s])[pure].pow(2).mean().sqrt()):.4f} (the map's spread there "
              f"{float(maps[s][pure].std()):.4f})")
    floor_study(scene, frames, states, colours)


if __name__ == "__main__":
    main()
