"""Settings read from a file, checked against the dataclass that declares them.

A model's ``config.json``, a training ``--config`` file and the sections of a run's configuration
are plain JSON or YAML written by people. :func:`check_settings` checks one mapping of them against
the declared field types of a configuration dataclass (:class:`~causal_vqvae.ModelConfig`,
:class:`~causal_vqvae.training.TrainConfig`, :class:`datamodules.DataConfig`) with pydantic, under
JSON's strict rules: a number written as a string (``"64"``) is refused rather than guessed, a list
stands for a tuple, an integer for a float. An unknown key gets the close known ones suggested. The
ranges of the values are the dataclasses' own (their ``__post_init__``); :func:`build_settings` runs
both and names the file and the key in every message.

pydantic (a declared dependency) is imported on first use: importing the package stays light. On a
machine without it, keys and ranges are still checked and the types by the dataclasses alone.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import json
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

__all__ = ["SettingsError", "build_settings", "check_settings", "suggest"]

T = TypeVar("T")

# What a pydantic error type means, for a person who wrote the file.
_EXPECTED = {
    "int_type": "a whole number", "int_from_float": "a whole number", "int_parsing": "a whole number",
    "float_type": "a number", "float_parsing": "a number", "bool_type": "true or false",
    "bool_parsing": "true or false", "string_type": "a string", "tuple_type": "a list",
    "list_type": "a list", "dict_type": "a mapping", "none_required": "null",
    "finite_number": "a finite number",
}


class SettingsError(ValueError):
    """A setting of a file is missing its type or its range; the message names the file and the key."""


def suggest(word: str, choices: typing.Iterable[str]) -> str:
    """' (did you mean "x"?)' for the close matches of ``word`` among ``choices``, or ''."""
    close = difflib.get_close_matches(word, list(choices), n=2, cutoff=0.75)
    return f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""


def _describe(value: Any) -> str:
    kind = {str: "a string", bool: "a boolean", int: "an integer", float: "a number", list: "a list",
            dict: "a mapping", type(None): "null"}.get(type(value), type(value).__name__)
    return f"{value!r:.60} ({kind})"


@functools.cache
def _validator(cls: type) -> Any:
    """A pydantic model with one optional field per init field of the dataclass ``cls``, typed as
    declared; unknown keys forbidden. Built once per class."""
    import pydantic

    hints = typing.get_type_hints(cls)
    definitions = {f.name: (hints[f.name], None) for f in dataclasses.fields(cls) if f.init}
    return pydantic.create_model(f"{cls.__name__}Settings", __config__=pydantic.ConfigDict(extra="forbid"),
                                 **definitions)


def _location(loc: tuple) -> str:
    name = str(loc[0]) if loc else "?"
    return name + "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc[1:])


def check_settings(cls: type, data: Any, where: str, exclude: typing.Collection[str] = ()) -> dict[str, Any]:
    """The settings of ``data`` (a mapping of field names to values, as read from a file) checked
    against the declared types of the dataclass ``cls``; returns them converted (lists to tuples,
    integers to floats where a float is declared). ``where`` names the file (and section) in the
    messages; ``exclude`` lists fields that this file may not set. Raises :class:`SettingsError`:
    not a mapping, an unknown key (with the close ones suggested), a value of the wrong type."""
    if not isinstance(data, Mapping):
        raise SettingsError(f"{where}: expected a mapping of {cls.__name__} settings (key: value), "
                            f"got {_describe(data)}")
    known = [f.name for f in dataclasses.fields(cls) if f.init and f.name not in exclude]
    for key in data:
        if key in exclude:
            raise SettingsError(f"{where}: key {key!r} cannot be set here: the run sets it (from its flags or "
                                "its data); remove it")
        if not isinstance(key, str) or key not in known:
            hint = suggest(str(key), known)
            listing = "" if hint else f"; the known keys are {', '.join(sorted(known))}"
            raise SettingsError(f"{where}: unknown key {key!r}{hint}{listing}")
    try:
        import pydantic
    except ImportError:  # a machine without the declared dependency (a bare accelerator image): keys
        # and ranges are still checked, the types only by the dataclass itself
        return {key: tuple(v) if isinstance(v, list) else v for key, v in data.items()}
    try:
        text = json.dumps(dict(data), allow_nan=True)
    except (TypeError, ValueError):  # a YAML date or another value JSON has no word for
        bad = next(k for k, v in data.items() if not _json_safe(v))
        raise SettingsError(f"{where}: key {bad!r}: {_describe(data[bad])} is not a setting's value") from None
    try:
        model = _validator(cls).model_validate_json(text, strict=True)
    except pydantic.ValidationError as error:
        first = error.errors()[0]
        key = _location(first["loc"])
        expected = _EXPECTED.get(first["type"])
        given = first.get("input")
        what = f"expected {expected}" if expected else first["msg"][0].lower() + first["msg"][1:]
        advice = ""
        if isinstance(given, str) and expected in ("a whole number", "a number", "true or false") and _unquoted(given):
            advice = "; write it without quotes"
        raise SettingsError(f"{where}: key {key!r}: {what}, got {_describe(given)}{advice}") from None
    return {key: getattr(model, key) for key in data}


def _unquoted(text: str) -> bool:
    """Whether ``text`` reads as a JSON number or boolean once its quotes are gone."""
    try:
        return isinstance(json.loads(text.strip()), (int, float))
    except ValueError:
        return False


def _json_safe(value: Any) -> bool:
    try:
        json.dumps(value, allow_nan=True)
    except (TypeError, ValueError):
        return False
    return True


def build_settings(cls: type[T], data: Any, where: str, **fixed: Any) -> T:
    """``cls(**fixed, **settings)`` after :func:`check_settings`; a value out of its range (the
    dataclass's own checks) is a :class:`SettingsError` naming ``where``. ``fixed`` are values
    that do not come from the file (they may not be set by it)."""
    settings = check_settings(cls, data, where, exclude=fixed)
    try:
        return cls(**fixed, **settings)
    except (ValueError, TypeError) as error:
        message = str(error)
        for prefix in (f"{cls.__name__}: ", f"{cls.__name__}."):
            message = message.removeprefix(prefix)
        raise SettingsError(f"{where}: {message}") from None
