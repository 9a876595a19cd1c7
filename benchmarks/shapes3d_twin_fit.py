"""Polish a 3D Shapes twin scene on DeepMind's real frames by coordinate search.

The last step of how twin version 2 was fitted (``docs/twin_fidelity.md``). The frames' states are
held fixed (their exact nearest states, from ``shapes3d_twin_psnr.json``); each scene number in turn
is moved by its step, up or down, for as long as the mean PSNR of the 53 frames rises. The render is
passed through a linear model of the GIF's trip (PIL bicubic upscale 64 -> 223, exact area
downsample) before it is compared, so that the fit does not chase the GIF's blur. Each evaluation
ray-casts the whole table (a few seconds), so a pass takes a while (about 15 minutes on one core).

    OMP_NUM_THREADS=1 python benchmarks/shapes3d_twin_fit.py [--version 2] [--passes 3]

Prints the best scene after each pass, as a ``Shapes3DScene(...)`` to paste into ``scene.py``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from datamodules.shapes3d import (
    SHAPES3D,
    TWIN_VERSIONS,
    Shapes3DScene,
    shapes3d_surface_colours,
)
from datamodules.shapes3d.fidelity import GIF_CONTENT, area_matrix, psnr, real_frames_64
from datamodules.shapes3d.raycast import (
    _build_weight_table,  # uncached: one table per candidate scene
)

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_FRAMES = ROOT.parent / "shared" / "data" / "shapes3d_real_frames.npz"
DEFAULT_STATES = ROOT / "benchmarks" / "results" / "shapes3d_twin_fidelity" / "shapes3d_twin_psnr.json"
# Scene numbers searched, with their steps (one per component of a tuple).
STEPS = {
    "camera_radius": .01, "camera_height": .005, "camera_target_z": .005, "field_of_view_deg": .1,
    "object_xy": (.005, .005), "wall_height": .004, "cube_side": .004, "cylinder_radius": .004,
    "cylinder_height": .005, "sphere_radius": .004, "capsule_radius": .004, "capsule_height": .005,
    "object_ambient": .02, "object_diffuse": .02, "object_light": (.1, .1, .1), "back_wall_gain": .02,
    "left_wall_gain": .02, "right_wall_gain": .02, "wall_light_xyz": (.1, .1, .1), "wall_light_exponent": .1,
    "wall_light_falloff": .05, "floor_light_xy": (.05, .05), "floor_light_height": .05,
    "floor_light_exponent": .1, "floor_peak": .03, "floor_falloff": .1, "shadow_light": (.05, .05, .05),
    "shadow_spread": .01, "shadow_gain": .02,
}


def gif_blur_matrix() -> torch.Tensor:
    """``(64, 64)`` linear model of the GIF's trip along one axis: PIL bicubic 64 -> 223, area 223 -> 64."""
    eye = np.eye(64, dtype=np.float32)
    up = torch.stack([torch.from_numpy(np.array(Image.fromarray(eye[i][None]).resize((GIF_CONTENT, 1), Image.BICUBIC)))[0]
                      for i in range(64)], 1).double()
    return (area_matrix(GIF_CONTENT, 64) @ up).float()


class Objective:
    """Mean PSNR of the frames against their states rendered under a candidate scene."""

    def __init__(self, targets: torch.Tensor, states: torch.Tensor) -> None:
        self.targets, self.blur = targets, gif_blur_matrix()
        self.combo = (states[:, 3] * 4 + states[:, 4]) * 15 + states[:, 5]
        self.colours = shapes3d_surface_colours(states).transpose(1, 2)  # (N, 3, 4)

    def __call__(self, scene: Shapes3DScene) -> float:
        weights = _build_weight_table(scene).flatten(2)[self.combo]  # (N, 4, 4096)
        images = (torch.bmm(self.colours, weights).clamp(0, 1) * 255).view(-1, 3, 64, 64)
        return float(psnr(self.blur @ images @ self.blur.T, self.targets).mean())


def moved(scene: Shapes3DScene, name: str, part: int, delta: float) -> Shapes3DScene:
    value = getattr(scene, name)
    if isinstance(value, tuple):
        value = tuple(round(v + delta, 5) if i == part else v for i, v in enumerate(value))
    else:
        value = round(value + delta, 5)
    return dataclasses.replace(scene, **{name: value})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--version", default="2", choices=sorted(TWIN_VERSIONS), help="scene to start from")
    parser.add_argument("--passes", type=int, default=3)
    parser.add_argument("--frames", type=Path, default=DEFAULT_FRAMES)
    parser.add_argument("--states", type=Path, default=DEFAULT_STATES, help="JSON of shapes3d_twin_psnr.py")
    args = parser.parse_args()
    torch.set_num_threads(1)

    with np.load(args.frames) as data:
        targets = real_frames_64(data["images"]).float()
    per_frame = json.loads(args.states.read_text())["per_frame"][args.version]
    objective = Objective(targets, SHAPES3D.unravel(torch.tensor([r["state_index"] for r in per_frame])))
    scene = TWIN_VERSIONS[args.version]
    if scene.wall_light_xyz is None:  # give the wall light a place to start from
        scene = dataclasses.replace(scene, wall_light_xyz=(-0.44, 0.01, 1.52))
    best = objective(scene)
    print(f"start: {best:.3f} dB (render through the GIF model)", flush=True)
    shrink = 1.0
    for p in range(args.passes):
        start = best
        for name, steps in STEPS.items():
            for part, step in enumerate(steps if isinstance(steps, tuple) else (steps,)):
                for sign in (1, -1):
                    went = False
                    while True:
                        candidate = moved(scene, name, part, sign * step * shrink)
                        value = objective(candidate)
                        if value <= best + 1e-4:
                            break
                        best, scene, went = value, candidate, True
                    if went:
                        break
        print(f"pass {p}: {best:.3f} dB\n{scene!r}", flush=True)
        if best - start < 0.05:
            shrink /= 2


if __name__ == "__main__":
    main()
