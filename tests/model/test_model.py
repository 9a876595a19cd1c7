"""CausalVQVAE: transitions, graph semantics, retrieval, determinism, checkpoints, training signal."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace

import pytest
import torch
from safetensors.torch import load_file, save_file

from causal_vqvae.config import RETRIEVAL_SCORES, ModelConfig
from causal_vqvae.nn.graph import DualAscent, linear_budget
from causal_vqvae.pretrained import load_pretrained, save_pretrained
from causal_vqvae.model import CausalVQVAE
from causal_vqvae.nn.retrieval import code_distance, marginal_intervention, output_scores, score_actions
from causal_vqvae.nn.transition import TransitionOutput, mixture_nll

TINY = dict(
    in_channels=1,
    image_size=64,
    hidden_dims=(8, 16, 16),
    num_res_blocks=1,
    norm_groups=4,
    code_dim=8,
    codebook_size=16,
    num_tokens=4,
    token_codebook_size=8,
    token_layers=1,
    token_heads=2,
    mlp_ratio=2,
    target_head_dim=8,
    transition_dim=16,
    transition_layers=2,
    transition_heads=2,
    retrieval_dim=16,
    retrieval_layers=1,
    retrieval_heads=2,
    num_actions=4,
    action_names=("a-", "a+", "b-", "b+"),
    dataset="tiny",
)


def tiny_config(**overrides) -> ModelConfig:
    return ModelConfig(**{**TINY, **overrides})


def tiny_model(**overrides) -> CausalVQVAE:
    return CausalVQVAE(tiny_config(**overrides))


def random_codes(model: CausalVQVAE, batch: int, seed: int = 0) -> torch.Tensor:
    c = model.config
    return torch.randint(0, c.codes_per_node, (batch, c.num_nodes), generator=torch.Generator().manual_seed(seed))


def squares(batch: int = 4, channels: int = 1, seed: int = 0) -> torch.Tensor:
    """Images in [0, 1]: one bright square per image at a random place."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.zeros(batch, channels, 64, 64)
    for b in range(batch):
        r, c = torch.randint(0, 48, (2,), generator=gen).tolist()
        x[b, :, r:r + 16, c:c + 16] = 1.0
    return x


# ------------------------------------------------------------------------------- transition
def test_non_intervened_nodes_keep_their_codes_exactly():
    model = tiny_model().eval()
    keep = torch.arange(model.config.num_nodes) % 3 != 0  # two nodes in three are never targets
    with torch.no_grad():
        model.graph.target_logits.copy_(torch.where(keep, -20.0, 20.0).expand_as(model.graph.target_logits))
    codes = random_codes(model, 8)
    out = model.transition(codes, torch.arange(8) % 4)
    assert torch.equal(out.intervened[:, keep], torch.zeros_like(out.intervened[:, keep]))
    assert torch.equal(out.predicted_codes[:, keep], codes[:, keep])
    # keep_threshold 0.5: the current code where the equation gives it >= 1/2, else the best other one
    probs = torch.softmax(out.logits, -1)
    stays = probs.gather(-1, codes.unsqueeze(-1)).squeeze(-1) >= 0.5
    other = probs.scatter(-1, codes.unsqueeze(-1), -1.0).argmax(-1)
    assert torch.equal(out.predicted_codes[:, ~keep], torch.where(stays, codes, other)[:, ~keep])
    assert out.logits.shape == (8, model.config.num_nodes, model.config.codes_per_node)


def test_prediction_depends_on_the_action_and_the_action_embedding_gets_gradient():
    model = tiny_model().train()
    codes = random_codes(model, 6)
    action = torch.tensor([0, 1, 2, 0, 1, 2])  # action 3 unused
    gen = torch.Generator().manual_seed(0)
    out = model.transition(codes, action, generator=gen)
    logits = {a: model.transition(codes, a, sample=False).logits for a in range(4)}
    for a in range(1, 4):
        assert (logits[a] - logits[0]).abs().max() > 1e-3
    loss = model.transition_loss(codes, action, random_codes(model, 6, seed=1), generator=gen).loss
    loss.backward()
    grad = model.transition_net.action_embed.weight.grad
    assert grad[:3].abs().sum(-1).min() > 0  # every action used sends gradient to its embedding
    assert grad[3].abs().sum() == 0
    assert model.graph.target_logits.grad[:3].abs().sum() > 0  # the mixture trains the mask
    assert out.predicted_codes.shape == codes.shape


@pytest.mark.parametrize("position", ["absolute", "relative", "relative_kv"])
@pytest.mark.parametrize("training", [False, True])
def test_node_without_parents_does_not_depend_on_other_nodes(training, position):
    model = tiny_model(transition_position=position).train(training)
    orphan, other = 5, 9
    with torch.no_grad():
        model.graph.adjacency_logits[:, orphan] = -20.0  # column = parents of the orphan
        for name, p in model.transition_net.named_parameters():
            if name.endswith(("offset_bias", "offset_key", "offset_value")):
                p.normal_()  # as after training: a masked parent's offset must not count either
    a = random_codes(model, 8, seed=0)
    b = random_codes(model, 8, seed=1)
    b[:, orphan] = a[:, orphan]
    action = torch.arange(8) % 4

    def run(codes):
        return model.transition(codes, action, generator=torch.Generator().manual_seed(0)).logits

    la, lb = run(a), run(b)
    assert torch.equal(la[:, orphan], lb[:, orphan])
    assert (la[:, other] - lb[:, other]).abs().max() > 1e-4  # a node with parents does depend


def test_state_dependent_targets_vary_with_the_state_within_a_bound():
    model = tiny_model(target_state_bound=2.0).eval()
    head = model.graph.state_head
    codes, action = random_codes(model, 4), torch.tensor([0, 1, 2, 3])

    def state_term(codes):
        return model.graph.targets(codes, action) - model.graph.target_logits[action]

    assert torch.equal(state_term(codes), torch.zeros(4, 64))  # zero-initialised: global logits only
    with torch.no_grad():
        torch.nn.init.normal_(head.out.weight)
    assert (state_term(codes) - state_term(random_codes(model, 4, seed=1))).abs().max() > 1e-3
    with torch.no_grad():
        head.out.bias.fill_(-100.0)
    assert state_term(codes).min() >= -2.0 and state_term(codes).max() < -1.99


def test_mixture_nll_known_values():
    model = tiny_model().eval()
    codes = random_codes(model, 2)
    out = model.transition(codes, 0)
    target = codes.clone()
    target[:, 0] = (codes[:, 0] + 1) % model.config.codes_per_node
    nll = mixture_nll(out, codes, target, eps=1e-3)
    p_model = torch.softmax(out.logits, -1).gather(-1, target.unsqueeze(-1)).squeeze(-1)
    m = out.intervened
    p = m * p_model + (1 - m) * (target == codes).float()
    assert torch.allclose(nll, -torch.log(1e-3 + (1 - 1e-3) * p))


# ------------------------------------------------------------------------------- retrieval
def handset_writer(model: CausalVQVAE) -> None:
    """Action a intervenes on node a only and writes code a there."""
    t, g = model.transition_net, model.graph
    num_actions = model.config.num_actions
    with torch.no_grad():
        g.target_logits.fill_(-20.0)
        g.target_logits[torch.arange(num_actions), torch.arange(num_actions)] = 20.0
        for p in (t.code_embed.weight, t.position, t.action_type, t.constant, t.head_weight, t.head_bias):
            p.zero_()
        for block in t.blocks:
            for p in (block.out.weight, block.out.bias, block.ff.net[2].weight, block.ff.net[2].bias):
                p.zero_()
        t.action_embed.weight.zero_()
        t.action_embed.weight[torch.arange(num_actions), torch.arange(num_actions)] = 10.0
        t.head_weight[0, torch.arange(num_actions), torch.arange(num_actions)] = 1.0


@pytest.mark.parametrize("score", RETRIEVAL_SCORES)
def test_retrieval_by_transition_finds_the_action_on_a_constructed_case(score):
    model = tiny_model(state_dependent_targets=False, retrieval_score=score).eval()
    handset_writer(model)
    codes = 4 + random_codes(model, 8) % 12  # codes 4..15: no node starts at its action's code
    action = torch.tensor([0, 1, 2, 3, 3, 2, 1, 0])
    target = codes.clone()
    target[torch.arange(8), action] = action
    assert torch.equal(model.edit_codes(codes, action), target)
    out = model.retrieve_codes(codes, target, method="transition")
    assert torch.equal(out.action, action)
    assert torch.allclose(out.probs.sum(-1), torch.ones(8))
    assert out.probs[torch.arange(8), action].min() > 1.0 / 4  # 4 actions
    sharp = model.retrieve_codes(codes, target, method="transition", temperature=0.05)
    assert sharp.probs[torch.arange(8), action].min() > 0.9


def test_batched_action_scores_equal_a_loop_over_actions():
    model = tiny_model().eval()
    codes, target = random_codes(model, 5, seed=0), random_codes(model, 5, seed=1)
    target[:, :40] = codes[:, :40]
    t, codebooks = model.transition_net, model.quantizer.embedding
    batched = score_actions(t, codes, target, eps=1e-3)
    loop = torch.stack(
        [mixture_nll(model.transition(codes, a), codes, target, 1e-3).mean(-1) for a in range(4)], dim=-1
    )
    assert batched.shape == (5, 4)
    assert torch.allclose(batched, loop, atol=1e-6)
    batched = score_actions(t, codes, target, score="code_distance", codebooks=codebooks)
    loop = torch.stack(
        [code_distance(model.transition(codes, a), codes, target, codebooks, t.offsets).sum(-1) for a in range(4)],
        dim=-1,
    )
    assert torch.allclose(batched, loop, atol=1e-5)
    assert torch.equal(model.with_settings(retrieval_score="code_distance").retrieve_codes(
        codes, target, "transition").scores, batched)
    batched = score_actions(t, codes, target, eps=1e-3, score="marginal_nll")
    loop = torch.stack([mixture_nll(marginal_intervention(model.transition(codes, a)), codes, target, 1e-3).sum(-1)
                        for a in range(4)], dim=-1)
    assert torch.allclose(batched, loop, atol=1e-6)
    with pytest.raises(ValueError, match="needs the codebooks"):
        score_actions(t, codes, target, score="code_distance")
    with pytest.raises(ValueError, match="unknown retrieval score 'l1'"):
        score_actions(t, codes, target, score="l1")


def _output(logits: torch.Tensor, intervened: torch.Tensor) -> TransitionOutput:
    batch, nodes, _ = logits.shape
    return TransitionOutput(logits=logits, intervened=intervened, predicted_codes=logits.argmax(-1),
                            target_logits=torch.zeros(batch, nodes), adjacency=torch.zeros(batch, nodes, nodes))


def test_code_distance_matches_a_hand_computation():
    # one codebook of two 1-d codes, 0 and 2: two distinct codes are 4 apart in squared distance
    codebooks = torch.tensor([[[0.0], [2.0]]])
    third = torch.log(torch.tensor(3.0)).item()
    logits = torch.tensor([[[0.0, third], [5.0, -5.0], [0.0, 0.0]]])  # p(code 1) = 3/4, -, 1/2
    codes, target = torch.tensor([[0, 0, 1]]), torch.tensor([[1, 0, 1]])
    out = _output(logits, torch.tensor([[1.0, 0.0, 1.0]]))  # node 1 is kept: its own code counts
    distance = code_distance(out, codes, target, codebooks, torch.zeros(3, dtype=torch.long))
    # node 0: E[e] = 3/4 * 2 = 1.5, (2 - 1.5)^2 / 4; node 1 kept and right: 0; node 2: E[e] = 1, (2 - 1)^2 / 4
    assert torch.allclose(distance, torch.tensor([[0.0625, 0.0, 0.25]]))

    # two codebooks of three codes (mean squared distances 8 and 14): node n reads codebook n
    codebooks = torch.tensor([[[0.0], [2.0], [4.0]], [[0.0], [1.0], [5.0]]])
    logits = torch.tensor([[[0.0, 0.0, 0.0], [0.0, 0.0, -1e4]]])
    out = _output(logits, torch.tensor([[0.0, 1.0]]))
    distance = code_distance(out, torch.tensor([[0, 0]]), torch.tensor([[1, 2]]), codebooks, torch.tensor([0, 3]))
    # node 0 kept at code 0 against code 1: (0 - 2)^2 / 8; node 1: E[e] = 0.5 against 5: 4.5^2 / 14
    assert torch.allclose(distance, torch.tensor([[0.5, 20.25 / 14]]))


def test_marginal_nll_weighs_each_node_by_its_intervention_probability():
    """marginal_nll: the mixture NLL summed over nodes with the mask at p = sigmoid(target logit),
    by hand; the thresholded mask's NLL ("nll", a mean) is its limit as the logits grow."""
    third = torch.log(torch.tensor(3.0)).item()
    logits = torch.tensor([[[0.0, third], [0.0, third], [0.0, third]]])  # p(code 1) = 3/4 where intervened
    codes, target = torch.tensor([[0, 0, 1]]), torch.tensor([[1, 0, 1]])
    target_logits = torch.tensor([[0.0, -third, third]])  # p(intervened) = 1/2, 1/4, 3/4
    out = TransitionOutput(logits=logits, intervened=(target_logits > 0).float(), predicted_codes=logits.argmax(-1),
                           target_logits=target_logits, adjacency=torch.zeros(1, 3, 3))
    eps = 1e-3
    marginal = marginal_intervention(out)
    assert torch.allclose(marginal.intervened, torch.tensor([[0.5, 0.25, 0.75]]))
    # node 0 changed (0 -> 1): 1/2 * 3/4; node 1 kept its code 0: 1/4 * 1/4 + 3/4; node 2 kept code 1: 3/4 * 3/4 + 1/4
    p = torch.tensor([[0.375, 0.8125, 0.8125]])
    expected = -torch.log(eps + (1 - eps) * p)
    assert torch.allclose(mixture_nll(marginal, codes, target, eps), expected, atol=1e-6)
    assert torch.allclose(output_scores(out, codes, target, "marginal_nll", eps), expected.sum(-1), atol=1e-6)
    # thresholded: node 0 is kept and changed, which costs -log(eps)
    assert output_scores(out, codes, target, "nll", eps) > output_scores(out, codes, target, "marginal_nll", eps)
    sure = replace(out, target_logits=torch.tensor([[-1e3, -1e3, 1e3]]))  # the thresholded mask, nearly sure
    assert torch.allclose(output_scores(sure, codes, target, "marginal_nll", eps),
                          3 * output_scores(sure, codes, target, "nll", eps), atol=1e-5)  # a sum, not a mean


def test_evaluation_is_deterministic_and_training_sampling_follows_the_generator():
    model = tiny_model()
    with torch.no_grad():
        model.graph.adjacency_logits.zero_()  # p = 0.5: samples vary, thresholds are all 0
        model.graph.target_logits.zero_()
    codes, action = random_codes(model, 4), torch.arange(4)
    model.eval()
    one, two = model.transition(codes, action), model.transition(codes, action)
    assert torch.equal(one.logits, two.logits) and torch.equal(one.intervened, two.intervened)
    x = squares(4)
    r1, r2 = model.retrieve(x, x.flip(-1), "transition"), model.retrieve(x, x.flip(-1), "transition")
    assert torch.equal(r1.logits, r2.logits)

    model.train()

    def sampled(seed):
        return model.transition(codes, action, generator=torch.Generator().manual_seed(seed))

    a, b, c = sampled(1), sampled(1), sampled(2)
    assert torch.equal(a.adjacency, b.adjacency) and torch.equal(a.intervened, b.intervened)
    assert not torch.equal(a.adjacency, c.adjacency)
    assert not torch.equal(a.intervened, c.intervened)
    assert set(a.intervened.unique().tolist()) <= {0.0, 1.0}  # hard values, straight-through grads


# ------------------------------------------------------------------------------- both layouts
@pytest.mark.parametrize("layout", ["grid", "tokens"])
def test_layouts_run_end_to_end_with_shapes_and_range(layout):
    model = tiny_model(latent_layout=layout, in_channels=3).eval()
    c = model.config
    n, k = c.num_nodes, c.codes_per_node
    assert n == (64 if layout == "grid" else 4)
    x = torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    z = model.encode(x)
    assert z.shape == (3, n, c.code_dim)
    q = model.quantize(z)
    assert q.codes.shape == (3, n) and q.codes.dtype == torch.long
    assert 0 <= q.codes.min() and q.codes.max() < k
    decoded = (model.decode(q.quantized), model.decode(q.codes), model.decode_codes(q.codes), model(x).reconstruction)
    for images in decoded:
        assert images.shape == x.shape and images.dtype == torch.float32
        assert 0.0 <= images.min() and images.max() <= 1.0
    t = model.transition(q.codes, torch.tensor([0, 1, 3]))
    assert t.logits.shape == (3, n, k) and t.intervened.shape == (3, n) and t.adjacency.shape == (3, n, n)
    for method in ("head", "transition"):
        r = model.retrieve(x, x.flip(-1), method=method)
        assert r.logits.shape == (3, 4) and r.action.shape == (3,)
        assert torch.allclose(r.probs.sum(-1), torch.ones(3))
    edited = model.edit(x, 2)
    assert edited.shape == x.shape and 0.0 <= edited.min() and edited.max() <= 1.0
    assert torch.equal(model.edit(x, torch.tensor([2, 2, 2])), edited)
    frames = model.edit_sequence(x, [1, torch.tensor([0, 2, 3])], return_intermediate=True)
    assert frames.shape == (3, 3, 3, 64, 64)
    assert torch.allclose(frames[:, 0], model.decode_codes(q.codes), atol=1e-6)
    assert torch.allclose(model.edit_sequence(x, [1, torch.tensor([0, 2, 3])]), frames[:, -1])
    with pytest.raises(ValueError, match="out of range"):
        model.edit(x, 4)


@pytest.mark.parametrize("layout", ["grid", "tokens"])
def test_a_few_adam_steps_reduce_the_autoencoder_loss(layout):
    model = tiny_model(latent_layout=layout, reconstruction_loss="bce")
    x = squares(4)
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)

    def loss_now():
        model.eval()
        with torch.no_grad():
            return model.autoencoder_loss(x).reconstruction_loss.item()

    before = loss_now()
    model.train()
    for _ in range(15):
        out = model.autoencoder_loss(x)
        optimiser.zero_grad()
        out.loss.backward()
        optimiser.step()
    after = loss_now()
    assert after < 0.7 * before


@pytest.mark.parametrize("layout,loss,quantizer", [("grid", "mse", "ema"), ("tokens", "bce", "ema"),
                                                   ("grid", "mse", "loss")])
def test_decoder_loss_is_reconstruction_plus_the_weighted_decoded_edit(layout, loss, quantizer):
    model = tiny_model(latent_layout=layout, reconstruction_loss=loss, quantizer_mode=quantizer).eval()
    x, x_next, action = squares(3, seed=1), squares(3, seed=2), torch.tensor([0, 3, 1])
    with torch.no_grad():
        codes = model.encode_codes(torch.cat([x, x_next]))
        edits = model.edit_codes(codes[:3], action)
        logits = model.decode_logits(model.quantizer.lookup(torch.cat([codes, edits])))
    images = torch.sigmoid(logits)
    targets = torch.cat([x, x_next, x_next])
    per_image = (torch.nn.functional.binary_cross_entropy_with_logits(logits, targets, reduction="none")
                 if loss == "bce" else (images - targets).square()).flatten(1).mean(1)
    mse = (images - targets).square().flatten(1).mean(1)

    weighted = model.decoder_loss(x, x_next, action, edit_weight=2.5)
    assert torch.allclose(weighted.reconstruction_loss, per_image[:6].mean(), atol=1e-6)
    assert torch.allclose(weighted.edit_loss, per_image[6:].mean(), atol=1e-6)
    assert torch.allclose(weighted.loss, per_image[:6].mean() + 2.5 * per_image[6:].mean(), atol=1e-6)
    assert torch.allclose(weighted.reconstruction_mse, mse[:6].mean(), atol=1e-6)
    assert torch.allclose(weighted.edit_mse, mse[6:].mean(), atol=1e-6)
    alone = model.decoder_loss(x, x_next, action, edit_weight=0.0)
    assert float(alone.edit_loss) == 0.0 and float(alone.edit_mse) == 0.0
    assert torch.allclose(alone.loss, weighted.reconstruction_loss, atol=1e-6)
    # only the decoder gets a gradient: the codes came from the frozen rest (in "loss" mode the
    # codebook is a parameter, and gets none either)
    weighted.loss.backward()
    for name, parameter in model.named_parameters():
        reached = parameter.grad is not None and bool(parameter.grad.abs().sum() > 0)
        assert reached == name.startswith(("decoder.", "token_decoder.")), name


# ------------------------------------------------------------------------------- sparsity
def test_dual_ascent_rises_over_budget_and_resets_under_budget():
    dual = DualAscent(2, lr=0.5, budget=1.0, budget_start=9.0)
    dual.update(torch.tensor([3.0, 0.5]), 1.0)
    assert dual.multipliers.tolist() == [1.0, 0.0]
    assert dual.lagrangian(torch.tensor([3.0, 0.5]), 1.0).item() == pytest.approx((1.0 * 2.0 + 0.0) / 2)
    dual.update(torch.tensor([2.0, 0.5]), 1.0)
    assert dual.multipliers.tolist() == [1.5, 0.0]
    dual.update(torch.tensor([0.5, 4.0]), 1.0)
    assert dual.multipliers.tolist() == [0.0, 1.5]
    assert "multipliers" in dual.state_dict()
    assert [dual.budget_at(p) for p in (0.0, 0.25, 0.5, 1.0)] == [9.0, 5.0, 1.0, 1.0]
    assert linear_budget(0.1, 10.0, 0.0) == pytest.approx(8.0)


def test_constraint_multipliers_follow_the_graph_and_push_the_logits_down():
    model = tiny_model(target_budget=1.0, target_budget_start=None, dual_lr=0.1).train()
    codes = random_codes(model, 4)
    action = torch.arange(4)
    loss = model.transition_loss(codes, action, codes, progress=1.0, generator=torch.Generator().manual_seed(0))
    assert loss.target_budget == 1.0 and loss.adjacency_budget == 4.0
    assert loss.expected_targets.shape == (4,) and loss.expected_targets.min() > 60  # logits start at 5
    model.update_multipliers(loss)
    assert model.target_dual.multipliers.min() > 0 and model.adjacency_dual.multipliers.min() > 0
    model.graph.target_logits.grad = None
    model.transition_loss(codes, action, codes, progress=1.0).sparsity.backward()
    assert model.graph.target_logits.grad.max() > 0  # descent lowers every target logit
    start = model.transition_loss(codes, action, codes, progress=0.0)
    assert start.target_budget == 64.0 and start.adjacency_budget == 63.0
    model.eval()
    model.update_multipliers(start)  # never in eval mode
    assert model.target_dual.multipliers.min() > 0


# ------------------------------------------------------------------------------- checkpoints
def test_save_load_round_trip_is_bit_identical(tmp_path):
    model = tiny_model().train()
    x = squares(4)
    model.autoencoder_loss(x)  # move the EMA codebook away from its initial value
    loss = model.transition_loss(model.encode_codes(x), torch.arange(4), model.encode_codes(x.flip(-1)))
    model.update_multipliers(loss)
    model.eval()
    save_pretrained(model, tmp_path / "ckpt", extra_metadata={"seed": 7, "data": "squares"})
    written = sorted(p.name for p in (tmp_path / "ckpt").iterdir())
    assert written == ["README.md", "config.json", "metadata.json", "model.safetensors"]
    loaded = CausalVQVAE.from_pretrained(tmp_path / "ckpt", expect={"dataset": "tiny", "architecture": "CausalVQVAE"})
    assert loaded.config == model.config and not loaded.training
    assert json.loads((tmp_path / "ckpt" / "metadata.json").read_text())["seed"] == 7
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    assert torch.equal(loaded(x).reconstruction, model(x).reconstruction)
    codes = model.encode_codes(x)
    assert torch.equal(loaded.transition(codes, 1).logits, model.transition(codes, 1).logits)
    assert torch.equal(loaded.retrieve(x, x.flip(-1), "head").probs, model.retrieve(x, x.flip(-1), "head").probs)
    assert torch.equal(loaded.edit(x, 3), model.edit(x, 3))


def test_loading_refuses_a_wrong_architecture_config_or_tensor_set(tmp_path):
    directory = tmp_path / "ckpt"
    tiny_model().save_pretrained(directory)
    config_path = directory / "config.json"
    good = json.loads(config_path.read_text())

    with pytest.raises(ValueError, match=r"dataset='tiny'.*'dsprites'"):
        load_pretrained(CausalVQVAE, directory, expect={"dataset": "dsprites"})
    with pytest.raises(ValueError, match=r"latent_layout='grid'.*'tokens'"):
        load_pretrained(CausalVQVAE, directory, expect={"latent_layout": "tokens"})

    config_path.write_text(json.dumps({**good, "architecture": "VQVAE2"}))
    with pytest.raises(ValueError, match=r"'VQVAE2'.*'CausalVQVAE'"):
        load_pretrained(CausalVQVAE, directory)

    config_path.write_text(json.dumps({**good, "hidden_dim": 3}))
    with pytest.raises(ValueError, match="unknown key.*hidden_dim"):
        load_pretrained(CausalVQVAE, directory)

    config_path.write_text(json.dumps({**good, "state_dependent_targets": False}))
    with pytest.raises(ValueError, match=r"unexpected tensors \['transition_net.graph.state_head"):
        load_pretrained(CausalVQVAE, directory)

    with pytest.raises(ValueError, match="not a config key"):
        load_pretrained(CausalVQVAE, directory, expect={"datset": "tiny"})

    with pytest.raises(TypeError, match="JSON-serialisable"):
        tiny_model().save_pretrained(tmp_path / "bad", extra_metadata={"when": object()})
    assert list((tmp_path / "bad").iterdir()) == []  # nothing half-written

    config_path.write_text(json.dumps(good))
    tensors = load_file(str(directory / "model.safetensors"))
    del tensors["quantizer.embedding"]
    save_file(tensors, str(directory / "model.safetensors"))
    with pytest.raises(ValueError, match=r"missing tensors \['quantizer.embedding'\]"):
        load_pretrained(CausalVQVAE, directory)


# ------------------------------------------------------------------------------- config
def test_config_round_trips_through_dict_and_json_and_refuses_unknown_keys():
    config = tiny_config(latent_layout="tokens", target_budget_start=12.5)
    assert ModelConfig.from_dict(config.to_dict()) == config
    assert ModelConfig.from_json(config.to_json()) == config
    assert ModelConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    with pytest.raises(ValueError, match=r"ModelConfig: unknown key 'codebook' \(did you mean 'codebook_size'"):
        ModelConfig.from_dict({**config.to_dict(), "codebook": 3})
    with pytest.raises(ValueError, match=r"file\.json: key 'seed': expected a whole number, got '3' \(a string\)"):
        ModelConfig.from_dict({**config.to_dict(), "seed": "3"}, where="file.json")
    with pytest.raises(ValueError, match="action_names has 2 names but num_actions is 4"):
        tiny_config(action_names=["x", "y"])
    with pytest.raises(ValueError, match="latent_layout"):
        tiny_config(latent_layout="patches")


def test_lists_passed_to_the_config_are_not_mutated():
    hidden, names = [8, 16, 16], ["a-", "a+", "b-", "b+"]
    config = tiny_config(hidden_dims=hidden, action_names=names)
    CausalVQVAE(config)
    CausalVQVAE(config)
    assert hidden == [8, 16, 16] and names == ["a-", "a+", "b-", "b+"]
    assert config.hidden_dims == (8, 16, 16) and isinstance(config.action_names, tuple)


def test_integers_given_to_float_fields_are_stored_as_floats():
    config = tiny_config(adjacency_budget=8, target_budget=48, dual_lr=1)
    assert (config.adjacency_budget, config.target_budget, config.dual_lr) == (8.0, 48.0, 1.0)
    assert all(isinstance(v, float) for v in (config.adjacency_budget, config.target_budget, config.dual_lr))
    assert tiny_config().target_budget is None and isinstance(tiny_config().codebook_size, int)
    renewed = tiny_model().with_new_transition(adjacency_budget=2)
    assert json.loads(renewed.config.to_json())["adjacency_budget"] == 2.0
    assert isinstance(json.loads(renewed.config.to_json())["adjacency_budget"], float)


def test_construction_is_seeded_and_leaves_global_rng_alone():
    state = torch.random.get_rng_state()
    one, two = tiny_model(seed=3), tiny_model(seed=3)
    assert torch.equal(torch.random.get_rng_state(), state)
    for (key, a), b in zip(one.state_dict().items(), two.state_dict().values()):
        assert torch.equal(a, b), key
    assert not torch.equal(tiny_model(seed=4).quantizer.embedding, one.quantizer.embedding)


def test_model_package_imports_without_lightning_or_datamodules():
    code = (
        "import sys, causal_vqvae, causal_vqvae.model, causal_vqvae.pretrained, causal_vqvae.nn; "
        "bad = [m for m in sys.modules if m.split('.')[0] in ('lightning', 'pytorch_lightning', 'datamodules')]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_the_retrieval_head_follows_the_layout_and_old_configs_keep_the_transformer(tmp_path):
    from causal_vqvae.nn.retrieval import ConvRetrievalHead, RetrievalHead

    assert isinstance(tiny_model().retrieval_head, ConvRetrievalHead)
    assert isinstance(tiny_model(latent_layout="tokens").retrieval_head, RetrievalHead)
    assert isinstance(tiny_model(retrieval_head="transformer").retrieval_head, RetrievalHead)
    with pytest.raises(ValueError, match="retrieval_head 'conv' needs latent_layout 'grid'"):
        tiny_config(latent_layout="tokens", retrieval_head="conv")
    with pytest.raises(ValueError, match="retrieval_head must be one of"):
        tiny_config(retrieval_head="mlp")
    # a model saved before the field existed has a transformer head and loads as one
    old = tiny_model(retrieval_head="transformer").eval()
    save_pretrained(old, tmp_path / "old")
    config = json.loads((tmp_path / "old" / "config.json").read_text())
    del config["retrieval_head"]
    (tmp_path / "old" / "config.json").write_text(json.dumps(config))
    loaded = CausalVQVAE.from_pretrained(tmp_path / "old")
    assert loaded.config.retrieval_head == "transformer"
    x = squares(4)
    assert torch.equal(loaded.retrieve(x, x.flip(-1)).logits, old.retrieve(x, x.flip(-1)).logits)


def test_the_conv_head_reads_code_vectors_and_never_trains_the_codebook():
    model = tiny_model(quantizer_mode="loss").train()  # a codebook that is a Parameter
    codes, target = random_codes(model, 6, seed=1), random_codes(model, 6, seed=2)
    loss = model.retrieval_loss(codes, target, torch.arange(6) % 4)
    loss.loss.backward()
    assert model.quantizer.embedding.grad is None
    assert all(p.grad is not None for p in model.retrieval_head.parameters())
    # the head sees the vectors: moving one code's vector changes the logits of pairs that use it
    model.eval()
    before = model.head_logits(codes, target)
    with torch.no_grad():
        model.quantizer.embedding[0, codes[0, 0]] += 1.0
    after = model.head_logits(codes, target)
    assert not torch.allclose(before[0], after[0])


def test_with_retrieval_head_swaps_only_the_head():
    model = tiny_model(retrieval_head="transformer").eval()
    model.quantizer.embedding.data.mul_(2.0)  # state that a fresh model would not have
    swapped = model.with_retrieval_head(retrieval_head="conv", retrieval_dim=24)
    assert swapped.config.resolved_retrieval_head == "conv" and swapped.config.retrieval_dim == 24
    assert not swapped.training
    for key, value in model.state_dict().items():
        if not key.startswith("retrieval_head."):
            assert torch.equal(swapped.state_dict()[key], value), key
    x = squares(2)
    assert torch.equal(swapped.edit(x, 1), model.edit(x, 1))
    with pytest.raises(ValueError, match="changes only"):
        model.with_retrieval_head(codebook_size=8)


def test_with_settings_keeps_every_weight_and_the_multipliers():
    model = tiny_model().eval()
    with torch.no_grad():  # state that a fresh model would not have
        model.graph.adjacency_logits.fill_(-3.0)
    model.adjacency_dual.multipliers.fill_(7.0)
    changed = model.with_settings(adjacency_budget_start=4.0, adjacency_budget=4.0, retrieval_score="nll")
    assert changed.config.adjacency_budget_start == 4.0 and changed.config.retrieval_score == "nll"
    assert changed.adjacency_dual.budget_at(0.0) == 4.0 and model.adjacency_dual.budget_at(0.0) > 4.0
    for key, value in model.state_dict().items():
        assert torch.equal(changed.state_dict()[key], value), key
    codes, target = random_codes(model, 3, seed=0), random_codes(model, 3, seed=1)
    assert torch.equal(changed.retrieve_codes(codes, target, "transition").scores,
                       score_actions(model.transition_net, codes, target, eps=model.config.mixture_eps))
    with pytest.raises(ValueError, match="changes only"):
        model.with_settings(transition_dim=32)


def test_retrieval_score_is_validated_and_old_configs_load_with_the_default(tmp_path):
    with pytest.raises(ValueError, match="retrieval_score must be one of"):
        tiny_config(retrieval_score="l1")
    old = tiny_model().eval()
    save_pretrained(old, tmp_path / "old")
    config = json.loads((tmp_path / "old" / "config.json").read_text())
    assert config.pop("retrieval_score") == "marginal_nll"
    (tmp_path / "old" / "config.json").write_text(json.dumps(config))
    assert CausalVQVAE.from_pretrained(tmp_path / "old").config.retrieval_score == "marginal_nll"
    # a model saved with another score keeps it
    save_pretrained(old.with_settings(retrieval_score="code_distance"), tmp_path / "distance")
    assert CausalVQVAE.from_pretrained(tmp_path / "distance").config.retrieval_score == "code_distance"


def test_with_new_transition_keeps_the_autoencoder_and_head_and_starts_the_causal_part_afresh():
    model = tiny_model().eval()
    with torch.no_grad():  # state that a fresh model would not have
        model.quantizer.embedding.mul_(2.0)
        model.graph.adjacency_logits.fill_(-3.0)
        for p in model.transition_net.parameters():
            p.add_(0.5)
    model.adjacency_dual.multipliers.fill_(7.0)
    renewed = model.with_new_transition(adjacency_budget=2.0, adjacency_init_logit=1.5)
    assert renewed.config.adjacency_budget == 2.0 and not renewed.training
    fresh = CausalVQVAE(renewed.config).state_dict()  # what the seed builds
    for key, value in renewed.state_dict().items():
        causal = key.startswith(("transition_net.", "target_dual.", "adjacency_dual."))
        assert torch.equal(value, fresh[key] if causal else model.state_dict()[key]), key
    assert renewed.graph.adjacency_logits.eq(1.5).all()
    assert renewed.adjacency_dual.multipliers.eq(0).all()
    x = squares(2)
    assert torch.equal(renewed.encode_codes(x), model.encode_codes(x))
    with pytest.raises(ValueError, match="changes only"):
        model.with_new_transition(codebook_size=8)


def test_adjacency_summary_tells_a_diffuse_graph_from_a_decided_one():
    """The same expected parents per node, spent on every edge at 1/N probability or on one sure
    edge per node: evaluation keeps no parent in the first case and one in the second."""
    model = tiny_model()
    graph = model.graph
    n = graph.off_diagonal.shape[0]
    with torch.no_grad():
        graph.adjacency_logits.fill_(torch.logit(torch.tensor(1.0 / (n - 1))).item())
    diffuse = graph.adjacency_summary()
    assert diffuse["expected_parents_per_node"] == pytest.approx(1.0, rel=1e-4)
    assert diffuse["thresholded_parents_per_node"] == 0.0
    assert diffuse["edge_probability_max"] == pytest.approx(1.0 / (n - 1), rel=1e-4)
    with torch.no_grad():
        graph.adjacency_logits.fill_(-30.0)
        graph.adjacency_logits[torch.arange(n), (torch.arange(n) + 1) % n] = 30.0  # a ring of sure edges
    decided = graph.adjacency_summary()
    assert decided["expected_parents_per_node"] == pytest.approx(1.0, rel=1e-4)
    assert decided["thresholded_parents_per_node"] == 1.0
    assert decided["edge_probability_median"] < 1e-6 and decided["edge_probability_max"] == pytest.approx(1.0)
