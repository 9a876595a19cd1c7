"""Where a run trains: the Trainer's device arguments from the command line's flags, and the DDP
strategy for several processes."""

from __future__ import annotations

import inspect
import logging
from typing import Any

import pytorch_lightning as pl
import torch

__all__ = ["ddp_strategy", "device_name", "resolve_devices"]

log = logging.getLogger("train")


def ddp_strategy(**kwargs: Any) -> pl.strategies.DDPStrategy:
    """Lightning's DDP strategy for :class:`CausalVQVAEModule`, without DDP's buffer copy at each step.

    DDP's default copies rank 0's buffers to every rank before each training forward. The module
    keeps its buffers equal on all ranks itself (see this module's docstring), except the
    quantizer's ``usage_counts``, which are each rank's own and which the copy would replace with
    rank 0's, so that ``val/codes_in_use`` missed the codes seen on the other ranks. The buffers
    are still copied from rank 0 once, when DDP wraps the model, where torch can (its
    ``forward_sync_buffers``; torch releases without it skip that copy too, and the ranks start
    equal anyway, built from one seed or loaded from one file). ``kwargs`` go to
    :class:`~pytorch_lightning.strategies.DDPStrategy` and from it to DDP."""
    from torch.nn.parallel import DistributedDataParallel

    if "forward_sync_buffers" in inspect.signature(DistributedDataParallel.__init__).parameters:
        return pl.strategies.DDPStrategy(**{"forward_sync_buffers": False, **kwargs})
    return pl.strategies.DDPStrategy(**{"broadcast_buffers": False, **kwargs})


def resolve_devices(gpus: int | None, precision: str | None, accelerator: str = "auto") -> dict[str, Any]:
    """Trainer device arguments; a clear error when more GPUs are asked for than exist.

    ``accelerator="cpu"``: ``gpus`` (default 1) CPU processes, under DDP (gloo) when more than one."""
    if accelerator not in ("auto", "gpu", "cpu"):
        raise SystemExit(f"--accelerator {accelerator}: choose auto, gpu or cpu")
    if accelerator == "cpu":
        processes = 1 if gpus is None else gpus
        if processes < 1:
            raise SystemExit(f"--devices must be >= 1 with --accelerator cpu (CPU processes), got {processes}")
        log.info("no GPU used: training on the %s%s", device_name({"accelerator": "cpu"}),
                 f" in {processes} processes (DDP, gloo)" if processes > 1 else "")
        return {"accelerator": "cpu", "devices": processes, "precision": precision or "32-true",
                "strategy": "ddp" if processes > 1 else "auto"}
    available = torch.cuda.device_count()
    if gpus is None and accelerator == "gpu":
        gpus = 1
    if gpus == 0 and accelerator == "gpu":
        raise SystemExit("--gpus 0 asks for no GPU but --accelerator gpu for one; drop one of them")
    if gpus is None:
        gpus = 1 if available else 0
    if gpus < 0:
        raise SystemExit(f"--gpus must be >= 0, got {gpus}")
    if gpus > available:
        advice = ("run with --gpus 0 (CPU) or on a machine with GPUs" if available == 0
                  else f"use --gpus {available} or fewer")
        raise SystemExit(f"--gpus {gpus} asked for {gpus} GPU(s) but this machine has {available}; {advice}")
    if gpus == 0:
        log.info("no GPU used: training on the %s", device_name({"accelerator": "cpu"}))
        return {"accelerator": "cpu", "devices": 1, "precision": precision or "32-true", "strategy": "auto"}
    return {"accelerator": "gpu", "devices": gpus, "precision": precision or "bf16-mixed",
            "strategy": "ddp" if gpus > 1 else "auto"}


def device_name(device_kwargs: dict[str, Any]) -> str:
    if device_kwargs["accelerator"] == "gpu":
        return f"{device_kwargs['devices']} x {torch.cuda.get_device_name(0)}"
    threads = torch.get_num_threads()
    processes = device_kwargs.get("devices", 1)
    return (f"{processes} x " if processes > 1 else "") + f"CPU ({threads} thread{'' if threads == 1 else 's'})"
