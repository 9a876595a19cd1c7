"""How ``model_speed.py`` times a step and what it counts beside: CUDA events or ``perf_counter``
around repeats, the aten operators and FLOPs of one eager step, the host synchronisations and their
stacks, peak memory (:func:`measure`). A script module beside ``model_speed.py``, not a package."""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
import traceback
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

# ``python benchmarks/model_speed.py`` puts benchmarks/ on the path, not the repository root.
_ROOT = Path(__file__).resolve().parents[1]
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

from causal_vqvae.config import ModelConfig  # noqa: E402
from causal_vqvae.nn.compiling import compile_ready  # noqa: E402
from causal_vqvae.training.config import TrainConfig  # noqa: E402

from speed_steps import build_step  # noqa: E402


# ------------------------------------------------------------------------------------------ timing
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_steps(
    step: Callable, inputs: Sequence[dict[str, torch.Tensor]], device: torch.device, iters: int, repeats: int
) -> list[float]:
    """Seconds per step of each repeat (``iters`` steps each, inputs rotated)."""
    n = len(inputs)
    if device.type == "cuda":
        events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
                  for _ in range(repeats)]
        for start, end in events:
            start.record()
            for i in range(iters):
                step(inputs[i % n])
            end.record()
        torch.cuda.synchronize(device)
        return [start.elapsed_time(end) / 1e3 / iters for start, end in events]
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for i in range(iters):
            step(inputs[i % n])
        out.append((time.perf_counter() - t0) / iters)
    return out


class OperatorCount(TorchDispatchMode):
    """Counts the aten operators a region dispatches (``views``: those that only make a view)."""

    def __init__(self) -> None:
        super().__init__()
        self.total = self.views = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.total += 1
        self.views += bool(func.is_view)
        return func(*args, **(kwargs or {}))


def count_flops(step: Callable, inp: dict[str, torch.Tensor]) -> tuple[int | None, dict[str, int] | None]:
    """Matmul/conv FLOPs of one step and the aten operators it dispatches (``{"total", "views"}``),
    from one eager step; ``(None, None)`` if counting fails."""
    try:
        from torch.utils.flop_counter import FlopCounterMode

        with FlopCounterMode(display=False) as counter, OperatorCount() as ops:
            step(inp)
        return int(counter.get_total_flops()), {"total": ops.total, "views": ops.views}
    except Exception:  # noqa: BLE001 - a diagnostic only
        return None, None


def warnings_with_stacks(fn: Callable[[], Any], match: str) -> list[list[str]]:
    """Run ``fn`` and return, for every warning whose message contains ``match`` (case-insensitive),
    the Python stack that raised it, outermost first, as ``path:line function`` (the frames of this
    helper and of the ``warnings`` module left out). A C++ warning surfaces at the Python call that
    entered C++, so the stack names the line of our code that made the call: ``catch_warnings``'
    file and line alone name only the innermost frame, often a torch wrapper."""
    stacks: list[list[str]] = []
    here = Path(__file__).resolve()

    def hook(message, category, filename, lineno, file=None, line=None) -> None:
        if match.lower() not in str(message).lower():
            return
        frames = traceback.extract_stack()[:-1]
        # keep what ``fn`` called: drop this helper's frames and everything above them
        for i, frame in enumerate(frames):
            if Path(frame.filename).resolve() == here and frame.name == "warnings_with_stacks":
                frames = frames[i + 1:]
                break
        stacks.append([f"{_short_path(f.filename)}:{f.lineno} {f.name}" for f in frames
                       if not f.filename.endswith(("warnings.py", "<frozen importlib._bootstrap>"))])

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = hook
        fn()
    return stacks


def _short_path(filename: str) -> str:
    """Repository files relative to the repository, installed packages from their package folder."""
    path = Path(filename)
    try:
        return str(path.resolve().relative_to(_ROOT))
    except ValueError:
        parts = path.parts
        for anchor in ("site-packages", "dist-packages"):
            if anchor in parts:
                return "/".join(parts[parts.index(anchor) + 1:])
        return filename


def host_syncs(step: Callable, inp: dict[str, torch.Tensor], device: torch.device) -> dict | None:
    """Synchronising CUDA calls made by one step: the count, the distinct innermost source lines
    (``where``) and the distinct full Python stacks (``stacks``, outermost first)."""
    if device.type != "cuda":
        return None
    # On the H100 (torch 2.11) the first set_sync_debug_mode round trip of a process reported one
    # synchronisation, raised inside that call and at no operator; it was charged to the autoencoder
    # step, the first one checked, until 2026-11-23 (experiments/ae_sync_bisect/). An empty round
    # trip first absorbs it.
    torch.cuda.synchronize(device)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.cuda.set_sync_debug_mode("warn")
        torch.cuda.set_sync_debug_mode(0)
    torch.cuda.synchronize(device)

    def one_step() -> None:
        torch.cuda.set_sync_debug_mode("warn")
        try:
            step(inp)
        finally:
            torch.cuda.set_sync_debug_mode(0)

    stacks = warnings_with_stacks(one_step, "synchroniz")
    torch.cuda.synchronize(device)
    distinct = []
    for stack in stacks:
        if stack not in distinct:
            distinct.append(stack)
    return {"count": len(stacks), "where": sorted({s[-1] for s in stacks if s})[:10], "stacks": distinct[:10]}


def _gib(nbytes: int) -> float:
    return nbytes / 2**30


def measure(
    measurement: str, layout: str, config: ModelConfig, inputs: Sequence[dict[str, torch.Tensor]],
    args: argparse.Namespace, device: torch.device, tc: TrainConfig,
) -> dict[str, Any]:
    cuda = device.type == "cuda"
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    if args.compile:
        torch._dynamo.reset()
    step, model = build_step(measurement, config, device, args.precision, tc, args.adamw, args.channels_last)

    compiled, compile_error = False, None
    run = step
    if args.compile:
        try:
            compile_ready()
            run = torch.compile(step, mode=None if args.compile_mode == "default" else args.compile_mode)
            for i in range(args.warmup):
                run(inputs[i % len(inputs)])
            _sync(device)
            compiled = True
        except Exception as e:  # noqa: BLE001 - record and run eagerly
            compile_error = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"[:500]
            torch._dynamo.reset()
            run = step
    if not compiled:
        for i in range(args.warmup):
            run(inputs[i % len(inputs)])
    _sync(device)
    # Counted on an eager step after the warm-up, as the timed steps run (the optimiser's state exists).
    flops, operators = count_flops(step, inputs[0]) if args.flops else (None, None)
    _sync(device)
    peak_warmup = _gib(torch.cuda.max_memory_allocated(device)) if cuda else None
    syncs = host_syncs(run, inputs[0], device) if args.sync_check else None

    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    seconds = time_steps(run, inputs, device, args.iters, args.repeats)
    steady = _gib(torch.cuda.max_memory_allocated(device)) if cuda else None
    del run, step, model
    rates = [args.batch / s for s in seconds]
    median_s = statistics.median(seconds)
    return {
        "ours_per_s": statistics.median(rates),
        "rates_per_s": rates,
        "ms_per_step": 1e3 * median_s,
        "peak_gib": None if peak_warmup is None else max(peak_warmup, steady),
        "steady_peak_gib": steady,
        "flops_per_step": flops,
        "aten_ops_per_step": operators,
        "tflops_per_s": None if flops is None else flops / median_s / 1e12,
        "host_syncs": syncs,
        "compiled": compiled,
        "compile_error": compile_error,
    }
