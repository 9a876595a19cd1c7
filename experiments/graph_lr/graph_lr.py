"""Does the causal stage decide its graph? The transition and graph of a model, trained afresh on
the codes of its frozen autoencoder, once per learning-rate scale of the graph's edge logits.

    python experiments/graph_lr/graph_lr.py --model checkpoints/shapes3d_twin --data shapes3d \
        [--scales 1 20] [--steps 2000] [--batch 128] [--lr 1e-3] [--train-pairs 40000] \
        [--test-pairs 1000] [--device cpu] [--seed 0] [--out experiments/graph_lr/results/NAME.json]

The model's autoencoder encodes ``--train-pairs`` training pairs of the procedural twin once (the
pairs of ``TransitionPairs(space, "train", seed=seed)``) and test items 0..test_pairs-1 (the pairs
``python -m causal_vqvae.cli.bench`` scores first). For each scale ``s``, a fresh model of the same
config (so a fresh transition and graph, initialised from the config's seed) trains its transition
as the causal stage of ``train.py`` does: the model's ``transition_loss`` (mixture NLL, equation
loss and the budgets, lowered over the first half), dual ascent after each step, AdamW on
:func:`causal_vqvae.training.module.parameter_groups` (edge logits at ``lr * s``), ``--lr`` with
min(100, steps / 10) warm-up steps and cosine decay to 0.1x, gradient norm clipped at 1, the graph
masks drawn from a generator seeded per step. The retrieval head is not trained: it does not
touch the graph. Each scale is then scored on the test codes, with the evaluation graph
(thresholded, nothing sampled): the graph summary (expected against thresholded parents per
node), intervened nodes, code accuracy and retrieval by transition. ``--scales 1`` is the
learning rate the causal stage used before ``TrainConfig.graph_lr_scale``. Prints a table and
writes JSON (the command, settings, every scale's curve).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import torch

_ROOT = Path(__file__).resolve().parents[2]
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

from causal_vqvae.api import load  # noqa: E402
from causal_vqvae.eval.data import encode_pair_pools  # noqa: E402
from causal_vqvae.eval.report import script_record  # noqa: E402
from causal_vqvae.files import write_json  # noqa: E402
from causal_vqvae.model import CausalVQVAE  # noqa: E402
from causal_vqvae.training.module import _warmup_cosine, parameter_groups  # noqa: E402


@torch.no_grad()
def score(model: CausalVQVAE, data: dict[str, torch.Tensor], device: torch.device, batch: int = 250) -> dict[str, Any]:
    """Evaluation-graph metrics of ``model``'s transition on encoded pairs."""
    model.eval()
    node_right = exact = intervened = retrieved = retrieved_factor = 0.0
    total = len(data["action"])
    for s in range(0, total, batch):
        codes = data["codes"][s:s + batch].long().to(device)
        target = data["target"][s:s + batch].long().to(device)
        action = data["action"][s:s + batch].to(device)
        out = model.transition(codes, action, sample=False)
        right = (out.predicted_codes == target).float()
        node_right += right.mean(1).sum().item()
        exact += right.min(1).values.sum().item()
        intervened += out.intervened.sum().item()
        by_transition = model.retrieve_codes(codes, target, "transition").action
        retrieved += (by_transition == action).sum().item()
        # action ids are factor-major, two per factor
        retrieved_factor += (by_transition // 2 == action // 2).sum().item()
    return {
        "retrieval_transition_accuracy": retrieved / total,
        "retrieval_transition_factor_accuracy": retrieved_factor / total,
        "code_accuracy": node_right / total,
        "code_exact": exact / total,
        "intervened_nodes": intervened / total,
        "graph": model.graph.adjacency_summary(),
    }


def train_scale(scale: float, config, train: dict[str, torch.Tensor], test: dict[str, torch.Tensor],
                args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    model = CausalVQVAE(config).to(device).train()  # fresh transition and graph, from config.seed
    groups = parameter_groups(model, args.lr, scale, weight_decay=0.0)
    edge_lr = next(g["lr"] for g in groups if g["name"] == "graph_edge_logits")
    optimizer = torch.optim.AdamW(groups, fused=True if device.type == "cuda" else None)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: _warmup_cosine(step, args.steps, min(100, args.steps // 10), 0.1))
    draws = torch.Generator().manual_seed(args.seed)
    masks = torch.Generator(device=device)
    trained = [p for g in groups for p in g["params"]]
    curve, start = [], time.perf_counter()
    for step in range(args.steps):
        idx = torch.randint(0, len(train["action"]), (args.batch,), generator=draws)
        codes, target = train["codes"][idx].long().to(device), train["target"][idx].long().to(device)
        masks.manual_seed(args.seed * 1_000_003 + step)
        loss = model.transition_loss(codes, train["action"][idx].to(device), target, progress=step / args.steps,
                                     generator=masks)
        optimizer.zero_grad(set_to_none=True)
        loss.loss.backward()
        torch.nn.utils.clip_grad_norm_(trained, 1.0)
        optimizer.step()
        schedule.step()
        model.update_multipliers(loss)
        if (step + 1) % max(1, args.steps // 8) == 0 or step + 1 == args.steps:
            summary = model.graph.adjacency_summary()
            curve.append({
                "step": step + 1, "seconds": round(time.perf_counter() - start, 1), "nll": loss.nll.item(),
                "train_node_accuracy": loss.node_accuracy.item(),
                "adjacency_budget": loss.adjacency_budget,
                "expected_parents_per_node": summary["expected_parents_per_node"],
                "thresholded_parents_per_node": summary["thresholded_parents_per_node"],
                "adjacency_multiplier_mean": model.adjacency_dual.multipliers.mean().item(),
            })
            row = curve[-1]
            print(f"  scale {scale:g}: step {row['step']}, nll {row['nll']:.3f}, parents expected "
                  f"{row['expected_parents_per_node']:.2f} / thresholded {row['thresholded_parents_per_node']:.2f}, "
                  f"multiplier {row['adjacency_multiplier_mean']:.3f}", flush=True)
    seconds = time.perf_counter() - start
    return {**score(model, test, device), "edge_logit_lr": edge_lr, "seconds": round(seconds, 1), "curve": curve}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="model directory (save_pretrained): its autoencoder and config")
    p.add_argument("--data", required=True, choices=["dsprites", "shapes3d"])
    p.add_argument("--scales", type=float, nargs="+", default=[1.0, 20.0],
                   help="learning-rate scales of the edge logits, one fresh training each")
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (the small preset's causal_lr)")
    p.add_argument("--train-pairs", type=int, default=40_000)
    p.add_argument("--test-pairs", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0, help="training pairs, batch draws and graph masks")
    p.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    p.add_argument("--out", default=None, help="JSON path")
    args = p.parse_args(argv)
    for name in ("steps", "batch", "train_pairs", "test_pairs"):
        if getattr(args, name) < 1:
            raise SystemExit(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    if args.lr <= 0 or any(s <= 0 for s in args.scales):
        raise SystemExit(f"--lr and --scales must be positive, got {args.lr} and {args.scales}")

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    frozen = load(args.model, device=device, expect_dataset=args.data)
    _, train, test, encode_seconds = encode_pair_pools(frozen, args.data, args.train_pairs, args.test_pairs,
                                                       args.seed, device, args.batch, encode_batch=500)

    results = {"model": {**score(frozen, test, device), "edge_logit_lr": None}}
    for scale in args.scales:
        results[f"scale {scale:g}"] = train_scale(scale, frozen.config, train, test, args, device)

    print(f"\ncausal stage on the frozen codes of {args.model} ({args.data} twin, {args.test_pairs} test pairs, "
          f"{args.steps} steps x {args.batch}, lr {args.lr:g}, {device}); 'model' is the saved model as it is")
    print("| training | edge-logit lr | parents expected / thresholded | edge p max | intervened nodes "
          "| code accuracy | retrieval by transition | trained s |")
    print("|---|---|---|---|---|---|---|---|")
    for name, r in results.items():
        g = r["graph"]
        lr = "-" if r["edge_logit_lr"] is None else f"{r['edge_logit_lr']:g}"
        print(f"| {name} | {lr} | {g['expected_parents_per_node']:.2f} / {g['thresholded_parents_per_node']:.2f} "
              f"| {g['edge_probability_max']:.3f} | {r['intervened_nodes']:.1f} | {100 * r['code_accuracy']:.1f}% "
              f"| {100 * r['retrieval_transition_accuracy']:.1f}% | {r.get('seconds', '-')} |")
    record = script_record("experiments/graph_lr/graph_lr.py", argv, args, device,
                           encode_seconds=round(encode_seconds, 1), results=results)
    if args.out:
        write_json(Path(args.out), record)
    return record


if __name__ == "__main__":
    main()
