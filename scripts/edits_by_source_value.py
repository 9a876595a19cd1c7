"""Edit exactness of one factor's actions, broken down by the factor's value in the source state:
which edits of a factor fail, and whether the intervention reaches the nodes the edit changes.

    python scripts/edits_by_source_value.py --model checkpoints/shapes3d_twin --data shapes3d --factor scale \
        --out out/shapes3d_twin_scale.json

For every value v of ``--factor`` and each action on it that is valid from v, ``--per-value`` source
states are drawn from the procedural twin (every other factor uniform, a generator seeded with
``--seed``) with the factor set to v. Each is edited (``model.edit``) and judged by the nearest
render (:func:`causal_vqvae.eval.judge.judge_edits`): ``exact`` and ``unchanged``. Beside the
verdicts, in code space: ``changed``, the nodes whose code differs between the encoded source and
the encoded render of the target; ``intervened``, the nodes the transition intervenes on;
``covered``, the fraction of changed nodes that are intervened; ``code_accuracy``, the fraction of
changed nodes given the target's code (both None where no node changed). Deterministic: evaluation
draws no samples.
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
from causal_vqvae.eval.judge import judge_edits  # noqa: E402


@torch.no_grad()
def by_source_value(model, dm, factor: str, per_value: int, seed: int) -> list[dict]:
    """One row per (value of ``factor``, action on it valid from that value): the figures of the
    module docstring over ``per_value`` source states."""
    space, actions, render = dm.space, dm.actions, dm.source.render
    f = space.factor_index(factor)
    generator = torch.Generator().manual_seed(seed)
    rows = []
    for value in range(space.factors[f].cycle):  # a cyclic factor's aliases (dSprites' 39 = 0) once
        for action in (a for a in actions if a.factor == f):
            states = space.sample(per_value, generator)
            states[:, f] = value
            ids = torch.full((per_value,), action.id)
            if not bool(actions.valid_mask(states)[:, action.id].all()):
                continue  # e.g. scale+ from the largest scale
            target = actions.apply(states, ids)[0]
            source_codes = model.encode_codes(render(states))
            target_codes = model.encode_codes(render(target))
            step = model.transition(source_codes, ids, sample=False)
            verdicts = judge_edits(model.decode_codes(step.predicted_codes).float(), states, target, space, render)
            changed = source_codes != target_codes
            intervened = step.intervened > 0.5
            some = int(changed.sum())
            rows.append({
                "value": value, "action": action.name, "count": per_value,
                "exact": round(float(verdicts["exact"].float().mean()), 4),
                "unchanged": round(float(verdicts["unchanged"].float().mean()), 4),
                "changed": round(float(changed.float().sum(1).mean()), 2),
                "intervened": round(float(intervened.float().sum(1).mean()), 2),
                "covered": round(int((changed & intervened).sum()) / some, 4) if some else None,
                "code_accuracy": round(int(((step.predicted_codes == target_codes) & changed).sum()) / some, 4)
                if some else None,
            })
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    add_model_arguments(p)
    p.add_argument("--factor", required=True, help="the factor whose actions are studied, e.g. scale")
    p.add_argument("--per-value", type=positive_int, default=100,
                   help="source states per (value, action) (default 100)")
    p.add_argument("--seed", type=int, default=1234, help="seed of the source states (default 1234)")
    p.add_argument("--out", default=None, help="write the rows and the command as JSON here")
    args = p.parse_args(argv)
    model, version, heading = load_model(args)
    dm = twin_datamodule(args.data, 8, 8, args.seed, version)
    moving = [factor.name for factor in dm.space.factors if not factor.constant]
    if args.factor not in moving:
        raise SystemExit(f"--factor {args.factor!r} is not a factor of {args.data} that an action moves: "
                         f"choose one of {', '.join(moving)}")
    rows = by_source_value(model, dm, args.factor, args.per_value, args.seed)
    print(f"{heading}, {args.per_value} sources per row, seed {args.seed}")
    print(f"{'value':>5} {'action':<14} {'exact':>6} {'unchanged':>9} {'changed':>7} {'intervened':>10} "
          f"{'covered':>7} {'code acc':>8}")
    for r in rows:
        print(f"{r['value']:>5} {r['action']:<14} {r['exact']:>6.1%} {r['unchanged']:>9.1%} {r['changed']:>7.1f} "
              f"{r['intervened']:>10.1f} {pct(r['covered']):>7} {pct(r['code_accuracy']):>8}")
    if args.out:
        write_record(args.out, "edits_by_source_value.py", argv, args, version, rows=rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
