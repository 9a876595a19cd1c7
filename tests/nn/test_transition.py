"""The structural equations' intervention semantics: with "change" an intervened node takes a new
code, with "resample" any code; the losses follow the same rule."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from einops import rearrange

from causal_vqvae import CausalVQVAE, ModelConfig
from causal_vqvae.nn.transition import EXCLUDED_LOGIT, mixture_nll
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


def test_a_new_model_changes_every_intervened_node_and_keeps_the_others():
    m = model()  # codebook of 4: a node left to itself would keep its code 1 time in 4
    assert m.config.intervention == "change"
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
    change, resample = model(), model(intervention="resample")
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
    m = model()
    codes, actions = codes_and_actions(m, batch=8)
    with torch.no_grad():
        out = m.transition(codes, actions, sample=False)
    eps = m.config.mixture_eps
    worst = -torch.log(torch.tensor(eps + (1 - eps) * 0.0))
    nll = mixture_nll(out, codes, codes, eps)  # the target keeps every code
    intervened = out.intervened > 0.5
    assert torch.allclose(nll[intervened], worst.expand(int(intervened.sum())))
    assert torch.allclose(nll[~intervened], torch.zeros(int((~intervened).sum())), atol=1e-6)


@pytest.mark.parametrize("intervention", ["change", "resample"])
def test_the_equation_term_counts_the_nodes_it_may_predict(intervention):
    """"change": the cross-entropy over the nodes whose code changes, divided by all nodes;
    "resample": the mean over all nodes."""
    m = model(intervention=intervention, equation_loss_weight=1.0, sparsity_mode="none")
    codes, actions = codes_and_actions(m, batch=16)
    target = codes.clone()
    target[:, :5] = (codes[:, :5] + 1) % m.config.codes_per_node  # the first 5 nodes change
    loss = m.transition_loss(codes, actions, target)
    logits = rearrange(loss.output.logits.float(), "b n k -> b k n")
    per_node = F.cross_entropy(logits, target, reduction="none")  # (B, N)
    if intervention == "change":
        expected = per_node[:, :5].sum() / target.numel()
    else:
        expected = per_node.mean()
    assert torch.isfinite(loss.equation_nll)
    assert torch.allclose(loss.equation_nll, expected, rtol=1e-5)
    assert torch.allclose(loss.loss, loss.nll + loss.equation_nll + loss.sparsity, rtol=1e-5)


def test_models_saved_before_the_setting_load_with_resample_and_with_settings_switches_it(tmp_path):
    m = model()
    save_pretrained(m, tmp_path / "old")
    config = json.loads((tmp_path / "old" / "config.json").read_text())
    assert config.pop("intervention") == "change"
    (tmp_path / "old" / "config.json").write_text(json.dumps(config))
    old = CausalVQVAE.from_pretrained(tmp_path / "old")
    assert old.config.intervention == "resample" and old.transition_net.intervention == "resample"
    switched = old.with_settings(intervention="change")
    assert switched.transition_net.intervention == "change"
    for (key, a), b in zip(old.state_dict().items(), switched.state_dict().values()):
        assert torch.equal(a, b), key
    with pytest.raises(ValueError, match="intervention must be one of"):
        ModelConfig(**{**SMALL, "intervention": "swap"})
