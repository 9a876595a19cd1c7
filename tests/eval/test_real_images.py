"""Real 3D Shapes images beside the twin render of their state: the exact nearest-state search,
the readers of GIF frames, 64x64 images and the real file, and the figures the bench reports."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from tiny import TINY

from causal_vqvae import CausalVQVAE, ModelConfig
from causal_vqvae.eval import real_images as real_module
from causal_vqvae.eval.real_images import (
    RealImages,
    evaluate_real_images,
    format_real_images,
    load_real_images,
    real_images_picture,
)
from datamodules.factors import ActionSpace
from datamodules.pairs import split_of
from datamodules.shapes3d import SHAPES3D, render_shapes3d
from datamodules.shapes3d.fidelity import GIF_CONTENT, _framed, nearest_states

pytestmark = pytest.mark.usefixtures("one_thread")

CHOSEN = torch.tensor([0, 12_345, 200_001, 479_999])  # flat state indices


def _candidates() -> torch.Tensor:
    """3,000 states drawn at random plus the chosen ones, shuffled: a search space small enough for a test."""
    drawn = torch.randperm(SHAPES3D.num_states, generator=torch.Generator().manual_seed(0))[:3000]
    pool = torch.unique(torch.cat([drawn, CHOSEN]))
    return pool[torch.randperm(len(pool), generator=torch.Generator().manual_seed(1))]


def _uint8(images: torch.Tensor) -> np.ndarray:
    return (images * 255).round().byte().permute(0, 2, 3, 1).numpy()


def _shapes3d_model() -> CausalVQVAE:
    names = tuple(ActionSpace(SHAPES3D).names)
    torch.manual_seed(0)
    return CausalVQVAE(ModelConfig(in_channels=3, dataset="shapes3d", num_actions=len(names), action_names=names,
                                   **TINY)).eval()


def test_nearest_states_finds_the_brute_force_nearest_among_the_candidates():
    pool = _candidates()
    noisy = render_shapes3d(SHAPES3D.unravel(CHOSEN))
    noisy = (noisy + 0.02 * torch.randn(noisy.shape, generator=torch.Generator().manual_seed(2))).clamp(0, 1)
    index, error = nearest_states(noisy, "1", pool)
    every = render_shapes3d(SHAPES3D.unravel(pool)).double()
    brute = torch.stack([(every - x.double()).square().mean(dim=(1, 2, 3)) for x in noisy])  # (4, candidates)
    assert index.tolist() == pool[brute.argmin(1)].tolist() == CHOSEN.tolist()
    assert torch.allclose(error, brute.min(1).values)
    assert error.max() < 0.001  # the noise's own error, about 0.02 ** 2
    in_pairs = nearest_states(noisy, "1", pool, images_at_once=3)  # searched 3 images at a time
    assert torch.equal(in_pairs[0], index) and torch.equal(in_pairs[1], error)


def test_nearest_states_takes_the_renderer_version_it_is_given():
    pool = _candidates()
    v2 = render_shapes3d(SHAPES3D.unravel(CHOSEN), version="2")
    assert nearest_states(v2, "2", pool)[0].tolist() == CHOSEN.tolist()
    assert nearest_states(v2, "2", pool)[1].max() == 0  # a version-2 render is its own nearest, exactly
    assert nearest_states(v2, "1", pool)[1].min() > 0


@pytest.mark.parametrize("kind", ["gif_frames", "images_64"])
def test_an_npz_of_real_images_is_read_and_each_image_gets_its_nearest_state(tmp_path, kind, monkeypatch):
    renders = render_shapes3d(SHAPES3D.unravel(CHOSEN))
    small = _uint8(renders)
    if kind == "gif_frames":  # as DeepMind's GIF holds them: upscaled to 223x223 inside a 2-pixel frame
        stored = np.stack([_framed(np.asarray(Image.fromarray(x).resize((GIF_CONTENT, GIF_CONTENT), Image.NEAREST)))
                           for x in small])
        assert stored.shape == (4, 227, 226, 3)
    else:
        stored = small
    np.savez(tmp_path / "frames.npz", images=stored)
    cache = tmp_path / "cache"
    real = load_real_images(tmp_path / "frames.npz", cache_root=cache, candidates=_candidates())
    assert real.states.tolist() == SHAPES3D.unravel(CHOSEN).tolist() and real.states_from == "nearest"
    assert real.images.shape == (4, 3, 64, 64) and real.images.dtype == torch.float32
    assert (real.images - renders).abs().mean() < (0.02 if kind == "gif_frames" else 1 / 255)
    assert real.description.startswith("4 real images of frames.npz")
    # the search is cached: a second read does not search again
    monkeypatch.setattr(real_module, "nearest_states", lambda *a, **k: pytest.fail("searched again"))
    again = load_real_images(tmp_path / "frames.npz", cache_root=cache, candidates=_candidates())
    assert torch.equal(again.states, real.states)


def test_a_real_file_gives_held_out_images_with_their_labels(tmp_path):
    h5py = pytest.importorskip("h5py")
    rows = 600
    images = np.random.default_rng(0).integers(0, 256, (rows, 64, 64, 3), dtype=np.uint8)
    labels = SHAPES3D.values(SHAPES3D.unravel(torch.arange(rows))).numpy()
    with h5py.File(tmp_path / "3dshapes.h5", "w") as f:
        f.create_dataset("images", data=images)
        f.create_dataset("labels", data=labels)
    real = load_real_images(tmp_path, count=20, seed=3, cache_root=tmp_path / "cache")
    held_out = np.flatnonzero(split_of(SHAPES3D, SHAPES3D.unravel(torch.arange(rows)).numpy()) == 2)
    assert len(held_out) > 20 and real.states_from == "label" and len(real.states) == 20
    flat = SHAPES3D.ravel(real.states).numpy()
    assert set(flat) <= set(held_out.tolist()) and np.all(np.diff(flat) > 0)
    assert np.array_equal(_uint8(real.images), images[flat])
    assert torch.equal(load_real_images(tmp_path / "3dshapes.h5", count=20, seed=3,
                                        cache_root=tmp_path / "cache").states, real.states)
    assert not torch.equal(load_real_images(tmp_path, count=20, seed=4, cache_root=tmp_path / "cache").states,
                           real.states)


def test_the_twin_renders_themselves_score_no_gap_and_every_valid_action_is_edited():
    model = _shapes3d_model()
    states = SHAPES3D.unravel(torch.tensor([5, 77_777, 300_000]))
    real = RealImages(render_shapes3d(states), states, "3 twin renders", "label")
    report = evaluate_real_images(model, real, "cpu", batch=7)
    edits = report["edits"]
    valid = int(ActionSpace(SHAPES3D).valid_mask(states).sum())
    assert edits["from_real"]["exact"]["n"] == edits["from_twin"]["exact"]["n"] == valid
    assert edits["from_real"] == edits["from_twin"] and edits["gap_points"] == 0
    assert report["reconstruction_db"]["gap"] == 0
    assert report["reconstruction_db"]["real"] == report["reconstruction_db"]["twin"]
    assert report["twin_distance_db"]["mean"] == 100.0  # identical images: the PSNR's floor of 1e-10
    assert report["code_agreement"] == 1.0
    per_factor = edits["from_real"]["per_acted_factor"]
    assert sum(r["exact"]["n"] for r in per_factor.values()) == valid
    json.dumps(report)  # JSON as the bench writes it


def test_real_images_unlike_their_renders_show_the_distance_and_the_gaps():
    model = _shapes3d_model()
    states = SHAPES3D.unravel(torch.tensor([5, 77_777, 300_000]))
    renders = render_shapes3d(states)
    shifted = (renders + 0.1).clamp(0, 1)  # brighter than the twin: about 20 dB away
    report = evaluate_real_images(model, RealImages(shifted, states, "brighter", "nearest"), "cpu")
    expected = 10 * torch.log10(1 / (shifted - renders).square().flatten(1).mean(1))
    assert report["twin_distance_db"]["mean"] == pytest.approx(float(expected.mean()), abs=1e-3)
    assert report["twin_distance_db"]["max"] < 25
    assert 0 <= report["code_agreement"] < 1
    twin = report["reconstruction_db"]["twin"]["mean"]
    assert report["reconstruction_db"]["gap"] == pytest.approx(twin - report["reconstruction_db"]["real"]["mean"],
                                                               abs=1e-2)
    text = format_real_images(report)
    assert "twin render of the same state: PSNR" in text and "edits exact %" in text
    assert text.count("exact %") == 1 + 6  # overall and one row per factor


@pytest.mark.parametrize(("make", "message"), [
    (lambda p: p / "missing.npz", r"real images not found at .*missing\.npz: pass DeepMind's 3D Shapes GIF frames"),
    (lambda p: (p / "a.png").write_bytes(b"x") and p / "a.png",
     r"a\.png: real images are read from an \.npz \(key 'images'\) or 3dshapes\.h5, not a \.png file"),
    (lambda p: np.savez(p / "b.npz", frames=np.zeros((1, 64, 64, 3), np.uint8)) or p / "b.npz",
     r"b\.npz: no 'images' array \(it has frames\); save the frames under the key 'images'"),
    (lambda p: np.savez(p / "c.npz", images=np.zeros((1, 32, 32, 3), np.uint8)) or p / "c.npz",
     r"c\.npz: 'images' must be \(N, 227, 226, 3\) GIF frames or \(N, 64, 64, 3\) images, got \(1, 32, 32, 3\)"),
    (lambda p: np.savez(p / "d.npz", images=np.zeros((1, 64, 64, 3), np.float32)) or p / "d.npz",
     r"d\.npz: 'images' must be uint8 .* got float32"),
    (lambda p: (p / "e.npz").write_bytes(b"not a zip") and p / "e.npz", r"e\.npz: not a readable \.npz"),
    (lambda p: p / "nothing.h5", r"real images not found: .*nothing\.h5 does not exist; pass DeepMind's 3dshapes\.h5"),
    (lambda p: p, r"real images not found: .*3dshapes\.h5 does not exist"),  # a folder without the file
    (lambda p: (p / "3dshapes.h5").write_bytes(b"not hdf5") and p / "3dshapes.h5",
     r"real images .*3dshapes\.h5: not a readable 3dshapes\.h5"),
])
def test_bad_real_image_files_are_refused_naming_the_file_and_what_it_should_hold(tmp_path, make, message):
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        load_real_images(make(tmp_path), cache_root=tmp_path / "cache")


def test_the_real_images_picture_shows_each_real_image_beside_its_render_and_edits():
    from causal_vqvae.eval.pictures import CELL, MARGIN, PAIR_GAP, _pil

    model = _shapes3d_model()
    states = SHAPES3D.unravel(torch.tensor([5, 77_777, 300_000, 479_999]))  # the last: at scale and shape's end
    renders = render_shapes3d(states)
    real = RealImages((renders + 0.1).clamp(0, 1), states, "brighter renders", "nearest")
    picture = real_images_picture(model, real, rows=6, title="tiny")
    rows = int(ActionSpace(SHAPES3D).valid_mask(states)[:, [7, 9, 11]].all(1).sum())  # scale+, shape+, orientation+
    assert rows == 3 and picture.size == (MARGIN + 4 * (3 * CELL + 2 * PAIR_GAP + 12), 48 + rows * (CELL + 4) + MARGIN)
    first = picture.crop((MARGIN, 48, MARGIN + CELL, 48 + CELL))
    assert first.tobytes() == _pil(real.images[0]).tobytes()  # the real image, first column
    twin = picture.crop((MARGIN + 2 * (CELL + PAIR_GAP), 48, MARGIN + 2 * (CELL + PAIR_GAP) + CELL, 48 + CELL))
    assert twin.tobytes() == _pil(renders[0]).tobytes()
    with pytest.raises(ValueError, match="no real image has all of"):
        real_images_picture(model, RealImages(renders[3:], states[3:], "end", "label"))
