"""The benchmark's data: a twin's DataModule with a test split of exactly the pairs scored, those
pairs in batches, and pairs encoded once by a frozen model (the code pools of training and of the
benchmark scripts). The harness may import ``datamodules``; it never imports the CelebA module or
Hugging Face ``datasets``."""

from __future__ import annotations

import time
from typing import Any

import torch
from tqdm.auto import tqdm

from datamodules.datamodule import build_datamodule
from datamodules.pairs import TransitionPairs
from datamodules.sources import DEFAULT_TWIN_VERSION

from ..pretrained import TWIN_VERSION_KEY, model_twin_version  # noqa: F401 - re-exported

__all__ = ["DATASETS", "TWIN_VERSION_KEY", "batches", "bench_twin_version", "check_model", "encode_pair_pools",
           "encode_pairs", "model_twin_version", "twin_datamodule"]

DATASETS = ("dsprites", "shapes3d")


def twin_datamodule(name: str, pairs: int, batch: int, seed: int, twin_version: str = DEFAULT_TWIN_VERSION):
    """The DataModule of ``name`` on its procedural twin of renderer ``twin_version`` (never a real
    file: fidelity needs the twin's true renders), its test split holding exactly ``pairs`` pairs."""
    if name not in DATASETS:
        raise ValueError(f"--data must be one of {DATASETS}, got {name!r}")
    dm = build_datamodule(name, batch_size=batch, test_length=pairs, train_length=pairs, seed=seed, num_workers=0,
                          twin_version=twin_version)
    dm.source = dm.make_twin()  # force the twin even if $CAUSAL_VQVAE_DATA_ROOT names a real file
    dm.setup()
    return dm


def bench_twin_version(flag: str | None, model) -> tuple[str, str]:
    """``(version, where it came from)``: the flag where given, else the version the model was trained
    on (its metadata), else the default ``"1"``."""
    if flag is not None:
        return str(flag), "--twin-version"
    recorded = model_twin_version(model)
    if recorded is not None:
        return recorded, "model metadata"
    return DEFAULT_TWIN_VERSION, "default"


def batches(dm, split: str, pairs: int, batch: int, desc: str | None = None):
    """Items 0..pairs-1 of ``split`` in batches; with ``desc``, behind a progress bar."""
    starts = range(0, pairs, batch)
    for start in starts if desc is None else tqdm(starts, desc=desc, leave=False, dynamic_ncols=True):
        yield dm._datasets[split].__getitems__(list(range(start, min(start + batch, pairs))))


def encode_pair_pools(
    model, data: str, train_pairs: int, test_pairs: int, seed: int, device: torch.device, batch: int,
    encode_batch: int = 500, twin_version: str = DEFAULT_TWIN_VERSION,
) -> tuple[Any, dict[str, torch.Tensor], dict[str, torch.Tensor], float]:
    """``(dm, train, test, seconds)``: the pools of the benchmark scripts that train on a frozen
    model's codes. ``train``: the codes of ``train_pairs`` training pairs,
    ``TransitionPairs(space, "train", seed=seed)``; ``test``: those of test items 0..test_pairs-1,
    the pairs the bench scores first (see :func:`encode_pairs`). ``dm`` is the dataset's DataModule
    (``batch`` per batch, no workers; the twin of renderer ``twin_version`` where no real file is given)."""

    dm = build_datamodule(data, batch_size=batch, num_workers=0, twin_version=twin_version)
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


@torch.no_grad()
def encode_pairs(model, dm, dataset, count: int, batch: int, device: torch.device,
                 desc: str | None = None, augment: bool = False) -> dict[str, torch.Tensor]:
    """Codes of items 0..count-1 of ``dataset`` (a pair dataset of the DataModule ``dm``, which
    renders or converts its images, with its training augmentation if ``augment``) under ``model``:
    "codes" and "target" (B, N) on the CPU, int16
    where the codebook allows (compact for pools of 100k pairs), "action" (B,) long. ``desc``: a
    progress bar of that name on a terminal (pairs per second, time left)."""
    from tqdm.auto import tqdm

    if count > len(dataset):
        raise ValueError(f"asked for the codes of {count} pairs, but the dataset holds {len(dataset)}")
    dtype = torch.int16 if model.quantizer.codebook_size <= torch.iinfo(torch.int16).max + 1 else torch.int32
    out: dict[str, list[torch.Tensor]] = {"codes": [], "target": [], "action": []}
    bar = tqdm(total=count, desc=desc, unit="pair", disable=None if desc else True, leave=False)
    for start in range(0, count, batch):
        raw = dataset.__getitems__(list(range(start, min(start + batch, count))))
        b = dm.prepare_batch({k: v.to(device) for k, v in raw.items()}, augment=augment)
        out["codes"].append(model.encode_codes(b["image"]).to(dtype).cpu())
        out["target"].append(model.encode_codes(b["image_next"]).to(dtype).cpu())
        out["action"].append(b["action"].cpu())
        bar.update(min(batch, count - start))
    bar.close()
    return {k: torch.cat(v) for k, v in out.items()}


def check_model(model, dm, name: str) -> None:
    c = model.config
    actions = dm.actions
    if c.dataset and c.dataset != name:
        raise ValueError(f"the model was trained on {c.dataset!r}, not {name!r}: bench it with --data {c.dataset}, "
                         f"or give a model trained on {name}")
    if c.num_actions != len(actions):
        raise ValueError(f"the model has {c.num_actions} actions, {name} has {len(actions)}")
    if c.action_names and tuple(c.action_names) != tuple(actions.names):
        raise ValueError(f"the model's actions {tuple(c.action_names)} differ from {name}'s {actions.names}")
    if c.in_channels != dm.channels:
        raise ValueError(f"the model takes {c.in_channels} channels, the {name} twin has {dm.channels}")
