"""Do a model's codes hold a dSprites sprite's orientation to the step? A probe trained on them.

    python experiments/demo_edits/orientation_probe.py --model RUN/causal [--model RUN2/causal ...] \\
        [--train 16000] [--test 2000] [--steps 2000] [--seed 0] [--out FILE.json]

A one-step edit of orientation changes the codes only where the sprite's edge crosses a code's
boundary, and which way it crosses depends on the orientation itself. This asks whether the source
codes say it. Sources: the hearts (shape class 2; dSprites orders square, ellipse, heart) among the
source images of the first ``--train`` training pairs and ``--test`` test pairs of the dSprites twin
(drawn with ``--seed``); a heart has no rotational symmetry, so its image fixes its orientation
class (39 distinct, one step 360/39 degrees; class 39 is class 0). A small CNN (two 3x3 convs of 64
channels and a linear read-out) is trained on the grid of code vectors for ``--steps`` steps of 128
(Adam, 1e-3, seeded) and scored on the test hearts: exact, and within one step (circular). The same
CNN behind three stride-2 convs of 32, 64 and 64 channels is trained on the pixels, as a reference
for what the probe learns in that budget. CPU. Prints a table and, with ``--out``, writes JSON.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from causal_vqvae.eval.data import batches, twin_datamodule
from causal_vqvae.files import write_json
from causal_vqvae.model import CausalVQVAE

HEART = 2  # dSprites' shape classes: square, ellipse, heart


def probe(in_channels: int, pixels: bool, classes: int) -> nn.Module:
    stem = [nn.Conv2d(in_channels, 32, 4, 2, 1), nn.GELU(), nn.Conv2d(32, 64, 4, 2, 1), nn.GELU(),
            nn.Conv2d(64, 64, 4, 2, 1), nn.GELU()] if pixels else []
    return nn.Sequential(*stem, nn.Conv2d(64 if pixels else in_channels, 64, 3, padding=1), nn.GELU(),
                         nn.Conv2d(64, 64, 3, padding=1), nn.GELU(), nn.Flatten(), nn.LazyLinear(classes))


def fit_and_score(inputs: dict[str, torch.Tensor], labels: dict[str, torch.Tensor], classes: int, pixels: bool,
                  steps: int, seed: int) -> dict[str, float]:
    torch.manual_seed(seed)
    net = probe(inputs["train"].shape[1], pixels, classes)
    net(inputs["train"][:2])  # materialise the lazy read-out
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        pick = torch.randint(0, len(labels["train"]), (128,), generator=generator)
        loss = F.cross_entropy(net(inputs["train"][pick]), labels["train"][pick])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        guess = torch.cat([net(chunk).argmax(-1) for chunk in inputs["test"].split(500)])
    off = (guess - labels["test"]).remainder(classes)
    return {"exact": float((off == 0).float().mean()),
            "within_one_step": float(((off <= 1) | (off == classes - 1)).float().mean())}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", required=True)
    parser.add_argument("--train", type=int, default=24000)
    parser.add_argument("--test", type=int, default=3000)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    dm = twin_datamodule("dsprites", args.test, 500, args.seed)
    space = dm.space
    orientation, shape = space.names.index("orientation"), space.names.index("shape")
    classes = space.factors[orientation].cycle
    images, labels = {}, {}
    for split, count in (("train", args.train), ("test", args.test)):
        parts = []
        for raw in batches(dm, split, count, 500):
            hearts = raw["factors"][:, shape] == HEART
            image = dm.prepare_batch(dict(raw))["image"][hearts]
            parts.append((image, space.canonical(raw["factors"])[hearts, orientation]))
        images[split], labels[split] = torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
    rows = {"pixels": fit_and_score(images, labels, classes, True, args.steps, args.seed)}
    for path in args.model:
        model = CausalVQVAE.from_pretrained(path).eval()
        side = model.config.grid_size
        with torch.no_grad():
            vectors = {split: torch.cat([model.quantizer.lookup(model.encode_codes(chunk))
                                         for chunk in images[split].split(500)]) for split in images}
        grids = {split: v.transpose(1, 2).reshape(len(v), -1, side, side) for split, v in vectors.items()}
        rows[path] = fit_and_score(grids, labels, classes, False, args.steps, args.seed)
    print(f"a heart's orientation ({classes} classes) from {len(labels['train'])} training and "
          f"{len(labels['test'])} test hearts, seed {args.seed}")
    print(f"{'probe input':<50} {'exact':>8} {'within one step':>16}")
    for name, row in rows.items():
        print(f"{name:<50} {row['exact']:>8.1%} {row['within_one_step']:>16.1%}")
    if args.out:
        write_json(args.out, {"command": "python " + shlex.join(["experiments/demo_edits/orientation_probe.py",
                                                                 *(argv if argv is not None else sys.argv[1:])]),
                              "data": "dSprites procedural twin", "device": "cpu", "seed": args.seed,
                              "train_hearts": len(labels["train"]), "test_hearts": len(labels["test"]),
                              "steps": args.steps, "results": rows})
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
