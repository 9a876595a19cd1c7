"""Transition pairs ``(x, a, x')`` and single states, sampled on the fly from a factor space.

Every sample is a pure function of ``(seed, split, index)``: a counter-based hash (splitmix64 in
numpy uint64) turns the index into the random numbers it needs, so a pair does not depend on the
batch it is drawn in, the worker that draws it, or the number of DDP ranks.

**Splits.** A state belongs to ``train``, ``val`` or ``test`` by a hash of its canonical flat index
under ``split_seed`` (70 / 15 / 15 by default). A pair belongs to the split of its *source* state; a
training pair also needs its *target* in the training split, so no image of a validation or test
state is ever shown in training, as a source or as a target. Aliased states (dSprites orientation
39 == 0) share a split because the hash reads the canonical state.

**Pair frequency.** The acted factor is drawn with weights over the factors that have actions:
``"balanced"`` (equal), ``"proportional"`` (to factor size), an explicit mapping
``{"shape": 0.02, ...}`` (relative weights, unnamed factors weigh 1), or ``"rare:<factor>:<ratio>"``
(that factor ``ratio`` times rarer than each other one: the imbalanced setting). The direction is
+1 or -1 with equal odds; the source state is uniform over the states from which that step exists.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch

from .factors import ActionSpace, FactorSpace

__all__ = [
    "SPLITS",
    "factor_weights",
    "split_of",
    "TransitionPairs",
    "StateSamples",
    "batch_passthrough",
]

SPLITS = ("train", "val", "test")
DEFAULT_FRACTIONS = (0.70, 0.15, 0.15)
_MAX_ROUNDS = 256

_M64 = np.uint64(0xFFFFFFFFFFFFFFFF)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_C1 = np.uint64(0xBF58476D1CE4E5B9)
_C2 = np.uint64(0x94D049BB133111EB)


def _splitmix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser on uint64 arrays (wrapping arithmetic)."""
    with np.errstate(over="ignore"):
        z = x + _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * _C1
        z = (z ^ (z >> np.uint64(27))) * _C2
        return z ^ (z >> np.uint64(31))


def _key(*parts: np.ndarray | int) -> np.ndarray:
    """Hash several integers (scalars or arrays, broadcast) into one uint64 stream key."""
    h = np.uint64(0x243F6A8885A308D3)
    with np.errstate(over="ignore"):
        for p in parts:
            h = _splitmix(np.asarray(h, dtype=np.uint64) ^ np.asarray(p).astype(np.uint64))
    return h


def _uniform(key: np.ndarray, counter: int | np.ndarray) -> np.ndarray:
    """Uniform float64 in [0, 1) for each key at the given counter."""
    bits = _splitmix(key ^ _splitmix(np.asarray(counter).astype(np.uint64)))
    return (bits >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def factor_weights(space: FactorSpace, frequency: str | Mapping[str, float] = "balanced") -> np.ndarray:
    """Relative frequency of each *actionable* factor (in ``ActionSpace.factors`` order), summing to 1."""
    actionable = ActionSpace(space).factors
    names = [space.names[i] for i in actionable]
    if isinstance(frequency, Mapping):
        unknown = set(frequency) - set(names)
        if unknown:
            raise ValueError(f"pair frequency names unknown factors {sorted(unknown)}; factors with actions: {names}")
        w = np.array([float(frequency.get(n, 1.0)) for n in names])
    elif frequency == "balanced":
        w = np.ones(len(names))
    elif frequency == "proportional":
        w = np.array([space.sizes[i] for i in actionable], dtype=np.float64)
    elif isinstance(frequency, str) and frequency.startswith("rare:"):
        try:
            _, factor, ratio = frequency.split(":")
            ratio_f = float(ratio)
        except ValueError:
            raise ValueError(f"write the imbalanced setting as 'rare:<factor>:<ratio>', e.g. 'rare:{names[0]}:50'; got {frequency!r}") from None
        if factor not in names:
            raise ValueError(f"unknown factor {factor!r} in {frequency!r}; factors with actions: {names}")
        w = np.array([1.0 / ratio_f if n == factor else 1.0 for n in names])
    else:
        raise ValueError(
            f"pair frequency must be 'balanced', 'proportional', 'rare:<factor>:<ratio>' or a mapping "
            f"factor -> weight; got {frequency!r}"
        )
    if (w < 0).any() or not np.isfinite(w).all() or w.sum() <= 0:
        raise ValueError(f"pair frequency weights must be finite, non-negative and not all zero; got {w.tolist()}")
    return w / w.sum()


def _canonical_np(space: FactorSpace, classes: np.ndarray) -> np.ndarray:
    out = classes.copy()
    for i, f in enumerate(space.factors):
        if f.cyclic and f.cycle < f.size:
            out[..., i] %= f.cycle
    return out


def split_of(
    space: FactorSpace,
    classes: np.ndarray | torch.Tensor,
    split_seed: int = 0,
    fractions: tuple[float, float, float] = DEFAULT_FRACTIONS,
) -> np.ndarray:
    """Split id (0 train, 1 val, 2 test) of each state ``(..., F)``, a pure function of the state."""
    classes = np.asarray(classes, dtype=np.int64)
    flat = _canonical_np(space, classes) @ np.asarray(space.bases, dtype=np.int64)
    u = _uniform(_key(0x5EED, split_seed, flat), 0)
    edges = np.cumsum(fractions)
    return np.searchsorted(edges[:-1], u, side="right").astype(np.int64)


def _check_split(split: str, fractions: tuple[float, float, float]) -> int:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if len(fractions) != 3 or min(fractions) < 0 or abs(sum(fractions) - 1) > 1e-9:
        raise ValueError(f"split fractions must be three non-negative numbers summing to 1, got {fractions}")
    if fractions[SPLITS.index(split)] == 0:
        raise ValueError(f"split {split!r} has fraction 0 in {fractions}")
    return SPLITS.index(split)


def batch_passthrough(batch):
    """``collate_fn`` for datasets whose ``__getitems__`` already returns a batch."""
    return batch


@dataclass
class _Sampler:
    space: FactorSpace
    split: str = "train"
    seed: int = 0
    split_seed: int = 0
    fractions: tuple[float, float, float] = DEFAULT_FRACTIONS

    def __post_init__(self) -> None:
        self._split_id = _check_split(self.split, tuple(self.fractions))
        self._sizes = np.asarray(self.space.sizes, dtype=np.int64)

    def _in_split(self, classes: np.ndarray) -> np.ndarray:
        return split_of(self.space, classes, self.split_seed, self.fractions) == self._split_id


class TransitionPairs(torch.utils.data.Dataset, _Sampler):
    """``length`` transition pairs of ``split``; item ``i`` is a pure function of (seed, split, i).

    ``__getitems__`` samples a whole batch at once and returns a dict of tensors:
    ``factors (B, F)``, ``action (B,)``, ``factors_next (B, F)``, ``index (B,)`` (all int64). Use
    :func:`batch_passthrough` as the DataLoader's ``collate_fn``. Indices may exceed ``length``
    (samplers add ``epoch * length`` to draw fresh pairs each epoch).
    """

    def __init__(self, space: FactorSpace, split: str = "train", *, length: int, seed: int = 0,
                 split_seed: int = 0, frequency: str | Mapping[str, float] = "balanced",
                 fractions: tuple[float, float, float] = DEFAULT_FRACTIONS) -> None:
        _Sampler.__init__(self, space, split, seed, split_seed, tuple(fractions))
        if length < 1:
            raise ValueError(f"length must be positive, got {length}")
        self.length = length
        self.actions = ActionSpace(space)
        self.frequency = frequency
        self.weights = factor_weights(space, frequency)
        self._cum = np.cumsum(self.weights)
        self._factor_of_action = np.array([a.factor for a in self.actions], dtype=np.int64)
        self._actionable = np.array(self.actions.factors, dtype=np.int64)
        self._cyclic = np.array([f.cyclic for f in space.factors])

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {k: v[0] for k, v in self.__getitems__([index]).items()}

    def sample(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(factors (B, F), action (B,), factors_next (B, F))`` as int64 numpy arrays."""
        idx = np.asarray(indices, dtype=np.int64)
        key = _key(self.seed, self._split_id, idx)
        n, nf = len(idx), self.space.num_factors
        k = np.minimum(np.searchsorted(self._cum, _uniform(key, 0), side="right"), len(self._cum) - 1)
        factor = self._actionable[k]
        direction = np.where(_uniform(key, 1) < 0.5, -1, 1)
        action = 2 * k + (direction > 0)

        src = np.zeros((n, nf), dtype=np.int64)
        tgt = np.zeros((n, nf), dtype=np.int64)
        todo = np.arange(n)
        for r in range(_MAX_ROUNDS):
            if len(todo) == 0:
                break
            counters = 2 + r * nf + np.arange(nf)
            u = _uniform(key[todo, None], counters[None, :])  # (T, F)
            cand = np.minimum((u * self._sizes).astype(np.int64), self._sizes - 1)
            f, d = factor[todo], direction[todo]
            size_f = self._sizes[f]
            # Non-cyclic acted factor: draw the source class where the step exists.
            start = np.where(d > 0, 0, 1)
            span = size_f - 1
            acted = np.where(self._cyclic[f], cand[np.arange(len(todo)), f],
                             start + np.minimum((u[np.arange(len(todo)), f] * span).astype(np.int64), span - 1))
            cand[np.arange(len(todo)), f] = acted
            moved, _ = self.space.step(torch.from_numpy(cand), torch.from_numpy(f), torch.from_numpy(d))
            moved = moved.numpy()
            ok = self._in_split(cand)
            if self._split_id == 0:
                ok &= self._in_split(moved)
            src[todo[ok]] = cand[ok]
            tgt[todo[ok]] = moved[ok]
            todo = todo[~ok]
        if len(todo):
            raise RuntimeError(
                f"could not draw {len(todo)} {self.split} pairs in {_MAX_ROUNDS} rounds; the split "
                f"fractions {self.fractions} leave too few states"
            )
        return src, action.astype(np.int64), tgt

    def __getitems__(self, indices) -> dict[str, torch.Tensor]:
        idx = np.asarray(indices, dtype=np.int64)
        src, action, tgt = self.sample(idx)
        return {
            "factors": torch.from_numpy(src),
            "action": torch.from_numpy(action),
            "factors_next": torch.from_numpy(tgt),
            "index": torch.from_numpy(idx),
        }


class StateSamples(torch.utils.data.Dataset, _Sampler):
    """``length`` single states of ``split`` (for autoencoder training); same contract as pairs:
    ``__getitems__`` returns ``factors (B, F)`` and ``index (B,)``."""

    def __init__(self, space: FactorSpace, split: str = "train", *, length: int, seed: int = 0,
                 split_seed: int = 0, fractions: tuple[float, float, float] = DEFAULT_FRACTIONS) -> None:
        _Sampler.__init__(self, space, split, seed, split_seed, tuple(fractions))
        if length < 1:
            raise ValueError(f"length must be positive, got {length}")
        self.length = length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {k: v[0] for k, v in self.__getitems__([index]).items()}

    def sample(self, indices: np.ndarray) -> np.ndarray:
        idx = np.asarray(indices, dtype=np.int64)
        key = _key(self.seed, 1000 + self._split_id, idx)
        nf = self.space.num_factors
        out = np.zeros((len(idx), nf), dtype=np.int64)
        todo = np.arange(len(idx))
        for r in range(_MAX_ROUNDS):
            if len(todo) == 0:
                break
            u = _uniform(key[todo, None], (r * nf + np.arange(nf))[None, :])
            cand = np.minimum((u * self._sizes).astype(np.int64), self._sizes - 1)
            ok = self._in_split(cand)
            out[todo[ok]] = cand[ok]
            todo = todo[~ok]
        if len(todo):
            raise RuntimeError(f"could not draw {len(todo)} {self.split} states in {_MAX_ROUNDS} rounds")
        return out

    def __getitems__(self, indices) -> dict[str, torch.Tensor]:
        idx = np.asarray(indices, dtype=np.int64)
        return {"factors": torch.from_numpy(self.sample(idx)), "index": torch.from_numpy(idx)}
