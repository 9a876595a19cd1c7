"""The benchmark's record: the JSON head of a benchmark script, the results written as JSON, and
the table printed to stdout."""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from .. import files
from .exactness import SEQUENCE_STEPS
from .retrieval import METHODS

__all__ = ["code_revision", "script_record", "write_json", "format_table"]


def script_record(script: str, argv: Sequence[str] | None, args: argparse.Namespace, device: torch.device,
                  **fields: Any) -> dict[str, Any]:
    """The head of a benchmark script's JSON: its command line (``argv``, or this process's),
    settings (every flag but ``out``), device, torch version and the code's commit
    (:func:`code_revision`), then ``fields``."""
    return {
        "command": f"python {script} " + shlex.join(sys.argv[1:] if argv is None else argv),
        "settings": {k: v for k, v in vars(args).items() if k != "out"},
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__, "code": code_revision(), **fields,
    }


def code_revision(package: Path | None = None) -> dict[str, Any] | None:
    """Which code made a record: ``{"commit": the git commit of the checkout whose top folder holds
    the package (``package``: its folder, default this one), "modified": whether its tracked files
    differ from that commit}``, or None when the package is not at the top of a git checkout (an
    installed wheel, even inside some other repository) or git cannot be run."""
    folder = Path(__file__).resolve().parents[1] if package is None else Path(package)

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(folder), *args], capture_output=True, text=True, timeout=30,
                              check=True).stdout.strip()

    try:
        if Path(git("rev-parse", "--show-toplevel")).resolve() != folder.resolve().parent:
            return None
        commit = git("rev-parse", "HEAD")
        modified = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit, "modified": modified}


def write_json(path: Path, data: dict) -> None:
    """The results as JSON, atomically; NaN is refused (every figure must be a number or null)."""
    files.write_json(path, data, allow_nan=False)


def _fmt(x: float | None) -> str:
    return "   -  " if x is None else f"{100 * x:6.2f}"


def _retrieval_rows(results: dict) -> dict[str, dict]:
    """The reports of every retrieval predictor, the methods first."""
    return {**results["methods"], **{f"baseline: {k}": v for k, v in results["baselines"].items()}}


def format_table(results: dict) -> str:
    """The stdout summary: retrieval (methods and baselines), action accuracy per factor of the true
    action, edit fidelity, the factor classifier and edit exactness, and the pictures written."""
    lines = [f"{'method':<30} {'action %':>9} {'factor %':>9} {'pairs/s':>10}", "-" * 61]
    for label, r in _retrieval_rows(results).items():
        rate = r.get("pairs_per_s")
        if label == "baseline: constant":
            label += f" ({r['action_name']})"
        lines.append(f"{label:<30} {_fmt(r['action_accuracy']):>9} {_fmt(r['factor_accuracy']):>9} "
                     f"{'' if rate is None else f'{rate:,.0f}':>10}")
    supervised = results["baselines"].get("supervised_cnn")
    if supervised:
        t = supervised["training"]
        lines.append(f"  (supervised CNN: {t['steps']} steps x {t['batch']} pairs, {supervised['frequency']} "
                     f"frequency, trained in {t['seconds']:.0f} s{', cached' if supervised['cached'] else ''})")

    columns = {m: r for m, r in _retrieval_rows(results).items() if m in METHODS or m == "baseline: supervised_cnn"}
    names = {m: m.replace("baseline: ", "") for m in columns}
    lines += ["", "action accuracy % per factor of the true action",
              f"{'factor':<16} {'pairs':>6} " + " ".join(f"{names[m]:>15}" for m in columns)]
    for factor in results["factor_names"]:
        count = results["methods"][METHODS[0]]["per_factor"][factor]["count"]
        cells = " ".join(f"{_fmt(r['per_factor'][factor]['action_accuracy']):>15}" for r in columns.values())
        lines.append(f"{factor:<16} {count:>6} {cells}")

    f = results["fidelity"]
    lines += [
        "",
        (f"edit fidelity:   MSE {f['edit_mse']:.5f}  PSNR {f['edit_psnr_db']:.2f} dB"
         f"   (reconstruction of x': PSNR {f['reconstruction_psnr_db']:.2f} dB; unedited x: "
         f"PSNR {f['identity_psnr_db']:.2f} dB)"),
        (f"transition codes: node accuracy {100 * f['code_node_accuracy']:.2f}%"
         f"   all nodes right {100 * f['code_all_nodes_accuracy']:.2f}% of pairs"),
    ]
    g = results.get("graph")
    if g:
        lines.append(f"node -> node graph: {g['thresholded_parents_per_node']:.2f} parents per node at evaluation, "
                     f"{g['expected_parents_per_node']:.2f} expected in training (edge probability: median "
                     f"{g['edge_probability_median']:.3f}, max {g['edge_probability_max']:.3f})")

    edits = results.get("edits")
    if edits:
        lines += ["", _edits_table(edits)]
    exactness = results.get("exactness")
    if exactness:
        c = exactness["classifier"]
        held = c["held_out"]
        verdict = ("meets the 99.5% bar" if c["meets_bar"]
                   else "BELOW the 99.5% bar: the exactness figures below do not count")
        lines += ["", (f"factor classifier, held out ({held['n']} test states): all factors "
                       f"{100 * held['all_factors']:.2f}%  [{verdict}]"),
                  "  per factor: " + ", ".join(f"{k} {100 * v:.2f}%" for k, v in held["per_factor"].items()),
                  f"{'edit exactness %':<30} {'edits':>9} {'true x':>9} {'recon':>9}"]
        for key in ("k1", *(f"k{k}" for k in SEQUENCE_STEPS)):
            e = exactness[key]
            label = f"  k = {key[1:]} ({e['n']} starts)"
            lines.append(f"{label:<30} {_fmt(e['exact']):>9} "
                         f"{_fmt(e['reference_true_render']):>9} {_fmt(e['reference_reconstruction']):>9}")
        single = exactness["k1"]
        lines += ["  k = 1 exact % by acted factor: " + ", ".join(
                      f"{k} {_fmt(v['exact']).strip()}" for k, v in single["per_acted_factor"].items()),
                  "  k = 1 changed % of each factor when another was acted on: " + ", ".join(
                      f"{k} {_fmt(v['changed']).strip()}" for k, v in single["disturbed"].items())]
    if "pngs" in results:
        lines += ["", "pictures: " + ", ".join(results["pngs"].values())]
    return "\n".join(lines)


def _rate_cell(r: dict | None) -> str:
    """"90.5 [89.7, 91.3]": a rate and its Wilson 95% interval, in %."""
    if not r or r["rate"] is None:
        return "-"
    low, high = r["wilson95"]
    return f"{100 * r['rate']:.1f} [{100 * low:.1f}, {100 * high:.1f}]"


def _edits_table(edits: dict) -> str:
    """The pixel judge's figures: k = 1 overall and per acted factor, then chains."""
    single = edits["k1"]
    head = f"{'edits, nearest render %':<24} {'n':>6} {'exact':>20} {'unchanged':>20} {'two-sided':>20}"
    lines = [head, "-" * len(head)]
    rows = {"k = 1, all": single, **{f"  {name}": r for name, r in single["per_acted_factor"].items()},
            "decode(encode(target))": single["reference_decoder"]}
    for label, r in rows.items():
        n = r["exact"]["n"] if r.get("exact") else 0
        lines.append(f"{label:<24} {n:>6} {_rate_cell(r.get('exact')):>20} {_rate_cell(r.get('unchanged')):>20} "
                     f"{_rate_cell(r.get('two_sided')):>20}")
    lines.append(f"{'chained, exact %':<24} {'n':>6} {'one multi-step edit':>20} {'edits in a row':>20}")
    for key in (f"k{k}" for k in SEQUENCE_STEPS if f"k{k}" in edits):
        chain = edits[key]
        lines.append(f"{'  k = ' + key[1:]:<24} {chain['one_edit']['exact']['n']:>6} "
                     f"{_rate_cell(chain['one_edit']['exact']):>20} {_rate_cell(chain['in_a_row']['exact']):>20}")
    return "\n".join(lines)
