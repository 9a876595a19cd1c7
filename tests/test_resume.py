"""``train.py --resume last`` after SIGKILL ends where an unbroken run ends.

A tiny run (vqvae 8 steps, causal 6, a checkpoint every 2) goes straight through; a second copy is
killed with SIGKILL during the vqvae stage (as soon as its first checkpoint exists), resumed, killed
again during the causal stage (likewise), and resumed to the end. Both must end with the same weights, EMA codebook
and dual multipliers: this needs the optimiser, schedule, EMA, duals, random draws and data position
all restored.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from tiny import TINY_JSON

ROOT = Path(__file__).resolve().parents[1]
CONFIG = {
    "model": TINY_JSON,
    "train": {"vqvae_steps": 8, "causal_steps": 6, "warmup_steps": 1, "val_every": 2},
    "data": {"batch_size": 8, "val_length": 16, "num_workers": 0},
}


def _command(config: Path, out: Path, *flags: str) -> list[str]:
    return [sys.executable, str(ROOT / "train.py"), "--data", "dsprites", "--gpus", "0", "--no-progress",
            "--config", str(config), "--out", str(out), *flags]


def _env(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ, CAUSAL_VQVAE_CACHE=str(tmp_path / "cache"), OMP_NUM_THREADS="1")
    env.pop("CAUSAL_VQVAE_DATA_ROOT", None)
    return env


def _run_until(command: list[str], env: dict[str, str], checkpoint: Path, timeout: float = 300) -> None:
    """Start ``command`` and SIGKILL it as soon as ``checkpoint`` exists (checkpoints are renamed
    into place, so existing means complete); the stage then still has several steps to go."""
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and process.poll() is None:
            if checkpoint.is_file():
                process.send_signal(signal.SIGKILL)
                break
            time.sleep(0.002)
        process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == -signal.SIGKILL, (
        f"the run was not killed mid-way (exit {process.returncode}): {process.stderr.read().decode()[-2000:]}")
    step = torch.load(checkpoint, map_location="cpu", weights_only=True)["global_step"]
    assert step >= 2, step


def _weights(run: Path, stage: str) -> dict[str, torch.Tensor]:
    return load_file(str(run / stage / "model.safetensors"))


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL (POSIX)")
def test_a_run_killed_twice_and_resumed_ends_like_an_unbroken_one(tmp_path):
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps(CONFIG))
    env = _env(tmp_path)

    straight = tmp_path / "straight"
    subprocess.run(_command(config, straight), cwd=ROOT, env=env, check=True, capture_output=True)

    broken = tmp_path / "broken"
    _run_until(_command(config, broken), env, broken / "vqvae" / "checkpoints" / "last.ckpt")
    assert not (broken / "vqvae" / "model.safetensors").exists()  # killed inside the vqvae stage
    _run_until(_command(config, broken, "--resume", "last"), env, broken / "causal" / "checkpoints" / "last.ckpt")
    assert not (broken / "causal" / "model.safetensors").exists()  # killed inside the causal stage
    done = subprocess.run(_command(config, broken, "--resume", "last"), cwd=ROOT, env=env, capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "stage vqvae: finished in the interrupted run" in done.stderr

    for stage in ("vqvae", "causal"):
        expected, resumed = _weights(straight, stage), _weights(broken, stage)
        assert expected.keys() == resumed.keys()
        for name in expected:
            assert torch.allclose(expected[name].float(), resumed[name].float(), atol=1e-6, rtol=0), (stage, name)
    # among the compared tensors: the state that only a full restore brings back
    assert {"quantizer.embed_sum", "quantizer.cluster_size", "adjacency_dual.multipliers",
            "target_dual.multipliers"} <= set(_weights(broken, "causal"))
    summary = json.loads((broken / "summary.json").read_text())
    # the curves of a resumed stage: each validation step at most once, in order, up to the last one
    # (a validation the kill cut short is not repeated on resume, so its row may be missing)
    for stage in ("vqvae", "causal"):
        steps = [r["step"] for r in json.loads((broken / stage / "curves.json").read_text())["rows"]]
        unbroken = [r["step"] for r in json.loads((straight / stage / "curves.json").read_text())["rows"]]
        assert steps == sorted(set(steps)) and set(steps) <= set(unbroken) and steps[-1] == unbroken[-1]
    assert summary["causal"]["resumed_from"].endswith("causal/checkpoints/last.ckpt")
