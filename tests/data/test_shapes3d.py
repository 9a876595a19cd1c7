"""3D Shapes: factor space, procedural twin and the reader of the real ``3dshapes.h5``."""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from datamodules.shapes3d import (
    SHAPE_NAMES,
    SHAPES3D,
    SKY_RGB,
    read_shapes3d,
    render_shapes3d,
    shapes3d_surface_weights,
    shapes3d_twin,
)

SHARED_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
REAL_FRAMES = SHARED_DATA / "shapes3d_real_frames.npz"
FLOOR_HUE, WALL_HUE, OBJECT_HUE, SCALE, SHAPE, ORIENTATION = range(6)
AZIMUTH_0 = 7  # orientation class of azimuth 0 degrees


def state(floor=0, wall=6, obj=3, scale=0, shape=0, orientation=AZIMUTH_0) -> list[int]:
    return [floor, wall, obj, scale, shape, orientation]


def render(*states: list[int]) -> torch.Tensor:
    return render_shapes3d(torch.tensor(states))


def surface_weights(s: list[int]) -> torch.Tensor:
    """``(4, 64, 64)`` floor / wall / object / sky weights of a state's geometry."""
    combo = (s[SCALE] * 4 + s[SHAPE]) * 15 + s[ORIENTATION]
    return shapes3d_surface_weights()[combo]


# --- factor space ----------------------------------------------------------------------------------
def test_factor_space_matches_the_dataset():
    assert SHAPES3D.name == "shapes3d"
    assert SHAPES3D.names == ("floor_hue", "wall_hue", "object_hue", "scale", "shape", "orientation")
    assert SHAPES3D.sizes == (10, 10, 10, 8, 4, 15)
    assert SHAPES3D.bases == (48000, 4800, 480, 60, 15, 1)
    assert SHAPES3D.num_states == 480_000
    for hue in SHAPES3D.factors[:3]:
        assert hue.values == (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9) and hue.cyclic
    np.testing.assert_allclose(SHAPES3D.factors[SCALE].values, np.linspace(0.75, 1.25, 8))
    assert SHAPES3D.factors[SHAPE].values == (0.0, 1.0, 2.0, 3.0)
    np.testing.assert_allclose(SHAPES3D.factors[ORIENTATION].values, np.linspace(-30, 30, 15))
    assert not SHAPES3D.factors[SCALE].cyclic and not SHAPES3D.factors[ORIENTATION].cyclic
    assert SHAPE_NAMES == ("cube", "cylinder", "sphere", "capsule")


def test_index_and_classes_round_trip():
    index = torch.arange(SHAPES3D.num_states)
    classes = SHAPES3D.unravel(index)
    assert torch.equal(SHAPES3D.ravel(classes), index)
    assert classes[1].tolist() == [0, 0, 0, 0, 0, 1]  # orientation fastest
    assert int(SHAPES3D.ravel(torch.tensor([1, 2, 3, 4, 2, 5]))) == 48000 + 9600 + 1440 + 240 + 30 + 5
    assert SHAPES3D.values(torch.tensor([9, 0, 5, 7, 3, 14])).tolist() == [0.9, 0.0, 0.5, 1.25, 3.0, 30.0]


# --- twin: basic contract ---------------------------------------------------------------------------
def test_twin_renders_deterministic_float_images_in_unit_range():
    classes = SHAPES3D.sample(64, torch.Generator().manual_seed(0))
    first, second = render_shapes3d(classes), render_shapes3d(classes.clone())
    assert first.shape == (64, 3, 64, 64) and first.dtype == torch.float32
    assert torch.equal(first, second)
    assert float(first.min()) >= 0.0 and float(first.max()) <= 1.0
    twin = shapes3d_twin()
    assert twin.space is SHAPES3D and twin.channels == 3 and twin.is_twin
    assert twin.description == "3D Shapes procedural twin"
    assert torch.equal(twin.render(classes), first)


def test_twin_renders_on_the_device_of_the_classes():
    classes = torch.tensor([state()])
    assert render_shapes3d(classes).device == classes.device
    with pytest.raises(ValueError, match="orientation"):
        render_shapes3d(torch.tensor([state(orientation=15)]))
    with pytest.raises(ValueError, match="6 factors"):
        render_shapes3d(torch.zeros(2, 5, dtype=torch.long))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_twin_renders_on_cuda_like_on_cpu():
    classes = SHAPES3D.sample(256, torch.Generator().manual_seed(1))
    on_gpu = render_shapes3d(classes.cuda())
    assert on_gpu.device.type == "cuda"
    torch.testing.assert_close(on_gpu.cpu(), render_shapes3d(classes), atol=1e-5, rtol=0)


# --- twin: what each factor does ------------------------------------------------------------------
def test_sky_at_the_top_has_the_sky_colour():
    sky = torch.tensor(SKY_RGB, dtype=torch.float32) / 255
    # The tallest object at every azimuth, with every hue at its most different.
    images = render(*(state(floor=9, wall=5, obj=1, scale=7, shape=3, orientation=o) for o in range(15)))
    top = images[:, :, :4, :].permute(0, 2, 3, 1).reshape(-1, 3)
    assert float((top - sky).abs().max()) <= 1e-6


@pytest.mark.parametrize("geometry", [(0, 0, 0), (7, 3, AZIMUTH_0), (3, 2, 14), (5, 1, 4)])
def test_each_hue_factor_colours_only_its_own_surface(geometry):
    scale, shape, orientation = geometry
    weights = surface_weights(state(scale=scale, shape=shape, orientation=orientation))
    changed = {}
    for factor, surface in ((FLOOR_HUE, 0), (WALL_HUE, 1), (OBJECT_HUE, 2)):
        states = []
        for hue in range(10):
            s = state(scale=scale, shape=shape, orientation=orientation)
            s[factor] = hue
            states.append(s)
        images = render(*states)
        changed[factor] = (images != images[:1]).any(dim=1).any(dim=0)  # (64, 64)
        support = weights[surface] > 0
        assert bool(changed[factor].any())
        assert not bool((changed[factor] & ~support).any()), "a hue changed pixels outside its surface"
        # Pixels covered by this surface alone change with its hue and nothing else.
        alone = support & (weights.sum(0) == weights[surface])
        assert bool(changed[factor][alone].all())
    # The three surfaces overlap only on anti-aliased boundary pixels.
    for a, b in ((FLOOR_HUE, WALL_HUE), (FLOOR_HUE, OBJECT_HUE), (WALL_HUE, OBJECT_HUE)):
        assert int((changed[a] & changed[b]).sum()) < 0.04 * 64 * 64


def test_every_orientation_step_changes_the_image():
    images = render(*(state(orientation=o) for o in range(15)))
    changed_pixels = ((images[1:] - images[:-1]).abs().amax(dim=1) > 1 / 255).sum(dim=(1, 2))
    assert bool((changed_pixels > 200).all()), changed_pixels
    # Azimuth -x and +x mirror the room left-right, so the two views differ.
    assert float((images[0] - images[14]).abs().mean()) > 0.02


@pytest.mark.parametrize("shape", range(4))
def test_object_pixel_count_grows_with_scale(shape):
    counts = [float(surface_weights(state(scale=s, shape=shape)).bool()[2].sum()) for s in range(8)]
    assert all(b > a for a, b in zip(counts, counts[1:])), counts
    assert counts[-1] > 1.5 * counts[0]


def test_layout_marks_at_azimuth_0():
    """datasets.md: sky rows 0-16, back wall rows 17-40, floor from row 41, object centred."""
    weights = surface_weights(state(scale=0, shape=0, orientation=AZIMUTH_0))
    for col in (4, 59):  # beside the object
        column = weights[:, :, col].argmax(0).tolist()  # dominant surface of each row
        first_wall, first_floor = column.index(1), column.index(0)
        assert abs(first_wall - 17) <= 1 and abs(first_floor - 41) <= 1, (col, column)
        assert set(column[:first_wall]) == {3}
    cols = torch.nonzero(weights[2].sum(0) > 0.5).flatten()
    assert abs((int(cols.min()) + int(cols.max())) / 2 - 31.5) <= 1  # centred


@pytest.mark.parametrize("orientation, corner", [(0, 44), (14, 20)])
def test_wall_corner_columns_at_plus_minus_30_degrees(orientation, corner):
    """The back wall meets a darker side wall near column 44 at -30 deg and column 20 at +30 deg."""
    weights = surface_weights(state(orientation=orientation))
    back_wall = torch.nonzero((weights[1, 25] > 0.9) & (weights[0, 25] == 0)).flatten()
    edge = int(back_wall.max()) + 1 if orientation == 0 else int(back_wall.min())
    assert abs(edge - corner) <= 1, edge


@pytest.mark.skipif(not REAL_FRAMES.exists(), reason=f"real 3D Shapes frames not found at {REAL_FRAMES}")
def test_twin_is_close_to_real_frames_of_the_orientation_sweep():
    from PIL import Image

    with np.load(REAL_FRAMES) as data:
        frames = data["images"][[0, 7, 14]]
    real = np.stack([np.asarray(Image.fromarray(f).resize((64, 64), Image.BOX)) for f in frames])
    real = torch.from_numpy(real).permute(0, 3, 1, 2).float()
    # The GIF's orientation sweep: red floor, blue wall, green cube at the smallest scale.
    twin = render(*(state(floor=0, wall=6, obj=3, scale=0, shape=0, orientation=o) for o in (0, 7, 14))) * 255
    errors = (twin - real).abs().mean(dim=(1, 2, 3))
    assert bool((errors < 11).all()), errors


# --- reader of the real file ----------------------------------------------------------------------
NUM_ROWS = 600


def write_h5(path: Path, num_rows: int = NUM_ROWS, **overrides) -> tuple[np.ndarray, np.ndarray]:
    images = np.random.default_rng(0).integers(0, 256, (num_rows, 64, 64, 3), dtype=np.uint8)
    labels = SHAPES3D.values(SHAPES3D.unravel(torch.arange(num_rows))).numpy()
    datasets = {"images": images, "labels": labels, **overrides}
    with h5py.File(path, "w") as f:
        for key, value in datasets.items():
            if value is not None:
                f.create_dataset(key, data=value)
    return images, labels


def test_reader_round_trips_images_and_classes_through_the_cache(tmp_path):
    images, _ = write_h5(tmp_path / "3dshapes.h5")
    source = read_shapes3d(tmp_path / "3dshapes.h5", cache_root=tmp_path / "cache", allow_subset=True)
    assert len(source) == NUM_ROWS and source.channels == 3 and not source.is_twin
    assert source.space is SHAPES3D
    np.testing.assert_array_equal(source.images, images)
    assert source.labels.dtype == np.int64
    np.testing.assert_array_equal(source.labels, SHAPES3D.unravel(torch.arange(NUM_ROWS)).numpy())
    # A folder holding the file works too.
    assert len(read_shapes3d(tmp_path, cache_root=tmp_path / "cache", allow_subset=True)) == NUM_ROWS


def test_reader_reuses_the_cache_and_fetches_rows_from_it(tmp_path):
    path, cache_root = tmp_path / "3dshapes.h5", tmp_path / "cache"
    images, _ = write_h5(path)
    read_shapes3d(path, cache_root=cache_root, allow_subset=True)
    (cache_dir,) = [d for d in cache_root.iterdir() if d.name.startswith("shapes3d-")]
    stamp = os.stat(cache_dir / "images.npy").st_mtime_ns
    source = read_shapes3d(path, cache_root=cache_root, allow_subset=True)
    assert os.stat(cache_dir / "images.npy").st_mtime_ns == stamp
    assert [d.name for d in cache_root.iterdir()] == [cache_dir.name]  # no second cache
    rows = np.array([599, 3, 250, 3, 0])
    batch = source.fetch(rows)
    assert batch.dtype == torch.uint8 and batch.shape == (5, 64, 64, 3)
    np.testing.assert_array_equal(batch.numpy(), images[rows])


def test_reader_wants_all_rows_unless_told_otherwise(tmp_path):
    write_h5(tmp_path / "3dshapes.h5")
    with pytest.raises(ValueError, match=r"600 rows.*480000.*allow_subset=True"):
        read_shapes3d(tmp_path / "3dshapes.h5", cache_root=tmp_path / "cache")


def test_reader_rejects_labels_out_of_index_order(tmp_path):
    labels = SHAPES3D.values(SHAPES3D.unravel(torch.arange(NUM_ROWS))).numpy()
    labels[480:, 2] = 1.0 / 9  # linspace(0, 1, 10) hues are not the dataset's
    write_h5(tmp_path / "3dshapes.h5", labels=labels)
    with pytest.raises(ValueError, match=r"row 480 stores object_hue = 0\.111111.*has 0\.1"):
        read_shapes3d(tmp_path / "3dshapes.h5", cache_root=tmp_path / "cache", allow_subset=True)
    assert not any((tmp_path / "cache").glob("shapes3d-*")), "a failed conversion left a cache behind"


def test_missing_file_names_the_path_and_the_twin(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        read_shapes3d(tmp_path / "nowhere" / "3dshapes.h5", cache_root=tmp_path)
    message = str(err.value)
    assert str(tmp_path / "nowhere" / "3dshapes.h5") in message
    assert "Without --data-root the procedural twin is used" in message


def test_wrong_keys_say_what_is_missing_and_what_to_do(tmp_path):
    write_h5(tmp_path / "3dshapes.h5", labels=None, latents=np.zeros((NUM_ROWS, 6)))
    with pytest.raises(ValueError) as err:
        read_shapes3d(tmp_path / "3dshapes.h5", cache_root=tmp_path / "cache", allow_subset=True)
    message = str(err.value)
    assert str(tmp_path / "3dshapes.h5") in message
    assert "lacks 'labels'" in message and "'latents'" in message
    assert "'images' (N, 64, 64, 3) uint8" in message and "procedural twin" in message


def test_wrong_image_shape_is_reported(tmp_path):
    write_h5(tmp_path / "3dshapes.h5", images=np.zeros((NUM_ROWS, 32, 32, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match=r"'images' is \(600, 32, 32, 3\) uint8"):
        read_shapes3d(tmp_path / "3dshapes.h5", cache_root=tmp_path / "cache", allow_subset=True)


def test_truncated_file_is_reported_as_truncated_or_corrupt(tmp_path):
    path = tmp_path / "3dshapes.h5"
    write_h5(path)
    with open(path, "r+b") as f:
        f.truncate(path.stat().st_size // 2)
    with pytest.raises(ValueError) as err:
        read_shapes3d(path, cache_root=tmp_path / "cache", allow_subset=True)
    message = str(err.value)
    assert str(path) in message and "truncated or corrupt" in message and "Download 3dshapes.h5 again" in message
    assert not any((tmp_path / "cache").glob("shapes3d-*"))
