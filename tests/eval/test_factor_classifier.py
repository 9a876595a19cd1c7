"""Tests of the independent factor classifier (causal_vqvae.eval.factor_classifier): the exactness rule on
constructed readings (steps, wrong directions, side effects, cyclic wraps, the orientation symmetry
of dSprites shapes), its parity with the angle it stands for, and training, saving and caching."""

from __future__ import annotations

import json
import math

import pytest
import torch

import causal_vqvae.eval.factor_classifier as fc
from causal_vqvae.eval.factor_classifier import (
    ClassifierSettings,
    disturbance,
    exact_edits,
    factor_matches,
    load_or_train_classifier,
)
from datamodules.dsprites import DSPRITES, dsprites_twin
from datamodules.factors import ActionSpace
from datamodules.shapes3d import SHAPES3D

SQUARE, ELLIPSE, HEART = 0, 1, 2
ORIENTATION = DSPRITES.factor_index("orientation")


def state(shape=HEART, scale=3, orientation=5, x=10, y=20):
    """One dSprites state (color, shape, scale, orientation, posX, posY)."""
    return torch.tensor([[0, shape, scale, orientation, x, y]])


def step(start, action):
    moved, valid = ActionSpace(DSPRITES).apply(start, torch.tensor([ActionSpace(DSPRITES).parse(action)]))
    assert bool(valid.all())
    return moved


def test_a_correct_step_is_exact_and_a_wrong_one_is_not():
    start = state(scale=3)
    target = step(start, "scale+")
    assert target[0, 2] == 4
    assert exact_edits(target, target, DSPRITES).tolist() == [True]
    assert exact_edits(step(start, "scale-"), target, DSPRITES).tolist() == [False]  # wrong direction
    assert exact_edits(start, target, DSPRITES).tolist() == [False]  # did not move
    two_steps = step(target, "scale+")
    assert exact_edits(two_steps, target, DSPRITES).tolist() == [False]  # moved two steps


def test_a_side_effect_on_another_factor_is_not_exact():
    target = step(state(), "posY+")
    disturbed = target.clone()
    disturbed[0, DSPRITES.factor_index("posX")] += 1
    assert factor_matches(disturbed, target, DSPRITES).tolist() == [[True, True, True, True, False, True]]
    assert exact_edits(disturbed, target, DSPRITES).tolist() == [False]


def test_cyclic_wrap_and_the_aliased_class():
    start = state(orientation=38)
    target = step(start, "orientation+")
    assert target[0, ORIENTATION] == 0  # 38 + 1 wraps to 0 (39 is 2*pi, the same image as 0)
    for reading, expected in ((0, True), (39, True), (38, False), (1, False)):
        read = target.clone()
        read[0, ORIENTATION] = reading
        assert exact_edits(read, target, DSPRITES).tolist() == [expected], reading
    hue = torch.tensor([[9, 0, 0, 0, 0, 0]])  # 3D Shapes floor hue 9 + 1 wraps to 0
    moved, _ = ActionSpace(SHAPES3D).apply(hue, torch.tensor([ActionSpace(SHAPES3D).parse("floor_hue+")]))
    assert moved.tolist() == [[0, 0, 0, 0, 0, 0]]
    assert exact_edits(moved, moved, SHAPES3D).tolist() == [True]
    assert exact_edits(hue, moved, SHAPES3D).tolist() == [False]


@pytest.mark.parametrize(("shape", "accepted"), [
    (SQUARE, {5, 15, 34, 24, 25}),  # k, k +- 10 (2.3 degrees off mod 90), k +- 19 / 20 (4.6 degrees)
    (ELLIPSE, {5, 24, 25}),  # k + 19 / k + 20: a 180-degree turn lands half-way between them
    (HEART, {5}),  # no symmetry: only the class itself
])
def test_orientation_is_read_modulo_the_shapes_symmetry(shape, accepted):
    true = state(shape=shape, orientation=5).repeat(39, 1)
    read = true.clone()
    read[:, ORIENTATION] = torch.arange(39)
    matched = factor_matches(read, true, DSPRITES)[:, ORIENTATION]
    assert set(torch.nonzero(matched)[:, 0].tolist()) == accepted
    assert exact_edits(read, true, DSPRITES).sum() == len(accepted)


def test_the_symmetry_rule_is_the_half_step_angle_rule():
    """Parity with the definition in degrees: a reading k' matches k iff the angle between them,
    modulo the shape's symmetry period, is at most half a class step."""
    cycle = DSPRITES.factors[ORIENTATION].cycle
    class_step = 360.0 / cycle
    for shape, order in ((SQUARE, 4), (ELLIPSE, 2), (HEART, 1)):
        true = state(shape=shape).repeat(cycle * cycle, 1)
        read = true.clone()
        true[:, ORIENTATION] = torch.arange(cycle).repeat_interleave(cycle)
        read[:, ORIENTATION] = torch.arange(cycle).repeat(cycle)
        matched = factor_matches(read, true, DSPRITES)[:, ORIENTATION]
        period = 360.0 / order
        angle = ((read[:, ORIENTATION] - true[:, ORIENTATION]).double() * class_step) % period
        expected = torch.minimum(angle, period - angle) <= class_step / 2 + 1e-9
        assert torch.equal(matched, expected), shape


def test_the_symmetry_follows_the_true_shape_and_a_wrong_shape_fails():
    true = state(shape=SQUARE, orientation=5)
    read = true.clone()
    read[0, ORIENTATION] = 15
    assert exact_edits(read, true, DSPRITES).tolist() == [True]
    read[0, 1] = HEART  # read as a heart: the shape is wrong, so the edit is not exact
    assert factor_matches(read, true, DSPRITES)[0].tolist() == [True, False, True, True, True, True]


def test_shapes3d_orientation_has_no_symmetry():
    true = torch.tensor([[1, 2, 3, 4, 0, 7]])
    read = true.clone()
    read[0, 5] = 8
    assert exact_edits(read, true, SHAPES3D).tolist() == [False]


def test_k_step_sequences_are_judged_against_the_true_final_state():
    start = state(shape=ELLIPSE, scale=0, orientation=37)
    middle = step(start, "orientation+")
    final = step(middle, "orientation+")
    assert final[0, ORIENTATION] == 0
    assert exact_edits(torch.cat([final, middle, start]), final.repeat(3, 1), DSPRITES).tolist() == [True, False, False]


def test_disturbance_counts_changes_of_factors_not_acted_on():
    space = DSPRITES
    true = state().repeat(4, 1)
    read = true.clone()
    read[0, 4] += 1  # posX changed by an edit of scale
    read[1, 4] += 1  # posX changed by an edit of posX itself: acted on, not a disturbance
    read[2, 2] += 1  # scale changed by an edit of posY
    acted = torch.tensor([2, 4, 5, 5])  # factor indices: scale, posX, posY, posY
    rates = disturbance(read, true, acted, space)
    assert set(rates) == {"shape", "scale", "orientation", "posX", "posY"}  # color is constant
    assert rates["posX"] == {"count": 3, "changed": pytest.approx(1 / 3)}
    assert rates["scale"] == {"count": 3, "changed": pytest.approx(1 / 3)}
    assert rates["shape"] == {"count": 4, "changed": 0.0}
    assert rates["posY"] == {"count": 2, "changed": 0.0}


def test_the_loss_is_the_log_mass_on_acceptable_classes():
    logits = torch.tensor([[2.0, 0.0, -1.0, 0.5]])
    one = torch.tensor([[False, True, False, False]])
    assert fc._loss([logits], [one]) == pytest.approx(torch.nn.functional.cross_entropy(logits, torch.tensor([1])))
    both = torch.tensor([[True, False, False, True]])
    p = torch.softmax(logits, -1)[0]
    assert fc._loss([logits], [both]) == pytest.approx(-math.log(p[0] + p[3]), rel=1e-5)
    square = fc._acceptable(state(shape=SQUARE, orientation=5), DSPRITES, fc.SYMMETRIES["dsprites"])
    assert [m.shape[1] for m in square] == [1, 3, 6, 39, 32, 32]  # one class per canonical value
    assert set(torch.nonzero(square[ORIENTATION][0])[:, 0].tolist()) == {5, 15, 34, 24, 25}


TINY = {"steps": 3, "batch_size": 8, "width": 4, "features": 16, "test_states": 32, "warmup": 1}


def test_classifier_trains_saves_loads_and_uses_its_cache(tmp_path, monkeypatch):
    twin = dsprites_twin()
    settings = ClassifierSettings("dsprites", **TINY)
    model, record = load_or_train_classifier(twin, settings, torch.device("cpu"), tmp_path, progress=False)
    assert not record["cached"] and record["training"]["steps"] == 3 and record["training"]["images"] == 24
    held = record["held_out"]
    assert held["n"] == 32 and set(held["per_factor"]) == {"shape", "scale", "orientation", "posX", "posY"}
    assert 0.0 <= held["all_factors"] <= min(held["per_factor"].values()) <= 1.0
    assert record["meets_bar"] == (held["all_factors"] >= 0.995) and record["bar"] == 0.995
    weights, record_file = fc.cache_paths(tmp_path, "factor_classifier", settings.__dict__)
    assert weights.is_file() and json.loads(record_file.read_text())["held_out"] == held
    assert sorted(p.name for p in weights.parent.iterdir()) == sorted([weights.name, record_file.name])

    def no_training(*args, **kwargs):
        raise AssertionError("the cached classifier should have been loaded, not trained")

    monkeypatch.setattr(fc, "train_factor_classifier", no_training)
    again, cached = load_or_train_classifier(twin, settings, torch.device("cpu"), tmp_path, progress=False)
    assert cached["cached"] and cached["held_out"] == held
    images = twin.render(fc._states(DSPRITES, "test", 16, seed=3))
    for a, b in zip(model(images), again(images)):
        assert torch.equal(a, b)
    assert torch.equal(model.read(images), again.read(images))
    assert model.read(images).shape == (16, 6)

    other = ClassifierSettings("dsprites", **{**TINY, "seed": 1})  # another key: trains again
    with pytest.raises(AssertionError, match="should have been loaded"):
        load_or_train_classifier(twin, other, torch.device("cpu"), tmp_path, progress=False)


def test_training_is_seeded_and_reading_needs_eval_mode():
    twin = dsprites_twin()
    settings = ClassifierSettings("dsprites", **TINY)
    first, _ = fc.train_factor_classifier(twin, settings, torch.device("cpu"), progress=False)
    second, _ = fc.train_factor_classifier(twin, settings, torch.device("cpu"), progress=False)
    for (name, a), (_, b) in zip(first.state_dict().items(), second.state_dict().items()):
        assert torch.equal(a, b), name
    with pytest.raises(RuntimeError, match="eval mode"):
        first.train().read(torch.zeros(1, 1, 64, 64))


def test_settings_defaults_and_checks():
    assert ClassifierSettings.for_dataset("dsprites").steps == fc.DEFAULT_BUDGETS["dsprites"][0]
    assert ClassifierSettings.for_dataset("shapes3d", 7, 9).batch_size == 9
    with pytest.raises(ValueError, match="no factor classifier budget"):
        ClassifierSettings.for_dataset("celeba")
    with pytest.raises(ValueError, match="steps must be positive"):
        ClassifierSettings("dsprites", 0, 8)
    with pytest.raises(ValueError, match="settings are for 'shapes3d'"):
        load_or_train_classifier(dsprites_twin(), ClassifierSettings("shapes3d", 1, 1), torch.device("cpu"), None)
