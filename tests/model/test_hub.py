"""Hub-ready models: every saved folder has a README.md card whose front matter the Hugging Face
Hub's own parser reads; a Hub id loads from the Hub's local cache without a network; push_to_hub
uploads exactly what save_pretrained writes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load as safetensors_load
from safetensors.torch import load_file

from causal_vqvae import CausalVQVAE, ModelConfig, load
from causal_vqvae.locate import resolve_model
from tiny import TINY

huggingface_hub = pytest.importorskip("huggingface_hub")

NAMES = ("shape-", "shape+", "scale-", "scale+")


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Path:
    config = ModelConfig(in_channels=1, dataset="dsprites", num_actions=4, action_names=NAMES, **TINY)
    directory = tmp_path_factory.mktemp("models") / "tiny"
    CausalVQVAE(config).save_pretrained(directory, extra_metadata={
        "data": "dSprites procedural twin", "stage": "causal", "seed": 3,
        "summary": {"val": {"val/psnr": 31.25, "val/retrieval_head_acc": 0.975}}})
    return directory


def test_the_saved_card_has_the_hub_front_matter_read_by_the_hub_parser(saved):
    card = huggingface_hub.ModelCard.load(saved / "README.md")
    data = card.data.to_dict()
    assert data["library_name"] == "causal-vqvae"
    assert data["license"] == "apache-2.0"
    assert data["pipeline_tag"] == "image-to-image"
    assert data["datasets"] == ["dsprites"]
    assert {"causal-vqvae", "vq-vae", "dsprites"} <= set(data["tags"])
    assert data["metrics"] == ["accuracy", "psnr"]  # the recorded validation figures
    assert "| reconstruction PSNR (dB) | 31.2 |" in card.text
    assert "| action retrieval by the head | 97.5% |" in card.text
    assert "Trained: stage: causal; seed: 3." in card.text


def _cache_snapshot(cache: Path, repo_id: str, source: Path) -> Path:
    """The Hub cache's layout for ``repo_id`` at one commit, as snapshot_download leaves it."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    shutil.copytree(source, snapshot)
    return snapshot


def test_a_hub_id_loads_from_the_cache_offline(saved, tmp_path, monkeypatch):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.chdir(tmp_path)  # no local folder owner/tiny
    snapshot = _cache_snapshot(tmp_path / "hub", "owner/tiny", saved)
    assert resolve_model("owner/tiny").resolve() == snapshot.resolve()
    model = load("owner/tiny", device="cpu")
    reference = load(saved, device="cpu")
    assert model.config == reference.config
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), reference.state_dict().values()))


def test_a_hub_id_neither_cached_nor_downloadable_is_named(tmp_path, monkeypatch):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"no model at owner/absent: no such folder here, and the Hugging "
                       r"Face Hub model 'owner/absent' is not in the local cache while HF_HUB_OFFLINE is set; "
                       r"download it once online"):
        load("owner/absent", device="cpu")


def test_push_to_hub_uploads_what_save_pretrained_writes(saved, monkeypatch):
    uploaded: dict[str, object] = {}

    class FakeApi:
        def __init__(self, token=None):
            uploaded["token"] = token

        def create_repo(self, repo_id, private=None, exist_ok=False):
            uploaded.update(repo=repo_id, private=private, exist_ok=exist_ok)

        def upload_folder(self, repo_id, folder_path, commit_message):
            uploaded["files"] = {p.name: p.read_bytes() for p in Path(folder_path).iterdir()}
            return type("CommitInfo", (), {"commit_url": f"https://hub.example/{repo_id}/commit/1"})()

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    model = load(saved, device="cpu")
    url = model.push_to_hub("owner/tiny", token="secret", private=True)
    assert url == "https://hub.example/owner/tiny/commit/1"
    assert uploaded["repo"] == "owner/tiny" and uploaded["private"] is True and uploaded["exist_ok"] is True
    files = uploaded["files"]
    assert set(files) == {"model.safetensors", "config.json", "metadata.json", "README.md"}
    sent, kept = safetensors_load(files["model.safetensors"]), load_file(saved / "model.safetensors")
    assert sent.keys() == kept.keys() and all(torch.equal(sent[k], kept[k]) for k in kept)
    assert files["config.json"] == (saved / "config.json").read_bytes()
    card = huggingface_hub.ModelCard(files["README.md"].decode())
    assert card.data.to_dict()["library_name"] == "causal-vqvae"


def test_a_card_is_written_whatever_the_extra_metadata_holds(tmp_path):
    config = ModelConfig(in_channels=1, dataset="dsprites", num_actions=4, action_names=NAMES, **TINY)
    for extra in ({"summary": "final"}, {"summary": {"val": "none"}}, {"summary": {"val": {"val/psnr": "high"}}}):
        CausalVQVAE(config).save_pretrained(tmp_path / "m", extra_metadata=extra)
        card = huggingface_hub.ModelCard.load(tmp_path / "m" / "README.md")
        assert card.data.to_dict()["metrics"] == ["psnr", "accuracy"]  # no figure recorded: the defaults
        assert "## Validation" not in card.text


def test_push_to_hub_keeps_what_the_model_was_loaded_with(saved, monkeypatch):
    uploaded = {}

    class FakeApi:
        def __init__(self, token=None):
            pass

        def create_repo(self, repo_id, private=None, exist_ok=False):
            pass

        def upload_folder(self, repo_id, folder_path, commit_message):
            uploaded["metadata"] = json.loads((Path(folder_path) / "metadata.json").read_text())
            return "https://hub.example/commit"

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    model = load(saved, device="cpu")
    model.push_to_hub("owner/tiny", extra_metadata={"note": "pushed"})
    assert uploaded["metadata"]["seed"] == 3 and uploaded["metadata"]["stage"] == "causal"
    assert uploaded["metadata"]["summary"]["val"]["val/psnr"] == 31.25 and uploaded["metadata"]["note"] == "pushed"
