"""How many of a model's codes survive a round trip through its decoder: encode(decode(codes)) == codes?

    python experiments/demo_edits/reencode_codes.py --model RUN/causal [--model RUN2/causal ...] \
        [--pairs 300] [--seed 0]

Edits in a row decode an edit and encode the picture again, so a code that the decoder's picture
does not give back changes although nothing was edited there. For the first ``--pairs`` test
sources of the dSprites twin (drawn with ``--seed``), per model: the fraction of nodes whose code
the re-encoded reconstruction keeps, on empty cells (the 8x8 input patch is all background) and
on cells the sprite touches, and the code empty cells take most often before and after. Prints one
line per model; nothing is written.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from causal_vqvae.eval.data import batches, twin_datamodule
from causal_vqvae.model import CausalVQVAE


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", required=True)
    parser.add_argument("--pairs", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    dm = twin_datamodule("dsprites", args.pairs, 100, args.seed)
    for path in args.model:
        model = CausalVQVAE.from_pretrained(path).eval()
        cell = model.config.image_size // model.config.grid_size
        kept, empty, before, after = [], [], [], []
        with torch.no_grad():
            for raw in batches(dm, "test", args.pairs, 100):
                x = dm.prepare_batch(dict(raw))["image"]
                codes = model.encode_codes(x)
                again = model.encode_codes(model.decode_codes(codes))
                blank = F.avg_pool2d(x, cell).flatten(1) == 0
                kept.append(codes == again)
                empty.append(blank)
                before.append(codes[blank])
                after.append(again[blank])
        kept, empty = torch.cat(kept), torch.cat(empty)
        before, after = torch.cat(before), torch.cat(after)
        common_before, common_after = before.mode().values, after.mode().values
        print(f"{path}: re-encoded reconstruction keeps {kept.float().mean():.1%} of codes "
              f"({kept[empty].float().mean():.1%} on empty cells, {kept[~empty].float().mean():.1%} on the sprite's); "
              f"empty cells' commonest code {int(common_before)} ({(before == common_before).float().mean():.0%}) "
              f"before, {int(common_after)} ({(after == common_after).float().mean():.0%}) after")


if __name__ == "__main__":
    main()
