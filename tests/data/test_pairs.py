import numpy as np
import pytest
import torch

from datamodules.factors import ActionSpace, Factor, FactorSpace
from datamodules.pairs import StateSamples, TransitionPairs, factor_weights, split_of

SPACE = FactorSpace(
    "toy",
    (
        Factor("color", 1, (1.0,)),
        Factor("shape", 3, (0.0, 1.0, 2.0)),
        Factor("angle", 9, tuple(float(i) for i in range(9)), cyclic=True, period=8),
        Factor("x", 16, tuple(float(i) for i in range(16))),
        Factor("y", 16, tuple(float(i) for i in range(16))),
    ),
)
ALL_STATES = SPACE.unravel(torch.arange(SPACE.num_states)).numpy()


def _pairs(split="train", n=4000, **kw):
    return TransitionPairs(SPACE, split, length=n, **kw).__getitems__(list(range(n)))


@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_each_pair_moves_exactly_one_factor_by_one_step_as_its_action_says(split):
    batch = _pairs(split)
    src, act, tgt = batch["factors"], batch["action"], batch["factors_next"]
    actions = ActionSpace(SPACE)
    assert torch.equal(actions.action_between(src, tgt), act)
    differs = SPACE.canonical(src) != SPACE.canonical(tgt)
    assert (differs.sum(1) == 1).all()
    factor = actions.factor_of(act)
    assert torch.equal(differs.float().argmax(1), factor)
    step = (tgt.gather(1, factor[:, None]) - SPACE.canonical(src).gather(1, factor[:, None]))[:, 0]
    cycle = torch.tensor([f.cycle for f in SPACE.factors])[factor]
    assert torch.equal(torch.remainder(step, cycle), torch.remainder(actions.direction_of(act), cycle))


def test_no_pair_steps_off_the_end_of_a_non_cyclic_factor():
    batch = _pairs(n=8000)
    x_next = batch["factors_next"][:, 3]
    assert x_next.min() >= 0 and x_next.max() <= 15
    moved_x = batch["factors"][:, 3] != x_next
    assert (batch["factors"][moved_x, 3] - x_next[moved_x]).abs().max() == 1


def test_items_are_pure_functions_of_seed_split_and_index():
    ds = TransitionPairs(SPACE, "train", length=100, seed=7)
    whole = ds.__getitems__(list(range(50)))
    shuffled = ds.__getitems__([49, 3, 17])
    for key in ("factors", "action", "factors_next"):
        assert torch.equal(shuffled[key], whole[key][[49, 3, 17]])
        assert torch.equal(ds[17][key], whole[key][17])
    other = TransitionPairs(SPACE, "train", length=100, seed=8).__getitems__(list(range(50)))
    assert not torch.equal(other["factors"], whole["factors"])


def test_splits_partition_the_states_and_training_never_sees_val_or_test_states():
    splits = split_of(SPACE, ALL_STATES)
    frac = np.bincount(splits, minlength=3) / len(splits)
    assert np.allclose(frac, [0.70, 0.15, 0.15], atol=0.03)
    train = _pairs("train", 6000)
    assert (split_of(SPACE, train["factors"]) == 0).all()
    assert (split_of(SPACE, train["factors_next"]) == 0).all()
    for sid, split in [(1, "val"), (2, "test")]:
        assert (split_of(SPACE, _pairs(split, 2000)["factors"]) == sid).all()
    images = StateSamples(SPACE, "train", length=3000).__getitems__(list(range(3000)))
    assert (split_of(SPACE, images["factors"]) == 0).all()


def test_aliased_states_share_a_split():
    alias = ALL_STATES[ALL_STATES[:, 2] == 8]
    canonical = alias.copy()
    canonical[:, 2] = 0
    assert np.array_equal(split_of(SPACE, alias), split_of(SPACE, canonical))


def test_split_seed_changes_the_split_but_seed_does_not():
    assert not np.array_equal(split_of(SPACE, ALL_STATES, 0), split_of(SPACE, ALL_STATES, 1))
    a = _pairs("test", 500, seed=0)
    b = _pairs("test", 500, seed=1)
    assert (split_of(SPACE, a["factors"]) == 2).all() and (split_of(SPACE, b["factors"]) == 2).all()


def test_balanced_pairs_give_each_factor_the_same_share_and_both_directions():
    act = _pairs(n=12000)["action"].numpy()
    per_factor = np.bincount(act // 2, minlength=4) / len(act)
    assert np.allclose(per_factor, 0.25, atol=0.02)
    assert abs((act % 2).mean() - 0.5) < 0.02


def test_proportional_and_rare_frequencies():
    assert np.allclose(factor_weights(SPACE, "proportional"), np.array([3, 9, 16, 16]) / 44)
    w = factor_weights(SPACE, "rare:shape:50")
    assert np.isclose(w[0] * 50, w[1]) and np.isclose(w.sum(), 1)
    act = _pairs(n=20000, frequency="rare:shape:50")["action"].numpy()
    shape_share = (act // 2 == 0).mean()
    assert abs(shape_share - w[0]) < 0.004
    explicit = factor_weights(SPACE, {"x": 3.0})
    assert np.allclose(explicit, np.array([1, 1, 3, 1]) / 6)


@pytest.mark.parametrize(
    "bad, message",
    [("skewed", "must be 'balanced'"), ("rare:size:5", "unknown factor 'size'"),
     ("rare:shape", "rare:<factor>:<ratio>"), ({"color": 1.0}, "unknown factors"), ({"x": -1.0}, "non-negative")],
)
def test_bad_frequencies_are_refused_with_what_to_write(bad, message):
    with pytest.raises(ValueError, match=message):
        factor_weights(SPACE, bad)


def test_bad_split_arguments_are_refused():
    with pytest.raises(ValueError, match="split must be one of"):
        TransitionPairs(SPACE, "validation", length=10)
    with pytest.raises(ValueError, match="summing to 1"):
        TransitionPairs(SPACE, "train", length=10, fractions=(0.5, 0.2, 0.2))
