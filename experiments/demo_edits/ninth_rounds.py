"""Ninth round: edits decoded in rounds, each committing the most confident nodes first.

Needs the round's patch (``git apply experiments/demo_edits/ninth_rounds.patch`` on commit dd41198)
and a model trained with it (``--config ninth_rounds4.json``):

    python experiments/demo_edits/ninth_rounds.py --model RUN/causal [--pairs 300] [--seed 1] [--out JSON]

Judges the model's edits by the nearest render (``causal_vqvae.eval.exactness.evaluate_edits``, the
bench's edit figures) with the edit decoded in 1, 2 and 4 rounds.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from causal_vqvae.api import load
from causal_vqvae.eval.data import twin_datamodule
from causal_vqvae.eval.exactness import evaluate_edits
from causal_vqvae.eval.report import script_record, write_json


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--pairs", type=int, default=300)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    torch.manual_seed(args.seed)
    model = load(args.model, device="cpu").eval()
    dm = twin_datamodule("dsprites", args.pairs, args.batch, args.seed, "1")
    results = {}
    for rounds in (1, 2, 4):
        model.transition_net.rounds = rounds
        edits = evaluate_edits(model, dm, args.pairs, args.batch, args.seed, torch.device("cpu"))
        k1, factors = edits["k1"], edits["k1"]["per_acted_factor"]
        results[str(rounds)] = {"exact": k1["exact"], "unchanged": k1["unchanged"],
                                "per_acted_factor": {name: f["exact"]["rate"] for name, f in factors.items()},
                                "k4_one_edit": edits["k4"]["one_edit"]["exact"]}
        rates = results[str(rounds)]["per_acted_factor"]
        shown = " ".join(f"{name} {100 * rate:.1f}%" for name, rate in rates.items())
        print(f"{rounds} round(s): exact {100 * k1['exact']['rate']:.1f}%, "
              f"unchanged {100 * k1['unchanged']['rate']:.1f}%, "
              f"{shown}, 4 chained {100 * edits['k4']['one_edit']['exact']['rate']:.1f}%")
    if args.out is not None:
        write_json(args.out, script_record("experiments/demo_edits/ninth_rounds.py", argv, args,
                                           torch.device("cpu"), results=results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
