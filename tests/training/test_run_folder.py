"""A run folder is owned: one run at a time (a lock naming the process and host), never trained over
without --resume or --overwrite, never a folder of other files; a bad --resume checkpoint is refused
before anything is written."""

from __future__ import annotations

import json
import os
import pickle
import socket
import subprocess
import sys

import pytest
import torch

from causal_vqvae.cli.main import main
from causal_vqvae.training.rundir import LOCK_NAME, RunLock, check_checkpoint, claim_run_folder
from tiny import TINY_JSON


pytestmark = pytest.mark.usefixtures("one_thread")


def _train(tmp_path, out, *flags: str) -> int:
    overrides = tmp_path / "overrides.json"
    overrides.write_text(json.dumps({"model": TINY_JSON, "data": {"val_length": 8}}))
    return main(["train", "--data", "dsprites", "--preset", "cpu-small", "--config", str(overrides),
                 "--max-steps", "2", "--val-every", "2", "--batch-size", "4", "--device", "cpu", "--no-progress",
                 "--out", str(out), *flags])


def _snapshot(folder) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("finished")
    assert _train(tmp, tmp / "run") == 0
    return tmp, tmp / "run"


def test_a_finished_run_is_not_trained_over_and_resume_says_it_finished(finished_run, capsys):
    tmp, run = finished_run
    before = _snapshot(run)
    capsys.readouterr()
    assert _train(tmp, run) == 2
    err = capsys.readouterr().err
    assert f"--out {run}: holds a finished run (stages vqvae, causal); continue it with --resume last" in err
    assert "--overwrite" in err and "Traceback" not in err
    assert _train(tmp, run, "--resume", "last") == 0
    assert f"the run in {run} has finished (stages vqvae, causal); nothing to resume" in capsys.readouterr().out
    assert _snapshot(run) == before  # nothing written, nothing lost, no lock left behind
    assert not (run / LOCK_NAME).exists()


def test_overwrite_replaces_the_run(tmp_path, finished_run):
    _, run = finished_run
    copy = tmp_path / "copy"
    subprocess.run(["cp", "-r", str(run), str(copy)], check=True)
    (copy / "causal" / "stale.txt").write_text("from the old run")
    assert _train(tmp_path, copy, "--overwrite", "--seed", "5") == 0
    assert not (copy / "causal" / "stale.txt").exists()
    assert json.loads((copy / "causal" / "metadata.json").read_text())["seed"] == 5


@pytest.mark.parametrize("out", ["", "  "])
def test_an_empty_out_is_refused(tmp_path, out, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "config.json").write_text("the user's own file")
    assert _train(tmp_path, out) == 2
    assert "--out is empty; pass the folder the run should write to" in capsys.readouterr().err
    assert (tmp_path / "config.json").read_text() == "the user's own file"


def test_a_folder_of_other_files_is_refused(tmp_path, capsys):
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "config.json").write_text('{"mine": true}')
    assert _train(tmp_path, folder) == 2
    assert "the folder is not empty and holds no training run" in capsys.readouterr().err
    assert (folder / "config.json").read_text() == '{"mine": true}' and len(list(folder.iterdir())) == 1


def test_a_second_run_on_a_locked_folder_is_refused_with_its_holder(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    # A live process on this host holds the folder (this test's parent process stands in for it).
    (out / LOCK_NAME).write_text(json.dumps({"pid": os.getppid(), "host": socket.gethostname(), "since": "then"}))
    (out / "config.json").write_text(json.dumps({"stages": ["vqvae", "causal"]}))
    assert _train(tmp_path, out, "--resume", "last") == 2
    err = capsys.readouterr().err
    assert f"another run trains in this folder (pid {os.getppid()} on {socket.gethostname()}, since then)" in err
    assert json.loads((out / LOCK_NAME).read_text())["pid"] == os.getppid()  # the holder's lock is kept


def test_overwrite_never_touches_a_folder_another_run_holds(tmp_path, capsys):
    out = tmp_path / "run"
    (out / "vqvae").mkdir(parents=True)
    (out / "vqvae" / "model.safetensors").write_bytes(b"weights of the live run")
    (out / "config.json").write_text(json.dumps({"stages": ["vqvae", "causal"]}))
    (out / LOCK_NAME).write_text(json.dumps({"pid": os.getppid(), "host": socket.gethostname(), "since": "then"}))
    before = _snapshot(out)
    assert _train(tmp_path, out, "--overwrite") == 2
    assert "another run trains in this folder" in capsys.readouterr().err
    assert _snapshot(out) == before


@pytest.mark.parametrize("stages", [[""], ["../elsewhere"], ["data"], []])
def test_a_config_json_whose_stages_are_not_ours_is_not_a_run(tmp_path, stages, capsys):
    out = tmp_path / "project"
    (out / "data").mkdir(parents=True)
    (out / "data" / "precious.txt").write_text("keep me")
    (out / "config.json").write_text(json.dumps({"stages": stages}))
    assert _train(tmp_path, out, "--overwrite") == 2
    assert "holds no training run" in capsys.readouterr().err
    assert (out / "data" / "precious.txt").read_text() == "keep me" and (out / "config.json").is_file()


def test_overwrite_refuses_to_delete_its_own_init(finished_run, capsys):
    tmp, run = finished_run
    before = _snapshot(run)
    with pytest.raises(SystemExit, match=r"--overwrite would delete --init .*vqvae, which is inside --out"):
        claim_run_folder(run, None, True, init=str(run / "vqvae"))
    assert _snapshot(run) == before
    assert _train(tmp, run, "--overwrite", "--resume", "last") == 2
    assert "give one of them" in capsys.readouterr().err


def test_a_lock_whose_process_is_gone_is_taken_over(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True)
    (tmp_path / LOCK_NAME).write_text(json.dumps({"pid": int(dead.stdout), "host": socket.gethostname()}))
    with RunLock(tmp_path):
        assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == os.getpid()
    assert not (tmp_path / LOCK_NAME).exists()


def test_a_lock_of_another_host_is_left_alone(tmp_path):
    (tmp_path / LOCK_NAME).write_text(json.dumps({"pid": 1, "host": "elsewhere", "since": "t"}))
    with pytest.raises(SystemExit, match=r"pid 1 on elsewhere, since t\).*delete .*\.lock"):
        RunLock(tmp_path).__enter__()


def test_claim_lets_an_empty_or_new_folder_through_untouched(tmp_path):
    claim_run_folder(tmp_path / "new", None, False)
    assert not (tmp_path / "new").exists()
    (tmp_path / LOCK_NAME).write_text("{}")  # our own lock, taken just before
    claim_run_folder(tmp_path, None, False)
    assert [p.name for p in tmp_path.iterdir()] == [LOCK_NAME]


class Payload:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_a_checkpoint_that_needs_unpickling_is_refused_before_anything_is_written(tmp_path, capsys):
    bad = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "x": Payload()}, bad)
    out = tmp_path / "run"
    assert _train(tmp_path, out, "--resume", str(bad)) == 2
    err = capsys.readouterr().err
    assert f"--resume {bad}: not a checkpoint that can be read safely (UnpicklingError" in err
    assert "Traceback" not in err and "pwned" not in capsys.readouterr().out
    assert not out.exists()


def test_a_file_that_is_not_a_checkpoint_is_refused(tmp_path):
    text = tmp_path / "notes.ckpt"
    text.write_text("hello")
    with pytest.raises(SystemExit, match="not a checkpoint that can be read safely"):
        check_checkpoint(str(text))
    plain = tmp_path / "plain.ckpt"
    torch.save({"weights": torch.zeros(2)}, plain)
    with pytest.raises(SystemExit, match="not a Lightning training checkpoint"):
        check_checkpoint(str(plain))
    with open(tmp_path / "pickle.ckpt", "wb") as file:
        pickle.dump([1, 2], file)
    with pytest.raises(SystemExit, match="not a checkpoint that can be read safely"):
        check_checkpoint(str(tmp_path / "pickle.ckpt"))


def test_lightning_load_from_checkpoint_gives_the_trained_model(finished_run):
    from causal_vqvae import load
    from causal_vqvae.training.module import CausalVQVAEModule

    _, run = finished_run
    module = CausalVQVAEModule.load_from_checkpoint(run / "causal" / "checkpoints" / "last.ckpt",
                                                    map_location="cpu", weights_only=True)
    saved = load(run / "causal", device="cpu")
    assert module.stage == "causal" and module.model.config == saved.config
    assert module.train_config.causal_steps == 2
    state, expected = module.model.state_dict(), saved.state_dict()
    assert state.keys() == expected.keys()
    assert all(torch.equal(state[k], expected[k]) for k in expected)


@pytest.mark.parametrize("failure", ["torch", "os"])
def test_a_full_disk_during_a_checkpoint_keeps_the_last_complete_one(tmp_path, monkeypatch, capsys, failure):
    """``torch``: what torch.save raises on a full disk (checked against /dev/full); ``os``: an OSError."""
    import errno

    real_save = torch.save
    calls = []

    def disk_fills_on_the_second_checkpoint(obj, f, *args, **kwargs):
        calls.append(f)
        if len(calls) == 2:
            with open(f, "wb") as half:  # part of the file, then the disk is full
                half.write(b"\0" * 1000)
            if failure == "torch":
                raise RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 64 vs 0")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", disk_fills_on_the_second_checkpoint)
    out = tmp_path / "run"
    assert _train(tmp_path, out, "--stage", "vqvae", "--max-steps", "4") == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    checkpoint = out / "vqvae" / "checkpoints" / "last.ckpt"
    reason = "No space left on device" if failure == "os" else "[enforce fail at inline_container.cc:664]"
    assert f"cannot write the checkpoint {checkpoint}: {reason}" in err
    assert "the last complete checkpoint is kept: make room (a full disk?), then continue with --resume last" in err
    assert all(str(f).startswith(str(checkpoint.parent / ".last.ckpt.")) for f in calls)  # written beside it
    kept = torch.load(checkpoint, map_location="cpu", weights_only=True)
    assert kept["global_step"] == 2  # the checkpoint before the disk filled, whole
    assert sorted(p.name for p in checkpoint.parent.iterdir()) == ["last.ckpt"]  # no temporary file left
    monkeypatch.setattr(torch, "save", real_save)
    assert _train(tmp_path, out, "--stage", "vqvae", "--max-steps", "4", "--resume", "last") == 0
    assert torch.load(checkpoint, map_location="cpu", weights_only=True)["global_step"] == 4
