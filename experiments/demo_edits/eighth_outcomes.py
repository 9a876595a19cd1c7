"""Eighth round: did the two outcomes of a model with ``transition_hypotheses`` 2 split?

Needs the code of the round's patch (``git apply experiments/demo_edits/eighth_hypotheses_heads.patch``
or ``..._trunk.patch`` on commit be45226) and a model trained with it:

    python experiments/demo_edits/eighth_outcomes.py --model RUN/causal [--pairs 300] [--seed 1] [--out JSON]

On the bench's first ``--pairs`` dSprites test pairs (drawn with ``--seed``), per acted factor: how
often each outcome alone, decoded, is exact by the nearest render, how often either is, how often
the chosen one is (what ``edit`` returns), and the mean choice probability of each outcome.
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path

import torch

from causal_vqvae.api import load
from causal_vqvae.eval.data import batches, twin_datamodule
from causal_vqvae.eval.judge import judge_edits
from causal_vqvae.eval.report import script_record, write_json


@torch.no_grad()
def outcomes(model, dm, pairs: int, batch: int) -> dict:
    space, actions, render = dm.space, dm.actions, dm.source.render
    transition = model.transition_net
    rows: dict[str, list[torch.Tensor]] = defaultdict(list)
    for raw in batches(dm, "test", pairs, batch, "outcomes"):
        b = dm.prepare_batch(raw)
        codes = model.encode_codes(b["image"])
        out = model.transition(codes, b["action"], sample=False)
        exact = []
        for logits in out.hypothesis_logits.unbind(1):
            edited = torch.where(out.intervened > 0.5, transition.read_codes(logits, codes), codes)
            exact.append(judge_edits(model.decode_codes(edited), raw["factors"], raw["factors_next"], space,
                                     render)["exact"])
        exact = torch.stack(exact, 1).float()  # (B, H)
        chosen = exact.gather(1, out.choice_logits.argmax(-1, keepdim=True))
        table = torch.cat([exact, exact.amax(1, keepdim=True), chosen, torch.softmax(out.choice_logits, -1)], 1)
        factor = actions.factor_of(raw["action"])
        for f in factor.unique().tolist():
            rows[space.names[f]].append(table[factor == f])
    result = {}
    for name, parts in rows.items():
        t = torch.cat(parts)
        count = (t.shape[1] - 2) // 2
        result[name] = {"n": len(t), "each_exact": t[:, :count].mean(0).tolist(),
                        "either_exact": float(t[:, count].mean()), "chosen_exact": float(t[:, count + 1].mean()),
                        "mean_choice_probability": t[:, count + 2:].mean(0).tolist()}
    return result


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
    result = outcomes(model, dm, args.pairs, args.batch)
    for name, r in result.items():
        each = " / ".join(f"{100 * e:.1f}%" for e in r["each_exact"])
        mean = " / ".join(f"{p:.2f}" for p in r["mean_choice_probability"])
        print(f"{name:12s} n {r['n']:3d}  each {each}  either {100 * r['either_exact']:.1f}%  "
              f"chosen {100 * r['chosen_exact']:.1f}%  mean choice {mean}")
    if args.out is not None:
        write_json(args.out, script_record("experiments/demo_edits/eighth_outcomes.py", argv, args,
                                           torch.device("cpu"), results=result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
