"""dSprites: factor space, procedural twin (fidelity to real frames) and the real-file reader."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch

import datamodules.dsprites.reader as dsprites_reader
from datamodules.dsprites import (
    DSPRITES,
    SHAPE_NAMES,
    dsprites_twin,
    read_dsprites,
    render_dsprites,
)

SHARED_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
REAL_FRAMES = SHARED_DATA / "dsprites_real_frames.npz"


def _state(shape: int = 0, scale: int = 5, orientation: int = 0, pos_x: int = 15, pos_y: int = 15) -> list[int]:
    return [0, shape, scale, orientation, pos_x, pos_y]


def _render(states: list[list[int]]) -> torch.Tensor:
    """(B, 64, 64) float images of a list of class vectors."""
    return render_dsprites(torch.tensor(states))[:, 0]


def _centre_of_mass(image: torch.Tensor) -> tuple[float, float]:
    """(row, column) of the mass centre of a (64, 64) image."""
    rows, cols = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
    mass = image.sum()
    return float((rows * image).sum() / mass), float((cols * image).sum() / mass)


@pytest.fixture(scope="module")
def real_frames() -> tuple[np.ndarray, np.ndarray]:
    if not REAL_FRAMES.exists():
        pytest.skip(f"real dSprites frames not found at {REAL_FRAMES} (they live in ../shared/data beside the repo)")
    with np.load(REAL_FRAMES, allow_pickle=False) as data:
        return data["imgs"], data["latents_classes"]


# --------------------------------------------------------------------------------------------------
# Factor space
# --------------------------------------------------------------------------------------------------
def test_factor_space_has_the_dataset_sizes_values_and_bases() -> None:
    assert DSPRITES.names == ("color", "shape", "scale", "orientation", "posX", "posY")
    assert DSPRITES.sizes == (1, 3, 6, 40, 32, 32)
    assert DSPRITES.bases == (737280, 245760, 40960, 1024, 32, 1)
    assert DSPRITES.num_states == 737280
    assert SHAPE_NAMES == ("square", "ellipse", "heart")
    orientation = DSPRITES.factors[DSPRITES.factor_index("orientation")]
    assert orientation.cyclic and orientation.cycle == 39
    assert orientation.values[-1] == pytest.approx(2 * math.pi)
    assert DSPRITES.factors[2].values == pytest.approx(np.linspace(0.5, 1.0, 6).tolist())
    assert DSPRITES.factors[4].values == pytest.approx(np.linspace(0.0, 1.0, 32).tolist())


def test_ravel_and_unravel_round_trip_on_the_real_frames(real_frames) -> None:
    _, classes = real_frames
    index = DSPRITES.ravel(classes)
    assert torch.equal(index, torch.from_numpy(classes @ np.array(DSPRITES.bases)))
    assert torch.equal(DSPRITES.unravel(index), torch.from_numpy(classes))


# --------------------------------------------------------------------------------------------------
# Renderer
# --------------------------------------------------------------------------------------------------
def test_renderer_reproduces_the_real_frames(real_frames) -> None:
    images, classes = real_frames
    rendered = render_dsprites(torch.from_numpy(classes))[:, 0].numpy().astype(np.uint8)
    wrong = rendered != images
    identical = int((~wrong.reshape(len(images), -1).any(1)).sum())
    error = wrong.sum() / images.sum()
    assert identical >= 140, f"only {identical} of {len(images)} frames are pixel-identical"
    assert error < 0.002, f"{100 * error:.3f}% of foreground pixels are wrong"


def test_render_returns_binary_float32_images_on_the_input_device() -> None:
    classes = DSPRITES.sample(64, torch.Generator().manual_seed(0))
    images = render_dsprites(classes)
    assert images.shape == (64, 1, 64, 64) and images.dtype == torch.float32
    assert images.device == classes.device
    assert set(images.unique().tolist()) <= {0.0, 1.0}
    assert bool((images.flatten(1).sum(1) > 0).all()), "every state shows a shape"


def test_chunked_rendering_equals_one_pass() -> None:
    classes = DSPRITES.sample(300, torch.Generator().manual_seed(1))
    whole = render_dsprites(classes, chunk=300)
    assert torch.equal(render_dsprites(classes, chunk=7), whole)
    assert torch.equal(render_dsprites(classes), whole)
    assert torch.equal(render_dsprites(classes.int()), whole), "int32 classes render like int64"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_rendering_matches_cpu() -> None:
    classes = DSPRITES.sample(2000, torch.Generator().manual_seed(2))
    cpu = render_dsprites(classes)
    gpu = render_dsprites(classes.cuda())
    assert gpu.device.type == "cuda"
    # Float rounding may differ only for pixel centres within ~1e-5 px of an edge.
    assert float((gpu.cpu() != cpu).float().mean()) < 1e-5


def test_orientation_class_39_renders_like_class_0() -> None:
    states = [_state(shape=s, scale=k, orientation=o, pos_x=9, pos_y=20)
              for s in range(3) for k in (0, 5) for o in (0, 39)]
    images = _render(states)
    assert torch.equal(images[0::2], images[1::2])
    assert not torch.equal(_render([_state(orientation=1)]), _render([_state(orientation=0)]))


@pytest.mark.parametrize("shape", range(3))
def test_posx_moves_the_shape_right_and_posy_moves_it_down(shape: int) -> None:
    images = _render([_state(shape, pos_x=x, pos_y=10) for x in (0, 10, 20, 31)]
                     + [_state(shape, pos_x=10, pos_y=y) for y in (0, 10, 20, 31)])
    centres = [_centre_of_mass(im) for im in images]
    cols = [c for _, c in centres[:4]]
    rows = [r for r, _ in centres[4:]]
    assert cols == sorted(cols) and cols[-1] - cols[0] == pytest.approx(32, abs=1.0)
    assert rows == sorted(rows) and rows[-1] - rows[0] == pytest.approx(32, abs=1.0)
    assert max(abs(r - centres[0][0]) for r, _ in centres[:4]) < 0.5, "posX must not move rows"
    assert max(abs(c - centres[4][1]) for _, c in centres[4:]) < 0.5, "posY must not move columns"


@pytest.mark.parametrize("shape", range(3))
def test_scale_increases_the_area(shape: int) -> None:
    areas = _render([_state(shape, scale=k, orientation=5) for k in range(6)]).sum((1, 2))
    assert bool((areas[1:] > areas[:-1]).all())
    # Area grows with the square of the scale (0.5 -> 1.0: four times).
    assert float(areas[-1] / areas[0]) == pytest.approx(4.0, rel=0.1)


def test_square_at_orientation_0_is_the_documented_axis_aligned_square() -> None:
    image = _render([_state(shape=0, scale=5, orientation=0, pos_x=0, pos_y=0)])[0]
    # Centre (16, 16), half side 9.6: pixel centres 6.5 .. 25.5 are inside.
    expected = torch.zeros(64, 64)
    expected[6:26, 6:26] = 1
    assert torch.equal(image, expected)


def test_twin_source_renders_dsprites() -> None:
    twin = dsprites_twin()
    assert twin.space is DSPRITES and twin.channels == 1 and twin.is_twin
    assert twin.description == "dSprites procedural twin"
    classes = DSPRITES.sample(5, torch.Generator().manual_seed(3))
    assert torch.equal(twin.render(classes), render_dsprites(classes))


# --------------------------------------------------------------------------------------------------
# Reader
# --------------------------------------------------------------------------------------------------
class _Booby:
    """Unpickling this creates ``marker``: proof that the reader never unpickles ``metadata``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.fixture(scope="module")
def small_dataset() -> tuple[np.ndarray, np.ndarray]:
    """40 random states and their 0/1 uint8 images (read-only: copy before changing)."""
    classes = DSPRITES.sample(40, torch.Generator().manual_seed(4))
    images = render_dsprites(classes)[:, 0].to(torch.uint8).numpy()
    classes = classes.numpy()
    images.flags.writeable = classes.flags.writeable = False
    return images, classes


def _write_npz(path: Path, images: np.ndarray, classes: np.ndarray, marker: Path | None = None,
               compressed: bool = True, **extra) -> Path:
    arrays = {"imgs": images, "latents_classes": classes,
              "latents_values": DSPRITES.values(torch.tensor(classes)).numpy()}
    if marker is not None:
        arrays["metadata"] = np.array([_Booby(marker)], dtype=object)
    arrays.update(extra)
    (np.savez_compressed if compressed else np.savez)(path, **arrays)
    return path


def _write_hdf5(path: Path, images: np.ndarray, classes: np.ndarray) -> Path:
    h5py = pytest.importorskip("h5py")
    with h5py.File(path, "w") as f:
        f.create_dataset("imgs", data=images, chunks=(8, 64, 64))
        f.create_dataset("latents/classes", data=classes)
        f.create_dataset("latents/values", data=DSPRITES.values(torch.tensor(classes)).numpy())
    return path


def test_reader_reads_npz_and_hdf5_and_never_unpickles_metadata(tmp_path, small_dataset, monkeypatch) -> None:
    images, classes = small_dataset
    # Small conversion chunks, so that rows cross chunk boundaries as they do in the real file.
    monkeypatch.setattr(dsprites_reader, "_READ_CHUNK", 7)
    marker = tmp_path / "unpickled"
    npz = _write_npz(tmp_path / "small.npz", images, classes, marker=marker)
    hdf5 = _write_hdf5(tmp_path / "small.hdf5", images, classes)

    from_npz = read_dsprites(npz, cache_root=tmp_path / "cache", allow_subset=True)
    from_hdf5 = read_dsprites(hdf5, cache_root=tmp_path / "cache", allow_subset=True)

    for source in (from_npz, from_hdf5):
        assert source.images.shape == (40, 64, 64, 1) and source.images.dtype == np.uint8
        np.testing.assert_array_equal(source.images[..., 0], images * 255)
        np.testing.assert_array_equal(source.labels, classes)
        assert source.labels.dtype == np.int64 and source.channels == 1 and not source.is_twin
        assert "dSprites real file" in source.description
        assert source.space is None, "a subset's rows are not in factor-space order"
    rows = np.array([5, 0, 39])
    np.testing.assert_array_equal(from_npz.fetch(rows).numpy()[..., 0], images[rows] * 255)
    assert not marker.exists()
    # The trap is live: loading metadata with pickles allowed would have run it.
    with np.load(npz, allow_pickle=True) as data:
        data["metadata"]
    assert marker.exists()


def test_reader_reuses_its_cache(tmp_path, small_dataset) -> None:
    npz = _write_npz(tmp_path / "small.npz", *small_dataset)
    cache = tmp_path / "cache"
    first = read_dsprites(npz, cache_root=cache, allow_subset=True)
    (cache_dir,) = cache.iterdir()
    assert cache_dir.name.startswith("dsprites-")
    built = (cache_dir / "images.npy").stat().st_mtime_ns
    second = read_dsprites(npz, cache_root=cache, allow_subset=True)
    assert (cache_dir / "images.npy").stat().st_mtime_ns == built
    assert [p.name for p in cache.iterdir()] == [cache_dir.name]
    np.testing.assert_array_equal(second.images, first.images)
    # A changed file (new mtime) gets a cache of its own.
    os.utime(npz, ns=(built, built + 10**9))
    read_dsprites(npz, cache_root=cache, allow_subset=True)
    assert len(list(cache.iterdir())) == 2


def test_reader_requires_the_full_file_unless_allow_subset(tmp_path, small_dataset) -> None:
    npz = _write_npz(tmp_path / "small.npz", *small_dataset)
    with pytest.raises(ValueError, match=r"has 40 rows; the full dataset has 737280.*allow_subset=True"):
        read_dsprites(npz, cache_root=tmp_path)
    read_dsprites(npz, cache_root=tmp_path, allow_subset=True)
    # A cached subset is still refused without allow_subset.
    with pytest.raises(ValueError, match="allow_subset=True"):
        read_dsprites(npz, cache_root=tmp_path)


def test_missing_file_says_where_it_looked_and_that_the_twin_is_the_fallback(tmp_path) -> None:
    with pytest.raises(FileNotFoundError) as info:
        read_dsprites(tmp_path / "nowhere" / "dsprites.npz", cache_root=tmp_path)
    message = str(info.value)
    assert str(tmp_path / "nowhere" / "dsprites.npz") in message
    assert "--data-root" in message and "procedural twin" in message


def test_truncated_npz_is_a_clear_error(tmp_path, small_dataset) -> None:
    npz = _write_npz(tmp_path / "small.npz", *small_dataset)
    data = npz.read_bytes()
    npz.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="truncated or corrupt") as info:
        read_dsprites(npz, cache_root=tmp_path / "cache", allow_subset=True)
    assert str(npz) in str(info.value) and "again" in str(info.value)
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())


def test_corrupt_image_bytes_are_a_clear_error_and_leave_no_cache(tmp_path, small_dataset) -> None:
    npz = _write_npz(tmp_path / "small.npz", *small_dataset, compressed=False)
    data = bytearray(npz.read_bytes())
    # The images are stored uncompressed: flip one pixel so only the zip's CRC check can notice.
    at = data.index(b"imgs.npy") + 200 + 64 * 64 * 10
    data[at] ^= 1
    npz.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="truncated or corrupt"):
        read_dsprites(npz, cache_root=tmp_path / "cache", allow_subset=True)
    assert not any((tmp_path / "cache").iterdir()), "a failed conversion must leave no cache behind"


def test_truncated_hdf5_is_a_clear_error(tmp_path, small_dataset) -> None:
    hdf5 = _write_hdf5(tmp_path / "small.hdf5", *small_dataset)
    data = hdf5.read_bytes()
    hdf5.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="truncated or corrupt"):
        read_dsprites(hdf5, cache_root=tmp_path, allow_subset=True)


def test_file_of_another_format_is_a_clear_error(tmp_path) -> None:
    path = tmp_path / "dsprites.npz"
    path.write_text("not a dataset")
    with pytest.raises(ValueError, match=r"neither an \.npz \(zip\) nor an \.hdf5"):
        read_dsprites(path, cache_root=tmp_path)


def test_missing_keys_are_named_with_the_keys_found(tmp_path, small_dataset) -> None:
    images, classes = small_dataset
    npz = tmp_path / "wrong.npz"
    np.savez(npz, imgs=images, classes=classes)
    expected = r"lacks the key\(s\) \['latents_classes'\]; keys found: \['classes', 'imgs'\]"
    with pytest.raises(ValueError, match=expected):
        read_dsprites(npz, cache_root=tmp_path, allow_subset=True)

    h5py = pytest.importorskip("h5py")
    hdf5 = tmp_path / "wrong.hdf5"
    with h5py.File(hdf5, "w") as f:
        f.create_dataset("images", data=images)
        f.create_dataset("latents/classes", data=classes)
    with pytest.raises(ValueError, match=r"lacks the key\(s\) \['imgs'\].*'images'"):
        read_dsprites(hdf5, cache_root=tmp_path, allow_subset=True)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"imgs": np.zeros((40, 32, 32), np.uint8)}, r"imgs must have shape \(N, 64, 64\), got \(40, 32, 32\)"),
        ({"imgs": np.zeros((40, 64, 64), np.float32)}, "imgs must be uint8"),
        ({"latents_classes": np.zeros((40, 5), np.int64)}, r"latents classes must have shape \(N, 6\)"),
        ({"latents_classes": np.zeros((39, 6), np.int64)}, "40 images but 39 rows"),
        ({"imgs": np.full((40, 64, 64), 255, np.uint8)}, "imgs must hold 0/1"),
    ],
)
def test_wrong_shapes_and_dtypes_are_clear_errors(tmp_path, small_dataset, change, message) -> None:
    images, classes = small_dataset
    arrays = {"imgs": images, "latents_classes": classes, **change}
    npz = tmp_path / "bad.npz"
    np.savez(npz, **arrays)
    with pytest.raises(ValueError, match=message):
        read_dsprites(npz, cache_root=tmp_path / "cache", allow_subset=True)


def test_classes_out_of_range_are_a_clear_error(tmp_path, small_dataset) -> None:
    images, classes = small_dataset
    classes = classes.copy()
    classes[3, 3] = 40
    npz = tmp_path / "bad.npz"
    np.savez(npz, imgs=images, latents_classes=classes)
    with pytest.raises(ValueError, match=r"row 3 has class 40 for factor 'orientation', which has 40 classes"):
        read_dsprites(npz, cache_root=tmp_path, allow_subset=True)


def test_full_file_rows_must_follow_the_index_order() -> None:
    classes = DSPRITES.unravel(torch.arange(DSPRITES.num_states)).numpy()
    path = Path("dsprites.npz")
    checked = dsprites_reader._check_classes(path, classes, full=True)
    assert checked.dtype == np.int64
    classes[[10, 11]] = classes[[11, 10]]
    with pytest.raises(ValueError, match="not in dSprites index order.*row 10"):
        dsprites_reader._check_classes(path, classes, full=True)
