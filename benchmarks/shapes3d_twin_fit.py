"""Fit a 3D Shapes twin scene to DeepMind's real frames: object shading by least squares, the rest
by coordinate search.

How twin versions 2 to 4 were fitted (``docs/twin_fidelity.md``). The frames' states are
held fixed (their exact nearest states, from ``shapes3d_twin_psnr.json``); each scene number in turn
is moved by its step, up or down, for as long as the mean PSNR of the 53 frames rises. The render is
passed through a linear model of the GIF's trip (PIL bicubic upscale 64 -> 223, exact area
downsample) before it is compared, so that the fit does not chase the GIF's blur. Each evaluation
ray-casts the table's rows of the frames' shapes and scales (about a second), so a pass over every
number takes a few minutes on one core.

    OMP_NUM_THREADS=1 python benchmarks/shapes3d_twin_fit.py [--version 2] [--passes 3]

Prints the best scene after each pass, as a ``Shapes3DScene(...)`` to paste into ``scene.py``.

``--shading`` instead fits the object shading of versions 3 and 4 (``Shapes3DScene.object_shading_world``
and ``object_shading_camera``, a quadratic in the surface normal in the world and camera frames, and
``object_sky_world``, the sky's colour the object shows, a quadratic in the world normal) to
the object's inner pixels (all of a pixel's rays hit the object, and its four neighbours' too) of
the frames at their states, by least squares (clipped channels, 0 or 250 and more, left out); the
geometry is the starting version's. ``--fit-frames`` and ``--test-frames`` hold frames out, for the
shading as for the search (whose test PSNR is printed after each pass):

    python benchmarks/shapes3d_twin_fit.py --version 3 --shading [--fit-frames 0-23 --test-frames 24-52]

``--where`` prints where a scene's squared error sits (the shares of the object's outline, the wall
top, the floor line and each surface's inner pixels), then stops.

``--start NAME=VALUE ...`` starts from the version with those numbers changed (Python literals, e.g.
``"shadow_light_xyz=(-0.49, 0.01, 1.52)"`` or ``object_sky_world=None``).
"""

from __future__ import annotations

import argparse
import ast
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
    raycast,
    shading,
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
    "shadow_spread": .01, "shadow_gain": .02, "shadow_light_xyz": (.05, .05, .05),
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
        self.targets, self.states, self.blur = targets, states, gif_blur_matrix()
        self.combo = (states[:, 3] * 4 + states[:, 4]) * 15 + states[:, 5]
        self.colours = shapes3d_surface_colours(states).transpose(1, 2)  # (N, 3, 4)
        self.pairs = {(int(scale), int(shape)) for scale, shape in states[:, 3:5]}  # cast only these

    def renders(self, scene: Shapes3DScene) -> torch.Tensor:
        """The frames' states rendered under ``scene`` and passed through the GIF model, ``(N, 3, 64, 64)``
        in [0, 255]."""
        weights = _build_weight_table(scene, self.pairs).flatten(2)[self.combo]  # (N, 4, 4096)
        images = (torch.bmm(self.colours, weights).clamp(0, 1) * 255).view(-1, 3, 64, 64)
        return self.blur @ images @ self.blur.T

    def __call__(self, scene: Shapes3DScene) -> float:
        return float(psnr(self.renders(scene), self.targets).mean())


REGIONS = ("object outline", "wall top", "floor line", "object", "floor", "wall", "sky")


def coverage_scene(scene: Shapes3DScene) -> Shapes3DScene:
    """``scene`` with every light, shade and shadow flat, so that its surface weights are each
    surface's share of a pixel (its coverage)."""
    return dataclasses.replace(scene, object_shading_world=(1.0,) + (0.0,) * 8, object_shading_camera=None,
                               object_sky_world=None, back_wall_gain=1.0, left_wall_gain=1.0, right_wall_gain=1.0,
                               wall_light_xyz=None, floor_peak=1.0, floor_falloff=0.0, shadow_gain=1.0)


def error_shares(scene: Shapes3DScene, objective: Objective) -> dict[str, dict[str, float]]:
    """Where the squared error through the GIF model sits: per region of the frames (by the surfaces'
    coverage of each pixel in each frame's state), its share of the pixels and of the error. A pixel
    on the object's outline, the wall top or the floor line (in that order) has a neighbour (of its
    3x3) on the other side of that line; the rest are the inner pixels of their surface."""
    error = ((objective.renders(scene).double() - objective.targets.double()) ** 2).sum(1)  # (N, 64, 64)
    cover = _build_weight_table(coverage_scene(scene), objective.pairs)[objective.combo].double()
    floor_c, wall_c, object_c, sky_c = cover.unbind(1)
    on_object = object_c > 0.5
    on_sky = (sky_c > 0.5) & ~on_object
    on_floor = (floor_c > wall_c) & ~on_object & ~on_sky

    def outline(mask: torch.Tensor) -> torch.Tensor:
        m = mask.double()[:, None]
        grown = torch.nn.functional.max_pool2d(m, 3, 1, 1)[:, 0] > 0
        shrunk = torch.nn.functional.max_pool2d(1 - m, 3, 1, 1)[:, 0] == 0
        return grown & ~shrunk

    taken = torch.zeros_like(on_object)
    masks = {}
    for name, mask in (("object outline", on_object), ("wall top", on_sky), ("floor line", on_floor)):
        masks[name] = outline(mask) & ~taken
        taken |= masks[name]
    masks["object"], masks["floor"], masks["sky"] = on_object & ~taken, on_floor & ~taken, on_sky & ~taken
    masks["wall"] = ~(taken | on_object | on_floor | on_sky)
    total = float(error.sum()) or 1.0  # a perfect scene has no error to share
    return {name: {"pixels": round(float(masks[name].double().mean()), 3),
                   "squared_error": round(float(error[masks[name]].sum()) / total, 3)} for name in REGIONS}


def object_pixels(scene: Shapes3DScene, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Inner object pixels of one state ``(6,)``: their shading features ``(P, 15)`` (world, then the camera
    frame's shading.CAMERA_FEATURES; averaged over the pixel's rays) and their indices ``(P,)`` in 64 * 64."""
    scale_i, shape, orientation = (int(v) for v in state[3:])
    origins, dirs = raycast._camera_rays(scene)
    scale = SHAPES3D.factors[3].values[scale_i]
    base = torch.tensor([*scene.object_xy, 0.0], dtype=torch.float64)
    d = dirs[orientation] / scale
    o = ((origins[orientation] - base) / scale).expand_as(d)
    entry, exit_ = raycast._object_interval(scene, shape, o, d)
    hit = (entry <= exit_) & (entry > 0)
    normals = raycast._object_normal(scene, shape, o[hit] + entry[hit, None] * d[hit])
    at = torch.full((len(normals),), orientation)
    phi = torch.zeros(*hit.shape, 15, dtype=torch.float64)
    seen = shading.shading_features(shading.camera_frame_normals(normals, at))[:, shading.CAMERA_FEATURES]
    phi[hit] = torch.cat([shading.shading_features(normals), seen], -1)
    ss = scene.supersample
    inner = torch.nn.functional.avg_pool2d(hit.double()[None, None], ss)[0, 0] == 1
    inner = inner & inner.roll(1, 0) & inner.roll(-1, 0) & inner.roll(1, 1) & inner.roll(-1, 1)
    phi = torch.nn.functional.avg_pool2d(phi.permute(2, 0, 1)[None], ss)[0]  # (15, 64, 64)
    return phi[:, inner].T, inner.flatten().nonzero()[:, 0]


def shading_system(scene: Shapes3DScene, targets: torch.Tensor, states: torch.Tensor, frames: list[int]
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Least-squares rows ``(R, 24)`` and values ``(R,)`` in [0, 1]: an inner object pixel's channel is
    its object colour times the shading (15 features) plus the sky's colour times the sky's share (the
    9 world features); channels the real frame clips (0, or 250 and more) are left out."""
    colours = shapes3d_surface_colours(states).double()  # (N, 4, 3): floor, wall, object, sky
    rows, values = [], []
    for f in frames:
        phi, where = object_pixels(scene, states[f])
        for c in range(3):
            real = targets[f, c].flatten()[where].double()
            keep = (real > 0) & (real < 250)  # not clipped
            rows.append(torch.cat([colours[f, 2, c] * phi[keep], colours[f, 3, c] * phi[keep][:, :9]], 1))
            values.append(real[keep] / 255)
    return torch.cat(rows), torch.cat(values)


def fit_object_shading(scene: Shapes3DScene, targets: torch.Tensor, states: torch.Tensor, fit: list[int],
                       test: list[int]) -> Shapes3DScene:
    """``scene`` with its object shading fitted on frames ``fit``; prints the shading's RMSE (on [0, 1])
    on the inner object pixels of ``fit`` and ``test`` before and after."""
    x, y = shading_system(scene, targets, states, fit)
    solution = torch.linalg.lstsq(x, y[:, None]).solution[:, 0]
    def coefficients(part: torch.Tensor) -> tuple[float, ...]:
        return tuple(round(float(v), 5) for v in part)

    fitted = dataclasses.replace(scene, object_shading_world=coefficients(solution[:9]),
                                 object_shading_camera=coefficients(solution[9:15]),
                                 object_sky_world=coefficients(solution[15:]))
    for name, frames in (("fit", fit), ("test", test)):
        if not frames:
            continue
        x, y = shading_system(scene, targets, states, frames)
        before = Objective(targets[frames], states[frames])
        print(f"{name} frames ({len(frames)}): shading RMSE {float((x @ solution - y).pow(2).mean().sqrt()):.4f}, "
              f"PSNR through the GIF model {before(scene):.3f} -> {before(fitted):.3f} dB", flush=True)
    return fitted


def frame_list(text: str | None, count: int) -> list[int]:
    """``"0-23,30"`` -> [0, ..., 23, 30]; None -> every frame."""
    if text is None:
        return list(range(count))
    out = []
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        out += list(range(int(lo), int(hi or lo) + 1))
    return out


def used(scene: Shapes3DScene, name: str) -> bool:
    """Whether the scene's render depends on a number (quadratic shading replaces the object light;
    a point shadow light replaces the distant one)."""
    if scene.object_shading_world is not None and name in ("object_ambient", "object_diffuse", "object_light"):
        return False
    if name == "shadow_light_xyz":
        return scene.shadow_light_xyz is not None
    return not (name == "shadow_light" and scene.shadow_light_xyz is not None)


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
    parser.add_argument("--only", nargs="+", default=None, choices=sorted(STEPS), metavar="NAME",
                        help="search these scene numbers only (default: every one the scene uses)")
    parser.add_argument("--start", nargs="+", default=[], metavar="NAME=VALUE",
                        help="start from the version with these numbers changed, e.g. 'shadow_gain=0.27'")
    parser.add_argument("--shading", action="store_true", help="fit the object shading by least squares, then stop")
    parser.add_argument("--where", action="store_true",
                        help="print where the scene's squared error sits (shares per region of the frames), then stop")
    parser.add_argument("--fit-frames", default=None,
                        help="frames the shading or the search is fitted on, e.g. 0-23 (default all)")
    parser.add_argument("--test-frames", default=None, help="frames it is tested on (default none)")
    args = parser.parse_args()
    torch.set_num_threads(1)

    with np.load(args.frames) as data:
        targets = real_frames_64(data["images"]).float()
    per_frame = json.loads(args.states.read_text())["per_frame"][args.version]
    all_states = SHAPES3D.unravel(torch.tensor([r["state_index"] for r in per_frame]))
    fit_frames = frame_list(args.fit_frames, len(targets))
    test_frames = frame_list(args.test_frames, len(targets)) if args.test_frames else []
    objective = Objective(targets[fit_frames], all_states[fit_frames])
    held_out = Objective(targets[test_frames], all_states[test_frames]) if test_frames else None
    scene = TWIN_VERSIONS[args.version]
    fields = {field.name for field in dataclasses.fields(Shapes3DScene)}
    changes = {}
    for change in args.start:
        name, _, value = (part.strip() for part in change.partition("="))
        if name not in fields:
            parser.error(f"--start {change!r}: {name!r} is not a Shapes3DScene number; "
                         f"choose from {', '.join(sorted(fields))}")
        try:
            changes[name] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            parser.error(f"--start {change!r}: the value is not a Python literal (a number, a tuple or None)")
    try:
        scene = dataclasses.replace(scene, **changes)  # at once: some numbers only make sense together
    except ValueError as error:
        parser.error(f"--start: {error}")
    if args.where:
        score = objective(scene)
        print(f"{'region':16s} {'pixels':>7s} {'squared error':>14s}  ({score:.3f} dB through the GIF model)")
        for name, share in error_shares(scene, objective).items():
            print(f"{name:16s} {share['pixels']:7.3f} {share['squared_error']:14.3f}")
        return
    if args.shading:
        if args.only:
            parser.error("--only chooses numbers for the coordinate search; --shading fits the shading alone")
        fitted = fit_object_shading(scene, targets, all_states, fit_frames, test_frames)
        print(repr(fitted))
        return
    if scene.wall_light_xyz is None:  # give the wall light a place to start from
        scene = dataclasses.replace(scene, wall_light_xyz=(-0.44, 0.01, 1.52))
    searched = {name: STEPS[name] for name in (args.only or STEPS) if used(scene, name)}
    unused = sorted(set(args.only or ()) - set(searched))
    if unused:
        print(f"not searched, as this scene does not use them: {', '.join(unused)}", flush=True)

    def held_out_text(scene: Shapes3DScene) -> str:
        return f"; held-out frames {held_out(scene):.3f} dB" if held_out is not None else ""

    best = objective(scene)
    print(f"start: {best:.3f} dB (render through the GIF model){held_out_text(scene)}", flush=True)
    shrink = 1.0
    for p in range(args.passes):
        start = best
        for name, steps in searched.items():
            for part, step in enumerate(steps if isinstance(steps, tuple) else (steps,)):
                for sign in (1, -1):
                    went = False
                    while True:
                        try:
                            candidate = moved(scene, name, part, sign * step * shrink)
                        except ValueError:  # stepped out of the scene's range (a negative size)
                            break
                        value = objective(candidate)
                        if value <= best + 1e-4:
                            break
                        best, scene, went = value, candidate, True
                    if went:
                        break
        print(f"pass {p}: {best:.3f} dB{held_out_text(scene)}\n{scene!r}", flush=True)
        if best - start < 0.05:
            shrink /= 2


if __name__ == "__main__":
    main()
