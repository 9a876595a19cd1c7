"""The structural equations' intervention semantics: with "change" an intervened node takes a new
code, with "resample" any code, read off with ``keep_threshold``; the losses follow the same rule."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from einops import rearrange

from causal_vqvae import CausalVQVAE, ModelConfig
from causal_vqvae.nn.transition import EXCLUDED_LOGIT, TransitionOutput, mixture_nll
from causal_vqvae.pretrained import save_pretrained

SMALL = dict(in_channels=1, hidden_dims=(8, 16, 16), num_res_blocks=1, norm_groups=4, code_dim=8, codebook_size=4,
             mlp_ratio=2, target_head_dim=8, transition_dim=16, transition_layers=1, transition_heads=2,
             retrieval_dim=16, retrieval_layers=1, retrieval_heads=2, num_actions=4,
             action_names=("a-", "a+", "b-", "b+"), dataset="tiny")


def model(**overrides) -> CausalVQVAE:
    """A small untrained model whose actions intervene on every other node (the odd ones)."""
    m = CausalVQVAE(ModelConfig(**{**SMALL, **overrides})).eval()
    with torch.no_grad():
        m.graph.target_logits[:, ::2] = -5.0
    return m


def codes_and_actions(m: CausalVQVAE, batch: int = 64, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    c = m.config
    return (torch.randint(0, c.codes_per_node, (batch, c.num_nodes), generator=g),
            torch.randint(0, c.num_actions, (batch,), generator=g))


def test_under_change_every_intervened_node_changes_and_the_others_keep_their_codes():
    m = model(intervention="change")  # codebook of 4: a node left to itself would keep its code 1 time in 4
    codes, actions = codes_and_actions(m)
    with torch.no_grad():
        out = m.transition(codes, actions, sample=False)
    intervened = out.intervened > 0.5
    assert intervened.any() and (~intervened).any()
    assert (out.predicted_codes[intervened] != codes[intervened]).all()
    assert torch.equal(out.predicted_codes[~intervened], codes[~intervened])
    assert torch.equal(out.logits.gather(-1, codes.unsqueeze(-1)).squeeze(-1),
                       torch.full(codes.shape, EXCLUDED_LOGIT))
    assert torch.isfinite(out.logits).all()


def test_resample_lets_an_intervened_node_keep_its_code_and_only_the_current_logit_differs():
    change, resample = model(intervention="change"), model(intervention="resample", keep_threshold=None)
    resample.load_state_dict(change.state_dict())
    codes, actions = codes_and_actions(change)
    with torch.no_grad():
        a, b = change.transition(codes, actions, sample=False), resample.transition(codes, actions, sample=False)
    current = F.one_hot(codes, change.config.codes_per_node).bool()
    assert torch.equal(a.logits[~current], b.logits[~current])
    kept = (b.intervened > 0.5) & (b.predicted_codes == codes)
    assert kept.any()  # with 4 codes an untrained equation keeps some intervened nodes' codes
    assert not ((a.intervened > 0.5) & (a.predicted_codes == codes)).any()


def test_under_change_intervening_on_a_node_that_keeps_its_code_costs_what_keeping_a_changed_one_does():
    m = model(intervention="change")
    codes, actions = codes_and_actions(m, batch=8)
    with torch.no_grad():
        out = m.transition(codes, actions, sample=False)
    eps = m.config.mixture_eps
    worst = -torch.log(torch.tensor(eps + (1 - eps) * 0.0))
    nll = mixture_nll(out, codes, codes, eps)  # the target keeps every code
    intervened = out.intervened > 0.5
    assert torch.allclose(nll[intervened], worst.expand(int(intervened.sum())))
    assert torch.allclose(nll[~intervened], torch.zeros(int((~intervened).sum())), atol=1e-6)


@pytest.mark.parametrize(("intervention", "kept"), [("change", 1.0), ("resample", 1.0), ("resample", 0.0),
                                                     ("resample", 0.25)])
def test_the_equation_term_weighs_the_nodes_that_keep_their_code_by_kept_equation_weight(intervention, kept):
    """"change": the cross-entropy over the nodes whose code changes, divided by all nodes, whatever
    the weight; "resample": the changed nodes weigh 1 and the kept ones ``kept_equation_weight``, the
    sum divided by all nodes (1: the plain mean)."""
    m = model(intervention=intervention, equation_loss_weight=1.0, sparsity_mode="none", kept_equation_weight=kept)
    codes, actions = codes_and_actions(m, batch=16)
    target = codes.clone()
    target[:, :5] = (codes[:, :5] + 1) % m.config.codes_per_node  # the first 5 nodes change
    loss = m.transition_loss(codes, actions, target)
    logits = rearrange(loss.output.logits.float(), "b n k -> b k n")
    per_node = F.cross_entropy(logits, target, reduction="none")  # (B, N)
    changed, stayed = per_node[:, :5].sum(), per_node[:, 5:].sum()
    if intervention == "change":
        expected = changed / target.numel()
    else:
        expected = (changed + kept * stayed) / target.numel()
    assert stayed > 0 and torch.isfinite(loss.equation_nll)
    assert torch.allclose(loss.equation_nll, expected, rtol=1e-5)
    assert torch.allclose(loss.loss, loss.nll + loss.equation_nll + loss.sparsity, rtol=1e-5)
    with pytest.raises(ValueError, match="kept_equation_weight must be in"):
        ModelConfig(**{**SMALL, "kept_equation_weight": 1.5})


def test_models_saved_before_the_settings_load_as_they_ran_and_with_settings_switches_them(tmp_path):
    m = model(intervention="change")
    save_pretrained(m, tmp_path / "old")
    config = json.loads((tmp_path / "old" / "config.json").read_text())
    assert config.pop("intervention") == "change" and config.pop("keep_threshold") == 0.5
    assert config.pop("kept_equation_weight") == 0.0 == ModelConfig().kept_equation_weight  # new models: 0
    (tmp_path / "old" / "config.json").write_text(json.dumps(config))
    old = CausalVQVAE.from_pretrained(tmp_path / "old")
    assert old.config.intervention == "resample" and old.transition_net.intervention == "resample"
    assert old.config.kept_equation_weight == 1.0  # trained on with the plain cross-entropy it had
    assert old.config.keep_threshold is None and old.transition_net.keep_threshold is None
    switched = old.with_settings(intervention="change", keep_threshold=0.5)
    assert switched.transition_net.intervention == "change" and switched.transition_net.keep_threshold == 0.5
    for (key, a), b in zip(old.state_dict().items(), switched.state_dict().values()):
        assert torch.equal(a, b), key
    with pytest.raises(ValueError, match="intervention must be one of"):
        ModelConfig(**{**SMALL, "intervention": "swap"})
    for bad in (0.0, 1.5, "half", True):
        with pytest.raises(ValueError, match="keep_threshold must be in"):
            ModelConfig(**{**SMALL, "keep_threshold": bad})


def test_a_new_model_resamples_and_keeps_a_node_only_when_keeping_is_more_likely_than_changing():
    m = model()
    assert m.config.intervention == "resample" and m.config.keep_threshold == 0.5
    codes = torch.zeros(1, 4, dtype=torch.long)  # every node's current code is 0
    # probabilities over the 4 codes: node 0 keeps at 0.4 (the most likely single code) but changes
    # at 0.6 in all; node 1 keeps at 0.55; node 2 keeps at 0.1; node 3 keeps at 0.7
    probs = torch.tensor([[[0.4, 0.3, 0.2, 0.1], [0.55, 0.1, 0.25, 0.1], [0.1, 0.2, 0.6, 0.1],
                           [0.7, 0.1, 0.1, 0.1]]])
    logits = probs.log()
    net = m.transition_net
    assert net.read_codes(logits, codes).tolist() == [[1, 0, 2, 0]]
    net.keep_threshold = None  # the most likely code, the current one included
    assert net.read_codes(logits, codes).tolist() == [[0, 0, 2, 0]]
    net.keep_threshold = 1.0  # keep only a sure code
    assert net.read_codes(logits, codes).tolist() == [[1, 2, 2, 1]]


def test_the_threshold_reads_the_codes_of_intervened_nodes_only_and_leaves_retrieval_alone():
    plain, read = model(keep_threshold=None), model()
    read.load_state_dict(plain.state_dict())
    codes, actions = codes_and_actions(plain)
    with torch.no_grad():
        a, b = plain.transition(codes, actions, sample=False), read.transition(codes, actions, sample=False)
        scores = [m.retrieve_codes(codes, codes.roll(1, 0), "transition").scores for m in (plain, read)]
    assert torch.equal(a.logits, b.logits) and torch.equal(a.intervened, b.intervened)
    kept = a.intervened < 0.5
    assert torch.equal(b.predicted_codes[kept], codes[kept])
    p_keep = torch.softmax(a.logits, -1).gather(-1, codes.unsqueeze(-1)).squeeze(-1)
    moved = ~kept & (p_keep < 0.5) & (a.predicted_codes == codes)  # argmax kept a node likelier to change
    assert moved.any() and (b.predicted_codes[moved] != codes[moved]).all()
    assert torch.equal(scores[0], scores[1])


def test_the_edit_error_is_zero_for_the_target_codes_and_trains_the_equations_and_mask_not_the_decoder():
    m = model(edit_loss_weight=10.0, sparsity_mode="none", quantizer_mode="loss")  # a trainable codebook
    codes, actions = codes_and_actions(m, batch=8)
    target = codes.clone()
    target[:, 1::2] = (codes[:, 1::2] + 1) % m.config.codes_per_node  # the intervened (odd) nodes change
    with torch.no_grad():
        out = m.transition(codes, actions, sample=False)
    assert torch.equal(out.intervened[:, 1::2], torch.ones_like(out.intervened[:, 1::2]))
    sure = torch.full_like(out.logits, -20.0).scatter(-1, target.unsqueeze(-1), 20.0)  # equations that know
    right = TransitionOutput(sure, out.intervened, target, out.target_logits, out.adjacency)
    assert m.edit_error(right, codes, target).item() < 1e-10
    wrong = TransitionOutput(-sure, out.intervened, codes, out.target_logits, out.adjacency)
    assert m.edit_error(wrong, codes, target).item() > 1e-6

    m.requires_grad_(True)
    m.train()
    loss = m.transition_loss(codes, actions, target)
    assert loss.edit_mse is not None and loss.edit_mse.item() > 0
    base = m.with_settings(edit_loss_weight=0.0).train()
    # the same weights and the same sampled masks: the losses differ by the weighted edit error alone
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1)
    with_edit = m.transition_loss(codes, actions, target, generator=gen)
    without = base.transition_loss(codes, actions, target, generator=torch.Generator().manual_seed(1))
    assert without.edit_mse is None
    assert torch.allclose(with_edit.loss, without.loss + 10.0 * with_edit.edit_mse, rtol=1e-5)
    m.zero_grad()
    with_edit.edit_mse.backward()
    assert m.transition_net.head_weight.grad.abs().sum() > 0  # the equations
    assert m.graph.target_logits.grad.abs().sum() > 0  # the intervention mask
    assert all(p.grad is None or not p.grad.any() for p in m.decoder.parameters())
    assert isinstance(m.quantizer.embedding, torch.nn.Parameter)
    assert m.quantizer.embedding.grad is None or not m.quantizer.embedding.grad.any()


def test_a_local_encoder_leaves_the_codes_of_distant_cells_exactly_as_they_were(tmp_path):
    """A change inside one 8x8 cell reaches only the cells whose 22-pixel window covers it: the cell
    and its 8 neighbours. The global encoder lets it reach every cell. A saved local model reloads."""
    x = torch.zeros(2, 1, 64, 64)
    x[:, :, 36:48, 36:48] = 1.0
    y = x.clone()
    y[:, :, 42:44, 42:44] = 0.0  # inside cell (5, 5)
    changed = {}
    for local in (True, False):
        m = CausalVQVAE(ModelConfig(**{**SMALL, "local_encoder": local, "num_res_blocks": 2})).eval()
        with torch.no_grad():
            differ = (m.encode(x) - m.encode(y)).abs().amax(-1) > 0  # (B, cells)
        changed[local] = set(differ.any(0).nonzero().flatten().tolist())
        if local:
            save_pretrained(m, tmp_path / "local")
            again = CausalVQVAE.from_pretrained(tmp_path / "local")
            assert again.config.local_encoder and torch.equal(again.encode(x), m.encode(x))
    near = {r * 8 + c for r in (4, 5, 6) for c in (4, 5, 6)}
    assert changed[True] <= near and 5 * 8 + 5 in changed[True]
    assert len(changed[False]) == 64
    with pytest.raises(ValueError, match="local_encoder needs latent_layout 'grid'"):
        ModelConfig(**{**SMALL, "local_encoder": True, "latent_layout": "tokens"})


def _four_neighbour_graph(m: CausalVQVAE) -> None:
    """Every node's parents: the cells above, below, left and right of it."""
    side = m.config.grid_size
    row, col = torch.arange(side * side) // side, torch.arange(side * side) % side
    near = (row[:, None] - row[None, :]).abs() + (col[:, None] - col[None, :]).abs() == 1
    with torch.no_grad():
        m.graph.adjacency_logits.copy_(torch.where(near, 10.0, -10.0))


@pytest.mark.parametrize("position", ["absolute", "relative", "relative_kv"])
def test_relative_positions_run_the_same_equations_in_every_cell(position):
    m = model(transition_position=position, transition_layers=2)
    with torch.no_grad():  # parameters as after training: the offset biases are not all zero
        for name, p in m.transition_net.named_parameters():
            if name.endswith(("offset_bias", "offset_key", "offset_value")):
                p.normal_()
    _four_neighbour_graph(m)
    side = m.config.grid_size
    codes, _ = codes_and_actions(m, batch=1)
    # the same cell and neighbourhood at (1, 1) and at (4, 5), away from every border
    for dy, dx in ((0, 0), (-1, 0), (1, 0), (0, -1), (0, 1)):
        codes[0, (4 + dy) * side + 5 + dx] = codes[0, (1 + dy) * side + 1 + dx]
    with torch.no_grad():
        logits = m.transition(codes, torch.tensor([1]), sample=False).logits[0]
    a, b = logits[1 * side + 1], logits[4 * side + 5]
    if position != "absolute":
        assert m.transition_net.position is None
        assert torch.allclose(a, b, atol=1e-5)
        # a parent's code still matters, and so does its offset: the cells differ once a neighbour does
        codes[0, 5 * side + 5] = (codes[0, 5 * side + 5] + 1) % m.config.codes_per_node
        with torch.no_grad():
            moved = m.transition(codes, torch.tensor([1]), sample=False).logits[0]
        assert not torch.allclose(moved[4 * side + 5], b, atol=1e-4)
        # parents' codes enter without positions, so only the offsets (the bias, and with
        # relative_kv the vectors) tell the cell above from the cell below: swapping their codes
        # changes the node's logits
        above, below = 3 * side + 5, 5 * side + 5
        code = int(codes[0, above])
        codes[0, above], codes[0, below] = (code + 1) % m.config.codes_per_node, code
        with torch.no_grad():
            before = m.transition(codes, torch.tensor([1]), sample=False).logits[0, 4 * side + 5]
            codes[0, [above, below]] = codes[0, [below, above]]
            after = m.transition(codes, torch.tensor([1]), sample=False).logits[0, 4 * side + 5]
        assert not torch.allclose(before, after, atol=1e-4)
    else:  # a learned embedding per cell: each cell has its own equations
        assert not torch.allclose(a, b, atol=1e-4)


@pytest.mark.parametrize("position, vectors", [("relative", ()), ("relative_kv", ("offset_value",)),
                                               ("relative_kv", ("offset_key",))])
def test_offset_vectors_tell_a_node_where_its_one_parent_is(position, vectors):
    """One parent of the same code, to the left of one node and above another: with the offset bias
    alone (here 0) the two nodes compute the same state; an offset vector in the value, or in the key
    alone (it moves the attention between the parent and the action token), tells them apart."""
    m = model(transition_position=position, transition_layers=1)
    side = m.config.grid_size
    node_a, node_b = 2 * side + 2, 5 * side + 5
    parent_a, parent_b = node_a - 1, node_b - side  # left of a, above b
    with torch.no_grad():
        logits = torch.full((side * side, side * side), -10.0)
        logits[parent_a, node_a] = logits[parent_b, node_b] = 10.0
        m.graph.adjacency_logits.copy_(logits)
        for block in m.transition_net.blocks:
            block.offset_bias.zero_()
            for name in ("offset_key", "offset_value"):
                if getattr(block, name) is not None:
                    getattr(block, name).copy_(torch.randn_like(getattr(block, name)) if name in vectors else 0.0)
        codes = torch.zeros(1, side * side, dtype=torch.long)
        codes[0, [parent_a, parent_b]] = 1
        out = m.transition(codes, torch.tensor([0]), sample=False).logits[0]
    if position == "relative":
        assert torch.allclose(out[node_a], out[node_b], atol=1e-5)
    else:
        assert not torch.allclose(out[node_a], out[node_b], atol=1e-3)


@pytest.mark.parametrize("position", ["relative", "relative_kv"])
def test_relative_positions_need_a_grid_and_old_configs_read_absolute(position):
    with pytest.raises(ValueError, match=f"transition_position '{position}' needs latent_layout 'grid'"):
        ModelConfig(**{**SMALL, "latent_layout": "tokens", "transition_position": position})
    with pytest.raises(ValueError, match="transition_position must be one of"):
        ModelConfig(**{**SMALL, "transition_position": "learned"})
    saved = ModelConfig(**SMALL).to_dict()
    saved.pop("transition_position")  # a model saved before the field
    assert ModelConfig.from_dict(saved).transition_position == "absolute"


@pytest.mark.parametrize("position", ["relative", "relative_kv"])
def test_a_model_with_relative_positions_saves_and_loads_with_the_same_equations(tmp_path, position):
    m = model(transition_position=position)
    with torch.no_grad():
        for name, p in m.transition_net.named_parameters():
            if name.endswith(("offset_bias", "offset_key", "offset_value")):
                p.normal_()
    save_pretrained(m, tmp_path / position)
    loaded = CausalVQVAE.from_pretrained(tmp_path / position).eval()
    assert loaded.config.transition_position == position and loaded.transition_net.position is None
    assert (loaded.transition_net.blocks[0].offset_value is not None) == (position == "relative_kv")
    codes, actions = codes_and_actions(m)
    with torch.no_grad():
        assert torch.equal(m.transition(codes, actions, sample=False).logits,
                           loaded.transition(codes, actions, sample=False).logits)
