"""The nodes' grid: the id of each cell's offset from a node, and the window of cells an equation
reads (:class:`ParentWindowBlock`, ``ModelConfig.transition_window``). Nodes are a square grid,
row-major, wherever these are used."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

__all__ = ["ParentWindowBlock", "grid_cells", "grid_offset_index", "grid_window_index"]


def grid_cells(num_nodes: int, what: str) -> tuple[int, torch.Tensor, torch.Tensor]:
    """The side of a square grid of ``num_nodes`` and each node's (row, col). Raises a ValueError,
    saying that ``what`` needs a square grid, when ``num_nodes`` is not a square number."""
    side = math.isqrt(num_nodes)
    if side * side != num_nodes:
        raise ValueError(f"{what} need a square grid of nodes (a square number of nodes), got {num_nodes} nodes")
    nodes = torch.arange(num_nodes)
    return side, nodes // side, nodes % side


def grid_offset_index(num_nodes: int) -> tuple[torch.Tensor, int]:
    """For nodes on a square grid, row-major: ``index[i, j]``, the id of parent j's offset (dy, dx)
    from node i among the ``(2 * side - 1) ** 2`` offsets a grid has, and that count."""
    side, row, col = grid_cells(num_nodes, "relative positions")
    dy = row[None, :] - row[:, None] + side - 1
    dx = col[None, :] - col[:, None] + side - 1
    return dy * (2 * side - 1) + dx, (2 * side - 1) ** 2


def grid_window_index(num_nodes: int, window: int) -> tuple[torch.Tensor, torch.Tensor]:
    """For nodes on a square grid, row-major: ``index[i, w]``, the id of the cell at slot w of the
    ``window`` x ``window`` window centred on node i (row-major; 0 where off the grid), and
    ``valid[i, w]``, whether that cell is on the grid."""
    side, row, col = grid_cells(num_nodes, "parent windows")
    half = window // 2
    offsets = torch.arange(-half, half + 1)
    row = row[:, None, None] + offsets[None, :, None]  # (N, k, 1)
    col = col[:, None, None] + offsets[None, None, :]  # (N, 1, k)
    valid = ((row >= 0) & (row < side) & (col >= 0) & (col < side)).reshape(num_nodes, -1)
    index = (row.clamp(0, side - 1) * side + col.clamp(0, side - 1)).reshape(num_nodes, -1)
    return torch.where(valid, index, torch.zeros_like(index)), valid


class ParentWindowBlock(nn.Module):
    """A node reads the ``window`` x ``window`` cells around it at once: each cell's input
    embedding, normalised and projected to a quarter of the width (a masked parent replaced by the
    constant, its own cell always seen, a cell off the grid by a learned pad), concatenated in
    window order, with the action, through a two-layer MLP (``hidden`` wide; the transition makes
    it twice its width, which keeps the released models under 10 MB).
    The same weights serve every cell: a convolution whose inputs the graph masks, so a node can
    compute any function of its neighbours' configuration, where an attention layer sums what it
    reads."""

    def __init__(self, dim: int, window: int, hidden: int, num_nodes: int) -> None:
        super().__init__()
        index, valid = grid_window_index(num_nodes, window)
        self.register_buffer("index", index, persistent=False)  # (N, W) parent ids (0 off the grid)
        self.register_buffer("valid", valid, persistent=False)  # (N, W) inside the grid
        self.register_buffer("centre", torch.arange(index.shape[1]) == index.shape[1] // 2, persistent=False)
        self.register_buffer("child", torch.arange(num_nodes).unsqueeze(1), persistent=False)  # (N, 1)
        cell = max(dim // 4, 1)
        self.norm = nn.LayerNorm(dim)
        self.reduce = nn.Linear(dim, cell)
        self.pad = nn.Parameter(torch.randn(cell) * 0.02)
        self.inp = nn.Linear(window * window * cell, hidden)
        self.action = nn.Linear(dim, hidden, bias=False)
        self.out = nn.Linear(hidden, dim)

    def forward(
        self,
        h: torch.Tensor,  # (B, N, D) node states
        parents: torch.Tensor,  # (B, N, D) input embeddings
        action_vec: torch.Tensor,  # (B, D)
        constant: torch.Tensor,  # (D,) replaces a masked parent
        adjacency: torch.Tensor,  # (B, N_parent, N_child) in [0, 1]
        repeats: int = 1,
    ) -> torch.Tensor:
        """``repeats`` > 1: rows come in runs of ``repeats`` with the same ``parents`` and
        ``adjacency`` (one example under every action, as retrieval by transition asks): what the
        window reads is computed once per run, and only the action's part per row (the runs are
        not checked: :meth:`CausalTransition.forward` checks the batch divides)."""
        if repeats > 1:
            parents, adjacency = parents[::repeats], adjacency[::repeats]
        memory = self.reduce(self.norm(parents))[:, self.index]  # (B, N, W, D / 4)
        mask = adjacency[:, self.index, self.child].to(memory.dtype)  # (B, N, W): [b, i, w] = edge index[i, w] -> i
        mask = torch.where(self.centre, torch.ones_like(mask), mask).unsqueeze(-1)
        seen = mask * memory + (1.0 - mask) * self.reduce(self.norm(constant))
        window = torch.where(self.valid.unsqueeze(-1), seen, self.pad.to(seen.dtype))
        read = self.inp(rearrange(window, "b n w d -> b n (w d)"))
        if repeats > 1:
            read = read.repeat_interleave(repeats, 0)
        hidden = read + self.action(action_vec).unsqueeze(1)
        return h + self.out(F.gelu(hidden))
