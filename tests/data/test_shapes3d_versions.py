"""3D Shapes twin versions: version "1" stays bit for bit, version "2" is closer to the real frames,
and the GIF round trip that bounds any renderer's fidelity."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from datamodules.shapes3d import (
    DEFAULT_TWIN_VERSION,
    SCENE,
    SCENE_V2,
    SHAPES3D,
    TWIN_VERSIONS,
    render_shapes3d,
    shapes3d_twin,
    twin_scene,
)
from datamodules.shapes3d.fidelity import (
    area_matrix,
    gif_round_trip,
    psnr,
    real_frames_64,
)

REAL_FRAMES = Path(__file__).resolve().parents[3] / "shared" / "data" / "shapes3d_real_frames.npz"
# States spread over the factor space, rendered by version 1 before versions existed (git HEAD of
# the change that added them): per-image sums of the float32 images, and single pixels.
STATES = torch.tensor([0, 7, 123457, 250000, 479999])
V1_SUMS = [5438.030380606651, 5633.767176687717, 7977.916411146522, 7405.901419863105, 6756.147115498781]


def test_version_1_is_the_default_and_renders_exactly_as_before():
    classes = SHAPES3D.unravel(STATES)
    images = render_shapes3d(classes)
    assert DEFAULT_TWIN_VERSION == "1" and twin_scene() is SCENE and TWIN_VERSIONS["1"] is SCENE
    assert torch.equal(images, render_shapes3d(classes, version="1"))
    assert torch.equal(images, render_shapes3d(classes, version=1))
    assert torch.equal(images, render_shapes3d(classes, SCENE))
    np.testing.assert_allclose(images.double().sum(dim=(1, 2, 3)).numpy(), V1_SUMS, rtol=1e-7)
    assert images[2, :, 30, 30].tolist() == pytest.approx([0.0, 0.98, 0.98], abs=1e-7)
    assert images[3, :, 50, 10].tolist() == [0.0, 1.0, 1.0]
    twin = shapes3d_twin()
    assert twin.description == "3D Shapes procedural twin" and twin.render is render_shapes3d


def test_version_2_is_deterministic_and_differs_from_version_1():
    classes = SHAPES3D.sample(32, torch.Generator().manual_seed(3))
    first = render_shapes3d(classes, version="2")
    assert torch.equal(first, render_shapes3d(classes.clone(), version="2"))
    assert first.shape == (32, 3, 64, 64) and first.dtype == torch.float32
    assert float(first.min()) >= 0.0 and float(first.max()) <= 1.0
    assert float((first - render_shapes3d(classes)).abs().mean()) > 0.01
    twin = shapes3d_twin("2")
    assert twin.description == "3D Shapes procedural twin (renderer version 2)"
    assert torch.equal(twin.render(classes, check=False), first)
    assert twin_scene("2") is SCENE_V2 and SCENE_V2.supersample == 3


def test_unknown_versions_and_scene_with_version_are_refused():
    with pytest.raises(ValueError, match=r"unknown 3D Shapes twin version '5'.*\['1', '2', '3', '4'\]"):
        shapes3d_twin("5")
    with pytest.raises(ValueError, match="not both"):
        render_shapes3d(torch.zeros(1, 6, dtype=torch.long), SCENE, version="2")


# The exact nearest states of these real frames among all 480,000, per version
# (benchmarks/results/shapes3d_twin_fidelity/shapes3d_twin_psnr.json).
NEAREST = {0: {"1": 30240, "2": 30300}, 7: {"1": 30307, "2": 30307}, 14: {"1": 30314, "2": 30314}, 20: {"1": 30479, "2": 30479}, 30: {"1": 33599, "2": 33599}, 45: {"1": 20639, "2": 20639}}


@pytest.mark.skipif(not REAL_FRAMES.exists(), reason=f"real 3D Shapes frames not found at {REAL_FRAMES}")
def test_version_2_is_closer_to_the_real_frames_than_version_1():
    with np.load(REAL_FRAMES) as data:
        real = real_frames_64(data["images"][list(NEAREST)])
    scores = {}
    for v in ("1", "2"):
        states = SHAPES3D.unravel(torch.tensor([NEAREST[k][v] for k in NEAREST]))
        scores[v] = psnr(render_shapes3d(states, version=v) * 255, real)
    assert bool((scores["2"] > scores["1"] + 2.0).all()), scores
    assert float(scores["2"].mean()) > 25.0 and float(scores["1"].mean()) < 23.0, scores


# --- measurement: the GIF's frame, area downsampling and the round trip ---------------------------
def test_area_matrix_averages_exact_covered_parts():
    a = area_matrix(223, 64)
    assert a.shape == (64, 223)
    torch.testing.assert_close(a.sum(1), torch.ones(64, dtype=torch.float64))
    # Output pixel 0 covers input [0, 3.484375): three whole pixels and 0.484375 of the fourth.
    torch.testing.assert_close(a[0, :4] * 223 / 64, torch.tensor([1, 1, 1, 0.484375], dtype=torch.float64))


def test_real_frames_cut_the_gif_frame_before_downsampling():
    frames = np.full((2, 227, 226, 3), 255, np.uint8)  # white outer line
    frames[:, 1:-1, 1:] = 206  # grey inner line
    frames[:, 2:225, 2:225] = (10, 20, 30)
    out = real_frames_64(frames)
    assert out.shape == (2, 3, 64, 64)
    torch.testing.assert_close(out, torch.tensor([10.0, 20.0, 30.0], dtype=torch.float64)[None, :, None, None]
                               .expand(2, 3, 64, 64))
    with pytest.raises(ValueError, match=r"\(N, 227, 226, 3\)"):
        real_frames_64(np.zeros((1, 64, 64, 3), np.uint8))


def test_gif_round_trip_keeps_flat_images_and_bounds_renders_as_stated():
    flat = torch.full((2, 3, 64, 64), 0.5)
    flat[1, 0] = 0.2
    for palette in ("shared", "per_image"):
        torch.testing.assert_close(gif_round_trip(flat, palette=palette), (flat * 255).round().double())
    renders = render_shapes3d(SHAPES3D.unravel(torch.tensor([7, 14, 30007, 400014])), version="2")
    shared = psnr(renders * 255, gif_round_trip(renders, "bicubic", "shared"))
    own = psnr(renders * 255, gif_round_trip(renders, "bicubic", "per_image"))
    # The trip loses detail at edges: the bound is finite, high, and a palette per image loses less.
    assert bool(((shared > 30) & (shared < 45)).all()), shared
    assert float(own.mean()) >= float(shared.mean()) - 0.1
    with pytest.raises(ValueError, match="resample"):
        gif_round_trip(renders, "box")
