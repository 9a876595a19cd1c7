"""Where do a dSprites model's shape edits land, and how many answers do the pixels allow?

    python experiments/shape_edits/diagnose.py --model checkpoints/dsprites_twin [--pairs 1000]
        [--batch 200] [--seed 0] [--out experiments/shape_edits/results/released.json]

On the bench's test pairs (``causal_vqvae.cli.bench``'s first ``--pairs`` pairs of the dSprites twin,
drawn with ``--seed``), for the edits that act on shape, by (source shape -> target shape):

- the nearest-render verdicts (``causal_vqvae.eval.judge``) of the edit and of the decoder's
  ceiling ``decode(encode(target))``, and which factors the nearest state gets wrong;
- **the symmetry ceiling** (:func:`best_share`): a square looks the same turned by 90 degrees and an
  ellipse by 180, so the orientation classes that the judge's half-step rule (``factor_matches``)
  counts as the source's own are all equally the source; the action applied to each gives a
  target, and the judge (with the TARGET's symmetry) may tell those targets apart. An editor that
  sees only the pixels is exact, at best, for the share of them that its one output matches (the
  copies are a few degrees apart, which the 64 x 64 pixels show in 8-16 pixels of a square's
  edge);
- for the edits whose target is an ellipse, which of its axes the edit took: the target's
  (orientation class k, or k + 19 / k + 20, the same ellipse turned by 180 degrees) or the other
  one (k + 10 / k + 29, a quarter turn away), by the pixel MSE to each.

Prints a table and writes JSON (atomically).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

import torch

from causal_vqvae.api import load
from causal_vqvae.eval.data import batches, twin_datamodule
from causal_vqvae.eval.factor_classifier import factor_matches
from causal_vqvae.eval.judge import judge_edits, rate
from causal_vqvae.files import atomic_write
from datamodules.dsprites.space import SHAPE_NAMES


def best_share(source: torch.Tensor, action: torch.Tensor, dm) -> torch.Tensor:
    """(B,) the largest share of the source's symmetric copies whose targets one output matches.

    The copies are the orientation classes the judge counts as the source's own; each, moved by
    ``action``, gives a target. An output (the target shape at any orientation, all else as the
    target) is exact for the copies whose target it matches. The pixels cannot tell the copies
    apart, so the best an editor can do from them is the output that matches the most."""
    space, actions = dm.space, dm.actions
    orientation = space.factor_index("orientation")
    cycle = space.factors[orientation].cycle
    shares = []
    for s, a in zip(source, action):
        copies = s.repeat(cycle, 1)
        copies[:, orientation] = torch.arange(cycle)
        same = factor_matches(copies, s.repeat(cycle, 1), space).all(-1)
        targets, ok = actions.apply(copies[same], a.repeat(int(same.sum())))
        targets = targets[ok]
        outputs = targets[:1].repeat(cycle, 1)
        outputs[:, orientation] = torch.arange(cycle)
        hits = torch.stack([factor_matches(outputs, t.repeat(cycle, 1), space).all(-1) for t in targets], 1)
        shares.append(float(hits.float().mean(1).max()))
    return torch.tensor(shares)


@torch.no_grad()
def diagnose(model, dm, pairs: int, batch: int) -> dict:
    space, actions, render = dm.space, dm.actions, dm.source.render
    shape, orientation = space.factor_index("shape"), space.factor_index("orientation")
    groups: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    for raw in batches(dm, "test", pairs, batch, "shape edits"):
        b = dm.prepare_batch(raw)
        acted = actions.factor_of(raw["action"]) == shape
        if not acted.any():
            continue
        source, target, action = raw["factors"][acted], raw["factors_next"][acted], raw["action"][acted]
        edited = model.edit(b["image"][acted], b["action"][acted])
        verdict = judge_edits(edited, source, target, space, render)
        ceiling = judge_edits(model.decode_codes(model.encode_codes(b["image_next"][acted])), source, target,
                              space, render)
        wrong = ~factor_matches(verdict["nearest"], target, space)  # (B, F)
        axis = {}
        for name, turns in (("target", (0, 19, 20)), ("other", (10, 29))):
            mse = []
            for turn in turns:
                turned = target.clone()
                turned[:, orientation] = (turned[:, orientation] + turn) % space.factors[orientation].cycle
                mse.append((render(turned).float() - edited.float()).pow(2).flatten(1).mean(1))
            axis[name] = torch.stack(mse).min(0).values
        share = best_share(source, action, dm)
        for i in range(len(source)):
            key = f"{SHAPE_NAMES[int(source[i, shape])]} -> {SHAPE_NAMES[int(target[i, shape])]}"
            g = groups[key]
            for k in ("exact", "unchanged", "two_sided"):
                g[k].append(bool(verdict[k][i]))
            g["ceiling_exact"].append(bool(ceiling["exact"][i]))
            g["best_share"].append(float(share[i]))
            g["wrong"].append(",".join(space.names[f] for f in range(len(space.names)) if wrong[i, f]) or "-")
            if SHAPE_NAMES[int(target[i, shape])] == "ellipse":
                g["target_axis"].append(bool(axis["target"][i] < axis["other"][i]))
    out = {}
    for key, g in sorted(groups.items()):
        misses: dict[str, int] = defaultdict(int)
        for w, e in zip(g["wrong"], g["exact"]):
            if not e:
                misses[w] += 1
        out[key] = {
            **{k: rate(torch.tensor(g[k])) for k in ("exact", "unchanged", "two_sided", "ceiling_exact")},
            "symmetry_ceiling": float(torch.tensor(g["best_share"]).mean()),
            "misses_by_wrong_factors": dict(sorted(misses.items(), key=lambda kv: -kv[1])),
            "took_target_axis": rate(torch.tensor(g["target_axis"])) if g["target_axis"] else None,
        }
    every = {k: [v for g in groups.values() for v in g[k]] for k in ("exact", "best_share")}
    out["all shape edits"] = {"exact": rate(torch.tensor(every["exact"])),
                              "symmetry_ceiling": float(torch.tensor(every["best_share"]).mean())}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--pairs", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    torch.manual_seed(args.seed)
    model = load(args.model, device="cpu").eval()
    dm = twin_datamodule("dsprites", args.pairs, args.batch, args.seed, "1")
    results = diagnose(model, dm, args.pairs, args.batch)
    print(f"shape edits of {args.model}, dSprites twin, test pairs 0..{args.pairs - 1}, seed {args.seed}, cpu")
    print(f"{'edit':20s} {'n':>4s} {'exact':>7s} {'unchanged':>9s} {'decoder':>8s} {'sym.':>7s} "
          f"{'target axis':>11s}  misses (factors wrong)")
    for key, r in results.items():
        if key == "all shape edits":
            continue
        axis = "" if r["took_target_axis"] is None else f"{100 * r['took_target_axis']['rate']:.1f}%"
        print(f"{key:20s} {r['exact']['n']:4d} {100 * r['exact']['rate']:6.1f}% {100 * r['unchanged']['rate']:8.1f}% "
              f"{100 * r['ceiling_exact']['rate']:7.1f}% {100 * r['symmetry_ceiling']:6.1f}% "
              f"{axis:>11s}  {r['misses_by_wrong_factors']}")
    total = results["all shape edits"]
    print(f"all shape edits: {100 * total['exact']['rate']:.1f}% exact; an editor that cannot tell the source from its symmetric copies can reach "
          f"{100 * total['symmetry_ceiling']:.1f}%")
    record = {"model": args.model, "data": "dsprites procedural twin", "pairs": args.pairs, "seed": args.seed,
              "device": "cpu", "command": "python experiments/shape_edits/diagnose.py " + " ".join(sys.argv[1:]),
              "results": results}
    if args.out is not None:
        text = json.dumps(record, indent=1) + "\n"
        atomic_write(args.out, lambda temp: Path(temp).write_text(text))
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
