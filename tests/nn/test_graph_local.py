"""The graph's locality prior: edges between neighbouring grid cells start at local_parent_logit."""

from __future__ import annotations

import pytest
import torch

from causal_vqvae import CausalVQVAE, ModelConfig
from causal_vqvae.nn.graph import CausalGraph, grid_neighbours
from tiny import TINY


def test_grid_neighbours_are_the_eight_around_a_cell():
    near = grid_neighbours(16)  # a 4 x 4 grid
    assert near.shape == (16, 16) and torch.equal(near, near.T) and not near.diagonal().any()
    assert near[5].nonzero().flatten().tolist() == [0, 1, 2, 4, 6, 8, 9, 10]  # cell (1, 1): all eight
    assert near[0].nonzero().flatten().tolist() == [1, 4, 5]  # a corner has three
    with pytest.raises(ValueError, match="square number of nodes.*got 15"):
        grid_neighbours(15)


def test_neighbour_edges_start_at_the_local_logit_and_the_rest_at_the_init_logit():
    graph = CausalGraph(64, 4, adjacency_init_logit=-3.0, local_parent_logit=3.0)
    logits, near = graph.adjacency_logits.detach(), grid_neighbours(64)
    assert (logits[near] == 3.0).all() and (logits[~near] == -3.0).all()
    kept = graph.hard_adjacency()
    assert torch.equal(kept.bool(), near)  # evaluation keeps exactly the neighbours at the start
    assert torch.equal(CausalGraph(64, 4, adjacency_init_logit=2.0).adjacency_logits.detach(),
                       torch.full((64, 64), 2.0))  # the default: every edge alike


def test_the_model_config_carries_the_prior_and_the_tokens_layout_refuses_it():
    config = ModelConfig(**{**TINY, "local_parent_logit": 4.0, "adjacency_init_logit": -4.0})
    model = CausalVQVAE(config)
    near = grid_neighbours(config.num_nodes)
    assert (model.graph.adjacency_logits.detach()[near] == 4.0).all()
    assert ModelConfig.from_dict(config.to_dict()).local_parent_logit == 4.0
    with pytest.raises(ValueError, match="local_parent_logit needs latent_layout 'grid'"):
        ModelConfig(**{**TINY, "latent_layout": "tokens", "local_parent_logit": 4.0})
