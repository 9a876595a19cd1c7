"""Where a model name points: a model folder, a training run's folder, a released model or a model
on the Hugging Face Hub.

``resolve_model("runs/mine")`` gives ``runs/mine/causal`` (the run's final stage),
``resolve_model("shapes3d_twin")`` the released model in ``checkpoints/`` of the checkout, a model
folder (``config.json`` + ``model.safetensors``) itself, and a Hub id (``owner/name``, when no such
local path exists) the model's folder in the Hub's local cache: taken from the cache first, so it
works offline, and downloaded only when it is not there (needs the optional ``huggingface_hub``:
``pip install "causal-vqvae[hub]"``; ``HF_HUB_OFFLINE=1`` forbids the download). No torch.
"""

from __future__ import annotations

import difflib
import json
import os
import re
from pathlib import Path

__all__ = ["CHECKPOINTS", "HUB_FILES", "MODEL_FILES", "RELEASED", "RELEASED_NAMES", "resolve_model"]

CHECKPOINTS = Path(__file__).resolve().parents[1] / "checkpoints"
# Released models by name (folders under checkpoints/ of a checkout); a dataset's name picks its model.
RELEASED = {"shapes3d_twin": "shapes3d_twin", "dsprites_twin": "dsprites_twin",
            "shapes3d": "shapes3d_twin", "dsprites": "dsprites_twin"}
RELEASED_NAMES = ("shapes3d_twin", "dsprites_twin")
MODEL_FILES = ("config.json", "model.safetensors")
HUB_FILES = (*MODEL_FILES, "metadata.json", "README.md")  # what is fetched of a Hub repository
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")  # owner/name, as the Hub spells repository ids
HUB_EXTRA = 'pip install "causal-vqvae[hub]"'
_KINDS = ("a model folder (config.json and model.safetensors, as save_pretrained writes them), a training run's "
          "folder, a released name (" + ", ".join(RELEASED_NAMES) + ") or a Hugging Face Hub id (owner/name)")


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
    if HUB_ID.match(text):
        parent = path.parent
        if parent.is_dir():  # a folder here that lacks the child: a mistyped local path, not a Hub id
            close = difflib.get_close_matches(path.name, [p.name for p in parent.iterdir() if p.is_dir()], n=2)
            hint = f" (did you mean {' or '.join(str(parent / c) for c in close)}?)" if close else ""
            raise FileNotFoundError(f"no model at {text}: {parent} has no folder {path.name!r}{hint}; give {_KINDS}")
        return _from_hub(text)
    close = difflib.get_close_matches(text, list(RELEASED), n=2)
    hint = f" (did you mean {' or '.join(close)}?)" if close else ""
    raise FileNotFoundError(f"no model at {text}: the path does not exist and no released model has that "
                            f"name{hint}; give {_KINDS}")


def _from_hub(repo_id: str) -> Path:
    """The Hub model ``repo_id``'s folder in the local cache, downloaded there if it is missing and
    downloads are allowed."""
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.constants import HF_HUB_OFFLINE
    except ImportError:
        raise FileNotFoundError(f"no model at {repo_id}: no such folder here, and reading it as a Hugging Face "
                                f"Hub id needs huggingface_hub ({HUB_EXTRA}); or give {_KINDS}") from None
    try:
        folder = Path(snapshot_download(repo_id, allow_patterns=list(HUB_FILES), local_files_only=True))
    except (OSError, ValueError) as cached_error:
        if HF_HUB_OFFLINE:
            raise FileNotFoundError(
                f"no model at {repo_id}: no such folder here, and the Hugging Face Hub model {repo_id!r} is not in "
                f"the local cache while HF_HUB_OFFLINE is set; download it once online, or give {_KINDS}"
            ) from cached_error
        try:
            folder = Path(snapshot_download(repo_id, allow_patterns=list(HUB_FILES)))
        except Exception as error:  # the Hub's HTTP, network and authorisation errors alike
            raise FileNotFoundError(
                f"no model at {repo_id}: no such folder here, the Hugging Face Hub model {repo_id!r} is not in the "
                f"local cache, and downloading it failed ({type(error).__name__}: "
                f"{(str(error).strip().splitlines() or [''])[0]}); "
                f"check the id and the network, or give {_KINDS}") from None
    if not _is_model(folder):
        missing = " and ".join(name for name in MODEL_FILES if not (folder / name).is_file())
        raise FileNotFoundError(f"the Hugging Face Hub repository {repo_id!r} holds no causal_vqvae model: {missing} "
                                f"missing (push one with CausalVQVAE.push_to_hub)")
    return folder


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
                                f"{' and '.join(MODEL_FILES)}, as written by save_pretrained: copy the whole "
                                "folder again, or save the model again")
    final = run / str(stages[-1])
    if _is_model(final):
        return final
    done = [str(stage) for stage in stages if _is_model(run / str(stage))]
    finished = f"; its finished stages: {', '.join(done)} (e.g. give {run / done[-1]})" if done else ""
    raise FileNotFoundError(f"no model at {run} yet: the run's final stage, {stages[-1]}, has saved no model "
                            f"(still training, or stopped: continue with train --resume last --out {run})"
                            f"{finished}")
