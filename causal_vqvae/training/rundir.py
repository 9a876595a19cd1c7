"""The run folder (``--out``): made sure writable and owned by one run at a time (a lock naming the
process and host), never trained over without ``--resume`` or ``--overwrite``, its resolved
configuration written and checked again on ``--resume``, the checkpoint a stage continues from
(read safely before anything is written), whether a stage already finished, and each stage's
logger."""

from __future__ import annotations

import datetime
import json
import os
import shutil
import socket
import tempfile
from pathlib import Path
from typing import Any

from ..files import write_json
from .presets import RUN_DATA_FIELDS, RUN_MODEL_FIELDS

__all__ = ["ADDED_SETTINGS", "LOCK_NAME", "RunLock", "check_checkpoint", "check_same_run", "claim_run_folder",
           "run_stages",
           "finished", "resume_checkpoint", "stage_logger", "writable_directory", "write_run_json"]

LOCK_NAME = ".lock"
# What a run writes at the top of its folder, besides a folder per stage and its lock.
RUN_FILES = ("config.json", "summary.json")


def write_run_json(path: Path, data: dict) -> None:
    """Write through a temporary file and rename, so ``path`` is never half-written."""
    write_json(path, data, default=str)


def writable_directory(out: str | Path) -> Path:
    """``out`` created if needed; a clear exit when it is empty, a file or cannot be written."""
    if not str(out).strip():  # Path("") would be the current folder
        raise SystemExit("--out is empty; pass the folder the run should write to, e.g. --out runs/mine")
    path = Path(out)
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
# edit was trained on; before local_parent_logit, every edge started alike; before kept_equation_weight,
# the equation term weighed the nodes that keep their code like the others; before twin_version, the
# twins had one renderer, version "1"; before augment, no training batch was augmented; before
# causal_head_lr, the retrieval head trained at the causal stage's rate; before transition_position,
# every node had a position embedding of its own; before transition_window, no equation read a window;
# before renderer_version, the renderer augmentation drew with the nearest other version; before the
# decoder_* settings, there was no decoder stage).
ADDED_SETTINGS = {"train": {"graph_lr_scale": 1.0, "code_pool": 0, "keep": "last", "causal_head_lr": 0.0,
                            "decoder_steps": 0, "decoder_lr": 1e-3, "decoder_edit_weight": 1.0},
                  "model": {"retrieval_score": "nll", "intervention": "resample", "keep_threshold": None,
                            "local_encoder": False, "edit_loss_weight": 0.0, "local_parent_logit": None,
                            "kept_equation_weight": 1.0, "transition_position": "absolute",
                            "transition_window": 0},
                  "data": {"twin_version": "1", "augment": [], "augment_probability": 0.3, "renderer_version": None}}


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
        # what restores the run's settings: the fields it predates and every other that differs
        # (not those a run takes from its flags: a --config file may not set them)
        from_flags = {"model": RUN_MODEL_FIELDS, "data": RUN_DATA_FIELDS}
        restore = {}
        for section in dict.fromkeys([*ADDED_SETTINGS, "model", "train", "data"]):
            was, is_now = before.get(section), now.get(section)
            if isinstance(was, dict) and isinstance(is_now, dict):
                changed = {k: v for k, v in was.items()
                           if k in is_now and is_now[k] != v and k not in from_flags.get(section, ())}
                if changed:
                    restore[section] = changed
        hint = "" if not older else (f" (it predates {', '.join(k for s in older.values() for k in s)}: "
                                     f"add {json.dumps(restore)} to a --config file)")
        raise SystemExit(f"--resume: {path} was written by a run with other settings ({details}); "
                         f"resume with the original flags{hint}, or pass a new --out to start a new run")


def claim_run_folder(out: Path, resume: str | None, overwrite: bool, init: str | None = None) -> None:
    """Refuse a folder that holds another run's work, unless asked to continue or replace it. Call
    it holding the folder's :class:`RunLock`, so that a run still training is never touched.

    A new run needs an empty (or new) folder; a folder with a run in it (its ``config.json`` lists
    stages) takes ``--resume`` to continue it or ``--overwrite`` to replace it (its stage folders,
    config.json and summary.json are removed first, nothing else); a folder of other files is never
    trained in."""
    if resume is not None and overwrite:
        raise SystemExit("--resume continues a run and --overwrite replaces it: give one of them")
    if not out.is_dir():
        return
    entries = [p for p in out.iterdir() if p.name != LOCK_NAME and not p.name.startswith(".write-test-")]
    if not entries:
        return
    stages = run_stages(out)
    if stages is None:
        raise SystemExit(f"--out {out}: the folder is not empty and holds no training run ({len(entries)} entries, "
                         f"e.g. {sorted(p.name for p in entries)[0]}); pass a new or empty folder for the run")
    if resume is not None:
        # writes a kill cut short (files.atomic_write's temporary names): a checkpoint, a stage's model
        for leftover in [*out.glob("*/checkpoints/.*.tmp"), *out.glob("*/.*.tmp")]:
            leftover.unlink(missing_ok=True)
        return
    state = "a finished run" if (out / "summary.json").is_file() else "an unfinished run"
    if not overwrite:
        raise SystemExit(f"--out {out}: holds {state} (stages {', '.join(stages)}); continue it with --resume last, "
                         "pass another --out, or pass --overwrite to replace it")
    if init is not None and Path(init).resolve().is_relative_to(out.resolve()):
        raise SystemExit(f"--overwrite would delete --init {init}, which is inside --out {out}; pass another --out")
    for name in [*stages, *RUN_FILES]:
        target = out / name
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()


def run_stages(out: Path) -> list[str] | None:
    """The stages a run folder's config.json lists; None when it is not a run's (no list of known
    stage names)."""
    from .config import STAGES

    try:
        stages = json.loads((out / "config.json").read_text()).get("stages")
    except (OSError, ValueError, AttributeError):
        return None
    if not isinstance(stages, list) or not stages or not all(stage in STAGES for stage in stages):
        return None
    return [str(stage) for stage in stages]


class RunLock:
    """``OUT/.lock``, created exclusively, naming the process and host that train in the folder.

    A second run on the folder is refused with who holds it. A lock left by a process that is gone
    (killed on this host) is taken over; a lock from another host is left for a person to judge."""

    def __init__(self, out: Path) -> None:
        self.path = out / LOCK_NAME
        self.held = False

    def __enter__(self) -> RunLock:
        me = {"pid": os.getpid(), "host": socket.gethostname(),
              "since": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = self._holder()
                if holder.get("host") == me["host"] and not _alive(holder.get("pid")):
                    self.path.unlink(missing_ok=True)  # its process is gone: a stale lock
                    continue
                raise SystemExit(
                    f"--out {self.path.parent}: another run trains in this folder (pid {holder.get('pid', '?')} on "
                    f"{holder.get('host', '?')}, since {holder.get('since', '?')}); wait for it or stop it, or pass "
                    f"another --out. If no run is there (its machine went down), delete {self.path}") from None
            with os.fdopen(fd, "w") as file:
                json.dump(me, file)
            self.held = True
            return self
        raise SystemExit(f"--out {self.path.parent}: cannot take the lock {self.path}; delete it if no run is there")

    def _holder(self) -> dict[str, Any]:
        try:
            holder = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        return holder if isinstance(holder, dict) else {}

    def __exit__(self, *exc: object) -> None:
        if self.held and self._holder().get("pid") == os.getpid():  # never another run's lock
            self.path.unlink(missing_ok=True)
        self.held = False


def _alive(pid: Any) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def check_checkpoint(path: str) -> None:
    """Read a ``--resume`` checkpoint safely (``weights_only``) before anything is written, so a
    file that is not a Lightning checkpoint, or one that would need unpickling, is refused cleanly."""
    import torch

    if not Path(path).is_file():
        raise SystemExit(f"--resume {path}: no such checkpoint; pass 'last' or the path of a .ckpt file")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # UnpicklingError, RuntimeError (not a zip), EOFError (truncated), ...
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise SystemExit(f"--resume {path}: not a checkpoint that can be read safely ({type(error).__name__}: "
                         f"{reason[:200]}); pass 'last' or a .ckpt written by this training") from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise SystemExit(f"--resume {path}: not a Lightning training checkpoint (no state_dict); pass 'last' or a "
                         ".ckpt from OUT/<stage>/checkpoints/")


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
