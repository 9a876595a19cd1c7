"""The room-line measurement that fits the 3D Shapes twin's camera (benchmarks/shapes3d_twin_lines.py):
its projection is the ray caster's, it reads a render's own lines back, and its fit finds a known camera."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

from datamodules.shapes3d import SCENE, SCENE_V3, raycast, render_shapes3d

ROOT = next(p for p in Path(__file__).resolve().parents if (p / "pyproject.toml").is_file())
REAL_FRAMES = ROOT.parent / "shared" / "data" / "shapes3d_real_frames.npz"
pytestmark = pytest.mark.usefixtures("one_thread")  # the fits are slow with two threads on a shared CPU


@pytest.fixture(scope="module")
def lines():
    path = ROOT / "benchmarks" / "shapes3d_twin_lines.py"
    spec = importlib.util.spec_from_file_location("_script_shapes3d_twin_lines", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def numbers(lines, scene):
    return {k: torch.tensor(v, dtype=torch.float64) for k, v in lines.camera_numbers(scene).items()}


def test_projection_is_the_ray_casters_camera(lines):
    origins, dirs = raycast._camera_rays(SCENE_V3)
    p = numbers(lines, SCENE_V3)
    ss = SCENE_V3.supersample
    for orientation in (0, 6, 14):
        position, target = lines.camera_pose(p, orientation)
        torch.testing.assert_close(position, origins[orientation])
        # A sub-pixel ray's point at depth 2 projects back to that sub-pixel's centre.
        row, col = 40, 100
        point = origins[orientation] + 2 * dirs[orientation, row, col]
        u, v, depth = lines.project(point, position, target, p["field_of_view_deg"])
        assert float(u) == pytest.approx((col + 0.5) / ss, abs=1e-9)
        assert float(v) == pytest.approx((row + 0.5) / ss, abs=1e-9)
        assert float(depth) > 0


def test_measured_lines_of_a_render_are_its_cameras_projected_lines(lines):
    p = numbers(lines, SCENE_V3)
    states = torch.tensor([[0, 6, 3, 1, 0, k] for k in (0, 7, 14)])  # the real sweep's colours and cube
    renders = render_shapes3d(states, version="3").double()
    for image, orientation in zip(renders, (0, 7, 14)):
        skip = torch.zeros(64, dtype=torch.bool)
        skip[20:45] = True  # the cube and its shadow
        top, floor = lines.measure_lines(image, skip)
        want_top, want_floor = (x.numpy() for x in lines.lines_of(p, orientation))
        assert abs(top - want_top).mean() < 0.1, orientation
        keep = ~torch.isnan(torch.from_numpy(floor))
        assert int(keep.sum()) >= 30
        assert abs(floor - want_floor)[keep.numpy()].mean() < 0.25, orientation
        assert bool(torch.isnan(torch.from_numpy(floor))[skip].all())


def test_fit_finds_a_known_camera_from_its_lines(lines):
    truth = numbers(lines, SCENE)  # version 1's camera, far from version 3's where the fit starts
    with torch.no_grad():
        measured = {k: lines.lines_of(truth, k) for k in (0, 5, 10, 14)}
    start = lines.camera_numbers(SCENE_V3)
    before = float(lines.residuals({k: torch.tensor(v, dtype=torch.float64) for k, v in start.items()},
                                   measured).square().mean().sqrt())
    rms, fitted = lines.fit(start, lines.CAMERA, measured, iterations=200)
    assert before > 0.5 and rms < 0.02
    assert set(fitted) == set(lines.CAMERA)
    for name in lines.CAMERA:  # every number, the orbit's centre included
        assert fitted[name] == pytest.approx(float(truth[name]), abs=0.01 * max(1.0, abs(float(truth[name])))), name


@pytest.mark.skipif(not REAL_FRAMES.exists(), reason=f"real 3D Shapes frames not found at {REAL_FRAMES}")
def test_the_script_measures_the_real_sweep_against_a_versions_camera(lines, tmp_path):
    out = tmp_path / "lines.json"
    report = lines.main(["--version", "3", "--iterations", "2", "--out", str(out)])
    assert json.loads(out.read_text()) == report
    # Version 3's camera misses the real lines by half a row; the measurement on its own renders is
    # close to their projection (what the real lines are corrected by).
    assert report["rms_rows"]["version 3's camera"] == pytest.approx(0.498, abs=0.002)
    assert report["estimator_error_on_renders_rows"]["wall_top"] < 0.1
    largest = report["largest_differences_from_version_3_rows"]
    assert sorted(largest, key=int) == [str(k) for k in range(15)]
    # At -30 degrees the real wall top sits well below version 3's at the far corner; at 0 degrees it
    # is within a fifth of a row everywhere.
    assert largest["0"]["wall_top_real_lower_by"] > 1.0
    assert max(largest["7"]["wall_top_real_lower_by"], largest["7"]["wall_top_real_higher_by"]) < 0.2
    assert set(report["fits"]) == set(lines.MODELS)
