"""The released models in checkpoints/: small, safe to load, described, and still doing their job.

Each must load with ``causal_vqvae.load`` (safetensors + JSON, no pickle), stay under 10 MB, carry a
model card, and on held-out pairs of its twin retrieve actions far above chance, as its card says:
a regression in the loader, the twin renderer or the model code shows up here.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from causal_vqvae import edit, load
from causal_vqvae.pretrained import model_twin_version
from datamodules.datamodule import build_datamodule

CHECKPOINTS = Path(__file__).resolve().parents[2] / "checkpoints"
RELEASED = {"dsprites_twin": "dsprites", "shapes3d_twin": "shapes3d"}


@pytest.mark.parametrize("name", sorted(RELEASED))
def test_released_model_loads_edits_and_retrieves(name, monkeypatch, tmp_path):
    monkeypatch.setenv("CAUSAL_VQVAE_CACHE", str(tmp_path))
    monkeypatch.delenv("CAUSAL_VQVAE_DATA_ROOT", raising=False)
    directory = CHECKPOINTS / name
    weights = directory / "model.safetensors"
    assert weights.is_file() and weights.stat().st_size < 10 * 1024 * 1024
    card = (directory / "README.md").read_text()
    for needed in ("Command: `python train.py", "Device:", "seed", "Held-out metrics"):
        assert needed in card, needed
    assert not list(directory.glob("*.ckpt")) and not list(directory.glob("*.pt"))  # nothing to unpickle
    hub = pytest.importorskip("huggingface_hub")
    front = hub.ModelCard.load(directory / "README.md").data.to_dict()  # the Hub reads the card's front matter
    assert front["library_name"] == "causal-vqvae" and front["datasets"] == [{"dsprites": "dsprites"}.get(
        RELEASED[name], "3dshapes")]

    model = load(directory, device="cpu")
    dataset = RELEASED[name]
    assert model.config.dataset == dataset

    # on the twin the model was trained on: its metadata's version (3D Shapes), as bench does by default
    version = model_twin_version(model) or "1"
    dm = build_datamodule(dataset, test_length=256, num_workers=0, twin_version=version)
    batch = dm.sample_batch("test", size=256)
    with torch.no_grad():
        codes, target = model.encode_codes(batch["image"]), model.encode_codes(batch["image_next"])
        head = model.retrieve_codes(codes, target, "head").action
        by_transition = model.retrieve_codes(codes, target, "transition").action
    accuracy = (head == batch["action"]).float().mean().item()
    chance = 1 / model.config.num_actions
    assert accuracy > 3 * chance, f"{name}: held-out retrieval {accuracy:.3f}, chance {chance:.3f}"
    # as good as its card says: the validation accuracies recorded at release, to sampling noise on 256 pairs
    recorded = json.loads((directory / "metadata.json").read_text())["val_metrics"]
    assert accuracy > recorded["val/retrieval_head_acc"] - 0.08, (name, accuracy, recorded)
    transition_accuracy = (by_transition == batch["action"]).float().mean().item()
    assert transition_accuracy > recorded["val/retrieval_transition_acc"] - 0.08, (name, transition_accuracy, recorded)

    image = batch["image"][0]  # (C, 64, 64) tensor in, the same kind out
    out = edit(image, model.config.action_names[1], model=model)
    assert isinstance(out, torch.Tensor) and out.shape == image.shape and 0 <= out.min() <= out.max() <= 1


@pytest.mark.parametrize("name", sorted(RELEASED))
def test_released_model_edits_bit_for_bit_as_recorded(name):
    """Every action, and a sequence, on seeded images gives the float32 bytes recorded in
    released_edits.json (recorded at commit 14f007d, before the package was split into nn/,
    training/, eval/ and cli/): a change meant to keep behaviour keeps every bit."""
    from released_edits import RECORD, edit_digests, weights_digest

    recorded = json.loads(RECORD.read_text())[name]
    assert weights_digest(name) == recorded["weights"], (
        f"checkpoints/{name} holds other weights than those recorded: after a new release, re-record "
        "with python tests/model/released_edits.py")
    assert edit_digests(load(CHECKPOINTS / name, device="cpu")) == recorded["edits"]
