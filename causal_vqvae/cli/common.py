"""What every command shares: the flags that mean the same thing everywhere, where a ``--model``
name points, and how a user's mistake is reported.

- ``--device auto|cpu|cuda|cuda:N|mps`` (``auto``: cuda if available, else mps, else cpu);
- ``--json``: print the result as one JSON document on stdout instead of the human summary;
- ``--model``: a released model's name, a model folder (``save_pretrained``), or a training run's
  folder (its final stage is used);
- a mistake the user can fix (a bad flag, a missing file, a model of another dataset) prints one
  line, ``causal-vqvae CMD: error: ...``, and exits with status 2, without a traceback.
  ``CAUSAL_VQVAE_DEBUG=1`` shows the traceback as well.

This module imports neither torch nor the model, so that ``--help`` is fast.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import Any

from ..locate import RELEASED_NAMES

# The 3D Shapes twin's renderer versions (datamodules.shapes3d.TWIN_VERSIONS, without importing torch;
# a test keeps the two alike) and what each is, for --twin-version's help.
TWIN_VERSIONS = ("1", "2", "3", "4")
TWIN_VERSIONS_HELP = ("1 (the first twin), 2 (closer to DeepMind's real frames), 3 (2 with the objects shaded "
                      "as in those frames) or 4 (the closest: the camera measured from the room's lines; the "
                      "released 3D Shapes model's twin; docs/twin_fidelity.md)")

__all__ = [
    "DEBUG_VARIABLE",
    "CommandExit",
    "Parser",
    "UserError",
    "add_device",
    "add_json",
    "add_model",
    "device_name",
    "print_json",
    "resolve_device",
    "command",
    "run_command",
]

DEBUG_VARIABLE = "CAUSAL_VQVAE_DEBUG"
_DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


class UserError(Exception):
    """A mistake the user can fix: the command prints its message in one line and exits with 2."""


# ----------------------------------------------------------------------------------- flags
class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line: what was wrong, and where to read more."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def whole_number(text: str, minimum: int = 0) -> int:
    """An argparse type: a whole number >= ``minimum`` (ASCII digits only: ``int('²')`` is refused)."""
    try:
        value = int(text) if text.strip().isascii() else None
    except ValueError:
        value = None
    if value is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number")
    if value < minimum:
        raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
    return value


def positive_int(text: str) -> int:
    """An argparse type: a whole number >= 1."""
    return whole_number(text, 1)


def device_name(text: str) -> str:
    """argparse type of ``--device``: the name, checked for form only (no torch import)."""
    if not _DEVICE.match(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a device: use auto, cpu, cuda, cuda:N or mps")
    return text


def add_device(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", type=device_name, default="auto", metavar="DEVICE",
                        help="auto (cuda if available, else mps, else cpu), cpu, cuda, cuda:N or mps "
                             "(default: auto)")


def add_json(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true",
                        help="print the result as one JSON document on stdout (no other output there)")


def add_model(parser: argparse.ArgumentParser, required: bool = True) -> None:
    names = ", ".join(RELEASED_NAMES)
    parser.add_argument("--model", required=required, metavar="MODEL",
                        help=f"a released model ({names}), a model folder (config.json + model.safetensors), "
                             "a training run's folder (its final stage is used) or a Hugging Face Hub id "
                             "(owner/name; pip install \"causal-vqvae[hub]\")")


def resolve_device(name: str):
    """The ``torch.device`` of a ``--device`` value, refused when this machine does not have it."""
    import torch

    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"--device {name}: no CUDA GPU is available here; use --device cpu (or auto)")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise UserError(f"--device {name}: this machine has {count} GPU(s), cuda:0 to cuda:{count - 1}")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise UserError(f"--device {name}: Apple's MPS is not available here; use --device cpu (or auto)")
    return device


def print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, default=str))


# ----------------------------------------------------------------------------------- errors
class CommandExit(SystemExit):
    """Exit status 2 after a user's mistake was printed; ``str()`` is the message, for a caller
    (a test, a script) that runs a command's ``main`` in-process."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(code)
        self.message = message

    def __str__(self) -> str:
        return self.message


def run_command(main: Callable[[Sequence[str] | None], Any], argv: Sequence[str] | None, prog: str) -> int:
    """Run a command's ``main``; a user's mistake becomes one line on stderr and exit status 2.

    User mistakes are :class:`UserError`, ``ValueError`` (bad values), ``OSError`` (missing,
    unreadable or unwritable files) and ``SystemExit`` with a message. Anything else is a fault of
    the program and keeps its traceback. ``CAUSAL_VQVAE_DEBUG=1`` shows every traceback."""
    try:
        return command(main, argv, prog)
    except SystemExit as stop:
        return stop.code if isinstance(stop.code, int) else 0


def command(main: Callable[[Sequence[str] | None], Any], argv: Sequence[str] | None, prog: str) -> int:
    """As :func:`run_command`, but a mistake ends in :class:`CommandExit` (status 2, after the
    message is printed): what each command's own ``main`` does."""
    debug = os.environ.get(DEBUG_VARIABLE, "") not in ("", "0")
    try:
        result = main(argv)
    except CommandExit:
        raise
    except SystemExit as stop:
        if isinstance(stop.code, str):
            if debug:
                traceback.print_exc()
            raise CommandExit(_fail(prog, stop.code), stop.code) from None
        raise
    except (UserError, ValueError, OSError) as error:
        if debug:
            traceback.print_exc()
        raise CommandExit(_fail(prog, _message(error)), _message(error)) from None
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        raise SystemExit(130) from None
    return result if isinstance(result, int) else 0


def _message(error: BaseException) -> str:
    if isinstance(error, OSError) and error.filename is not None and error.strerror:
        return f"{error.filename}: {error.strerror}"
    return str(error) or type(error).__name__


def _fail(prog: str, message: str) -> int:
    message = message.strip()
    prefix = f"{prog}: error: "
    if message.startswith((prefix, f"{prog}: ")):
        prefix = ""
    print(f"{prefix}{message}", file=sys.stderr)
    return 2
