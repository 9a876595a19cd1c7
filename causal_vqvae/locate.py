"""Where a model name points: a model folder, a training run's folder, or a released model.

``resolve_model("runs/mine")`` gives ``runs/mine/causal`` (the run's final stage),
``resolve_model("shapes3d_twin")`` the released model in ``checkpoints/`` of the checkout, and a
model folder (``config.json`` + ``model.safetensors``) itself. Pure path logic: no torch.
"""

from __future__ import annotations

import difflib
import json
import os
from pathlib import Path

__all__ = ["CHECKPOINTS", "MODEL_FILES", "RELEASED", "RELEASED_NAMES", "resolve_model"]

CHECKPOINTS = Path(__file__).resolve().parents[1] / "checkpoints"
# Released models by name (folders under checkpoints/ of a checkout); a dataset's name picks its model.
RELEASED = {"shapes3d_twin": "shapes3d_twin", "dsprites_twin": "dsprites_twin",
            "shapes3d": "shapes3d_twin", "dsprites": "dsprites_twin"}
RELEASED_NAMES = ("shapes3d_twin", "dsprites_twin")
MODEL_FILES = ("config.json", "model.safetensors")
_KINDS = ("a model folder (config.json and model.safetensors, as save_pretrained writes them), a training run's "
          "folder or a released name (" + ", ".join(RELEASED_NAMES) + ")")


def _is_model(path: Path) -> bool:
    return all((path / name).is_file() for name in MODEL_FILES)


def resolve_model(name: str | os.PathLike) -> Path:
    """The model folder ``name`` stands for (raises FileNotFoundError saying what to give instead).

    A model folder is itself (a file inside it, its folder); a training run's folder (its
    ``config.json`` lists the run's ``stages``) gives its final stage's folder, refused while that
    stage has saved no model; a released name gives ``checkpoints/<name>``."""
    text = str(name)
    path = Path(text).expanduser()
    if path.is_file() and path.name in (*MODEL_FILES, "metadata.json"):
        path = path.parent
    if path.is_dir():
        if _is_model(path):
            return path
        if (path / "config.json").is_file():
            return _final_stage(path)
        missing = " and ".join(name for name in MODEL_FILES if not (path / name).is_file())
        raise FileNotFoundError(f"no model at {path}: {missing} missing (and it is not a training run's "
                                f"folder); give {_KINDS}")
    if text in RELEASED:
        released = CHECKPOINTS / RELEASED[text]
        if _is_model(released):
            return released
        raise FileNotFoundError(f"the released model {text!r} is not here ({released} is missing): the released "
                                "models live in checkpoints/ of a checkout of the repository; clone it, or give "
                                "a model folder")
    if path.exists():
        raise FileNotFoundError(f"no model at {path}: it is a file, not a model folder; give {_KINDS}")
    close = difflib.get_close_matches(text, list(RELEASED), n=2)
    hint = f" (did you mean {' or '.join(close)}?)" if close else ""
    raise FileNotFoundError(f"no model at {text}: the path does not exist and no released model has that "
                            f"name{hint}; give {_KINDS}")


def _final_stage(run: Path) -> Path:
    run_config = run / "config.json"
    try:
        stages = json.loads(run_config.read_text()).get("stages")
    except (OSError, ValueError, AttributeError) as error:
        raise FileNotFoundError(f"no model at {run}: its config.json is neither a model's nor a run's "
                                f"({error}); give a stage's folder, e.g. {run / 'causal'}") from None
    if not isinstance(stages, list) or not stages:
        missing = " and ".join(name for name in MODEL_FILES if not (run / name).is_file())
        raise FileNotFoundError(f"no model at {run}: {missing} missing; a model folder holds "
                                f"{' and '.join(MODEL_FILES)}, as written by save_pretrained")
    final = run / str(stages[-1])
    if _is_model(final):
        return final
    done = [str(stage) for stage in stages if _is_model(run / str(stage))]
    finished = f"; its finished stages: {', '.join(done)} (e.g. give {run / done[-1]})" if done else ""
    raise FileNotFoundError(f"no model at {run} yet: the run's final stage, {stages[-1]}, has saved no model "
                            f"(still training, or stopped: continue with train --resume last --out {run})"
                            f"{finished}")
