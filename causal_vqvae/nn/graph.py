"""The learned causal graph: node -> node adjacency and action -> node intervention targets, their
relaxed-Bernoulli masks, and the mechanism-sparsity constraint solved by dual ascent.

Conventions:
- ``adjacency[j, i] = 1`` means node j is a parent of node i. The diagonal is always 0: a node's
  own current code enters its structural equation through its query (see ``transition.py``), the
  adjacency governs the other nodes only. Parents are read from the *current* codes (the graph links
  time t to t + 1), so no acyclicity constraint is needed.
- ``targets[a, n] = 1`` means action a intervenes on node n.
- Training masks are straight-through Gumbel-sigmoid samples drawn with an explicit generator;
  evaluation masks are the deterministic ``sigmoid(logit) > 0.5``: nothing is sampled at evaluation.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from einops import rearrange, repeat
from torch import nn

from .compiling import eager
from .layers import TransformerBlock
from .window import grid_cells

__all__ = [
    "GraphNoise",
    "gumbel_sigmoid",
    "hard_threshold",
    "linear_budget",
    "node_code_offsets",
    "DualAscent",
    "StateTargetHead",
    "CausalGraph",
    "grid_neighbours",
]


def gumbel_sigmoid(
    logits: torch.Tensor,
    temperature: float,
    generator: torch.Generator | None,
    hard: bool = True,
    uniform: torch.Tensor | None = None,
) -> torch.Tensor:
    """Relaxed Bernoulli sample of ``logits`` (float32). ``hard``: the value is the 0/1 sample,
    the gradient that of the relaxed sample (straight-through). ``uniform`` (the shape of
    ``logits``, in [0, 1)): the draw to use, already made; default: drawn here with ``generator``."""
    if uniform is None:
        uniform = torch.rand(logits.shape, generator=generator, device=logits.device)
    elif uniform.shape != logits.shape:
        raise ValueError(f"uniform noise of shape {tuple(uniform.shape)} for logits of shape {tuple(logits.shape)}")
    uniform = uniform.clamp(1e-6, 1.0 - 1e-6)
    noise = uniform.log() - torch.log1p(-uniform)  # logistic noise
    soft = torch.sigmoid((logits.float() + noise) / temperature)
    if not hard:
        return soft
    return (soft > 0.5).float() + (soft - soft.detach())  # exactly 0/1 in value


class GraphNoise(NamedTuple):
    """The uniform draws behind one straight-through sample of both graph masks.

    Drawing them first, eagerly, lets a compiled step take them as inputs: dynamo cannot trace a
    ``torch.Generator`` argument, and each draw inside a compiled function would split its graph.
    ``CausalGraph.draw_noise`` makes them in the order that sampling without them would."""

    adjacency: torch.Tensor  # (B, N, N) for adjacency_mask
    targets: torch.Tensor  # (B, N) for target_mask


def hard_threshold(logits: torch.Tensor) -> torch.Tensor:
    """Deterministic evaluation mask: sigmoid(logit) > 0.5, as float 0/1."""
    return (logits > 0).float()


def linear_budget(progress: float, start: float, end: float) -> float:
    """Budget lowered linearly from ``start`` to ``end`` over the first half of training
    (``progress`` in [0, 1]), then held at ``end``."""
    fraction = min(max(progress, 0.0), 0.5) / 0.5
    return start + (end - start) * fraction


def node_code_offsets(num_nodes: int, num_codebooks: int, codes_per_node: int) -> torch.Tensor:
    """(N,) offset of node n's codes in a (G * K)-row table: node n uses codebook n // (N / G)."""
    if num_nodes % num_codebooks:
        raise ValueError(f"{num_nodes} nodes cannot be split into {num_codebooks} codebooks")
    return torch.arange(num_nodes) // (num_nodes // num_codebooks) * codes_per_node


class DualAscent(nn.Module):
    """Lagrange multipliers for ``expected <= budget`` constraints (one per entry).

    The multipliers are buffers, so they live in the state dict. Loss term: ``lagrangian(expected,
    budget)`` = mean(lambda * (expected - budget)) / scale with lambda fixed; after the optimiser
    step call ``update``: lambda <- max(0, lambda + lr * (expected - budget)), and lambda <- 0
    wherever the constraint holds.

    ``scale`` (the node count in the model) puts lambda in the units of a per-node mean loss: the
    transition NLL is a mean over nodes and examples, so an unnormalised sum over counts would let a
    multiplier that grew while the budget was out of reach outweigh the NLL of the nodes that truly
    change and close their masks too.
    """

    def __init__(
        self, num_constraints: int, lr: float, budget: float, budget_start: float, scale: float = 1.0
    ) -> None:
        super().__init__()
        self.lr = lr
        self.budget = budget
        self.budget_start = budget_start
        self.scale = scale
        self.register_buffer("multipliers", torch.zeros(num_constraints))

    # Eager even inside a compiled caller: a graph traced by inductor (torch 2.14, CPU) returned the
    # budget of the progress it was traced at for every later progress, so dual ascent went wrong.
    @eager
    def budget_at(self, progress: float) -> float:
        return linear_budget(progress, self.budget_start, self.budget)

    def lagrangian(self, expected: torch.Tensor, budget: float) -> torch.Tensor:
        return (self.multipliers * (expected.float() - budget)).mean() / self.scale

    @torch.no_grad()
    def update(self, expected: torch.Tensor, budget: float) -> None:
        violation = expected.detach().float() - budget
        self.multipliers.copy_(
            torch.where(violation > 0, self.multipliers + self.lr * violation, torch.zeros_like(violation))
        )


class StateTargetHead(nn.Module):
    """State-dependent intervention-target logits (B, N) from action + node code + node position
    embeddings, with ``context_layers`` self-attention layers over the nodes (so a cell can learn
    "next to the object"). The last layer starts at zero: initially only the global logits count.

    The output is ``bound * tanh(raw / bound)``: a head shared by all nodes, pushed down by every
    unchanged node, could otherwise drive a node's logit so far negative that the sigmoid saturates
    and the straight-through gradient can no longer reopen it; bounded, the per-(action, node)
    global logits keep the last word."""

    def __init__(
        self,
        num_nodes: int,
        num_actions: int,
        num_codebooks: int,
        codes_per_node: int,
        dim: int,
        context_layers: int,
        mlp_ratio: int,
        bound: float = 5.0,
    ) -> None:
        super().__init__()
        self.bound = bound
        self.register_buffer("offsets", node_code_offsets(num_nodes, num_codebooks, codes_per_node), persistent=False)
        self.code_embed = nn.Embedding(num_codebooks * codes_per_node, dim)
        self.position = nn.Parameter(torch.randn(num_nodes, dim) * 0.02)
        self.action_embed = nn.Embedding(num_actions, dim)
        self.blocks = nn.ModuleList(TransformerBlock(dim, 4, mlp_ratio) for _ in range(context_layers))
        self.norm = nn.LayerNorm(dim)
        self.out = nn.Linear(dim, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, codes: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        h = self.code_embed(codes + self.offsets) + self.position + rearrange(self.action_embed(action), "b d -> b 1 d")
        for block in self.blocks:
            h = block(h)
        raw = rearrange(self.out(self.norm(h)), "b n 1 -> b n").float()
        return self.bound * torch.tanh(raw / self.bound)


def grid_neighbours(num_nodes: int) -> torch.Tensor:
    """(N, N) bool: [j, i] when cells j and i of the square grid of N cells (row-major) are one
    step apart, diagonals included (the 8 around a cell; fewer at the border)."""
    _, rows, cols = grid_cells(num_nodes, "a grid's neighbours")
    distance = torch.maximum((rows[:, None] - rows[None]).abs(), (cols[:, None] - cols[None]).abs())
    return distance == 1


class CausalGraph(nn.Module):
    """Adjacency logits (N, N) over nodes and intervention-target logits (A, N) per action,
    optionally plus a state-dependent target term."""

    def __init__(
        self,
        num_nodes: int,
        num_actions: int,
        num_codebooks: int = 1,
        codes_per_node: int = 64,
        adjacency_init_logit: float = 5.0,
        target_init_logit: float = 5.0,
        temperature: float = 1.0,
        local_parent_logit: float | None = None,
        state_dependent_targets: bool = False,
        head_dim: int = 64,
        context_layers: int = 1,
        mlp_ratio: int = 4,
        state_bound: float = 5.0,
    ) -> None:
        super().__init__()
        self.num_nodes = num_nodes
        self.num_actions = num_actions
        self.temperature = temperature
        adjacency = torch.full((num_nodes, num_nodes), float(adjacency_init_logit))
        if local_parent_logit is not None:
            adjacency[grid_neighbours(num_nodes)] = float(local_parent_logit)
        self.adjacency_logits = nn.Parameter(adjacency)
        self.target_logits = nn.Parameter(torch.full((num_actions, num_nodes), float(target_init_logit)))
        self.register_buffer("off_diagonal", 1.0 - torch.eye(num_nodes), persistent=False)
        self.state_head = (
            StateTargetHead(
                num_nodes, num_actions, num_codebooks, codes_per_node, head_dim, context_layers, mlp_ratio, state_bound
            )
            if state_dependent_targets
            else None
        )

    def edge_logits(self) -> tuple[nn.Parameter, nn.Parameter]:
        """The per-edge logits (adjacency and global intervention targets), which training gives
        their own learning rate (``TrainConfig.graph_lr_scale``); the state-dependent head is a
        network like the others and is not among them."""
        return self.adjacency_logits, self.target_logits

    # ------------------------------------------------------------------ adjacency
    def adjacency_probs(self) -> torch.Tensor:
        """(N, N) sigmoid of the adjacency logits, zero diagonal."""
        return torch.sigmoid(self.adjacency_logits.float()) * self.off_diagonal

    def expected_parents(self) -> torch.Tensor:
        """(N,) expected number of parents of each node."""
        return self.adjacency_probs().sum(0)

    def hard_adjacency(self) -> torch.Tensor:
        """(N, N) evaluation adjacency, 0/1."""
        return hard_threshold(self.adjacency_logits) * self.off_diagonal

    @torch.no_grad()
    def adjacency_summary(self) -> dict[str, float]:
        """How decided the node -> node graph is: the parents per node that training samples
        (expected, from the probabilities) against those evaluation keeps (thresholded), and the
        spread of the edge probabilities. A budget met by shrinking every probability below 1/2,
        rather than by choosing edges, shows as many expected parents and no kept ones."""
        probs = self.adjacency_probs()[self.off_diagonal.bool()]
        quantiles = torch.quantile(probs, torch.tensor([0.5, 0.9, 0.99], device=probs.device)).tolist()
        num_nodes = self.off_diagonal.shape[0]
        return {
            "expected_parents_per_node": probs.sum().item() / num_nodes,
            "thresholded_parents_per_node": self.hard_adjacency().sum().item() / num_nodes,
            "edge_probability_median": quantiles[0],
            "edge_probability_p90": quantiles[1],
            "edge_probability_p99": quantiles[2],
            "edge_probability_max": probs.max().item(),
        }

    def draw_noise(self, batch: int, generator: torch.Generator | None, device: torch.device) -> GraphNoise:
        """The uniform draws of one sampled adjacency mask and target mask for ``batch`` examples,
        in the order in which :meth:`adjacency_mask` and :meth:`target_mask` would draw them."""
        n = self.num_nodes
        return GraphNoise(
            adjacency=torch.rand((batch, n, n), generator=generator, device=device),
            targets=torch.rand((batch, n), generator=generator, device=device),
        )

    def adjacency_mask(
        self,
        batch: int,
        sample: bool,
        generator: torch.Generator | None = None,
        uniform: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """(B, N, N) mask, one straight-through sample per example when ``sample`` (from ``uniform``,
        ``GraphNoise.adjacency``, when given), else the thresholded adjacency broadcast over the batch."""
        if not sample:
            return repeat(self.hard_adjacency(), "j i -> b j i", b=batch)
        logits = repeat(self.adjacency_logits, "j i -> b j i", b=batch)
        return gumbel_sigmoid(logits, self.temperature, generator, uniform=uniform) * self.off_diagonal

    # ------------------------------------------------------------------ intervention targets
    def targets(self, codes: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """(B, N) intervention-target logits for ``action`` (B,) in state ``codes`` (B, N)."""
        logits = self.target_logits[action]
        if self.state_head is not None:
            logits = logits + self.state_head(codes, action)
        return logits.float()

    def target_mask(
        self,
        target_logits: torch.Tensor,
        sample: bool,
        generator: torch.Generator | None = None,
        uniform: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """(B, N) intervention mask: straight-through sample (from ``uniform``, ``GraphNoise.targets``,
        when given) or deterministic threshold."""
        if sample:
            return gumbel_sigmoid(target_logits, self.temperature, generator, uniform=uniform)
        return hard_threshold(target_logits)

    def expected_targets(self, target_logits: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """(A,) expected intervened nodes per action: the batch mean over the examples of each
        action (state-dependent logits), the global logits for actions absent from the batch."""
        return self.pooled_expected_targets(self.target_statistics(target_logits, action))

    def target_statistics(self, target_logits: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """(2, A) per action: the sum over the batch's examples of their expected intervened nodes,
        and the number of those examples. Sums of these over batches (or DDP ranks) pool the
        batches exactly: :meth:`pooled_expected_targets` of the sum is the pooled batch's
        :meth:`expected_targets`, whatever each batch's count of each action."""
        per_example = torch.sigmoid(target_logits.float()).sum(-1)  # (B,)
        onehot = torch.zeros(action.shape[0], self.num_actions, device=action.device)
        onehot.scatter_(1, action.unsqueeze(-1), 1.0)  # (B, A)
        return torch.stack([(onehot * per_example.unsqueeze(-1)).sum(0), onehot.sum(0)])

    def pooled_expected_targets(self, statistics: torch.Tensor) -> torch.Tensor:
        """(A,) expected intervened nodes per action from :meth:`target_statistics` (2, A): the mean
        over the examples of each action, the global logits' for an action without examples."""
        sums, count = statistics
        global_expected = torch.sigmoid(self.target_logits.float()).sum(-1)
        return torch.where(count > 0, sums / count.clamp_min(1.0), global_expected)

    def intervention_map(self) -> torch.Tensor:
        """(A, N) evaluation targets of the global logits, 0/1 (state-independent part only)."""
        return hard_threshold(self.target_logits)
