"""The pixel judge of edits (causal_vqvae.eval.judge), on known answers: a true render of the target
is exact, the source itself is unchanged, a side effect fails the two-sided test; Wilson intervals."""

from __future__ import annotations

import pytest
import torch

from causal_vqvae.eval.judge import judge_edits, one_factor_away, rate, wilson_interval
from datamodules.dsprites import DSPRITES, render_dsprites
from datamodules.factors import ActionSpace
from datamodules.shapes3d import SHAPES3D, render_shapes3d

SPACES = {"shapes3d": (SHAPES3D, render_shapes3d), "dsprites": (DSPRITES, render_dsprites)}


def pairs(space, count: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``count`` seeded (source, action, target) states one valid action apart."""
    g = torch.Generator().manual_seed(seed)
    source = space.sample(count, g)
    actions = ActionSpace(space)
    action = torch.multinomial(actions.valid_mask(source).double(), 1, generator=g)[:, 0]
    target, ok = actions.apply(source, action)
    assert ok.all()
    return source, actions.factor_of(action), target


def test_one_factor_away_lists_every_other_value_of_every_factor_once():
    state = torch.tensor([[3, 4, 5, 2, 1, 7]])
    candidates, moved = one_factor_away(state, SHAPES3D)
    assert candidates.shape == (1, 9 + 9 + 9 + 7 + 3 + 14, 6) and moved.shape == (51,)
    differ = candidates[0] != state
    assert (differ.sum(1) == 1).all()  # exactly one factor differs
    assert torch.equal(differ.float().argmax(1), moved)
    assert len({tuple(c.tolist()) for c in candidates[0]}) == 51  # no repeats


@pytest.mark.parametrize("name", sorted(SPACES))
def test_true_targets_are_exact_and_two_sided_and_sources_are_unchanged(name):
    space, render = SPACES[name]
    source, _, target = pairs(space, 24)
    hit = judge_edits(render(target), source, target, space, render)
    assert hit["exact"].all() and hit["exact_strict"].all() and hit["two_sided"].all()
    assert not hit["unchanged"].any()
    assert torch.equal(hit["nearest"], space.canonical(target))
    still = judge_edits(render(source), source, target, space, render)
    assert still["unchanged"].all() and not still["exact"].any() and not still["two_sided"].any()


def test_an_edit_that_also_moves_another_factor_is_not_two_sided():
    """3D Shapes: the intended hue change, plus the wall turned another colour. Nearest among the
    source's neighbours may still be the target, but the render with both changes is nearer."""
    source = torch.tensor([[0, 0, 0, 3, 1, 7]] * 2)
    target = source.clone()
    target[:, 2] = 5  # object hue moved (not one step: the judge does not care about the step here)
    edited_state = target.clone()
    edited_state[:, 1] = 1  # and the wall hue too, by a little
    verdict = judge_edits(render_shapes3d(edited_state), source, target, SHAPES3D, render_shapes3d)
    assert not verdict["two_sided"].any()


def test_a_chain_is_judged_around_its_end():
    space, render = SPACES["shapes3d"]
    start = torch.tensor([[0, 1, 2, 3, 1, 7]])
    end = torch.tensor([[2, 1, 2, 5, 1, 7]])  # two factors moved: not one factor from the start
    assert judge_edits(render(end), start, end, space, render, single_step=False)["exact"].all()
    off = end.clone()
    off[0, 5] = 8
    verdict = judge_edits(render(off), start, end, space, render, single_step=False)
    assert not verdict["exact"].any() and not verdict["unchanged"].any()
    assert judge_edits(render(start), start, end, space, render, single_step=False)["unchanged"].all()


def test_wilson_interval_known_values():
    low, high = wilson_interval(81, 263)  # by hand: centre 0.3108, half-width 0.0555
    assert low == pytest.approx(0.2553, abs=1e-4) and high == pytest.approx(0.3662, abs=1e-4)
    low, high = wilson_interval(0, 10)
    assert low == 0.0 and high == pytest.approx(0.2775, abs=1e-4)
    low, high = wilson_interval(10, 10)
    assert high == 1.0 and low == pytest.approx(1 - 0.2775, abs=1e-4)
    assert wilson_interval(0, 0) is None
    r = rate(torch.tensor([True, False, True, True]))
    assert r["rate"] == 0.75 and r["n"] == 4 and r["wilson95"][0] < 0.75 < r["wilson95"][1]


def test_a_chain_that_ends_where_it_started_is_exact_or_not_never_unchanged():
    space, render = SPACES["shapes3d"]
    start = torch.tensor([[0, 1, 2, 3, 1, 7]])  # e.g. scale+ then scale-: the target is the start
    back = judge_edits(render(start), start, start, space, render, single_step=False)
    assert back["exact"].all() and not back["unchanged"].any()
    off = start.clone()
    off[0, 3] = 4
    missed = judge_edits(render(off), start, start, space, render, single_step=False)
    assert not missed["exact"].any() and not missed["unchanged"].any()


def test_a_square_that_matches_both_its_source_and_its_target_is_exact_not_unchanged():
    """dSprites orientation classes are 360/39 degrees apart: a square at class k + 20 is the square
    at k turned by 184.6 degrees, which the half-step rule matches to k (4-fold symmetry) and to
    k + 1 alike. Landing there is an exact turn, not an edit that did nothing."""
    source = torch.tensor([[0, 0, 3, 5, 16, 16]] * 2)  # color, shape (square), scale, orientation, posX, posY
    target = source.clone()
    target[:, 3] = 6
    landed = source.clone()
    landed[:, 3] = 25
    verdict = judge_edits(render_dsprites(landed), source, target, DSPRITES, render_dsprites)
    assert torch.equal(verdict["nearest"], landed)
    assert verdict["exact"].all() and not verdict["exact_strict"].any() and not verdict["unchanged"].any()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("single_step", [True, False])
def test_the_judge_of_images_on_a_gpu_matches_the_cpu_and_answers_on_the_cpu(single_step):
    space, render = SPACES["shapes3d"]
    source, _, target = pairs(space, 16)
    images = render(target)
    images[:4] = render(source[:4])  # four unchanged edits beside twelve exact ones
    on_cpu = judge_edits(images, source, target, space, render, single_step=single_step)
    on_gpu = judge_edits(images.cuda(), source.cuda(), target, space, render, single_step=single_step)
    for key, value in on_cpu.items():
        assert on_gpu[key].device.type == "cpu" and torch.equal(on_gpu[key], value), key
    assert on_cpu["exact"][4:].all() and not on_cpu["exact"][:4].any()
