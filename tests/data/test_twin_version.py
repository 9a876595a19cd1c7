"""The 3D Shapes twin version chosen through the data layer: DataConfig.twin_version, the DataModule that
renders it, and ``preview --twin-version``."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from test_shapes3d_versions import (  # version 1's renders from before versions existed
    STATES,
    V1_SUMS,
)

from datamodules.datamodule import DATA_ROOT_ENV, DataConfig, build_datamodule
from datamodules.preview import FACTOR_STATE_KEY
from datamodules.preview import main as preview_main
from datamodules.shapes3d import SHAPES3D, render_shapes3d
from datamodules.sources import TwinSource

pytestmark = pytest.mark.usefixtures("one_thread", "no_data_root")


def _batch(version: str | None) -> tuple[dict, object]:
    kwargs = {} if version is None else {"twin_version": version}
    dm = build_datamodule("shapes3d", batch_size=16, val_length=16, num_workers=0, **kwargs)
    return dm.sample_batch("val", size=16), dm


@pytest.mark.parametrize(("dataset", "value", "message"), [
    ("shapes3d", "5", "twin_version must be one of '1', '2', '3', '4' for shapes3d, got '5'"),
    ("shapes3d", "v2", "twin_version must be one of '1', '2', '3', '4' for shapes3d, got 'v2'"),
    ("dsprites", "2", r"twin_version must be '1' for dsprites \(only 3D Shapes has more than one twin version\), "
                      "got '2'"),
    ("celeba", "2", r"twin_version must be '1' for celeba \(only 3D Shapes has more than one twin version\), got '2'"),
])
def test_data_config_refuses_an_unknown_twin_version_naming_the_field_value_and_choices(dataset, value, message):
    with pytest.raises(ValueError, match=f"^{message}$"):
        DataConfig(dataset=dataset, twin_version=value)


def test_data_config_takes_the_versions_and_refuses_a_version_with_real_data():
    assert DataConfig().twin_version == "1" and DataConfig(dataset="dsprites").twin_version == "1"
    assert DataConfig(twin_version="2").twin_version == "2"
    assert DataConfig(twin_version=2).twin_version == "2"  # an int from Python reads as its name
    assert DataConfig(data_root="/data", twin_version="1").data_root == "/data"  # "1" goes with real data
    with pytest.raises(ValueError, match=r"^twin_version '2' chooses a renderer of the shapes3d procedural twin, "
                                         r"and data_root /data is real data, which has none: leave twin_version at "
                                         r"'1' to read the real data, or leave data_root out to use the twin$"):
        DataConfig(data_root="/data", twin_version="2")


def test_a_settings_file_sets_twin_version_checked_by_type_and_value():
    from causal_vqvae.validation import SettingsError, build_settings

    config = build_settings(DataConfig, {"twin_version": "2"}, "--config c.json, data", dataset="shapes3d")
    assert config.twin_version == "2"
    with pytest.raises(SettingsError, match=r"^--config c\.json, data: twin_version must be one of '1', '2', '3', "
                                            r"'4' for shapes3d, got '5'$"):
        build_settings(DataConfig, {"twin_version": "5"}, "--config c.json, data", dataset="shapes3d")
    with pytest.raises(SettingsError, match=r"key 'twin_version': expected a string, got 2 \(an integer\)"):
        build_settings(DataConfig, {"twin_version": 2}, "--config c.json, data", dataset="shapes3d")


def test_a_version_2_datamodule_renders_exactly_version_2_of_its_batch_states():
    batch, dm = _batch("2")
    assert isinstance(dm.source, TwinSource) and dm.description == "3D Shapes procedural twin (renderer version 2)"
    assert dm.hparams["data"]["twin_version"] == "2"
    assert torch.equal(batch["image"], render_shapes3d(batch["factors"], version="2"))
    assert torch.equal(batch["image_next"], render_shapes3d(batch["factors_next"], version="2"))
    v1, _ = _batch("1")
    for key in ("factors", "factors_next", "action"):  # the version changes the pixels, not the pairs
        assert torch.equal(batch[key], v1[key])
    assert (batch["image"] - v1["image"]).abs().mean() > 0.01


def test_version_1_and_the_default_render_exactly_as_before():
    default, dm = _batch(None)
    v1, dm1 = _batch("1")
    assert dm.config.twin_version == "1" and dm.description == dm1.description == "3D Shapes procedural twin"
    for key in ("image", "image_next", "factors"):
        assert torch.equal(default[key], v1[key])
    assert torch.equal(v1["image"], render_shapes3d(v1["factors"], version="1"))
    sums = dm1.source.render(SHAPES3D.unravel(STATES)).double().sum(dim=(1, 2, 3))
    assert sums.tolist() == pytest.approx(V1_SUMS, rel=1e-6)


def test_a_version_2_datamodule_uses_the_twin_even_where_the_data_root_variable_names_a_file(tmp_path, monkeypatch):
    (tmp_path / "3dshapes.h5").write_bytes(b"not read")
    monkeypatch.setenv(DATA_ROOT_ENV, str(tmp_path))
    dm = build_datamodule("shapes3d", twin_version="2", batch_size=4, num_workers=0)
    dm.prepare_data()
    assert isinstance(dm.source, TwinSource) and dm.description.endswith("(renderer version 2)")


def test_preview_twin_version_2_writes_the_version_2_render_of_the_recorded_state(tmp_path, capsys):
    sample = tmp_path / "sample.png"
    preview_main(["--data", "shapes3d", "--twin-version", "2", "--out", str(tmp_path / "p.png"), "--steps", "2",
                  "--sample", str(sample), "--seed", "1", "--json"])
    written = json.loads(capsys.readouterr().out)
    assert written["twin_version"] == "2" and written["description"].endswith("(renderer version 2)")
    with Image.open(sample) as opened:
        pixels = np.asarray(opened.convert("RGB"))
        record = json.loads(opened.text[FACTOR_STATE_KEY])
    assert record["dataset"] == "shapes3d" and record["twin_version"] == "2"
    state = torch.tensor([[f["value"] for f in record["factors"]]])
    expected = (render_shapes3d(state, version="2")[0] * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    assert np.array_equal(pixels, expected)
    other = (render_shapes3d(state, version="1")[0] * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    assert not np.array_equal(pixels, other)
    # the state is the held-out test state the sample was drawn from
    dm = build_datamodule("shapes3d", twin_version="2", batch_size=4, num_workers=0)
    assert state[0].tolist() == dm.sample_batch("test", size=2)["factors"][1].tolist()


def test_preview_refuses_version_2_for_a_dataset_with_one_twin(tmp_path):
    with pytest.raises(ValueError, match=r"twin_version must be '1' for dsprites"):
        preview_main(["--data", "dsprites", "--twin-version", "2", "--out", str(tmp_path / "p.png")])
    assert not (tmp_path / "p.png").exists()
