"""The supervised baseline of action retrieval: :class:`PairCNN` trained on the twin's training
pairs with the causal model's budget (read from its run by :func:`run_budget`), cached, and scored
by the same :func:`~causal_vqvae.eval.metrics.accuracy_report` as the methods."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from datamodules.sources import DEFAULT_TWIN_VERSION

from .data import batches
from .factor_classifier import ConvEncoder, fit_steps, read_cached, write_cached
from .metrics import Timer, accuracy_report

__all__ = ["BASELINE_VERSION", "PairCNN", "BaselineSettings", "RunBudget", "run_budget", "load_or_train_baseline",
           "score_baseline"]

BASELINE_VERSION = "1"  # bump when PairCNN or its training changes (part of the cache key)


class PairCNN(nn.Module):
    """Supervised action retrieval: x and x' stacked on channels, a :class:`ConvEncoder`, and a
    linear layer to A action logits. Stacking, rather than a siamese encoder and a difference of
    features, lets the very first convolution compare the two images pixel by pixel, so small
    changes (a one-pixel shift, a 9-degree turn of a small sprite) are not lost before the
    comparison."""

    def __init__(self, in_channels: int, num_actions: int, width: int = 32, features: int = 256) -> None:
        super().__init__()
        self.encoder = ConvEncoder(2 * in_channels, width, features)
        self.head = nn.Linear(features, num_actions)

    def forward(self, x: torch.Tensor, x_next: torch.Tensor) -> torch.Tensor:
        """Images ``(B, C, 64, 64)`` twice -> ``(B, A)`` logits."""
        return self.head(self.encoder(torch.cat([x, x_next], 1)))


@dataclass(frozen=True)
class BaselineSettings:
    """How :class:`PairCNN` is trained; every field is part of its cache key.

    ``steps`` AdamW steps (``lr``, ``weight_decay``; linear warm-up over ``warmup`` steps then
    cosine decay to 0) on ``batch_size`` TRAIN pairs each: items ``step * batch_size + i`` of
    ``TransitionPairs(space, "train", seed=seed, frequency=frequency)``, the pair distribution the
    causal model trained on, rendered by the twin. Weights are initialised from ``seed``.
    """

    dataset: str
    steps: int
    batch_size: int
    frequency: str | dict = "balanced"
    seed: int = 0
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup: int = 100
    width: int = 32
    features: int = 256
    version: str = BASELINE_VERSION
    twin_version: str = DEFAULT_TWIN_VERSION  # the twin's renderer version; "1" is left out of the cache key

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError(f"the baseline needs positive steps and batch, got {self.steps} and {self.batch_size}")


@dataclass(frozen=True)
class RunBudget:
    """What the causal model was trained with, from its run's resolved ``config.json``."""

    steps: int | None = None  # train.causal_steps
    batch_size: int | None = None  # data.batch_size x devices x nodes: pairs per optimiser step
    frequency: str | dict = "balanced"  # data.frequency
    config: str | None = None  # the file read, or None where there is none


def run_budget(model_dir: str | Path) -> RunBudget:
    """Read ``<model_dir>/../config.json`` (written by train.py beside the stage directories).

    Returns the causal stage's steps, its global batch (per-device ``batch_size`` times devices
    times nodes) and the pair frequency; fields the file lacks (or a missing file) stay None /
    "balanced". A file that is not a train.py config is an error.
    """
    path = Path(model_dir).resolve().parent / "config.json"
    if not path.is_file():
        return RunBudget()
    try:
        config = json.loads(path.read_text())
        train, data = config.get("train", {}), config.get("data", {})
        devices = config.get("devices", {}).get("devices", 1) * config.get("num_nodes", 1)
    except (json.JSONDecodeError, AttributeError) as error:
        raise ValueError(f"{path} is not a train.py run config ({error}); move it or pass --baseline-steps "
                         "and --baseline-batch") from None
    steps = train.get("causal_steps") or None
    batch = data.get("batch_size")
    return RunBudget(steps=steps, batch_size=None if batch is None else int(batch) * int(devices),
                     frequency=data.get("frequency") or "balanced", config=str(path))


def _train_baseline(dm, settings: BaselineSettings, device: torch.device, progress: bool) -> tuple[PairCNN, dict]:
    from datamodules.pairs import TransitionPairs

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(settings.seed)
        net = PairCNN(dm.channels, len(dm.actions), settings.width, settings.features).to(device)
    c = dm.config
    pairs = TransitionPairs(dm.space, "train", length=settings.steps * settings.batch_size, seed=settings.seed,
                            split_seed=c.split_seed, frequency=settings.frequency, fractions=c.fractions)
    size = settings.batch_size

    def batch_loss(step: int) -> torch.Tensor:
        raw = pairs.__getitems__(range(step * size, (step + 1) * size))
        b = dm.prepare_batch({k: v.to(device) for k, v in raw.items()})
        return F.cross_entropy(net(b["image"], b["image_next"]), b["action"])

    training = fit_steps(net, batch_loss, settings.steps, settings.lr, settings.weight_decay, settings.warmup,
                         f"supervised CNN baseline ({settings.dataset})", progress)
    return net, {"steps": settings.steps, "batch": size, "pairs": settings.steps * size, **training}


def load_or_train_baseline(
    dm, settings: BaselineSettings, device: torch.device, cache_root: Path | None, progress: bool = True,
) -> tuple[PairCNN, dict[str, Any]]:
    """The trained :class:`PairCNN` of ``settings`` (eval mode) and its record (``settings``,
    ``training``: steps, batch, pairs, seconds, final loss; ``cached``, ``path``), loaded from
    ``cache_root`` when cached there, else trained and cached (``cache_root=None``: neither)."""
    given = getattr(getattr(dm, "config", None), "twin_version", settings.twin_version)
    if given != settings.twin_version:
        raise ValueError(f"baseline settings are for twin version {settings.twin_version!r}, the DataModule renders "
                         f"version {given!r}")
    if cache_root is not None:
        net = PairCNN(dm.channels, len(dm.actions), settings.width, settings.features)
        record = read_cached(cache_root, "supervised_cnn", asdict(settings), net)
        if record is not None:
            return net.to(device).eval(), record
    net, training = _train_baseline(dm, settings, device, progress)
    record = {"settings": asdict(settings), "training": training}
    path = None if cache_root is None else write_cached(cache_root, "supervised_cnn", asdict(settings), net, record)
    return net, {**record, "cached": False, "path": None if path is None else str(path)}


@torch.no_grad()
def score_baseline(net: PairCNN, dm, pairs: int, batch: int, device: torch.device) -> dict[str, Any]:
    """:func:`accuracy_report` of ``net`` (argmax) on test items 0..pairs-1, with ``seconds`` and
    ``pairs_per_s`` of its forward pass, timed as the methods are (after one warm-up batch)."""
    actions = dm.actions
    factor_names = [dm.space.names[f] for f in actions.factors]
    first = dm.prepare_batch({k: v.to(device) for k, v in next(batches(dm, "test", pairs, batch)).items()})
    net(first["image"], first["image_next"])
    timer = Timer(device)
    predicted, true = [], []
    for raw in batches(dm, "test", pairs, batch, "supervised CNN baseline, scoring"):
        b = dm.prepare_batch({k: v.to(device) for k, v in raw.items()})
        predicted.append(timer(net, b["image"], b["image_next"]).argmax(-1).cpu())
        true.append(b["action"].cpu())
    report = accuracy_report(torch.cat(predicted), torch.cat(true), len(actions), factor_names)
    report["seconds"] = timer.seconds
    report["pairs_per_s"] = report["n"] / timer.seconds if timer.seconds > 0 else None
    return report
