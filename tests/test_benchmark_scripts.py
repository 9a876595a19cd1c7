"""Smoke tests of the benchmark scripts (tiny sizes on the CPU; real figures come from a GPU run)."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load(name: str):
    """Import ``benchmarks/<name>.py`` (benchmarks/ is a folder of scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(f"_bench_{name}", ROOT / "benchmarks" / f"{name}.py")
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
