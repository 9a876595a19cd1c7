"""Named starting configurations of a run (``--preset``) and the ``--config`` file that overrides
them: ``{"model": {...}, "train": {...}, "data": {...}}`` in JSON or YAML."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..validation import SettingsError, check_settings, suggest

__all__ = ["PRESETS", "read_overrides"]

PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    # The design's model: grid 8x8 nodes, 64 codes of dim 128 in one codebook.
    "default": {"model": {}, "train": {}, "data": {}},
    # Two CPU cores, a few minutes: a narrower autoencoder, small transition, short stages. Graph
    # logits start at 2 rather than 5: Adam moves a logit ~lr per step, so in a short run logits
    # that start at 5 never cross the evaluation threshold and the graph stays dense. The causal
    # stage trains on a pool of 8,192 encoded pairs (no rendering or encoding per step) for 3,000
    # steps at lr 3e-3 (on one autoencoder: 51.7% of 300 dSprites test pairs edited exactly at
    # 2,400 steps, against 27.7% at 1e-3 and 31.0% for 900 steps; 3,000 steps edit 61-64% in three
    # seeds and take under 4 minutes with the autoencoder). Parents are not budgeted
    # (adjacency_budget 63: the graph still keeps about a third of them): with 4, no node saw enough
    # of a sprite to rotate or reshape it, and orientation edits were exact 7% of the time against
    # 27%. The equations use relative positions (the same weights in every cell) and read a 5 x 5
    # window of cells through an MLP before one attention layer (transition_window): with two
    # attention layers alone they could not tell which way a sprite turns, and 64% of one
    # autoencoder's edits were exact; with the window, 87%, orientation 86% against 14%, in the
    # same time. The retrieval head trains at 1e-3 (causal_head_lr): at the transition's 3e-3 its
    # hidden units died in one seed of three. All measured in experiments/demo_edits/.
    "cpu-small": {
        "model": {"hidden_dims": [32, 64, 64], "num_res_blocks": 1, "norm_groups": 8, "code_dim": 32,
                  "codebook_size": 32, "transition_dim": 64, "transition_layers": 1, "transition_heads": 4,
                  "target_head_dim": 32, "target_context_layers": 0, "retrieval_dim": 64,
                  "retrieval_layers": 1, "retrieval_heads": 4, "adjacency_init_logit": 2.0,
                  "target_init_logit": 2.0, "dual_lr": 0.05, "adjacency_budget": 63.0,
                  "transition_position": "relative", "transition_window": 5},
        "train": {"vqvae_steps": 600, "causal_steps": 3000, "warmup_steps": 20, "val_every": 600,
                  "vqvae_lr": 2e-3, "causal_lr": 3e-3, "causal_head_lr": 1e-3, "code_pool": 8192},
        "data": {"batch_size": 32, "val_length": 256},
    },
    # One GPU, minutes: a model small enough to ship (about 2.25M parameters, about 9 MB of float32
    # weights), with 256 codes rather than the design's 64, and the cpu-small graph settings for the
    # same reason as there. On 3D Shapes it retrieved better than the default preset (96.2% against
    # 89.9% by the head: benchmarks/results/h100/); on dSprites more codes make the codes less local
    # (experiments/dsprites_code_locality/). The convolutional retrieval head is 64
    # wide: the released models' head (benchmarks/results/retrieval_head_cpu/); 128 would pass the
    # 10 MB release limit.
    "small": {
        "model": {"hidden_dims": [64, 128, 128], "num_res_blocks": 1, "code_dim": 64, "codebook_size": 256,
                  "transition_dim": 128, "transition_layers": 2, "transition_heads": 4, "target_head_dim": 64,
                  "retrieval_dim": 64, "retrieval_layers": 2, "retrieval_heads": 4, "adjacency_init_logit": 2.0,
                  "target_init_logit": 2.0, "dual_lr": 0.05},
        "train": {"vqvae_steps": 4000, "causal_steps": 4000, "val_every": 500, "vqvae_lr": 2e-3,
                  "causal_lr": 1e-3},
        "data": {"batch_size": 128},
    },
}


# Model settings a run takes from its data and flags, never from a --config file.
RUN_MODEL_FIELDS = ("in_channels", "dataset", "num_actions", "action_names", "seed")
# Data settings a run takes from its flags (--data, --data-root, --seed) or sets itself.
RUN_DATA_FIELDS = ("dataset", "data_root", "seed", "mode")
SECTIONS = ("model", "train", "data")


def read_overrides(paths: str | os.PathLike | Sequence[str | os.PathLike] | None,
                   origins: dict[str, list[str]] | None = None) -> dict[str, dict[str, Any]]:
    """The sections of ``--config`` files (JSON, or YAML by its suffix), each checked against the
    configuration it overrides (:func:`~causal_vqvae.validation.check_settings`: known keys, with
    close ones suggested, and declared types). Several files are merged key by key in order, so a
    later file overrides an earlier one's keys and keeps the rest (``--config window.json --config
    renderer1.json``). A problem raises SettingsError (a ValueError) naming the file, the section and
    the key. Ranges are checked when the run builds its configurations, which name the files that set
    a section: ``origins``, when given, is filled with them (section -> the files, in order)."""
    if paths is None:
        return {}
    merged: dict[str, dict[str, Any]] = {}
    for path in [paths] if isinstance(paths, (str, os.PathLike)) else paths:
        for name, section in _read_file(path).items():
            merged.setdefault(name, {}).update(section)
            if origins is not None and section and str(path) not in origins.setdefault(name, []):
                origins[name].append(str(path))
    return merged


def _read_file(path: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """One ``--config`` file's checked sections (:func:`read_overrides`)."""
    from datamodules.datamodule import DataConfig

    from ..config import ModelConfig
    from .config import TrainConfig

    file = Path(path)
    if not file.is_file():
        raise SettingsError(f"--config {file}: no such file" if not file.exists()
                            else f"--config {file}: not a file; pass a JSON or YAML file")
    try:
        text = file.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise SettingsError(f"--config {file}: not a text file; pass a JSON or YAML file") from None
    if file.suffix in (".yaml", ".yml"):
        import yaml

        try:
            data = yaml.load(text, Loader=_yaml_loader())
        except yaml.YAMLError as error:
            mark = getattr(error, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
            problem = getattr(error, "problem", None) or str(error).splitlines()[0]
            raise SettingsError(f"--config {file}: not valid YAML{where}: {problem}") from None
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            hint = "" if file.suffix == ".json" else " (name a YAML file .yaml or .yml)"
            raise SettingsError(f"--config {file}: not valid JSON at line {error.lineno}, column {error.colno}: "
                                f"{error.msg}{hint}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise SettingsError(f"--config {file}: expected a mapping with the sections {', '.join(SECTIONS)}, "
                            f"got a {type(data).__name__}")
    for key in data:
        if key not in SECTIONS:
            raise SettingsError(f"--config {file}: unknown section {key!r}{suggest(str(key), SECTIONS)}; "
                                f"the sections are {', '.join(SECTIONS)}")
    checks = {"model": (ModelConfig, RUN_MODEL_FIELDS), "train": (TrainConfig, ()),
              "data": (DataConfig, RUN_DATA_FIELDS)}
    sections = {}
    for name, section in data.items():
        cls, exclude = checks[name]
        sections[name] = check_settings(cls, {} if section is None else section, f"--config {file}, {name}",
                                         exclude=exclude)
    return sections


def _yaml_loader():
    """PyYAML's safe loader that also reads ``3e-3`` as a number: YAML 1.1, which PyYAML follows,
    needs a dot (``3.0e-3``) and reads ``3e-3`` as text, which no one writing a learning rate means."""
    import re

    import yaml

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_implicit_resolver("tag:yaml.org,2002:float",
                                 re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"), list("-+0123456789"))
    return Loader
