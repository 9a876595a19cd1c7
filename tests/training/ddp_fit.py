"""A short joint stage in two DDP processes on the CPU (gloo), with :func:`ddp_strategy`.

Run by ``tests/training/test_training.py`` as ``python tests/training/ddp_fit.py OUT``; Lightning's launcher runs this
file again for the second process. Each rank writes ``OUT/rank<R>.pt`` (tensors only): its state
dict, its codebook before training, its quantizer's usage counts, the counts of the codes it
assigned itself and the logged ``val/codes_in_use``.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]


def main(out: Path) -> None:
    import pytorch_lightning as pl
    import torch

    from causal_vqvae.training.config import TrainConfig
    from causal_vqvae.training.devices import ddp_strategy
    from causal_vqvae.training.module import CausalVQVAEModule
    from datamodules.datamodule import TRAINER_KWARGS, build_datamodule
    from tiny import tiny_dsprites_model

    steps, batch = 4, 8
    model = tiny_dsprites_model(codebook_size=256, target_budget=1.0, target_budget_start=1.0,
                                target_context_layers=1)
    quantizer = model.quantizer
    assigned = torch.zeros_like(quantizer.usage_counts)  # the codes this process assigned, counted
    count = quantizer.counts

    def counting(codes: torch.Tensor) -> torch.Tensor:
        counts = count(codes)
        assigned.add_(counts)
        return counts

    quantizer.counts = counting  # one epoch, so the usage counts are never reset in between
    dm = build_datamodule("dsprites", mode="pairs", batch_size=batch, train_length=2 * batch * steps,
                          val_length=32, num_workers=0)
    config = TrainConfig(joint_steps=steps, warmup_steps=1, val_every=steps)
    trainer = pl.Trainer(max_steps=steps, accelerator="cpu", devices=2, strategy=ddp_strategy(), logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         num_sanity_val_steps=0, **TRAINER_KWARGS)
    initial_embedding = quantizer.embedding.detach().clone()
    trainer.fit(CausalVQVAEModule(model, "joint", config), datamodule=dm)
    result = {
        "state": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "initial_embedding": initial_embedding,
        "usage_counts": quantizer.usage_counts.clone(),
        "assigned": assigned,
        "codes_in_use": trainer.callback_metrics["val/codes_in_use"].clone(),
    }
    path = out / f"rank{trainer.global_rank}.pt"
    torch.save(result, path.with_suffix(".tmp"))
    path.with_suffix(".tmp").replace(path)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
