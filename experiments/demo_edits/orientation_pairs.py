"""Per test pair of one factor: how many codes the edit changes and gets right, and the judge's verdict.

    python experiments/demo_edits/orientation_pairs.py --model RUN/causal [--factor orientation] [--pairs 300] [--seed 0]

For each of the first ``--pairs`` test pairs of the dSprites twin (drawn with ``--seed``) whose
action moves ``--factor``: the source state, how many pixels differ between the source and target
renders, the nearest-render verdicts (exact, unchanged), how many codes differ between the encoded
source and target, how many the edit changes, and how many of the former it gets right. Prints a
line per pair and the means; nothing is written.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from causal_vqvae.eval.data import batches, twin_datamodule
from causal_vqvae.eval.judge import judge_edits
from causal_vqvae.model import CausalVQVAE


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--factor", default="orientation")
    parser.add_argument("--pairs", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    model = CausalVQVAE.from_pretrained(args.model).eval()
    dm = twin_datamodule("dsprites", args.pairs, 100, args.seed)
    space, actions, render = dm.space, dm.actions, dm.source.render
    factor = space.names.index(args.factor)
    rows = []
    with torch.no_grad():
        for raw in batches(dm, "test", args.pairs, 100):
            b = dm.prepare_batch(dict(raw))
            source, target = raw["factors"], raw["factors_next"]
            verdicts = judge_edits(model.edit(b["image"], b["action"]), source, target, space, render)
            pixels = (render(source) - render(target)).abs().flatten(1).gt(0.5).sum(1)
            codes, target_codes = model.encode_codes(b["image"]), model.encode_codes(b["image_next"])
            edited = model.edit_codes(codes, b["action"])
            moved = actions.factor_of(raw["action"]) == factor
            for i in moved.nonzero().flatten().tolist():
                changed = codes[i] != target_codes[i]
                rows.append((source[i].tolist(), int(pixels[i]), bool(verdicts["exact"][i]),
                             bool(verdicts["unchanged"][i]), int(changed.sum()), int((edited[i] != codes[i]).sum()),
                             int(((edited[i] == target_codes[i]) & changed).sum())))
    for state, pixels, exact, unchanged, changed, edited, right in rows:
        print(f"state {state}  pixels changed {pixels:3d}  exact {exact:d}  unchanged {unchanged:d}  "
              f"codes that change {changed:2d}  codes the edit changes {edited:2d}  right {right:2d}")
    count = max(1, len(rows))
    means = [sum(r[k] for r in rows) / count for k in range(1, 7)]
    print(f"{len(rows)} {args.factor} pairs: pixels changed {means[0]:.1f}, exact {means[1]:.1%}, "
          f"unchanged {means[2]:.1%}, codes that change {means[3]:.1f}, codes the edit changes {means[4]:.1f}, "
          f"right {means[5]:.1f}")


if __name__ == "__main__":
    main()
