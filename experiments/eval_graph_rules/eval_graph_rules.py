"""What does thresholding the node -> node graph at evaluation cost? Transition code accuracy and
retrieval by transition of one trained model under other deterministic evaluation graphs.

    python experiments/eval_graph_rules/eval_graph_rules.py --model checkpoints/shapes3d_twin --data shapes3d \
        [--pairs 1000] [--top-k 6 12] [--out results.json]

Rules, all deterministic (no sampling): ``threshold``, the model's own (edge probability > 1/2);
``top-K``, each node keeps its K most probable parents. Training samples the graph with the edge
probabilities, so ``top-K`` with K near the expected parents per node is the evaluation graph
closest to what the transition trained with. On test items 0..pairs-1 of the procedural twin (the
pairs ``python -m causal_vqvae.cli.bench`` scores first), CPU or GPU. Prints a table, writes JSON.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import torch

_ROOT = Path(__file__).resolve().parents[2]
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

from causal_vqvae.api import load  # noqa: E402
from causal_vqvae.files import write_json  # noqa: E402
from datamodules import build_datamodule  # noqa: E402


def top_k_adjacency(graph, k: int) -> torch.Tensor:
    """(N, N) 0/1 adjacency where each node (column) keeps its ``k`` most probable parents (rows)."""
    probs = graph.adjacency_probs()
    keep = torch.zeros_like(probs).scatter_(0, probs.topk(k, dim=0).indices, 1.0)
    return keep * graph.off_diagonal


@torch.no_grad()
def score(model, batches: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]) -> dict[str, float]:
    node_right = pairs_right = total = 0.0
    for codes, target, action in batches:
        predicted = model.transition(codes, action, sample=False).predicted_codes
        node_right += (predicted == target).float().mean(1).sum().item()
        pairs_right += (model.retrieve_codes(codes, target, "transition").action == action).sum().item()
        total += len(action)
    return {"code_accuracy": node_right / total, "retrieval_transition_accuracy": pairs_right / total}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="model directory (save_pretrained)")
    p.add_argument("--data", required=True, choices=["dsprites", "shapes3d"])
    p.add_argument("--pairs", type=int, default=1000, help="test pairs (items 0..pairs-1)")
    p.add_argument("--top-k", type=int, nargs="+", default=[], help="K of the top-K rules to score")
    p.add_argument("--batch", type=int, default=250)
    p.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    p.add_argument("--out", default=None, help="JSON path")
    args = p.parse_args(argv)
    if args.pairs < 1 or args.batch < 1 or any(k < 1 for k in args.top_k):
        raise SystemExit("--pairs, --batch and every --top-k must be positive")

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model = load(args.model, device=device, expect_dataset=args.data)
    graph = model.graph
    if any(k >= graph.off_diagonal.shape[0] for k in args.top_k):
        raise SystemExit(f"--top-k must be below the {graph.off_diagonal.shape[0]} nodes")
    dm = build_datamodule(args.data, batch_size=args.batch, num_workers=0)
    dm.setup()
    batches = []
    with torch.no_grad():
        for start in range(0, args.pairs, args.batch):
            raw = dm._datasets["test"].__getitems__(list(range(start, min(start + args.batch, args.pairs))))
            b = dm.prepare_batch({k: v.to(device) for k, v in raw.items()})
            batches.append((model.encode_codes(b["image"]), model.encode_codes(b["image_next"]), b["action"]))

    own = graph.hard_adjacency
    rules = {"threshold": own} | {f"top-{k}": (lambda k=k: top_k_adjacency(graph, k)) for k in args.top_k}
    results = {}
    try:
        for name, rule in rules.items():
            graph.hard_adjacency = rule  # the evaluation graph that transition(sample=False) uses
            start = time.perf_counter()
            results[name] = {**score(model, batches), "parents_per_node": rule().sum().item() / rule().shape[0],
                             "seconds": round(time.perf_counter() - start, 1)}
    finally:
        graph.hard_adjacency = own

    summary = graph.adjacency_summary()
    print(f"{args.model} ({args.data} twin, {args.pairs} test pairs, {device}); expected parents per node in "
          f"training {summary['expected_parents_per_node']:.2f}")
    print("| evaluation graph | parents per node | code accuracy | retrieval by transition |")
    print("|---|---|---|---|")
    for name, r in results.items():
        print(f"| {name} | {r['parents_per_node']:.1f} | {100 * r['code_accuracy']:.2f}% | "
              f"{100 * r['retrieval_transition_accuracy']:.2f}% |")
    record = {
        "command": "python experiments/eval_graph_rules/eval_graph_rules.py "
                   + shlex.join(sys.argv[1:] if argv is None else argv),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__, "graph": summary, "results": results,
    }
    if args.out:
        write_json(Path(args.out), record)
    return record


if __name__ == "__main__":
    main()
