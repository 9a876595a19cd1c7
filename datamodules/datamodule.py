"""Lightning DataModules for every dataset, chosen by name from one registry.

``build_datamodule("shapes3d", data_root=None)`` gives the 3D Shapes procedural twin (renderer
version ``twin_version="1"``, the default, or ``"2"``: ``docs/twin_fidelity.md``);
``build_datamodule("shapes3d", data_root="/data")`` reads ``/data/3dshapes.h5`` (an explicit root
that holds no readable file is an error, never a silent fallback). ``$CAUSAL_VQVAE_DATA_ROOT`` is
the default root; a dataset whose file is absent under it falls back to its twin, saying so.
A twin version other than the default asks for the twin: it ignores ``$CAUSAL_VQVAE_DATA_ROOT``
(saying so) and is refused with an explicit ``data_root`` (a real file has no renderer version).

The loader plumbing shared by all of them (:class:`DataConfig`, :class:`EpochSampler`, the batch
format, :data:`TRAINER_KWARGS`) is in :mod:`datamodules.base` and re-exported here.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from .base import (
    DEFAULT_TWIN_VERSION,
    TRAINER_KWARGS,
    DataConfig,
    EpochSampler,
    _BaseDataModule,
    _WithImages,
    _world,  # noqa: F401  (re-exported: causal_vqvae.training.code_pool imports it from here)
    twin_versions,
)
from .factors import FactorSpace
from .pairs import SPLITS, StateSamples, TransitionPairs, factor_weights
from .sources import ArraySource, TwinSource, built_once, default_cache_root

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


# The split a parquet file holds, by the start of its name (Hugging Face's layout: train-00000-of-00002.parquet).
_PARQUET_SPLITS = {"train": "train", "valid": "valid", "validation": "valid", "val": "valid", "test": "test"}


def _parquet_splits(files: list[Path], root: Path) -> dict[str, list[str]]:
    """CelebA parquet files by split, from their names; a clear error when a split has none."""
    splits: dict[str, list[str]] = {}
    for file in files:
        prefix = file.name.split("-")[0].split(".")[0].lower()
        if prefix in _PARQUET_SPLITS:
            splits.setdefault(_PARQUET_SPLITS[prefix], []).append(str(file))
    missing = [split for split in ("train", "valid", "test") if split not in splits]
    if missing:
        raise ValueError(
            f"celeba: --data-root {root}: the parquet files must say their split by name, as Hugging Face "
            f"writes them (train-*.parquet, validation-*.parquet, test-*.parquet); none is for "
            f"{', '.join(missing)} among {', '.join(f.name for f in files[:5])}. Put the three splits' files in "
            "one folder and point --data-root at it (or use read_celeba_parquet(..., split=...) from Python)")
    return splits


# --------------------------------------------------------------------------------------------
# Datasets with a factor space: dSprites and 3D Shapes
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _FactorDataset:
    space: Callable[[], FactorSpace]
    twin: Callable[[str], TwinSource]  # the twin of a renderer version (DataConfig.twin_version)
    read: Callable[..., ArraySource]
    file_names: tuple[str, ...]  # looked for inside a data root, in order


def _dsprites_entry() -> _FactorDataset:
    from . import dsprites

    # dSprites has one twin (DataConfig allows only twin_version "1").
    return _FactorDataset(lambda: dsprites.DSPRITES, lambda version: dsprites.dsprites_twin(), dsprites.read_dsprites,
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
        self._alternate = None  # the renderer augmentation's render function (alternate_render), made on first use
        self.save_hyperparameters({"data": {k: v for k, v in vars(config).items() if k != "extra"}})

    @property
    def space(self) -> FactorSpace:
        return self.entry.space()

    def make_twin(self) -> TwinSource:
        """The procedural twin of ``config.twin_version``, whatever the data root."""
        return self.entry.twin(self.config.twin_version)

    def alternate_render(self):
        """The render function of ``config.renderer_version``, by default the twin's next renderer
        version after ``config.twin_version``, or the one before the last version (for the ``renderer``
        augmentation: the nearest other renderer), or None (real data, or a twin of one version)."""
        versions = twin_versions(self.config.dataset)
        if not isinstance(self.source, TwinSource) or len(versions) < 2:
            return None
        if self._alternate is None:
            at = versions.index(self.config.twin_version)
            other = self.config.renderer_version or (versions[at + 1] if at + 1 < len(versions) else versions[at - 1])
            self._alternate = self.entry.twin(other).render
        return self._alternate

    def _make_source(self):
        c = self.config
        if c.twin_version != DEFAULT_TWIN_VERSION or "renderer" in c.augment:
            # A twin version, or the renderer augmentation, asks for the twin (DataConfig refuses
            # either with an explicit data_root).
            if os.environ.get(DATA_ROOT_ENV):
                why = (f"twin_version {c.twin_version}" if c.twin_version != DEFAULT_TWIN_VERSION
                       else "the renderer augmentation")
                log.info("%s: %s asks for the procedural twin; $%s is not read", c.dataset, why, DATA_ROOT_ENV)
            twin = self.make_twin()
            log.info("%s: %s (rendered on the training device)", c.dataset, twin.description)
            return twin
        path = resolve_source(self.entry.file_names, c.data_root, c.dataset)
        if path is None:
            log.info("%s: no real file given; using the procedural twin (rendered on the training device)", c.dataset)
            return self.make_twin()
        cache = Path(c.cache_root) if c.cache_root else default_cache_root()
        source = self.entry.read(path, cache_root=cache)
        log.info("%s: reading the real file %s through its memmap cache", c.dataset, path)
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
        written = twin_root / "celeba" / "list_attr_celeba.txt"
        if not written.is_file():
            from .celeba.twin import write_celeba_twin

            def write() -> None:
                log.info("celeba: no real data given; writing the procedural twin (%d faces) to %s",
                         c.twin_size, twin_root)
                write_celeba_twin(twin_root, num_images=c.twin_size, seed=0, write_parquet=False)

            twin_root.parent.mkdir(parents=True, exist_ok=True)
            built_once(twin_root.parent / f".{twin_root.name}.lock", lambda: not written.is_file(), write)
        else:
            log.info("celeba: no real data given; using the procedural twin at %s", twin_root)
        return "folder", twin_root

    def _read(self, split: str) -> ArraySource:
        kind, path = self._root()
        cache = Path(self.config.cache_root) if self.config.cache_root else default_cache_root()
        file_split = {"train": "train", "val": "valid", "test": "test"}[split]
        if kind == "folder":
            return self._celeba.read_celeba_folder(path, split=file_split, cache_root=cache)
        files = sorted(path.glob("*.parquet")) if path.is_dir() else [path]
        return self._celeba.read_celeba_parquet(_parquet_splits(files, path), split=file_split, cache_root=cache)

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
