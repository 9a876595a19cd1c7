"""The parent window (ModelConfig.transition_window): a node reads the k x k cells around it through
one MLP, the same in every cell, and only the cells the graph makes its parents."""

from __future__ import annotations

import pytest
import torch

from causal_vqvae import CausalVQVAE, ModelConfig
from causal_vqvae.nn.window import ParentWindowBlock, grid_window_index
from causal_vqvae.pretrained import save_pretrained

SMALL = dict(in_channels=1, hidden_dims=(8, 16, 16), num_res_blocks=1, norm_groups=4, code_dim=8, codebook_size=4,
             mlp_ratio=2, target_head_dim=8, transition_dim=16, transition_layers=1, transition_heads=2,
             retrieval_dim=16, retrieval_layers=1, retrieval_heads=2, num_actions=4,
             action_names=("a-", "a+", "b-", "b+"), dataset="tiny", transition_position="relative",
             transition_window=3)


def model(**overrides) -> CausalVQVAE:
    return CausalVQVAE(ModelConfig(**{**SMALL, **overrides})).eval()


def set_edges(m: CausalVQVAE, edges: list[tuple[int, int]]) -> None:
    """Exactly these (parent, child) edges, deterministically."""
    n = m.config.num_nodes
    logits = torch.full((n, n), -10.0)
    for parent, child in edges:
        logits[parent, child] = 10.0
    with torch.no_grad():
        m.graph.adjacency_logits.copy_(logits)


def logits_of(m: CausalVQVAE, codes: torch.Tensor, action: int = 1) -> torch.Tensor:
    with torch.no_grad():
        return m.transition(codes, torch.tensor([action]), sample=False).logits[0]


def test_the_window_index_lists_each_cell_around_a_node_row_by_row_and_marks_cells_off_the_grid():
    index, valid = grid_window_index(16, 3)  # a 4 x 4 grid
    assert index[5].tolist() == [0, 1, 2, 4, 5, 6, 8, 9, 10]  # node (1, 1): every cell on the grid
    assert valid[5].all()
    assert valid[0].view(3, 3).tolist() == [[False, False, False], [False, True, True], [False, True, True]]
    assert index[0].view(3, 3)[1:, 1:].tolist() == [[0, 1], [4, 5]]
    assert valid[15].view(3, 3).tolist() == [[True, True, False], [True, True, False], [False, False, False]]
    assert valid.sum().item() == 4 * 4 + 8 * 6 + 4 * 9  # corners, edges, interior of a 4 x 4 grid
    with pytest.raises(ValueError, match="square grid"):
        grid_window_index(12, 3)


def test_a_node_depends_on_the_window_cells_that_are_its_parents_and_on_no_other():
    m = model()
    side = m.config.grid_size
    node = 3 * side + 3
    parent, stranger = node - side, node + side  # the cells above and below, both in the window
    set_edges(m, [(parent, node)])
    codes = torch.zeros(1, side * side, dtype=torch.long)
    base = logits_of(m, codes)[node]
    codes[0, stranger] = 1  # not a parent: no effect
    assert torch.equal(logits_of(m, codes)[node], base)
    codes[0, stranger], codes[0, parent] = 0, 1  # the parent: an effect
    assert not torch.allclose(logits_of(m, codes)[node], base, atol=1e-4)
    codes[0, parent], codes[0, node] = 0, 1  # its own code, always read
    assert not torch.allclose(logits_of(m, codes)[node], base, atol=1e-4)


def test_the_window_tells_a_parent_above_from_one_below_where_attention_alone_cannot():
    """Two parents, one above and one below, and their codes swapped. With the offset biases at 0
    the attention layer sums the same two parents alike; the window reads them in their slots."""
    outputs = {}
    for window in (0, 3):
        m = model(transition_window=window)
        with torch.no_grad():
            for block in m.transition_net.blocks:
                block.offset_bias.zero_()
        side = m.config.grid_size
        node = 3 * side + 3
        above, below = node - side, node + side
        set_edges(m, [(above, node), (below, node)])
        codes = torch.zeros(1, side * side, dtype=torch.long)
        codes[0, above], codes[0, below] = 1, 2
        before = logits_of(m, codes)[node]
        codes[0, above], codes[0, below] = 2, 1
        outputs[window] = (before, logits_of(m, codes)[node])
    assert torch.allclose(*outputs[0], atol=1e-5)
    assert not torch.allclose(*outputs[3], atol=1e-4)


def test_every_cell_runs_the_same_window_equation():
    m = model(transition_window=5)
    side = m.config.grid_size
    cells = [(2, 2), (4, 5)]  # two cells whose 5 x 5 windows lie inside the 8 x 8 grid
    edges = [((r + dy) * side + c + dx, r * side + c) for r, c in cells for dy in (-2, 0, 1) for dx in (-1, 2)
             if (dy, dx) != (0, 0)]
    set_edges(m, edges)
    g = torch.Generator().manual_seed(0)
    codes = torch.randint(0, 4, (1, side * side), generator=g)
    for dy in range(-2, 3):
        for dx in range(-2, 3):
            codes[0, (4 + dy) * side + 5 + dx] = codes[0, (2 + dy) * side + 2 + dx]
    logits = logits_of(m, codes, action=2)
    assert torch.allclose(logits[2 * side + 2], logits[4 * side + 5], atol=1e-5)


def test_the_graph_mask_of_a_window_parent_gets_gradient_in_training():
    m = model().train()
    side = m.config.grid_size
    node = 3 * side + 3
    set_edges(m, [])
    with torch.no_grad():
        m.graph.adjacency_logits.zero_()  # edges undecided: sampled masks between 0 and 1
    codes = torch.randint(0, 4, (8, side * side), generator=torch.Generator().manual_seed(1))
    out = m.transition(codes, torch.ones(8, dtype=torch.long), sample=True)
    out.logits[:, node].logsumexp(-1).sum().backward()
    grad = m.graph.adjacency_logits.grad
    assert grad[node - side, node].abs() > 0 and grad[node + 1, node].abs() > 0


def test_window_settings_are_checked_and_old_models_read_none():
    for bad in (2, 1, -3):
        with pytest.raises(ValueError, match="transition_window must be 0"):
            ModelConfig(**{**SMALL, "transition_window": bad})
    with pytest.raises(ValueError, match="transition_window needs latent_layout 'grid'"):
        ModelConfig(**{**SMALL, "transition_position": "absolute", "latent_layout": "tokens"})
    saved = ModelConfig(**SMALL).to_dict()
    saved.pop("transition_window")  # a model saved before the field
    assert ModelConfig.from_dict(saved).transition_window == 0
    assert CausalVQVAE(ModelConfig.from_dict(saved)).transition_net.window is None
    with pytest.raises(ValueError, match="transition_window 129 is above its limit"):
        ModelConfig(**{**SMALL, "transition_window": 129})


def test_a_model_with_a_window_saves_and_loads_with_the_same_equations(tmp_path):
    m = model(transition_window=5)
    save_pretrained(m, tmp_path / "m")
    loaded = CausalVQVAE.from_pretrained(tmp_path / "m").eval()
    assert loaded.config.transition_window == 5
    codes = torch.randint(0, 4, (16, m.config.num_nodes), generator=torch.Generator().manual_seed(2))
    actions = torch.arange(16) % 4
    with torch.no_grad():
        assert torch.equal(m.transition(codes, actions, sample=False).logits,
                           loaded.transition(codes, actions, sample=False).logits)


def window_block(side: int = 8, window: int = 3, dim: int = 8) -> tuple[ParentWindowBlock, dict]:
    """The block alone, with random inputs: (block, inputs) where inputs holds h, parents, action_vec,
    constant and an adjacency with no edge."""
    g = torch.Generator().manual_seed(3)
    block = ParentWindowBlock(dim, window, 2 * dim, side * side)
    with torch.no_grad():
        block.pad.normal_(generator=g)
    n = side * side
    inputs = dict(h=torch.zeros(1, n, dim), parents=torch.randn(1, n, dim, generator=g),
                  action_vec=torch.randn(1, dim, generator=g), constant=torch.randn(dim, generator=g),
                  adjacency=torch.zeros(1, n, n))
    return block, inputs


def test_the_block_reads_a_window_parent_and_ignores_the_same_cell_when_it_is_not_a_parent():
    block, inputs = window_block()
    node, cell = 3 * 8 + 3, 2 * 8 + 4  # the cell up and to the right of the node
    change = torch.linspace(-1.0, 1.0, 8)  # not a shift: the block normalises each embedding
    before = block(**inputs)[0, node]
    inputs["parents"][0, cell] += change
    assert torch.equal(block(**inputs)[0, node], before)  # not a parent: the constant stands in
    inputs["adjacency"][0, cell, node] = 1.0
    with_edge = block(**inputs)[0, node]
    inputs["parents"][0, cell] -= change
    assert not torch.allclose(block(**inputs)[0, node], with_edge, atol=1e-5)


def test_off_grid_slots_read_the_pad_and_never_cell_zero():
    """A corner node's slots off the grid hold cell 0's id as a placeholder: even where cell 0 is a
    parent (an edge outside the window), the window reads the pad there, not cell 0."""
    block, inputs = window_block()
    node = 7  # row 0, last column: 5 of its 9 slots are off the grid
    inputs["adjacency"][0, 0, node] = 1.0
    before = block(**inputs)[0, node]
    inputs["parents"][0, 0] += torch.linspace(-1.0, 1.0, 8)
    assert torch.equal(block(**inputs)[0, node], before)
    with torch.no_grad():
        block.pad.add_(1.0)
    assert not torch.allclose(block(**inputs)[0, node], before, atol=1e-5)  # the pad is read there


def test_the_mask_gets_gradient_through_the_window_itself():
    block, inputs = window_block()
    node = 3 * 8 + 3
    adjacency = torch.full((1, 64, 64), 0.5, requires_grad=True)
    block(**{**inputs, "adjacency": adjacency})[0, node].sum().backward()
    grad = adjacency.grad[0, :, node]
    in_window = set(grid_window_index(64, 3)[0][node].tolist()) - {node}
    assert all(grad[j].abs() > 0 for j in in_window)
    assert all(grad[j] == 0 for j in set(range(64)) - in_window)  # outside the window: no dependence


def test_retrieval_by_transition_reads_each_window_once_and_scores_as_one_action_at_a_time():
    from causal_vqvae.nn.retrieval import output_scores, score_actions

    m = model()
    torch.manual_seed(0)
    with torch.no_grad():
        m.graph.adjacency_logits.copy_(torch.randn_like(m.graph.adjacency_logits) * 4)
    n, tr = m.config.num_nodes, m.transition_net
    codes, target = torch.randint(0, 4, (5, n)), torch.randint(0, 4, (5, n))
    read = []  # the rows the window's input layer reads per call
    hook = tr.window.inp.register_forward_hook(lambda module, args, out: read.append(args[0].shape[0]))
    with torch.no_grad():
        shared = score_actions(tr, codes, target, 1e-3, "marginal_nll")
        assert read == [5]  # once per pair, not once per pair and action (20)
        hook.remove()
        one_by_one = torch.stack([output_scores(tr(codes, torch.full((5,), a), sample=False), codes, target,
                                                "marginal_nll", 1e-3) for a in range(4)], 1)
        assert torch.allclose(shared, one_by_one, rtol=1e-5, atol=1e-5)
        assert not torch.allclose(shared[:, 0], shared[:, 1])  # the actions do score differently
    with pytest.raises(ValueError, match="deterministic graph masks"):
        tr(codes.repeat_interleave(2, 0), torch.arange(2).repeat(5), sample=True, repeats=2)
    with pytest.raises(ValueError, match="must divide the batch"):
        tr(codes, torch.arange(5) % 4, sample=False, repeats=2)
