"""Why chains of edits miss: the bench's chains of two edits, judged step by step.

    python scripts/chain_steps.py --model checkpoints/shapes3d_twin --data shapes3d \
        --out out/shapes3d_twin_chain_steps.json

The chains are bench's ``k2`` chains: the first ``--pairs`` test items of the procedural twin
(``twin_datamodule`` with ``--seed``) as start states, and two actions after each, each uniform
among those valid at the true state, drawn by :func:`causal_vqvae.eval.exactness.action_sequences`
from a generator seeded with ``--seed`` (``bench --pairs P --seed S`` judges the same chains). Each
edit is judged by the nearest render (:func:`causal_vqvae.eval.judge.judge_edits`):

- ``first``: the first edit (``model.edit_codes``) as a single edit: ``exact`` and ``two_sided``;
- ``second``: the second edit as a single edit from the true middle state, made from three codes of
  that state: ``chained`` (the first edit's own codes, as ``edit_sequence`` does), ``re_encoded``
  (the first edit decoded and encoded again, as a user editing its result would) and ``clean``
  (the encoded render of the middle state: what the second edit gets right when the first was
  perfect); ``exact`` among all chains and among those whose first edit was exact;
- ``chain``: the two chained edits judged as one (``single_step=False``, bench's ``k2`` "one
  edit"): ``exact``; ``two_sided_steps``, the share of chains whose first edit and second edit (from
  the chained codes) are both two-sided, and ``exact`` among them and among the rest; and
  ``exact_after_hidden_side_effect``, among the chains whose first edit was exact but not two-sided;
- ``side_effects``: per factor of the FIRST action, its edits' ``exact`` and ``two_sided`` rates,
  and those exact but not two-sided counted by the factor of the state one factor away from the
  target that the edit is nearer than the target (the judge's ``side_factor``: the side effect).

Also ``codes_off``: nodes whose chained codes differ from the clean codes of the middle state, among
chains whose first edit was exact. Deterministic: evaluation draws no samples.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # twin_study, beside this script

from twin_study import add_model_arguments, load_model, pct, write_record  # noqa: E402

from causal_vqvae.cli.common import positive_int  # noqa: E402
from causal_vqvae.eval.data import twin_datamodule  # noqa: E402
from causal_vqvae.eval.exactness import action_sequences  # noqa: E402
from causal_vqvae.eval.judge import judge_edits  # noqa: E402


def _mean(verdicts: torch.Tensor, members: torch.Tensor | None = None) -> float | None:
    values = verdicts if members is None else verdicts[members]
    return round(float(values.float().mean()), 4) if values.numel() else None


@torch.no_grad()
def chain_steps(model, dm, pairs: int, batch: int, seed: int) -> dict:
    """The figures of the module docstring over ``pairs`` two-edit chains."""
    space, actions, render = dm.space, dm.actions, dm.source.render
    start = dm._datasets["test"].__getitems__(list(range(pairs)))["factors"]
    ids, end = action_sequences(actions, start, 2, torch.Generator().manual_seed(seed))  # as bench's k = 2
    first_ids, second_ids = ids[:, 0], ids[:, 1]
    middle = actions.apply(start, first_ids)[0]
    keys = ("first_exact", "first_two_sided", "chained", "re_encoded", "clean", "second_two_sided", "chain",
            "codes_off", "side")
    parts: dict[str, list[torch.Tensor]] = {key: [] for key in keys}
    for i in range(0, pairs, batch):
        rows = slice(i, i + batch)
        s0, s1, s2, a1, a2 = start[rows], middle[rows], end[rows], first_ids[rows], second_ids[rows]
        codes = model.edit_codes(model.encode_codes(render(s0)), a1)
        edited = model.decode_codes(codes)
        first = judge_edits(edited, s0, s1, space, render)
        clean = model.encode_codes(render(s1))
        seconds = {}
        for name, middle_codes in (("chained", codes), ("re_encoded", model.encode_codes(edited)), ("clean", clean)):
            images = model.decode_codes(model.edit_codes(middle_codes, a2))
            seconds[name] = {**judge_edits(images, s1, s2, space, render), "images": images}
        parts["first_exact"].append(first["exact"])
        parts["first_two_sided"].append(first["two_sided"])
        for name, verdicts in seconds.items():
            parts[name].append(verdicts["exact"])
        parts["second_two_sided"].append(seconds["chained"]["two_sided"])
        two_edits = seconds["chained"]["images"]
        parts["chain"].append(judge_edits(two_edits, s0, s2, space, render, single_step=False)["exact"])
        parts["codes_off"].append((codes != clean).sum(1).float())
        parts["side"].append(first["side_factor"])
    v = {key: torch.cat(value) for key, value in parts.items()}
    first_ok = v["first_exact"]
    steps_ok = v["first_two_sided"] & v["second_two_sided"]
    hidden_first = first_ok & ~v["first_two_sided"]
    acted = actions.factor_of(first_ids)
    side_effects = {}
    for f in actions.factors:
        members = acted == f
        hidden = members & hidden_first
        counts = torch.bincount(v["side"][hidden], minlength=len(space.factors))
        side_effects[space.names[f]] = {
            "edits": int(members.sum()), "exact": _mean(first_ok, members),
            "two_sided": _mean(v["first_two_sided"], members),
            "nearer_a_neighbour_moving": {space.names[g]: int(c) for g, c in enumerate(counts.tolist()) if c},
        }
    return {
        "pairs": pairs,
        "first": {"exact": _mean(first_ok), "two_sided": _mean(v["first_two_sided"])},
        "second": {name: {"exact": _mean(v[name]), "exact_after_exact_first": _mean(v[name], first_ok)}
                   for name in ("chained", "re_encoded", "clean")},
        "chain": {"exact": _mean(v["chain"]), "exact_after_two_sided_steps": _mean(v["chain"], steps_ok),
                  "exact_otherwise": _mean(v["chain"], ~steps_ok), "two_sided_steps": _mean(steps_ok),
                  "exact_after_hidden_side_effect": _mean(v["chain"], hidden_first)},
        "codes_off": round(float(v["codes_off"][first_ok].mean()), 2) if bool(first_ok.any()) else None,
        "side_effects": side_effects,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    add_model_arguments(p)
    p.add_argument("--pairs", type=positive_int, default=1000, help="chains of two edits (default 1000)")
    p.add_argument("--batch-size", type=positive_int, default=200, help="chains per batch (default 200)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the test pairs and the actions, as bench's --seed (default 0)")
    p.add_argument("--out", default=None, help="write the figures and the command as JSON here")
    args = p.parse_args(argv)
    model, version, heading = load_model(args)
    dm = twin_datamodule(args.data, args.pairs, args.batch_size, args.seed, version)
    r = chain_steps(model, dm, args.pairs, args.batch_size, args.seed)
    print(f"{heading}, {args.pairs} chains of two edits, seed {args.seed}")
    print(f"first edit: exact {pct(r['first']['exact'])}, two-sided {pct(r['first']['two_sided'])}")
    for name, s in r["second"].items():
        print(f"second edit from the {name.replace('_', '-')} codes: exact {pct(s['exact'])}, "
              f"after an exact first {pct(s['exact_after_exact_first'])}")
    c = r["chain"]
    print(f"chain judged as one: exact {pct(c['exact'])}; both steps two-sided {pct(c['two_sided_steps'])}, "
          f"then exact {pct(c['exact_after_two_sided_steps'])}, otherwise {pct(c['exact_otherwise'])}; "
          f"after a first edit exact but not two-sided {pct(c['exact_after_hidden_side_effect'])}")
    print(f"nodes of the chained codes off the middle state's own (first edit exact): {r['codes_off']}")
    for name, s in r["side_effects"].items():
        print(f"  first {name:<14} exact {pct(s['exact']):>6} two-sided {pct(s['two_sided']):>6}  "
              f"exact, not two-sided, nearer a neighbour moving: {s['nearer_a_neighbour_moving'] or '-'}")
    if args.out:
        write_record(args.out, "chain_steps.py", argv, args, version, **r)
    return 0


if __name__ == "__main__":
    sys.exit(main())
