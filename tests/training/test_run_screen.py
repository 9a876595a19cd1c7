"""What a training run shows: a progress bar with the stage, its step and the loss; none of
Lightning's tips or model summaries; and at the end one screen with what was written and what to
run next (or, with --json, one JSON document)."""

from __future__ import annotations

import json

import pytest

from causal_vqvae.cli.main import main
from causal_vqvae.locate import resolve_model
from tiny import TINY_JSON


pytestmark = pytest.mark.usefixtures("one_thread")


def _train(tmp_path, *flags: str) -> int:
    overrides = tmp_path / "overrides.json"
    overrides.write_text(json.dumps({"model": TINY_JSON, "data": {"val_length": 8}}))
    return main(["train", "--data", "dsprites", "--preset", "cpu-small", "--config", str(overrides),
                 "--max-steps", "3", "--val-every", "3", "--batch-size", "4", "--device", "cpu",
                 "--out", str(tmp_path / "run"), *flags])


def test_a_run_shows_progress_and_ends_with_what_it_wrote_and_what_to_run_next(tmp_path, capfd):
    assert _train(tmp_path) == 0
    out, err = capfd.readouterr()
    run, shown = tmp_path / "run", out + err  # tqdm writes to stderr, or to stdout where stderr is not a terminal
    assert "vqvae from step 0 of 3" in shown and "causal from step 0 of 3" in shown
    assert "loss=" in shown
    for chatter in ("Tip:", "Total params", "Total Flops", "LeafSpec", "GPU available"):
        assert chatter not in out + err, chatter
    assert f"done: {run}/vqvae/, causal/ (the model: {run / 'causal'})" in out
    assert f"causal-vqvae edit --model {run} --image IMAGE --traverse" in out
    assert f"causal-vqvae bench --model {run} --data dsprites" in out
    assert resolve_model(run) == run / "causal"  # the command it suggests finds the model


def test_a_run_with_json_prints_one_json_document(tmp_path, capfd):
    assert _train(tmp_path, "--json", "--no-progress") == 0
    out, _ = capfd.readouterr()
    data = json.loads(out)
    assert data["final"] == str(tmp_path / "run" / "causal") and data["stages"] == ["vqvae", "causal"]
    assert data["summary"]["causal"]["kept"]["step"] == 3
