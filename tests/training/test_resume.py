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
import pytorch_lightning as pl
import torch
from safetensors.torch import load_file
from tiny import TINY_JSON, tiny_dsprites_model

ROOT = Path(__file__).resolve().parents[2]
CONFIG = {
    "model": TINY_JSON,
    "train": {"vqvae_steps": 8, "causal_steps": 6, "warmup_steps": 1, "val_every": 2},
    "data": {"batch_size": 8, "val_length": 16, "num_workers": 0},
}


def _command(config: Path, out: Path, *flags: str, processes: int = 1) -> list[str]:
    devices = ["--gpus", "0"] if processes == 1 else ["--accelerator", "cpu", "--devices", str(processes)]
    return [sys.executable, str(ROOT / "train.py"), "--data", "dsprites", *devices, "--no-progress",
            "--config", str(config), "--out", str(out), *flags]


def _env(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ, CAUSAL_VQVAE_CACHE=str(tmp_path / "cache"), OMP_NUM_THREADS="1")
    env.pop("CAUSAL_VQVAE_DATA_ROOT", None)
    return env


def _run_until(command: list[str], env: dict[str, str], checkpoint: Path, timeout: float = 300) -> None:
    """Start ``command`` and SIGKILL it as soon as ``checkpoint`` exists (checkpoints are renamed
    into place, so existing means complete); the stage then still has several steps to go. Under DDP
    the other ranks' processes, in the same process group, are killed with it."""
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               start_new_session=True)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and process.poll() is None:
            if checkpoint.is_file():
                os.killpg(process.pid, signal.SIGKILL)
                break
            time.sleep(0.002)
        process.wait(timeout=60)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode == -signal.SIGKILL, (
        f"the run was not killed mid-way (exit {process.returncode}): {process.stderr.read().decode()[-2000:]}")
    step = torch.load(checkpoint, map_location="cpu", weights_only=True)["global_step"]
    assert step >= 2, step


def _weights(run: Path, stage: str) -> dict[str, torch.Tensor]:
    return load_file(str(run / stage / "model.safetensors"))


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL (POSIX)")
@pytest.mark.parametrize("code_pool,processes", [(0, 1), (24, 1), (0, 2)], ids=["fresh_pairs", "code_pool", "ddp"])
def test_a_run_killed_twice_and_resumed_ends_like_an_unbroken_one(tmp_path, code_pool, processes):
    """With a code pool of 24 pairs and 16 pairs an epoch, the causal stage's passes over the pool
    cross its epochs: a resumed run must draw the same stream. ``ddp``: two CPU processes (gloo),
    every one of them killed and started again."""
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps({**CONFIG, "train": {**CONFIG["train"], "code_pool": code_pool}}))
    env = _env(tmp_path)

    def command(out, *flags):
        return _command(config, out, *flags, processes=processes)

    straight = tmp_path / "straight"
    subprocess.run(command(straight), cwd=ROOT, env=env, check=True, capture_output=True)

    broken = tmp_path / "broken"
    _run_until(command(broken), env, broken / "vqvae" / "checkpoints" / "last.ckpt")
    assert not (broken / "vqvae" / "model.safetensors").exists()  # killed inside the vqvae stage
    _run_until(command(broken, "--resume", "last"), env, broken / "causal" / "checkpoints" / "last.ckpt")
    assert not (broken / "causal" / "model.safetensors").exists()  # killed inside the causal stage
    done = subprocess.run(command(broken, "--resume", "last"), cwd=ROOT, env=env, capture_output=True, text=True)
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
    # a resumed stage's training time adds the part before the kill, as its curves count it
    causal_rows = json.loads((broken / "causal" / "curves.json").read_text())["rows"]
    assert summary["causal"]["training_seconds"] >= causal_rows[-1]["seconds"]


class _RestoredOptimizer(pl.Callback):
    """Reads, when training starts (after a checkpoint's state was loaded), each parameter's first
    Adam moment by parameter name (``moments``) and each group's learning rate by name (``lrs``)."""

    def on_train_start(self, trainer, module) -> None:
        optimizer = trainer.optimizers[0]
        names = {id(p): n for n, p in module.model.named_parameters()}
        self.moments = {names[id(p)]: optimizer.state[p]["exp_avg"].clone()
                        for g in optimizer.param_groups for p in g["params"]}
        self.lrs = {g["name"]: g["lr"] for g in optimizer.param_groups}


def _short_trainer(steps: int, callbacks=()):
    """A Lightning trainer of ``steps`` CPU steps, no validation, logging or checkpoints of its own."""
    from datamodules.datamodule import TRAINER_KWARGS

    return pl.Trainer(max_steps=steps, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                      limit_val_batches=0, callbacks=list(callbacks), **TRAINER_KWARGS)


def _dsprites_data(mode: str):
    from datamodules.datamodule import build_datamodule

    return build_datamodule("dsprites", mode=mode, batch_size=8, train_length=32, val_length=8, num_workers=0)


def test_a_checkpoint_from_before_the_edge_logit_group_resumes_with_its_adam_state(tmp_path, monkeypatch):
    """Checkpoints written before ``graph_lr_scale`` hold one AdamW group of every trainable parameter;
    resuming one (``--resume PATH.ckpt``) regroups its state: each parameter keeps its moments and step
    count, and the edge logits go on at ``graph_lr_scale`` times the rest."""
    from tiny import tiny_dsprites_model

    from causal_vqvae.training.config import TrainConfig
    from causal_vqvae.training.module import CausalVQVAEModule, _warmup_cosine

    def single_group(self):  # configure_optimizers as it was before graph_lr_scale
        params = [p for p in self.model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=self.train_config.lr(self.stage), weight_decay=0.0)
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: _warmup_cosine(step, 4, 1, 0.1))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    config = TrainConfig(causal_steps=4, warmup_steps=1, val_every=4, graph_lr_scale=20.0)
    old_trainer = _short_trainer(2)
    with monkeypatch.context() as patch:
        patch.setattr(CausalVQVAEModule, "configure_optimizers", single_group)
        old = CausalVQVAEModule(tiny_dsprites_model(), "causal", config)
        old_trainer.fit(old, datamodule=_dsprites_data("pairs"))
    old_trainer.save_checkpoint(tmp_path / "old.ckpt", weights_only=False)
    (saved_group,) = torch.load(tmp_path / "old.ckpt", weights_only=True)["optimizer_states"][0]["param_groups"]
    old_trainable = [name for name, p in old.model.named_parameters() if p.requires_grad]
    saved_state = torch.load(tmp_path / "old.ckpt", weights_only=True)["optimizer_states"][0]["state"]
    saved_moments = {name: saved_state[saved_group["params"][i]]["exp_avg"] for i, name in enumerate(old_trainable)}

    restored = _RestoredOptimizer()

    new = CausalVQVAEModule(tiny_dsprites_model(), "causal", config)
    new_trainer = _short_trainer(4, [restored])
    new_trainer.fit(new, datamodule=_dsprites_data("pairs"), ckpt_path=tmp_path / "old.ckpt", weights_only=True)

    assert set(restored.moments) == set(saved_moments)
    for name, moment in saved_moments.items():
        assert torch.equal(restored.moments[name], moment), name
    assert restored.lrs["graph_edge_logits"] == pytest.approx(20.0 * restored.lrs["model"])
    optimizer = new_trainer.optimizers[0]
    assert [g["name"] for g in optimizer.param_groups] == ["model", "graph_edge_logits"]
    assert {int(optimizer.state[p]["step"]) for g in optimizer.param_groups for p in g["params"]} == {4}
    # the schedule drives both groups: at the last step both are at the floor of their own peak
    lrs = [g["lr"] for g in optimizer.param_groups]
    assert lrs[1] == pytest.approx(20.0 * lrs[0])


def test_a_vqvae_checkpoint_from_when_the_stage_left_everything_trainable_resumes_with_its_adam_state(tmp_path):
    """Before the vqvae stage froze all but the autoencoder (which DDP needs), its optimiser held
    every parameter; resuming such a checkpoint keeps the autoencoder's moments and step counts, and
    the optimiser and schedule hold the autoencoder's parameters alone."""
    from tiny import tiny_dsprites_model

    from causal_vqvae.training.config import TrainConfig
    from causal_vqvae.training.module import AUTOENCODER_PARTS, CausalVQVAEModule

    config = TrainConfig(vqvae_steps=4, warmup_steps=1, val_every=4, graph_lr_scale=20.0)
    old = CausalVQVAEModule(tiny_dsprites_model(), "vqvae", config)
    old.model.requires_grad_(True)  # as the stage was: every parameter trainable
    old_trainer = _short_trainer(2)
    old_trainer.fit(old, datamodule=_dsprites_data("images"))
    old_trainer.save_checkpoint(tmp_path / "old.ckpt", weights_only=False)
    saved = torch.load(tmp_path / "old.ckpt", weights_only=True)["optimizer_states"][0]
    assert [len(g["params"]) for g in saved["param_groups"]] == [  # both groups, every parameter
        len(list(old.model.parameters())) - len(old.model.graph.edge_logits()), len(old.model.graph.edge_logits())]
    names = [n for n, _ in old.model.named_parameters()]
    edge_names = {n for n, p in old.model.named_parameters() if any(p is e for e in old.model.graph.edge_logits())}
    old_order = [n for n in names if n not in edge_names] + [n for n in names if n in edge_names]
    old_ids = [i for g in saved["param_groups"] for i in g["params"]]
    saved_moments = {n: saved["state"][i]["exp_avg"] for n, i in zip(old_order, old_ids) if i in saved["state"]}
    autoencoder = {n for n in names if n.split(".")[0] in AUTOENCODER_PARTS}
    assert set(saved_moments) == autoencoder  # only they ever had a gradient

    restored = _RestoredOptimizer()

    new = CausalVQVAEModule(tiny_dsprites_model(), "vqvae", config)
    new_trainer = _short_trainer(4, [restored])
    new_trainer.fit(new, datamodule=_dsprites_data("images"), ckpt_path=tmp_path / "old.ckpt", weights_only=True)
    assert set(restored.moments) == autoencoder
    for name, moment in saved_moments.items():
        assert torch.equal(restored.moments[name], moment), name
    assert restored.lrs == {"model": pytest.approx(saved["param_groups"][0]["lr"])}
    optimizer = new_trainer.optimizers[0]
    assert [g["name"] for g in optimizer.param_groups] == ["model"]
    assert {int(optimizer.state[p]["step"]) for g in optimizer.param_groups for p in g["params"]} == {4}


def test_resuming_a_run_from_before_graph_lr_scale_says_which_setting_reproduces_it(tmp_path):
    from causal_vqvae.training.rundir import check_same_run

    written = {"data": {"batch_size": 8}, "model": {"codebook_size": 16}, "train": {"causal_lr": 1e-3},
               "stages": ["causal"], "num_nodes": 1}
    (tmp_path / "config.json").write_text(json.dumps(written))
    now = json.loads(json.dumps(written))
    now["train"].update(graph_lr_scale=20.0, code_pool=0, keep="last", causal_head_lr=0.0, decoder_steps=0,
                        decoder_lr=1e-3, decoder_edit_weight=1.0)  # as a run writes them now
    now["model"].update(retrieval_score="nll", intervention="resample", keep_threshold=None, local_encoder=False,
                        edit_loss_weight=0.0, local_parent_logit=None, kept_equation_weight=1.0,
                        transition_position="absolute", transition_window=0)
    now["data"].update(twin_version="1", augment=[], augment_probability=0.3, renderer_version=None)
    with pytest.raises(SystemExit, match=r'graph_lr_scale was 1.0, now 20.0.*add \{"train": \{"graph_lr_scale": 1.0'):
        check_same_run(tmp_path / "config.json", now)
    now["train"]["graph_lr_scale"] = 1.0  # as the run ran: the same run
    check_same_run(tmp_path / "config.json", now)
    # validation then scored retrieval by transition with the NLL; the default now is the code distance
    now["model"]["retrieval_score"] = "code_distance"
    with pytest.raises(SystemExit, match=r'retrieval_score was .nll., now .code_distance.*add \{"model": '
                                         r'\{"retrieval_score": "nll"\}\}'):
        check_same_run(tmp_path / "config.json", now)
    now["model"]["retrieval_score"] = "nll"
    now["data"]["batch_size"] = 16  # another difference: no word about the added setting
    with pytest.raises(SystemExit, match="batch_size was 8, now 16") as error:
        check_same_run(tmp_path / "config.json", now)
    assert "predates" not in str(error.value)
    now["data"]["batch_size"] = 8
    now["model"]["kept_equation_weight"] = 0.0  # today's default; that run weighed every node alike
    with pytest.raises(SystemExit, match=r'kept_equation_weight was 1.0, now 0.0.*add \{"model": '
                                         r'\{"kept_equation_weight": 1.0\}\}'):
        check_same_run(tmp_path / "config.json", now)
    now["model"]["kept_equation_weight"] = 1.0
    # today's cpu-small: relative positions and the head at its own rate; that run had neither
    now["model"]["transition_position"], now["train"]["causal_head_lr"] = "relative", 1e-3
    with pytest.raises(SystemExit, match=r'add \{"train": \{"causal_head_lr": 0.0\}, "model": '
                                         r'\{"transition_position": "absolute"\}\}'):
        check_same_run(tmp_path / "config.json", now)
    # where the preset also changed a setting the run had, the hint restores that one too
    now["model"]["transition_position"], now["train"]["causal_head_lr"] = "absolute", 0.0
    now["model"].update(codebook_size=32, transition_window=5)
    with pytest.raises(SystemExit, match=r'it predates transition_window: add \{"model": '
                                         r'\{"codebook_size": 16, "transition_window": 0\}\}'):
        check_same_run(tmp_path / "config.json", now)


def test_a_checkpoint_from_before_the_intervention_setting_resumes_a_resample_model_only():
    """Lightning checkpoints written before ModelConfig.intervention hold model configs without it;
    their runs' equations could keep a code ("resample"), so a resample model resumes them and a
    "change" model is refused, naming the setting."""
    from causal_vqvae.training.config import TrainConfig
    from causal_vqvae.training.module import CausalVQVAEModule, CheckpointMismatchError

    old = tiny_dsprites_model(intervention="resample")
    saved = old.config.to_dict()
    del saved["intervention"]
    checkpoint = {"hyper_parameters": {"stage": "causal", "model": saved, "train": TrainConfig().to_dict()}}
    CausalVQVAEModule(old, "causal", TrainConfig()).on_load_checkpoint(checkpoint)
    with pytest.raises(CheckpointMismatchError, match="intervention: 'resample' in the checkpoint, 'change'"):
        CausalVQVAEModule(tiny_dsprites_model(intervention="change"), "causal",
                          TrainConfig()).on_load_checkpoint(checkpoint)


# Runs train.py with one write made fatal: the N-th call of torch.save (a Lightning checkpoint) or of
# safetensors' save_file (a stage's saved model) writes part of its file, then the process SIGKILLs itself.
DYING_WRITE = """
import os, signal, sys
import safetensors.torch
import torch
fault, nth = sys.argv[1], int(sys.argv[2])
calls = []
def dying(real):
    def write(obj, path, *args, **kwargs):
        calls.append(path)
        if len(calls) == nth:
            with open(path, "wb") as part:
                part.write(b"\\0" * 100)
            os.kill(os.getpid(), signal.SIGKILL)
        return real(obj, path, *args, **kwargs)
    return write
if fault == "checkpoint":
    torch.save = dying(torch.save)
else:
    safetensors.torch.save_file = dying(safetensors.torch.save_file)
sys.path.insert(0, os.getcwd())
import train
sys.exit(train.main(sys.argv[3:]))
"""


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL (POSIX)")
def test_a_run_killed_inside_a_checkpoint_write_or_a_model_save_resumes_to_the_unbroken_weights(tmp_path):
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps(CONFIG))
    env = _env(tmp_path)
    straight = tmp_path / "straight"
    subprocess.run(_command(config, straight), cwd=ROOT, env=env, check=True, capture_output=True)
    # the 2nd checkpoint of the vqvae stage (step 4); the vqvae stage's model.safetensors
    for fault, nth in (("checkpoint", 2), ("model", 1)):
        broken = tmp_path / f"broken_{fault}"
        flags = _command(config, broken)[2:]  # train.py's flags
        killed = subprocess.run([sys.executable, "-c", DYING_WRITE, fault, str(nth), *flags], cwd=ROOT, env=env,
                                capture_output=True, text=True)
        assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
        leftovers = [p.name for p in (broken / "vqvae").rglob(".*.tmp")]
        assert leftovers, "the kill came in the middle of a write"
        checkpoint = broken / "vqvae" / "checkpoints" / "last.ckpt"
        torch.load(checkpoint, map_location="cpu", weights_only=True)  # the last complete checkpoint, whole
        assert not (broken / "vqvae" / "model.safetensors").exists()
        done = subprocess.run(_command(config, broken, "--resume", "last"), cwd=ROOT, env=env, capture_output=True,
                              text=True)
        assert done.returncode == 0, done.stderr[-3000:]
        assert not list(broken.rglob(".*.tmp")), "the cut write's temporary file is left"
        for stage in ("vqvae", "causal"):
            expected, resumed = _weights(straight, stage), _weights(broken, stage)
            assert expected.keys() == resumed.keys()
            for name in expected:
                assert torch.allclose(expected[name].float(), resumed[name].float(), atol=1e-6, rtol=0), (
                    fault, stage, name)
