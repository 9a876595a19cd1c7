"""Where on the grid do a dSprites model's wrong edit codes cost an edit its exactness?

    python experiments/shape_edits/code_regions.py --model checkpoints/dsprites_twin [--pairs 1000]
        [--batch 200] [--seed 0] [--out experiments/shape_edits/results/code_regions_released.json]

On the bench's test pairs (the first ``--pairs`` of the dSprites twin, drawn with ``--seed``), each
edit's grid of cells (8 x 8 cells of 8 x 8 pixels) is split in three regions:

- **sprite**: the cells with a sprite pixel (intensity above 0.1) in the source or the target;
- **ring**: the cells next to those (the sprite cells dilated by one cell, 3 x 3), not sprite cells;
- **far**: the rest, pure background in both images.

The encoder's codes are not local: a code of a background cell can change when the sprite does.
Per factor the action moves (and per source -> target shape for shape edits), the script records
how many nodes change in each region (a mean per edit), the transition's code accuracy there (the
share of the group's changing nodes in the region whose edit code, ``model.edit_codes``, is the
encoded target's: pooled over the group's edits), and the nearest-render verdict
(:mod:`causal_vqvae.eval.judge`) of the edit as it is ("none") and with the encoded target's codes
put in one region or two, the edit's codes everywhere else. The region whose true codes make the
edit exact is where the edit's errors cost it.

Prints a table and writes JSON (atomically).
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path

import torch
import torch.nn.functional as F

from causal_vqvae.api import load
from causal_vqvae.eval.data import batches, twin_datamodule
from causal_vqvae.eval.judge import judge_edits, rate
from causal_vqvae.eval.report import script_record, write_json
from datamodules.dsprites.space import SHAPE_NAMES

REGIONS = ("sprite", "ring", "far")
# The edit's codes with the encoded target's put in these regions (the transition's elsewhere).
SPLICES = {"none": (), "sprite": ("sprite",), "sprite + ring": ("sprite", "ring"), "ring + far": ("ring", "far"),
           "far": ("far",)}


def regions(image: torch.Tensor, image_next: torch.Tensor, cell: int) -> dict[str, torch.Tensor]:
    """(B, N) bool masks of the grid's cells: ``sprite``, ``ring`` and ``far`` (see the module docstring)."""
    ink = (torch.maximum(image, image_next).amax(1, keepdim=True) > 0.1).float()
    sprite = F.max_pool2d(ink, cell)  # (B, 1, H / cell, W / cell)
    near = F.max_pool2d(sprite, 3, 1, 1)
    sprite, near = sprite.flatten(1) > 0, near.flatten(1) > 0
    return {"sprite": sprite, "ring": near & ~sprite, "far": ~near}


@torch.no_grad()
def study(model, dm, pairs: int, batch: int) -> dict:
    space, actions, render = dm.space, dm.actions, dm.source.render
    shape = space.factor_index("shape")
    side = model.config.grid_size  # cells per row of the grid
    rows: dict[str, dict[str, list[torch.Tensor]]] = defaultdict(lambda: defaultdict(list))
    for raw in batches(dm, "test", pairs, batch, "code regions"):
        b = dm.prepare_batch(raw)
        image, image_next, action = b["image"], b["image_next"], b["action"]
        codes, target = model.encode_codes(image), model.encode_codes(image_next)
        edited = model.edit_codes(codes, action)
        masks = regions(image, image_next, image.shape[-1] // side)
        changed, right = codes != target, edited == target
        stats: dict[str, torch.Tensor] = {}
        for name in REGIONS:
            here = changed & masks[name]
            stats[f"{name}_cells"] = masks[name].float().sum(1)
            stats[f"{name}_changed"] = here.float().sum(1)
            stats[f"{name}_right"] = (right & here).float().sum(1)
        for splice, names in SPLICES.items():
            put = torch.zeros_like(changed)
            for name in names:
                put |= masks[name]
            verdict = judge_edits(model.decode_codes(torch.where(put, target, edited)), raw["factors"],
                                  raw["factors_next"], space, render)
            stats[f"exact_with_target_in_{splice}"] = verdict["exact"].float()
        factor = actions.factor_of(raw["action"])
        groups = [(space.names[f], factor == f) for f in factor.unique().tolist()]
        source_shape, target_shape = raw["factors"][:, shape], raw["factors_next"][:, shape]
        for s in range(len(SHAPE_NAMES)):
            for t in range(len(SHAPE_NAMES)):
                member = (factor == shape) & (source_shape == s) & (target_shape == t)
                if member.any():
                    groups.append((f"shape: {SHAPE_NAMES[s]} -> {SHAPE_NAMES[t]}", member))
        for name, member in groups:
            for key, value in stats.items():
                rows[name][key].append(value.cpu()[member])
    results = {}
    for name, bucket in rows.items():
        results[name] = {"pairs": int(torch.cat(bucket["sprite_cells"]).numel())}
        for key, values in bucket.items():
            values = torch.cat(values)
            if key.startswith("exact"):
                results[name][key] = rate(values.bool())
            elif not key.endswith("_right"):
                results[name][key] = round(float(values.mean()), 4)
        for region in REGIONS:  # pooled: right codes over changed nodes, every edit of the group together
            right, changed = (float(torch.cat(bucket[f"{region}_{k}"]).sum()) for k in ("right", "changed"))
            results[name][f"{region}_code_accuracy"] = round(right / changed, 4) if changed else None
    return results


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
    dm = twin_datamodule("dsprites", args.pairs, args.batch, args.seed, "1")  # dSprites has one renderer
    results = study(model, dm, args.pairs, args.batch)
    print(f"{args.model}, dSprites twin, test pairs 0..{args.pairs - 1}, seed {args.seed}, cpu")
    print(f"{'edits':24s} {'n':>4s} | changed nodes: sprite ring far | code accuracy: sprite ring far | "
          "exact with the target's codes in: " + " / ".join(SPLICES))
    for name, r in results.items():
        changed = " ".join(f"{r[f'{k}_changed']:5.1f}" for k in REGIONS)
        accuracy = " ".join("     - " if r[f"{k}_code_accuracy"] is None else f"{100 * r[f'{k}_code_accuracy']:5.1f}%"
                            for k in REGIONS)
        exact = " / ".join(f"{100 * r[f'exact_with_target_in_{s}']['rate']:5.1f}%" for s in SPLICES)
        print(f"{name:24s} {r['pairs']:4d} | {changed} | {accuracy} | {exact}")
    record = script_record("experiments/shape_edits/code_regions.py", argv, args, torch.device("cpu"),
                           data="dsprites procedural twin", checkpoint=args.model, results=results)
    if args.out is not None:
        write_json(args.out, record)
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
