"""Grid vs tokens latent layout: the same preset trained on each twin, held-out metrics side by side.

    python experiments/layout_comparison/layout_comparison.py [--preset cpu-small] [--data dsprites shapes3d]
        [--layouts grid tokens] [--gpus 0] [--out experiments/layout_comparison/results/layout_comparison_cpu.json]

Runs ``train.py`` once per (dataset, layout) into ``--runs/<data>-<layout>`` and reads each run's
``summary.json``: validation metrics of the last stage (held-out pairs of the procedural twin), and
the wall time of each stage. Prints a table and writes JSON atomically.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from causal_vqvae.cli.train import main as train_main  # noqa: E402
from causal_vqvae.files import write_json  # noqa: E402

COLUMNS = [
    ("val/psnr", "PSNR dB"),
    ("val/code_accuracy", "code acc"),
    ("val/retrieval_transition_acc", "retr. transition"),
    ("val/retrieval_head_acc", "retr. head"),
    ("val/intervened_nodes", "nodes/action"),
    ("val/changed_nodes", "changed nodes"),
]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="cpu-small")
    parser.add_argument("--data", nargs="+", default=["dsprites", "shapes3d"])
    parser.add_argument("--layouts", nargs="+", default=["grid", "tokens"])
    parser.add_argument("--gpus", default="0")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--config", action="append", default=[],
                        help="overrides passed to every run (train.py --config; repeat for several, later ones win)")
    parser.add_argument("--runs", type=Path, default=Path("runs/layout_comparison"))
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)

    rows = []
    for data in args.data:
        for layout in args.layouts:
            out = args.runs / f"{data}-{layout}"
            cmd = ["--data", data, "--layout", layout, "--preset", args.preset, "--gpus", args.gpus,
                   "--seed", str(args.seed), "--out", str(out), "--no-progress"]
            for path in args.config:
                cmd += ["--config", path]
            train_main(cmd)
            summary = json.loads((out / "summary.json").read_text())
            config = json.loads((out / "config.json").read_text())
            last = list(summary)[-1]
            rows.append({
                "data": f"{data} procedural twin", "layout": layout, "seed": args.seed,
                "stage_seconds": {s: round(v["seconds"], 1) for s, v in summary.items()},
                "val": summary[last]["val"], "devices": config["devices"],
                "command": "python train.py " + " ".join(cmd),
            })

    print(f"\nLayout comparison, preset {args.preset}, seed {args.seed} (held-out twin pairs)")
    header = f"{'data':<28} {'layout':<7} " + " ".join(f"{name:>16}" for _, name in COLUMNS) + f" {'time s':>8}"
    print(header)
    for r in rows:
        cells = " ".join(f"{r['val'].get(key, float('nan')):>16.3f}" for key, _ in COLUMNS)
        print(f"{r['data']:<28} {r['layout']:<7} {cells} {sum(r['stage_seconds'].values()):>8.0f}")
    argv = sys.argv[1:] if argv is None else argv
    result = {"preset": args.preset, "argv": argv,
              "command": shlex.join(["python", "experiments/layout_comparison/layout_comparison.py", *argv]),
              "results": rows}
    if args.out:
        write_json(args.out, result)
        print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
