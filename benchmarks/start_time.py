"""How long the commands take to start and to edit one image, end to end, as a user runs them.

Each command runs ``--repeat`` times in a fresh process (after one unmeasured warm-up run, so the
operating system's file cache is warm, as it is for a user's second command); the table and the JSON
give the median and the fastest wall time against the targets: ``--help`` under 1 s, editing one
image with a released model under 2 s.

    python benchmarks/start_time.py --out benchmarks/results/start_time/start_time_cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from causal_vqvae.files import write_json  # noqa: E402

DEFAULT_OUT = ROOT / "benchmarks" / "results" / "start_time" / "start_time_cpu.json"
# name, the command after `python -m causal_vqvae` (or the Python code for "api"), target seconds
CASES = [
    ("causal-vqvae --help", ["--help"], 1.0),
    ("causal-vqvae edit --help", ["edit", "--help"], 1.0),
    ("causal-vqvae edit (released model, one image)",
     ["edit", "--model", "{model}", "--image", "{image}", "--action", "{action}", "--out", "{out}", "--device", "cpu"],
     2.0),
    ("python: load + edit (released model, one image)", None, 2.0),
]
API_CODE = ("import causal_vqvae as c; m = c.load({model!r}, device='cpu'); "
            "c.edit({image!r}, {action!r}, m).save({out!r})")


def measure(argv: list[str], repeat: int, env: dict[str, str]) -> list[float]:
    subprocess.run(argv, check=True, capture_output=True, env=env, cwd=ROOT)  # warm-up, not measured
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        done = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=ROOT)
        times.append(time.perf_counter() - start)
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(argv)} failed ({done.returncode}):\n{done.stderr}")
    return times


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="shapes3d_twin", help="released model to edit with (default shapes3d_twin)")
    parser.add_argument("--action", default="floor_hue+", help="the action applied (default floor_hue+)")
    parser.add_argument("--repeat", type=int, default=5, help="measured runs per command (default 5)")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads each process may use (default 2)")
    parser.add_argument("--out", default=str(DEFAULT_OUT), help="JSON to write")
    args = parser.parse_args(argv)

    from PIL import Image

    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        image = Path(tmp) / "image.png"
        Image.new("RGB", (64, 64), (180, 90, 40)).save(image)
        fill = {"model": args.model, "image": str(image), "action": args.action, "out": str(Path(tmp) / "out.png")}
        for name, command, target in CASES:
            if command is None:
                run = [sys.executable, "-c", API_CODE.format(**fill)]
            else:
                run = [sys.executable, "-m", "causal_vqvae", *(part.format(**fill) for part in command)]
            times = measure(run, args.repeat, env)
            rows.append({"command": name, "median_s": round(statistics.median(times), 3),
                         "fastest_s": round(min(times), 3), "target_s": target,
                         "met": statistics.median(times) < target, "runs_s": [round(t, 3) for t in times]})

    width = max(len(row["command"]) for row in rows)
    print(f"{'command':<{width}}  median s  fastest s  target s  met")
    for row in rows:
        print(f"{row['command']:<{width}}  {row['median_s']:8.2f}  {row['fastest_s']:9.2f}  "
              f"{row['target_s']:8.1f}  {'yes' if row['met'] else 'no'}")
    result = {
        "benchmark": "start_time", "command": "python benchmarks/start_time.py " + " ".join(argv or sys.argv[1:]),
        "model": args.model, "action": args.action, "repeat": args.repeat, "threads": args.threads,
        "device": "cpu", "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
        "python": platform.python_version(), "rows": rows,
    }
    import torch

    result["torch"] = torch.__version__
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json(out, result)
    print(f"wrote {out}")
    return result


if __name__ == "__main__":
    main()
