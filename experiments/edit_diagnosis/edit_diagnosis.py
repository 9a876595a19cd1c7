"""Why do edits come out unchanged? Per factor, on held-out twin pairs of one trained model.

    python experiments/edit_diagnosis/edit_diagnosis.py --model checkpoints/shapes3d_twin --data shapes3d \
        [--pairs 1000] [--seed 0] [--out experiments/edit_diagnosis/results/shapes3d_release.json]

For each test pair (x, a, x') and the factor a moves, with c = codes(x), c' = codes(x') and the
model's evaluation transition (deterministic graph, no sampling):

- ``changed_nodes``: nodes whose code differs between c and c' (where the factor lives);
- ``coverage``: the fraction of those nodes the action intervenes on (the intervention mask);
  ``extra``: intervened nodes whose code should not change;
- ``code_accuracy_changed``: among changed nodes, the fraction the transition predicts right, and
  ``code_accuracy_changed_if_intervened``: the same counting only intervened nodes (does the
  structural equation know the new code, where it is asked?);
- ``copies_current_if_intervened``: among changed nodes that are intervened, how often the
  equation's most likely code is the node's current code (the equation asks it to stay);
- ``predicted_unchanged``: the fraction of pairs whose predicted codes equal c on every node (an
  edit that does nothing), and ``all_nodes_right``;
- the same code accuracy with every intervention mask forced open on the changed nodes (``oracle
  targets``: what the equations alone could do), and under other parent graphs: the thresholded
  graph (the model's), each node's top-K parents (K = the budget), and every node a parent of every
  other (``all parents``);
- ``decoder_exact``: how often decoding c' itself reproduces x' to within the twin's pixel judge
  (:mod:`causal_vqvae.eval.judge`), the ceiling of any edit.

Prints a table per factor and writes JSON (command, data, checkpoint, device, seed).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import torch

_ROOT = Path(__file__).resolve().parents[2]
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

from causal_vqvae.api import load  # noqa: E402
from causal_vqvae.eval.data import batches, twin_datamodule  # noqa: E402
from causal_vqvae.eval.judge import judge_edits  # noqa: E402
from causal_vqvae.files import write_json  # noqa: E402


def _transition_codes(model, codes, action, adjacency=None, targets=None):
    """Predicted codes under the model's evaluation masks, or the given (N, N) adjacency and/or
    (B, N) 0/1 targets."""
    tr = model.transition_net
    graph = tr.graph
    saved = graph.adjacency_logits.data.clone()
    try:
        if adjacency is not None:
            graph.adjacency_logits.data = torch.where(adjacency > 0.5, 10.0, -10.0).to(saved)
        out = tr(codes, action, sample=False)
    finally:
        graph.adjacency_logits.data = saved
    intervened = out.intervened > 0.5 if targets is None else targets
    return torch.where(intervened, out.logits.argmax(-1), codes), out.intervened > 0.5


def top_k_adjacency(graph, k: int) -> torch.Tensor:
    probs = graph.adjacency_probs()
    keep = torch.zeros_like(probs).scatter_(0, probs.topk(k, dim=0).indices, 1.0)
    return keep * graph.off_diagonal


@torch.no_grad()
def diagnose(model, dm, pairs: int, batch: int, device: torch.device, top_k: int) -> dict:
    space, actions = dm.space, dm.actions
    graph = model.graph
    n = graph.num_nodes
    graphs = {"threshold": None, f"top-{top_k}": top_k_adjacency(graph, top_k),
              "all parents": graph.off_diagonal.clone()}
    rows: dict[str, dict[str, list[torch.Tensor]]] = {}
    for raw in batches(dm, "test", pairs, batch, "diagnosis"):
        b = dm.prepare_batch({k: v.to(device) for k, v in raw.items()})
        x, x_next, a = b["image"], b["image_next"], b["action"]
        codes, target = model.encode_codes(x), model.encode_codes(x_next)
        changed = codes != target
        predicted, intervened = _transition_codes(model, codes, a)
        logits_argmax = model.transition_net(codes, a, sample=False).logits.argmax(-1)
        oracle_pred = _transition_codes(model, codes, a, targets=changed)[0]
        factor = actions.factor_of(a.cpu())
        stats = {
            "changed_nodes": changed.float().sum(1),
            "coverage": (changed & intervened).float().sum(1) / changed.float().sum(1).clamp_min(1),
            "extra": (intervened & ~changed).float().sum(1),
            "intervened": intervened.float().sum(1),
            "code_accuracy_changed": ((predicted == target) & changed).float().sum(1)
            / changed.float().sum(1).clamp_min(1),
            "code_accuracy_changed_if_intervened": ((predicted == target) & changed & intervened).float().sum(1)
            / (changed & intervened).float().sum(1).clamp_min(1),
            "oracle_targets_code_accuracy_changed": ((oracle_pred == target) & changed).float().sum(1)
            / changed.float().sum(1).clamp_min(1),
            "predicted_unchanged": (predicted == codes).all(1).float(),
            # Among changed nodes the action intervenes on: how often the equation's most likely code
            # is the node's current one (it asks the node to stay) rather than the target's.
            "copies_current_if_intervened": ((logits_argmax == codes) & changed & intervened).float().sum(1)
            / (changed & intervened).float().sum(1).clamp_min(1),
            "all_nodes_right": (predicted == target).all(1).float(),
        }
        for name, adjacency in graphs.items():
            if adjacency is None:
                continue
            pred_g, _ = _transition_codes(model, codes, a, adjacency=adjacency, targets=changed)
            stats[f"oracle_targets_{name}_code_accuracy_changed"] = ((pred_g == target) & changed).float().sum(1) \
                / changed.float().sum(1).clamp_min(1)
        decoded = model.decode_codes(target)
        stats["decoder_exact"] = judge_edits(decoded, raw["factors"].to(device), raw["factors_next"].to(device),
                                             space, dm.source.render)["exact"].float().to(device)
        everything = torch.ones_like(changed)
        variants = {
            "edit": predicted,
            "oracle_targets_edit": oracle_pred,
            "all_targets_edit": _transition_codes(model, codes, a, targets=everything)[0],
            "all_targets_all_parents_edit": _transition_codes(model, codes, a, adjacency=graph.off_diagonal.clone(),
                                                              targets=everything)[0],
        }
        for key, variant in variants.items():
            verdict = judge_edits(model.decode_codes(variant), raw["factors"].to(device),
                                  raw["factors_next"].to(device), space, dm.source.render)
            stats[f"{key}_exact"] = verdict["exact"].float().to(device)
            stats[f"{key}_unchanged"] = verdict["unchanged"].float().to(device)
        for f in factor.unique().tolist():
            name = space.names[f]
            member = (factor == f).to(device)
            bucket = rows.setdefault(name, {})
            for key, value in stats.items():
                bucket.setdefault(key, []).append(value[member].float().cpu())
    summary = {}
    for name, bucket in rows.items():
        summary[name] = {"pairs": int(torch.cat(bucket["coverage"]).numel())}
        summary[name].update({k: round(float(torch.cat(v).mean()), 4) for k, v in bucket.items()})
    return {"nodes": n, "per_factor": summary, "graph": graph.adjacency_summary(),
            "intervention_budget": model.config.target_budget, "adjacency_budget": model.config.adjacency_budget}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True)
    p.add_argument("--data", required=True, choices=["dsprites", "shapes3d"])
    p.add_argument("--pairs", type=int, default=1000)
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--top-k", type=int, default=None, help="parents per node of the top-K graph (default: the budget)")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    torch.manual_seed(args.seed)
    device = torch.device("cpu")
    model = load(args.model, device=device)
    dm = twin_datamodule(args.data, args.pairs, args.batch, args.seed)
    top_k = args.top_k or max(1, round(model.config.adjacency_budget))
    start = time.perf_counter()
    result = diagnose(model, dm, args.pairs, args.batch, device, top_k)
    record = {"command": "python experiments/edit_diagnosis/edit_diagnosis.py " + shlex.join(
                  sys.argv[1:] if argv is None else argv),
              "data": f"{args.data} procedural twin, test pairs 0..{args.pairs - 1}",
              "checkpoint": args.model, "device": "cpu", "seed": args.seed, "torch": torch.__version__,
              "seconds": round(time.perf_counter() - start, 1), **result}
    keys = ["pairs", "changed_nodes", "intervened", "coverage", "extra", "code_accuracy_changed",
            "code_accuracy_changed_if_intervened", "copies_current_if_intervened",
            "oracle_targets_code_accuracy_changed", "predicted_unchanged", "edit_exact", "edit_unchanged",
            "oracle_targets_edit_exact", "oracle_targets_edit_unchanged",
            "all_targets_edit_exact", "all_targets_all_parents_edit_exact", "decoder_exact"]
    print(json.dumps(record["graph"]))
    print(f"{'factor':<14}" + "".join(f"{k[:14]:>15}" for k in keys))
    for name, row in result["per_factor"].items():
        print(f"{name:<14}" + "".join(f"{row[k]:>15}" for k in keys))
    if args.out:
        write_json(Path(args.out), record)
        print(f"wrote {args.out}")
    return record


if __name__ == "__main__":
    main()
