"""3D Shapes twin: the quadratic object shading and the point shadow light of version 3, and the
least-squares fit that gave version 3 its shading."""

from __future__ import annotations

import dataclasses
import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from datamodules.shapes3d import SCENE_V2, SHAPES3D, TWIN_VERSIONS, Shapes3DScene, raycast, render_shapes3d
from datamodules.shapes3d.fidelity import psnr, real_frames_64
from datamodules.shapes3d.raycast import _build_weight_table, _point_shadow_map
from datamodules.shapes3d.shading import camera_frame_normals, object_shade, shading_features

ROOT = Path(__file__).resolve().parents[2]
REAL_FRAMES = ROOT.parent / "shared" / "data" / "shapes3d_real_frames.npz"
STATES = torch.tensor([0, 7, 123457, 250000, 479999])
# Version 2 rendered by the code before version 3 existed: its table is unchanged bit for bit (the
# sums of its whole table, plain and weighted, and of five renders).
V2_SUMS = [5384.278419837356, 5566.670487195253, 7939.059850802645, 7337.349880620837, 6710.349026247859]
V2_TABLE_SUMS = (1876968.2168986741, 916075675.5576525)
# Version 3 rendered by the code before version 4 existed, likewise; and version 4 as released here.
V3_SUMS = [5414.113525384368, 5579.799112425011, 7960.258694768228, 7378.660796287797, 6648.386788306816]
V3_TABLE_SUMS = (1883457.9483375316, 919234264.6757175)
V4_SUMS = [5422.818615860539, 5584.858347581001, 7946.955162342514, 7381.855307760365, 6665.654465165571]
V4_TABLE_SUMS = (1877891.816839221, 916543242.797545)
pytestmark = pytest.mark.usefixtures("one_thread")  # table builds are slow with two threads on a shared CPU
AZIMUTHS = torch.deg2rad(torch.tensor(SHAPES3D.factors[5].values, dtype=torch.float64))


def test_version_2_renders_as_before_and_version_3_keeps_its_sky():
    classes = SHAPES3D.unravel(STATES)
    v2 = render_shapes3d(classes, version="2")
    np.testing.assert_allclose(v2.double().sum(dim=(1, 2, 3)).numpy(), V2_SUMS, rtol=1e-7)
    table = raycast.shapes3d_surface_weights("cpu", SCENE_V2).double()
    weights = (torch.arange(table.numel(), dtype=torch.float64) % 977).reshape(table.shape)
    assert (float(table.sum()), float((table * weights).sum())) == pytest.approx(V2_TABLE_SUMS, rel=1e-12)
    v3 = render_shapes3d(classes, version="3")
    changed = (v3 - v2).abs().amax(1) > 0  # (B, 64, 64)
    # Version 3 keeps version 2's sky and walls (its orbit centre moved 0.015 to the right, which shifts
    # the room by a fraction of a pixel below the walls' top): the top rows agree.
    assert not changed[:, :6].any()  # above the tallest object
    assert changed.flatten(1).any(1).all()


def test_shading_features_are_the_quadratic_harmonics_of_the_normal():
    up = torch.tensor([[0.0, 0.0, 1.0]], dtype=torch.float64)
    assert shading_features(up).tolist() == [[1.0, 0.0, 0.0, 1.0, 0.0, 2.0, 0.0, 0.0, 0.0]]
    n = torch.nn.functional.normalize(torch.tensor([[1.0, 2.0, 2.0]], dtype=torch.float64), dim=-1)
    x, y, z = (1 / 3, 2 / 3, 2 / 3)
    assert shading_features(n)[0].tolist() == pytest.approx([1, x, y, z, x * x - y * y, 3 * z * z - 1, x * y, x * z,
                                                             y * z])


def test_camera_frame_normals_turn_with_the_camera():
    # At azimuth 0 (orientation 7) the camera looks along +y: right is +x, towards the camera is -y.
    n = torch.tensor([[1.0, 0.0, 0.0], [0.0, -1.0, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    assert torch.allclose(camera_frame_normals(n, torch.tensor([7, 7, 7])), torch.eye(3, dtype=torch.float64))
    # At every azimuth, the world direction towards that camera is (0, 1, 0) in its frame.
    towards = torch.stack([torch.sin(AZIMUTHS), -torch.cos(AZIMUTHS), torch.zeros_like(AZIMUTHS)], -1)
    seen = camera_frame_normals(towards, torch.arange(15))
    assert torch.allclose(seen, torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64).expand(15, 3))


def test_quadratic_shading_reduces_to_the_light_it_replaces_and_turns_with_the_camera():
    normals = torch.nn.functional.normalize(torch.randn(50, 3, generator=torch.Generator().manual_seed(0),
                                                        dtype=torch.float64), dim=-1)
    orientation = torch.arange(50) % 15
    lights = torch.zeros(50, 3, dtype=torch.float64)
    flat = dataclasses.replace(SCENE_V2, object_ambient=0.7, object_diffuse=0.0)
    constant = dataclasses.replace(SCENE_V2, object_shading_world=(0.7,) + (0.0,) * 8)
    assert torch.equal(object_shade(flat, normals, lights, orientation),
                       object_shade(constant, normals, lights, orientation))
    # A light that turns with the camera: a normal facing the camera gets one shade at every azimuth.
    camera = dataclasses.replace(constant, object_shading_camera=(0.0, 0.2, 0.0, 0.0, 0.0, 0.0))
    towards = torch.stack([torch.sin(AZIMUTHS), -torch.cos(AZIMUTHS), torch.zeros_like(AZIMUTHS)], -1)
    shades = object_shade(camera, towards, lights[:15], torch.arange(15))
    assert torch.allclose(shades, torch.full((15,), 0.9, dtype=torch.float64))
    # Turned away from the camera, the shade is clamped at 0, never negative.
    dark = dataclasses.replace(camera, object_shading_camera=(0.0, 5.0, 0.0, 0.0, 0.0, 0.0))
    assert float(object_shade(dark, -towards, lights[:15], torch.arange(15)).max()) == 0.0


def test_scene_refuses_shading_coefficients_of_the_wrong_count():
    with pytest.raises(ValueError, match="object_shading_world takes 9 coefficients, got 3"):
        Shapes3DScene(object_shading_world=(1.0, 0.0, 0.0))
    with pytest.raises(ValueError, match="object_sky_world takes 9 coefficients, got 2"):
        Shapes3DScene(object_sky_world=(0.1, 0.0))
    with pytest.raises(ValueError, match="object_shading_camera takes 6 coefficients.*world unset"):
        Shapes3DScene(object_shading_camera=(0.0,) * 6)
    with pytest.raises(ValueError, match=r"object_shading_camera takes 6 coefficients.*\(got 8"):
        Shapes3DScene(object_shading_world=(1.0,) + (0.0,) * 8, object_shading_camera=(0.0,) * 8)


def shadow_area_and_centre(scene: Shapes3DScene, shape: int, scale: float) -> tuple[float, torch.Tensor]:
    occluded, reach = _point_shadow_map(scene, shape, scale)
    n = occluded.shape[0]
    axis = torch.linspace(-reach, reach, n, dtype=torch.float64)
    texel = (2 * reach / (n - 1)) ** 2
    gy, gx = torch.meshgrid(axis, axis, indexing="ij")
    total = occluded.sum()
    return float(total * texel), torch.stack([(occluded * gx).sum(), (occluded * gy).sum()]) / total


def test_a_point_light_casts_a_shadow_away_from_it_that_grows_faster_than_its_object():
    scene = dataclasses.replace(SCENE_V2, shadow_light_xyz=(-0.5, 0.1, 1.5), shadow_samples=4,
                                shadow_texels_per_unit=64)
    small, centre = shadow_area_and_centre(scene, 3, 0.75)  # a capsule, smallest and largest scale
    large, _ = shadow_area_and_centre(scene, 3, 1.25)
    light_xy = torch.tensor([-0.5, 0.1], dtype=torch.float64) - torch.tensor(scene.object_xy, dtype=torch.float64)
    assert float(centre @ light_xy) < 0  # the shadow falls on the side away from the light
    assert large / small > (1.25 / 0.75) ** 2 * 1.05  # a distant light would give exactly the square
    # A light far overhead casts the footprint's own disc: a sphere's shadow is about pi r^2.
    overhead = dataclasses.replace(scene, shadow_light_xyz=(scene.object_xy[0], scene.object_xy[1], 200.0),
                                   shadow_spread=0.0, shadow_texels_per_unit=256)
    area, centre = shadow_area_and_centre(overhead, 2, 1.0)
    assert area == pytest.approx(math.pi * SCENE_V2.sphere_radius**2, rel=0.03)
    assert float(centre.abs().max()) < 0.01


def load_fit_script():
    spec = importlib.util.spec_from_file_location("shapes3d_twin_fit", ROOT / "benchmarks" / "shapes3d_twin_fit.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_shading_fit_recovers_the_coefficients_of_frames_rendered_with_them(capsys):
    fit = load_fit_script()
    truth = TWIN_VERSIONS["3"]
    states = SHAPES3D.sample(12, torch.Generator().manual_seed(1))
    frames = render_shapes3d(states, truth).double() * 255  # float frames: no rounding to undo
    unshaded = dataclasses.replace(truth, object_shading_world=None, object_shading_camera=None, object_sky_world=None)
    fitted = fit.fit_object_shading(unshaded, frames, states, list(range(12)), [])
    got = torch.tensor(fitted.object_shading_world + fitted.object_shading_camera + fitted.object_sky_world)
    want = torch.tensor(truth.object_shading_world + truth.object_shading_camera + truth.object_sky_world)
    assert torch.allclose(got, want, atol=2e-3), (got, want)
    assert "shading RMSE 0.0000" in capsys.readouterr().out


@pytest.mark.skipif(not REAL_FRAMES.exists(), reason=f"real 3D Shapes frames not found at {REAL_FRAMES}")
def test_version_3_is_closer_to_the_real_frames_than_version_2():
    frames = [0, 7, 14, 20, 30, 45]  # their nearest states are the same under versions 2 and 3
    states = SHAPES3D.unravel(torch.tensor([30300, 30307, 30314, 30479, 33599, 20639]))
    with np.load(REAL_FRAMES) as data:
        real = real_frames_64(data["images"][frames])
    v2 = psnr(render_shapes3d(states, version="2") * 255, real)
    v3 = psnr(render_shapes3d(states, version="3") * 255, real)
    assert float((v3 - v2).mean()) > 0.3, (v2, v3)


def test_the_command_lines_offer_every_twin_version():
    from causal_vqvae.cli.common import TWIN_VERSIONS as CLI_VERSIONS

    assert CLI_VERSIONS == tuple(sorted(TWIN_VERSIONS))



def test_the_sky_tint_adds_the_skys_colour_on_the_object_only_and_the_lamp_casts_a_full_shadow():
    classes = SHAPES3D.unravel(STATES)
    untinted = dataclasses.replace(TWIN_VERSIONS["3"], object_sky_world=None)
    tinted = dataclasses.replace(untinted, object_sky_world=(0.1,) + (0.0,) * 8)
    rows = (classes[:, 3] * 4 + classes[:, 4]) * 15 + classes[:, 5]
    a, b = _build_weight_table(untinted)[rows], _build_weight_table(tinted)[rows]  # (B, 4, 64, 64)
    on_object = a[:, 2] > 0
    assert torch.equal(a[:, :3], b[:, :3])  # the object's own shading, walls and floor are untouched
    assert torch.equal(a[:, 3][~on_object], b[:, 3][~on_object])  # so is the sky off the object
    inner = a[:, 2] > 0.3  # pixels mostly on the object: their sky weight grows by 0.1 times the coverage
    assert bool(((b[:, 3] - a[:, 3])[inner] > 0.02).all()) and float((b[:, 3] - a[:, 3]).max()) <= 0.1 + 1e-6
    # In the table, the lamp's shadow darkens the floor to shadow_gain of its light at its core.
    origins, dirs = raycast._camera_rays(untinted)
    room = raycast._room(untinted, origins, dirs)[0].view(15, 4, 192, 192)
    lit = torch.nn.functional.avg_pool2d(room[:, 0], 3).float()[classes[:, 5]]  # (B, 64, 64) unshadowed floor
    ratio = a[:, 0] / lit.clamp_min(1e-6)
    on_floor = (lit > 0.5) & (a[:, 2] == 0)
    darkest = torch.where(on_floor, ratio, torch.ones_like(ratio)).flatten(1).min(1).values
    assert torch.allclose(darkest, torch.full_like(darkest, untinted.shadow_gain), atol=0.02), darkest


@pytest.mark.parametrize(("version", "sums", "table_sums"),
                         [("3", V3_SUMS, V3_TABLE_SUMS), ("4", V4_SUMS, V4_TABLE_SUMS)])
def test_versions_3_and_4_render_as_when_they_were_fitted(version, sums, table_sums):
    images = render_shapes3d(SHAPES3D.unravel(STATES), version=version)
    np.testing.assert_allclose(images.double().sum(dim=(1, 2, 3)).numpy(), sums, rtol=1e-7)
    table = raycast.shapes3d_surface_weights("cpu", TWIN_VERSIONS[version]).double()
    weights = (torch.arange(table.numel(), dtype=torch.float64) % 977).reshape(table.shape)
    assert (float(table.sum()), float((table * weights).sum())) == pytest.approx(table_sums, rel=1e-12)


def test_a_table_of_some_scales_and_shapes_casts_those_rows_alike_and_leaves_the_rest_zero():
    scene = TWIN_VERSIONS["3"]
    full = raycast.shapes3d_surface_weights("cpu", scene).view(8, 4, 15, 4, 64, 64)
    some = _build_weight_table(scene, {(1, 0), (7, 3)}).view(8, 4, 15, 4, 64, 64)
    for scale, shape in ((1, 0), (7, 3)):
        assert torch.equal(some[scale, shape], full[scale, shape])
    some[1, 0] = 0
    some[7, 3] = 0
    assert not bool(some.any())
    with pytest.raises(ValueError, match=r"scale index 0\.\.7, shape 0\.\.3\), got \[\(8, 0\)\]"):
        _build_weight_table(scene, {(8, 0)})


def test_a_scene_refuses_negative_sizes_naming_them():
    with pytest.raises(ValueError, match=r"cannot be negative: shadow_spread=-0\.005"):
        dataclasses.replace(TWIN_VERSIONS["3"], shadow_spread=-0.005)
    with pytest.raises(ValueError, match=r"cube_side=-0\.1, shadow_gain=-1"):
        Shapes3DScene(cube_side=-0.1, shadow_gain=-1)
    with pytest.raises(ValueError, match=r"must be above 0: camera_radius, field_of_view_deg"):
        Shapes3DScene(camera_radius=0.0, field_of_view_deg=0.0)
    assert Shapes3DScene(shadow_spread=0.0).shadow_spread == 0.0  # a point light is a scene


@pytest.mark.skipif(not REAL_FRAMES.exists(), reason=f"real 3D Shapes frames not found at {REAL_FRAMES}")
def test_version_4_is_closer_to_the_real_frames_than_version_3_on_every_frame():
    frames = [0, 7, 14, 20, 30, 45]  # their nearest states are the same under versions 2, 3 and 4
    states = SHAPES3D.unravel(torch.tensor([30300, 30307, 30314, 30479, 33599, 20639]))
    with np.load(REAL_FRAMES) as data:
        real = real_frames_64(data["images"][frames])
    v3 = psnr(render_shapes3d(states, version="3") * 255, real)
    v4 = psnr(render_shapes3d(states, version="4") * 255, real)
    assert bool((v4 > v3 + 1.5).all()) and float(v4.mean()) > 30.0, (v3, v4)


def test_the_fits_error_shares_put_an_error_where_it_was_made():
    fit = load_fit_script()
    scene = TWIN_VERSIONS["3"]
    states = SHAPES3D.unravel(torch.tensor([30300, 30307, 33599]))
    clean = fit.Objective(torch.zeros(3, 3, 64, 64), states)
    weights = _build_weight_table(scene, clean.pairs)[clean.combo].double()
    images = torch.einsum("nshw,ncs->nchw", weights, clean.colours.double()).clamp(0, 1) * 255
    blur = clean.blur.double()
    targets = blur @ images @ blur.T
    # An error on a block of sky pixels far from any edge, and a smaller one in the floor's middle.
    targets[:, :, 1:4, 5:12] += 10.0
    targets[0, :, 60:63, 30:34] += 5.0
    shares = fit.error_shares(scene, fit.Objective(targets.float(), states))
    assert list(shares) == list(fit.REGIONS)
    assert sum(s["pixels"] for s in shares.values()) == pytest.approx(1.0, abs=0.01)
    sky_error = 3 * 3 * 3 * 7 * 100.0
    floor_error = 3 * 3 * 4 * 25.0
    assert shares["sky"]["squared_error"] == pytest.approx(sky_error / (sky_error + floor_error), abs=0.01)
    assert shares["floor"]["squared_error"] == pytest.approx(floor_error / (sky_error + floor_error), abs=0.01)
    assert shares["object outline"]["squared_error"] < 0.01 and shares["wall top"]["squared_error"] < 0.01
    # The regions come from coverage, not brightness: the flat scene's weights are shares of each pixel.
    cover = _build_weight_table(fit.coverage_scene(scene), clean.pairs)[clean.combo]
    torch.testing.assert_close(cover.sum(1), torch.ones(3, 64, 64), atol=1e-5, rtol=0)
    dark = dataclasses.replace(scene, object_shading_world=(0.05,) + (0.0,) * 8, object_shading_camera=None)
    dark_shares = fit.error_shares(dark, fit.Objective(targets.float(), states))
    assert dark_shares["object"]["pixels"] == shares["object"]["pixels"]
