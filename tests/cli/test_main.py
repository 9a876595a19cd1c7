"""The ``causal-vqvae`` command: its subcommands, the flags they share, where ``--model`` points, and
how a user's mistake is reported (one line, exit status 2, no traceback)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tiny
import torch
from PIL import Image

from causal_vqvae import CausalVQVAE, ModelConfig, api, edit, load
from causal_vqvae.cli import bench as bench_cli
from causal_vqvae.cli import edit as edit_cli
from causal_vqvae.cli.common import resolve_device
from causal_vqvae.cli.main import COMMANDS, main
from causal_vqvae.eval import data as eval_data
from causal_vqvae.locate import CHECKPOINTS, RELEASED_NAMES, resolve_model

REPO = Path(__file__).resolve().parents[2]
NAMES = ("scale-", "scale+", "shape-", "shape+")


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished training run's folder: config.json listing two stages, each stage's model saved."""
    run = tmp_path_factory.mktemp("runs") / "mine"
    config = ModelConfig(in_channels=3, dataset="shapes3d", num_actions=4, action_names=NAMES, **tiny.TINY)
    for stage in ("vqvae", "causal"):
        CausalVQVAE(config).save_pretrained(run / stage)
    (run / "config.json").write_text(json.dumps({"stages": ["vqvae", "causal"], "model": {}, "train": {}}))
    return run


@pytest.fixture
def image(tmp_path: Path) -> Path:
    path = tmp_path / "in.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(path)
    return path


def _quiet_subprocess(code: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, env=env, timeout=120)


# ------------------------------------------------------------------------------------- the command
def test_help_lists_every_subcommand_without_loading_torch():
    result = _quiet_subprocess(
        "import sys\nfrom causal_vqvae.cli.main import main\nrc = main(['--help'])\n"
        "assert rc == 0, rc\nassert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    assert result.returncode == 0, result.stderr
    for name in ("train", "edit", "retrieve", "bench", "preview", "ui"):
        assert f"\n  {name} " in result.stdout
    assert set(COMMANDS) == {"train", "edit", "retrieve", "bench", "preview", "ui"}


@pytest.mark.parametrize("name", ["edit", "retrieve", "bench", "ui"])
def test_subcommand_help_does_not_load_torch(name):
    result = _quiet_subprocess(
        "import sys\nfrom causal_vqvae.cli.main import main\n"
        f"try:\n    main([{name!r}, '--help'])\nexcept SystemExit as stop:\n    assert stop.code == 0\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    assert result.returncode == 0, result.stderr
    assert f"usage: causal-vqvae {name}" in result.stdout and "--device DEVICE" in result.stdout
    if name == "edit":
        for released in RELEASED_NAMES:
            actions = json.loads((CHECKPOINTS / released / "config.json").read_text())["action_names"]
            assert f"{released}: {' '.join(actions)}" in result.stdout


def test_an_unknown_subcommand_is_refused_with_the_closest_one(capsys):
    assert main(["edti"]) == 2
    err = capsys.readouterr().err
    assert "unknown command 'edti'; did you mean edit?" in err and "Traceback" not in err
    assert main([]) == 2


def test_python_dash_m_causal_vqvae_is_the_command():
    result = subprocess.run([sys.executable, "-m", "causal_vqvae", "--help"], capture_output=True, text=True,
                            cwd=REPO, timeout=120)
    assert result.returncode == 0 and "commands:" in result.stdout


def test_shared_constants_match_the_library_they_stand_in_for():
    """The command lines name these without importing torch; they must be the library's own."""
    assert edit_cli.RETRIEVAL_METHODS == api.RETRIEVAL_METHODS
    assert edit_cli.DEFAULT_RETRIEVAL_METHOD == api.DEFAULT_RETRIEVAL_METHOD
    assert bench_cli.DATASETS == eval_data.DATASETS


# ------------------------------------------------------------------------------------- --model
def test_a_run_folder_means_its_final_stage(run_dir):
    assert resolve_model(run_dir) == run_dir / "causal"
    assert resolve_model(run_dir / "vqvae") == run_dir / "vqvae"
    assert resolve_model(run_dir / "causal" / "config.json") == run_dir / "causal"


def test_a_run_whose_final_stage_has_not_finished_names_the_finished_ones(tmp_path, run_dir):
    run = tmp_path / "half"
    (run / "vqvae").mkdir(parents=True)
    for name in ("config.json", "model.safetensors"):
        (run / "vqvae" / name).write_bytes((run_dir / "vqvae" / name).read_bytes())
    (run / "config.json").write_text(json.dumps({"stages": ["vqvae", "causal"]}))
    with pytest.raises(FileNotFoundError, match=r"final stage, causal, has saved no model .*--resume last .*"
                                                r"finished stages: vqvae"):
        resolve_model(run)


def test_released_names_point_at_the_checkpoints():
    for name in RELEASED_NAMES:
        assert resolve_model(name) == CHECKPOINTS / name
    assert resolve_model("shapes3d") == CHECKPOINTS / "shapes3d_twin"
    with pytest.raises(FileNotFoundError, match=r"did you mean shapes3d_twin"):
        resolve_model("shapes3d_twn")


def test_load_takes_a_run_folder_and_a_released_name(run_dir):
    model = load(run_dir, device="cpu")
    reference = CausalVQVAE.from_pretrained(run_dir / "causal")
    assert all(torch.equal(model.state_dict()[k], v) for k, v in reference.state_dict().items())
    assert load("dsprites_twin", device="cpu").config.dataset == "dsprites"


# ------------------------------------------------------------------------------------- edit and retrieve
def test_edit_with_a_run_folder_writes_under_out_by_default_and_prints_json(run_dir, image, tmp_path,
                                                                           monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["edit", "--model", str(run_dir), "--image", str(image), "--action", "scale+", "--device", "cpu",
                 "--json"]) == 0
    written = json.loads(capsys.readouterr().out)
    out = Path(written["out"])
    assert out == Path("out/edit/in_scaleplus.png") and (tmp_path / out).is_file()
    assert written["actions"] == ["scale+"] and written["mode"] == "edit"
    expected = edit(str(image), "scale+", load(run_dir / "causal", device="cpu"))
    assert np.array_equal(np.asarray(Image.open(tmp_path / out)), np.asarray(expected))


def test_edit_out_may_name_a_folder(run_dir, image, tmp_path, capsys):
    folder = tmp_path / "results"
    assert main(["edit", "--model", str(run_dir), "--image", str(image), "--action", "scale+", "--action",
                 "shape-", "--out", str(folder), "--device", "cpu"]) == 0
    assert (folder / "in_scaleplus_shapeminus.png").is_file()
    assert f"wrote {folder / 'in_scaleplus_shapeminus.png'}: applied scale+, shape-" in capsys.readouterr().out


def test_retrieve_prints_json(run_dir, image, tmp_path, capsys):
    other = tmp_path / "b.png"
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(other)
    assert main(["retrieve", "--model", str(run_dir), str(image), str(other), "--top", "2", "--device", "cpu",
                 "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    expected = api.retrieve_action(str(image), str(other), load(run_dir, device="cpu"), top_k=2)
    assert [row["action"] for row in data["ranked"]] == [name for name, _ in expected]
    assert [row["probability"] for row in data["ranked"]] == pytest.approx([p for _, p in expected], abs=1e-6)


def test_retrieve_out_draws_a_b_and_the_top_three_edits(run_dir, image, tmp_path, capsys):
    other = tmp_path / "b.png"
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(other)
    folder = tmp_path / "pictures"
    assert main(["retrieve", "--model", str(run_dir), str(image), str(other), "--top", "1", "--device", "cpu",
                 "--out", str(folder), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    out = folder / "in_to_b.png"
    assert data["out"] == str(out) and len(data["ranked"]) == 1  # --top 1 for the table; the picture has 3
    picture = np.asarray(Image.open(out).convert("RGB")).astype(int)
    scale, pad, top = api.LABEL_SCALE, api.GRID_PAD * api.LABEL_SCALE, 3 * api.LABEL_LINE + 4
    side = 64 * scale
    assert picture.shape[1] >= 5 * side + 6 * pad  # A, B and three edits

    def cell(column: int) -> np.ndarray:
        x, y = pad + column * (side + pad), top + pad
        return picture[y:y + side:scale, x:x + side:scale]

    model = load(run_dir, device="cpu")
    x, _ = api.to_batch(str(image), model)
    a = (x[0].permute(1, 2, 0).numpy() * 255).round()
    assert np.abs(cell(0) - a).max() <= 1  # the first cell is A as the model sees it
    assert cell(1).max() == 0  # B is black
    ranked = api.retrieve_action(str(image), str(other), model, top_k=3)
    for column, (name, _) in enumerate(ranked, start=2):  # then A edited by each of the top three
        edited = (model.edit(x, api.parse_actions(model, name)[0])[0].permute(1, 2, 0).numpy() * 255).round()
        assert np.abs(cell(column) - edited).max() <= 1, name


# ------------------------------------------------------------------------------------- mistakes
@pytest.mark.parametrize(("argv", "message"), [
    (["edit", "--image", "{image}", "--action", "scael+"], r"unknown action 'scael\+'.*; did you mean scale\+"),
    (["edit", "--image", "{image}", "--action", "\u00b2"], r"unknown action '\u00b2'; .*valid actions: scale-"),
    (["edit", "--image", "{image}", "--traverse", "--steps", "1000"], r"--steps: at most 40 steps each way"),
    (["edit", "--image", "{image}", "--action", "scale+", "--device", "bogus"], r"'bogus' is not a device: use auto"),
    (["edit", "--image", "{tmp}/none.png", "--action", "scale+"], r"none\.png"),
    (["retrieve", "{image}", "{image}", "--device", "gpu"], r"'gpu' is not a device"),
])
def test_a_mistake_prints_one_line_and_exits_2(argv, message, run_dir, image, tmp_path, capsys):
    argv = [a.replace("{image}", str(image)).replace("{tmp}", str(tmp_path)) for a in argv]
    argv[1:1] = ["--model", str(run_dir)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert re.search(message, err), err
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_a_device_this_machine_lacks_is_refused_by_name(run_dir, image, capsys):
    assert main(["edit", "--model", str(run_dir), "--image", str(image), "--action", "scale+", "--device", "cuda"]) == 2
    assert "--device cuda: no CUDA GPU is available here; use --device cpu" in capsys.readouterr().err
    assert resolve_device("cpu") == torch.device("cpu") and resolve_device("auto").type in ("cpu", "mps")


def test_train_refuses_a_device_it_cannot_train_on(capsys):
    assert main(["train", "--data", "dsprites", "--device", "cuda:1"]) == 2
    assert "training takes auto, cpu or cuda" in capsys.readouterr().err


def test_the_debug_variable_shows_the_traceback(run_dir, image, monkeypatch, capsys):
    monkeypatch.setenv("CAUSAL_VQVAE_DEBUG", "1")
    assert main(["edit", "--model", str(run_dir), "--image", str(image), "--action", "nope+", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and "unknown action 'nope+'" in err


def test_bench_takes_batch_size_and_the_old_batch_spelling(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    parser = bench_cli._parser()
    common = ["--model", "m", "--data", "dsprites"]
    assert parser.parse_args([*common, "--batch-size", "64"]).batch == 64
    assert parser.parse_args([*common, "--batch", "32"]).batch == 32
    assert bench_cli._out_path(None, "dsprites") == Path("out/bench/bench_dsprites.json")


def test_bench_out_json_path_and_folder(tmp_path):
    assert bench_cli._out_path(str(tmp_path / "r.json"), "shapes3d") == tmp_path / "r.json"
    assert bench_cli._out_path(str(tmp_path / "dir"), "shapes3d") == tmp_path / "dir" / "bench_shapes3d.json"
    (tmp_path / "file").write_text("x")
    with pytest.raises(OSError, match="is a file, not a folder"):
        bench_cli._out_path(str(tmp_path / "file" / "r.json"), "shapes3d")
