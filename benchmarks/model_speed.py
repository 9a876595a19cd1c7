"""Speed and peak memory of the CausalVQVAE model (random weights) on 3D Shapes twin batches.

    python benchmarks/model_speed.py [--device cuda] [--batch 256] [--layout grid|tokens|both]
        [--precision bf16|fp32] [--compile] [--preset default|small] [--channels-last]
        [--out benchmarks/results/model_speed/NAME.json] [--tiny]

The model is ``train.py``'s ``--preset`` (default: the design's model, 14.8M parameters in the grid
layout; ``small``: the released models' size, 2.26M) with random weights and its layout's retrieval
head.

Measured per latent layout, at ``--batch`` (images or pairs per step):

- ``autoencoder training``: img/s of one optimiser step: forward + ``autoencoder_loss`` (with the
  EMA codebook update and dead-code restarts) + backward + gradient clipping (``TrainConfig``) +
  AdamW on the autoencoder parameters (the ``vqvae`` stage).
- ``transition training``: pairs/s of one ``causal``-stage step from precomputed codes:
  ``transition_loss`` + ``retrieval_loss``, backward, clipping, AdamW on the non-autoencoder
  parameters, then the dual-ascent update of the sparsity multipliers. The autoencoder is frozen.
- ``retrieval training``: pairs/s of the retrieval head alone from precomputed codes
  (``retrieval_loss`` + backward + AdamW on the head); listed so that the issue's "retrieval
  training" reference has a number beside it (it has no target).
- ``retrieval inference (head)`` / ``retrieval inference (transition)``: pairs/s of
  ``model.retrieve(x, x')`` under no_grad: ``encode_codes`` of both images, then
  ``retrieve_codes(method="head")`` or ``method="transition"`` (all actions scored in one pass).

Inputs are 3D Shapes twin pairs (``TransitionPairs`` of the training split) rendered on the device
*before* timing; a few input sets are rotated so that repeated steps do not read one cached buffer.
The model is rebuilt from the same seeded config for every measurement (identical random weights, no
state carried from one measurement into the next).

Timing: on CUDA, events around ``--iters`` steps after ``--warmup`` steps (which absorb
``torch.compile``, cuDNN and allocator warm-up); every repeat is queued back to back and read after
one synchronisation; the figure is the median over ``--repeats``. Nothing in the timed loop reads a
value back to the host. On the CPU a ``perf_counter`` brackets each repeat (use it for ``--tiny``
smoke tests only). Peak memory is ``torch.cuda.max_memory_allocated`` with the statistics reset at
the start of each measurement (``peak_gib``: warm-up included; ``steady_peak_gib``: timed steps only).

Besides the table, each JSON row holds the median ms per step, every repeat's rate, the matmul/conv
FLOPs of one step (``torch.utils.flop_counter``, eager) and the achieved TFLOP/s, the aten operators
one eager step dispatches (``aten_ops_per_step``: total and views; on a GPU most non-view ones
launch a kernel, unless compiled), and, on CUDA, the
host synchronisations one step triggers (``torch.cuda.set_sync_debug_mode``), with the Python stack
that made each one (``host_syncs.stacks``, outermost first).

``--precision bf16`` runs the forward and loss under ``torch.autocast(dtype=torch.bfloat16)`` (as
Lightning's bf16-mixed: backward and optimiser step outside it); ``fp32`` runs without autocast
under torch's TF32 defaults (cuDNN convolutions may use TF32, matmuls do not; ``--tf32`` allows it
in matmuls too). ``--compile`` wraps each whole step function in ``torch.compile`` (``--compile-mode``
picks the mode); if compiling or running the compiled step during warm-up fails, the error is
recorded in the row and the measurement runs eagerly. On an H100 compile one layout per call:
compiling all ten steps can outlast a 10-minute command limit.

``--tiny`` (CPU smoke test, a few seconds): a tiny model, batch 8, one warm-up step, two timed
repeats of one step, a cheaper rendering of the same twin scene, one CPU thread.

Reference figures (from the issue; H100, fp32, random weights) and the targets are in ``REFERENCES``
and ``TARGETS``; the memory target (under 10 GiB) applies at batch 256 on CUDA.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import shlex
import sys
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

# ``python benchmarks/model_speed.py`` puts benchmarks/ on the path, not the repository root.
_ROOT = Path(__file__).resolve().parents[1]
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

from causal_vqvae.files import write_json  # noqa: E402
from causal_vqvae.model import CausalVQVAE  # noqa: E402
from causal_vqvae.training.config import TrainConfig  # noqa: E402
# model_speed.py's parts, beside it (benchmarks/ is on the path when it runs as a script; when a test
# loads it by path, its folder is added here).
_HERE = Path(__file__).resolve().parent
if str(_HERE) not in sys.path:
    sys.path.insert(0, str(_HERE))
from speed_steps import (  # noqa: E402
    AE_TRAIN,
    HEAD_INFER,
    MEASUREMENTS,
    RETRIEVAL_TRAIN,
    TINY_MODEL,
    TINY_SCENE,
    TRANSITION_INFER,
    TRANSITION_TRAIN,
    UNITS,
    autocast_for,
    model_config,
    render_sets,
)
from speed_timing import OperatorCount, _sync, measure, warnings_with_stacks  # noqa: E402

__all__ = ["MEASUREMENTS", "REFERENCES", "TARGETS", "MEMORY_TARGET_GIB", "TINY_MODEL", "OperatorCount", "model_config",
           "warnings_with_stacks", "main"]


@dataclass(frozen=True)
class Reference:
    per_s: float
    batch: int
    peak_gib: float | None = None
    note: str = "issue, H100 fp32, random weights"


# The issue does not say which retrieval method its inference figure used: it stands beside both.
REFERENCES: dict[str, Reference] = {
    AE_TRAIN: Reference(5_900, 64),
    TRANSITION_TRAIN: Reference(1_070, 64),
    RETRIEVAL_TRAIN: Reference(54, 16, 20.5),
    HEAD_INFER: Reference(172, 64),
    TRANSITION_INFER: Reference(172, 64),
}
TARGETS: dict[str, float] = {
    AE_TRAIN: 30_000,
    TRANSITION_TRAIN: 30_000,
    HEAD_INFER: 50_000,
    TRANSITION_INFER: 15_000,
}
MEMORY_TARGET_GIB = 10.0
MEMORY_TARGET_BATCH = 256


# ------------------------------------------------------------------------------------------ report
def _row(measurement: str, layout: str, batch: int, device: torch.device, result: dict | None,
         error: str | None) -> dict[str, Any]:
    ref, target = REFERENCES.get(measurement), TARGETS.get(measurement)
    row: dict[str, Any] = {
        "measurement": measurement, "layout": layout, "batch": batch, "unit": UNITS[measurement],
        "ours_per_s": None,
        "reference_per_s": ref.per_s if ref else None,
        "reference_batch": ref.batch if ref else None,
        "reference_peak_gib": ref.peak_gib if ref else None,
        "reference_note": ref.note if ref else None,
        "target_per_s": target,
        "memory_target_gib": MEMORY_TARGET_GIB if batch == MEMORY_TARGET_BATCH else None,
        "peak_gib": None,
    }
    if result is not None:
        row.update(result)
    row["error"] = error
    ours = row["ours_per_s"]
    row["throughput_met"] = None if target is None or ours is None else bool(ours >= target)
    row["memory_met"] = (None if row["memory_target_gib"] is None or row["peak_gib"] is None
                         else bool(row["peak_gib"] < MEMORY_TARGET_GIB))
    checks = [c for c in (row["throughput_met"], row["memory_met"]) if c is not None]
    row["met"] = False if error else (all(checks) if checks else None)
    return row


def _fmt_rate(x: float | None) -> str:
    return "-" if x is None else f"{x:,.0f}"


def format_table(rows: Sequence[dict[str, Any]], meta: dict[str, Any]) -> str:
    head = ("measurement", "layout", "batch", "ours/s", "reference/s", "target", "met?", "peak GiB")
    lines = []
    for r in rows:
        ref = "-"
        if r["reference_per_s"] is not None:
            ref = f"{r['reference_per_s']:,.0f} @{r['reference_batch']}"
            if r["reference_peak_gib"] is not None:
                ref += f" ({r['reference_peak_gib']:g} GiB)"
        target = "-" if r["target_per_s"] is None else f">= {r['target_per_s']:,.0f}"
        met = {True: "yes", False: "NO", None: "-"}[r["met"]]
        ours = "ERROR" if r["error"] else _fmt_rate(r["ours_per_s"])
        peak = "-" if r["peak_gib"] is None else f"{r['peak_gib']:.2f}"
        lines.append((r["measurement"], r["layout"], str(r["batch"]), ours, ref, target, met, peak))
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(head)]
    left = {0, 1}

    def fmt(cells):
        return "  ".join(c.ljust(w) if i in left else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    out = [
        f"Model speed on {meta['device']} | torch {meta['torch']} | {meta['precision']}"
        f"{' | compiled' if meta['compile'] else ''} | batch {meta['batch']}{' | TINY model' if meta['tiny'] else ''}",
        fmt(head), fmt(["-" * w for w in widths]), *(fmt(line) for line in lines),
        f"reference: {next(iter(REFERENCES.values())).note}; met? = throughput target and, at batch "
        f"{MEMORY_TARGET_BATCH} on CUDA, peak < {MEMORY_TARGET_GIB:g} GiB",
    ]
    for r in rows:
        bits = []
        if r.get("ms_per_step") is not None:
            bits.append(f"{r['ms_per_step']:.3f} ms/step")
        if r.get("tflops_per_s") is not None:
            t = r["tflops_per_s"]
            bits.append(f"{t:.2f} TFLOP/s" if t >= 0.1 else f"{1e3 * t:.3g} GFLOP/s")
        if r.get("host_syncs"):
            bits.append(f"host syncs/step {r['host_syncs']['count']}"
                        + (f" at {', '.join(r['host_syncs']['where'])}" if r["host_syncs"]["where"] else ""))
        if r.get("compile_error"):
            bits.append(f"compile failed, ran eagerly: {r['compile_error']}")
        if r["error"]:
            bits.append(f"error: {r['error']}")
        if bits:
            out.append(f"  {r['measurement']} [{r['layout']}]: " + "; ".join(bits))
    return "\n".join(out)


# ------------------------------------------------------------------------------------------ main
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batch", type=int, default=None, help="images / pairs per step (default 256; 8 with --tiny)")
    p.add_argument("--layout", choices=("grid", "tokens", "both"), default="both")
    p.add_argument("--precision", choices=("bf16", "fp32"), default=None,
                   help="default: bf16 on CUDA (as training), fp32 on the CPU")
    p.add_argument("--compile", action="store_true", help="torch.compile every step function")
    p.add_argument("--compile-mode", default="default",
                   help="torch.compile mode: default, reduce-overhead, max-autotune, max-autotune-no-cudagraphs")
    p.add_argument("--adamw", choices=("default", "foreach", "fused"), default="default",
                   help="AdamW implementation (default: torch's choice, as in training; fused on CUDA only)")
    p.add_argument("--tf32", action="store_true",
                   help="allow TF32 in fp32 matmuls too (torch's default: convolutions only)")
    p.add_argument("--cudnn-benchmark", action="store_true", help="torch.backends.cudnn.benchmark = True")
    p.add_argument("--channels-last", action="store_true",
                   help="convolution weights and input images in the channels-last memory format")
    p.add_argument("--preset", default="default",
                   help="train.py's model preset to measure (default, small: the released models' size, ...)")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 10; 1 with --tiny)")
    p.add_argument("--iters", type=int, default=None, help="steps per timed repeat (default 25; 1 with --tiny)")
    p.add_argument("--repeats", type=int, default=None, help="timed repeats, median reported (default 5; 2 --tiny)")
    p.add_argument("--input-sets", type=int, default=None, help="rotated input batches (default 4; 2 with --tiny)")
    p.add_argument("--measurements", default=",".join(MEASUREMENTS),
                   help="comma-separated subset of: " + ", ".join(MEASUREMENTS))
    p.add_argument("--no-flops", dest="flops", action="store_false", help="skip the FLOP count")
    p.add_argument("--no-sync-check", dest="sync_check", action="store_false", help="skip the host-sync check")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU intra-op threads while measuring (default: 1 with --tiny on the CPU, where threads "
                        "fighting other jobs for a few cores cost more than they give; else torch's setting)")
    p.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    p.add_argument("--tiny", action="store_true", help="tiny model, batch and iteration counts (CPU smoke test)")
    return p


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the benchmark (``argv`` as on the command line); print the table, return (and with
    ``--out`` write) ``{"meta": {...}, "results": [row, ...]}``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    threads = args.threads or (1 if args.tiny and args.device == "cpu" else None)
    saved = (torch.get_num_threads(), torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
             torch.backends.cudnn.benchmark)
    if threads:
        torch.set_num_threads(threads)
    try:
        return _run(args, argv)
    finally:
        torch.set_num_threads(saved[0])
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved[1:3]
        torch.backends.cudnn.benchmark = saved[3]


def _run(args: argparse.Namespace, argv: list[str]) -> dict[str, Any]:
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    if cuda and not torch.cuda.is_available():
        raise SystemExit("--device cuda but no CUDA device is available")
    args.precision = args.precision or ("bf16" if cuda else "fp32")
    args.batch = args.batch or (8 if args.tiny else 256)
    args.warmup = args.warmup if args.warmup is not None else (1 if args.tiny else 10)
    args.iters = args.iters or (1 if args.tiny else 25)
    args.repeats = args.repeats or (2 if args.tiny else 5)
    args.input_sets = args.input_sets or (2 if args.tiny else 4)
    if args.compile and args.warmup < 2:
        args.warmup = 2
    measurements = [m.strip() for m in args.measurements.split(",") if m.strip()]
    unknown = sorted(set(measurements) - set(MEASUREMENTS))
    if unknown:
        raise SystemExit(f"unknown measurement(s) {unknown}; choose from {list(MEASUREMENTS)}")
    layouts = ("grid", "tokens") if args.layout == "both" else (args.layout,)
    # Torch's defaults unless asked otherwise (fp32 matmuls without TF32, cuDNN convolutions with it).
    if args.tf32:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    if args.cudnn_benchmark:
        torch.backends.cudnn.benchmark = True
    tc = TrainConfig()

    meta: dict[str, Any] = {
        "device": (torch.cuda.get_device_name(device) if cuda
                   else f"CPU ({torch.get_num_threads()} threads, {platform.processor() or platform.machine()})"),
        "torch": torch.__version__,
        "cuda": torch.version.cuda if cuda else None,
        "python": sys.version.split()[0],
        "precision": args.precision,
        "compile": args.compile,
        "compile_mode": args.compile_mode if args.compile else None,
        "adamw": args.adamw,
        "tf32_matmul": bool(torch.backends.cuda.matmul.allow_tf32) if cuda else None,
        "tf32_cudnn": bool(torch.backends.cudnn.allow_tf32) if cuda else None,
        "cudnn_benchmark": bool(torch.backends.cudnn.benchmark) if cuda else None,
        "channels_last": args.channels_last,
        "preset": None if args.tiny else args.preset,
        "batch": args.batch,
        "tiny": args.tiny,
        "scene": "tiny (1 ray per pixel, 1 shadow sample)" if args.tiny else "default twin scene",
        "warmup": args.warmup, "iters": args.iters, "repeats": args.repeats, "input_sets": args.input_sets,
        "command": shlex.join(["python", "benchmarks/model_speed.py", *argv]),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "train_config": tc.to_dict(),
        "models": {},
        "memory_target_gib": MEMORY_TARGET_GIB,
        "memory_target_batch": MEMORY_TARGET_BATCH,
    }

    sets = render_sets(args.batch, args.input_sets, device, TINY_SCENE if args.tiny else None)  # before any timing
    if args.channels_last:
        sets = [{k: v.contiguous(memory_format=torch.channels_last) if v.dim() == 4 else v for k, v in s.items()}
                for s in sets]
    _sync(device)
    rows = []
    for layout in layouts:
        config = model_config(layout, args.tiny, args.preset)
        probe = CausalVQVAE(config).to(device).eval()
        meta["models"][layout] = {"parameters": probe.parameter_counts(), "config": config.to_dict()}
        with torch.no_grad(), autocast_for(device, args.precision):
            inputs = [dict(s, codes=probe.encode_codes(s["x"]), codes_next=probe.encode_codes(s["x_next"]))
                      for s in sets]
        del probe
        for measurement in measurements:
            measured, error = None, None
            try:
                measured = measure(measurement, layout, config, inputs, args, device, tc)
            except Exception as e:  # noqa: BLE001 - one failure (e.g. out of memory) must not lose the rest
                error = f"{type(e).__name__}: {e}"[:1000]
                traceback.print_exc()
            rows.append(_row(measurement, layout, args.batch, device, measured, error))
        del inputs
    result = {"meta": meta, "results": rows}
    print()
    print(format_table(rows, meta))
    if args.out:
        write_json(Path(args.out), result)
        print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
