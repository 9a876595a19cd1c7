"""Tests of the held-out benchmark harness (causal_vqvae.bench): scoring on known answers, the
oracle baseline on real twin pairs, and an end-to-end run on a tiny random model."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from causal_vqvae import CausalVQVAE, ModelConfig
from causal_vqvae.bench import accuracy_report, main
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
    from causal_vqvae.bench import _datamodule

    dm = _datamodule("dsprites", pairs=256, batch=256, seed=0)
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


def _run(model_dir, out):
    return main(["--model", str(model_dir), "--data", "dsprites", "--pairs", "64", "--batch", "32",
                 "--seed", "0", "--device", "cpu", "--out", str(out)])


def test_end_to_end_tiny_model(tiny_model, tmp_path, capsys):
    out = tmp_path / "res" / "bench.json"
    returned = _run(tiny_model, out)
    printed = capsys.readouterr().out
    data = json.loads(out.read_text())
    assert data == json.loads(json.dumps(returned))

    meta = data["meta"]
    assert meta["data"] == "dsprites procedural twin" and meta["pairs"] == 64 and meta["seed"] == 0
    assert meta["device"] == "cpu" and meta["torch"] == torch.__version__
    assert "--pairs 64" in meta["command"]

    counts = data["label_counts"]
    assert sum(counts) == 64
    reports = {**data["methods"], **data["baselines"]}
    assert set(data["methods"]) == {"transition", "head"}
    assert set(data["baselines"]) == {"chance", "constant", "oracle"}
    for name, r in reports.items():
        assert 0.0 <= r["action_accuracy"] <= 1.0 and 0.0 <= r["factor_accuracy"] <= 1.0, name
        assert r["factor_accuracy"] >= r["action_accuracy"] - 1e-12, name
        rows = np.array(r["confusion"]).sum(1)
        assert np.allclose(rows, counts), name  # each row sums to the count of that true action
        assert sum(f["count"] for f in r["per_factor"].values()) == 64
    for method in ("transition", "head"):
        assert data["methods"][method]["pairs_per_s"] > 0
        assert (out.parent / data["confusion_png"][method]).name == f"bench_confusion_{method}.png"
        assert (out.parent / f"bench_confusion_{method}.png").stat().st_size > 0
    assert data["baselines"]["oracle"]["action_accuracy"] == 1.0
    assert data["baselines"]["chance"]["action_accuracy"] == pytest.approx(0.1)
    constant = data["baselines"]["constant"]
    assert constant["action_accuracy"] == pytest.approx(counts[constant["action_id"]] / 64)

    fidelity = data["fidelity"]
    assert all(math.isfinite(v) for v in fidelity.values())
    assert fidelity["edit_mse"] >= 0 and 0 <= fidelity["code_node_accuracy"] <= 1
    assert 0 <= fidelity["code_all_nodes_accuracy"] <= 1

    # only the JSON and the two PNGs: no temporary file left behind
    assert sorted(p.name for p in out.parent.iterdir()) == sorted(
        ["bench.json", "bench_confusion_head.png", "bench_confusion_transition.png"])
    assert "transition" in printed and "head" in printed and "PSNR" in printed

    again = _run(tiny_model, tmp_path / "again.json")
    for method in ("transition", "head"):
        for key in ("action_accuracy", "factor_accuracy", "confusion", "per_factor"):
            assert again["methods"][method][key] == data["methods"][method][key]
    assert again["fidelity"] == pytest.approx(data["fidelity"])
