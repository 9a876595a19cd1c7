"""The run folder (``--out``): made sure writable, its resolved configuration written and checked
again on ``--resume``, the checkpoint a stage continues from, whether a stage already finished, and
each stage's logger."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from ..files import write_json

__all__ = ["ADDED_SETTINGS", "check_same_run", "finished", "resume_checkpoint", "stage_logger", "writable_directory",
           "write_run_json"]


def write_run_json(path: Path, data: dict) -> None:
    """Write through a temporary file and rename, so ``path`` is never half-written."""
    write_json(path, data, default=str)


def writable_directory(path: Path) -> Path:
    """``path`` created if needed; a clear exit when it is a file or cannot be written."""
    if path.exists() and not path.is_dir():
        raise SystemExit(f"--out {path}: exists and is not a directory; pass a directory for the run")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-"):
            pass
    except OSError as error:
        raise SystemExit(f"--out {path}: cannot write there ({error.strerror or error}); "
                         "pass a directory you can write to") from None
    return path


# Settings added after runs were written, with the value that reproduces a run written before them
# (before graph_lr_scale, the graph's edge logits trained at the stage's learning rate; before
# code_pool, every step encoded fresh pairs; before retrieval_score, validation scored retrieval by
# transition with the NLL; before keep, every stage kept its last step's weights; before intervention,
# an intervened node's equation could keep its code; before keep_threshold, its most likely code was
# read off; before local_encoder, the encoder saw the whole image; before edit_loss_weight, no decoded
# edit was trained on).
ADDED_SETTINGS = {"train": {"graph_lr_scale": 1.0, "code_pool": 0, "keep": "last"},
                  "model": {"retrieval_score": "nll", "intervention": "resample", "keep_threshold": None,
                            "local_encoder": False, "edit_loss_weight": 0.0}}


def check_same_run(path: Path, resolved: dict[str, Any]) -> None:
    """A resumed run must be the run that was interrupted: same data, model, schedule and stages."""
    if not path.is_file():
        return
    before = json.loads(path.read_text())
    now = json.loads(json.dumps(resolved, default=str))  # as it would be written
    for settings in (before, now):  # settings that do not change what is trained
        for key in ("num_workers", "cache_root"):
            settings.get("data", {}).pop(key, None)
    older = {}  # settings the interrupted run predates, as it ran, where this run differs
    for section, added in ADDED_SETTINGS.items():
        for key, value in added.items():
            if isinstance(before.get(section), dict) and key not in before[section]:
                before[section][key] = value
                if now.get(section, {}).get(key) != value:
                    older[section] = {**older.get(section, {}), key: value}
    differ = [key for key in ("data", "model", "train", "stages", "num_nodes") if before.get(key) != now.get(key)]
    if differ:
        details = "; ".join(
            f"{key}: {_diff(before.get(key), now.get(key))}" for key in differ)
        hint = "" if not older else (f" (it predates {', '.join(k for s in older.values() for k in s)}: "
                                     f"add {json.dumps(older)} to the --config file)")
        raise SystemExit(f"--resume: {path} was written by a run with other settings ({details}); "
                         f"resume with the original flags{hint}, or pass a new --out to start a new run")


def _diff(before: Any, now: Any) -> str:
    if isinstance(before, dict) and isinstance(now, dict):
        keys = sorted(k for k in set(before) | set(now) if before.get(k) != now.get(k))
        return ", ".join(f"{k} was {before.get(k)!r}, now {now.get(k)!r}" for k in keys)
    return f"was {before!r}, now {now!r}"


def resume_checkpoint(resume: str | None, checkpoints: Path) -> str | None:
    """The checkpoint a stage continues from: ``last`` is its own last.ckpt if there is one
    (none: the stage never reached its first checkpoint, so it starts over)."""
    if resume is None:
        return None
    path = checkpoints / "last.ckpt" if resume == "last" else Path(resume)
    if path.is_file():
        return str(path)
    if resume == "last":
        return None
    raise SystemExit(f"--resume {resume}: no such checkpoint; pass 'last' or the path of a .ckpt file")


def finished(stage_dir: Path, steps: int) -> bool:
    """Whether a stage's model was saved after all its ``steps`` (so a resumed run can skip it)."""
    try:
        metadata = json.loads((stage_dir / "metadata.json").read_text())
    except (OSError, ValueError):
        return False
    return (stage_dir / "model.safetensors").is_file() and metadata.get("steps") == steps and "summary" in metadata


def stage_logger(stage_dir: Path):
    from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger

    try:
        import tensorboard  # noqa: F401

        return TensorBoardLogger(stage_dir, name="logs", version="")
    except ImportError:
        return CSVLogger(stage_dir, name="logs", version="")
