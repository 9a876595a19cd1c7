"""No host syncs in a training step: nothing in the model's steps, the twins' rendering or the
training loop reads a device value back to the host at every step.

On a GPU such a read (``.item()``, ``bool(tensor)``, ``nonzero``, boolean-mask indexing...) makes
the host wait for all queued work, so the next kernels cannot be queued ahead. These tests run on
the CPU and record the operators that would synchronise on a GPU, with the Python line that called
them. Left out are reads of tensors that stay on the host in a GPU run too: torch's AdamW reads its
step counter, a CPU tensor unless fused (the fused CUDA AdamW reads nothing), and a DataModule checks
the classes in ``on_before_batch_transfer``, before they move to the device.
"""

from __future__ import annotations

import traceback
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import datamodules.dsprites.twin as dsprites_module
from causal_vqvae.training.config import TrainConfig
from causal_vqvae.training.module import CausalVQVAEModule
from datamodules.datamodule import TRAINER_KWARGS, build_datamodule
from datamodules.dsprites import DSPRITES
from tiny import tiny_dsprites_model

ROOT = Path(__file__).resolve().parents[2]

# aten operators whose result the host must wait for (their output size or value is data-dependent)
SYNCING_OPS = {"_local_scalar_dense", "nonzero", "nonzero_static", "masked_select", "is_nonzero", "equal",
               "unique", "_unique", "_unique2", "unique_dim", "unique_consecutive", "allclose", "bincount",
               "histc"}


class HostReads(TorchDispatchMode):
    """Records each syncing operator as ``(op, innermost repository line)``."""

    def __init__(self) -> None:
        super().__init__()
        self.reads: list[tuple[str, str]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.__name__.split(".")[0]
        if name in SYNCING_OPS:
            stack = traceback.extract_stack()
            host_side = any("/torch/optim/" in frame.filename or frame.name == "on_before_batch_transfer"
                            for frame in stack)
            if not host_side:
                ours = [f"{Path(frame.filename).relative_to(ROOT)}:{frame.lineno}" for frame in stack
                        if frame.filename.startswith(str(ROOT)) and "-packages" not in frame.filename
                        and not frame.filename.startswith(str(ROOT / "tests"))]
                self.reads.append((name, ours[-1] if ours else "?"))
        return func(*args, **(kwargs or {}))


@pytest.fixture
def gpu_rendering(monkeypatch):
    """Render the dSprites twin as on a GPU (every shape for every image, no split by shape)."""
    monkeypatch.setattr(dsprites_module, "_split_by_shape", lambda device: False)


def test_model_training_and_retrieval_steps_read_nothing_back():
    model = tiny_dsprites_model().train()
    g = torch.Generator().manual_seed(0)
    x, x_next = torch.rand(8, 1, 64, 64, generator=g), torch.rand(8, 1, 64, 64, generator=g)
    action = torch.randint(0, 10, (8,), generator=g)
    with HostReads() as vqvae_step:
        model.autoencoder_loss(x, generator=g).loss.backward()
    codes, target = model.encode_codes(x), model.encode_codes(x_next)
    with HostReads() as causal_step:
        tl = model.transition_loss(codes, action, target, progress=0.5, generator=g)
        rl = model.retrieval_loss(codes, target, action)
        (tl.loss + rl.loss).backward()
        model.update_multipliers(tl)
    model.eval()
    with HostReads() as inference, torch.no_grad():
        for method in ("head", "transition"):
            model.retrieve(x, x_next, method=method)
        model.edit(x, action)
    assert vqvae_step.reads == [] and causal_step.reads == [] and inference.reads == []


@pytest.mark.parametrize("dataset", ["dsprites", "shapes3d"])
def test_twin_batches_render_on_the_device_without_host_reads(dataset, gpu_rendering):
    dm = build_datamodule(dataset, batch_size=16, train_length=16, num_workers=0)
    batch = next(iter(dm.train_dataloader()))
    batch = dm.on_before_batch_transfer(batch, 0)  # the range check, on the host
    dm.prepare_batch(batch)  # builds the twin's tables on this device (once per device)
    with HostReads() as rendering:
        prepared = dm.on_after_batch_transfer(batch, 0)
    assert rendering.reads == []
    assert prepared["image"].shape[0] == 16 and prepared["image_next"].shape == prepared["image"].shape
    assert torch.equal(prepared["image"], dm.source.render(batch["factors"]))  # the same images, checked


def test_the_host_still_refuses_out_of_range_classes():
    dm = build_datamodule("dsprites", batch_size=4, train_length=4, num_workers=0)
    batch = next(iter(dm.train_dataloader()))
    batch["factors_next"] = batch["factors_next"].clone()
    batch["factors_next"][1, 1] = 7  # dSprites has 3 shapes
    with pytest.raises(ValueError, match="class out of range for factor 'shape'"):
        dm.on_before_batch_transfer(batch, 0)


def test_rendering_without_the_split_by_shape_gives_the_same_images():
    """The GPU path (every shape mask for every image, then a select) and the CPU path (each image
    only its own shape) render bit-identical images, all three shapes included."""
    g = torch.Generator().manual_seed(3)
    classes = torch.stack([torch.randint(0, size, (300,), generator=g) for size in DSPRITES.sizes], 1)
    tables = dsprites_module._render_tables(torch.device("cpu"))
    split = torch.empty(300, 64, 64)
    whole = torch.empty(300, 64, 64)
    dsprites_module._render_chunk(classes, split, tables, split=True)
    dsprites_module._render_chunk(classes, whole, tables, split=False)
    assert set(classes[:, 1].tolist()) == {0, 1, 2}
    assert torch.equal(split, whole) and 0 < split.mean() < 0.5


def _reads_in_fit(steps: int) -> list[tuple[str, str]]:
    """Syncing reads of a vqvae-stage fit of ``steps`` steps, progress bar on."""
    model = tiny_dsprites_model()
    dm = build_datamodule("dsprites", mode="images", batch_size=8, train_length=8 * steps, num_workers=0)
    trainer = pl.Trainer(max_steps=steps, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=True, enable_model_summary=False,
                         num_sanity_val_steps=0, limit_val_batches=0, **TRAINER_KWARGS)
    with HostReads() as fit:
        trainer.fit(CausalVQVAEModule(model, "vqvae", TrainConfig(vqvae_steps=steps, warmup_steps=1)), datamodule=dm)
    return fit.reads


def test_the_training_loop_reads_nothing_back_per_step(gpu_rendering):
    """Only once-per-fit reads (setup): as many in 12 steps as in 4. Before, Lightning read the
    training PSNR back after every step for the progress bar, and the twin's range check and split
    by shape read the classes."""
    few, more = _reads_in_fit(4), _reads_in_fit(12)
    assert len(more) == len(few), sorted(set(more) - set(few))
