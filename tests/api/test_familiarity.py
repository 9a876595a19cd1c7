"""A warning when an image looks unlike the model's training data, calibrated on the reconstruction
errors of held-out images recorded in the model's metadata.json."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

import causal_vqvae
from causal_vqvae import CausalVQVAE, ModelConfig, load
from causal_vqvae.cli.main import main
from causal_vqvae.familiarity import METADATA_KEY, UnfamiliarImageWarning, calibrate, reconstruction_errors
from datamodules.datamodule import build_datamodule
from tiny import TINY


@pytest.fixture(scope="module")
def released():
    return load("dsprites_twin", device="cpu")


def _twin_image() -> np.ndarray:
    batch = build_datamodule("dsprites", mode="images", num_workers=0, test_length=4).sample_batch("test", size=1)
    return batch["image"][0, 0].numpy()


def _portrait() -> np.ndarray:
    """A gray face from the CelebA twin: nothing like a dSprites sprite."""
    batch = build_datamodule("celeba", mode="images", num_workers=0, val_length=4).sample_batch("val", size=1)
    return batch["image"][0].mean(0).numpy()


def test_the_released_model_carries_its_calibration(released):
    record = released.pretrained_metadata[METADATA_KEY]
    assert record["images"] == 1024 and record["factor"] == 10.0
    assert record["threshold"] == pytest.approx(10.0 * record["p99"])
    assert 0 < record["p50"] <= record["p99"] <= record["max"] < record["threshold"]


def test_an_image_like_the_training_data_edits_without_a_word(released):
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnfamiliarImageWarning)
        causal_vqvae.edit(_twin_image(), "scale+", released)


@pytest.mark.parametrize("kind", ["portrait", "noise"])
def test_an_unfamiliar_image_is_edited_with_a_warning(released, kind):
    image = _portrait() if kind == "portrait" else np.random.default_rng(0).random((64, 64)).astype(np.float32)
    with pytest.warns(UnfamiliarImageWarning, match=r"the image looks unlike what this model was trained on "
                      r"\(dSprites procedural twin, validation images\): reconstruction error \S+, above "
                      r"0\.01\d \(10x the 99th percentile of held-out images\)") as caught:
        edited = causal_vqvae.edit(image, "scale+", released)
    assert edited.shape == image.shape  # warned, and still edited
    assert caught[0].filename.endswith("test_familiarity.py")  # points at the caller


def test_the_command_line_prints_one_warning_line(released, tmp_path, capsys):
    path = tmp_path / "portrait.png"
    Image.fromarray((_portrait() * 255).astype(np.uint8)).save(path)
    assert main(["edit", "--model", "dsprites_twin", "--image", str(path), "--action", "scale+",
                 "--out", str(tmp_path / "out.png"), "--device", "cpu"]) == 0
    err = capsys.readouterr().err
    assert err.startswith("warning: the image looks unlike what this model was trained on") and "Traceback" not in err
    assert (tmp_path / "out.png").is_file()


def test_a_model_without_a_record_is_not_checked(tmp_path):
    model = CausalVQVAE(ModelConfig(in_channels=1, num_actions=2, **TINY)).eval()
    assert model.pretrained_metadata == {}
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnfamiliarImageWarning)
        causal_vqvae.edit(np.random.default_rng(0).random((64, 64)).astype(np.float32), 1, model)


def test_calibrate_records_the_quantiles_of_the_errors(released):
    images = torch.stack([torch.from_numpy(_twin_image())[None]] * 3 + [torch.zeros(1, 64, 64)])
    errors = reconstruction_errors(released, images)
    record = calibrate(released, images, "four images", batch=3)
    assert record["images"] == 4 and record["data"] == "four images"
    assert record["max"] == pytest.approx(float(errors.max()))
    assert record["p50"] == pytest.approx(float(torch.quantile(errors.double(), 0.5)))
    assert record["threshold"] == pytest.approx(10 * float(torch.quantile(errors.double(), 0.99)))
    json.dumps(record)  # it goes into metadata.json
