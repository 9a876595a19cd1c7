"""A judge of edits that needs no training: the nearest render by pixel MSE.

The factor classifier (:mod:`.factor_classifier`) reads an edit's factors; this judge asks the
pixels instead, so that no exactness figure is an artefact of a classifier. For an edit of a source
state ``s`` meant to reach the target state ``t``, the candidates are ``s`` and every state *one
factor away* from ``s`` (one factor at any other value, all else equal; ``t`` is among them). Their
twin renders are compared with the edited image by pixel MSE, and the nearest one is the verdict:

- **exact**: the nearest candidate is ``t`` (on dSprites, or a state whose only difference from ``t``
  is an orientation that renders the same under the shape's rotational symmetry, as
  :func:`~causal_vqvae.eval.factor_classifier.factor_matches` rules; ``exact_strict`` allows none);
- **unchanged**: the nearest candidate is ``s`` itself (up to the same symmetry) while ``t`` is not,
  and the edit is not exact: the edit did nothing (a chain of actions that ends where it started is
  judged exact or not, never unchanged; an edit of a square from class k to k + 1 that lands at
  k + 20 is 4.6 degrees (modulo 90) from both and matches both under the symmetry rule: it is
  exact);
- **two-sided**: exact, and the edit is also nearer ``t`` than every render one factor away from
  ``t``, so a side effect cannot hide behind a larger intended change (a changed colour beside a
  moved object is nearer "moved object, changed colour" than "moved object").

For a chain of k actions from ``s`` to ``t``, the candidates are ``s``, ``t`` and every state one
factor away from ``t``: exact when ``t`` is nearest, unchanged when ``s`` is.

Rates come with Wilson score intervals (:func:`wilson_interval`).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from datamodules.factors import FactorSpace

from .factor_classifier import factor_matches

__all__ = ["one_factor_away", "nearest_renders", "judge_edits", "wilson_interval", "rate"]

Render = Callable[[torch.Tensor], torch.Tensor]


def one_factor_away(states: torch.Tensor, space: FactorSpace) -> tuple[torch.Tensor, torch.Tensor]:
    """Every state one factor away from each of ``states`` (B, F): ``(B, M, F)`` long, in canonical
    classes, and ``(M,)`` the factor each candidate moves. M = sum over factors of (cycle - 1)."""
    states = space.canonical(states)
    candidates, moved = [], []
    for f, factor in enumerate(space.factors):
        cycle = factor.cycle
        if cycle < 2:
            continue
        # The other cycle - 1 values of factor f, in order after the current one.
        shift = torch.arange(1, cycle, device=states.device)
        values = (states[:, f, None] + shift) % cycle  # (B, cycle - 1)
        block = states[:, None, :].expand(-1, cycle - 1, -1).clone()
        block[:, :, f] = values
        candidates.append(block)
        moved.append(torch.full((cycle - 1,), f, dtype=torch.long))
    return torch.cat(candidates, 1), torch.cat(moved)


@torch.no_grad()
def nearest_renders(
    images: torch.Tensor, candidates: torch.Tensor, render: Render, chunk: int = 4096,
) -> torch.Tensor:
    """Pixel MSE ``(B, M)`` between each image (B, C, H, W) and the renders of its candidate
    states ``(B, M, F)``, rendered ``chunk`` at a time on the images' device."""
    batch, count = candidates.shape[:2]
    flat = candidates.reshape(batch * count, -1).to(images.device)
    owner = torch.arange(batch, device=images.device).repeat_interleave(count)
    errors = torch.empty(batch * count, device=images.device)
    for start in range(0, batch * count, chunk):
        rows = slice(start, start + chunk)
        rendered = render(flat[rows]).float()
        errors[rows] = (rendered - images[owner[rows]].float()).pow(2).flatten(1).mean(1)
    return errors.view(batch, count)


@torch.no_grad()
def judge_edits(
    images: torch.Tensor, source: torch.Tensor, target: torch.Tensor, space: FactorSpace, render: Render,
    single_step: bool = True,
) -> dict[str, torch.Tensor]:
    """Verdicts ``(B,)`` bool for edited ``images`` of ``source`` states meant to reach ``target``
    states (both (B, F)): ``exact``, ``exact_strict``, ``unchanged``, ``two_sided``, ``nearest``
    (B, F), the nearest candidate, and ``side_factor`` (B,) long, the factor moved by the render one
    factor away from the target (a symmetric copy of the target left out) that is nearest each
    image: where an edit is exact but not two-sided, its side effect. ``single_step``: ``target``
    is one action from ``source`` (candidates around the source, see the module docstring); else a
    chain's end (candidates around the target). The verdicts are on the CPU, wherever the images are."""
    source, target = space.canonical(source.cpu()), space.canonical(target.cpu())
    around_target, moved = one_factor_away(target, space)
    target_block = torch.cat([target[:, None], around_target], 1)  # (B, 1 + M, F)
    target_errors = nearest_renders(images, target_block, render).cpu()
    if single_step:
        around_source, _ = one_factor_away(source, space)
        candidates = torch.cat([source[:, None], around_source], 1)
        errors = nearest_renders(images, candidates, render).cpu()
    else:  # the target and its neighbours are the chain's candidates: rendered once
        candidates = torch.cat([source[:, None], target_block], 1)
        errors = torch.cat([nearest_renders(images, source[:, None], render).cpu(), target_errors], 1)
    nearest = candidates[torch.arange(len(candidates)), errors.argmin(1)]
    exact = factor_matches(nearest, target, space).all(-1)
    # Two-sided: nearer the target than anything one factor away from it that is not the target
    # itself (a symmetric copy of the target renders the same and does not count against it).
    to_target, around = target_errors[:, 0], target_errors[:, 1:]
    same = factor_matches(around_target.flatten(0, 1), target.repeat_interleave(around_target.shape[1], 0),
                          space).all(-1).view(around.shape)
    closest_other, side = around.masked_fill(same, math.inf).min(1)
    return {
        "exact": exact,
        "exact_strict": (nearest == target).all(-1),
        "unchanged": factor_matches(nearest, source, space).all(-1)
        & ~factor_matches(target, source, space).all(-1) & ~exact,
        "two_sided": exact & (to_target < closest_other),
        "nearest": nearest,
        "side_factor": moved[side],
    }


def wilson_interval(successes: int, count: int, z: float = 1.96) -> tuple[float, float] | None:
    """The Wilson score interval of a binomial rate (95% for z = 1.96); None for no trials."""
    if count == 0:
        return None
    p = successes / count
    centre = (p + z * z / (2 * count)) / (1 + z * z / count)
    half = z * math.sqrt(p * (1 - p) / count + z * z / (4 * count * count)) / (1 + z * z / count)
    return max(0.0, centre - half), min(1.0, centre + half)


def rate(verdicts: torch.Tensor) -> dict[str, float | int | list[float] | None]:
    """``{"rate", "n", "wilson95"}`` of a (B,) bool tensor."""
    count, successes = int(verdicts.numel()), int(verdicts.sum())
    interval = wilson_interval(successes, count)
    return {"rate": successes / count if count else None, "n": count,
            "wilson95": None if interval is None else [round(interval[0], 6), round(interval[1], 6)]}
