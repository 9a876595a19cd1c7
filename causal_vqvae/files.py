"""Writing files so that a crash never leaves one half-written: every file the package writes goes
to a temporary name in its own folder and is moved into place with ``os.replace``."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

__all__ = ["atomic_write", "write_json", "write_text", "json_text"]


def atomic_write(path: str | os.PathLike, write: Callable[[str], Any]) -> None:
    """Call ``write(temp_path)`` on a temporary file next to ``path`` (its folder created if
    needed), then move it into place with ``os.replace``: ``path`` is never half-written. Every
    file the package writes goes through here."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(temp)
        with open(temp, "rb+") as written:  # on disk before the rename: a crash keeps the old file
            os.fsync(written.fileno())
        os.chmod(temp, 0o644)  # mkstemp makes 0600 files; what we write is meant to be shared
        os.replace(temp, path)
    except BaseException:
        if os.path.exists(temp):
            os.remove(temp)
        raise


def json_text(data: Mapping[str, Any], what: str) -> str:
    """``data`` as sorted, indented JSON; a TypeError naming ``what`` when it cannot be."""
    try:
        return json.dumps(data, indent=2, sort_keys=True) + "\n"
    except TypeError as error:
        raise TypeError(f"{what} must be JSON-serialisable (str, numbers, bools, lists, dicts): {error}") from None


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` through :func:`atomic_write`."""
    atomic_write(path, lambda temp: Path(temp).write_text(text))


def write_json(path: str | os.PathLike, data: Any, **dump_options: Any) -> None:
    """Write ``data`` as indented JSON through :func:`atomic_write`; ``dump_options`` go to
    ``json.dumps`` (e.g. ``allow_nan=False``, ``default=str``). Serialised before anything is written."""
    write_text(path, json.dumps(data, indent=2, **dump_options) + "\n")
