"""Held-out benchmark of a trained model on a procedural twin (dSprites or 3D Shapes).

    python -m causal_vqvae.bench --model DIR --data dsprites [--pairs 2000] [--batch 256] [--seed 0]
                                 [--device cpu|cuda] [--out results.json] [--no-cache]
                                 [--baseline-steps N] [--baseline-batch B] [--skip-baseline]
                                 [--classifier-steps N] [--classifier-batch B] [--skip-exactness]

On the first ``--pairs`` TEST pairs (x, a, x') of the twin (items 0..pairs-1, drawn with ``--seed``,
balanced over factors whatever the model was trained on), with the model in eval mode, under
``no_grad``, on one device, it measures:

- action retrieval by both methods ("transition", "head"): action accuracy, factor accuracy (the
  predicted action moves the right factor, ``id // 2`` equal), accuracy per factor of the true
  action, the A x A confusion matrix (rows true, columns predicted), and throughput in pairs/s
  (encode both images + retrieve, timed after one warm-up batch: ``perf_counter`` on the CPU, CUDA
  events + synchronize on a GPU);
- baselines scored by the same :func:`accuracy_report`: chance (a uniform random predictor, in
  expectation), a constant predictor (the most frequent action among the first ``--pairs`` TRAIN
  pairs), the oracle on the true factors (``ActionSpace.action_between``; must be 1.0), and a
  **supervised CNN** (:class:`PairCNN`) trained on the twin's TRAIN pairs with the causal model's
  budget (see :func:`run_budget`), timed like the methods;
- edit fidelity (a twin renders the true x'): ``edit(x, a)`` against x' (MSE and PSNR per image,
  averaged), with the reconstruction of x' and the unedited x as reference points, and the
  transition's code accuracy: predicted codes against ``encode_codes(x')`` (node accuracy and the
  fraction of pairs with every node right);
- **edit exactness**, judged by an independent factor classifier
  (:mod:`causal_vqvae.factor_classifier`, which defines a reading and the orientation rule): after
  one edit (the test pairs) and after k = 2 and 4 successive edits (:func:`evaluate_exactness`),
  with the exactness of the true renders and of their reconstructions as references. The figures
  count only if the classifier's held-out all-factors accuracy meets the 99.5% bar, which is
  printed and stored beside them.

It prints a table and writes, each atomically: the JSON; one confusion-matrix PNG per method and
for the supervised baseline (``<stem>_confusion_<name>.png``); ``<stem>_actions.png`` (every action
applied to held-out images beside the true targets, :func:`actions_image`); ``<stem>_graph.png``
(the learned graph, :func:`graph_image`). The supervised baseline and the factor classifier are
cached under ``$CAUSAL_VQVAE_CACHE/bench`` (``--no-cache``: neither read nor written). This module
is the benchmark harness, so it may import ``datamodules``; it never imports the CelebA module or
Hugging Face ``datasets``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import shlex
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from .factor_classifier import (
    ClassifierSettings,
    ConvEncoder,
    FactorClassifier,
    disturbance,
    exact_edits,
    fit_steps,
    load_or_train_classifier,
    read_cached,
    write_cached,
)
from . import io
from .code_pool import encode_pairs
from .io import atomic_write
from .monitoring import target_probabilities

__all__ = [
    "DATASETS",
    "METHODS",
    "SEQUENCE_STEPS",
    "BaselineSettings",
    "PairCNN",
    "accuracy_report",
    "action_sequences",
    "actions_image",
    "encode_pair_pools",
    "encode_pairs",
    "evaluate",
    "evaluate_exactness",
    "format_table",
    "graph_image",
    "load_or_train_baseline",
    "main",
    "run_budget",
    "score_baseline",
    "script_record",
]

METHODS = ("transition", "head")
DATASETS = ("dsprites", "shapes3d")
SEQUENCE_STEPS = (2, 4)  # successive edits judged besides the single edits of the test pairs
BASELINE_VERSION = "1"  # bump when PairCNN or its training changes (part of the cache key)


# ------------------------------------------------------------------------------------- scoring
def _as_numpy(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _ratio(num: float, den: float) -> float | None:
    return float(num / den) if den > 0 else None


def accuracy_report(pred: Any, true: Any, num_actions: int, factor_names: Sequence[str]) -> dict[str, Any]:
    """Score predicted action ids against true ones.

    ``pred``: ``(N,)`` predicted ids, or ``(N, A)`` rows of probabilities (a randomised predictor,
    scored in expectation); ``true``: ``(N,)`` ids in ``[0, A)``. Action ids are factor-major, minus
    then plus, so ``id // 2`` is the factor's position in ``factor_names`` (one name per actionable
    factor). Everything is read off the confusion matrix ``C`` (rows true, columns predicted):

    - ``action_accuracy``: trace(C) / N;
    - ``factor_accuracy``: the mass where predicted and true action move the same factor;
    - ``per_factor[name]``: ``count`` of pairs whose TRUE action moves that factor, and their
      ``action_accuracy`` / ``factor_accuracy`` (None where the count is 0);
    - ``confusion``: C as nested lists (ints for hard predictions).
    """
    true = _as_numpy(true).astype(np.int64).reshape(-1)
    pred = _as_numpy(pred)
    num_actions = int(num_actions)
    factor_names = [str(n) for n in factor_names]
    if num_actions < 1:
        raise ValueError(f"num_actions must be positive, got {num_actions}")
    if len(factor_names) != (num_actions + 1) // 2:
        raise ValueError(f"{num_actions} actions need {(num_actions + 1) // 2} factor names, got {len(factor_names)}")
    if true.size and (true.min() < 0 or true.max() >= num_actions):
        raise ValueError(f"true action ids must lie in [0, {num_actions})")
    n = true.shape[0]
    if pred.ndim == 2:
        if pred.shape != (n, num_actions):
            raise ValueError(f"probability rows must have shape ({n}, {num_actions}), got {pred.shape}")
        soft = pred.astype(np.float64)
        hard = False
    else:
        pred = pred.astype(np.int64).reshape(-1)
        if pred.shape[0] != n:
            raise ValueError(f"pred has {pred.shape[0]} entries, true has {n}")
        if pred.size and (pred.min() < 0 or pred.max() >= num_actions):
            raise ValueError(f"predicted action ids must lie in [0, {num_actions})")
        soft = np.zeros((n, num_actions), dtype=np.float64)
        soft[np.arange(n), pred] = 1.0
        hard = True
    confusion = np.zeros((num_actions, num_actions), dtype=np.float64)
    np.add.at(confusion, true, soft)  # row true[i] += prediction row i

    factor_of = np.arange(num_actions) // 2
    same_factor = factor_of[:, None] == factor_of[None, :]
    rows = confusion.sum(1)
    correct = np.diag(confusion)
    factor_correct = (confusion * same_factor).sum(1)
    per_factor = {}
    for f, name in enumerate(factor_names):
        members = factor_of == f
        count = rows[members].sum()
        per_factor[name] = {
            "count": round(count),
            "action_accuracy": _ratio(correct[members].sum(), count),
            "factor_accuracy": _ratio(factor_correct[members].sum(), count),
        }
    table = confusion.round().astype(np.int64).tolist() if hard else confusion.tolist()
    return {
        "n": int(n),
        "action_accuracy": _ratio(correct.sum(), n),
        "factor_accuracy": _ratio(factor_correct.sum(), n),
        "per_factor": per_factor,
        "confusion": table,
    }


def psnr(mse: torch.Tensor, floor: float = 1e-10) -> torch.Tensor:
    """PSNR in dB of images in [0, 1] from their per-image MSE (floored so it stays finite)."""
    return 10.0 * torch.log10(1.0 / mse.clamp_min(floor))


# ------------------------------------------------------------------------------------- timing
class _Timer:
    """Accumulates seconds of timed calls: CUDA events + synchronize on a GPU, else perf_counter."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.seconds = 0.0

    def __call__(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)``, its time added to ``seconds``."""
        if self.cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            torch.cuda.synchronize()
            start.record()
            out = fn(*args)
            end.record()
            torch.cuda.synchronize()
            self.seconds += start.elapsed_time(end) / 1000.0
            return out
        start = time.perf_counter()
        out = fn(*args)
        self.seconds += time.perf_counter() - start
        return out


# ------------------------------------------------------------------------------------- data
def _datamodule(name: str, pairs: int, batch: int, seed: int):
    """The DataModule of ``name`` on its procedural twin (never a real file: fidelity needs the
    twin's true renders), its test split holding exactly ``pairs`` pairs."""
    from datamodules.datamodule import (
        build_datamodule,  # the harness may import datamodules
    )

    if name not in DATASETS:
        raise ValueError(f"--data must be one of {DATASETS}, got {name!r}")
    dm = build_datamodule(name, batch_size=batch, test_length=pairs, train_length=pairs, seed=seed, num_workers=0)
    dm.source = dm.entry.twin()  # force the twin even if $CAUSAL_VQVAE_DATA_ROOT names a real file
    dm.setup()
    return dm


def _batches(dm, split: str, pairs: int, batch: int, desc: str | None = None):
    """Items 0..pairs-1 of ``split`` in batches; with ``desc``, behind a progress bar."""
    starts = range(0, pairs, batch)
    for start in starts if desc is None else tqdm(starts, desc=desc, leave=False, dynamic_ncols=True):
        yield dm._datasets[split].__getitems__(list(range(start, min(start + batch, pairs))))


def encode_pair_pools(
    model, data: str, train_pairs: int, test_pairs: int, seed: int, device: torch.device, batch: int,
    encode_batch: int = 500,
) -> tuple[Any, dict[str, torch.Tensor], dict[str, torch.Tensor], float]:
    """``(dm, train, test, seconds)``: the pools of the benchmark scripts that train on a frozen
    model's codes. ``train``: the codes of ``train_pairs`` training pairs,
    ``TransitionPairs(space, "train", seed=seed)``; ``test``: those of test items 0..test_pairs-1,
    the pairs the bench scores first (see :func:`encode_pairs`). ``dm`` is the dataset's DataModule
    (``batch`` per batch, no workers)."""
    from datamodules.datamodule import build_datamodule
    from datamodules.pairs import TransitionPairs

    dm = build_datamodule(data, batch_size=batch, num_workers=0)
    dm.setup()
    c = dm.config
    start = time.perf_counter()
    pool = TransitionPairs(dm.space, "train", length=train_pairs, seed=seed, split_seed=c.split_seed,
                           fractions=c.fractions)
    test = encode_pairs(model, dm, dm._datasets["test"], test_pairs, encode_batch, device)
    train = encode_pairs(model, dm, pool, train_pairs, encode_batch, device)
    seconds = time.perf_counter() - start
    print(f"encoded {train_pairs} training and {test_pairs} test pairs in {seconds:.0f} s", flush=True)
    return dm, train, test, seconds


def script_record(script: str, argv: Sequence[str] | None, args: argparse.Namespace, device: torch.device,
                  **fields: Any) -> dict[str, Any]:
    """The head of a benchmark script's JSON: its command line (``argv``, or this process's),
    settings (every flag but ``out``), device and torch version, then ``fields``."""
    return {
        "command": f"python {script} " + shlex.join(sys.argv[1:] if argv is None else argv),
        "settings": {k: v for k, v in vars(args).items() if k != "out"},
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__, **fields,
    }


def _check_model(model, dm, name: str) -> None:
    c = model.config
    actions = dm.actions
    if c.dataset and c.dataset != name:
        raise ValueError(f"the model was trained on {c.dataset!r}, not {name!r}")
    if c.num_actions != len(actions):
        raise ValueError(f"the model has {c.num_actions} actions, {name} has {len(actions)}")
    if c.action_names and tuple(c.action_names) != tuple(actions.names):
        raise ValueError(f"the model's actions {tuple(c.action_names)} differ from {name}'s {actions.names}")
    if c.in_channels != dm.channels:
        raise ValueError(f"the model takes {c.in_channels} channels, the {name} twin has {dm.channels}")


# ------------------------------------------------------------------------------------- supervised baseline
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
    first = dm.prepare_batch({k: v.to(device) for k, v in next(_batches(dm, "test", pairs, batch)).items()})
    net(first["image"], first["image_next"])
    timer = _Timer(device)
    predicted, true = [], []
    for raw in _batches(dm, "test", pairs, batch, "supervised CNN baseline, scoring"):
        b = dm.prepare_batch({k: v.to(device) for k, v in raw.items()})
        predicted.append(timer(net, b["image"], b["image_next"]).argmax(-1).cpu())
        true.append(b["action"].cpu())
    report = accuracy_report(torch.cat(predicted), torch.cat(true), len(actions), factor_names)
    report["seconds"] = timer.seconds
    report["pairs_per_s"] = report["n"] / timer.seconds if timer.seconds > 0 else None
    return report


# ------------------------------------------------------------------------------------- evaluation
@torch.no_grad()
def evaluate(model, dm, name: str, pairs: int, batch: int, device: torch.device) -> dict[str, Any]:
    """On test items 0..pairs-1: retrieval by both methods, the chance, constant and oracle
    baselines, edit fidelity (see the module docstring) and the graph's
    ``adjacency_summary``; returns the results dict."""
    model.eval()
    actions = dm.actions
    num_actions = len(actions)
    factor_names = [dm.space.names[f] for f in actions.factors]

    def retrieve(x: torch.Tensor, x_next: torch.Tensor, method: str) -> torch.Tensor:
        return model.retrieve_codes(model.encode_codes(x), model.encode_codes(x_next), method).action

    # one untimed warm-up batch per method
    first = dm.prepare_batch({k: v.to(device) for k, v in next(_batches(dm, "test", pairs, batch)).items()})
    for method in METHODS:
        retrieve(first["image"], first["image_next"], method)

    timers = {m: _Timer(device) for m in METHODS}
    predicted: dict[str, list[torch.Tensor]] = {m: [] for m in METHODS}
    true, oracle = [], []
    sums = {"edit_mse": 0.0, "edit_psnr": 0.0, "recon_mse": 0.0, "recon_psnr": 0.0,
            "identity_mse": 0.0, "identity_psnr": 0.0, "node_acc": 0.0, "all_nodes": 0.0}
    for raw in _batches(dm, "test", pairs, batch, "retrieval and edit fidelity"):
        b = dm.prepare_batch({k: v.to(device) for k, v in raw.items()})
        x, x_next, a = b["image"], b["image_next"], b["action"]
        true.append(a.cpu())
        oracle.append(actions.action_between(b["factors"], b["factors_next"]).cpu())
        for method in METHODS:
            predicted[method].append(timers[method](retrieve, x, x_next, method).cpu())

        codes, target_codes = model.encode_codes(x), model.encode_codes(x_next)
        pred_codes = model.transition(codes, a, sample=False).predicted_codes
        edited = model.decode_codes(pred_codes)  # == model.edit(x, a)
        for key, image in (("edit", edited), ("recon", model.decode_codes(target_codes)), ("identity", x)):
            mse = (image.float() - x_next.float()).pow(2).flatten(1).mean(1)
            sums[f"{key}_mse"] += mse.sum().item()
            sums[f"{key}_psnr"] += psnr(mse).sum().item()
        right = pred_codes == target_codes
        sums["node_acc"] += right.float().mean(1).sum().item()
        sums["all_nodes"] += right.all(1).float().sum().item()

    true_ids = torch.cat(true)
    n = true_ids.shape[0]
    methods = {}
    for method in METHODS:
        report = accuracy_report(torch.cat(predicted[method]), true_ids, num_actions, factor_names)
        seconds = timers[method].seconds
        report["seconds"] = seconds
        report["pairs_per_s"] = n / seconds if seconds > 0 else None
        methods[method] = report

    # baselines, scored by the same accuracy_report
    oracle_ids = torch.cat(oracle)
    if (oracle_ids < 0).any():
        raise RuntimeError("the oracle found no single action for some test pairs; the twin's pairs are broken")
    train_ids = torch.cat([raw["action"] for raw in _batches(dm, "train", pairs, batch)])
    constant_id = int(torch.bincount(train_ids, minlength=num_actions).argmax())
    chance = accuracy_report(np.full((n, num_actions), 1.0 / num_actions), true_ids, num_actions, factor_names)
    chance["uniform"] = 1.0 / num_actions
    constant = accuracy_report(torch.full((n,), constant_id), true_ids, num_actions, factor_names)
    constant.update(action_id=constant_id, action_name=actions.names[constant_id], train_pairs=int(train_ids.numel()))
    baselines = {
        "chance": chance,
        "constant": constant,
        "oracle": accuracy_report(oracle_ids, true_ids, num_actions, factor_names),
    }

    fidelity = {
        "edit_mse": sums["edit_mse"] / n,
        "edit_psnr_db": sums["edit_psnr"] / n,
        "reconstruction_mse": sums["recon_mse"] / n,  # decode(encode(x')) vs x': the edit's ceiling
        "reconstruction_psnr_db": sums["recon_psnr"] / n,
        "identity_mse": sums["identity_mse"] / n,  # x itself vs x': editing nothing
        "identity_psnr_db": sums["identity_psnr"] / n,
        "code_node_accuracy": sums["node_acc"] / n,
        "code_all_nodes_accuracy": sums["all_nodes"] / n,
    }
    return {
        "action_names": list(actions.names),
        "factor_names": factor_names,
        "label_counts": torch.bincount(true_ids, minlength=num_actions).tolist(),
        "methods": methods,
        "baselines": baselines,
        "fidelity": fidelity,
        "graph": model.graph.adjacency_summary(),
    }


# ------------------------------------------------------------------------------------- exactness
def action_sequences(
    actions, start: torch.Tensor, k: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """``k`` actions for each start state ``(N, F)``, each drawn uniformly among the actions valid at
    the current TRUE state (``ActionSpace.valid_mask``) from ``generator``: returns the ids
    ``(N, k)`` and the true final states ``(N, F)``."""
    state = start
    ids = []
    for _ in range(k):
        valid = actions.valid_mask(state)  # (N, A)
        a = torch.multinomial(valid.double(), 1, generator=generator)[:, 0]
        state, ok = actions.apply(state, a)
        if not bool(ok.all()):
            raise RuntimeError("an action drawn among the valid ones was invalid; ActionSpace is inconsistent")
        ids.append(a)
    return torch.stack(ids, 1), state


def _judged(reads: Mapping[str, list[torch.Tensor]], truth: torch.Tensor, space) -> dict[str, Any]:
    """Exactness of the edited images and of both references, from their readings."""
    def rate(key: str) -> float:
        return float(exact_edits(torch.cat(reads[key]), truth, space).float().mean())

    return {"n": int(truth.shape[0]), "exact": rate("edit"), "reference_true_render": rate("true"),
            "reference_reconstruction": rate("recon")}


@torch.no_grad()
def evaluate_exactness(
    model, classifier: FactorClassifier, dm, pairs: int, batch: int, seed: int, device: torch.device,
) -> dict[str, Any]:
    """Edit exactness (definitions in :mod:`causal_vqvae.factor_classifier`), read by ``classifier``.

    ``k1``: on test items 0..pairs-1, ``model.edit(x, a)`` is exact iff its reading matches the true
    target ``factors_next`` on every factor; with ``per_acted_factor`` (exactness by the factor the
    action moves) and ``disturbed`` (per factor, the fraction of edits of OTHER factors that changed
    its reading). ``k2``, ``k4``: from each of the same test start states, ``model.edit_sequence`` of
    k actions from :func:`action_sequences` (one ``torch.Generator`` seeded with ``seed``, drawn for
    k = 2 then 4) is exact iff its reading matches the true final state. Each also gives, as
    references, the exactness of the true renders of the targets (the classifier's own accuracy on
    them) and of ``decode(encode(target))`` (the autoencoder's ceiling for any edit).
    """
    model.eval()
    classifier.eval()
    space, actions = dm.space, dm.actions
    render = dm.source.render

    def read_all(reads: dict[str, list[torch.Tensor]], edited: torch.Tensor, target: torch.Tensor) -> None:
        recon = model.decode_codes(model.encode_codes(target))
        for key, images in (("edit", edited), ("true", target), ("recon", recon)):
            reads[key].append(classifier.read(images).cpu())

    reads: dict[str, list[torch.Tensor]] = {"edit": [], "true": [], "recon": []}
    truth, acted = [], []
    for raw in _batches(dm, "test", pairs, batch, "edit exactness, k = 1"):
        b = dm.prepare_batch({k: v.to(device) for k, v in raw.items()})
        read_all(reads, model.edit(b["image"], b["action"]), b["image_next"])
        truth.append(raw["factors_next"])
        acted.append(actions.factor_of(raw["action"]))
    truth_t, acted_t = torch.cat(truth), torch.cat(acted)
    single = {"k": 1, **_judged(reads, truth_t, space)}
    exact = exact_edits(torch.cat(reads["edit"]), truth_t, space)
    single["per_acted_factor"] = {}
    for f in actions.factors:
        members = acted_t == f
        count = int(members.sum())
        single["per_acted_factor"][space.names[f]] = {
            "count": count, "exact": float(exact[members].float().mean()) if count else None}
    single["disturbed"] = disturbance(torch.cat(reads["edit"]), truth_t, acted_t, space)
    results = {"k1": single}

    start = dm._datasets["test"].__getitems__(list(range(pairs)))["factors"]
    generator = torch.Generator().manual_seed(seed)
    for k in SEQUENCE_STEPS:
        ids, final = action_sequences(actions, start, k, generator)
        reads = {"edit": [], "true": [], "recon": []}
        for i in tqdm(range(0, pairs, batch), desc=f"edit exactness, k = {k}", leave=False, dynamic_ncols=True):
            x = render(start[i:i + batch].to(device))
            steps = [ids[i:i + batch, t].to(device) for t in range(k)]
            read_all(reads, model.edit_sequence(x, steps), render(final[i:i + batch].to(device)))
        results[f"k{k}"] = {"k": k, **_judged(reads, final, space)}
    return results


# ------------------------------------------------------------------------------------- pictures
CELL = 64  # image side in the actions picture
PAIR_GAP = 2  # between an edit and its true target
GROUP_GAP = 10  # between columns of different actions
MARGIN = 6
HEADER = 30  # action names, then "edit" / "true"
ROW_GAP = 4
INVALID_GREY = (150, 150, 150)


def _font():
    from PIL import ImageFont

    return ImageFont.load_default()


def _text_size(text: str, font) -> tuple[int, int]:
    from PIL import Image, ImageDraw

    box = ImageDraw.Draw(Image.new("L", (1, 1))).textbbox((0, 0), text, font=font)
    return box[2] - box[0], box[3] - box[1]


def _shade(v: float) -> tuple[int, int, int]:
    """White (0) to blue (1), the confusion matrices' scale."""
    return (int(255 * (1 - v)), int(255 * (1 - 0.6 * v)), 255) if v > 0 else (255, 255, 255)


def _pil(image: torch.Tensor):
    """``(C, H, W)`` in [0, 1] -> an RGB PIL image (gray repeated)."""
    from PIL import Image

    pixels = (image.float().clamp(0, 1) * 255).round().byte().cpu()
    if pixels.shape[0] == 1:
        pixels = pixels.expand(3, -1, -1)
    return Image.fromarray(pixels.permute(1, 2, 0).numpy(), "RGB")


def actions_columns(num_actions: int) -> list[int]:
    """Left x of every image column of the actions picture: input, reconstruction, then an
    (edit, true target) pair per action."""
    xs = [MARGIN, MARGIN + CELL + GROUP_GAP]
    x = xs[-1] + CELL + GROUP_GAP
    for _ in range(num_actions):
        xs += [x, x + CELL + PAIR_GAP]
        x += 2 * CELL + PAIR_GAP + GROUP_GAP
    return xs


@torch.no_grad()
def actions_image(model, dm, states: torch.Tensor, device: torch.device):
    """Every action applied to the images of ``states`` ``(R, F)``: one row per state, the input and
    its reconstruction first, then for each action ``model.edit`` beside the twin's render of the
    TRUE target (the action applied to the true state). Where the action is invalid at that state
    (past a non-cyclic end) the target cell is grey with an X. A header row names the actions."""
    from PIL import Image, ImageDraw

    actions = dm.actions
    font = _font()
    states = states.to(device)
    x = dm.source.render(states)
    recon = model.decode_codes(model.encode_codes(x))
    xs = actions_columns(len(actions))
    width = xs[-1] + CELL + MARGIN
    height = HEADER + len(states) * (CELL + ROW_GAP) + MARGIN
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)

    def label(text: str, left: int, span: int, top: int) -> None:
        w, _ = _text_size(text, font)
        draw.text((left + (span - w) // 2, top), text, fill="black", font=font)

    label("input", xs[0], CELL, 4)
    label("recon", xs[1], CELL, 4)
    for a, name in enumerate(actions.names):
        left = xs[2 + 2 * a]
        label(name, left, 2 * CELL + PAIR_GAP, 2)
        label("edit", left, CELL, 16)
        label("true", left + CELL + PAIR_GAP, CELL, 16)
    for r in range(len(states)):
        top = HEADER + r * (CELL + ROW_GAP)
        image.paste(_pil(x[r]), (xs[0], top))
        image.paste(_pil(recon[r]), (xs[1], top))
    for a in range(len(actions)):
        edited = model.edit(x, a)
        target, valid = actions.apply(states, torch.full((len(states),), a, device=device))
        truth = dm.source.render(target)
        for r in range(len(states)):
            top = HEADER + r * (CELL + ROW_GAP)
            left = xs[2 + 2 * a]
            image.paste(_pil(edited[r]), (left, top))
            tx = left + CELL + PAIR_GAP
            if bool(valid[r]):
                image.paste(_pil(truth[r]), (tx, top))
            else:
                draw.rectangle([tx, top, tx + CELL - 1, top + CELL - 1], fill=INVALID_GREY)
                draw.line([tx + 8, top + 8, tx + CELL - 9, top + CELL - 9], fill="black", width=3)
                draw.line([tx + 8, top + CELL - 9, tx + CELL - 9, top + 8], fill="black", width=3)
    return image


def _heatmap(draw, probs: np.ndarray, hard: np.ndarray, left: int, top: int, cell: int) -> None:
    """Cells shaded by probability; a black dot where the hard (evaluation) value is 1."""
    dot = max(1, cell // 4)
    for i in range(probs.shape[0]):
        for j in range(probs.shape[1]):
            x0, y0 = left + j * cell, top + i * cell
            draw.rectangle([x0, y0, x0 + cell - 1, y0 + cell - 1], fill=_shade(float(probs[i, j])),
                           outline=(225, 225, 225))
            if hard[i, j]:
                cx, cy = x0 + cell // 2, y0 + cell // 2
                draw.rectangle([cx - dot, cy - dot, cx + dot - 1, cy + dot - 1], fill="black")


@torch.no_grad()
def graph_image(model, action_names: Sequence[str], images: torch.Tensor):
    """The learned graph, three panels: (1) action -> node intervention targets, rows actions and
    columns nodes, shaded by the probability that the action intervenes on the node, averaged over
    ``images`` (held-out images: :func:`causal_vqvae.monitoring.target_probabilities`, global and
    state-dependent target logits together), with a dot where that mean is above 0.5; (2) grid
    layout only: each action's targets as a mini-map of the encoder's ``grid_size`` x
    ``grid_size`` grid (node n at row n // side, column n % side); (3) the node ->
    node adjacency, rows parents j and columns children i, shaded by ``graph.adjacency_probs()``
    with a dot on ``graph.hard_adjacency()`` edges."""
    from PIL import Image, ImageDraw

    graph, config = model.graph, model.config
    font = _font()
    targets = target_probabilities(model, images).cpu().numpy()  # (A, N)
    target_hard = (targets > 0.5).astype(np.float64)
    adjacency = graph.adjacency_probs().cpu().numpy()  # (N, N)
    adjacency_hard = graph.hard_adjacency().cpu().numpy()
    a, n = targets.shape
    names = [str(x) for x in action_names]
    label_w = max(_text_size(x, font)[0] for x in names) + 8
    cell = max(6, min(16, 720 // n))
    adj_cell = max(4, min(12, 640 // n))
    side = config.grid_size
    mini = 6  # pixels per node in the mini-maps
    grid = config.latent_layout == "grid"

    tick = side if grid else 1  # column labels every grid row of nodes (every token)
    map_step = max(side * mini, max(_text_size(x, font)[0] for x in names)) + 10
    y = MARGIN
    panels = [("title", y)]
    y += 18
    panels.append(("targets", y))
    y += 28 + a * cell + 10
    if grid:
        panels.append(("maps", y))
        y += 30 + side * mini + 10
    panels.append(("adjacency", y))
    y += 28 + n * adj_cell + MARGIN
    width = max(MARGIN + label_w + n * cell, MARGIN + a * map_step, MARGIN + 40 + n * adj_cell, 460) + MARGIN
    image = Image.new("RGB", (width, y), "white")
    draw = ImageDraw.Draw(image)
    where = dict(panels)
    draw.text((MARGIN, where["title"]), f"learned graph ({config.latent_layout} layout, {n} nodes, {a} actions); "
              "shade: probability, white 0 to blue 1", fill="black", font=font)

    def ticks(left: int, top: int, size: int) -> None:
        for j in range(0, n, tick):
            draw.text((left + j * size, top), str(j), fill="black", font=font)

    top = where["targets"]
    draw.text((MARGIN, top), f"action -> node targets: P(intervene), mean over {images.shape[0]} held-out "
              "images; dot = mean > 0.5", fill="black", font=font)
    ticks(MARGIN + label_w, top + 14, cell)
    for i, name in enumerate(names):
        w, h = _text_size(name, font)
        draw.text((MARGIN + label_w - w - 4, top + 28 + i * cell + (cell - h) // 2), name, fill="black", font=font)
    _heatmap(draw, targets, target_hard, MARGIN + label_w, top + 28, cell)

    if grid:
        top = where["maps"]
        draw.text((MARGIN, top), f"targets on the {side}x{side} code grid, per action (node n at row n // {side}, "
                  f"column n % {side})", fill="black", font=font)
        for i, name in enumerate(names):
            left = MARGIN + i * map_step
            draw.text((left, top + 16), name, fill="black", font=font)
            _heatmap(draw, targets[i].reshape(side, side), target_hard[i].reshape(side, side), left, top + 30, mini)

    top = where["adjacency"]
    draw.text((MARGIN, top), "node -> node adjacency: rows parent j, columns child i; dot = hard_adjacency()",
              fill="black", font=font)
    ticks(MARGIN + 40, top + 14, adj_cell)
    for j in range(0, n, tick):
        draw.text((MARGIN, top + 28 + j * adj_cell), str(j), fill="black", font=font)
    _heatmap(draw, adjacency, adjacency_hard, MARGIN + 40, top + 28, adj_cell)
    return image


# ------------------------------------------------------------------------------------- output
def write_json(path: Path, data: dict) -> None:
    """The results as JSON, atomically; NaN is refused (every figure must be a number or null)."""
    io.write_json(path, data, allow_nan=False)


def confusion_image(confusion: Sequence[Sequence[float]], names: Sequence[str], title: str = ""):
    """A PIL heatmap of a confusion matrix: rows true, columns predicted, shaded by the row fraction."""
    from PIL import Image, ImageDraw

    font = _font()
    matrix = np.asarray(confusion, dtype=np.float64)
    a = matrix.shape[0]
    cell = 34
    label_w = max(_text_size(n, font)[0] for n in names) + 10
    left, top = label_w + 16, label_w + 28
    width, height = left + a * cell + 10, top + a * cell + 24
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    draw.text((4, 2), title or "confusion (rows true, columns predicted)", fill="black", font=font)
    draw.text((left, height - 16), "predicted", fill="black", font=font)
    rows = matrix.sum(1, keepdims=True)
    fraction = np.divide(matrix, rows, out=np.zeros_like(matrix), where=rows > 0)
    for i in range(a):
        w, h = _text_size(names[i], font)
        draw.text((left - w - 6, top + i * cell + (cell - h) // 2), names[i], fill="black", font=font)
        label = Image.new("RGB", (label_w, 14), "white")
        ImageDraw.Draw(label).text((2, 1), names[i], fill="black", font=font)
        label = label.rotate(90, expand=True)
        image.paste(label, (left + i * cell + (cell - 14) // 2, top - label_w - 4))
        for j in range(a):
            v = fraction[i, j]
            x0, y0 = left + j * cell, top + i * cell
            draw.rectangle([x0, y0, x0 + cell - 1, y0 + cell - 1], fill=_shade(v), outline=(200, 200, 200))
            value = matrix[i, j]
            if value:
                text = f"{round(value)}" if abs(value - round(value)) < 1e-9 else f"{value:.1f}"
                tw, th = _text_size(text, font)
                draw.text((x0 + (cell - tw) // 2, y0 + (cell - th) // 2), text,
                          fill="white" if v > 0.55 else "black", font=font)
    return image


def write_png(path: Path, image) -> None:
    atomic_write(path, lambda temp: image.save(temp, format="PNG"))


def _fmt(x: float | None) -> str:
    return "   -  " if x is None else f"{100 * x:6.2f}"


def _retrieval_rows(results: dict) -> dict[str, dict]:
    """The reports of every retrieval predictor, the methods first."""
    return {**results["methods"], **{f"baseline: {k}": v for k, v in results["baselines"].items()}}


def format_table(results: dict) -> str:
    """The stdout summary: retrieval (methods and baselines), action accuracy per factor of the true
    action, edit fidelity, the factor classifier and edit exactness, and the pictures written."""
    lines = [f"{'method':<30} {'action %':>9} {'factor %':>9} {'pairs/s':>10}", "-" * 61]
    for label, r in _retrieval_rows(results).items():
        rate = r.get("pairs_per_s")
        if label == "baseline: constant":
            label += f" ({r['action_name']})"
        lines.append(f"{label:<30} {_fmt(r['action_accuracy']):>9} {_fmt(r['factor_accuracy']):>9} "
                     f"{'' if rate is None else f'{rate:,.0f}':>10}")
    supervised = results["baselines"].get("supervised_cnn")
    if supervised:
        t = supervised["training"]
        lines.append(f"  (supervised CNN: {t['steps']} steps x {t['batch']} pairs, {supervised['frequency']} "
                     f"frequency, trained in {t['seconds']:.0f} s{', cached' if supervised['cached'] else ''})")

    columns = {m: r for m, r in _retrieval_rows(results).items() if m in METHODS or m == "baseline: supervised_cnn"}
    names = {m: m.replace("baseline: ", "") for m in columns}
    lines += ["", "action accuracy % per factor of the true action",
              f"{'factor':<16} {'pairs':>6} " + " ".join(f"{names[m]:>15}" for m in columns)]
    for factor in results["factor_names"]:
        count = results["methods"][METHODS[0]]["per_factor"][factor]["count"]
        cells = " ".join(f"{_fmt(r['per_factor'][factor]['action_accuracy']):>15}" for r in columns.values())
        lines.append(f"{factor:<16} {count:>6} {cells}")

    f = results["fidelity"]
    lines += [
        "",
        (f"edit fidelity:   MSE {f['edit_mse']:.5f}  PSNR {f['edit_psnr_db']:.2f} dB"
         f"   (reconstruction of x': PSNR {f['reconstruction_psnr_db']:.2f} dB; unedited x: "
         f"PSNR {f['identity_psnr_db']:.2f} dB)"),
        (f"transition codes: node accuracy {100 * f['code_node_accuracy']:.2f}%"
         f"   all nodes right {100 * f['code_all_nodes_accuracy']:.2f}% of pairs"),
    ]
    g = results.get("graph")
    if g:
        lines.append(f"node -> node graph: {g['thresholded_parents_per_node']:.2f} parents per node at evaluation, "
                     f"{g['expected_parents_per_node']:.2f} expected in training (edge probability: median "
                     f"{g['edge_probability_median']:.3f}, max {g['edge_probability_max']:.3f})")

    exactness = results.get("exactness")
    if exactness:
        c = exactness["classifier"]
        held = c["held_out"]
        verdict = ("meets the 99.5% bar" if c["meets_bar"]
                   else "BELOW the 99.5% bar: the exactness figures below do not count")
        lines += ["", (f"factor classifier, held out ({held['n']} test states): all factors "
                       f"{100 * held['all_factors']:.2f}%  [{verdict}]"),
                  "  per factor: " + ", ".join(f"{k} {100 * v:.2f}%" for k, v in held["per_factor"].items()),
                  f"{'edit exactness %':<30} {'edits':>9} {'true x':>9} {'recon':>9}"]
        for key in ("k1", *(f"k{k}" for k in SEQUENCE_STEPS)):
            e = exactness[key]
            label = f"  k = {key[1:]} ({e['n']} starts)"
            lines.append(f"{label:<30} {_fmt(e['exact']):>9} "
                         f"{_fmt(e['reference_true_render']):>9} {_fmt(e['reference_reconstruction']):>9}")
        single = exactness["k1"]
        lines += ["  k = 1 exact % by acted factor: " + ", ".join(
                      f"{k} {_fmt(v['exact']).strip()}" for k, v in single["per_acted_factor"].items()),
                  "  k = 1 changed % of each factor when another was acted on: " + ", ".join(
                      f"{k} {_fmt(v['changed']).strip()}" for k, v in single["disturbed"].items())]
    if "pngs" in results:
        lines += ["", "pictures: " + ", ".join(results["pngs"].values())]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------- CLI
def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m causal_vqvae.bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="model directory written by save_pretrained")
    p.add_argument("--data", required=True, choices=DATASETS, help="procedural twin to evaluate on")
    p.add_argument("--pairs", type=int, default=2000, help="test pairs (items 0..pairs-1)")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--seed", type=int, default=0,
                   help="which pairs are drawn; seeds the baseline, the classifier and the edit sequences")
    p.add_argument("--device", choices=("cpu", "cuda"), default=None, help="default: cuda if available")
    p.add_argument("--out", default="results.json", help="JSON path; the PNGs go next to it")
    p.add_argument("--no-cache", action="store_true",
                   help="train the baseline and the classifier afresh; read and write no cache")
    p.add_argument("--baseline-steps", type=int, default=None,
                   help="supervised CNN steps (default: train.causal_steps of MODEL/../config.json, else 2000)")
    p.add_argument("--baseline-batch", type=int, default=None,
                   help="supervised CNN batch (default: the run's global data.batch_size, else 32)")
    p.add_argument("--skip-baseline", action="store_true", help="no supervised CNN baseline")
    p.add_argument("--classifier-steps", type=int, default=None,
                   help="factor classifier steps (default: dSprites 8000, 3D Shapes 500)")
    p.add_argument("--classifier-batch", type=int, default=None,
                   help="factor classifier batch (default: dSprites 128, 3D Shapes 64)")
    p.add_argument("--classifier-test-states", type=int, default=5000,
                   help="held-out TEST-split states the classifier is measured on")
    p.add_argument("--skip-exactness", action="store_true", help="no factor classifier and no exactness")
    p.add_argument("--picture-rows", type=int, default=6, help="held-out images in <stem>_actions.png")
    return p


def _budget_value(flag: int | None, flag_name: str, from_run: int | None, default: int) -> tuple[int, str]:
    """The flag where given, else the run config's value, else the default; and which it was."""
    if flag is not None:
        return flag, flag_name
    if from_run is not None:
        return from_run, "run config"
    return default, "default"


def main(argv: Sequence[str] | None = None) -> dict:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    for name in ("pairs", "batch", "baseline_steps", "baseline_batch", "classifier_steps", "classifier_batch",
                 "classifier_test_states", "picture_rows"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise SystemExit(f"--{name.replace('_', '-')} must be positive, got {value}")
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda asked for, but no GPU is available")
    torch.manual_seed(args.seed)

    from datamodules.sources import default_cache_root

    from .api import load

    model = load(args.model, device=device).eval()
    dm = _datamodule(args.data, args.pairs, args.batch, args.seed)
    _check_model(model, dm, args.data)
    cache_root = None if args.no_cache else default_cache_root()
    budget = run_budget(args.model)
    results = evaluate(model, dm, args.data, args.pairs, args.batch, device)

    if not args.skip_baseline:
        steps, steps_from = _budget_value(args.baseline_steps, "--baseline-steps", budget.steps, 2000)
        size, size_from = _budget_value(args.baseline_batch, "--baseline-batch", budget.batch_size, 32)
        settings = BaselineSettings(args.data, steps, size, budget.frequency, args.seed)
        net, record = load_or_train_baseline(dm, settings, device, cache_root)
        report = score_baseline(net, dm, args.pairs, args.batch, device)
        report.update(training=record["training"], frequency=settings.frequency, cached=record["cached"],
                      cache_path=record["path"], budget_from={"steps": steps_from, "batch": size_from})
        results["baselines"]["supervised_cnn"] = report

    if not args.skip_exactness:
        settings = ClassifierSettings.for_dataset(args.data, args.classifier_steps, args.classifier_batch,
                                                  test_states=args.classifier_test_states, seed=args.seed)
        classifier, record = load_or_train_classifier(dm.source, settings, device, cache_root)
        results["exactness"] = {
            "definition": "an edit is exact iff the factor classifier's reading of the edited image matches "
                          "the TRUE target state on every factor (" + record["reading_rule"] + ")",
            "counts": record["meets_bar"],
            "classifier": record,
            **evaluate_exactness(model, classifier, dm, args.pairs, args.batch, args.seed, device),
        }

    out = Path(args.out)
    meta = {
        "data": f"{args.data} procedural twin",
        "model": str(Path(args.model).resolve()),
        "seed": args.seed,
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "pairs": args.pairs,
        "batch": args.batch,
        "split": "test",
        "test_frequency": "balanced",
        "train_frequency": budget.frequency,  # the model's (from its run config); the baseline trains on it
        "run_config": budget.config,
        "retrieval_score": model.config.retrieval_score,  # how retrieval by transition scored
        "command": "python -m causal_vqvae.bench " + shlex.join(argv),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    data = {"meta": meta, **results}

    confusions = {name: results["methods"][name] for name in METHODS}
    if "supervised_cnn" in results["baselines"]:
        confusions["supervised_cnn"] = results["baselines"]["supervised_cnn"]
    pngs = {}
    for name, report in confusions.items():
        png = out.with_name(f"{out.stem}_confusion_{name}.png")
        title = (f"{args.data} twin, {name}: action acc {100 * report['action_accuracy']:.1f}% "
                 "(rows true, cols predicted)")
        write_png(png, confusion_image(report["confusion"], results["action_names"], title))
        pngs[f"confusion_{name}"] = png.name
    data["confusion_png"] = {name: pngs[f"confusion_{name}"] for name in confusions}

    rows = min(args.picture_rows, args.pairs)
    states = dm._datasets["test"].__getitems__(list(range(rows)))["factors"]
    held_out = dm.source.render(states.to(device))
    for name, image in (("actions", actions_image(model, dm, states, device)),
                        ("graph", graph_image(model, results["action_names"], held_out))):
        png = out.with_name(f"{out.stem}_{name}.png")
        write_png(png, image)
        pngs[name] = png.name
    data["pngs"] = pngs
    write_json(out, data)

    print(f"{meta['data']}, {args.pairs} test pairs, seed {args.seed}, {meta['device_name']}, "
          f"model {args.model}")
    print(format_table(data))
    print(f"wrote {out} and {len(pngs)} PNGs beside it")
    return data


if __name__ == "__main__":
    main()
