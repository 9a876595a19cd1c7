"""How should retrieval by transition score an action? Every score of ``ModelConfig.retrieval_score``
on one trained model, from the same transition outputs, on held-out validation and test pairs.

    python experiments/transition_scores/transition_scores.py --model checkpoints/dsprites_twin --data dsprites \
        [--pairs 5000] [--splits val test] [--batch 100] [--device cpu]
        [--out experiments/transition_scores/results/NAME.json]

For each pair (x, x'), every action's transition runs once on the codes of x (deterministic graph
masks), and each score compares the result with the codes of x':

- ``marginal_nll``: the sum over nodes of the mixture's NLL of the target codes with each node's
  intervention mask at its probability, sigmoid(target logit), rather than thresholded;
- ``nll``: the mean over nodes of the intervention mixture's NLL of the target codes;
- ``code_distance``: the sum over nodes of the squared distance between the mixture's expected code
  vector and the target's, in units of the codebook's mean squared distance between two codes.

Reported per split and score: action accuracy (argmin), factor accuracy, per-factor action accuracy,
and, for the probabilities softmax(-score / T) at the model's ``retrieval_temperature``, the mean
probability of the top action and the mean NLL of the true one (calibration). The validation
pairs are those ``train.py`` validates on; choose on them, report the test pairs (items
0..pairs-1 of the test split, which ``python -m causal_vqvae.cli.bench`` scores). Data: the procedural
twin, always. Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import torch
from einops import rearrange, repeat

_ROOT = Path(__file__).resolve().parents[2]
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

from causal_vqvae.api import load  # noqa: E402
from causal_vqvae.eval.data import batches, twin_datamodule  # noqa: E402
from causal_vqvae.eval.report import script_record  # noqa: E402
from causal_vqvae.files import write_json  # noqa: E402
from causal_vqvae.nn.retrieval import RETRIEVAL_SCORES, output_scores  # noqa: E402


@torch.no_grad()
def split_scores(model, dm, split: str, pairs: int, batch: int, device: torch.device) -> tuple[dict, torch.Tensor]:
    """``({score: (pairs, A) scores}, (pairs,) true actions)`` on items 0..pairs-1 of ``split``."""
    transition = model.transition_net
    num_actions = transition.num_actions
    eps = model.config.mixture_eps
    scores: dict[str, list[torch.Tensor]] = {name: [] for name in RETRIEVAL_SCORES}
    truth = []
    for raw in batches(dm, split, pairs, batch, f"{split} pairs"):
        b = dm.prepare_batch({k: v.to(device) for k, v in raw.items()})
        codes, target = model.encode_codes(b["image"]), model.encode_codes(b["image_next"])
        codes_all = repeat(codes, "b n -> (b a) n", a=num_actions)
        target_all = repeat(target, "b n -> (b a) n", a=num_actions)
        actions = repeat(torch.arange(num_actions, device=device), "a -> (b a)", b=codes.shape[0])
        out = transition(codes_all, actions, sample=False)
        for name in RETRIEVAL_SCORES:
            value = output_scores(out, codes_all, target_all, name, eps, model.quantizer.embedding, transition.offsets)
            scores[name].append(rearrange(value, "(b a) -> b a", a=num_actions).cpu())
        truth.append(b["action"].cpu())
    return {name: torch.cat(value) for name, value in scores.items()}, torch.cat(truth)


def report(scores: torch.Tensor, truth: torch.Tensor, temperature: float, factor_names: list[str]) -> dict[str, Any]:
    predicted = scores.argmin(-1)
    right = predicted == truth
    log_probs = torch.log_softmax(-scores / temperature, dim=-1)
    return {
        "action_accuracy": right.float().mean().item(),
        # action ids are factor-major, two per factor
        "factor_accuracy": (predicted // 2 == truth // 2).float().mean().item(),
        "per_factor": {name: right[truth // 2 == f].float().mean().item() for f, name in enumerate(factor_names)},
        "mean_top_probability": log_probs.max(-1).values.exp().mean().item(),
        "true_action_nll": -log_probs.gather(-1, truth.unsqueeze(-1)).mean().item(),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="model directory (save_pretrained)")
    p.add_argument("--data", required=True, choices=["dsprites", "shapes3d"])
    p.add_argument("--pairs", type=int, default=5000, help="pairs per split")
    p.add_argument("--splits", nargs="+", choices=["val", "test"], default=["val", "test"])
    p.add_argument("--batch", type=int, default=100, help="pairs per batch (x the action count through the "
                                                          "transition)")
    p.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    p.add_argument("--out", default=None, help="JSON path")
    args = p.parse_args(argv)
    for name in ("pairs", "batch"):
        if getattr(args, name) < 1:
            raise SystemExit(f"--{name} must be positive, got {getattr(args, name)}")

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model = load(args.model, device=device, expect_dataset=args.data)
    dm = twin_datamodule(args.data, args.pairs, args.batch, seed=0)
    for split in args.splits:
        if len(dm._datasets[split]) < args.pairs:
            raise SystemExit(f"--pairs {args.pairs}: the {split} split holds {len(dm._datasets[split])} pairs")
    factor_names = [dm.space.names[f] for f in dm.actions.factors]
    temperature = model.config.retrieval_temperature

    results: dict[str, dict[str, Any]] = {}
    start = time.perf_counter()
    for split in args.splits:
        scores, truth = split_scores(model, dm, split, args.pairs, args.batch, device)
        results[split] = {name: report(value, truth, temperature, factor_names) for name, value in scores.items()}
    seconds = time.perf_counter() - start

    print(f"\nretrieval by transition of {args.model} ({args.data} twin, {args.pairs} pairs per split, "
          f"T = {temperature}, {device}, {seconds:.0f} s)")
    print(f"| split | score | action | factor | {' | '.join(factor_names)} | top p | true-action NLL |")
    print("|---|---|---|---|" + "---|" * len(factor_names) + "---|---|")
    for split, by_score in results.items():
        for name, r in by_score.items():
            factors = " | ".join(f"{100 * r['per_factor'][f]:.1f}" for f in factor_names)
            print(f"| {split} | {name} | {100 * r['action_accuracy']:.2f}% | {100 * r['factor_accuracy']:.2f}% | "
                  f"{factors} | {r['mean_top_probability']:.3f} | {r['true_action_nll']:.3f} |")
    record = script_record("experiments/transition_scores/transition_scores.py", argv, args, device, model_config_score=
                           model.config.retrieval_score, temperature=temperature, seconds=round(seconds, 1),
                           results=results)
    if args.out:
        write_json(Path(args.out), record)
    return record


if __name__ == "__main__":
    main()
