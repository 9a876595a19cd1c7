"""Action names: what ``edit``, ``traverse`` and the command lines accept as an action.

An action is an id, a name (``"scale+"``), a ``(factor, direction)`` pair (``("scale", +1)``) or a
list of those applied in order. Names come from ``config.action_names`` alone: an action name is a
factor name followed by ``-`` or ``+``. A wrong name is refused with the valid ones, the close ones
first.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from .model import CausalVQVAE

__all__ = ["action_names", "factor_actions", "parse_actions"]

_DIRECTIONS = {"+": 1, "-": -1, "+1": 1, "-1": -1, "plus": 1, "minus": -1}


def action_names(model: CausalVQVAE) -> tuple[str, ...]:
    """The A action names of ``model`` (``action_<id>`` where the config has none)."""
    config = model.config
    return tuple(config.action_name(i) for i in range(config.num_actions))


def factor_actions(model: CausalVQVAE) -> dict[str, dict[int, int]]:
    """``{factor: {-1: id, +1: id}}`` read from the action names, in the order factors first appear.
    A factor has only the directions that are named (an empty dict when no name ends in -/+)."""
    table: dict[str, dict[int, int]] = {}
    for action_id, name in enumerate(action_names(model)):
        if len(name) > 1 and name[-1] in "+-":
            table.setdefault(name[:-1], {})[1 if name[-1] == "+" else -1] = action_id
    return table


def _valid_actions(model: CausalVQVAE, near: str | None = None) -> str:
    """The valid actions by name and id; with ``near``, the names closest to it first."""
    names = action_names(model)
    listed = ", ".join(f"{name} ({i})" for i, name in enumerate(names))
    close = difflib.get_close_matches(near, names, n=3, cutoff=0.5) if near else []
    hint = f"did you mean {' or '.join(close)}? " if close else ""
    return f"{hint}valid actions: {listed}"


def _direction(value: Any) -> int | None:
    """+1 / -1 for a direction token ("+", "-", +1, -1, "plus", "minus"), else None."""
    if isinstance(value, (bool, np.bool_)):
        return None
    if isinstance(value, (int, np.integer)):
        return int(value) if int(value) in (1, -1) else None
    if isinstance(value, str):
        return _DIRECTIONS.get(value.strip().lower())
    return None


def _is_pair(action: Any, names: Sequence[str]) -> bool:
    """A 2-sequence (factor, direction) is one action; ("scale+", "shape-") or ("scale+", 1), whose
    first item is itself an action name, is a sequence of two."""
    return (
        isinstance(action, (tuple, list))
        and len(action) == 2
        and isinstance(action[0], str)
        and action[0].strip() not in names
        and _direction(action[1]) is not None
    )


def _pair_id(model: CausalVQVAE, factor: str, direction: int) -> int:
    table = factor_actions(model)
    name = factor.strip()
    if name not in table:
        raise ValueError(f"unknown factor {factor!r} in ({factor!r}, {direction:+d}); {_valid_actions(model)}")
    if direction not in table[name]:
        raise ValueError(f"factor {name!r} has no {'+' if direction > 0 else '-'} action; {_valid_actions(model)}")
    return table[name][direction]


def _single_id(model: CausalVQVAE, action: Any) -> int:
    names = action_names(model)
    if isinstance(action, (torch.Tensor, np.ndarray)) and action.ndim == 0:
        action = action.item()
    if isinstance(action, (bool, np.bool_)):
        raise TypeError(f"{action!r} is not an action; {_valid_actions(model)}")
    if isinstance(action, (int, np.integer)):
        if not 0 <= int(action) < len(names):
            raise ValueError(f"action id {int(action)} out of range [0, {len(names)}); {_valid_actions(model)}")
        return int(action)
    if isinstance(action, str):
        name = action.strip()
        if name in names:
            return names.index(name)
        if name.isascii() and name.isdigit():
            return _single_id(model, int(name))
        factors = factor_actions(model)
        if name in factors:
            raise ValueError(
                f"{name!r} is a factor, not an action: add a direction, e.g. {name + '+'!r} or ({name!r}, +1); "
                f"{_valid_actions(model)}"
            )
        if len(name) > 1 and name[-1] in "+-" and factors and name[:-1] not in factors:
            dataset = f"{model.config.dataset} model" if model.config.dataset else "model"
            raise ValueError(
                f"unknown action {action!r}: this {dataset} has no factor {name[:-1]!r}; {_valid_actions(model, name)}"
            )
        raise ValueError(f"unknown action {action!r}; {_valid_actions(model, name)}")
    raise TypeError(
        f"cannot read {action!r} ({type(action).__name__}) as an action: give an id, a name, a "
        f"(factor, direction) pair or a list of those; {_valid_actions(model)}"
    )


def parse_actions(model: CausalVQVAE, action: Any) -> list[int]:
    """Action ids, in the order to apply them, for ``action``: an id, a name (``"scale+"``), a
    ``(factor, direction)`` pair with direction +1/-1/"+"/"-", or a list/tuple of those (nested
    lists are flattened). Raises ValueError/TypeError listing every valid action."""
    if _is_pair(action, action_names(model)):
        direction = _direction(action[1])
        assert direction is not None
        return [_pair_id(model, action[0], direction)]
    if isinstance(action, (list, tuple)):
        if not action:
            raise ValueError(f"empty action sequence: give at least one action; {_valid_actions(model)}")
        factors = factor_actions(model)
        if isinstance(action, tuple) and isinstance(action[0], str) and action[0].strip() in factors:
            # a (factor, direction) pair whose direction is not one: say so, not "a factor, not an action"
            shown = f"({', '.join(repr(a) for a in action)})"
            raise ValueError(f"{shown} is not a (factor, direction) pair: the direction must be +1, -1, '+' or '-' "
                             f"after one factor, e.g. ({action[0].strip()!r}, +1); {_valid_actions(model)}")
        return [action_id for item in action for action_id in parse_actions(model, item)]
    return [_single_id(model, action)]
