"""Lightning DataModules for every dataset, chosen by name from one registry.

``build_datamodule("shapes3d", data_root=None)`` gives the 3D Shapes procedural twin;
``build_datamodule("shapes3d", data_root="/data")`` reads ``/data/3dshapes.h5`` (an explicit root
that holds no readable file is an error, never a silent fallback). ``$CAUSAL_VQVAE_DATA_ROOT`` is
the default root; a dataset whose file is absent under it falls back to its twin, saying so.

Batches are dicts. Loaders yield only small integer tensors for twins (``factors``, ``action``,
``factors_next``); :meth:`on_after_batch_transfer` renders them on the training device, so a GPU is
never starved by image decoding. Real files yield uint8 images from the memmap cache, converted to
float on the device. After the transfer every batch holds:

- ``image`` ``(B, C, 64, 64)`` float32 in [0, 1]; in pair mode also ``image_next``;
- ``factors`` ``(B, F)`` int64 (CelebA: the chosen attribute bits), ``index`` ``(B,)``;
- pair mode: ``action`` ``(B,)`` int64 (ids of :class:`ActionSpace`) and ``factors_next``.

``mode`` ("pairs" or "images") applies to the training split; validation and test always yield
pairs, so every training stage reports the same held-out metrics.

Each epoch draws fresh training pairs: :class:`EpochSampler` hands out indices
``epoch * length + i`` sharded over DDP ranks, and items are pure functions of their index. Build
the Trainer with ``use_distributed_sampler=False`` (the sampler already shards; see
:data:`TRAINER_KWARGS`).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, Sampler

from .factors import ActionSpace, FactorSpace
from .pairs import DEFAULT_FRACTIONS, SPLITS, StateSamples, TransitionPairs, batch_passthrough, factor_weights
from .sources import ArraySource, TwinSource, default_cache_root, to_float_images

log = logging.getLogger(__name__)

__all__ = [
    "DATASETS",
    "DATA_ROOT_ENV",
    "TRAINER_KWARGS",
    "DataConfig",
    "EpochSampler",
    "FactorDataModule",
    "CelebADataModule",
    "build_datamodule",
    "resolve_source",
]

DATA_ROOT_ENV = "CAUSAL_VQVAE_DATA_ROOT"
TRAINER_KWARGS = {"use_distributed_sampler": False}


@dataclass
class DataConfig:
    """Everything a DataModule needs; every field has a command-line flag in ``train.py``."""

    dataset: str = "shapes3d"
    data_root: str | None = None  # real files; None: $CAUSAL_VQVAE_DATA_ROOT, else the twin
    mode: str = "pairs"  # "pairs" (x, a, x') or "images" (single images for the autoencoder)
    batch_size: int = 64
    seed: int = 0  # which pairs are drawn
    split_seed: int = 0  # which states are train / val / test; keep fixed across runs to compare them
    fractions: tuple[float, float, float] = DEFAULT_FRACTIONS
    frequency: str | dict = "balanced"  # see datamodules.pairs.factor_weights
    train_length: int = 100_000  # pairs (or images) per training epoch
    val_length: int = 5_000
    test_length: int = 5_000
    num_workers: int | None = None  # None: 0 on <= 2 cores, else min(8, cores // 2)
    cache_root: str | None = None  # memmap caches; None: $CAUSAL_VQVAE_CACHE or ~/.cache/causal_vqvae
    attributes: Sequence[str] | None = None  # CelebA: attributes with actions (default the first 10)
    twin_size: int = 20_000  # CelebA twin: faces written on first use
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.mode not in ("pairs", "images"):
            raise ValueError(f"mode must be 'pairs' or 'images', got {self.mode!r}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {self.batch_size}")
        for name in ("train_length", "val_length", "test_length"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")


def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class EpochSampler(Sampler[int]):
    """Indices ``epoch * length + i`` for ``i`` in this rank's share of ``range(length)``.

    Rank and world size are read when iterated, so the sampler is DDP-safe without being rebuilt.
    Every rank yields the same count (the last share wraps around), as DDP needs.
    """

    def __init__(self, length: int, advance_with_epoch: bool = True) -> None:
        self.length = length
        self.advance_with_epoch = advance_with_epoch
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return math.ceil(self.length / _world()[1])

    def __iter__(self):
        rank, world = _world()
        offset = self.epoch * self.length if self.advance_with_epoch else 0
        per_rank = math.ceil(self.length / world)
        for j in range(per_rank):
            yield offset + (rank + j * world) % self.length


class _WithImages(Dataset):
    """Adds uint8 images of a real file to the integer batches of a pair / state dataset."""

    def __init__(self, inner: Dataset, source: ArraySource, rows: Callable[[torch.Tensor], np.ndarray]) -> None:
        self.inner, self.source, self.rows = inner, source, rows

    def __len__(self) -> int:
        return len(self.inner)

    def __getitems__(self, indices) -> dict[str, torch.Tensor]:
        batch = self.inner.__getitems__(indices)
        batch["image"] = self.source.fetch(self.rows(batch["factors"]))
        if "factors_next" in batch:
            batch["image_next"] = self.source.fetch(self.rows(batch["factors_next"]))
        return batch


def _auto_workers() -> int:
    cores = os.cpu_count() or 1
    return 0 if cores <= 2 else min(8, cores // 2)


class _BaseDataModule(pl.LightningDataModule):
    """Loader plumbing shared by all datasets; subclasses make the datasets and the source."""

    def __init__(self, config: DataConfig) -> None:
        super().__init__()
        self.config = config
        self.source: TwinSource | ArraySource | None = None
        self._datasets: dict[str, Dataset] = {}
        self._samplers: dict[str, EpochSampler] = {}

    # --- what the model needs to know -------------------------------------------------------
    @property
    def space(self) -> FactorSpace:
        raise NotImplementedError

    @property
    def actions(self) -> ActionSpace:
        return ActionSpace(self.space)

    @property
    def channels(self) -> int:
        self._ensure_source()
        return self.source.channels

    @property
    def description(self) -> str:
        self._ensure_source()
        return self.source.description

    def _ensure_source(self) -> None:
        if self.source is None:
            self.source = self._make_source()

    def _make_source(self):
        raise NotImplementedError

    def _make_dataset(self, split: str, length: int) -> Dataset:
        raise NotImplementedError

    # --- Lightning hooks --------------------------------------------------------------------
    def prepare_data(self) -> None:
        # Runs on one process per node: builds caches before the ranks open them.
        self._ensure_source()

    def setup(self, stage: str | None = None) -> None:
        self._ensure_source()
        lengths = {"train": self.config.train_length, "val": self.config.val_length, "test": self.config.test_length}
        for split in SPLITS:
            if split not in self._datasets:
                self._datasets[split] = self._make_dataset(split, lengths[split])

    def _loader(self, split: str) -> DataLoader:
        self.setup()
        workers = self.config.num_workers if self.config.num_workers is not None else _auto_workers()
        sampler = self._samplers.setdefault(
            split, EpochSampler(len(self._datasets[split]), advance_with_epoch=split == "train")
        )
        return DataLoader(
            self._datasets[split],
            batch_size=self.config.batch_size,
            sampler=sampler,
            collate_fn=batch_passthrough,
            num_workers=workers,
            pin_memory=torch.cuda.is_available(),
            persistent_workers=workers > 0,
            drop_last=split == "train",
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train")

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")

    def on_before_batch_transfer(self, batch: dict, dataloader_idx: int) -> dict:
        # Twins: check the classes here, on the host, so that rendering them on a GPU reads
        # nothing back (a range check of device tensors is a host sync at every step).
        if isinstance(self.source, TwinSource):
            for key in ("factors", "factors_next"):
                if key in batch:
                    self.source.space.check(batch[key])
        return batch

    def on_after_batch_transfer(self, batch: dict, dataloader_idx: int) -> dict:
        return self.prepare_batch(batch, checked=True)

    def prepare_batch(self, batch: dict, checked: bool = False) -> dict:
        """Render (twins) or convert (real files) the images of a batch on its device.
        ``checked``: the classes were range-checked already (``on_before_batch_transfer``)."""
        batch = dict(batch)
        if isinstance(self.source, TwinSource):
            batch["image"] = self.source.render(batch["factors"], check=not checked)
            if "factors_next" in batch:
                batch["image_next"] = self.source.render(batch["factors_next"], check=not checked)
        else:
            batch["image"] = to_float_images(batch["image"])
            if "image_next" in batch:
                batch["image_next"] = to_float_images(batch["image_next"])
        return batch

    def sample_batch(self, split: str = "val", size: int | None = None, device: str | torch.device = "cpu") -> dict:
        """One prepared batch of ``split`` (items 0..size-1), e.g. for previews and benchmarks."""
        self.setup()
        size = size or self.config.batch_size
        batch = self._datasets[split].__getitems__(list(range(size)))
        batch = {k: v.to(device) for k, v in batch.items()}
        return self.prepare_batch(batch)


# --------------------------------------------------------------------------------------------
# Datasets with a factor space: dSprites and 3D Shapes
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _FactorDataset:
    space: Callable[[], FactorSpace]
    twin: Callable[[], TwinSource]
    read: Callable[..., ArraySource]
    file_names: tuple[str, ...]  # looked for inside a data root, in order


def _dsprites_entry() -> _FactorDataset:
    from . import dsprites

    return _FactorDataset(lambda: dsprites.DSPRITES, dsprites.dsprites_twin, dsprites.read_dsprites,
                          ("dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz",
                           "dsprites_ndarray_co1sh3sc6or40x32y32_64x64.hdf5"))


def _shapes3d_entry() -> _FactorDataset:
    from . import shapes3d

    return _FactorDataset(lambda: shapes3d.SHAPES3D, shapes3d.shapes3d_twin, shapes3d.read_shapes3d,
                          ("3dshapes.h5",))


_FACTOR_DATASETS: dict[str, Callable[[], _FactorDataset]] = {
    "dsprites": _dsprites_entry,
    "shapes3d": _shapes3d_entry,
}


def resolve_source(file_names: Sequence[str], data_root: str | None, dataset: str) -> Path | None:
    """The real file to read, or None for the twin.

    An explicit ``data_root`` (a file, or a folder holding one of ``file_names``) must resolve to a
    file, else this raises; a root from ``$CAUSAL_VQVAE_DATA_ROOT`` that lacks the file means the twin.
    """
    explicit = data_root is not None
    root = data_root if explicit else os.environ.get(DATA_ROOT_ENV)
    if not root:
        return None
    path = Path(root).expanduser()
    if path.is_file():
        return path
    for name in file_names:
        if (path / name).is_file():
            return path / name
    where = f"--data-root {path}" if explicit else f"${DATA_ROOT_ENV}={path}"
    if explicit:
        problem = "does not exist" if not path.exists() else "holds none of the dataset's files"
        raise FileNotFoundError(
            f"{dataset}: no real file found: {where} {problem} (looked for {', '.join(file_names)}). "
            f"Point --data-root at the file or its folder, or leave it out to use the {dataset} procedural twin."
        )
    log.warning("%s: %s holds none of %s; using the procedural twin", dataset, where, ", ".join(file_names))
    return None


class FactorDataModule(_BaseDataModule):
    """dSprites or 3D Shapes: pairs / images from a factor space, real file or procedural twin."""

    def __init__(self, config: DataConfig) -> None:
        super().__init__(config)
        if config.dataset not in _FACTOR_DATASETS:
            raise ValueError(f"FactorDataModule serves {sorted(_FACTOR_DATASETS)}, not {config.dataset!r}")
        self.entry = _FACTOR_DATASETS[config.dataset]()
        self.save_hyperparameters({"data": {k: v for k, v in vars(config).items() if k != "extra"}})

    @property
    def space(self) -> FactorSpace:
        return self.entry.space()

    def _make_source(self):
        path = resolve_source(self.entry.file_names, self.config.data_root, self.config.dataset)
        if path is None:
            log.info("%s: no real file given; using the procedural twin (rendered on the training device)",
                     self.config.dataset)
            return self.entry.twin()
        cache = Path(self.config.cache_root) if self.config.cache_root else default_cache_root()
        source = self.entry.read(path, cache_root=cache)
        log.info("%s: reading the real file %s through its memmap cache", self.config.dataset, path)
        return source

    def _make_dataset(self, split: str, length: int) -> Dataset:
        c = self.config
        if c.mode == "pairs" or split != "train":
            ds = TransitionPairs(self.space, split, length=length, seed=c.seed, split_seed=c.split_seed,
                                 frequency=c.frequency, fractions=c.fractions)
        else:
            ds = StateSamples(self.space, split, length=length, seed=c.seed, split_seed=c.split_seed,
                              fractions=c.fractions)
        if isinstance(self.source, ArraySource):
            space = self.space
            return _WithImages(ds, self.source, lambda f: space.ravel(f).numpy())
        return ds


# --------------------------------------------------------------------------------------------
# CelebA: attribute pairs over real images
# --------------------------------------------------------------------------------------------
class _CelebAItems(Dataset):
    """Pairs (or single images) of one CelebA split; item ``i`` is a pure function of (seed, i)."""

    def __init__(self, source: ArraySource, chosen: np.ndarray, split_id: int, length: int, seed: int,
                 mode: str, pair_index, weights: np.ndarray | None) -> None:
        self.source, self.chosen, self.split_id = source, chosen, split_id
        self.length, self.seed, self.mode = length, seed, mode
        self.pair_index, self.weights = pair_index, weights

    def __len__(self) -> int:
        return self.length

    def __getitems__(self, indices) -> dict[str, torch.Tensor]:
        idx = np.asarray(indices, dtype=np.int64)
        if self.mode == "images":
            rows = np.array([np.random.default_rng([self.seed, self.split_id, i]).integers(len(self.source))
                             for i in idx], dtype=np.int64)
            return {"image": self.source.fetch(rows), "factors": torch.from_numpy(self.chosen[rows]),
                    "index": torch.from_numpy(idx)}
        src, act, tgt = [], [], []
        for i in idx:
            s, a, t = self.pair_index.sample(1, np.random.default_rng([self.seed, self.split_id, i]),
                                             weights=self.weights)
            src.append(s[0]), act.append(a[0]), tgt.append(t[0])
        src, tgt = np.asarray(src, dtype=np.int64), np.asarray(tgt, dtype=np.int64)
        return {
            "image": self.source.fetch(src),
            "image_next": self.source.fetch(tgt),
            "factors": torch.from_numpy(self.chosen[src]),
            "factors_next": torch.from_numpy(self.chosen[tgt]),
            "action": torch.as_tensor(np.asarray(act, dtype=np.int64)),
            "index": torch.from_numpy(idx),
        }


class CelebADataModule(_BaseDataModule):
    """CelebA from the torchvision folder layout, local parquet, or the offline procedural twin.

    Splits come from ``list_eval_partition.txt`` (parquet: the file's split). A pair toggles one
    chosen attribute while the other chosen attributes match; ``pair_counts`` says how many such
    pairs each action has in each split.
    """

    def __init__(self, config: DataConfig) -> None:
        super().__init__(config)
        from . import celeba

        self._celeba = celeba
        self.attributes = tuple(config.attributes or celeba.DEFAULT_PAIR_ATTRIBUTES)
        self._space = celeba.celeba_space(self.attributes)
        self._sources: dict[str, ArraySource] = {}
        self._twin = False
        self.pair_counts: dict[str, dict[str, int]] = {}
        self.save_hyperparameters({"data": {k: v for k, v in vars(config).items() if k != "extra"}})

    @property
    def space(self) -> FactorSpace:
        return self._space

    def _root(self) -> tuple[str, Path]:
        """("folder" | "parquet", path), writing the twin when no real data is given."""
        c = self.config
        explicit = c.data_root is not None
        root = c.data_root if explicit else os.environ.get(DATA_ROOT_ENV)
        if root:
            path = Path(root).expanduser()
            if path.suffix == ".parquet" or (path.is_dir() and any(path.glob("*.parquet"))
                                             and not (path / "celeba").is_dir()):
                return "parquet", path
            if (path / "celeba" / "list_attr_celeba.txt").is_file() or (path / "celeba").is_dir():
                return "folder", path
            if explicit:
                if not path.exists():
                    raise FileNotFoundError(
                        f"celeba: --data-root {path} does not exist. Point it at the folder that contains "
                        "celeba/, or at a parquet file, or leave it out to use the CelebA procedural twin."
                    )
                raise FileNotFoundError(
                    f"celeba: --data-root {path} holds neither celeba/list_attr_celeba.txt (torchvision "
                    "layout) nor .parquet files. Point it at the folder that contains celeba/, or at a "
                    "parquet file, or leave it out to use the CelebA procedural twin."
                )
            log.warning("celeba: $%s=%s holds no CelebA; using the procedural twin", DATA_ROOT_ENV, path)
        self._twin = True
        cache = Path(c.cache_root) if c.cache_root else default_cache_root()
        twin_root = cache / f"celeba-twin-n{c.twin_size}"
        if not (twin_root / "celeba" / "list_attr_celeba.txt").is_file():
            from .celeba_twin import write_celeba_twin

            log.info("celeba: no real data given; writing the procedural twin (%d faces) to %s",
                     c.twin_size, twin_root)
            write_celeba_twin(twin_root, num_images=c.twin_size, seed=0, write_parquet=False)
        else:
            log.info("celeba: no real data given; using the procedural twin at %s", twin_root)
        return "folder", twin_root

    def _read(self, split: str) -> ArraySource:
        kind, path = self._root()
        cache = Path(self.config.cache_root) if self.config.cache_root else default_cache_root()
        file_split = {"train": "train", "val": "valid", "test": "test"}[split]
        if kind == "folder":
            return self._celeba.read_celeba_folder(path, split=file_split, cache_root=cache)
        files = sorted(str(p) for p in path.glob("*.parquet")) if path.is_dir() else [str(path)]
        return self._celeba.read_celeba_parquet(files, split=file_split, cache_root=cache)

    def _make_source(self):
        self._sources = {split: self._read(split) for split in SPLITS}
        if self._twin:
            for source in self._sources.values():
                source.is_twin = True
                source.description = source.description.replace("CelebA folder", "CelebA procedural twin folder")
        return self._sources["train"]

    def _make_dataset(self, split: str, length: int) -> Dataset:
        source = self._sources[split]
        all_names = list(self._celeba.CELEBA_ATTRIBUTES)
        cols = [all_names.index(a) for a in self.attributes]
        chosen = np.ascontiguousarray(np.asarray(source.labels)[:, cols], dtype=np.int64)
        pair_index = self._celeba.AttributePairIndex(np.asarray(source.labels), self.attributes, all_names)
        self.pair_counts[split] = pair_index.pair_counts()
        log.info("celeba %s: %d images; pairs per action: %s", split, len(source),
                 ", ".join(f"{name} {n:,}" for name, n in self.pair_counts[split].items() if name.endswith("+")))
        per_factor = factor_weights(self.space, self.config.frequency)
        weights = np.repeat(per_factor / 2, 2)
        mode = self.config.mode if split == "train" else "pairs"
        return _CelebAItems(source, chosen, SPLITS.index(split), length, self.config.seed,
                            mode, pair_index, weights)


DATASETS: dict[str, type[_BaseDataModule]] = {
    "dsprites": FactorDataModule,
    "shapes3d": FactorDataModule,
    "celeba": CelebADataModule,
}


def build_datamodule(dataset: str, **overrides) -> _BaseDataModule:
    """The DataModule registered under ``dataset`` with :class:`DataConfig` fields as overrides."""
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; choose one of {sorted(DATASETS)}")
    config = overrides.pop("config", None) or DataConfig(dataset=dataset, **overrides)
    return DATASETS[dataset](config)
