import itertools

import numpy as np
import pytest
import torch

from datamodules.factors import Action, ActionSpace, Factor, FactorSpace


@pytest.fixture
def space() -> FactorSpace:
    return FactorSpace(
        "toy",
        (
            Factor("color", 1, (1.0,)),
            Factor("shape", 3, (0.0, 1.0, 2.0)),
            Factor("angle", 5, (0.0, 0.25, 0.5, 0.75, 1.0), cyclic=True, period=4),
            Factor("x", 4, (0.0, 1 / 3, 2 / 3, 1.0)),
        ),
    )


def test_bases_make_the_last_factor_fastest(space):
    assert space.bases == (60, 20, 4, 1)
    assert space.num_states == 60


def test_ravel_unravel_round_trip_over_every_state(space):
    index = torch.arange(space.num_states)
    classes = space.unravel(index)
    assert torch.equal(space.ravel(classes), index)
    # Matches the brute-force product order (last factor fastest).
    expected = torch.tensor(list(itertools.product(*[range(s) for s in space.sizes])))
    assert torch.equal(classes, expected)


def test_ravel_rejects_out_of_range_classes_naming_the_factor(space):
    with pytest.raises(ValueError, match="'x'"):
        space.ravel(torch.tensor([0, 0, 0, 4]))
    with pytest.raises(ValueError, match="4 factors"):
        space.ravel(torch.tensor([0, 0, 0]))


def test_values_look_up_each_factor(space):
    values = space.values(torch.tensor([[0, 2, 1, 3]]))
    assert values.tolist() == [[1.0, 2.0, 0.25, 1.0]]


def test_sampling_is_seeded_and_uniform(space):
    a = space.sample(20_000, torch.Generator().manual_seed(3))
    b = space.sample(20_000, torch.Generator().manual_seed(3))
    c = space.sample(20_000, torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)
    counts = torch.bincount(a[:, 3], minlength=4).double() / len(a)
    assert torch.allclose(counts, torch.full((4,), 0.25, dtype=torch.float64), atol=0.02)
    assert (a[:, 0] == 0).all()


def test_step_stops_at_the_ends_of_a_non_cyclic_factor(space):
    moved, valid = space.step(torch.tensor([[0, 0, 0, 0], [0, 2, 0, 3]]), 1, torch.tensor([-1, 1]))
    assert valid.tolist() == [False, False]
    assert moved.tolist() == [[0, 0, 0, 0], [0, 2, 0, 3]]


def test_step_wraps_a_cyclic_factor_through_its_alias(space):
    # Class 4 is an alias of class 0 (period 4): +1 gives 1, -1 gives 3; 3 + 1 wraps to 0.
    states = torch.tensor([[0, 0, 4, 0], [0, 0, 4, 0], [0, 0, 3, 0]])
    moved, valid = space.step(states, 2, torch.tensor([1, -1, 1]))
    assert valid.all()
    assert moved[:, 2].tolist() == [1, 3, 0]
    assert space.canonical(states)[:, 2].tolist() == [0, 0, 3]


def test_neighbours_lists_every_valid_single_step(space):
    got = {(f, d, tuple(c.tolist())) for f, d, c in space.neighbours(torch.tensor([0, 0, 2, 3]))}
    assert got == {
        (1, 1, (0, 1, 2, 3)),
        (2, -1, (0, 0, 1, 3)),
        (2, 1, (0, 0, 3, 3)),
        (3, -1, (0, 0, 2, 2)),
    }


def test_action_ids_are_factor_major_minus_then_plus_and_skip_constants(space):
    actions = ActionSpace(space)
    assert actions.names == ("shape-", "shape+", "angle-", "angle+", "x-", "x+")
    assert [(a.factor, a.direction) for a in actions] == [(1, -1), (1, 1), (2, -1), (2, 1), (3, -1), (3, 1)]
    assert actions.factors == (1, 2, 3)


@pytest.mark.parametrize(
    "given, expected",
    [("x+", 5), (" angle- ", 2), (("shape", 1), 1), (("x", "-"), 4), ((2, -1), 2), (3, 3),
     (np.int64(0), 0), (Action(4, 3, "x", -1), 4)],
)
def test_parse_accepts_ids_names_and_factor_direction_pairs(space, given, expected):
    assert ActionSpace(space).parse(given) == expected


def test_parse_errors_list_the_valid_actions(space):
    actions = ActionSpace(space)
    with pytest.raises(ValueError, match=r"unknown action 'size\+'.*shape-, shape\+"):
        actions.parse("size+")
    with pytest.raises(ValueError, match="constant and has no action"):
        actions.parse(("color", 1))
    with pytest.raises(ValueError, match="out of range"):
        actions.parse(6)
    with pytest.raises(TypeError):
        actions.parse(1.5)


def test_name_round_trips_every_action(space):
    actions = ActionSpace(space)
    for a in actions:
        assert actions.parse(actions.name(a.id)) == a.id


def test_valid_mask_matches_step_validity(space):
    actions = ActionSpace(space)
    states = space.unravel(torch.arange(space.num_states))
    mask = actions.valid_mask(states)
    assert mask.shape == (60, 6)
    shape = states[:, 1]
    assert torch.equal(mask[:, 0], shape > 0) and torch.equal(mask[:, 1], shape < 2)
    assert mask[:, 2:4].all()  # cyclic: always valid
    x = states[:, 3]
    assert torch.equal(mask[:, 4], x > 0) and torch.equal(mask[:, 5], x < 3)


def test_apply_and_action_between_are_inverse(space):
    actions = ActionSpace(space)
    states = space.unravel(torch.arange(space.num_states)).repeat_interleave(6, 0)
    ids = torch.arange(6).repeat(space.num_states)
    moved, valid = actions.apply(states, ids)
    found = actions.action_between(states, moved)
    assert torch.equal(found[valid], ids[valid])
    # A pair that differs in two factors has no action.
    assert actions.action_between(torch.tensor([0, 0, 0, 0]), torch.tensor([0, 1, 0, 1])).item() == -1


def test_a_space_with_only_constant_factors_has_no_actions():
    with pytest.raises(ValueError, match="no action"):
        ActionSpace(FactorSpace("flat", (Factor("c", 1, (0.0,)),)))


def test_factor_definitions_are_checked():
    with pytest.raises(ValueError, match="values"):
        Factor("a", 3, (0.0, 1.0))
    with pytest.raises(ValueError, match="period"):
        Factor("a", 3, (0.0, 1.0, 2.0), period=2)
    with pytest.raises(ValueError, match="unique"):
        FactorSpace("dup", (Factor("a", 2, (0, 1)), Factor("a", 2, (0, 1))))
