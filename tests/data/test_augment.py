"""Training augmentation for real images (datamodules.augment): seeded per item, alike on both
images of a pair, training batches only, and each augmentation doing what it says."""

from __future__ import annotations

import math

import pytest
import torch

from datamodules.augment import AUGMENTATIONS, _jpeg, augment_images, check_augment, item_uniforms
from datamodules.datamodule import DataConfig, build_datamodule
from datamodules.shapes3d import render_shapes3d

pytestmark = pytest.mark.usefixtures("one_thread", "no_data_root")


def _renders(n: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    states = torch.stack([torch.randint(0, s, (n,), generator=torch.Generator().manual_seed(i))
                          for i, s in enumerate((10, 10, 10, 8, 4, 15))], 1)
    return render_shapes3d(states), states


def test_item_uniforms_are_a_pure_function_of_index_and_seed_and_uniform():
    index = torch.arange(50_000)
    u = item_uniforms(index, seed=3, count=4)
    assert u.shape == (50_000, 4) and u.min() >= 0 and u.max() < 1
    assert u.mean(0).sub(0.5).abs().max() < 0.01 and u.var(0).sub(1 / 12).abs().max() < 0.002
    assert torch.equal(item_uniforms(index[[7, 3]], 3, 4), u[[7, 3]])  # whatever batch an item is in
    assert not torch.equal(item_uniforms(index, 4, 4), u)
    assert abs(float(torch.corrcoef(torch.stack([u[:, 0], u[:, 1]]))[0, 1])) < 0.02


def test_probability_one_changes_every_item_alike_on_both_images_of_a_pair():
    x, _ = _renders()
    index = torch.arange(100, 116)
    for name in ("resample", "blur", "jpeg", "colour", "border"):
        first, second = augment_images([x, x.clone()], index, (name,), 1.0, seed=0)
        assert torch.equal(first, second), name  # the same draws for both images of an item
        assert first.min() >= 0 and first.max() <= 1
        assert torch.equal(augment_images([x], index, (name,), 1.0, seed=0)[0], first)  # seeded
    changed = (augment_images([x], index, ("colour",), 1.0, seed=0)[0] - x).abs().flatten(1).amax(1)
    assert (changed > 0).all()


def test_a_probability_applies_to_that_share_of_items_and_none_leaves_the_images():
    x = torch.full((4000, 3, 8, 8), 0.5)
    out = augment_images([x], torch.arange(4000), ("border",), 0.3, seed=1)[0]
    share = (out[:, :, 0, 3] != 0.5).any(1).float().mean()
    assert abs(float(share) - 0.3) < 0.03
    assert augment_images([x], torch.arange(4000), (), 0.3, seed=1)[0] is x


def test_each_augmentation_changes_the_image_as_described():
    x, _ = _renders()
    index = torch.arange(16)
    border = augment_images([x], index, ("border",), 1.0, 0)[0]
    assert (border[..., 0, :] == 1).all() and (border[..., :-1, 0] == 1).all()
    assert torch.allclose(border[..., -1, 1:], torch.tensor(206 / 255)) and torch.equal(border[..., 1:-1, 1:], x[..., 1:-1, 1:])
    # blur and resample lose high frequencies (the image's differences between neighbours shrink)
    def sharpness(images: torch.Tensor) -> float:
        return float((images[..., 1:] - images[..., :-1]).abs().mean())

    for name in ("blur", "resample"):
        assert sharpness(augment_images([x], index, (name,), 1.0, 0)[0]) < sharpness(x), name
    # colour: a per-channel gain within 8% and an offset within 0.05 (where nothing clips)
    colour = augment_images([x], index, ("colour",), 1.0, 0)[0]
    inside = (x > 0.1) & (x < 0.8)
    assert ((colour - x)[inside].abs() <= 0.08 * x[inside] + 0.05 + 1e-6).all()


def test_jpeg_quantisation_is_exact_on_flat_blocks_and_coarser_at_low_quality():
    flat = torch.full((2, 3, 64, 64), 0.5)
    assert torch.allclose(_jpeg(flat, torch.tensor([50.0, 95.0])), flat, atol=1e-6)
    x, _ = _renders(2)
    low, high = _jpeg(x, torch.tensor([20.0, 20.0])), _jpeg(x, torch.tensor([95.0, 95.0]))
    err_low, err_high = (low - x).square().mean(), (high - x).square().mean()
    assert err_high < err_low and 10 * math.log10(1 / float(err_high)) > 35


def test_the_renderer_augmentation_renders_the_chosen_items_by_the_other_version():
    dm = build_datamodule("shapes3d", batch_size=64, num_workers=0, augment=["renderer"], augment_probability=0.5)
    dm.setup()
    raw = dm._datasets["train"].__getitems__(list(range(64)))
    plain = dm.prepare_batch(raw)
    out = dm.prepare_batch(raw, augment=True)
    v2 = render_shapes3d(raw["factors"], version="2")
    v2_next = render_shapes3d(raw["factors_next"], version="2")
    swapped = (out["image"] == v2).flatten(1).all(1)
    kept = (out["image"] == plain["image"]).flatten(1).all(1)
    assert torch.equal(swapped | kept, torch.ones(64, dtype=torch.bool)) and 16 < int(swapped.sum()) < 48
    assert torch.equal((out["image_next"] == v2_next).flatten(1).all(1), swapped)  # the pair swapped together
    # the next version each (a version-2 twin swaps to version 3, a version-3 twin to 4), and the last
    # version the one before it (a version-4 twin to 3)
    for version, swapped_to in (("2", render_shapes3d(raw["factors"], version="3")),
                                ("3", render_shapes3d(raw["factors"], version="4")),
                                ("4", render_shapes3d(raw["factors"], version="3"))):
        other = build_datamodule("shapes3d", batch_size=64, num_workers=0, augment=["renderer"],
                                 augment_probability=1.0, twin_version=version)
        other.setup()
        assert torch.equal(other.prepare_batch(raw, augment=True)["image"], swapped_to)
    # renderer_version names the version instead: a version-4 twin that also trains on version 1
    both = build_datamodule("shapes3d", batch_size=64, num_workers=0, augment=["renderer"], augment_probability=1.0,
                            twin_version="4", renderer_version=1)
    both.setup()
    assert both.config.renderer_version == "1"
    assert torch.equal(both.prepare_batch(raw, augment=True)["image"], render_shapes3d(raw["factors"], version="1"))


def test_only_training_batches_are_augmented():
    dm = build_datamodule("dsprites", batch_size=8, num_workers=0, augment=["colour", "blur"], augment_probability=1.0)
    dm.setup()
    raw = dm._datasets["train"].__getitems__(list(range(8)))

    class Trainer:
        training = False

    plain = dm.prepare_batch(raw)
    assert torch.equal(dm.on_after_batch_transfer(dict(raw), 0)["image"], plain["image"])  # no trainer
    dm.trainer = Trainer()
    assert torch.equal(dm.on_after_batch_transfer(dict(raw), 0)["image"], plain["image"])  # validating
    Trainer.training = True
    assert not torch.equal(dm.on_after_batch_transfer(dict(raw), 0)["image"], plain["image"])


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"augment": ["blurr"]}, r"augment: unknown augmentation 'blurr' \(did you mean 'blur'\?\); choose from renderer"),
    ({"augment": ["blur", "blur"]}, r"names an augmentation twice"),
    ({"augment": ["blur"], "augment_probability": 0.0}, r"augment_probability must be in \(0, 1\], got 0.0"),
    ({"augment": ["renderer"], "dataset": "dsprites"}, r"this dataset's twin has one renderer version"),
    ({"augment": ["renderer"], "data_root": "/data"}, r"the data is a real file, which has one rendering"),
    ({"augment": ["blur"], "twin_version": "4", "renderer_version": "1"},
     (r"renderer_version '1' is the version the 'renderer' augmentation renders with, and augment \['blur'\] "
      r"does not name it: add 'renderer' to augment")),
    ({"augment": ["renderer"], "twin_version": "4", "renderer_version": "4"},
     (r"renderer_version must be another version of the shapes3d twin than twin_version '4': one of '1', '2', "
      r"'3', got '4'")),
    ({"augment": ["renderer"], "renderer_version": "9"}, r"one of '2', '3', '4', got '9'"),
    ({"augment": ["renderer"], "renderer_version": True}, r"renderer_version must be a twin version such as '1', "
                                                          r"got True \(bool\)"),
    ({"dataset": "dsprites", "renderer_version": "2"}, r"renderer_version '2' names a renderer of the twin, but this "
                                                       r"dataset's twin has one renderer version"),
    ({"data_root": "/data", "renderer_version": "2"}, r"renderer_version '2' names a renderer of the twin, but the "
                                                      r"data is a real file"),
])
def test_data_config_refuses_bad_augmentation_settings(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DataConfig(**kwargs)


def test_the_settings_name_every_augmentation_and_a_config_file_takes_a_list():
    from causal_vqvae.validation import build_settings

    assert set(check_augment("blur,jpeg", 0.3, 2, True)) == {"blur", "jpeg"}
    assert len(AUGMENTATIONS) == 6
    config = build_settings(DataConfig, {"augment": ["jpeg", "colour"], "augment_probability": 0.5},
                            "--config c.json, data", dataset="shapes3d")
    assert config.augment == ("jpeg", "colour") and config.augment_probability == 0.5
