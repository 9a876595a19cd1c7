"""Seconds per training step of finished ``train.py`` runs, read from their TensorBoard logs.

    python experiments/step_times/step_times.py RUN [RUN ...] [--stage causal]
        [--out experiments/step_times/results/NAME.json]

``train.py`` logs ``train/loss`` every 50 steps (or every ``--val-every`` steps when fewer), and
TensorBoard keeps the wall time of each point. Between two consecutive points the run trained;
some intervals also hold a validation, a checkpoint, or (with ``--code-pool``) the pool's encoding.
The median over intervals of (wall time / steps) is the time of a training step alone, without
those. ``curves.json``'s samples/s include them. Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path
from typing import Any

_ROOT = Path(__file__).resolve().parents[2]
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

from causal_vqvae.files import write_json  # noqa: E402


def step_seconds(run: str | Path, stage: str = "causal", tag: str = "train/loss") -> dict[str, Any]:
    """``{"run", "stage", "points", "median_s_per_step", "p10", "p90"}`` of one run's stage."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    files = sorted(Path(run, stage).glob("logs/**/events.out.tfevents.*"))
    if not files:
        raise SystemExit(f"{run}: no TensorBoard log under {Path(run, stage, 'logs')} (was TensorBoard installed "
                         "when it trained?)")
    points: dict[int, float] = {}
    for file in files:  # a resumed run writes one file per part
        events = EventAccumulator(str(file), size_guidance={"scalars": 0})
        events.Reload()
        if tag in events.Tags()["scalars"]:
            points.update({e.step: e.wall_time for e in events.Scalars(tag)})
    steps = sorted(points)
    rates = [(points[b] - points[a]) / (b - a) for a, b in zip(steps, steps[1:]) if points[b] > points[a]]
    if not rates:
        raise SystemExit(f"{run}: fewer than two logged {tag!r} points in stage {stage}")
    deciles = statistics.quantiles(rates, n=10) if len(rates) > 1 else [rates[0]] * 9
    return {"run": str(run), "stage": stage, "points": len(steps), "median_s_per_step": statistics.median(rates),
            "p10": deciles[0], "p90": deciles[-1]}


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", help="train.py run directories (--out)")
    p.add_argument("--stage", default="causal")
    p.add_argument("--out", default=None, help="JSON file to write")
    args = p.parse_args(argv)
    rows = [step_seconds(run, args.stage) for run in args.runs]
    print(f"{'run':60s} {'points':>6s} {'s/step (median)':>16s} {'p10':>7s} {'p90':>7s}")
    for r in rows:
        print(f"{r['run']:60s} {r['points']:6d} {r['median_s_per_step']:16.3f} {r['p10']:7.3f} {r['p90']:7.3f}")
    if args.out:
        command = "python experiments/step_times/step_times.py " + " ".join(sys.argv[1:] if argv is None else argv)
        write_json(args.out, {"command": command, "rows": rows})
    return rows


if __name__ == "__main__":
    main()
