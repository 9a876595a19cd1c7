"""Checkpoints without pickle: ``model.safetensors`` + ``config.json`` + ``metadata.json``.

:class:`PretrainedMixin` gives a model class ``save_pretrained`` and ``from_pretrained`` (the
pattern of Hugging Face's ``ModelHubMixin``): this module knows the file format and the config, not
the model, so :mod:`causal_vqvae.model` imports it and it imports nothing of the model. Every file
is written through :func:`causal_vqvae.files.atomic_write`, so a crash never leaves a half-written
file under the real name.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from .card import CARD_NAME, model_card
from .config import ModelConfig
from .files import atomic_write, json_text, write_text

__all__ = ["FORMAT_VERSION", "ARCHITECTURE", "TWIN_VERSION_KEY", "model_twin_version", "WEIGHTS_NAME", "CONFIG_NAME", "METADATA_NAME", "PretrainedMixin",
           "read_config", "save_pretrained", "load_pretrained"]

FORMAT_VERSION = 1
ARCHITECTURE = "CausalVQVAE"
WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
METADATA_NAME = "metadata.json"
# metadata.json key of the procedural twin's renderer version a model was trained on (written by training
# since there are versions; a model without it was trained on version "1", or on real files).
TWIN_VERSION_KEY = "twin_version"
_REDO = "save the model again with save_pretrained, or copy the whole directory again"


Model = TypeVar("Model", bound=nn.Module)
# metadata.json keys save_pretrained writes itself (extra_metadata may not set them).
RESERVED_METADATA = ("format", "architecture", "torch_version", "parameters")


def save_pretrained(
    model: nn.Module, directory: str | Path, extra_metadata: Mapping[str, Any] | None = None
) -> Path:
    """Write ``model`` to ``directory`` (created if needed): its weights, ``config.json``,
    ``metadata.json`` and a ``README.md`` model card with the Hugging Face Hub's front matter
    (:mod:`causal_vqvae.card`); returns the directory."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    config = {"format": FORMAT_VERSION, "architecture": ARCHITECTURE, **model.config.to_dict()}
    metadata = {
        "format": FORMAT_VERSION,
        "architecture": ARCHITECTURE,
        "torch_version": torch.__version__,
        "parameters": sum(p.numel() for p in model.parameters()),
    }
    clash = sorted(set(metadata) & set(extra_metadata or {}))
    if clash:
        raise ValueError(f"extra_metadata may not set the reserved key(s) {clash}")
    metadata.update(extra_metadata or {})
    # Serialise everything before writing anything: bad metadata must not leave a partial save.
    config_text = json_text(config, "the config")
    metadata_text = json_text(metadata, "extra_metadata")
    card_text = model_card(model.config, metadata)
    atomic_write(
        directory / WEIGHTS_NAME,
        lambda temp: save_file(tensors, temp, metadata={"format": str(FORMAT_VERSION), "architecture": ARCHITECTURE}),
    )
    write_text(directory / CONFIG_NAME, config_text)
    write_text(directory / METADATA_NAME, metadata_text)
    write_text(directory / CARD_NAME, card_text)
    return directory


def read_config(directory: str | Path, expect: Mapping[str, Any] | None = None) -> ModelConfig:
    """Read and check ``config.json``: format, architecture, and every ``expect`` entry
    (e.g. ``{"dataset": "dsprites", "latent_layout": "tokens"}``)."""
    path = Path(directory) / CONFIG_NAME
    if not path.is_file():
        raise FileNotFoundError(f"no {CONFIG_NAME} in {directory}; is this a directory written by save_pretrained?")
    try:
        raw = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"cannot read {path}: not valid JSON ({error}); {_REDO}") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a JSON object of settings, got {type(raw).__name__}; {_REDO}")
    found_format = raw.pop("format", None)
    if found_format != FORMAT_VERSION:
        raise ValueError(f"{path}: checkpoint format {found_format!r}, but this code reads format {FORMAT_VERSION}")
    architecture = raw.pop("architecture", None)
    if architecture != ARCHITECTURE:
        raise ValueError(f"{path}: architecture is {architecture!r}, expected {ARCHITECTURE!r}")
    # Saved before the retrieval head could be chosen: those models all have the transformer head.
    raw.setdefault("retrieval_head", "transformer")
    # Saved before an intervened node had to change its code: its equations may keep it.
    raw.setdefault("intervention", "resample")
    # Saved before an intervened node's code was read with a threshold: the most likely code.
    raw.setdefault("keep_threshold", None)
    # Saved before the kept nodes' weight in the equation term: the plain cross-entropy (it only
    # matters to training; fine-tuning such a model keeps how it was trained unless told otherwise).
    raw.setdefault("kept_equation_weight", 1.0)
    defaults = ModelConfig().to_dict()
    for key, expected in (expect or {}).items():
        if key == "architecture":
            found = architecture
        elif key in defaults:
            found = raw.get(key, defaults[key])
        else:
            raise ValueError(f"expect has {key!r}, which is not a config key; known keys: {sorted(defaults)}")
        expected_json = json.loads(json.dumps(list(expected) if isinstance(expected, tuple) else expected))
        if found != expected_json:
            advice = (f"train one with python train.py --data {expected}" if key == "dataset"
                      else f"load a model saved with {key}={expected!r}")
            raise ValueError(f"{path}: the model was saved with {key}={found!r}, but {key}={expected!r} is "
                             f"needed here; {advice}, or drop that expectation")
    return ModelConfig.from_dict(raw, where=str(path))


def load_pretrained(
    model_class: type[Model], directory: str | Path, map_location: str | torch.device = "cpu",
    expect: Mapping[str, Any] | None = None,
) -> Model:
    """Rebuild the model of ``directory`` as ``model_class(config)``; refuses a config that differs
    from ``expect`` and any missing or unexpected tensor. The model is returned in eval mode."""
    directory = Path(directory)
    config = read_config(directory, expect)
    weights = directory / WEIGHTS_NAME
    if not weights.is_file():
        raise FileNotFoundError(f"no {WEIGHTS_NAME} in {directory}")
    try:
        state = load_file(str(weights), device=str(torch.device(map_location)))
    except SafetensorError as error:
        raise ValueError(f"cannot read {weights}: it is truncated or corrupt ({error}); {_REDO}") from None
    model = model_class(config)
    wanted = set(model.state_dict())
    missing, unexpected = sorted(wanted - set(state)), sorted(set(state) - wanted)
    if missing or unexpected:
        raise ValueError(
            f"{weights} does not match its config ({config.latent_layout} layout): "
            f"missing tensors {missing}, unexpected tensors {unexpected}"
        )
    check_weights(state, model.state_dict(), weights, config)
    model.load_state_dict(state, strict=True)
    model.pretrained_metadata = read_metadata(directory)
    return model.to(map_location).eval()


def read_metadata(directory: str | Path) -> dict[str, Any]:
    """``metadata.json`` of a model folder (what it was trained on, how, its calibration), or {}
    when it is missing or unreadable: nothing a model needs to run is in it."""
    try:
        metadata = json.loads((Path(directory) / METADATA_NAME).read_text())
    except (OSError, ValueError):
        return {}
    return metadata if isinstance(metadata, dict) else {}


def check_weights(state: Mapping[str, torch.Tensor], wanted: Mapping[str, torch.Tensor], path: Path,
                  config: ModelConfig) -> None:
    """Refuse weights that would load into a broken model: a tensor whose shape differs from what
    ``config`` builds (named, with both shapes and the config that the file fits), or a floating
    tensor with NaN or infinite values (named, with how many)."""
    for name, tensor in state.items():
        if tensor.shape != wanted[name].shape:
            raise ValueError(
                f"{path}: tensor {name} has shape {tuple(tensor.shape)}, but its config.json builds "
                f"{tuple(wanted[name].shape)}; the weights and config.json come from different models "
                f"(the weights fit {_fitting_config(state, config)}); save both with save_pretrained again")
    for name, tensor in state.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            bad = int((~torch.isfinite(tensor)).sum())
            raise ValueError(f"{path}: tensor {name} holds {bad} NaN or infinite value(s) of {tensor.numel()}; "
                             f"the weights are damaged (a diverged training step?); {_REDO}")


def _fitting_config(state: Mapping[str, torch.Tensor], config: ModelConfig) -> str:
    """The config entries that the weights' shapes show, where they differ from ``config``."""
    found = {}
    codebook = state.get("quantizer.embedding")
    if codebook is not None and codebook.ndim >= 2:  # (codebooks, codes, dim) or (codes, dim)
        found["codebook_size"], found["code_dim"] = int(codebook.shape[-2]), int(codebook.shape[-1])
    actions = state.get("transition_net.action_embed.weight")
    if actions is not None:
        found["num_actions"] = int(actions.shape[0])
        found["transition_dim"] = int(actions.shape[1])
    differ = {k: v for k, v in found.items() if getattr(config, k, None) != v}
    return ", ".join(f"{k}={v}" for k, v in differ.items()) if differ else "another architecture"


class PretrainedMixin:
    """``save_pretrained`` and ``from_pretrained`` for an ``nn.Module`` built from a
    :class:`ModelConfig` held as ``self.config``."""

    config: ModelConfig
    # metadata.json of the folder the model was loaded from ({} for a model built in Python): what it
    # was trained on and how, and its calibration (causal_vqvae.familiarity).
    pretrained_metadata: dict[str, Any] = {}  # noqa: RUF012 - replaced, never changed in place

    def save_pretrained(self, directory: str | Path, extra_metadata: Mapping[str, Any] | None = None) -> Path:
        """Write this model to ``directory`` (created if needed); returns the directory."""
        return save_pretrained(self, directory, extra_metadata)

    def push_to_hub(self, repo_id: str, *, token: str | None = None, private: bool | None = None,
                    commit_message: str = "Upload a causal_vqvae model",
                    extra_metadata: Mapping[str, Any] | None = None) -> str:
        """Upload this model to the Hugging Face Hub repository ``repo_id`` (``owner/name``, made if
        it does not exist): the files of :meth:`save_pretrained`, its ``README.md`` model card
        included. Needs the optional ``huggingface_hub`` (``pip install "causal-vqvae[hub]"``) and a
        token with write access (``token``, else the one ``hf auth login`` stored). Returns the
        commit's URL. ``load(repo_id)`` reads it back, offline from the Hub's cache once fetched."""
        try:
            from huggingface_hub import HfApi
        except ImportError:
            raise ImportError('push_to_hub needs huggingface_hub: pip install "causal-vqvae[hub]"') from None
        api = HfApi(token=token)
        api.create_repo(repo_id, private=private, exist_ok=True)
        # What the model was loaded with (training record, calibration) travels with it.
        metadata = {k: v for k, v in self.pretrained_metadata.items() if k not in RESERVED_METADATA}
        metadata.update(extra_metadata or {})
        with tempfile.TemporaryDirectory(prefix="causal_vqvae_hub_") as folder:
            self.save_pretrained(folder, metadata)
            commit = api.upload_folder(repo_id=repo_id, folder_path=folder, commit_message=commit_message)
        return str(getattr(commit, "commit_url", commit))

    @classmethod
    def from_pretrained(
        cls: type[Model], directory: str | Path, map_location: str | torch.device = "cpu",
        expect: Mapping[str, Any] | None = None,
    ) -> Model:
        """The model saved in ``directory``, in eval mode; ``expect``: config entries it must have
        (e.g. ``{"dataset": "dsprites"}``)."""
        return load_pretrained(cls, directory, map_location=map_location, expect=expect)


def model_twin_version(model) -> str | None:
    """The twin version a loaded model's ``metadata.json`` records (:data:`TWIN_VERSION_KEY`), or None
    (a model saved before twin versions, built in Python, or trained on real files)."""
    value = (getattr(model, "pretrained_metadata", None) or {}).get(TWIN_VERSION_KEY)
    return None if value is None else str(value)
