"""Smoke tests of the benchmark, experiment and maintainer scripts (tiny sizes on the CPU; real figures
come from a GPU run)."""

from __future__ import annotations

import importlib.util
import json
import math
import re
import sys
from pathlib import Path

import pytest

ROOT = next(p for p in Path(__file__).resolve().parents if (p / "pyproject.toml").is_file())  # the repository


# Where each script lives: benchmarks/ (what users run), experiments/<name>/ (finished studies),
# scripts/ (maintainer tooling). None of them is a package.
SCRIPTS = {
    "model_speed": "benchmarks/model_speed.py",
    "gpu_twin_runs": "benchmarks/gpu_twin_runs.sh",
    "gpu_speed_runs": "benchmarks/gpu_speed_runs.sh",
    **{name: f"experiments/{name}/{name}.py" for name in (
        "graph_lr", "retrieval_head_variants", "transition_scores", "eval_graph_rules", "step_times")},
    "release_checkpoint": "scripts/release_checkpoint.py",
    "edits_by_source_value": "scripts/edits_by_source_value.py",
    "chain_steps": "scripts/chain_steps.py",
    "code_regions": "experiments/shape_edits/code_regions.py",
    "calibrate_familiarity": "scripts/calibrate_familiarity.py",
    "start_time": "benchmarks/start_time.py",
}


def _load(name: str):
    """Import the script ``SCRIPTS[name]`` as a module."""
    spec = importlib.util.spec_from_file_location(f"_script_{name}", ROOT / SCRIPTS[name])
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def model_speed():
    return _load("model_speed")


def test_model_speed_tiny_cpu(model_speed, tmp_path, capsys):
    out = tmp_path / "results" / "model_speed.json"
    returned = model_speed.main(["--device", "cpu", "--tiny", "--layout", "both", "--out", str(out)])
    printed = capsys.readouterr().out

    data = json.loads(out.read_text())
    assert data == json.loads(json.dumps(returned))  # what main returns is what it wrote
    assert [p.name for p in out.parent.iterdir()] == [out.name]  # no temporary file left behind

    meta = data["meta"]
    for key in ("device", "torch", "precision", "compile", "command", "date"):
        assert meta[key] not in (None, ""), key
    assert meta["precision"] == "fp32" and meta["compile"] is False and meta["tiny"] is True
    assert "--tiny" in meta["command"]

    rows = data["results"]
    measurements = model_speed.MEASUREMENTS
    assert len(measurements) >= 4
    expected = {(m, layout) for m in measurements for layout in ("grid", "tokens")}
    assert len(rows) == len(expected)
    assert {(r["measurement"], r["layout"]) for r in rows} == expected

    for r in rows:
        assert r["error"] is None, r
        assert r["batch"] == 8
        ours = r["ours_per_s"]
        assert isinstance(ours, float) and math.isfinite(ours) and ours > 0, r
        assert all(math.isfinite(x) and x > 0 for x in r["rates_per_s"])
        ref = model_speed.REFERENCES.get(r["measurement"])
        if ref is not None:
            assert r["reference_per_s"] == ref.per_s and r["reference_batch"] == ref.batch
        else:
            assert r["reference_per_s"] is None
        target = model_speed.TARGETS.get(r["measurement"])
        assert r["target_per_s"] == target
        if target is not None:
            assert r["throughput_met"] is (ours >= target)
        assert r["peak_gib"] is None  # no GPU memory on the CPU
        assert 0 < r["aten_ops_per_step"]["views"] < r["aten_ops_per_step"]["total"], r
        assert r["memory_target_gib"] is None  # the memory target is for batch 256

    # The four measurements of the issue all carry a reference and a target.
    for m in ("autoencoder training", "transition training", "retrieval inference (head)",
              "retrieval inference (transition)"):
        assert m in measurements
        assert m in model_speed.REFERENCES and m in model_speed.TARGETS

    for column in ("measurement", "layout", "batch", "ours/s", "reference/s", "target", "met?", "peak GiB"):
        assert column in printed
    for m in measurements:
        assert m in printed
    assert "5,900 @64" in printed and ">= 30,000" in printed


def test_operator_count_counts_every_aten_operator_and_the_views_among_them(model_speed):
    import torch

    a, b = torch.ones(2, 3), torch.ones(2, 3)
    with model_speed.OperatorCount() as ops:
        c = (a + b).t()  # add, then a view
        c.sum()
    assert (ops.total, ops.views) == (3, 1)


def test_model_speed_measures_a_train_py_preset_and_channels_last(model_speed, capsys):
    from causal_vqvae.training.presets import PRESETS

    small = model_speed.model_config("grid", tiny=False, preset="small")
    for key, value in PRESETS["small"]["model"].items():
        assert getattr(small, key) == (tuple(value) if isinstance(value, list) else value), key
    assert small.latent_layout == "grid" and small.dataset == "shapes3d" and small.num_actions == 12
    assert model_speed.model_config("tokens", tiny=False, preset="small").latent_layout == "tokens"
    assert model_speed.model_config("grid", tiny=False).hidden_dims == (64, 128, 256)  # the design's model
    with pytest.raises(SystemExit, match="unknown --preset 'huge'"):
        model_speed.model_config("grid", tiny=False, preset="huge")

    result = model_speed.main(["--device", "cpu", "--tiny", "--layout", "grid", "--channels-last", "--no-flops",
                               "--measurements", "autoencoder training,retrieval inference (head)"])
    assert result["meta"]["channels_last"] is True and result["meta"]["preset"] is None  # --tiny: its own model
    assert [r["error"] for r in result["results"]] == [None, None]
    assert all(r["ours_per_s"] > 0 for r in result["results"])
    capsys.readouterr()


def test_model_speed_compile_failure_falls_back(model_speed, monkeypatch, capsys):
    """A step that fails to compile is recorded and measured eagerly, not lost."""
    import torch

    def broken_compile(fn, *args, **kwargs):
        def run(*a, **k):
            raise RuntimeError("simulated compile failure")
        return run

    monkeypatch.setattr(torch, "compile", broken_compile)
    monkeypatch.setattr(torch._dynamo, "reset", lambda: None)
    result = model_speed.main(["--device", "cpu", "--tiny", "--layout", "grid", "--compile", "--no-flops",
                               "--measurements", "retrieval inference (head)"])
    (row,) = result["results"]
    assert row["compiled"] is False and "simulated compile failure" in row["compile_error"]
    assert row["error"] is None and row["ours_per_s"] > 0
    assert "compile failed, ran eagerly" in capsys.readouterr().out


def test_sync_warnings_are_reported_with_the_stack_that_raised_them(model_speed):
    """A host-sync warning names the line of our code that made the call and every caller above it,
    not only the torch wrapper the warning surfaced in; other warnings are not counted."""
    import warnings

    def wrapper():  # stands in for a torch function that enters C++
        warnings.warn("called a synchronizing CUDA operation")

    def model_code():
        wrapper()
        warnings.warn("an unrelated warning")
        wrapper()

    def step():
        model_code()

    stacks = model_speed.warnings_with_stacks(step, "Synchroniz")
    assert len(stacks) == 2
    names = [frame.split()[-1] for frame in stacks[0]]
    assert names == ["step", "model_code", "wrapper"]
    here = Path(__file__).resolve().relative_to(ROOT).as_posix()
    assert all(frame.startswith(f"{here}:") for frame in stacks[0])
    assert stacks[0] != stacks[1]  # two call sites: different lines in model_code
    assert stacks[0][:1] == stacks[1][:1] and stacks[0][-1] == stacks[1][-1]


def test_retrieval_head_variants_tiny_cpu(tmp_path, capsys):
    from tiny import tiny_dsprites_model

    tiny_dsprites_model().eval().save_pretrained(tmp_path / "model")
    variants = _load("retrieval_head_variants")
    out = tmp_path / "variants.json"
    record = variants.main(["--model", str(tmp_path / "model"), "--data", "dsprites", "--train-pairs", "64",
                            "--test-pairs", "40", "--steps", "3", "--batch", "16", "--width", "16",
                            "--device", "cpu", "--out", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(record))
    results = record["results"]
    assert list(results) == ["model", *variants.VARIANTS]
    factors = ["shape", "scale", "orientation", "posX", "posY"]
    for name, r in results.items():
        assert 0.0 <= r["action_accuracy"] <= 1.0 and list(r["per_factor"]) == factors
        if name != "model":
            assert [row["step"] for row in r["curve"]][-1] == 3 and r["parameters"] > 0
    # the frozen codebook variants train no table; the learned ones do
    assert results["conv_learned"]["parameters"] - results["conv"]["parameters"] == 16 * 16
    assert record["command"].startswith("python experiments/retrieval_head_variants/retrieval_head_variants.py --model")
    from causal_vqvae.eval.report import code_revision

    assert record["code"] == code_revision()  # which code wrote the record
    assert "| conv |" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="--steps must be positive"):
        variants.main(["--model", str(tmp_path / "model"), "--data", "dsprites", "--steps", "0"])


def test_transition_scores_agree_with_the_models_retrieval_tiny_cpu(tmp_path, capsys):
    from tiny import tiny_dsprites_model

    from causal_vqvae.eval.data import batches, twin_datamodule
    from causal_vqvae.nn.retrieval import RETRIEVAL_SCORES

    model = tiny_dsprites_model().eval()
    model.save_pretrained(tmp_path / "model")
    scores = _load("transition_scores")
    out = tmp_path / "scores.json"
    record = scores.main(["--model", str(tmp_path / "model"), "--data", "dsprites", "--pairs", "24", "--batch", "8",
                          "--device", "cpu", "--out", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(record))
    assert list(record["results"]) == ["val", "test"] and record["model_config_score"] == "marginal_nll"
    # each score's test accuracy is what the model's own retrieval by transition gives with that score
    dm = twin_datamodule("dsprites", 24, 8, seed=0)
    batch = dm.prepare_batch(next(batches(dm, "test", 24, 24)))
    codes, target = model.encode_codes(batch["image"]), model.encode_codes(batch["image_next"])
    assert list(record["results"]["test"]) == list(RETRIEVAL_SCORES)
    for name in RETRIEVAL_SCORES:
        out = model.with_settings(retrieval_score=name).retrieve_codes(codes, target, "transition")
        r = record["results"]["test"][name]
        assert r["action_accuracy"] == pytest.approx((out.action == batch["action"]).float().mean().item())
        assert r["mean_top_probability"] == pytest.approx(out.probs.max(-1).values.mean().item(), rel=1e-5)
        true_nll = -out.probs.gather(-1, batch["action"].unsqueeze(-1)).log().mean().item()
        assert r["true_action_nll"] == pytest.approx(true_nll, rel=1e-4)
    assert "| test | nll |" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="the val split holds"):
        scores.main(["--model", str(tmp_path / "model"), "--data", "dsprites", "--pairs", "10000000",
                     "--splits", "val"])


def test_eval_graph_rules_tiny_cpu(tmp_path, capsys):
    from tiny import tiny_dsprites_model

    model = tiny_dsprites_model().eval()
    model.save_pretrained(tmp_path / "model")
    rules = _load("eval_graph_rules")
    # the top-K graph: K parents per node, the most probable ones, never the node itself
    probs = model.graph.adjacency_probs()
    keep = rules.top_k_adjacency(model.graph, 3)
    assert keep.sum(0).tolist() == [3.0] * probs.shape[0] and keep.diagonal().sum() == 0
    assert (probs * keep).sum(0).allclose(probs.topk(3, dim=0).values.sum(0))
    record = rules.main(["--model", str(tmp_path / "model"), "--data", "dsprites", "--pairs", "20", "--batch", "8",
                         "--top-k", "3", "--device", "cpu", "--out", str(tmp_path / "rules.json")])
    assert list(record["results"]) == ["threshold", "top-3"]
    assert record["results"]["top-3"]["parents_per_node"] == 3.0
    for r in record["results"].values():
        assert 0 <= r["code_accuracy"] <= 1 and 0 <= r["retrieval_transition_accuracy"] <= 1
    assert "| top-3 | 3.0 |" in capsys.readouterr().out


@pytest.mark.parametrize("logit", [-30.0, 30.0])
def test_edits_by_source_value_rows_cover_every_valid_edit_of_the_factor(logit, tmp_path, capsys, monkeypatch):
    import torch
    from tiny import tiny_dsprites_model

    model = tiny_dsprites_model().eval()
    with torch.no_grad():  # a graph that intervenes on no node (-30) or on every node (+30)
        model.graph.target_logits.fill_(logit)
    nodes = model.graph.target_logits.shape[1]
    model.save_pretrained(tmp_path / "model")
    study = _load("edits_by_source_value")
    judged = []  # what the script hands the judge: (edited images, sources, targets)

    def spy(images, source, target, *rest):
        judged.append((images.clone(), source.clone(), target.clone()))
        return judge(images, source, target, *rest)

    judge = study.judge_edits
    monkeypatch.setattr(study, "judge_edits", spy)
    out = tmp_path / "out" / "scale.json"
    assert study.main(["--model", str(tmp_path / "model"), "--data", "dsprites", "--factor", "scale",
                       "--per-value", "3", "--out", str(out)]) == 0
    record = json.loads(out.read_text())
    # dSprites' 6 scales: scale- from 1..5 and scale+ from 0..4, never off the ends
    assert [(r["value"], r["action"]) for r in record["rows"]] == [
        (0, "scale+"), *[(v, a) for v in range(1, 5) for a in ("scale-", "scale+")], (5, "scale-")]
    for r in record["rows"]:
        assert r["count"] == 3 and 0 <= r["exact"] + r["unchanged"] <= 1 and r["changed"] >= 0
        assert r["intervened"] == (0 if logit < 0 else nodes)
        if r["changed"] == 0:  # nothing to cover: no figure rather than a miss
            assert r["covered"] is None and r["code_accuracy"] is None
        else:
            assert r["covered"] == (0 if logit < 0 else 1)
            if logit < 0:  # every node keeps the source's code, so no changed node gets the target's
                assert r["code_accuracy"] == 0
    assert "--factor scale" in record["command"] and record["seed"] == 1234 and record["twin_version"] == "1"
    # every row judged model.edit's own output for its sources, aimed one step of its action away
    dm = study.twin_datamodule("dsprites", 8, 8, 1234)
    assert len(judged) == len(record["rows"])
    for (images, source, target), row in zip(judged, record["rows"]):
        ids = torch.full((len(source),), dm.actions.parse(row["action"]))
        assert (source[:, dm.space.factor_index("scale")] == row["value"]).all()
        assert torch.equal(target, dm.actions.apply(source, ids)[0])
        with torch.no_grad():
            assert torch.allclose(images, model.edit(dm.source.render(source), ids), atol=1e-6)
    assert "    5 scale-" in capsys.readouterr().out
    # orientation's aliased last class (39 = 0) is not a row of its own
    study.main(["--model", str(tmp_path / "model"), "--data", "dsprites", "--factor", "orientation",
                "--per-value", "1", "--out", str(out)])
    assert sorted({r["value"] for r in json.loads(out.read_text())["rows"]}) == list(range(39))
    for bad, message in ((["--factor", "size"], "--factor 'size' is not a factor of dsprites that an action moves"),
                         (["--factor", "color"], "--factor 'color' is not a factor of dsprites that an action"),
                         (["--factor", "scale", "--twin-version", "4"], "--twin-version is a 3D Shapes renderer")):
        with pytest.raises(SystemExit, match=message):
            study.main(["--model", str(tmp_path / "model"), "--data", "dsprites", *bad])


def _bench_record(device_name: str, head: float, exactness: bool) -> dict:
    """The parts of a bench JSON that a model card reads."""
    record = {
        "meta": {"pairs": 100, "data": "dsprites procedural twin", "seed": 0, "device_name": device_name,
                 "command": f"python -m causal_vqvae.cli.bench --pairs 100 # {device_name}"},
        "methods": {"transition": {"action_accuracy": 0.25}, "head": {"action_accuracy": head}},
        "baselines": {"chance": {"action_accuracy": 0.1}},
        "fidelity": {"edit_psnr_db": 21.0},
    }
    if exactness:
        record["exactness"] = {"classifier": {"held_out": {"all_factors": 0.998}, "meets_bar": True},
                               "k1": {"exact": 0.086, "reference_reconstruction": 0.384}}
    return record


def test_release_checkpoint_card_names_the_run_command_and_every_bench(tmp_path):
    from tiny import tiny_dsprites_model

    from causal_vqvae import CausalVQVAE, ModelConfig

    release = _load("release_checkpoint")
    run = tmp_path / "run"
    argv = ["train.py", "--data", "dsprites", "--seed", "0", "--out", "runs/x", "--resume", "last"]
    (run).mkdir()
    (run / "config.json").write_text(json.dumps({
        "argv": argv, "stages": ["vqvae", "causal"], "model": {"latent_layout": "grid", "action_names": ["a"] * 10},
        "data": {"seed": 0, "frequency": "balanced", "split_seed": 0, "batch_size": 128, "val_length": 5000}}))
    for stage, steps in (("vqvae", 40), ("causal", 60)):
        resumed = {"resumed_from": "runs/x/causal/checkpoints/last.ckpt", "training_seconds": 47.4} \
            if stage == "causal" else {"resumed_from": None, "training_seconds": 11.0}
        tiny_dsprites_model().save_pretrained(run / stage, extra_metadata={
            "stage": stage, "steps": steps, "seed": 0, "data": "dSprites procedural twin", "device": "1 x H100",
            "wall_seconds": 12.0, "val_metrics": {"val/psnr": 35.4, "val/retrieval_head_acc": 0.859,
                                                  "val/retrieval_transition_acc": 0.3},
            "summary": {"seconds": 12.0, **resumed}})
    benches = []
    for device, head, exact in (("H100", 0.99, False), ("cpu", 0.989, True)):
        benches.append(tmp_path / f"bench_{device}.json")
        record = _bench_record(device, head, exact)
        if device == "cpu":  # a bench from after the retrieval score was named
            record["meta"]["retrieval_score"] = "code_distance"
        benches[-1].write_text(json.dumps(record))

    dest = release.main(["--run", str(run), "--name", "tiny_twin", "--dest", str(tmp_path / "out"),
                         "--bench", str(benches[0]), "--bench", str(benches[1])])
    card = (dest / "README.md").read_text()
    # the run's own command, not the --resume that last invoked it
    assert ("Command: `python train.py --data dsprites --seed 0 --out runs/x` (its last invocation added "
            "`--resume last`)") in card
    assert "Stage `vqvae`: 40 steps at batch 128, 12 s wall.\n" in card
    # a resumed stage gives its whole training time too
    assert ("Stage `causal`: 60 steps at batch 128, 12 s wall in its last invocation, which resumed it "
            "(47 s of training in all, the part before the interruption included).") in card
    # one table per bench, in order, each naming its device and command
    assert card.count("Benchmark on 100 test pairs") == 2
    bench_command = "`python -m causal_vqvae.cli.bench"
    assert card.index(f"H100): {bench_command}") < card.index(f"cpu): {bench_command}")
    assert "| action retrieval by the head | 99.0% |" in card and "| action retrieval by the head | 98.9% |" in card
    assert card.count("edit exactness, 1 edit(s)") == 1 and "| 8.6% |" in card
    # which score retrieval by transition used: named by the bench, the NLL before the field existed
    assert card.count("| action retrieval by transition (nll) | 25.0% |") == 1
    assert card.count("| action retrieval by transition (code_distance) | 25.0% |") == 1
    assert "| action retrieval by transition (nll) | 30.0% |" in card  # validation, a run from before the field
    assert (dest / "model.safetensors").read_bytes() == (run / "causal" / "model.safetensors").read_bytes()
    assert "Validation pairs at the end of training (5000 pairs" in card
    assert "The bench ran on this model before it was copied here" in card

    # a bench of the released model itself says so
    record = _bench_record("cpu", 0.99, False)
    record["meta"]["command"] = "python -m causal_vqvae.cli.bench --model checkpoints/tiny_twin --pairs 100"
    (tmp_path / "bench_release.json").write_text(json.dumps(record))
    dest = release.main(["--run", str(run), "--name", "tiny_twin", "--dest", str(tmp_path / "out_release"),
                         "--bench", str(tmp_path / "bench_release.json")])
    card = (dest / "README.md").read_text()
    assert "The bench ran on this released model (`--model checkpoints/tiny_twin`)." in card
    assert "before it was copied here" not in card
    assert "PSNR of the twin render" not in card

    # a bench with --real-images adds its figures to that bench's table
    def exact(value: float) -> dict:
        return {"rate": value, "n": 500, "wilson95": [value - 0.03, value + 0.02]}

    record["real_images"] = {"images": "53 real images of frames.npz", "twin_distance_db": {"mean": 22.09},
                             "reconstruction_db": {"real": {"mean": 24.97}, "twin": {"mean": 31.7}, "gap": 6.73},
                             "edits": {"from_real": {"exact": exact(0.846)}, "from_twin": {"exact": exact(0.953)}}}
    section = release.bench_section(record)
    assert section[-3:] == [
        "| real images: 53 real images of frames.npz; PSNR of the twin render of the same state | 22.1 dB |",
        "| reconstruction PSNR, real images / their twin renders | 25.0 / 31.7 dB |",
        "| edit exact by the nearest render, from real images / from their twin renders | 84.6% [81.6, 86.6] / "
        "95.3% [92.3, 97.3] |"]

    # a stage that kept its best validation (train.py --keep best) says which step, and so does the table
    metadata = json.loads((run / "causal" / "metadata.json").read_text())
    metadata["summary"]["kept"] = {"keep": "best", "step": 30, "monitor": "val/retrieval_transition_acc",
                                   "score": 0.3, "val_last": {"val/retrieval_transition_acc": 0.28}}
    (run / "causal" / "metadata.json").write_text(json.dumps(metadata))
    dest = release.main(["--run", str(run), "--name", "tiny_twin", "--dest", str(tmp_path / "out_best")])
    card = (dest / "README.md").read_text()
    assert ("the part before the interruption included); it kept the weights of step 30, its best validation by "
            "`val/retrieval_transition_acc` (30.0%; 28.0% at the last step).") in card
    assert "Validation pairs at step 30, the kept weights' (5000 pairs" in card
    assert "Released to score" not in card
    assert json.loads((dest / "config.json").read_text())["retrieval_score"] == ModelConfig().retrieval_score

    # released with another retrieval score: the config says it, the card says it, the weights are the run's
    assert ModelConfig().retrieval_score != "code_distance"
    dest = release.main(["--run", str(run), "--name", "tiny_twin", "--dest", str(tmp_path / "out_score"),
                         "--retrieval-score", "code_distance"])
    card = (dest / "README.md").read_text()
    assert CausalVQVAE.from_pretrained(dest).config.retrieval_score == "code_distance"
    assert ("- Released to score retrieval by transition by `code_distance` (`retrieval_score`; the run validated "
            "with `nll`). The weights are as trained.") in card
    assert (dest / "model.safetensors").read_bytes() == (run / "causal" / "model.safetensors").read_bytes()


def test_gpu_twin_runs_script_trains_benches_and_packs_a_run(tmp_path):
    """The device-call script end to end on the CPU, tiny: a broken script would waste GPU time."""
    import os
    import subprocess
    import tarfile

    from tiny import TINY_JSON

    config = tmp_path / "tiny.json"
    config.write_text(json.dumps({"model": TINY_JSON, "data": {"val_length": 16}}))
    env = {**os.environ, "PYTHON": sys.executable, "RUNS": str(tmp_path / "runs"), "OUT": str(tmp_path / "out"),
           "CAUSAL_VQVAE_CACHE": str(tmp_path / "cache"), "RUN_ONLY": "dsprites_small", "CLASSIFIERS": "0",
           "PAIRS": "16", "DEADLINE": "300", "BENCH_FLAGS": "--skip-exactness --skip-baseline --device cpu",
           "EXTRA_ARGS": f"--max-steps 2 --val-every 2 --batch-size 8 --gpus 0 --config {config}"}
    done = subprocess.run(["bash", str(ROOT / SCRIPTS["gpu_twin_runs"])], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    status = (tmp_path / "out" / "status.txt").read_text()
    assert "dsprites_small: trained" in status and "dsprites_small: benched" in status, status
    with tarfile.open(tmp_path / "out" / "dsprites_small.tar.gz") as archive:
        names = set(archive.getnames())
    assert {"config.json", "summary.json", "causal/model.safetensors", "causal/curves.json", "vqvae/curves.json",
            "bench/bench_dsprites_small_h100.json", "dsprites_small.train.log"} <= names
    assert "vqvae/model.safetensors" not in names  # the causal stage's weights hold the autoencoder too

    # A later call with RESUME=1 finds the run finished and benched: nothing is trained or benched again.
    bench_json = tmp_path / "runs" / "dsprites_small" / "bench" / "bench_dsprites_small_h100.json"
    benched = bench_json.read_bytes()
    again = subprocess.run(["bash", str(ROOT / SCRIPTS["gpu_twin_runs"])], cwd=ROOT,
                           env={**env, "RESUME": "1"}, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "dsprites_small: bench already done" in (tmp_path / "out" / "status.txt").read_text()
    assert bench_json.read_bytes() == benched


def test_gpu_speed_runs_script_runs_and_packs_each_variant(tmp_path):
    """The speed device-call script, on the CPU with the tiny model (COMMON replaces the CUDA flags)."""
    import os
    import subprocess
    import tarfile

    env = {**os.environ, "PYTHON": sys.executable, "OUT": str(tmp_path / "out"), "VARIANTS": "small_eager",
           "COMMON": "--device cpu --tiny --layout grid --no-flops --measurements retrieval_inference_missing"}
    bad = subprocess.run(["bash", str(ROOT / SCRIPTS["gpu_speed_runs"])], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=300)
    # a failing variant is reported, and the script still packs what it has
    assert bad.returncode == 0 and re.search(r"small_eager: exit [1-9]", bad.stdout), bad.stdout[-2000:]
    assert (tmp_path / "out" / "speed.tar.gz").is_file()
    env["COMMON"] = "--device cpu --tiny --layout grid --no-flops"
    done = subprocess.run(["bash", str(ROOT / SCRIPTS["gpu_speed_runs"])], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "small_eager: exit 0" in (tmp_path / "out" / "speed.log").read_text()
    with tarfile.open(tmp_path / "out" / "speed.tar.gz") as archive:
        record = json.load(archive.extractfile("./model_speed_h100_small_eager.json"))
    assert "--preset small" in record["meta"]["command"] and len(record["results"]) == 5
    assert all(r["error"] is None and r["ours_per_s"] > 0 for r in record["results"])


def test_graph_lr_tiny_cpu(tmp_path, capsys):
    from tiny import tiny_dsprites_model

    tiny_dsprites_model().eval().save_pretrained(tmp_path / "model")
    bench = _load("graph_lr")
    out = tmp_path / "graph_lr.json"
    record = bench.main(["--model", str(tmp_path / "model"), "--data", "dsprites", "--scales", "1", "50",
                         "--steps", "8", "--batch", "8", "--lr", "1e-3", "--train-pairs", "32", "--test-pairs", "20",
                         "--device", "cpu", "--out", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(record))
    results = record["results"]
    assert list(results) == ["model", "scale 1", "scale 50"]
    assert results["scale 1"]["edge_logit_lr"] == pytest.approx(1e-3)
    assert results["scale 50"]["edge_logit_lr"] == pytest.approx(5e-2)
    for r in results.values():
        assert 0 <= r["retrieval_transition_accuracy"] <= r["retrieval_transition_factor_accuracy"] <= 1
        assert 0 <= r["code_exact"] <= r["code_accuracy"] <= 1
        assert r["graph"]["thresholded_parents_per_node"] >= 0
    # the same draws, budgets and masks: only the edge logits' rate differs, and at 50x the budget
    # pulls the expected parents down further in the same steps
    slow, fast = results["scale 1"]["curve"][-1], results["scale 50"]["curve"][-1]
    assert slow["step"] == fast["step"] == 8
    assert fast["expected_parents_per_node"] < slow["expected_parents_per_node"]
    assert "| scale 50 | 0.05 |" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="--scales must be positive"):
        bench.main(["--model", str(tmp_path / "model"), "--data", "dsprites", "--scales", "0"])


def test_step_times_takes_the_median_step_time_between_logged_points(tmp_path):
    pytest.importorskip("tensorboard")
    from torch.utils.tensorboard import SummaryWriter

    step_times = _load("step_times")
    # 0.5 s a step, logged every 50 steps, with a 100 s validation after step 200 and a resumed
    # part in a second file: the median is the step time, without the validation.
    for part, steps in enumerate([range(0, 250, 50), range(250, 500, 50)]):
        writer = SummaryWriter(str(tmp_path / "run" / "causal" / "logs" / f"version_{part}"))
        for step in steps:
            writer.add_scalar("train/loss", 1.0, step, walltime=1000.0 + 0.5 * step + (100.0 if step > 200 else 0.0))
        writer.close()
    rows = step_times.main([str(tmp_path / "run"), "--out", str(tmp_path / "times.json")])
    assert rows[0]["points"] == 10 and rows[0]["median_s_per_step"] == pytest.approx(0.5)
    assert rows[0]["p90"] > 0.5  # the interval with the validation
    assert json.loads((tmp_path / "times.json").read_text())["rows"][0]["median_s_per_step"] == pytest.approx(0.5)
    with pytest.raises(SystemExit, match="no TensorBoard log"):
        step_times.main([str(tmp_path / "missing")])


def test_start_time_times_each_command_in_fresh_processes(tmp_path, monkeypatch, capsys):
    start_time = _load("start_time")
    monkeypatch.setattr(start_time, "CASES", [("causal-vqvae --help", ["--help"], 1.0, None),
                                              ("fails", ["edit", "--help"], 0.0, 100_000)])
    out = tmp_path / "start.json"
    result = start_time.main(["--repeat", "2", "--threads", "1", "--out", str(out)])
    assert json.loads(out.read_text()) == result
    first, second = result["rows"]
    assert first["command"] == "causal-vqvae --help" and len(first["runs_s"]) == 2
    assert first["median_s"] == pytest.approx(sum(first["runs_s"]) / 2, abs=2e-3)
    assert first["fastest_s"] == min(first["runs_s"]) > 0
    assert first["met"] == (first["median_s"] < 1.0)
    assert second["met"] is False  # nothing starts in 0 s
    assert 10 < first["peak_mb"] < 100_000 and second["target_mb"] == 100_000
    table = capsys.readouterr().out
    assert re.search(r"causal-vqvae --help\s+\d+\.\d\d\s+\d+\.\d\d\s+\d+\s+< 1 s\s+(yes|no)", table)
    assert re.search(r"fails\s+.*< 0 s and < 100000 MB\s+no", table)



def test_judge_side_factor_names_the_neighbour_an_image_is_rendered_from():
    import torch

    study = _load("chain_steps")
    dm = study.twin_datamodule("dsprites", 8, 8, 0)
    space, render = dm.space, dm.source.render
    targets = space.sample(6, torch.Generator().manual_seed(3))
    targets[:, space.factor_index("scale")] = 2  # room to move either way
    targets[:, space.factor_index("shape")] = 2  # a heart: no rotational symmetry
    for name in ("scale", "posX", "orientation"):
        f = space.factor_index(name)
        moved = targets.clone()
        moved[:, f] = (moved[:, f] + 1) % space.factors[f].cycle
        assert study.judge_edits(render(moved), targets, targets, space, render)["side_factor"].tolist() == [f] * 6


def test_judge_side_factor_leaves_out_a_symmetric_copy_of_the_target():
    import torch

    study = _load("chain_steps")
    space = study.twin_datamodule("dsprites", 8, 8, 0).space
    shape, orientation, pos_x = (space.factor_index(n) for n in ("shape", "orientation", "posX"))
    cycle = space.factors[orientation].cycle

    def render(states):  # a square's pose seen modulo a quarter turn; a step of posX costs 1
        states = space.canonical(states).float()
        turn = states[:, orientation] * (2 * math.pi / cycle) * 4
        others = torch.cat([states[:, :orientation], states[:, orientation + 1:]], 1) * 5.0
        others[:, pos_x - 1] /= 5.0
        return torch.cat([others, 3 * torch.cos(turn)[:, None], 3 * torch.sin(turn)[:, None]], 1)[:, None, None]

    square = space.sample(4, torch.Generator().manual_seed(1))
    square[:, shape] = 0
    # the target's own render: the copies turned by about 90 degrees (nearer it than a posX step)
    # match it and are left out, so the nearest state one factor away is one posX step
    assert study.judge_edits(render(square), square, square, space, render)["side_factor"].tolist() == [pos_x] * 4


def _tiny_dsprites_editing_every_node(folder):
    """A tiny dSprites model whose graph intervenes on every node (every edit changes codes), saved
    in ``folder``; returned in eval mode."""
    import torch
    from tiny import tiny_dsprites_model

    model = tiny_dsprites_model().eval()
    with torch.no_grad():
        model.graph.target_logits.fill_(30.0)
    model.save_pretrained(folder)
    return model


def test_chain_steps_judges_the_bench_chains_step_by_step(tmp_path, capsys, monkeypatch):
    import torch

    from causal_vqvae.eval.exactness import action_sequences

    model = _tiny_dsprites_editing_every_node(tmp_path / "model")
    study = _load("chain_steps")
    calls = []  # what the script hands the judge: (images, sources, targets, single_step, verdicts)
    pattern = torch.Generator().manual_seed(11)

    def spy(images, source, target, space, render, single_step=True):
        verdicts = judge(images, source, target, space, render, single_step)
        # verdicts of known pattern, so that every conditional rate has members on both sides
        exact = torch.rand(len(source), generator=pattern) < 0.6
        verdicts = {**verdicts, "exact": exact, "two_sided": exact & (torch.rand(len(source), generator=pattern) < 0.6)}
        calls.append((images.clone(), source.clone(), target.clone(), single_step, verdicts))
        return verdicts

    judge = study.judge_edits
    monkeypatch.setattr(study, "judge_edits", spy)
    out = tmp_path / "out" / "chains.json"
    assert study.main(["--model", str(tmp_path / "model"), "--data", "dsprites", "--pairs", "12",
                       "--batch-size", "6", "--seed", "5", "--out", str(out)]) == 0
    record = json.loads(out.read_text())
    assert record["pairs"] == 12 and record["seed"] == 5 and "--pairs 12" in record["command"]
    assert len(calls) == 2 * 5  # per batch: the first edit, the second from three codes, the chain
    dm = study.twin_datamodule("dsprites", 12, 6, 5)  # bench's chains: its test items, its draws
    space, actions, render = dm.space, dm.actions, dm.source.render
    start = dm._datasets["test"].__getitems__(list(range(12)))["factors"]
    ids, end = action_sequences(actions, start, 2, torch.Generator().manual_seed(5))
    middle = actions.apply(start, ids[:, 0])[0]
    got: dict[str, list] = {}
    for b in range(2):
        rows = slice(6 * b, 6 * b + 6)
        first, chained, re_encoded, clean, chain = calls[5 * b:5 * b + 5]
        assert [c[3] for c in (first, chained, re_encoded, clean, chain)] == [True, True, True, True, False]
        assert torch.equal(first[1], start[rows]) and torch.equal(first[2], middle[rows])
        for c in (chained, re_encoded, clean):  # the second edit, from the true middle state to the end
            assert torch.equal(c[1], middle[rows]) and torch.equal(c[2], end[rows])
        assert torch.equal(chain[1], start[rows]) and torch.equal(chain[2], end[rows])
        with torch.no_grad():
            codes = model.edit_codes(model.encode_codes(render(start[rows])), ids[rows, 0])
            edited = model.decode_codes(codes)
            clean_codes = model.encode_codes(render(middle[rows]))
            expected = {
                "first": edited,
                "chained": model.decode_codes(model.edit_codes(codes, ids[rows, 1])),
                "re_encoded": model.decode_codes(model.edit_codes(model.encode_codes(edited), ids[rows, 1])),
                "clean": model.decode_codes(model.edit_codes(clean_codes, ids[rows, 1])),
            }
        for c, name in zip((first, chained, re_encoded, clean, chain),
                           ("first", "chained", "re_encoded", "clean", "chained")):
            assert torch.allclose(c[0], expected[name], atol=1e-6), name
        for key, value in (("first_ok", first[4]["exact"]), ("first_2s", first[4]["two_sided"]),
                           ("chained", chained[4]["exact"]), ("chained_2s", chained[4]["two_sided"]),
                           ("re_encoded", re_encoded[4]["exact"]), ("clean", clean[4]["exact"]),
                           ("chain", chain[4]["exact"]), ("codes_off", (codes != clean_codes).sum(1).float()),
                           ("side", first[4]["side_factor"])):
            got.setdefault(key, []).append(value)
    v = {key: torch.cat(value) for key, value in got.items()}

    def mean(values, members):
        return round(float(values[members].float().mean()), 4)

    ok, steps, hidden = v["first_ok"], v["first_2s"] & v["chained_2s"], v["first_ok"] & ~v["first_2s"]
    assert 0 < int(ok.sum()) < 12 and 0 < int(steps.sum()) < 12 and int(hidden.sum()) > 0
    assert record["first"] == {"exact": mean(ok, slice(None)), "two_sided": mean(v["first_2s"], slice(None))}
    for name in ("chained", "re_encoded", "clean"):
        assert record["second"][name] == {"exact": mean(v[name], slice(None)),
                                          "exact_after_exact_first": mean(v[name], ok)}
    assert record["chain"] == {
        "exact": mean(v["chain"], slice(None)), "exact_after_two_sided_steps": mean(v["chain"], steps),
        "exact_otherwise": mean(v["chain"], ~steps), "two_sided_steps": mean(steps, slice(None)),
        "exact_after_hidden_side_effect": mean(v["chain"], hidden)}
    assert record["codes_off"] == round(float(v["codes_off"][ok].mean()), 2)
    acted = actions.factor_of(ids[:, 0])
    for f in actions.factors:
        counts = torch.bincount(v["side"][hidden & (acted == f)], minlength=len(space.factors))
        assert record["side_effects"][space.names[f]]["nearer_a_neighbour_moving"] == {
            space.names[g]: int(c) for g, c in enumerate(counts.tolist()) if c}
    counted = sum(sum(s["nearer_a_neighbour_moving"].values()) for s in record["side_effects"].values())
    assert counted == int(hidden.sum())
    assert "chain judged as one" in capsys.readouterr().out


@pytest.mark.parametrize("carried", [None, 1e-12, 1e9])
def test_calibrate_familiarity_report_flags_by_the_threshold_the_model_carries(carried, tmp_path):
    from tiny import tiny_dsprites_model

    script = _load("calibrate_familiarity")
    folder = tmp_path / "model"
    tiny_dsprites_model().save_pretrained(folder)
    metadata_path = folder / "metadata.json"
    if carried is not None:  # a record as training writes it; 1e-12 flags every image, 1e9 none
        metadata = json.loads(metadata_path.read_text())
        metadata["reconstruction_error"] = {"threshold": carried, "p99": carried / 10}
        metadata_path.write_text(json.dumps(metadata))
    before = metadata_path.read_bytes()
    result = script.main(["--model", str(folder), "--data", "dsprites", "--images", "32",
                          "--report", str(tmp_path / "report.json")])
    assert metadata_path.read_bytes() == before  # without --write the model is not touched
    assert json.loads((tmp_path / "report.json").read_text()) == json.loads(json.dumps(result))
    kinds = {row["images"]: row for row in result["kinds"]}
    assert "held-out twin images (test split)" in kinds and "uniform noise" in kinds
    if carried is None:  # nothing carried: this calibration's own threshold, above its p99
        assert result["threshold_from"] == "this calibration (not written)"
        assert result["threshold"] == result["record"]["threshold"] > result["record"]["p99"]
    else:
        assert result["threshold_from"] == "the model's metadata.json" and result["threshold"] == carried
        assert {row["unfamiliar"] for row in kinds.values()} == {1.0 if carried < 1 else 0.0}


def test_calibrate_familiarity_reads_the_real_gif_frames_as_bench_does():
    import torch

    script = _load("calibrate_familiarity")
    path = script.SHARED / "shapes3d_real_frames.npz"
    if not path.is_file():
        pytest.skip(f"{path} (the project's shared real frames) is not here")
    from causal_vqvae.eval.real_images import load_real_images

    frames = script.real_frames("shapes3d")
    assert frames.shape == (53, 3, 64, 64) and frames.dtype == torch.float32
    # the frame cut off and area-downsampled: the very images bench --real-images measures
    assert torch.equal(frames, load_real_images(path, candidates=torch.arange(1)).images)


def test_code_regions_splits_the_grid_into_sprite_ring_and_far_cells():
    import torch

    study = _load("code_regions")
    image, image_next = torch.zeros(1, 1, 32, 32), torch.zeros(1, 1, 32, 32)
    image[0, 0, 9, 10] = 1.0  # cell (1, 1) of a 4 x 4 grid of 8-pixel cells
    image_next[0, 0, 30, 31] = 0.5  # cell (3, 3)
    masks = study.regions(image, image_next, cell=8)
    grid = {name: mask.view(4, 4) for name, mask in masks.items()}
    sprite = torch.zeros(4, 4, dtype=torch.bool)
    sprite[1, 1] = sprite[3, 3] = True
    ring = torch.zeros(4, 4, dtype=torch.bool)
    ring[0:3, 0:3] = True
    ring[2:4, 2:4] = True
    ring &= ~sprite
    assert torch.equal(grid["sprite"], sprite) and torch.equal(grid["ring"], ring)
    assert torch.equal(grid["far"], ~(sprite | ring))
    assert grid["far"].nonzero().tolist() == [[0, 3], [1, 3], [3, 0], [3, 1]]  # beside neither sprite cell
    faint = torch.full((1, 1, 32, 32), 0.06)  # no pixel above 0.1 in either image: no sprite cell anywhere
    assert not study.regions(faint, faint, cell=8)["sprite"].any()


def test_code_regions_splices_the_targets_codes_region_by_region_tiny_cpu(tmp_path, capsys, monkeypatch):
    import torch

    model = _tiny_dsprites_editing_every_node(tmp_path / "model")
    study = _load("code_regions")
    decoded = []  # every code grid the script decodes, in order
    decode = type(model).decode_codes
    monkeypatch.setattr(type(model), "decode_codes", lambda self, codes: decoded.append(codes.clone())
                        or decode(self, codes))
    out = tmp_path / "regions.json"
    assert study.main(["--model", str(tmp_path / "model"), "--pairs", "10", "--batch", "5", "--out", str(out)]) == 0
    record = json.loads(out.read_text())
    results = record["results"]
    assert record["command"].startswith("python experiments/shape_edits/code_regions.py --model")
    assert sum(r["pairs"] for name, r in results.items() if not name.startswith("shape:")) == 10
    dm = study.twin_datamodule("dsprites", 10, 5, 0)
    items = dm._datasets["test"].__getitems__(list(range(10)))
    batch = dm.prepare_batch(items)
    with torch.no_grad():
        codes, target = model.encode_codes(batch["image"]), model.encode_codes(batch["image_next"])
        edited = model.edit_codes(codes, batch["action"])
    masks = study.regions(batch["image"], batch["image_next"], batch["image"].shape[-1] // model.config.grid_size)
    assert len(decoded) == 2 * len(study.SPLICES)  # two batches, one decode per splice
    for b in range(2):
        rows = slice(5 * b, 5 * b + 5)
        for i, (splice, names) in enumerate(study.SPLICES.items()):
            put = torch.zeros_like(codes[rows], dtype=torch.bool)
            for name in names:
                put |= masks[name][rows]
            expected = torch.where(put, target[rows], edited[rows])
            assert torch.equal(decoded[b * len(study.SPLICES) + i], expected), splice
    verdict = study.judge_edits(model.decode_codes(edited), items["factors"], items["factors_next"], dm.space,
                                dm.source.render)["exact"]
    factor = dm.actions.factor_of(items["action"])
    changed = codes != target
    for f in factor.unique().tolist():
        row, member = results[dm.space.names[f]], factor == f
        assert abs(row["exact_with_target_in_none"]["rate"] - float(verdict[member].float().mean())) < 1e-6
        total = sum(row[f"{name}_changed"] for name in study.REGIONS)
        assert abs(total - float(changed[member].float().sum(1).mean())) < 1e-3
        assert sum(row[f"{name}_cells"] for name in study.REGIONS) == model.config.num_nodes
        for name in study.REGIONS:  # pooled over the factor's edits
            here = changed[member] & masks[name][member]
            expected = (float((edited[member] == target[member])[here].float().sum()) / float(here.sum())
                        if here.any() else None)
            assert row[f"{name}_code_accuracy"] == (None if expected is None else round(expected, 4))
    shape = results.get("shape", {"pairs": 0})
    kinds = [r["pairs"] for name, r in results.items() if name.startswith("shape:")]
    assert sum(kinds) == shape["pairs"]
    assert "exact with the target's codes in" in capsys.readouterr().out
