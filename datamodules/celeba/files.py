"""CelebA: the file names of the torchvision folder layout (see :mod:`.folder`) and the parsers of
its annotation text files, ``list_attr_celeba.txt`` and ``list_eval_partition.txt``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from .attributes import CELEBA_ATTRIBUTES

__all__ = ["CELEBA_SPLITS", "parse_attr_file", "parse_partition_file"]

CELEBA_SPLITS: dict[str, int | None] = {"train": 0, "valid": 1, "test": 2, "all": None}
"""Split names accepted by the readers and their code in ``list_eval_partition.txt``."""

ATTR_FILE = "list_attr_celeba.txt"
_ATTR_VALUES = frozenset({"1", "-1"})
PARTITION_FILE = "list_eval_partition.txt"
IMAGE_DIR = "img_align_celeba"


# ------------------------------------------------------------------------------------------------
# text files
# ------------------------------------------------------------------------------------------------
def _read_lines(path: Path) -> list[str]:
    """Lines of a text file without their ``\\n`` / ``\\r\\n`` endings (index i is line i + 1)."""
    data = Path(path).read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise ValueError(f"{path}, line {line}: not a text file (undecodable byte)") from None
    lines = text.split("\n")
    return [ln[:-1] if ln.endswith("\r") else ln for ln in lines]


def _last_content_line(lines: list[str]) -> int:
    """Number of lines up to the last non-blank one (trailing blank lines are ignored)."""
    n = len(lines)
    while n > 0 and not lines[n - 1].strip():
        n -= 1
    return n


def parse_attr_file(path: str | os.PathLike) -> tuple[list[str], list[str], np.ndarray]:
    """Parse ``list_attr_celeba.txt``: ``(filenames, attribute names, bits (N, K) uint8 0/1)``.

    Format: line 1 the number of images, line 2 the attribute names, then one row per image:
    ``000001.jpg -1  1  1 ...`` with -1 (absent) or 1 (present). Fields may be separated by any run
    of spaces or tabs; CRLF line ends, trailing whitespace and blank lines (which are skipped) are
    tolerated. Columns are returned in the file's order (K = 40 for the real file).

    Raises ``ValueError`` naming the file and the line for a missing or malformed header, a row
    with the wrong number of fields, a value other than -1/1, a repeated filename, or a count on
    line 1 that does not match the rows.
    """
    path = Path(path)
    lines = _read_lines(path)
    end = _last_content_line(lines)
    if end == 0:
        raise ValueError(f"{path}, line 1: the attribute file is empty; expected the image count")
    first = lines[0].split()
    if len(first) != 1 or not first[0].isdigit():
        raise ValueError(
            f"{path}, line 1: expected the number of images (a single integer), got {lines[0][:80]!r}; "
            "the file must start with a count line and a line of attribute names"
        )
    count = int(first[0])
    if end < 2:
        raise ValueError(f"{path}, line 2: missing header line with the attribute names")
    names = lines[1].split()
    if not names:
        raise ValueError(f"{path}, line 2: missing header line with the attribute names (line is blank)")
    if any(re.fullmatch(r"[-+]?\d+", t) for t in names) or names[0].lower().endswith((".jpg", ".png", ".jpeg")):
        raise ValueError(
            f"{path}, line 2: missing header: expected the attribute names "
            f"(e.g. {' '.join(CELEBA_ATTRIBUTES[:3])} ...), got a data row {lines[1][:60]!r}"
        )
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise ValueError(f"{path}, line 2: attribute names repeat: {dup}")
    k = len(names)

    filenames: list[str] = []
    rows: list[bytes] = []  # one byte per value (0/1): compact even for the 202,599 real rows
    line_numbers: list[int] = []
    valid = _ATTR_VALUES
    for i in range(2, end):
        parts = lines[i].split()
        if not parts:
            continue
        if len(parts) != k + 1:
            raise ValueError(
                f"{path}, line {i + 1}: expected a filename and {k} values (-1/1), one per attribute on "
                f"line 2, got {len(parts) - 1} value(s) after {parts[0]!r}: {lines[i][:80]!r}; "
                "fix that line or download the attribute file again"
            )
        values = parts[1:]
        if not valid.issuperset(values):
            c = next(j for j, v in enumerate(values) if v not in valid)
            raise ValueError(
                f"{path}, line {i + 1}: value {values[c]!r} for attribute {names[c]!r} of "
                f"{parts[0]}; values must be -1 or 1"
            )
        filenames.append(parts[0])
        rows.append(bytes([v == "1" for v in values]))
        line_numbers.append(i + 1)

    if len(filenames) != count:
        raise ValueError(
            f"{path}, line 1: the count says {count} images but the file has {len(filenames)} rows "
            f"(lines 3..{end}); the file is truncated or the count is wrong"
        )
    bits = np.frombuffer(b"".join(rows), dtype=np.uint8).reshape(len(rows), k).copy()
    if len(set(filenames)) != len(filenames):
        seen: dict[str, int] = {}
        for name, ln in zip(filenames, line_numbers):
            if name in seen:
                raise ValueError(f"{path}, line {ln}: {name} is listed again (first on line {seen[name]})")
            seen[name] = ln
    return filenames, names, bits


def parse_partition_file(path: str | os.PathLike) -> dict[str, int]:
    """Parse ``list_eval_partition.txt``: ``{filename: split}`` with 0 train, 1 valid, 2 test.

    Rows are ``000001.jpg 0`` with no header; separators, line ends and blank lines are handled as in
    :func:`parse_attr_file`. Raises ``ValueError`` naming the file and line for a row without
    exactly two fields, a split other than 0/1/2, a repeated filename, or an empty file.
    """
    path = Path(path)
    lines = _read_lines(path)
    out: dict[str, int] = {}
    first_line: dict[str, int] = {}
    for i, line in enumerate(lines):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2:
            raise ValueError(
                f"{path}, line {i + 1}: expected '<filename> <split>' (2 fields), got {len(parts)}: {line[:80]!r}"
            )
        name, split = parts
        if split not in ("0", "1", "2"):
            raise ValueError(
                f"{path}, line {i + 1}: split {split!r} for {name}; must be 0 (train), 1 (valid) or 2 (test)"
            )
        if name in out:
            raise ValueError(f"{path}, line {i + 1}: {name} is listed again (first on line {first_line[name]})")
        out[name] = int(split)
        first_line[name] = i + 1
    if not out:
        raise ValueError(f"{path}, line 1: the partition file is empty; expected rows '000001.jpg 0'")
    return out
