"""Where do a dSprites model's shape edits land, and how many can be exact?

    python experiments/shape_edits/diagnose.py --model checkpoints/dsprites_twin [--pairs 1000]
        [--batch 200] [--seed 0] [--out experiments/shape_edits/results/released_window.json]
        [--picture experiments/shape_edits/results/released_window.png]

On the bench's test pairs (``causal_vqvae.cli.bench``'s first ``--pairs`` pairs of the dSprites twin,
drawn with ``--seed``), for the edits that act on shape, by (source shape -> target shape):

- the nearest-render verdicts (``causal_vqvae.eval.judge``) of the edit and of the decoder's
  ceiling ``decode(encode(target))``, and which factors the nearest candidate gets wrong;
- **the pose of the new shape**: among the target shape at each of the 39 orientation classes (all
  else as the target), the one nearest the edit by pixel MSE, and its angle from the target modulo
  the target shape's symmetry, in classes (the judge matches within half a class); and whether
  that pose is nearer the edit than every candidate of the judge but the target (the candidates
  are one factor from the source, so the target shape in another pose is not among them);
- **two state-level shares of exact edits within reach** (:func:`best_share`). A square looks the
  same turned by 90 degrees and an ellipse by 180, so several orientation classes are nearly or
  exactly the source: the *judge's copies* (the classes its half-step rule counts as the source's
  own: k, k +- 10, k + 19, k + 20 for a square, turned by 2.3-4.6 degrees) and the *pixel copies*
  (those whose render is the source's, pixel for pixel). Each copy, moved by the action, gives a
  target; one output state (the target shape at one orientation) matches some of them under the
  judge's rule. The share is the best output's share of the copies: what an editor can reach that
  does not tell the copies apart. It is computed on states, not on images judged among
  candidates, so it is a guide, not a bound on the judge's figure. How many pixels the judge's
  copies differ from the source by is recorded beside it.

Prints a table, and writes JSON and a picture (atomically): six edits of each kind, in the order
of the table, two to a row, each as source, edit, target.
"""

from __future__ import annotations

import argparse
import math
import statistics
from collections import defaultdict
from pathlib import Path

import torch
from PIL import Image
from torchvision.utils import make_grid

from causal_vqvae.api import load
from causal_vqvae.eval.data import batches, twin_datamodule
from causal_vqvae.eval.factor_classifier import SYMMETRIES, factor_matches
from causal_vqvae.eval.judge import judge_edits, nearest_renders, one_factor_away, rate
from causal_vqvae.eval.pictures import write_png
from causal_vqvae.eval.report import script_record, write_json
from datamodules.dsprites.space import SHAPE_NAMES


def copies_of(state: torch.Tensor, space, render) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The source ``state`` (F,) at every orientation class: ``(states (C, F), judge (C,) bool,
    pixels (C,) long)``: the classes the judge counts as the source's own, and how many pixels each
    class's render differs from the source's by."""
    orientation = space.factor_index("orientation")
    cycle = space.factors[orientation].cycle
    states = state.repeat(cycle, 1)
    states[:, orientation] = torch.arange(cycle)
    judge = factor_matches(states, state.repeat(cycle, 1), space).all(-1)
    images = render(states)
    pixels = (images != render(state[None])).flatten(1).sum(1)
    return states, judge, pixels


def best_share(copies: torch.Tensor, action: torch.Tensor, dm) -> float:
    """The largest share of ``copies`` (C, F) whose targets under ``action`` one output state (the
    first target's shape at one orientation, all else as it) matches by the judge's rule."""
    space, actions = dm.space, dm.actions
    orientation = space.factor_index("orientation")
    cycle = space.factors[orientation].cycle
    targets, ok = actions.apply(copies, action.repeat(len(copies)))
    targets = targets[ok]
    outputs = targets[:1].repeat(cycle, 1)
    outputs[:, orientation] = torch.arange(cycle)
    hits = torch.stack([factor_matches(outputs, t.repeat(cycle, 1), space).all(-1) for t in targets], 1)
    return float(hits.float().mean(1).max())


def pose_offset(found: torch.Tensor, target: torch.Tensor, order: torch.Tensor, cycle: int) -> torch.Tensor:
    """Angle between orientation classes ``found`` and ``target`` modulo the shape's symmetry
    (``order``-fold), in classes (0 to cycle / (2 order))."""
    turn = ((found - target).float() * order) % cycle
    return torch.minimum(turn, cycle - turn) / order


@torch.no_grad()
def diagnose(model, dm, pairs: int, batch: int) -> tuple[dict, torch.Tensor]:
    space, actions, render = dm.space, dm.actions, dm.source.render
    shape, orientation = space.factor_index("shape"), space.factor_index("orientation")
    cycle = space.factors[orientation].cycle
    orders = torch.tensor(SYMMETRIES["dsprites"][0].orders)
    groups: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    shown: dict[str, list[torch.Tensor]] = defaultdict(list)
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
        around, _ = one_factor_away(source, space)  # the judge's candidates but the source
        candidates = torch.cat([source[:, None], around], 1)
        is_target = factor_matches(candidates.flatten(0, 1), target.repeat_interleave(candidates.shape[1], 0),
                                   space).all(-1).view(candidates.shape[:2])
        to_candidates = nearest_renders(edited, candidates, render).masked_fill(is_target, math.inf).min(1).values
        poses = target[:, None].repeat(1, cycle, 1)
        poses[:, :, orientation] = torch.arange(cycle)
        to_poses = nearest_renders(edited, poses, render)  # (B, C)
        found = to_poses.argmin(1)
        offset = pose_offset(found, target[:, orientation], orders[target[:, shape]], cycle)
        for i in range(len(source)):
            key = f"{SHAPE_NAMES[int(source[i, shape])]} -> {SHAPE_NAMES[int(target[i, shape])]}"
            g = groups[key]
            for k in ("exact", "unchanged", "two_sided"):
                g[k].append(bool(verdict[k][i]))
            g["ceiling_exact"].append(bool(ceiling["exact"][i]))
            g["wrong"].append(",".join(space.names[f] for f in range(len(space.names)) if wrong[i, f]) or "-")
            g["pose_offset"].append(float(offset[i]))
            g["target_shape_nearest"].append(bool(to_poses[i].min() < to_candidates[i]))
            states, judge, pixels = copies_of(source[i], space, render)
            g["judge_share"].append(best_share(states[judge], action[i], dm))
            g["pixel_share"].append(best_share(states[pixels == 0], action[i], dm))
            g["copy_pixels"].extend(pixels[judge & (pixels > 0)].tolist())
            g["identical_copies"].append(int((judge & (pixels == 0)).sum()) - 1)
            if len(shown[key]) < 6:
                shown[key].append(torch.stack([b["image"][acted][i], edited[i], b["image_next"][acted][i]]))
    out = {}
    for key, g in sorted(groups.items()):
        misses: dict[str, int] = defaultdict(int)
        for w, e in zip(g["wrong"], g["exact"]):
            if not e:
                misses[w] += 1
        offsets = torch.tensor(g["pose_offset"])
        copy_pixels = torch.tensor(g["copy_pixels"], dtype=torch.float)
        out[key] = {
            **{k: rate(torch.tensor(g[k])) for k in ("exact", "unchanged", "two_sided", "ceiling_exact",
                                                    "target_shape_nearest")},
            "misses_by_wrong_factors": dict(sorted(misses.items(), key=lambda kv: -kv[1])),
            "pose_within_half_class": rate(offsets <= 0.5),
            "pose_within_one_and_a_half_classes": rate(offsets <= 1.5),
            "pose_offset_mean_classes": round(statistics.fmean(g["pose_offset"]), 3),
            "judge_copies_share": round(statistics.fmean(g["judge_share"]), 4),
            "pixel_copies_share": round(statistics.fmean(g["pixel_share"]), 4),
            "judge_copies_pixels_differing": None if not len(copy_pixels) else {
                "min": int(copy_pixels.min()), "median": float(copy_pixels.median()), "max": int(copy_pixels.max())},
            "identical_copies_mean": round(statistics.fmean(g["identical_copies"]), 3),
        }
    every = {k: [v for g in groups.values() for v in g[k]] for k in ("exact", "judge_share", "pixel_share")}
    out["all shape edits"] = {"exact": rate(torch.tensor(every["exact"])),
                              "judge_copies_share": round(statistics.fmean(every["judge_share"]), 4),
                              "pixel_copies_share": round(statistics.fmean(every["pixel_share"]), 4)}
    tiles = [image for _, stacks in sorted(shown.items()) for stack in stacks for image in stack]
    return out, make_grid(torch.stack(tiles).float(), nrow=6, padding=2, pad_value=0.5)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--pairs", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--picture", default=None)
    args = parser.parse_args(argv)
    torch.manual_seed(args.seed)
    model = load(args.model, device="cpu").eval()
    dm = twin_datamodule("dsprites", args.pairs, args.batch, args.seed, "1")  # dSprites has one renderer
    results, picture = diagnose(model, dm, args.pairs, args.batch)
    print(f"shape edits of {args.model}, dSprites twin, test pairs 0..{args.pairs - 1}, seed {args.seed}, cpu")
    print(f"{'edit':18s} {'n':>4s} {'exact':>6s} {'unch.':>6s} {'decoder':>7s} {'pose ok':>7s} {'+-1':>6s} "
          f"{'shape':>6s} {'judge':>6s} {'pixel':>6s}  misses (factors wrong)")
    for key, r in results.items():
        if key == "all shape edits":
            continue
        cells = [r["exact"]["rate"], r["unchanged"]["rate"], r["ceiling_exact"]["rate"],
                 r["pose_within_half_class"]["rate"], r["pose_within_one_and_a_half_classes"]["rate"],
                 r["target_shape_nearest"]["rate"], r["judge_copies_share"], r["pixel_copies_share"]]
        print(f"{key:18s} {r['exact']['n']:4d} " + " ".join(f"{100 * c:5.1f}%" for c in cells)
              + f"  {r['misses_by_wrong_factors']}")
    total = results["all shape edits"]
    print(f"all shape edits: {100 * total['exact']['rate']:.1f}% exact; within reach of an editor that does not "
          f"tell the judge's copies apart {100 * total['judge_copies_share']:.1f}%, the pixel copies "
          f"{100 * total['pixel_copies_share']:.1f}%")
    print("(pose ok / +-1: the new shape's nearest pose within half a class / 1.5 classes of the target's; shape: "
          "that pose nearer the edit than every other candidate of the judge; judge / pixel: state-level shares)")
    record = script_record("experiments/shape_edits/diagnose.py", argv, args, torch.device("cpu"),
                           data="dsprites procedural twin", results=results)
    if args.out is not None:
        write_json(args.out, record)
        print(f"wrote {args.out}")
    if args.picture is not None:
        pixels = (picture.clamp(0, 1).expand(3, -1, -1) * 255).round().byte().permute(1, 2, 0).numpy()
        image = Image.fromarray(pixels)
        write_png(args.picture, image.resize((image.width * 2, image.height * 2), Image.NEAREST))
        print(f"wrote {args.picture}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
