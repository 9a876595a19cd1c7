"""Tests of the held-out benchmark harness (causal_vqvae.eval, run by causal_vqvae.cli.bench):
scoring on known answers, the oracle baseline on real twin pairs, the run budget, the supervised
baseline, edit sequences, the pictures, and an end-to-end run on a tiny random model."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

import causal_vqvae.eval.baseline as baseline
from causal_vqvae import CausalVQVAE, ModelConfig
from causal_vqvae.cli.bench import _budget_value, bench
from causal_vqvae.eval.baseline import BaselineSettings, RunBudget, load_or_train_baseline, run_budget, score_baseline
from causal_vqvae.eval.data import twin_datamodule
from causal_vqvae.eval.exactness import action_sequences
from causal_vqvae.eval.metrics import accuracy_report
from causal_vqvae.eval.pictures import (
    CELL,
    GROUP_GAP,
    HEADER,
    INVALID_GREY,
    MARGIN,
    PAIR_GAP,
    ROW_GAP,
    actions_columns,
    actions_image,
)
from causal_vqvae.eval.report import code_revision
from datamodules.dsprites import DSPRITES
from datamodules.factors import ActionSpace

NAMES5 = ["f0", "f1", "f2", "f3", "f4"]  # 10 actions, ids 2f (minus) and 2f + 1 (plus)


def test_perfect_predictions():
    true = np.repeat(np.arange(10), 3)
    r = accuracy_report(true.copy(), true, 10, NAMES5)
    assert r["n"] == 30 and r["action_accuracy"] == 1.0 and r["factor_accuracy"] == 1.0
    assert np.array_equal(np.array(r["confusion"]), 3 * np.eye(10, dtype=int))
    for name in NAMES5:
        assert r["per_factor"][name] == {"count": 6, "action_accuracy": 1.0, "factor_accuracy": 1.0}


def test_constant_predictor_on_balanced_labels():
    true = torch.arange(10).repeat(4)  # balanced: 4 of each action
    r = accuracy_report(torch.full((40,), 3), true, 10, NAMES5)
    assert r["action_accuracy"] == pytest.approx(1 / 10)
    assert r["factor_accuracy"] == pytest.approx(2 / 10)  # action 3 moves factor 1, as do ids 2 and 3
    confusion = np.array(r["confusion"])
    assert confusion[:, 3].tolist() == [4] * 10 and confusion.sum() == 40
    assert r["per_factor"]["f1"] == {"count": 8, "action_accuracy": 0.5, "factor_accuracy": 1.0}
    assert r["per_factor"]["f0"] == {"count": 8, "action_accuracy": 0.0, "factor_accuracy": 0.0}


def test_uniform_probabilities_score_chance():
    true = np.array([0, 0, 1, 5, 9, 9, 9])
    r = accuracy_report(np.full((7, 10), 0.1), true, 10, NAMES5)
    assert r["action_accuracy"] == pytest.approx(0.1) and r["factor_accuracy"] == pytest.approx(0.2)
    assert np.allclose(np.array(r["confusion"]).sum(1), np.bincount(true, minlength=10))


def test_per_factor_on_a_small_case():
    # 4 actions / 2 factors ("a": ids 0, 1; "b": ids 2, 3)
    true = np.array([0, 0, 1, 2, 3, 3])
    pred = np.array([0, 1, 2, 2, 2, 0])
    r = accuracy_report(pred, true, 4, ["a", "b"])
    assert r["action_accuracy"] == pytest.approx(2 / 6)
    assert r["factor_accuracy"] == pytest.approx(4 / 6)  # pairs 0, 1, 3, 4
    assert r["per_factor"]["a"] == {"count": 3, "action_accuracy": pytest.approx(1 / 3),
                                    "factor_accuracy": pytest.approx(2 / 3)}
    assert r["per_factor"]["b"] == {"count": 3, "action_accuracy": pytest.approx(1 / 3),
                                    "factor_accuracy": pytest.approx(2 / 3)}
    assert r["confusion"] == [[1, 1, 0, 0], [0, 0, 1, 0], [0, 0, 1, 0], [1, 0, 1, 0]]
    empty = accuracy_report(np.array([0]), np.array([0]), 4, ["a", "b"])
    assert empty["per_factor"]["b"] == {"count": 0, "action_accuracy": None, "factor_accuracy": None}


def test_rejects_bad_input():
    with pytest.raises(ValueError):
        accuracy_report(np.array([0, 10]), np.array([0, 1]), 10, NAMES5)  # predicted id out of range
    with pytest.raises(ValueError):
        accuracy_report(np.array([0, 1]), np.array([0, 1]), 10, NAMES5[:3])  # wrong number of factors


def test_oracle_is_exact_on_dsprites_test_pairs():

    dm = twin_datamodule("dsprites", pairs=256, batch=256, seed=0)
    batch = dm._datasets["test"].__getitems__(list(range(256)))
    actions = dm.actions
    oracle = actions.action_between(batch["factors"], batch["factors_next"])
    factor_names = [dm.space.names[f] for f in actions.factors]
    r = accuracy_report(oracle, batch["action"], len(actions), factor_names)
    assert r["action_accuracy"] == 1.0 and r["factor_accuracy"] == 1.0


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    config = ModelConfig(
        in_channels=1, dataset="dsprites", num_actions=10, action_names=ActionSpace(DSPRITES).names,
        hidden_dims=(16, 32, 32), num_res_blocks=1, norm_groups=8, code_dim=16, codebook_size=16,
        transition_dim=32, transition_layers=1, transition_heads=4, target_head_dim=16,
        target_context_layers=0, retrieval_dim=32, retrieval_layers=1, retrieval_heads=4,
    )
    directory = tmp_path_factory.mktemp("tiny") / "model"
    CausalVQVAE(config).save_pretrained(directory)
    return directory


def test_run_budget_reads_the_run_config(tmp_path):
    run = tmp_path / "run"
    (run / "causal").mkdir(parents=True)
    assert run_budget(run / "causal") == RunBudget()  # no config: flags and defaults decide
    config = {"train": {"causal_steps": 900}, "data": {"batch_size": 32, "frequency": "rare:shape:50"},
              "devices": {"devices": 2}, "num_nodes": 3}
    (run / "config.json").write_text(json.dumps(config))
    budget = run_budget(run / "causal")
    assert (budget.steps, budget.batch_size, budget.frequency) == (900, 32 * 2 * 3, "rare:shape:50")
    assert budget.config == str((run / "config.json").resolve())
    assert _budget_value(None, "--baseline-steps", budget.steps, 2000) == (900, "run config")
    assert _budget_value(5, "--baseline-steps", budget.steps, 2000) == (5, "--baseline-steps")
    assert _budget_value(None, "--baseline-steps", None, 2000) == (2000, "default")
    (run / "config.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="not a train.py run config"):
        run_budget(run / "causal")


@pytest.fixture(scope="module")
def dm():

    return twin_datamodule("dsprites", pairs=32, batch=16, seed=0)


def test_supervised_baseline_plumbing_and_cache(dm, tmp_path, monkeypatch):
    settings = BaselineSettings("dsprites", steps=2, batch_size=8, frequency="rare:shape:5", width=4, features=16)
    net, record = load_or_train_baseline(dm, settings, torch.device("cpu"), tmp_path, progress=False)
    assert not record["cached"] and record["training"]["pairs"] == 16
    report = score_baseline(net, dm, 32, 16, torch.device("cpu"))
    assert report["n"] == 32 and np.array(report["confusion"]).shape == (10, 10)
    assert np.array(report["confusion"]).sum() == 32 and report["pairs_per_s"] > 0

    monkeypatch.setattr(baseline, "_train_baseline", lambda *a, **k: pytest.fail("the cached baseline was retrained"))
    cached, again = load_or_train_baseline(dm, settings, torch.device("cpu"), tmp_path, progress=False)
    assert again["cached"] and again["training"] == record["training"]
    assert score_baseline(cached, dm, 32, 16, torch.device("cpu"))["confusion"] == report["confusion"]


def test_action_sequences_are_valid_seeded_and_replayable():
    actions = ActionSpace(DSPRITES)
    start = torch.tensor([[0, 0, 0, 38, 0, 31], [0, 2, 5, 0, 31, 0]] * 50)  # at the ends of their ranges
    ids, final = action_sequences(actions, start, 4, torch.Generator().manual_seed(3))
    again, _ = action_sequences(actions, start, 4, torch.Generator().manual_seed(3))
    assert ids.shape == (100, 4) and torch.equal(ids, again)
    state = start
    for t in range(4):
        assert actions.valid_mask(state).gather(1, ids[:, t:t + 1]).all()
        state, _ = actions.apply(state, ids[:, t])
    assert torch.equal(state, final)
    assert len(set(ids[:, 0].tolist())) > 3  # drawn, not always the same action


def test_actions_picture_shows_edits_beside_true_targets(tiny_model, dm):
    model = CausalVQVAE.from_pretrained(tiny_model).eval()
    states = torch.tensor([[0, 0, 0, 5, 10, 10], [0, 2, 3, 7, 20, 5]])  # scale- is invalid in row 0
    image = actions_image(model, dm, states, torch.device("cpu"))
    a = len(dm.actions)
    assert image.size == (2 * MARGIN + (2 + 2 * a) * CELL + (1 + a) * GROUP_GAP + a * PAIR_GAP,
                          HEADER + 2 * (CELL + ROW_GAP) + MARGIN)
    columns = actions_columns(a)
    scale_minus = dm.actions.parse("scale-")
    left = columns[2 + 2 * scale_minus + 1]
    assert image.getpixel((left + 4, HEADER + CELL // 2)) == INVALID_GREY  # invalid: grey (with an X)
    target, _ = dm.actions.apply(states[1:], torch.tensor([scale_minus]))
    truth = (dm.source.render(target)[0, 0] * 255).round().byte().numpy()
    cell = np.asarray(image)[HEADER + CELL + ROW_GAP:HEADER + 2 * CELL + ROW_GAP, left:left + CELL, 0]
    assert np.array_equal(cell, truth)  # valid: the twin's render of the true target
    first = np.asarray(image)[HEADER:HEADER + CELL, columns[0]:columns[0] + CELL, 0]
    assert np.array_equal(first, (dm.source.render(states[:1])[0, 0] * 255).round().byte().numpy())


def _run(model_dir, out):
    return bench(["--model", str(model_dir), "--data", "dsprites", "--pairs", "64", "--batch", "32",
                 "--seed", "0", "--device", "cpu", "--out", str(out), "--baseline-steps", "2",
                 "--baseline-batch", "8", "--classifier-steps", "2", "--classifier-batch", "8",
                 "--classifier-test-states", "32", "--picture-rows", "2"])


def test_end_to_end_tiny_model(tiny_model, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("CAUSAL_VQVAE_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "res" / "bench.json"
    returned = _run(tiny_model, out)
    printed = capsys.readouterr().out
    data = json.loads(out.read_text())
    assert data == json.loads(json.dumps(returned))

    meta = data["meta"]
    assert meta["data"] == "dsprites procedural twin" and meta["pairs"] == 64 and meta["seed"] == 0
    assert meta["device"] == "cpu" and meta["torch"] == torch.__version__
    assert "--pairs 64" in meta["command"]
    assert meta["test_frequency"] == "balanced" and meta["train_frequency"] == "balanced"
    assert meta["run_config"] is None and meta["retrieval_score"] == "marginal_nll"
    assert meta["code"] == code_revision()  # the checkout's commit (None for an installed wheel)

    counts = data["label_counts"]
    assert sum(counts) == 64
    reports = {**data["methods"], **data["baselines"]}
    assert set(data["methods"]) == {"transition", "head"}
    assert set(data["baselines"]) == {"chance", "constant", "oracle", "supervised_cnn"}
    for name, r in reports.items():
        assert 0.0 <= r["action_accuracy"] <= 1.0 and 0.0 <= r["factor_accuracy"] <= 1.0, name
        assert r["factor_accuracy"] >= r["action_accuracy"] - 1e-12, name
        rows = np.array(r["confusion"]).sum(1)
        assert np.allclose(rows, counts), name  # each row sums to the count of that true action
        assert sum(f["count"] for f in r["per_factor"].values()) == 64
    for method in ("transition", "head", "supervised_cnn"):
        assert reports[method]["pairs_per_s"] > 0
        assert data["confusion_png"][method] == f"bench_confusion_{method}.png"
        assert (out.parent / f"bench_confusion_{method}.png").stat().st_size > 0
    assert data["baselines"]["oracle"]["action_accuracy"] == 1.0
    assert data["baselines"]["chance"]["action_accuracy"] == pytest.approx(0.1)
    constant = data["baselines"]["constant"]
    assert constant["action_accuracy"] == pytest.approx(counts[constant["action_id"]] / 64)
    supervised = data["baselines"]["supervised_cnn"]
    assert supervised["training"]["steps"] == 2 and supervised["training"]["batch"] == 8
    assert supervised["frequency"] == "balanced" and not supervised["cached"]
    assert supervised["budget_from"] == {"steps": "--baseline-steps", "batch": "--baseline-batch"}
    assert supervised["cache_path"].startswith(str(tmp_path / "cache"))

    graph = data["graph"]
    assert graph["expected_parents_per_node"] >= 0 and graph["thresholded_parents_per_node"] >= 0
    assert graph["edge_probability_median"] <= graph["edge_probability_p99"] <= graph["edge_probability_max"] <= 1
    assert "parents per node at evaluation" in printed

    fidelity = data["fidelity"]
    assert all(math.isfinite(v) for v in fidelity.values())
    assert fidelity["edit_mse"] >= 0 and 0 <= fidelity["code_node_accuracy"] <= 1
    assert 0 <= fidelity["code_all_nodes_accuracy"] <= 1

    exactness = data["exactness"]
    classifier = exactness["classifier"]
    assert classifier["held_out"]["n"] == 32 and classifier["training"]["steps"] == 2
    assert exactness["counts"] == classifier["meets_bar"] == (classifier["held_out"]["all_factors"] >= 0.995)
    for key, n in (("k1", 64), ("k2", 64), ("k3", 64), ("k4", 64)):
        e = exactness[key]
        assert e["n"] == n, key
        for value in (e["exact"], e["reference_true_render"], e["reference_reconstruction"]):
            assert 0.0 <= value <= 1.0, key
    single = exactness["k1"]
    assert sum(v["count"] for v in single["per_acted_factor"].values()) == 64
    assert set(single["per_acted_factor"]) == set(data["factor_names"]) == set(single["disturbed"])

    edits = data["edits"]  # the nearest-render judge: every rate with its count and Wilson interval
    judged = edits["k1"]
    for r in (judged, judged["reference_decoder"], *judged["per_acted_factor"].values()):
        for key in ("exact", "exact_strict", "unchanged", "two_sided"):
            low, high = r[key]["wilson95"]
            assert 0.0 <= low <= r[key]["rate"] <= high <= 1.0, key
        assert r["exact"]["rate"] + r["unchanged"]["rate"] <= 1.0 + 1e-12
        assert r["two_sided"]["rate"] <= r["exact"]["rate"] and r["exact_strict"]["rate"] <= r["exact"]["rate"]
    assert judged["exact"]["n"] == judged["reference_decoder"]["exact"]["n"] == 64
    assert sum(r["exact"]["n"] for r in judged["per_acted_factor"].values()) == 64
    assert set(judged["per_acted_factor"]) == set(data["factor_names"])
    for k in (2, 3, 4):
        chain = edits[f"k{k}"]
        assert chain["k"] == k and set(chain) == {"k", "one_edit", "in_a_row"}
        for mode in ("one_edit", "in_a_row"):
            assert chain[mode]["exact"]["n"] == 64 and 0 <= chain[mode]["unchanged"]["rate"] <= 1

    assert data["pngs"] == {"confusion_transition": "bench_confusion_transition.png",
                            "confusion_head": "bench_confusion_head.png",
                            "confusion_supervised_cnn": "bench_confusion_supervised_cnn.png",
                            "actions": "bench_actions.png", "graph": "bench_graph.png"}
    with Image.open(out.parent / "bench_actions.png") as actions_png:
        assert actions_png.size == (2 * MARGIN + 22 * CELL + 11 * GROUP_GAP + 10 * PAIR_GAP,
                                    HEADER + 2 * (CELL + ROW_GAP) + MARGIN)  # 2 rows; input, recon, 10 pairs
    with Image.open(out.parent / "bench_graph.png") as graph_png:
        assert graph_png.height > 10 * 6 + 64 * 4 and graph_png.width > 64 * 6  # 10 x 64 targets, 64 x 64 edges

    # only the JSON and the PNGs: no temporary file left behind
    assert sorted(p.name for p in out.parent.iterdir()) == sorted(["bench.json", *data["pngs"].values()])
    for text in ("transition", "head", "PSNR", "supervised_cnn", "per factor of the true action",
                 "factor classifier, held out", "BELOW the 99.5% bar", "k = 4", "bench_actions.png",
                 "edits, nearest render", "one multi-step edit", "edits in a row", "decode(encode(target))"):
        assert text in printed, text

    again = _run(tiny_model, tmp_path / "again.json")
    for method in ("transition", "head"):
        for key in ("action_accuracy", "factor_accuracy", "confusion", "per_factor"):
            assert again["methods"][method][key] == data["methods"][method][key]
    assert again["fidelity"] == pytest.approx(data["fidelity"])
    assert again["baselines"]["supervised_cnn"]["cached"] and again["exactness"]["classifier"]["cached"]
    assert again["baselines"]["supervised_cnn"]["confusion"] == supervised["confusion"]
    for key in ("k1", "k2", "k3", "k4"):
        assert again["exactness"][key] == data["exactness"][key]
        assert again["edits"][key] == data["edits"][key]


def test_a_record_names_the_commit_of_the_checkout_that_holds_the_package(tmp_path):
    import shutil
    import subprocess

    if shutil.which("git") is None:
        pytest.skip("needs git")
    repo = tmp_path / "repo"
    package = repo / "causal_vqvae"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("x = 1\n")

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", *args],
                              capture_output=True, text=True, check=True).stdout.strip()

    assert code_revision(package) is None  # not a checkout yet
    git("init", "-q")
    git("add", ".")
    git("commit", "-qm", "one")
    assert code_revision(package) == {"commit": git("rev-parse", "HEAD"), "modified": False}
    (package / "__init__.py").write_text("x = 2\n")
    assert code_revision(package)["modified"] is True
    nested = repo / "site" / "causal_vqvae"  # a copy somewhere inside another repository: not its checkout
    nested.mkdir(parents=True)
    assert code_revision(nested) is None
