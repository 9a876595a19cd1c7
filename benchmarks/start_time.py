"""How long the commands take to start and to edit one image, end to end, and the memory they
take, as a user runs them.

Each command runs ``--repeat`` times in a fresh process (after one unmeasured warm-up run, so the
operating system's file cache is warm, as it is for a user's second command); the table and the JSON
give the median and the fastest wall time and the largest peak resident memory against the targets:
``--help`` under 1 s, editing one image with a released model under 2 s, editing a 10000x10000
image under 1 GB. ``import torch`` alone is measured first: it is the floor under any edit (on the
project's CPU machine, with torch 2.14.1's CUDA build, 3.7 s and about 0.55 GB).

    python benchmarks/start_time.py --out benchmarks/results/start_time/start_time_cpu.json
"""

from __future__ import annotations

import argparse
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
EDIT = ["edit", "--model", "{model}", "--action", "{action}", "--device", "cpu"]
API_CODE = ("import causal_vqvae as c; m = c.load({model!r}, device='cpu'); "
            "c.edit({image!r}, {action!r}, m).save({out!r})")
# name, the command after `causal-vqvae` (a string: Python code instead), target seconds, target MB
CASES = [
    ("python -c 'import torch' (the floor under any edit)", "import torch", None, None),
    ("causal-vqvae --help", ["--help"], 1.0, None),
    ("causal-vqvae edit --help", ["edit", "--help"], 1.0, None),
    ("causal-vqvae edit (released model, one image)", [*EDIT, "--image", "{image}", "--out", "{out}"], 2.0, None),
    ("python: load + edit (released model, one image)", API_CODE, 2.0, None),
    ("causal-vqvae edit (a 10000x10000 PNG)", [*EDIT, "--image", "{large}", "--out", "{large_out}"], None, 1024),
]
# Runs the command in this process and reports its peak resident memory on exit (Linux: KiB).
MEASURED = ("import atexit, resource, runpy, sys; atexit.register(lambda: print('PEAK_RSS_KB', "
            "resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)); ")


def measure(argv: list[str], repeat: int, env: dict[str, str]) -> tuple[list[float], list[float]]:
    """Wall seconds and peak resident MB of ``repeat`` runs of ``argv`` (one warm-up run first)."""
    subprocess.run(argv, check=True, capture_output=True, env=env, cwd=ROOT)  # warm-up, not measured
    times, memory = [], []
    for _ in range(repeat):
        start = time.perf_counter()
        done = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=ROOT)
        times.append(time.perf_counter() - start)
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(argv)} failed ({done.returncode}):\n{done.stderr}")
        peak = [line.split()[1] for line in done.stderr.splitlines() if line.startswith("PEAK_RSS_KB")]
        memory.append(int(peak[-1]) / 1024 if peak else float("nan"))
    return times, memory


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
        fill = {"model": args.model, "image": str(image), "action": args.action, "out": str(Path(tmp) / "out.png"),
                "large": str(Path(tmp) / "large.png"), "large_out": str(Path(tmp) / "large_out.png")}
        for name, command, seconds, megabytes in CASES:
            if isinstance(command, list) and "{large}" in command and not Path(fill["large"]).exists():
                _large_image(Path(fill["large"]))
            if isinstance(command, str):
                run = [sys.executable, "-c", MEASURED + command.format(**fill)]
            else:
                code = MEASURED + "sys.argv = ['causal-vqvae', *sys.argv[1:]]; runpy.run_module('causal_vqvae', " \
                                  "run_name='__main__')"
                run = [sys.executable, "-c", code, *(part.format(**fill) for part in command)]
            times, memory = measure(run, args.repeat, env)
            median = statistics.median(times)
            met = (seconds is None or median < seconds) and (megabytes is None or max(memory) < megabytes)
            rows.append({"command": name, "median_s": round(median, 3), "fastest_s": round(min(times), 3),
                         "peak_mb": round(max(memory), 1), "target_s": seconds, "target_mb": megabytes,
                         "met": met, "runs_s": [round(t, 3) for t in times]})

    width = max(len(row["command"]) for row in rows)
    print(f"{'command':<{width}}  median s  fastest s  peak MB  target       met")
    for row in rows:
        parts = [] if row["target_s"] is None else [f"< {row['target_s']:g} s"]
        parts += [] if row["target_mb"] is None else [f"< {row['target_mb']} MB"]
        target = " and ".join(parts)
        print(f"{row['command']:<{width}}  {row['median_s']:8.2f}  {row['fastest_s']:9.2f}  {row['peak_mb']:7.0f}  "
              f"{target:<11}  {'yes' if row['met'] else 'no'}")
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


def _large_image(path: Path, side: int = 10_000) -> None:
    """A ``side`` x ``side`` RGB PNG: two ramps and a square (small on disk, large in memory)."""
    import numpy as np
    from PIL import Image

    ramp = np.linspace(0, 255, side, dtype=np.float32).astype(np.uint8)
    pixels = np.zeros((side, side, 3), np.uint8)
    pixels[..., 0] = ramp[None, :]
    pixels[..., 1] = ramp[:, None]
    pixels[2 * side // 5:3 * side // 5, 2 * side // 5:3 * side // 5] = 255
    Image.fromarray(pixels).save(path)


if __name__ == "__main__":
    main()
