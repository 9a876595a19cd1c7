"""What every DataModule shares: its config, the epoch sampler, the loaders and the batch hooks.

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

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pytorch_lightning as pl
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, Sampler

from .augment import augment_images, check_augment, no_other_renderer
from .factors import ActionSpace, FactorSpace
from .pairs import DEFAULT_FRACTIONS, SPLITS, batch_passthrough
from .sources import DEFAULT_TWIN_VERSION, ArraySource, TwinSource, to_float_images

__all__ = ["DEFAULT_TWIN_VERSION", "TRAINER_KWARGS", "DataConfig", "EpochSampler", "twin_versions"]

TRAINER_KWARGS = {"use_distributed_sampler": False}


@dataclass
class DataConfig:
    """Everything a DataModule needs; ``train.py`` sets it from its flags and a ``--config`` file's
    ``data`` section."""

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
    # The procedural twin's renderer version (twin_versions(dataset)): 3D Shapes "1" (the default, what the
    # released models were trained on) to "4" (the closest to the real frames, docs/twin_fidelity.md); the
    # other datasets have "1" only. A version other than "1" asks for the twin: it cannot go with a real file.
    twin_version: str = DEFAULT_TWIN_VERSION
    # Training augmentation for what the twin does not match in real images (datamodules.augment):
    # names from AUGMENTATIONS (renderer, resample, blur, jpeg, colour, border), each applied to a
    # training item with augment_probability; none by default. Held-out batches are never augmented.
    augment: Sequence[str] = ()
    augment_probability: float = 0.3
    # The version the "renderer" augmentation renders with; None: the nearest other version (the next
    # one, the last version the one before). E.g. "1" on a version-4 twin: one model for both twins.
    renderer_version: str | None = None
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.mode not in ("pairs", "images"):
            raise ValueError(f"mode must be 'pairs' or 'images', got {self.mode!r}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {self.batch_size}")
        for name in ("train_length", "val_length", "test_length"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if isinstance(self.twin_version, int) and not isinstance(self.twin_version, bool):
            self.twin_version = str(self.twin_version)  # twin_version=2 from Python means "2"
        choices = twin_versions(self.dataset)
        if self.twin_version not in choices:
            allowed = (f"one of {', '.join(map(repr, choices))} for {self.dataset}" if len(choices) > 1 else
                       f"{choices[0]!r} for {self.dataset} (only 3D Shapes has more than one twin version)")
            raise ValueError(f"twin_version must be {allowed}, got {self.twin_version!r}")
        if self.twin_version != DEFAULT_TWIN_VERSION and self.data_root is not None:
            raise ValueError(f"twin_version {self.twin_version!r} chooses a renderer of the {self.dataset} procedural "
                             f"twin, and data_root {self.data_root} is real data, which has none: leave twin_version "
                             f"at {DEFAULT_TWIN_VERSION!r} to read the real data, or leave data_root out to use the twin")
        self.augment = check_augment(self.augment, self.augment_probability, len(choices), self.data_root is None)
        if self.renderer_version is not None:
            self._check_renderer_version(choices)

    def _check_renderer_version(self, choices: tuple[str, ...]) -> None:
        version = self.renderer_version
        if isinstance(version, int) and not isinstance(version, bool):
            version = self.renderer_version = str(version)  # renderer_version=1 from Python means "1"
        if not isinstance(version, str):
            raise ValueError(f"renderer_version must be a twin version such as '1', got {version!r} "
                             f"({type(version).__name__})")
        why = no_other_renderer(len(choices), self.data_root is None)
        if why:
            raise ValueError(f"renderer_version {version!r} names a renderer of the twin, but {why}; leave it out")
        others = [v for v in choices if v != self.twin_version]
        if version not in others:
            raise ValueError(f"renderer_version must be another version of the {self.dataset} twin than "
                             f"twin_version {self.twin_version!r}: one of {', '.join(map(repr, others))}, "
                             f"got {version!r}")
        if "renderer" not in self.augment:
            raise ValueError(f"renderer_version {version!r} is the version the 'renderer' augmentation renders "
                             f"with, and augment {list(self.augment)} does not name it: add 'renderer' to augment "
                             f"(--augment renderer,...), or leave renderer_version out")


def twin_versions(dataset: str) -> tuple[str, ...]:
    """The renderer versions of ``dataset``'s procedural twin, the default first: 3D Shapes has
    ``datamodules.shapes3d.TWIN_VERSIONS``, every other dataset ``("1",)``."""
    if dataset != "shapes3d":
        return (DEFAULT_TWIN_VERSION,)
    from .shapes3d.scene import DEFAULT_TWIN_VERSION as default
    from .shapes3d.scene import TWIN_VERSIONS

    return (default, *sorted(v for v in TWIN_VERSIONS if v != default))


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
        trainer = getattr(self, "trainer", None)  # training batches only are augmented
        return self.prepare_batch(batch, checked=True, augment=trainer is not None and trainer.training)

    def prepare_batch(self, batch: dict, checked: bool = False, augment: bool = False) -> dict:
        """Render (twins) or convert (real files) the images of a batch on its device.
        ``checked``: the classes were range-checked already (``on_before_batch_transfer``).
        ``augment``: apply ``config.augment`` (training batches: :mod:`datamodules.augment`)."""
        batch = dict(batch)
        if isinstance(self.source, TwinSource):
            batch["image"] = self.source.render(batch["factors"], check=not checked)
            if "factors_next" in batch:
                batch["image_next"] = self.source.render(batch["factors_next"], check=not checked)
        else:
            batch["image"] = to_float_images(batch["image"])
            if "image_next" in batch:
                batch["image_next"] = to_float_images(batch["image_next"])
        if augment and self.config.augment:
            keys = [k for k in ("image", "image_next") if k in batch]
            index = batch.get("index")
            if index is None:
                index = torch.arange(batch["image"].shape[0], device=batch["image"].device)
            alternate = self.alternate_render()
            factor_keys = {"image": "factors", "image_next": "factors_next"}
            render = None if alternate is None else (
                lambda i: alternate(batch[factor_keys[keys[i]]], check=False))  # checked by the render above
            images = augment_images([batch[k] for k in keys], index.to(batch["image"].device), self.config.augment,
                                    self.config.augment_probability, self.config.seed, render)
            batch.update(zip(keys, images))
        return batch

    def alternate_render(self):
        """A render function of another renderer version of the twin (``config.renderer_version``, by
        default the nearest other), for the ``renderer`` augmentation; None where there is none (real
        data, a twin of one version)."""
        return None

    def sample_batch(self, split: str = "val", size: int | None = None, device: str | torch.device = "cpu") -> dict:
        """One prepared batch of ``split`` (items 0..size-1), e.g. for previews and benchmarks."""
        self.setup()
        size = size or self.config.batch_size
        batch = self._datasets[split].__getitems__(list(range(size)))
        batch = {k: v.to(device) for k, v in batch.items()}
        return self.prepare_batch(batch)
