"""Which retrieval head reads a trained model's codes best? Head variants trained on the codes of
one frozen model, scored on its held-out test pairs.

    python experiments/retrieval_head_variants/retrieval_head_variants.py \
        --model checkpoints/dsprites_twin --data dsprites \
        [--train-pairs 100000] [--steps 600] [--batch 256] [--variants conv transformer ...] \
        [--test-pairs 5000] [--device cpu] [--seed 0] [--out experiments/retrieval_head_variants/results/NAME.json]

The model's autoencoder encodes ``--train-pairs`` training pairs of the procedural twin once (the
pairs of ``TransitionPairs(space, "train", seed=seed)``) and the bench's test pairs (test items
0..test_pairs-1, the pairs ``python -m causal_vqvae.cli.bench`` scores). Each variant then trains from
the same seed for ``--steps`` AdamW steps of ``--batch`` pairs drawn from those codes (lr 1e-3,
weight decay 0.01, 100 warm-up steps then cosine decay to 0, gradient norm clipped at 1), and is
scored on the test codes: action accuracy, overall and per factor. The model's own head is scored
as well (``model``). Variants, two choices crossed:

- ``transformer``: :class:`~causal_vqvae.nn.retrieval.RetrievalHead`, attention over *learned* code
  embeddings (the head of every model saved before the convolutional head);
- ``transformer_vectors``: the same transformer, fed the model's codebook vectors (frozen) through
  a linear map instead;
- ``conv_learned``: :class:`~causal_vqvae.nn.retrieval.ConvRetrievalHead` on learned code embeddings;
- ``conv``: :class:`~causal_vqvae.nn.retrieval.ConvRetrievalHead` on the codebook vectors, the grid
  layout's head.

Widths: ``--width`` (64, as the released heads) for all, two blocks each (the transformer: 2 layers,
4 heads). Grid layout only. Prints a table and writes JSON (the command, the settings and every
variant's curve).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

_ROOT = Path(__file__).resolve().parents[2]
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

from causal_vqvae.api import load  # noqa: E402
from causal_vqvae.eval.data import encode_pair_pools  # noqa: E402
from causal_vqvae.eval.report import script_record  # noqa: E402
from causal_vqvae.files import write_json  # noqa: E402
from causal_vqvae.nn.retrieval import ConvRetrievalHead, RetrievalHead  # noqa: E402

VARIANTS = ("transformer", "transformer_vectors", "conv_learned", "conv")


class _OnVectors(nn.Module):
    """A head that takes code vectors, fed from a code -> vector table (frozen or learned)."""

    def __init__(self, head: nn.Module, table: nn.Embedding) -> None:
        super().__init__()
        self.head, self.table = head, table

    def forward(self, codes: torch.Tensor, target_codes: torch.Tensor) -> torch.Tensor:
        return self.head(self.table(codes), self.table(target_codes))


def build_variant(name: str, model, width: int) -> nn.Module:
    """Head ``name`` (see the module docstring) for ``model``'s codes: ``head(codes, target_codes)``."""
    c = model.config
    codebook = model.quantizer.embedding[0].detach().float().clone()  # (K, D), grid layout: one codebook
    if name.startswith("transformer"):
        head = RetrievalHead(c.num_nodes, c.num_actions, 1, c.codes_per_node, dim=width, layers=2, heads=4)
        if name == "transformer_vectors":
            head.code_embed = nn.Sequential(nn.Embedding.from_pretrained(codebook, freeze=True),
                                            nn.Linear(codebook.shape[1], width))
        return head
    if name.startswith("conv"):
        table = (nn.Embedding.from_pretrained(codebook, freeze=True) if name == "conv"
                 else nn.Embedding(*codebook.shape))
        return _OnVectors(ConvRetrievalHead(codebook.shape[1], c.grid_size, c.num_actions, width, layers=2), table)
    raise ValueError(f"unknown variant {name!r}; variants: {VARIANTS}")


@torch.no_grad()
def score(head: nn.Module, data: dict[str, torch.Tensor], factor_names: list[str], device: torch.device,
          batch: int = 1000) -> dict[str, Any]:
    was_training = head.training
    head.eval()
    predicted = torch.cat([
        head(data["codes"][s:s + batch].long().to(device), data["target"][s:s + batch].long().to(device))
        .argmax(-1).cpu()
        for s in range(0, len(data["action"]), batch)])
    head.train(was_training)
    truth = data["action"]
    right = predicted == truth
    # action ids are factor-major, two per factor
    per_factor = {name: right[truth // 2 == f].float().mean().item() for f, name in enumerate(factor_names)}
    return {"action_accuracy": right.float().mean().item(), "per_factor": per_factor}


def train_variant(name: str, model, train: dict[str, torch.Tensor], test: dict[str, torch.Tensor],
                  factor_names: list[str], args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(args.seed)
        head = build_variant(name, model, args.width).to(device)
    params = [p for p in head.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.01)
    warmup = min(100, args.steps)
    schedule = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (
        1 + math.cos(math.pi * min(s, args.steps) / args.steps)))
    draws = torch.Generator().manual_seed(args.seed)
    curve, start = [], time.perf_counter()
    head.train()
    for step in range(1, args.steps + 1):
        idx = torch.randint(0, len(train["action"]), (args.batch,), generator=draws)
        logits = head(train["codes"][idx].long().to(device), train["target"][idx].long().to(device))
        loss = F.cross_entropy(logits, train["action"][idx].to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        schedule.step()
        if step % max(1, args.steps // 6) == 0 or step == args.steps:
            curve.append({"step": step, "seconds": round(time.perf_counter() - start, 1), "loss": loss.item(),
                          "test_action_accuracy": score(head, test, factor_names, device)["action_accuracy"]})
            print(f"  {name}: step {step}, loss {loss.item():.4f}, test {curve[-1]['test_action_accuracy']:.4f}",
                  flush=True)
    return {**score(head, test, factor_names, device), "parameters": sum(p.numel() for p in params),
            "seconds": round(time.perf_counter() - start, 1), "curve": curve}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="model directory (save_pretrained), grid layout")
    p.add_argument("--data", required=True, choices=["dsprites", "shapes3d"])
    p.add_argument("--train-pairs", type=int, default=100_000)
    p.add_argument("--test-pairs", type=int, default=5000)
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    p.add_argument("--seed", type=int, default=0, help="training pairs, head initialisation and batch draws")
    p.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    p.add_argument("--out", default=None, help="JSON path")
    args = p.parse_args(argv)
    for name in ("train_pairs", "test_pairs", "steps", "batch", "width"):
        if getattr(args, name) < 1:
            raise SystemExit(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model = load(args.model, device=device, expect_dataset=args.data)
    if model.config.latent_layout != "grid":
        raise SystemExit(f"{args.model} has the {model.config.latent_layout} layout; the variants need the grid")
    dm, train, test, encode_seconds = encode_pair_pools(model, args.data, args.train_pairs, args.test_pairs, args.seed,
                                                       device, args.batch, encode_batch=512)
    factor_names = [dm.space.names[f] for f in dm.actions.factors]  # one per factor with actions

    results = {"model": score(_ModelHead(model), test, factor_names, device)}
    for name in args.variants:
        results[name] = train_variant(name, model, train, test, factor_names, args, device)

    print(f"\nhead variants on the codes of {args.model} ({args.data} twin, {args.test_pairs} test pairs, "
          f"{args.steps} steps x {args.batch}, {device})")
    print(f"| head | action accuracy | {' | '.join(factor_names)} | trained s |")
    print("|---|---|" + "---|" * len(factor_names) + "---|")
    for name, r in results.items():
        factors = " | ".join(f"{100 * r['per_factor'][f]:.1f}" for f in factor_names)
        print(f"| {name} | {100 * r['action_accuracy']:.2f}% | {factors} | {r.get('seconds', '-')} |")
    record = script_record("experiments/retrieval_head_variants/retrieval_head_variants.py", argv, args, device,
                           encode_seconds=round(encode_seconds, 1), results=results)
    if args.out:
        write_json(Path(args.out), record)
    return record


class _ModelHead(nn.Module):
    """The model's own retrieval head, as ``head(codes, target_codes) -> logits``."""

    def __init__(self, model) -> None:
        super().__init__()
        self.model = model

    def forward(self, codes: torch.Tensor, target_codes: torch.Tensor) -> torch.Tensor:
        return self.model.head_logits(codes, target_codes)


if __name__ == "__main__":
    main()
