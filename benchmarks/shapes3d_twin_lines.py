"""Measure the room's lines in DeepMind's 3D Shapes frames and fit the twin's camera to them.

The room's edges (the wall top against the sky, the floor line under the walls) depend only on the
camera, so they measure it apart from everything else in the scene. For each frame of the
orientation sweep (frames 0-14 of ``shared/data/shapes3d_real_frames.npz``: the cube at scale index 1,
one frame per orientation) this script

* measures both lines per image column to a fraction of a row: the rows of sky above the wall top
  (the sum of each pixel's share of the sky colour against the wall colour just below), and the
  row of the floor line likewise (columns within 3 pixels of the object left out). An area-averaged
  pixel holds exactly its share of each surface, and blur keeps the sum, so the estimate holds
  on the GIF frames as on the twin's renders;
* projects the room's edges through a camera orbiting a point on the floor (the twin's model:
  ``Shapes3DScene.object_xy``, ``camera_radius``, ``camera_height``, ``camera_target_z``,
  ``field_of_view_deg``, ``wall_height``), averaged over each column's width as the measurement is;
* fits the camera to the real frames' lines by least squares (L-BFGS), from the chosen version's
  camera, and reports the root mean square residual in rows: of the version's camera, of the fit,
  and of two richer models that were tried (the camera looking at a point off the orbit's centre;
  the orientations' angles scaled and shifted), with the largest differences per frame.

The measured real line is the version's projected line plus (real estimate - render estimate), so
whatever bias the estimator has on the twin's renders cancels.

    python benchmarks/shapes3d_twin_lines.py [--version 3] [--out PATH] [--iterations 300]

Writes ``benchmarks/results/shapes3d_twin_fidelity/shapes3d_twin_lines_v{version}.json`` by default.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
import torch

from datamodules.shapes3d import SHAPES3D, TWIN_VERSIONS, Shapes3DScene, render_shapes3d, shapes3d_surface_weights
from datamodules.shapes3d.fidelity import real_frames_64

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_FRAMES = ROOT.parent / "shared" / "data" / "shapes3d_real_frames.npz"
RESULTS = ROOT / "benchmarks" / "results" / "shapes3d_twin_fidelity"
SWEEP = range(15)  # frames 0-14: the cube at scale index 1, orientations 0-14
SUBSAMPLES = 5  # points per column over which a projected line is averaged
CAMERA = ("orbit_x", "orbit_y", "camera_radius", "camera_height", "camera_target_z", "field_of_view_deg",
          "wall_height")
MODELS = {  # what each fitted model frees, besides CAMERA
    "orbit": (),
    "orbit, looking off its centre": ("target_dx", "target_dy"),
    "orbit, angles scaled and shifted": ("azimuth_scale", "azimuth_offset"),
}


# --------------------------------------------------------------------------------------------------
# Measuring the lines in an image
# --------------------------------------------------------------------------------------------------
def _share(pixels: torch.Tensor, colour: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """Each pixel's share ``(n,)`` of ``colour`` against ``other`` (pixels ``(3, n)``), in [0, 1]."""
    v = colour - other
    return (((pixels - other[:, None]) * v[:, None]).sum(0) / (v @ v)).clamp(0, 1)


def measure_lines(image: torch.Tensor, skip: torch.Tensor | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The wall top and the floor line of one 3D Shapes image ``(3, 64, 64)`` (any scale), per column:
    ``(top (64,), floor (64,))`` in rows from the image's top edge (a pixel row spans [r, r + 1)).
    ``skip`` ``(64,)`` bool: columns whose floor line is not measured (an object in the way); they are
    NaN, as are columns with no floor line in view. The image's top two rows must be sky, and its
    bottom two rows floor, as in every 3D Shapes frame; a column with no wall below its sky is NaN."""
    image = image.double()
    top, floor = np.full(64, np.nan), np.full(64, np.nan)
    for c in range(64):
        col = image[:, :, c]
        sky = col[:, 0:2].mean(1)
        dist = (col - sky[:, None]).norm(dim=0)
        walls = torch.nonzero(dist > 0.5 * dist[:45].max())
        if len(walls) == 0 or float(dist[:45].max()) == 0:
            continue
        b = int(walls[0])  # the first row mostly wall
        wall = col[:, b + 2:b + 4].mean(1)
        top[c] = float(_share(col[:, :b + 4], sky, wall).sum())
        if skip is not None and bool(skip[c]):
            continue
        # The floor line: the first row below the wall top that is mostly floor (floor and wall differ
        # most along the colour that parts them in this column's far rows).
        lower = col[:, -2:].mean(1)
        along = _share(col[:, b + 4:], lower, wall)
        rows = torch.nonzero(along > 0.5)
        if len(rows) == 0:
            continue
        f = int(rows[0]) + b + 4
        lo, hi = f - 3, min(f + 4, 64)
        if hi - 2 <= f or lo - 2 < 0:
            continue
        floor[c] = lo + float(_share(col[:, lo:hi], col[:, lo - 2:lo].mean(1), col[:, hi - 2:hi].mean(1)).sum())
    return top, floor


# --------------------------------------------------------------------------------------------------
# The room's lines through a camera (differentiable in the camera's numbers)
# --------------------------------------------------------------------------------------------------
def camera_numbers(scene: Shapes3DScene) -> dict[str, float]:
    """A scene's camera as the fit's numbers (no look-off, angles as they are)."""
    return {"orbit_x": scene.object_xy[0], "orbit_y": scene.object_xy[1], "camera_radius": scene.camera_radius,
            "camera_height": scene.camera_height, "camera_target_z": scene.camera_target_z,
            "field_of_view_deg": scene.field_of_view_deg, "wall_height": scene.wall_height, "target_dx": 0.0,
            "target_dy": 0.0, "azimuth_scale": 1.0, "azimuth_offset": 0.0}


def camera_pose(p: dict[str, torch.Tensor], orientation: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Camera position ``(3,)`` and the point it looks at ``(3,)`` at one orientation (its azimuth is
    the orientation's angle, ``SHAPES3D``, times ``azimuth_scale`` plus ``azimuth_offset`` degrees)."""
    angle = float(SHAPES3D.factors[5].values[orientation])
    az = torch.deg2rad(p["azimuth_scale"] * angle + p["azimuth_offset"])
    position = torch.stack([p["orbit_x"] + p["camera_radius"] * torch.sin(az),
                            p["orbit_y"] - p["camera_radius"] * torch.cos(az), p["camera_height"]])
    target = torch.stack([p["orbit_x"] + p["target_dx"], p["orbit_y"] + p["target_dy"], p["camera_target_z"]])
    return position, target


def project(points: torch.Tensor, position: torch.Tensor, target: torch.Tensor, fov_deg: torch.Tensor
            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Image column, row (continuous; pixel i spans [i, i + 1)) and depth of world ``points`` ``(..., 3)``,
    as the twin's ray caster frames them (``raycast._camera_frames``: no roll, square pixels)."""
    forward = target - position
    forward = forward / forward.norm()
    right = torch.linalg.cross(forward, torch.tensor([0.0, 0.0, 1.0], dtype=forward.dtype))
    right = right / right.norm()
    up = torch.linalg.cross(right, forward)
    focal = 32 / torch.tan(torch.deg2rad(fov_deg) / 2)
    rel = points - position
    depth = rel @ forward
    return 32 + focal * (rel @ right) / depth, 32 - focal * (rel @ up) / depth, depth


def room_line(position: torch.Tensor, target: torch.Tensor, fov_deg: torch.Tensor, z: torch.Tensor | float,
              top: bool, samples: int = 3001) -> torch.Tensor:
    """Row ``(64,)`` of the room's edge at height ``z`` (the walls' top, or the floor line at 0) in each
    column, averaged over the column's width; NaN where the edge is out of view. The room is the
    twin's (``Shapes3DScene.room_half`` 1): back wall y = 1, side walls x = -1 and 1, open at the front."""
    t = torch.linspace(-1, 1, samples, dtype=torch.float64)
    one, height = torch.ones_like(t), t * 0 + z
    edges = (torch.stack([t, one, height], -1), torch.stack([-one, t, height], -1), torch.stack([one, t, height], -1))
    at = (torch.arange(64 * SUBSAMPLES, dtype=torch.float64) + 0.5) / SUBSAMPLES
    line = torch.full_like(at, math.nan)
    for edge in edges:
        u, v, depth = project(edge, position, target, fov_deg)
        keep = depth > 0.05
        u, v = u[keep], v[keep]
        if len(u) < 2:
            continue
        order = torch.argsort(u.detach())
        u, v = u[order], v[order]
        inside = (at >= float(u.detach().min())) & (at <= float(u.detach().max()))
        i = torch.searchsorted(u.detach(), at[inside]).clamp(1, len(u) - 1)
        w = (at[inside] - u[i - 1]) / (u[i] - u[i - 1])
        row = v[i - 1] + w * (v[i] - v[i - 1])
        old = line[inside]
        # Seen from inside the room, the nearer wall's edge hides the farther one's at a corner.
        nearer = torch.minimum(old, row) if top else torch.maximum(old, row)
        line = line.clone()
        line[inside] = torch.where(torch.isnan(old), row, nearer)
    return line.view(64, SUBSAMPLES).mean(1)


def lines_of(p: dict[str, torch.Tensor], orientation: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The projected wall top and floor line ``(64,)`` each at one orientation."""
    position, target = camera_pose(p, orientation)
    return (room_line(position, target, p["field_of_view_deg"], p["wall_height"], top=True),
            room_line(position, target, p["field_of_view_deg"], 0.0, top=False))


def residuals(p: dict[str, torch.Tensor], measured: dict[int, tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    """Projected minus measured rows (``measured``: orientation -> (wall top, floor line)), every
    measured column, both lines."""
    out = []
    for orientation, lines in measured.items():
        for model, real in zip(lines_of(p, orientation), lines):
            keep = ~(torch.isnan(model) | torch.isnan(real))
            out.append(model[keep] - real[keep])
    return torch.cat(out)


def fit(start: dict[str, float], free: tuple[str, ...], measured: dict, iterations: int = 300
        ) -> tuple[float, dict[str, float]]:
    """Least-squares camera from ``start`` with the numbers ``free``: (RMS residual in rows, numbers)."""
    p = {k: torch.tensor(v, dtype=torch.float64, requires_grad=k in free) for k, v in start.items()}
    optimiser = torch.optim.LBFGS([p[k] for k in free], lr=0.5, max_iter=iterations, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimiser.zero_grad()
        loss = residuals(p, measured).square().mean()
        loss.backward()
        return loss

    optimiser.step(closure)
    with torch.no_grad():
        rms = float(residuals(p, measured).square().mean().sqrt())
    return rms, {k: round(float(p[k].detach()), 4) for k in free}


def largest_differences(p: dict[str, torch.Tensor], measured: dict) -> dict[str, dict[str, float]]:
    """Per frame, how far the real lines sit below (+) and above (-) the camera's, at most, in rows."""
    out = {}
    with torch.no_grad():
        for orientation, lines in measured.items():
            row = {}
            for name, model, real in zip(("wall_top", "floor_line"), lines_of(p, orientation), lines):
                d = (real - model)[~(torch.isnan(model) | torch.isnan(real))]
                row[f"{name}_real_lower_by"] = round(float(d.max()), 2)
                row[f"{name}_real_higher_by"] = round(float(-d.min()), 2)
            out[str(orientation)] = row
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--version", default="3", choices=sorted(TWIN_VERSIONS),
                        help="the twin whose renders and camera are measured against (default: %(default)s)")
    parser.add_argument("--frames", type=Path, default=DEFAULT_FRAMES)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--iterations", type=int, default=300, help="L-BFGS iterations per fit (default: %(default)s)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    scene = TWIN_VERSIONS[args.version]
    if scene.room_half != 1.0:
        parser.error(f"the lines are projected for a room of half-width 1; version {args.version}'s is "
                     f"{scene.room_half}")
    # The sweep's states: red floor, blue wall, green cube at scale index 1, orientations 0-14.
    states = torch.tensor([[0, 6, 3, 1, 0, k] for k in SWEEP])
    with np.load(args.frames) as data:
        real = real_frames_64(data["images"][list(SWEEP)]) / 255
    renders = render_shapes3d(states, version=args.version)
    table = shapes3d_surface_weights(scene=scene)
    combos = (states[:, 3] * 4 + states[:, 4]) * 15 + states[:, 5]
    near_object = torch.nn.functional.max_pool1d((table[combos, 2] > 0.001).any(1).float()[:, None], 7, 1, 3)[:, 0] > 0
    start = camera_numbers(scene)
    p0 = {k: torch.tensor(v, dtype=torch.float64) for k, v in start.items()}
    measured, bias = {}, []
    with torch.no_grad():
        for k in SWEEP:
            model = lines_of(p0, k)
            got_real = measure_lines(real[k], near_object[k])
            got_render = measure_lines(renders[k], near_object[k])
            measured[k] = tuple(m + torch.from_numpy(r - g) for m, r, g in zip(model, got_real, got_render))
            bias.append([float(np.nanmean(np.abs(g - m.numpy()))) for m, g in zip(model, got_render)])
        version_rms = float(residuals(p0, measured).square().mean().sqrt())
    report = {"command": "python " + " ".join([sys.argv[0], *(argv if argv is not None else sys.argv[1:])]),
              "frames": list(SWEEP), "version": args.version, "unit": "image rows (64x64)",
              # How far the measurement on the version's own renders is from their projected lines (mean
              # absolute, rows); the real lines are corrected by it, column by column.
              "estimator_error_on_renders_rows": {"wall_top": round(float(np.mean([b[0] for b in bias])), 3),
                                                  "floor_line": round(float(np.mean([b[1] for b in bias])), 3)},
              "rms_rows": {f"version {args.version}'s camera": round(version_rms, 3)},
              f"largest_differences_from_version_{args.version}_rows": largest_differences(p0, measured),
              "fits": {}}
    print(f"version {args.version}'s camera: {version_rms:.3f} rows RMS over both lines of frames 0-14")
    for name, extra in MODELS.items():
        rms, numbers = fit(start, CAMERA + extra, measured, args.iterations)
        report["rms_rows"][name] = round(rms, 3)
        report["fits"][name] = numbers
        print(f"fitted, {name}: {rms:.3f} rows RMS  {numbers}", flush=True)
    out = args.out or RESULTS / f"shapes3d_twin_lines_v{args.version}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(report, indent=2) + "\n")
    tmp.replace(out)
    return report


if __name__ == "__main__":
    main()
