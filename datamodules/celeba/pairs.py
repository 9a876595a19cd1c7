"""CelebA: an index of the pairs of images that differ in one chosen attribute.

CelebA has no interventions: a pair ``(x, a, x')`` for the action ``Smiling+`` is two *different*
photos whose chosen attribute bits agree except that ``x`` is not smiling and ``x'`` is.
:class:`AttributePairIndex` groups the images by their pattern of chosen bits and samples such
pairs; action ids follow ``ActionSpace(celeba_space(attributes))`` (factor-major, minus then plus).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch

from ..factors import ActionSpace
from .attributes import (
    CELEBA_ATTRIBUTES,
    DEFAULT_PAIR_ATTRIBUTES,
    _check_attributes,
    celeba_space,
)

__all__ = ["AttributePairIndex"]


# ------------------------------------------------------------------------------------------------
# pairs
# ------------------------------------------------------------------------------------------------
def _uniforms(generator, shape: tuple[int, ...]) -> np.ndarray:
    """float64 uniforms in [0, 1) from a numpy Generator, a torch Generator or an int seed."""
    if isinstance(generator, np.random.Generator):
        return generator.random(shape)
    if isinstance(generator, torch.Generator):
        return torch.rand(shape, generator=generator, dtype=torch.float64).numpy()
    if isinstance(generator, (int, np.integer)) and not isinstance(generator, bool):
        return np.random.default_rng(int(generator)).random(shape)
    raise TypeError(
        f"generator must be a numpy Generator, a torch Generator or an int seed, got {type(generator).__name__}"
    )


class AttributePairIndex:
    """Pairs of images that differ in exactly one chosen attribute, for the actions of ``celeba_space``.

    ``bits`` is ``(N, len(all_names))`` (e.g. the 40 labels of an :class:`ArraySource`) or already
    ``(N, len(attributes))``, with values 0/1. Images are grouped by their pattern of chosen bits.
    For the action ``A+`` (attribute ``A`` at position k among ``attributes``) the sources are the
    images with bit k = 0 and the targets the images whose pattern equals the source's with bit k
    set; ``A-`` is the reverse. Attributes that are not chosen are free to differ. Action ids are
    those of ``ActionSpace(celeba_space(attributes))``: ``2k`` for ``A-``, ``2k + 1`` for ``A+``.
    """

    def __init__(
        self,
        bits: np.ndarray,
        attributes: Sequence[str] = DEFAULT_PAIR_ATTRIBUTES,
        all_names: Sequence[str] = CELEBA_ATTRIBUTES,
    ) -> None:
        self.attributes = _check_attributes(attributes)
        self.all_names = tuple(all_names)
        self.space = celeba_space(self.attributes)
        self.action_space = ActionSpace(self.space)
        if isinstance(bits, torch.Tensor):
            bits = bits.cpu().numpy()
        bits = np.asarray(bits)
        k = len(self.attributes)
        if bits.ndim != 2:
            raise ValueError(f"bits must be (N, {len(self.all_names)}) or (N, {k}), got shape {bits.shape}")
        if bits.shape[1] == len(self.all_names):
            not_there = [a for a in self.attributes if a not in self.all_names]
            if not_there:
                raise ValueError(f"attributes {not_there} are not among all_names {list(self.all_names)}")
            bits = bits[:, [self.all_names.index(a) for a in self.attributes]]
        elif bits.shape[1] != k:
            raise ValueError(
                f"bits must have {len(self.all_names)} columns (all attributes) or {k} (the chosen ones), "
                f"got shape {bits.shape}"
            )
        if bits.size and not np.isin(bits, (0, 1)).all():
            raise ValueError("bits must hold 0/1 values (convert -1/1 with bits > 0)")
        self.bits = bits.astype(np.uint8)
        self.num_rows = int(bits.shape[0])

        codes = (self.bits.astype(np.int64) << np.arange(k, dtype=np.int64)).sum(axis=1)
        self._codes = codes
        uniq, inverse, counts = np.unique(codes, return_inverse=True, return_counts=True)
        self._patterns = uniq  # sorted pattern codes
        self._counts = counts.astype(np.int64)
        self._rows = np.argsort(inverse, kind="stable").astype(np.int64)  # rows grouped by pattern
        self._offsets = np.concatenate([[0], np.cumsum(self._counts)[:-1]]).astype(np.int64)

        # Per action: (source groups, target groups, cumulative pair counts).
        self._tables: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        for action in self.action_space:
            bit = np.int64(1) << action.factor
            without = np.nonzero((uniq & bit) == 0)[0]
            partner = uniq[without] | bit
            pos = np.searchsorted(uniq, partner)
            inside = pos < len(uniq)
            found = np.zeros(len(partner), dtype=bool)
            found[inside] = uniq[pos[inside]] == partner[inside]
            low, high = without[found], pos[found]
            src, tgt = (high, low) if action.direction < 0 else (low, high)
            weights = self._counts[src] * self._counts[tgt]
            self._tables.append((src, tgt, np.cumsum(weights)))

    def __len__(self) -> int:
        return self.num_rows

    def pair_counts(self) -> dict[str, int]:
        """``{action name: number of (source, target) pairs}``, in action-id order."""
        return {
            a.name: int(table[2][-1]) if len(table[2]) else 0 for a, table in zip(self.action_space, self._tables)
        }

    def pattern_counts(self) -> dict[tuple[int, ...], int]:
        """``{chosen-bit pattern: number of images}``."""
        k = len(self.attributes)
        return {
            tuple(int(c >> i) & 1 for i in range(k)): int(n) for c, n in zip(self._patterns, self._counts)
        }

    def _action_weights(self, weights) -> np.ndarray:
        counts = np.array(list(self.pair_counts().values()), dtype=np.float64)
        if weights is None or (isinstance(weights, str) and weights == "balanced"):
            w = np.ones(len(counts))
        elif isinstance(weights, str) and weights == "proportional":
            w = counts.copy()
        elif isinstance(weights, str):
            raise ValueError(f"weights must be 'balanced', 'proportional', a sequence or a dict, got {weights!r}")
        elif isinstance(weights, Mapping):
            w = np.zeros(len(counts))
            for name, value in weights.items():
                w[self.action_space.parse(name)] = float(value)
        else:
            w = np.asarray(weights, dtype=np.float64).reshape(-1)
            if w.shape != (len(counts),):
                raise ValueError(
                    f"weights need one value per action ({len(counts)}: {', '.join(self.action_space.names)}), "
                    f"got {w.shape[0]}"
                )
        if (w < 0).any() or not np.isfinite(w).all():
            raise ValueError("action weights must be finite and non-negative")
        if counts.sum() == 0:
            raise ValueError(
                f"no action has a pair among {self.num_rows} images: no two images differ in exactly one of "
                f"{list(self.attributes)}; use more images or fewer attributes"
            )
        w = np.where(counts > 0, w, 0.0)  # actions without pairs are never sampled
        if w.sum() <= 0:
            with_pairs = [n for n, c in zip(self.action_space.names, counts) if c > 0]
            raise ValueError(f"the given weights put no mass on an action with pairs; actions with pairs: {with_pairs}")
        return w / w.sum()

    def sample(self, n: int, generator, weights=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Draw ``n`` pairs: ``(source rows, action ids, target rows)``, three int64 numpy arrays.

        ``generator`` is a ``numpy.random.Generator``, a ``torch.Generator`` or an int seed; the
        result depends only on its state. ``weights`` sets how often each action is drawn:
        ``None``/``"balanced"`` (equal for every action that has pairs), ``"proportional"`` (to its
        pair count), a sequence with one weight per action id, or ``{action name: weight}``.
        Actions without pairs are never drawn. Within an action the pair is uniform over all of its
        (source, target) pairs.
        """
        n = int(n)
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        probs = self._action_weights(weights)
        u = _uniforms(generator, (n, 4))
        cum = np.cumsum(probs)
        cum[-1] = 1.0
        actions = np.searchsorted(cum, u[:, 0], side="right")
        actions = np.minimum(actions, len(probs) - 1)
        # Guard against float edge cases landing on a zero-probability action.
        zero = probs[actions] == 0
        if zero.any():
            valid = np.nonzero(probs > 0)[0]
            actions[zero] = valid[np.searchsorted(valid, actions[zero]).clip(max=len(valid) - 1)]
        src_rows = np.empty(n, dtype=np.int64)
        tgt_rows = np.empty(n, dtype=np.int64)
        for a in np.unique(actions):
            idx = np.nonzero(actions == a)[0]
            src, tgt, cumw = self._tables[a]
            j = np.searchsorted(cumw, u[idx, 1] * cumw[-1], side="right").clip(max=len(cumw) - 1)
            gs, gt = src[j], tgt[j]
            ps = np.minimum((u[idx, 2] * self._counts[gs]).astype(np.int64), self._counts[gs] - 1)
            pt = np.minimum((u[idx, 3] * self._counts[gt]).astype(np.int64), self._counts[gt] - 1)
            src_rows[idx] = self._rows[self._offsets[gs] + ps]
            tgt_rows[idx] = self._rows[self._offsets[gt] + pt]
        return src_rows, actions.astype(np.int64), tgt_rows
