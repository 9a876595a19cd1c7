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
import gc
import platform
import shlex
import statistics
import sys
import time
import traceback
import warnings
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils._python_dispatch import TorchDispatchMode

# ``python benchmarks/model_speed.py`` puts benchmarks/ on the path, not the repository root.
_ROOT = Path(__file__).resolve().parents[1]
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

from causal_vqvae.config import ModelConfig  # noqa: E402
from causal_vqvae.files import write_json  # noqa: E402
from causal_vqvae.model import CausalVQVAE  # noqa: E402
from causal_vqvae.training.config import TrainConfig  # noqa: E402
from causal_vqvae.training.module import AUTOENCODER_PARTS, parameter_groups  # noqa: E402
from causal_vqvae.training.presets import PRESETS  # noqa: E402
from datamodules.factors import ActionSpace  # noqa: E402
from datamodules.pairs import TransitionPairs  # noqa: E402
from datamodules.shapes3d import SHAPES3D, Shapes3DScene, render_shapes3d  # noqa: E402

__all__ = ["MEASUREMENTS", "REFERENCES", "TARGETS", "MEMORY_TARGET_GIB", "TINY_MODEL", "main"]

AE_TRAIN = "autoencoder training"
TRANSITION_TRAIN = "transition training"
RETRIEVAL_TRAIN = "retrieval training"
HEAD_INFER = "retrieval inference (head)"
TRANSITION_INFER = "retrieval inference (transition)"
MEASUREMENTS = (AE_TRAIN, TRANSITION_TRAIN, RETRIEVAL_TRAIN, HEAD_INFER, TRANSITION_INFER)
UNITS = {AE_TRAIN: "img/s"} | {m: "pairs/s" for m in MEASUREMENTS[1:]}


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

# --tiny: a model small enough for a CPU smoke test (3 channels, 64x64 as the twin renders).
TINY_MODEL: dict[str, Any] = dict(
    hidden_dims=(8, 16, 16), num_res_blocks=1, norm_groups=4, code_dim=8, codebook_size=16,
    num_tokens=4, token_codebook_size=8, token_layers=1, token_heads=2, mlp_ratio=2,
    target_head_dim=8, transition_dim=16, transition_layers=1, transition_heads=2,
    retrieval_dim=16, retrieval_layers=1, retrieval_heads=2,
)
# --tiny renders with one ray per pixel and a one-sample shadow: the same twin scene, but its
# surface-weight table builds in about a second on a busy CPU instead of ten.
TINY_SCENE = Shapes3DScene(supersample=1, shadow_samples=1, shadow_texels_per_unit=16)


# ------------------------------------------------------------------------------------------ setup
def preset_model(preset: str) -> dict[str, Any]:
    """The model fields of ``train.py --preset NAME`` (lists as tuples, as ModelConfig holds them)."""
    if preset not in PRESETS:
        raise SystemExit(f"unknown --preset {preset!r}; choose from {sorted(PRESETS)}")
    return {k: tuple(v) if isinstance(v, list) else v for k, v in PRESETS[preset]["model"].items()}


def model_config(layout: str, tiny: bool, preset: str = "default") -> ModelConfig:
    """The measured model: ``train.py``'s preset (``--tiny``: TINY_MODEL) in ``layout``. The
    retrieval head is the layout's default (the CNN for the grid, the transformer for tokens)."""
    actions = ActionSpace(SHAPES3D)
    fields = TINY_MODEL if tiny else preset_model(preset)
    return ModelConfig(
        in_channels=3, image_size=64, dataset="shapes3d", num_actions=len(actions),
        action_names=tuple(actions.names), seed=0, **{**fields, "latent_layout": layout},
    )


def render_sets(
    batch: int, num_sets: int, device: torch.device, scene: Shapes3DScene | None = None
) -> list[dict[str, torch.Tensor]]:
    """``num_sets`` batches of twin pairs (distinct pairs), rendered on ``device``."""
    pairs = TransitionPairs(SHAPES3D, "train", length=batch * num_sets, seed=0)
    sets = []
    for k in range(num_sets):
        b = pairs.__getitems__(np.arange(k * batch, (k + 1) * batch))
        sets.append({
            "x": render_shapes3d(b["factors"].to(device), scene),
            "x_next": render_shapes3d(b["factors_next"].to(device), scene),
            "action": b["action"].to(device),
        })
    return sets


def autocast_for(device: torch.device, precision: str):
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return nullcontext()


def _is_autoencoder_param(name: str) -> bool:
    return name.split(".", 1)[0] in AUTOENCODER_PARTS


def _adamw(params: list, lr: float, tc: TrainConfig, impl: str, device: torch.device):
    """AdamW over ``params``: parameters, or parameter groups (which keep their own lr and decay)."""
    kwargs: dict[str, Any] = {"lr": lr, "weight_decay": tc.weight_decay}
    if impl == "fused" and device.type == "cuda":
        kwargs["fused"] = True
    elif impl == "foreach":
        kwargs["foreach"] = True
    return torch.optim.AdamW(params, **kwargs)


def _clip(params: list[torch.nn.Parameter], tc: TrainConfig) -> None:
    if tc.grad_clip:
        torch.nn.utils.clip_grad_norm_(params, tc.grad_clip, foreach=True)


def build_step(
    measurement: str, config: ModelConfig, device: torch.device, precision: str, tc: TrainConfig,
    adamw: str, channels_last: bool = False,
) -> tuple[Callable[[dict[str, torch.Tensor]], Any], CausalVQVAE]:
    """A fresh model and the step function ``step(inputs)`` of ``measurement``."""
    model = CausalVQVAE(config).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    amp = lambda: autocast_for(device, precision)  # noqa: E731

    if measurement == AE_TRAIN:
        model.train()
        params = [p for n, p in model.named_parameters() if _is_autoencoder_param(n)]
        opt = _adamw(params, tc.vqvae_lr, tc, adamw, device)

        def step(inp):
            opt.zero_grad(set_to_none=True)
            with amp():
                loss = model.autoencoder_loss(inp["x"]).loss
            loss.backward()
            _clip(params, tc)
            opt.step()

        return step, model

    if measurement in (TRANSITION_TRAIN, RETRIEVAL_TRAIN):
        # The causal stage: autoencoder frozen and in eval mode (no codebook update).
        model.train()
        for name in AUTOENCODER_PARTS:
            part = getattr(model, name, None)
            if part is not None:
                part.requires_grad_(False)
                part.eval()
        if measurement == RETRIEVAL_TRAIN:
            params = list(model.retrieval_head.parameters())
            opt = _adamw(params, tc.causal_lr, tc, adamw, device)
        else:  # as the causal stage: the graph's edge logits in a group of their own
            groups = parameter_groups(model, tc.causal_lr, tc.graph_lr_scale, tc.weight_decay)
            params = [p for g in groups for p in g["params"]]
            opt = _adamw(groups, tc.causal_lr, tc, adamw, device)
        generator = torch.Generator(device=device)
        generator.manual_seed(1)
        progress = 0.5

        if measurement == RETRIEVAL_TRAIN:
            def step(inp):
                opt.zero_grad(set_to_none=True)
                with amp():
                    loss = model.retrieval_loss(inp["codes"], inp["codes_next"], inp["action"]).loss
                loss.backward()
                _clip(params, tc)
                opt.step()

            return step, model

        def step(inp):
            opt.zero_grad(set_to_none=True)
            with amp():
                tl = model.transition_loss(inp["codes"], inp["action"], inp["codes_next"], progress=progress,
                                           generator=generator)
                rl = model.retrieval_loss(inp["codes"], inp["codes_next"], inp["action"])
                loss = tc.transition_weight * tl.loss + tc.retrieval_weight * rl.loss
            loss.backward()
            _clip(params, tc)
            opt.step()
            # Dual ascent after the step, as the training module does.
            model.update_multipliers(tl)

        return step, model

    if measurement in (HEAD_INFER, TRANSITION_INFER):
        model.eval().requires_grad_(False)  # nothing to differentiate (and no grad hooks for the FLOP count)
        method = "head" if measurement == HEAD_INFER else "transition"

        def step(inp):
            with torch.no_grad(), amp():
                return model.retrieve(inp["x"], inp["x_next"], method=method).action

        return step, model

    raise ValueError(f"unknown measurement {measurement!r}")


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
