"""Training on a pool of codes: the stages with a frozen autoencoder, without encoding every step.

The causal and head stages train on code pairs, and the autoencoder that makes them is frozen. By
default every training step renders (twins) or reads its image pairs and encodes both images.
``TrainConfig.code_pool = N`` (``train.py --code-pool N``) instead encodes training pairs
``0..N-1`` once, when the stage's training starts, on the training device, under its precision,
and then trains on batches drawn from those codes. A pass over the pool visits every pair once in
a seeded random order; the next pass draws another order. Validation still encodes its image pairs.

A pool trades the variety of fresh pairs for speed: rendering and encoding leave the step. On
this project's CPU (one thread a run, two runs side by side), a causal step of the released models'
size took 0.70-0.76 s on a 40,000-pair pool, against 1.10 s on rendered and encoded pairs, after
3.5-6 minutes to encode the pool (``benchmarks/results/causal_cpu/README.md``). Pairs outside
the pool are never trained on, so keep it large next to the training split (3D Shapes: 336,000
states; a whole run of the `small` preset on a 40,000-pair pool, ``shapes3d_small_pool``, where an
earlier 3D Shapes release started, retrieved 98.1% of the test pairs by transition).

Items are pure functions of their index (``datamodules``), so the pool is the same on every DDP
rank and when a run resumes; each rank encodes all of it and the sampler shards the batches.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator
from contextlib import nullcontext

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from datamodules.datamodule import _world
from datamodules.pairs import batch_passthrough

from ..eval.data import encode_pairs
from .config import FROZEN_AUTOENCODER_STAGES

log = logging.getLogger(__name__)

__all__ = ["POOL_STAGES", "CodePool", "CodePoolDataModule", "PoolSampler", "encode_pairs"]

POOL_STAGES = FROZEN_AUTOENCODER_STAGES  # the stages a pool serves: their autoencoder is frozen


class CodePool(Dataset):
    """Encoded pairs as a dataset: ``__getitems__`` gives ``codes``, ``codes_next`` (B, N) long and
    ``action`` (B,) long."""

    def __init__(self, codes: torch.Tensor, target: torch.Tensor, action: torch.Tensor) -> None:
        if not len(codes) == len(target) == len(action):
            raise ValueError(f"pool tensors differ in length: {len(codes)}, {len(target)}, {len(action)}")
        self.codes, self.target, self.action = codes, target, action

    def __len__(self) -> int:
        return len(self.action)

    def __getitems__(self, indices) -> dict[str, torch.Tensor]:
        i = torch.as_tensor(indices, dtype=torch.long)
        return {"codes": self.codes[i].long(), "codes_next": self.target[i].long(), "action": self.action[i]}


class PoolSampler(Sampler[int]):
    """``epoch_length`` pool indices per epoch, from a stream of seeded random orders of the pool.

    Position ``p = epoch * epoch_length + i`` of the stream reads the pool's pass ``p // pool_size``
    (a permutation seeded by ``seed`` and the pass) at ``p % pool_size``: each pass visits every
    pair once, whatever the epoch length, and a resumed run continues the stream where it stopped.
    Positions are sharded over DDP ranks as :class:`datamodules.datamodule.EpochSampler` shards them
    (rank and world size read when iterated).
    """

    def __init__(self, pool_size: int, epoch_length: int, seed: int) -> None:
        if pool_size < 1 or epoch_length < 1:
            raise ValueError(f"pool_size and epoch_length must be positive, got {pool_size} and {epoch_length}")
        self.pool_size, self.epoch_length, self.seed = pool_size, epoch_length, seed
        self.epoch = 0
        self._orders: dict[int, torch.Tensor] = {}

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return math.ceil(self.epoch_length / _world()[1])

    def order(self, index: int) -> torch.Tensor:
        """The permutation of pass ``index`` through the pool."""
        if index not in self._orders:
            self._orders = {k: v for k, v in self._orders.items() if k >= index - 1}  # keep at most a few
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + index)
            self._orders[index] = torch.randperm(self.pool_size, generator=g)
        return self._orders[index]

    def __iter__(self) -> Iterator[int]:
        rank, world = _world()
        start = self.epoch * self.epoch_length
        for j in range(math.ceil(self.epoch_length / world)):
            position = start + (rank + j * world) % self.epoch_length
            yield int(self.order(position // self.pool_size)[position % self.pool_size])


class CodePoolDataModule(pl.LightningDataModule):
    """Training batches from a pool of codes, held-out batches from the image DataModule ``images``.

    ``images``'s training split must hold at least ``pool_size`` items (build it with
    ``train_length=pool_size``); its items ``0..pool_size-1`` are encoded by ``model`` (its encoder
    and quantizer, frozen) when the trainer first asks for the training loader, on the model's
    device and in the trainer's precision, as the training step would encode them. ``epoch_length``
    pairs per epoch (on all ranks together), drawn by a :class:`PoolSampler` seeded with ``seed``.
    """

    def __init__(self, images: pl.LightningDataModule, model: torch.nn.Module, pool_size: int, epoch_length: int,
                 seed: int, encode_batch: int = 500) -> None:
        super().__init__()
        if pool_size < images.config.batch_size:
            raise ValueError(f"a code pool of {pool_size} pairs is smaller than one batch "
                             f"({images.config.batch_size}): use a larger pool")
        self.images, self.model = images, model
        self.pool_size, self.encode_batch = pool_size, encode_batch
        self.pool: CodePool | None = None
        self.sampler = PoolSampler(pool_size, epoch_length, seed)

    # What the callbacks read off a DataModule (validation pictures): the image DataModule's.
    @property
    def space(self):
        return self.images.space

    @property
    def actions(self):
        return self.images.actions

    @property
    def source(self):
        return self.images.source

    @property
    def config(self):
        return self.images.config

    def sample_batch(self, *args, **kwargs) -> dict:
        return self.images.sample_batch(*args, **kwargs)

    def prepare_batch(self, *args, **kwargs) -> dict:
        return self.images.prepare_batch(*args, **kwargs)

    def prepare_data(self) -> None:
        self.images.prepare_data()

    def setup(self, stage: str | None = None) -> None:
        self.images.setup(stage)

    def encode(self) -> CodePool:
        """Encode the pool (once)."""
        if self.pool is None:
            self.images.setup()
            dataset = self.images._datasets["train"]
            device = next(self.model.parameters()).device
            trainer = getattr(self, "trainer", None)
            precision = trainer.precision_plugin.forward_context() if trainer is not None else nullcontext()
            modes = {m: m.training for m in self.model.modules()}
            self.model.eval()
            start = time.perf_counter()
            try:
                with precision:
                    data = encode_pairs(self.model, self.images, dataset, self.pool_size, self.encode_batch, device,
                                        desc="encoding the code pool", augment=True)  # training pairs
            finally:
                for m, training in modes.items():
                    m.train(training)
            self.pool = CodePool(data["codes"], data["target"], data["action"])
            log.info("code pool: %d training pairs encoded in %.1f s", self.pool_size, time.perf_counter() - start)
        return self.pool

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.encode(), batch_size=self.images.config.batch_size, sampler=self.sampler,
                          collate_fn=batch_passthrough, num_workers=0, pin_memory=torch.cuda.is_available(),
                          drop_last=True)

    def val_dataloader(self) -> DataLoader:
        return self.images.val_dataloader()

    def test_dataloader(self) -> DataLoader:
        return self.images.test_dataloader()

    def on_before_batch_transfer(self, batch: dict, dataloader_idx: int) -> dict:
        return batch if "codes" in batch else self.images.on_before_batch_transfer(batch, dataloader_idx)

    def on_after_batch_transfer(self, batch: dict, dataloader_idx: int) -> dict:
        return batch if "codes" in batch else self.images.on_after_batch_transfer(batch, dataloader_idx)

