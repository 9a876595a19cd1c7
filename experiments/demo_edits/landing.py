"""Where do a model's edits land? Per acted factor, the nearest render's verdict (the bench's judge):
exact, unchanged, or which factors it moved and by how many steps.

    python experiments/demo_edits/landing.py --model RUN/causal --data dsprites [--pairs 300] [--seed 0] \
        [--out landing.json]

Test pairs 0..pairs-1 of the twin, drawn with ``seed`` as the bench draws them; one CPU thread;
deterministic. Prints the commonest landings per factor and writes JSON (command, data, model, seed).
"""

from __future__ import annotations

import argparse
import collections
import shlex
import sys
from pathlib import Path

import torch

_ROOT = Path(__file__).resolve().parents[2]
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

from causal_vqvae.api import load  # noqa: E402
from causal_vqvae.eval.data import batches, twin_datamodule  # noqa: E402
from causal_vqvae.eval.judge import judge_edits  # noqa: E402
from causal_vqvae.files import write_json  # noqa: E402


@torch.no_grad()
def landings(model, dm, pairs: int, batch: int) -> dict[str, collections.Counter]:
    space = dm.space
    found: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for raw in batches(dm, "test", pairs, batch):
        b = dm.prepare_batch(raw)
        edited = model.decode_codes(model.edit_codes(model.encode_codes(b["image"]), b["action"]))
        verdict = judge_edits(edited, raw["factors"], raw["factors_next"], space, dm.source.render)
        source, nearest = space.canonical(raw["factors"]), verdict["nearest"]
        for i, factor in enumerate(dm.actions.factor_of(b["action"].cpu()).tolist()):
            moved = [f"{space.names[j]}{int(nearest[i, j] - source[i, j]):+d}"
                     for j in range(source.shape[1]) if nearest[i, j] != source[i, j]]
            landing = "exact" if verdict["exact"][i] else ("unchanged" if not moved else ",".join(moved))
            found[space.names[factor]][landing] += 1
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", default="dsprites", choices=["dsprites", "shapes3d"])
    parser.add_argument("--pairs", type=int, default=300)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    model = load(args.model, device="cpu")
    dm = twin_datamodule(args.data, args.pairs, args.batch, args.seed)
    found = landings(model, dm, args.pairs, args.batch)
    for factor, counts in found.items():
        total = sum(counts.values())
        print(f"{factor:12s} {total:4d} pairs: " + ", ".join(f"{k} {v}" for k, v in counts.most_common(8)))
    if args.out:
        write_json(args.out, {"meta": {"data": f"{args.data} procedural twin", "model": args.model, "seed": args.seed,
                                       "pairs": args.pairs, "device": "cpu", "split": "test",
                                       "command": shlex.join(["python", *sys.argv])},
                              "landings": {f: dict(c.most_common()) for f, c in found.items()}})


if __name__ == "__main__":
    main()
