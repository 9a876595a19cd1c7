"""A model's card: the ``README.md`` beside its weights, with the Hugging Face Hub's YAML front matter.

The Hub reads a model repository's ``README.md``: a YAML block between ``---`` lines (the library, the
license, tags, the datasets, the metrics) and then Markdown for people. :func:`model_card` writes both
from what a saved model knows about itself (its config and metadata); ``save_pretrained`` puts it in
every model folder, and the release script (``scripts/release_checkpoint.py``) gives it the body of a
released model's card (training command, device, held-out figures).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .config import ModelConfig

__all__ = ["CARD_NAME", "LIBRARY", "LICENSE", "front_matter", "model_card"]

CARD_NAME = "README.md"
LIBRARY = "causal-vqvae"
LICENSE = "apache-2.0"  # the project's license (pyproject.toml), as the Hub spells it
# The data a model is for, as tags and dataset names on the Hub.
DATASETS = {"dsprites": "dsprites", "shapes3d": "3dshapes", "celeba": "celeba"}
# Validation metrics recorded in a model's metadata, by the name the Hub's card gives them.
METRICS = {"val/psnr": ("psnr", "reconstruction PSNR (dB)"),
           "val/retrieval_transition_acc": ("accuracy", "action retrieval by transition"),
           "val/retrieval_head_acc": ("accuracy", "action retrieval by the head")}


def front_matter(config: ModelConfig, metadata: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The card's YAML metadata: library, license, pipeline, tags, datasets and metrics."""
    dataset = DATASETS.get(config.dataset)
    tags = [LIBRARY, "vq-vae", "causal-representation-learning", "image-editing", "pytorch"]
    if dataset:
        tags.append(dataset)
    val = _validation(metadata)
    data = {"library_name": LIBRARY, "license": LICENSE, "pipeline_tag": "image-to-image", "tags": tags}
    if dataset:
        data["datasets"] = [dataset]
    data["metrics"] = sorted({name for key, (name, _) in METRICS.items() if key in val}) or ["psnr", "accuracy"]
    return data


def model_card(config: ModelConfig, metadata: Mapping[str, Any] | None = None, body: str | None = None) -> str:
    """``README.md`` for a model folder: :func:`front_matter` as YAML, then ``body`` (default: what
    the model is, how to load it and its recorded validation figures)."""
    import yaml  # imported here: saving a model is the only path that needs it

    header = yaml.safe_dump(front_matter(config, metadata), sort_keys=False, allow_unicode=True)
    return f"---\n{header}---\n\n{(body if body is not None else _body(config, metadata or {})).strip()}\n"


def _validation(metadata: Mapping[str, Any] | None) -> dict[str, float]:
    """The numeric validation figures of ``metadata["summary"]["val"]``; {} where there are none."""
    summary = (metadata or {}).get("summary")
    val = summary.get("val") if isinstance(summary, Mapping) else None
    if not isinstance(val, Mapping):
        return {}
    return {k: float(v) for k, v in val.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def _body(config: ModelConfig, metadata: Mapping[str, Any]) -> str:
    data = metadata.get("data") or config.dataset or "its training data"
    actions = ", ".join(config.action_names) if config.action_names else f"{config.num_actions} actions"
    parameters = metadata.get("parameters")
    size = f", {parameters:,} parameters" if isinstance(parameters, int) else ""
    lines = [
        f"# CausalVQVAE for {data}",
        "",
        f"A `CausalVQVAE` ({config.latent_layout} layout{size}) that edits an image of {data} by causal "
        f"intervention: one factor moved one step ({actions}), and tells which action turned one image "
        "into another.",
        "",
        "```python",
        "from causal_vqvae import load, edit",
        'model = load("THIS_FOLDER_OR_HUB_ID")',
        'edited = edit("image.png", "' + (config.action_names[0] if config.action_names else "0") + '", model)',
        "```",
    ]
    val = _validation(metadata)
    rows = [(label, value) for key, (_, label) in METRICS.items() if (value := val.get(key)) is not None]
    if rows:
        lines += ["", "## Validation at the end of training", "", "| metric | value |", "|---|---|"]
        lines += [f"| {label} | {value:.1f} |" if "PSNR" in label else f"| {label} | {100 * value:.1f}% |"
                  for label, value in rows]
    facts = [f"{key}: {metadata[key]}" for key in ("stage", "steps", "device", "seed") if key in metadata]
    if facts:
        lines += ["", "Trained: " + "; ".join(facts) + "."]
    return "\n".join(lines)
