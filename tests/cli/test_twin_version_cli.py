"""``--twin-version`` end to end: a run records the 3D Shapes twin version it trained on, and
``bench`` evaluates a model on that version unless told otherwise, saying which it used."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from tiny import TINY, TINY_JSON

from causal_vqvae import CausalVQVAE, ModelConfig, load
from causal_vqvae.cli.bench import bench
from causal_vqvae.cli.train import main as train_main
from causal_vqvae.eval.baseline import BaselineSettings
from causal_vqvae.eval.data import (
    bench_twin_version,
    check_model,
    model_twin_version,
    twin_datamodule,
)
from causal_vqvae.eval.factor_classifier import ClassifierSettings, cache_paths
from datamodules.factors import ActionSpace
from datamodules.shapes3d import SHAPES3D, render_shapes3d

pytestmark = pytest.mark.usefixtures("one_thread", "no_data_root")


def _shapes3d_model() -> CausalVQVAE:
    names = tuple(ActionSpace(SHAPES3D).names)
    return CausalVQVAE(ModelConfig(in_channels=3, dataset="shapes3d", num_actions=len(names), action_names=names,
                                   **TINY))


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory) -> dict[str, Path]:
    """The same tiny 3D Shapes model saved three times: metadata saying version 2, "1", and nothing."""
    model, root = _shapes3d_model(), tmp_path_factory.mktemp("twin_models")
    dirs = {"2": root / "v2", "1": root / "v1", None: root / "none"}
    for version, directory in dirs.items():
        model.save_pretrained(directory, extra_metadata=None if version is None else {"twin_version": version})
    return dirs


def test_the_bench_helper_builds_the_twin_version_the_model_metadata_records(model_dirs):
    v2 = load(model_dirs["2"], device="cpu")
    assert model_twin_version(v2) == "2"
    assert bench_twin_version(None, v2) == ("2", "model metadata")
    assert bench_twin_version("1", v2) == ("1", "--twin-version")  # the flag wins
    assert bench_twin_version(None, load(model_dirs["1"], device="cpu")) == ("1", "model metadata")
    unrecorded = load(model_dirs[None], device="cpu")
    assert model_twin_version(unrecorded) is None and bench_twin_version(None, unrecorded) == ("1", "default")

    version, _ = bench_twin_version(None, v2)
    dm = twin_datamodule("shapes3d", 8, 8, 0, version)
    check_model(v2, dm, "shapes3d")
    assert dm.config.twin_version == "2" and dm.description == "3D Shapes procedural twin (renderer version 2)"
    batch = dm.sample_batch("test", size=8)
    assert torch.equal(batch["image"], render_shapes3d(batch["factors"], version="2"))
    assert torch.equal(batch["image_next"], render_shapes3d(batch["factors_next"], version="2"))


def test_bench_of_a_version_2_model_uses_version_2_and_says_so(model_dirs, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("CAUSAL_VQVAE_CACHE", str(tmp_path / "cache"))
    flags = ["--data", "shapes3d", "--pairs", "8", "--batch", "8", "--device", "cpu", "--skip-baseline",
             "--skip-exactness", "--picture-rows", "2"]
    data = bench(["--model", str(model_dirs["2"]), *flags, "--out", str(tmp_path / "v2.json")])
    printed = capsys.readouterr().out
    meta = data["meta"]
    assert meta["twin_version"] == "2" and meta["twin_version_from"] == "model metadata"
    assert meta["data"] == "shapes3d procedural twin (renderer version 2)"
    assert json.loads((tmp_path / "v2.json").read_text())["meta"]["twin_version"] == "2"
    assert printed.splitlines()[0].startswith(
        "shapes3d procedural twin (renderer version 2, from model metadata), 8 test pairs")
    data = bench(["--model", str(model_dirs["2"]), *flags, "--twin-version", "1", "--out", str(tmp_path / "v1.json")])
    assert data["meta"]["twin_version"] == "1" and data["meta"]["twin_version_from"] == "--twin-version"
    assert data["meta"]["data"] == "shapes3d procedural twin (renderer version 1)"


def test_the_cached_networks_keep_their_version_1_keys_and_get_new_ones_for_version_2(tmp_path):
    v1 = ClassifierSettings.for_dataset("shapes3d")
    assert v1.twin_version == "1"
    before = {k: v for k, v in v1.__dict__.items() if k != "twin_version"}  # settings as written before versions
    assert cache_paths(tmp_path, "c", v1.__dict__) == cache_paths(tmp_path, "c", before)
    v2 = ClassifierSettings.for_dataset("shapes3d", twin_version="2")
    assert cache_paths(tmp_path, "c", v2.__dict__) != cache_paths(tmp_path, "c", v1.__dict__)
    b1, b2 = BaselineSettings("shapes3d", 2, 8), BaselineSettings("shapes3d", 2, 8, twin_version="2")
    assert cache_paths(tmp_path, "b", b1.__dict__) != cache_paths(tmp_path, "b", b2.__dict__)


def test_a_refitted_scene_gets_a_new_cache_key_under_the_same_version_name(tmp_path, monkeypatch):
    from datamodules.shapes3d import scene

    v3 = ClassifierSettings.for_dataset("shapes3d", twin_version="3")
    now = cache_paths(tmp_path, "c", v3.__dict__)
    assert now != cache_paths(tmp_path, "c", ClassifierSettings.for_dataset("shapes3d", twin_version="2").__dict__)
    refitted = dataclasses.replace(scene.TWIN_VERSIONS["3"], shadow_gain=0.5)
    monkeypatch.setitem(scene.TWIN_VERSIONS, "3", refitted)
    assert cache_paths(tmp_path, "c", v3.__dict__) != now


def test_train_records_the_twin_version_where_bench_reads_it(tmp_path):
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps({"model": TINY_JSON, "data": {"val_length": 8}}))
    out = tmp_path / "run"
    assert train_main(["--data", "shapes3d", "--twin-version", "2", "--config", str(config), "--stage", "vqvae",
                       "--max-steps", "1", "--val-every", "1", "--batch-size", "4", "--gpus", "0", "--out", str(out),
                       "--no-progress"]) == 0
    assert json.loads((out / "config.json").read_text())["data"]["twin_version"] == "2"
    metadata = json.loads((out / "vqvae" / "metadata.json").read_text())
    assert metadata["twin_version"] == "2" and metadata["data"] == "3D Shapes procedural twin (renderer version 2)"
    assert bench_twin_version(None, load(out / "vqvae", device="cpu")) == ("2", "model metadata")


def test_train_refuses_a_twin_version_the_dataset_lacks_before_making_the_run(tmp_path, capsys):
    from causal_vqvae.cli.common import CommandExit

    with pytest.raises(CommandExit):
        train_main(["--data", "dsprites", "--twin-version", "2", "--gpus", "0", "--out", str(tmp_path / "run")])
    assert "twin_version must be '1' for dsprites" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
    with pytest.raises(CommandExit):
        train_main(["--data", "shapes3d", "--twin-version", "2", "--data-root", str(tmp_path), "--gpus", "0",
                    "--out", str(tmp_path / "run")])
    assert "twin_version '2' chooses a renderer of the shapes3d procedural twin" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_train_records_the_augmentation_and_the_code_pool_encodes_augmented_pairs(tmp_path):
    from causal_vqvae.eval.data import encode_pairs
    from datamodules.datamodule import build_datamodule

    config = tmp_path / "tiny.json"
    config.write_text(json.dumps({"model": TINY_JSON, "data": {"val_length": 8, "augment_probability": 1.0}}))
    out = tmp_path / "run"
    assert train_main(["--data", "shapes3d", "--augment", "renderer, blur", "--config", str(config), "--stage", "vqvae",
                       "--max-steps", "1", "--val-every", "1", "--batch-size", "4", "--gpus", "0", "--out", str(out),
                       "--no-progress"]) == 0
    data = json.loads((out / "config.json").read_text())["data"]
    assert data["augment"] == ["renderer", "blur"] and data["augment_probability"] == 1.0

    model = _shapes3d_model().eval()
    dm = build_datamodule("shapes3d", batch_size=8, num_workers=0, train_length=16, augment=["renderer", "blur"],
                          augment_probability=1.0)
    dm.setup()
    dataset = dm._datasets["train"]
    plain = encode_pairs(model, dm, dataset, 16, 8, torch.device("cpu"))
    augmented = encode_pairs(model, dm, dataset, 16, 8, torch.device("cpu"), augment=True)
    images = dm.prepare_batch(dataset.__getitems__(list(range(8))), augment=True)["image"]
    assert torch.equal(augmented["codes"][:8].long(), model.encode_codes(images).long())
    assert not torch.equal(plain["codes"], augmented["codes"])
    assert torch.equal(plain["action"], augmented["action"])
