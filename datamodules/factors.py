"""Factor spaces and action spaces: the vocabulary every dataset and the model share.

A *factor space* is the product of a few discrete factors of variation (shape, scale, ...). A state
is a vector of class indices, one per factor, in the dataset's own factor order; the flat index of a
state follows the dataset's own layout (last factor fastest), so ``ravel`` gives the row of the real
file that holds the image of that state.

An *action* moves one factor by one step. Action ids are **factor-major, minus then plus**, over the
factors that have more than one value (a constant factor such as dSprites ``color`` has no action)::

    id = 2 * k + (direction == +1)       k = position of the factor among the non-constant factors

so for 3D Shapes id 0 is ``floor_hue-``, id 1 ``floor_hue+``, ..., id 11 ``orientation+``.

At the ends of a non-cyclic factor there is no step: ``scale-`` is not valid at the smallest scale.
A cyclic factor wraps around. Its ``period`` says how many distinct values the cycle has; a class at
or past the period is an alias of ``class - period`` (dSprites orientation: class 39 is 2*pi, the same
image as class 0, so its period is 39 and a step from 38 lands on 0).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

__all__ = ["Factor", "FactorSpace", "Action", "ActionSpace"]

ArrayLike = torch.Tensor | np.ndarray | Sequence[int]


@dataclass(frozen=True)
class Factor:
    """One factor of variation: ``size`` classes with the given ``values``."""

    name: str
    size: int
    values: tuple[float, ...]
    cyclic: bool = False
    period: int | None = None  # distinct values in the cycle; None means ``size``

    def __post_init__(self) -> None:
        if self.size < 1:
            raise ValueError(f"factor {self.name!r} needs at least one class, got size {self.size}")
        if len(self.values) != self.size:
            raise ValueError(
                f"factor {self.name!r} has size {self.size} but {len(self.values)} values"
            )
        if self.period is not None and not (self.cyclic and 1 <= self.period <= self.size):
            raise ValueError(f"factor {self.name!r}: a period needs cyclic=True and 1 <= period <= size")

    @property
    def cycle(self) -> int:
        """Number of distinct values on the cycle (``size`` unless classes alias)."""
        return self.period if self.period is not None else self.size

    @property
    def constant(self) -> bool:
        return self.size == 1


def _as_long_tensor(x: ArrayLike) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.long()
    return torch.as_tensor(np.asarray(x), dtype=torch.long)


@dataclass(frozen=True)
class FactorSpace:
    """The product of ``factors``; the last factor varies fastest in the flat index."""

    name: str
    factors: tuple[Factor, ...]
    _bases: tuple[int, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        names = [f.name for f in self.factors]
        if len(set(names)) != len(names):
            raise ValueError(f"factor names must be unique, got {names}")
        bases, acc = [], 1
        for f in reversed(self.factors):
            bases.append(acc)
            acc *= f.size
        object.__setattr__(self, "_bases", tuple(reversed(bases)))

    # --- description -------------------------------------------------------------------------
    @property
    def names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.factors)

    @property
    def sizes(self) -> tuple[int, ...]:
        return tuple(f.size for f in self.factors)

    @property
    def num_factors(self) -> int:
        return len(self.factors)

    @property
    def num_states(self) -> int:
        return math.prod(self.sizes)

    @property
    def bases(self) -> tuple[int, ...]:
        """Stride of each factor in the flat index (``index = classes @ bases``)."""
        return self._bases

    def factor_index(self, name_or_index: str | int) -> int:
        if isinstance(name_or_index, (int, np.integer)):
            i = int(name_or_index)
            if not 0 <= i < self.num_factors:
                raise IndexError(f"factor index {i} out of range for {self.num_factors} factors")
            return i
        try:
            return self.names.index(name_or_index)
        except ValueError:
            raise KeyError(
                f"unknown factor {name_or_index!r} for {self.name}; factors are {list(self.names)}"
            ) from None

    # --- index <-> classes -------------------------------------------------------------------
    def check(self, classes: torch.Tensor, values: bool = True) -> torch.Tensor:
        """Return ``classes`` as a long tensor after checking shape and range; raise otherwise.

        ``values=False`` checks the shape only: for classes already checked, e.g. on the CPU before
        they moved to a GPU, where reading the range test's verdict back is a host sync."""
        classes = _as_long_tensor(classes)
        if classes.shape[-1:] != (self.num_factors,):
            raise ValueError(
                f"{self.name} states have {self.num_factors} factors {list(self.names)}; "
                f"got a tensor of shape {tuple(classes.shape)}"
            )
        if not values:
            return classes
        sizes = torch.tensor(self.sizes, device=classes.device)
        bad = (classes < 0) | (classes >= sizes)
        if bool(bad.any()):
            f = int(bad.nonzero()[0, -1])
            raise ValueError(
                f"class out of range for factor {self.names[f]!r} (size {self.sizes[f]}): "
                f"{int(classes[..., f].min())}..{int(classes[..., f].max())}"
            )
        return classes

    def ravel(self, classes: ArrayLike) -> torch.Tensor:
        """Flat index of each state, ``(..., F) -> (...)``, in the real file's row order."""
        classes = self.check(classes)
        bases = torch.tensor(self.bases, device=classes.device)
        return (classes * bases).sum(-1)

    def unravel(self, index: ArrayLike) -> torch.Tensor:
        """Class vector of each flat index, ``(...) -> (..., F)``."""
        index = _as_long_tensor(index)
        if bool(((index < 0) | (index >= self.num_states)).any()):
            raise ValueError(f"{self.name} indices must lie in [0, {self.num_states})")
        bases = torch.tensor(self.bases, device=index.device)
        sizes = torch.tensor(self.sizes, device=index.device)
        return torch.div(index[..., None], bases, rounding_mode="floor") % sizes

    def values(self, classes: ArrayLike) -> torch.Tensor:
        """Factor values (float64) of class vectors, ``(..., F) -> (..., F)``."""
        classes = self.check(classes)
        out = torch.empty(classes.shape, dtype=torch.float64, device=classes.device)
        for i, f in enumerate(self.factors):
            table = torch.tensor(f.values, dtype=torch.float64, device=classes.device)
            out[..., i] = table[classes[..., i]]
        return out

    def canonical(self, classes: ArrayLike) -> torch.Tensor:
        """Map aliased classes of cyclic factors onto the cycle (dSprites orientation 39 -> 0)."""
        classes = self.check(classes).clone()
        for i, f in enumerate(self.factors):
            if f.cyclic and f.cycle < f.size:
                classes[..., i] = classes[..., i] % f.cycle
        return classes

    # --- sampling and neighbours -------------------------------------------------------------
    def sample(self, n: int, generator: torch.Generator, device: torch.device | str = "cpu") -> torch.Tensor:
        """``n`` states drawn uniformly, ``(n, F)`` long, from the given seeded generator."""
        u = torch.rand(n, self.num_factors, generator=generator, dtype=torch.float64)
        sizes = torch.tensor(self.sizes, dtype=torch.float64)
        return (u * sizes).long().clamp_max(torch.tensor(self.sizes) - 1).to(device)

    def step(
        self, classes: ArrayLike, factor: int | torch.Tensor, direction: int | torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Move ``factor`` by ``direction`` (+1 / -1) in each state.

        Returns ``(new_classes, valid)``: ``valid`` is False where the step leaves a non-cyclic
        factor's range or the factor is constant; there ``new_classes`` equals ``classes``.
        """
        classes = self.check(classes)
        factor = torch.as_tensor(factor, device=classes.device).long().expand(classes.shape[:-1])
        direction = torch.as_tensor(direction, device=classes.device).long().expand(classes.shape[:-1])
        if bool(((direction != 1) & (direction != -1)).any()):
            raise ValueError("direction must be +1 or -1")
        sizes = torch.tensor(self.sizes, device=classes.device)[factor]
        cycles = torch.tensor([f.cycle for f in self.factors], device=classes.device)[factor]
        cyclic = torch.tensor([f.cyclic for f in self.factors], device=classes.device)[factor]
        current = classes.gather(-1, factor[..., None])[..., 0]
        moved = current + direction
        wrapped = torch.where(cyclic, (current % cycles + direction) % cycles, moved)
        valid = (sizes > 1) & (cyclic | ((moved >= 0) & (moved < sizes)))
        new_value = torch.where(valid, wrapped, current)
        out = classes.clone()
        out.scatter_(-1, factor[..., None], new_value[..., None])
        return out, valid

    def neighbours(self, classes: ArrayLike) -> list[tuple[int, int, torch.Tensor]]:
        """All states one step away from a single state: ``[(factor, direction, classes'), ...]``."""
        classes = self.check(classes)
        if classes.dim() != 1:
            raise ValueError("neighbours takes one state of shape (F,); use step() for batches")
        out = []
        for i in range(self.num_factors):
            for d in (-1, 1):
                moved, valid = self.step(classes, i, d)
                if bool(valid):
                    out.append((i, d, moved))
        return out


@dataclass(frozen=True)
class Action:
    id: int
    factor: int  # index into the factor space
    factor_name: str
    direction: int  # -1 or +1

    @property
    def name(self) -> str:
        return f"{self.factor_name}{'+' if self.direction > 0 else '-'}"


class ActionSpace:
    """Actions of a factor space, ids factor-major, minus then plus (see the module docstring)."""

    def __init__(self, space: FactorSpace) -> None:
        self.space = space
        actions = []
        for i, f in enumerate(space.factors):
            if f.constant:
                continue
            for d in (-1, 1):
                actions.append(Action(len(actions), i, f.name, d))
        if not actions:
            raise ValueError(f"{space.name} has no factor with more than one value, so no action")
        self.actions: tuple[Action, ...] = tuple(actions)
        self._by_name = {a.name: a for a in actions}

    def __len__(self) -> int:
        return len(self.actions)

    def __iter__(self):
        return iter(self.actions)

    def __getitem__(self, action_id: int) -> Action:
        return self.actions[action_id]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(a.name for a in self.actions)

    @property
    def factors(self) -> tuple[int, ...]:
        """Factor-space indices of the factors that have actions, in action order."""
        return tuple(dict.fromkeys(a.factor for a in self.actions))

    def name(self, action_id: int) -> str:
        return self.actions[self.parse(action_id)].name

    def parse(self, action: int | str | tuple[str | int, int] | Action) -> int:
        """Action id from an id, a name such as ``"scale+"``, or ``(factor, direction)``."""
        if isinstance(action, Action):
            return action.id
        if isinstance(action, (int, np.integer)) and not isinstance(action, bool):
            if not 0 <= int(action) < len(self):
                raise ValueError(
                    f"action id {int(action)} out of range: {self.space.name} has {len(self)} actions "
                    f"(0..{len(self) - 1}: {', '.join(self.names)})"
                )
            return int(action)
        if isinstance(action, str):
            found = self._by_name.get(action.strip())
            if found is None:
                raise ValueError(
                    f"unknown action {action!r} for {self.space.name}; valid actions: {', '.join(self.names)}"
                )
            return found.id
        if isinstance(action, tuple) and len(action) == 2:
            factor, direction = action
            if direction not in (-1, 1, "+", "-"):
                raise ValueError(f"direction must be +1, -1, '+' or '-', got {direction!r}")
            direction = 1 if direction in (1, "+") else -1
            f = self.space.factor_index(factor)
            for a in self.actions:
                if a.factor == f and a.direction == direction:
                    return a.id
            raise ValueError(
                f"factor {self.space.names[f]!r} of {self.space.name} is constant and has no action; "
                f"valid actions: {', '.join(self.names)}"
            )
        raise TypeError(
            f"an action is an id, a name like {self.names[0]!r} or a (factor, direction) pair; got {action!r}"
        )

    def parse_many(self, actions: Iterable[int | str | tuple]) -> list[int]:
        return [self.parse(a) for a in actions]

    def factor_of(self, action_ids: torch.Tensor) -> torch.Tensor:
        """Factor-space index of each action id."""
        table = torch.tensor([a.factor for a in self.actions], device=action_ids.device)
        return table[action_ids]

    def direction_of(self, action_ids: torch.Tensor) -> torch.Tensor:
        table = torch.tensor([a.direction for a in self.actions], device=action_ids.device)
        return table[action_ids]

    def apply(self, classes: ArrayLike, action_ids: ArrayLike) -> tuple[torch.Tensor, torch.Tensor]:
        """Apply one action per state: ``(B, F), (B,) -> (new (B, F), valid (B,))``."""
        classes = self.space.check(classes)
        ids = _as_long_tensor(action_ids).to(classes.device)
        return self.space.step(classes, self.factor_of(ids), self.direction_of(ids))

    def valid_mask(self, classes: ArrayLike) -> torch.Tensor:
        """Which actions may be taken from each state: ``(..., F) -> (..., A)`` bool."""
        classes = self.space.check(classes)
        ids = torch.arange(len(self), device=classes.device)
        expanded = classes[..., None, :].expand(*classes.shape[:-1], len(self), self.space.num_factors)
        return self.apply(expanded, ids.expand(expanded.shape[:-1]))[1]

    def action_between(self, classes: ArrayLike, classes_next: ArrayLike) -> torch.Tensor:
        """Id of the one action that turns ``classes`` into ``classes_next``, or -1 if none does."""
        classes = self.space.check(classes)
        classes_next = self.space.check(classes_next).to(classes.device)
        ids = torch.arange(len(self), device=classes.device)
        expanded = classes[..., None, :].expand(*classes.shape[:-1], len(self), self.space.num_factors)
        moved, valid = self.apply(expanded, ids.expand(expanded.shape[:-1]))
        same = (self.space.canonical(moved) == self.space.canonical(classes_next)[..., None, :]).all(-1)
        hit = same & valid
        first = torch.where(hit, ids, len(self)).min(-1).values
        return torch.where(first < len(self), first, torch.full_like(first, -1))
