"""How should an intervened node's new code be read off its structural equation? The same trained
model, the same held-out twin pairs, three rules (nothing retrained):

    python experiments/edit_rules/edit_rules.py --model checkpoints/shapes3d_twin --data shapes3d \
        [--pairs 1000] [--batch 200] [--seed 0] [--out experiments/edit_rules/results/shapes3d_release.json]

- ``argmax``: the equation's most likely code, the node's current one included
  (``keep_threshold=None``, how the models saved before the setting edit);
- ``keep_0.5``: the current code only when the equation gives it at least 1/2, else the most likely
  other code (``keep_threshold=0.5``);
- ``change``: never the current code (``intervention="change"`` at evaluation: the current code's
  logit excluded; this also changes retrieval by transition, which the other two leave alone).

Every edit is judged by the nearest render (:mod:`causal_vqvae.eval.judge`): single edits of the
first ``--pairs`` test pairs, overall and per acted factor (exact and unchanged), and chains of four
actions from the same sources, applied as one multi-step edit, drawn with ``--seed``. Prints a
table and writes JSON (command, data, checkpoint, device, seed).
"""

from __future__ import annotations

import argparse
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
from causal_vqvae.eval.exactness import action_sequences  # noqa: E402
from causal_vqvae.eval.judge import judge_edits, rate  # noqa: E402
from causal_vqvae.files import write_json  # noqa: E402

RULES = {"argmax": {"keep_threshold": None}, "keep_0.5": {"keep_threshold": 0.5},
         "change": {"intervention": "change"}}
CHAIN = 4


@torch.no_grad()
def judge_rule(model, dm, pairs: int, batch: int, seed: int) -> dict:
    """Exact and unchanged rates of single edits (overall, per acted factor) and of 4-action chains."""
    space, actions, render = dm.space, dm.actions, dm.source.render
    verdicts: dict[str, list[torch.Tensor]] = {"exact": [], "unchanged": []}
    acted = []
    for raw in batches(dm, "test", pairs, batch):
        b = dm.prepare_batch(raw)
        judged = judge_edits(model.edit(b["image"], b["action"]), raw["factors"], raw["factors_next"], space, render)
        for key in verdicts:
            verdicts[key].append(judged[key])
        acted.append(actions.factor_of(raw["action"]))
    single = {key: torch.cat(v) for key, v in verdicts.items()}
    factor = torch.cat(acted)
    start = dm._datasets["test"].__getitems__(list(range(pairs)))["factors"]
    ids, final = action_sequences(actions, start, CHAIN, torch.Generator().manual_seed(seed))
    chain = []
    for i in range(0, pairs, batch):
        x = render(start[i:i + batch])
        edited = model.edit_sequence(x, [ids[i:i + batch, t] for t in range(CHAIN)])
        chain.append(judge_edits(edited, start[i:i + batch], final[i:i + batch], space, render,
                                 single_step=False)["exact"])
    return {
        "k1": {key: rate(v) for key, v in single.items()},
        "per_acted_factor": {space.names[f]: {key: rate(v[factor == f]) for key, v in single.items()}
                             for f in actions.factors},
        f"k{CHAIN}_one_edit_exact": rate(torch.cat(chain)),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", required=True, choices=("dsprites", "shapes3d"))
    parser.add_argument("--pairs", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rules", nargs="+", default=list(RULES), choices=list(RULES))
    parser.add_argument("--out", type=Path)
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    torch.manual_seed(args.seed)
    base = load(args.model, device="cpu")
    dm = twin_datamodule(args.data, args.pairs, args.batch, args.seed)
    results = {}
    for name in args.rules:
        started = time.perf_counter()
        results[name] = judge_rule(base.with_settings(**RULES[name]).eval(), dm, args.pairs, args.batch, args.seed)
        results[name]["seconds"] = round(time.perf_counter() - started, 1)
    factors = list(results[args.rules[0]]["per_acted_factor"])
    header = f"{'rule':<10}{'exact':>8}{'unchanged':>11}" + "".join(f"{f:>13}" for f in factors) + f"{'4 chained':>11}"
    print(f"{args.data} procedural twin, first {args.pairs} test pairs, seed {args.seed}, cpu, model {args.model}")
    print("exact % (per factor: exact / unchanged)")
    print(header)
    for name, r in results.items():
        cells = "".join(f"{100 * v['exact']['rate']:>7.1f}/{100 * v['unchanged']['rate']:<5.1f}"
                        for v in r["per_acted_factor"].values())
        print(f"{name:<10}{100 * r['k1']['exact']['rate']:>8.1f}{100 * r['k1']['unchanged']['rate']:>11.1f}"
              f"{cells}{100 * r[f'k{CHAIN}_one_edit_exact']['rate']:>11.1f}")
    if args.out:
        command = "python " + shlex.join(["experiments/edit_rules/edit_rules.py", *argv])
        write_json(args.out, {"command": command, "data": f"{args.data} procedural twin", "checkpoint": args.model,
                              "device": "cpu", "torch": torch.__version__, "seed": args.seed, "pairs": args.pairs,
                              "rules": {name: RULES[name] for name in args.rules}, "results": results})
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
