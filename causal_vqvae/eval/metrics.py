"""Scores of the benchmark: action-retrieval accuracy read off a confusion matrix, PSNR, and a timer
that measures GPU work with CUDA events."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

__all__ = ["accuracy_report", "psnr", "Timer"]


def _as_numpy(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _ratio(num: float, den: float) -> float | None:
    return float(num / den) if den > 0 else None


def accuracy_report(pred: Any, true: Any, num_actions: int, factor_names: Sequence[str]) -> dict[str, Any]:
    """Score predicted action ids against true ones.

    ``pred``: ``(N,)`` predicted ids, or ``(N, A)`` rows of probabilities (a randomised predictor,
    scored in expectation); ``true``: ``(N,)`` ids in ``[0, A)``. Action ids are factor-major, minus
    then plus, so ``id // 2`` is the factor's position in ``factor_names`` (one name per actionable
    factor). Everything is read off the confusion matrix ``C`` (rows true, columns predicted):

    - ``action_accuracy``: trace(C) / N;
    - ``factor_accuracy``: the mass where predicted and true action move the same factor;
    - ``per_factor[name]``: ``count`` of pairs whose TRUE action moves that factor, and their
      ``action_accuracy`` / ``factor_accuracy`` (None where the count is 0);
    - ``confusion``: C as nested lists (ints for hard predictions).
    """
    true = _as_numpy(true).astype(np.int64).reshape(-1)
    pred = _as_numpy(pred)
    num_actions = int(num_actions)
    factor_names = [str(n) for n in factor_names]
    if num_actions < 1:
        raise ValueError(f"num_actions must be positive, got {num_actions}")
    if len(factor_names) != (num_actions + 1) // 2:
        raise ValueError(f"{num_actions} actions need {(num_actions + 1) // 2} factor names, got {len(factor_names)}")
    if true.size and (true.min() < 0 or true.max() >= num_actions):
        raise ValueError(f"true action ids must lie in [0, {num_actions})")
    n = true.shape[0]
    if pred.ndim == 2:
        if pred.shape != (n, num_actions):
            raise ValueError(f"probability rows must have shape ({n}, {num_actions}), got {pred.shape}")
        soft = pred.astype(np.float64)
        hard = False
    else:
        pred = pred.astype(np.int64).reshape(-1)
        if pred.shape[0] != n:
            raise ValueError(f"pred has {pred.shape[0]} entries, true has {n}")
        if pred.size and (pred.min() < 0 or pred.max() >= num_actions):
            raise ValueError(f"predicted action ids must lie in [0, {num_actions})")
        soft = np.zeros((n, num_actions), dtype=np.float64)
        soft[np.arange(n), pred] = 1.0
        hard = True
    confusion = np.zeros((num_actions, num_actions), dtype=np.float64)
    np.add.at(confusion, true, soft)  # row true[i] += prediction row i

    factor_of = np.arange(num_actions) // 2
    same_factor = factor_of[:, None] == factor_of[None, :]
    rows = confusion.sum(1)
    correct = np.diag(confusion)
    factor_correct = (confusion * same_factor).sum(1)
    per_factor = {}
    for f, name in enumerate(factor_names):
        members = factor_of == f
        count = rows[members].sum()
        per_factor[name] = {
            "count": round(count),
            "action_accuracy": _ratio(correct[members].sum(), count),
            "factor_accuracy": _ratio(factor_correct[members].sum(), count),
        }
    table = confusion.round().astype(np.int64).tolist() if hard else confusion.tolist()
    return {
        "n": int(n),
        "action_accuracy": _ratio(correct.sum(), n),
        "factor_accuracy": _ratio(factor_correct.sum(), n),
        "per_factor": per_factor,
        "confusion": table,
    }


def psnr(mse: torch.Tensor, floor: float = 1e-10) -> torch.Tensor:
    """PSNR in dB of images in [0, 1] from their per-image MSE (floored so it stays finite)."""
    return 10.0 * torch.log10(1.0 / mse.clamp_min(floor))


class Timer:
    """Accumulates seconds of timed calls: CUDA events + synchronize on a GPU, else perf_counter."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.seconds = 0.0

    def __call__(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)``, its time added to ``seconds``."""
        if self.cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            torch.cuda.synchronize()
            start.record()
            out = fn(*args)
            end.record()
            torch.cuda.synchronize()
            self.seconds += start.elapsed_time(end) / 1000.0
            return out
        start = time.perf_counter()
        out = fn(*args)
        self.seconds += time.perf_counter() - start
        return out
