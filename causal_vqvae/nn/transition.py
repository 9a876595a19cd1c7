"""The structural equations: given the current codes and an action, predict the new code of every
intervened node from its parents; every other node keeps its code exactly.

Each node's state starts from its own code, its position and the action embedding (so the
prediction depends on the action, and the action embedding gets gradients). Every layer, a node's
state attends over

- its parents' *input* embeddings (code + position), never over other nodes' updated states: a
  second layer over updated states would leak grandparents, and "no edge" must mean "no
  dependence";
- an always-visible action token.

A parent j of node i enters with its mask value m = adjacency[j, i]: its key/value is
``m * kv(parent) + (1 - m) * kv(constant)``. With a 0/1 mask (straight-through in training, hard at
evaluation) a masked parent is *replaced* by a learned constant, so the output of a node with no
parents is the same whatever the other nodes' codes are, while the mask still receives gradient.
With a parent window (``window``, grid layout), a node first reads the k x k cells around it at
once, each in its own slot, through an MLP (:class:`~.window.ParentWindowBlock`), with the same masking:
attention sums its parents' values, which relative positions weigh but do not place, while the
window keeps each parent where it is.
The scores and outputs are computed densely over all N nodes (no N x N x D tensor, but for the
offset vectors of ``position="relative_kv"``, one per layer).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from .compiling import eager
from .graph import CausalGraph, DualAscent, GraphNoise, node_code_offsets
from .layers import FeedForward
from .seeding import DeviceGenerators
from .window import ParentWindowBlock, grid_offset_index

__all__ = [
    "INTERVENTIONS",
    "TRANSITION_POSITIONS",
    "TransitionOutput",
    "TransitionLoss",
    "ParentAttentionBlock",
    "CausalTransition",
    "mixture_nll",
    "sparsity_budgets",
    "transition_loss",
]


# What an intervened node's equation may output: "change", a code other than its current one;
# "resample", any code (see ModelConfig.intervention).
INTERVENTIONS = ("change", "resample")
# How an equation knows where its node and parents are (see ModelConfig.transition_position).
TRANSITION_POSITIONS = ("absolute", "relative", "relative_kv")
# The logit of an intervened node's current code under "change": far below any learned logit, so its
# probability is 0 in float32, and finite, so that logits can still be subtracted and compared.
EXCLUDED_LOGIT = -1e4


@dataclass(frozen=True)
class TransitionOutput:
    logits: torch.Tensor  # (B, N, K) logits over the node's codes (used where intervened); with
    # intervention "change", EXCLUDED_LOGIT at the current code
    intervened: torch.Tensor  # (B, N) 0/1 values (straight-through gradient when sampled)
    predicted_codes: torch.Tensor  # (B, N) CausalTransition.read_codes where intervened, the current code elsewhere
    target_logits: torch.Tensor  # (B, N) intervention-target logits
    adjacency: torch.Tensor  # (B, N, N) mask used, [b, j, i] = j is a parent of i


@dataclass(frozen=True)
class TransitionLoss:
    loss: torch.Tensor  # () nll + equation_weight * equation_nll + sparsity
    nll: torch.Tensor  # () mean mixture NLL of the target codes
    equation_nll: torch.Tensor  # () cross-entropy of the logits vs the target codes over every node, the
    # nodes whose code stays weighted by ``kept_weight`` (summed, divided by all nodes)
    sparsity: torch.Tensor  # () the sparsity term added (penalty or Lagrangian; 0 in "none")
    expected_targets: torch.Tensor  # (A,) expected intervened nodes per action
    target_statistics: torch.Tensor  # (2, A) summed over examples: expected intervened nodes, examples
    expected_parents: torch.Tensor  # (N,) expected parents per node
    target_budget: float
    adjacency_budget: float
    node_accuracy: torch.Tensor  # () fraction of nodes whose predicted code equals the target
    exact: torch.Tensor  # () fraction of examples with every node right
    intervened_fraction: torch.Tensor  # () mean of the intervention mask
    output: TransitionOutput
    edit_mse: torch.Tensor | None = None  # () the decoded edit's pixel MSE, where trained with it
    # (ModelConfig.edit_loss_weight; added to ``loss`` by CausalVQVAE.transition_loss)


class ParentAttentionBlock(nn.Module):
    """Node states attend over their (masked) parents' input embeddings and the action token."""

    def __init__(self, dim: int, heads: int, mlp_ratio: int, num_offsets: int = 0, offset_kv: bool = False) -> None:
        super().__init__()
        self.heads = heads
        # One learned score per head and parent offset (relative positions; see CausalTransition),
        # and with ``offset_kv`` a learned vector per offset added to the parent's key and value.
        self.offset_bias = nn.Parameter(torch.zeros(heads, num_offsets)) if num_offsets else None
        self.offset_key = nn.Parameter(torch.randn(num_offsets, dim) * 0.02) if offset_kv else None
        self.offset_value = nn.Parameter(torch.randn(num_offsets, dim) * 0.02) if offset_kv else None
        self.scale = (dim // heads) ** -0.5
        self.norm_query = nn.LayerNorm(dim)
        self.norm_memory = nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, dim)
        self.to_k = nn.Linear(dim, dim)
        self.to_v = nn.Linear(dim, dim)
        self.out = nn.Linear(dim, dim)
        self.norm_ff = nn.LayerNorm(dim)
        self.ff = FeedForward(dim, mlp_ratio)

    def forward(
        self,
        h: torch.Tensor,  # (B, N, D) node states
        parents: torch.Tensor,  # (B, N, D) input embeddings of the nodes as parents
        extra: torch.Tensor,  # (B, E, D) always-visible tokens (the action)
        constant: torch.Tensor,  # (D,) replaces a masked parent
        mask: torch.Tensor,  # (B, 1, N_child, N_parent) in [0, 1]
        offset_index: torch.Tensor | None = None,  # (N_child, N_parent) long: each pair's offset (relative)
    ) -> torch.Tensor:
        heads = self.heads
        q = rearrange(self.to_q(self.norm_query(h)), "b i (h d) -> b h i d", h=heads)
        memory = self.norm_memory(parents)
        k = rearrange(self.to_k(memory), "b j (h d) -> b h j d", h=heads)
        v = rearrange(self.to_v(memory), "b j (h d) -> b h j d", h=heads)
        constant = self.norm_memory(constant)
        k_const = rearrange(self.to_k(constant), "(h d) -> h d", h=heads)
        v_const = rearrange(self.to_v(constant), "(h d) -> h d", h=heads)
        extra = self.norm_memory(extra)
        k_extra = rearrange(self.to_k(extra), "b e (h d) -> b h e d", h=heads)
        v_extra = rearrange(self.to_v(extra), "b e (h d) -> b h e d", h=heads)

        scores_parent = torch.einsum("bhid,bhjd->bhij", q, k) * self.scale
        if self.offset_bias is not None:
            scores_parent = scores_parent + self.offset_bias[:, offset_index]  # (H, N, N) broadcast over B
        if self.offset_key is not None:
            key_offset = rearrange(self.offset_key[offset_index], "i j (h d) -> h i j d", h=heads)
            scores_parent = scores_parent + torch.einsum("bhid,hijd->bhij", q, key_offset) * self.scale
        scores_const = torch.einsum("bhid,hd->bhi", q, k_const) * self.scale
        scores_parent = mask * scores_parent + (1.0 - mask) * scores_const.unsqueeze(-1)
        scores_extra = torch.einsum("bhid,bhed->bhie", q, k_extra) * self.scale
        num_parents = scores_parent.shape[-1]
        attn = torch.softmax(torch.cat([scores_parent, scores_extra], dim=-1).float(), dim=-1)
        attn_parent, attn_extra = attn[..., :num_parents], attn[..., num_parents:]

        seen = (attn_parent * mask).to(v.dtype)
        out = (
            torch.einsum("bhij,bhjd->bhid", seen, v)
            + (attn_parent * (1.0 - mask)).sum(-1, keepdim=True).to(v.dtype) * v_const.unsqueeze(1)
            + torch.einsum("bhie,bhed->bhid", attn_extra.to(v.dtype), v_extra)
        )
        if self.offset_value is not None:
            value_offset = rearrange(self.offset_value[offset_index], "i j (h d) -> h i j d", h=heads)
            out = out + torch.einsum("bhij,hijd->bhid", seen, value_offset)
        h = h + self.out(rearrange(out, "b h i d -> b i (h d)"))
        return h + self.ff(self.norm_ff(h))


class CausalTransition(nn.Module):
    """Structural equations over N nodes of K codes each, driven by ``graph``.

    Args:
        graph: the :class:`CausalGraph` (adjacency and intervention targets); owned by this module.
        num_codebooks, codes_per_node: code layout (node n uses codebook n // (N / G)).
        dim, layers, heads, mlp_ratio: the attention stack.
        seed: seed of the default sampling generator (one per device, created on first use).
        intervention: "change" (an intervened node's equation gives a code other than its current
            one: its current code's logit is EXCLUDED_LOGIT) or "resample" (any code).
        keep_threshold: an intervened node keeps its current code only when the equation gives it at
            least this probability, else takes the most likely other code; None: the most likely
            code (see ModelConfig.keep_threshold). Used for ``predicted_codes`` alone.
        position: "absolute" (a learned embedding per node, added to its input), "relative" (the
            nodes are a square grid; no embedding per node, and each layer scores a parent by its
            offset from the node: the same weights in every cell) or "relative_kv" ("relative", and
            a learned vector per offset added to each parent's key and value); see
            ModelConfig.transition_position.
        window: 0 (none) or an odd width: a :class:`~.window.ParentWindowBlock` over that window of cells
            before the attention layers (grid only; see ModelConfig.transition_window).
    """

    def __init__(
        self,
        graph: CausalGraph,
        num_codebooks: int,
        codes_per_node: int,
        dim: int = 256,
        layers: int = 4,
        heads: int = 8,
        mlp_ratio: int = 4,
        seed: int = 0,
        intervention: str = "resample",
        keep_threshold: float | None = None,
        position: str = "absolute",
        window: int = 0,
    ) -> None:
        super().__init__()
        if intervention not in INTERVENTIONS:
            raise ValueError(f"intervention must be one of {INTERVENTIONS}, got {intervention!r}")
        if position not in TRANSITION_POSITIONS:
            raise ValueError(f"position must be one of {TRANSITION_POSITIONS}, got {position!r}")
        if window and (window < 3 or window % 2 == 0):
            raise ValueError(f"window must be 0 (none) or an odd width >= 3, got {window}")
        self.intervention = intervention
        self.keep_threshold = keep_threshold
        self.graph = graph
        self.num_nodes = graph.num_nodes
        self.num_actions = graph.num_actions
        self.num_codebooks = num_codebooks
        self.codes_per_node = codes_per_node
        self.seed = seed
        self._generators = DeviceGenerators(seed)
        num_nodes = graph.num_nodes
        self.register_buffer("offsets", node_code_offsets(num_nodes, num_codebooks, codes_per_node), persistent=False)
        self.register_buffer("node_group", self.offsets // codes_per_node, persistent=False)
        self.code_embed = nn.Embedding(num_codebooks * codes_per_node, dim)
        num_offsets = 0
        if position in ("relative", "relative_kv"):
            self.position = None
            offset_index, num_offsets = grid_offset_index(num_nodes)
            self.register_buffer("offset_index", offset_index, persistent=False)
        else:
            self.position = nn.Parameter(torch.randn(num_nodes, dim) * 0.02)
            self.offset_index = None
        self.action_embed = nn.Embedding(graph.num_actions, dim)
        self.action_type = nn.Parameter(torch.randn(dim) * 0.02)
        self.constant = nn.Parameter(torch.randn(dim) * 0.02)
        self.window = ParentWindowBlock(dim, window, 2 * dim, num_nodes) if window else None
        self.blocks = nn.ModuleList(ParentAttentionBlock(dim, heads, mlp_ratio, num_offsets, position == "relative_kv")
                                    for _ in range(layers))
        self.norm = nn.LayerNorm(dim)
        self.head_weight = nn.Parameter(torch.randn(num_codebooks, codes_per_node, dim) * dim**-0.5)
        self.head_bias = nn.Parameter(torch.zeros(num_codebooks, codes_per_node))

    def generator(self, device: torch.device | str) -> torch.Generator:
        """The default sampling generator for ``device`` (seeded from ``seed`` on first use)."""
        return self._generators(device)

    def _head(self, h: torch.Tensor) -> torch.Tensor:
        """(B, N, D) -> (B, N, K) logits over each node's own codebook."""
        if self.num_codebooks == 1:
            return F.linear(h, self.head_weight[0], self.head_bias[0])
        weight = self.head_weight[self.node_group]  # (N, K, D)
        return torch.einsum("bnd,nkd->bnk", h, weight) + self.head_bias[self.node_group]

    def read_codes(self, logits: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        """(B, N) the code each node takes if intervened: its equation's most likely code, or with
        ``keep_threshold`` its current code when the equation gives that code at least that
        probability, else its most likely other code."""
        if self.keep_threshold is None:
            return logits.argmax(-1)
        p_keep = torch.softmax(logits.float(), -1).gather(-1, codes.unsqueeze(-1)).squeeze(-1)
        other = logits.scatter(-1, codes.unsqueeze(-1), EXCLUDED_LOGIT).argmax(-1)
        return torch.where(p_keep >= self.keep_threshold, codes, other)

    # Eager inside a compiled caller: dynamo cannot trace a torch.Generator (each draw would split
    # the caller's graph); drawn here, first, the noise enters the rest of the step as tensors.
    @eager
    def draw_noise(self, batch: int, device: torch.device, generator: torch.Generator | None = None) -> GraphNoise:
        """The uniform draws of one sampled pair of graph masks for ``batch`` examples, made with
        ``generator`` (default: this module's own on ``device``): what :meth:`forward` draws when it
        samples and is given no ``noise``."""
        return self.graph.draw_noise(batch, generator or self.generator(device), torch.device(device))

    def forward(
        self,
        codes: torch.Tensor,
        action: torch.Tensor,
        sample: bool | None = None,
        generator: torch.Generator | None = None,
        noise: GraphNoise | None = None,
        repeats: int = 1,
    ) -> TransitionOutput:
        """codes (B, N) long, action (B,) long. ``sample`` (default: ``self.training``) draws the
        graph masks with ``generator`` (on the codes' device; default: this module's own, seeded
        identically on every rank, so under DDP pass a per-rank generator), or takes them from
        ``noise`` (:meth:`draw_noise`) when given; otherwise the masks are the deterministic
        thresholds and ``noise`` is not used. ``repeats`` > 1 (deterministic masks only): the
        caller promises that ``codes`` come in runs of ``repeats`` equal rows (one example under
        several actions, as :func:`~.retrieval.score_actions` makes them; not checked), and what
        does not depend on the action (the window's reading) is computed once per run."""
        batch = codes.shape[0]
        sample = self.training if sample is None else sample
        if repeats > 1 and sample:
            raise ValueError("repeats > 1 needs deterministic graph masks (sample=False): sampled masks differ by row")
        if repeats > 1 and batch % repeats:
            raise ValueError(f"repeats {repeats} must divide the batch of {batch} rows (runs of equal codes)")
        if sample and noise is None:
            noise = self.draw_noise(batch, codes.device, generator)

        parents = self.code_embed(codes + self.offsets)  # (B, N, D)
        if self.position is not None:
            parents = parents + self.position
        action_vec = self.action_embed(action)  # (B, D)
        h = parents + rearrange(action_vec, "b d -> b 1 d")
        action_token = rearrange(action_vec + self.action_type, "b d -> b 1 d")
        adjacency = self.graph.adjacency_mask(  # (B, N_parent, N_child)
            batch, sample, uniform=noise.adjacency if sample else None
        )
        mask = rearrange(adjacency, "b j i -> b 1 i j")
        if self.window is not None:
            h = self.window(h, parents, action_vec, self.constant, adjacency, repeats)
        for block in self.blocks:
            h = block(h, parents, action_token, self.constant, mask, self.offset_index)
        logits = self._head(self.norm(h))
        if self.intervention == "change":
            logits = logits.scatter(-1, codes.unsqueeze(-1), EXCLUDED_LOGIT)

        target_logits = self.graph.targets(codes, action)
        intervened = self.graph.target_mask(target_logits, sample, uniform=noise.targets if sample else None)
        predicted = torch.where(intervened > 0.5, self.read_codes(logits, codes), codes)
        return TransitionOutput(
            logits=logits,
            intervened=intervened,
            predicted_codes=predicted,
            target_logits=target_logits,
            adjacency=adjacency,
        )


def mixture_nll(output: TransitionOutput, codes: torch.Tensor, target_codes: torch.Tensor, eps: float) -> torch.Tensor:
    """(B, N) NLL of ``target_codes`` under intervened * softmax(logits) + (1 - intervened) * onehot(codes).

    The mixture is what makes the intervention mask learnable: keeping a node whose target code
    changed costs -log(eps); intervening on a node costs whatever the structural equation misses.
    ``eps`` floors the probability (loss <= -log(eps), bounded straight-through gradient)."""
    log_probs = torch.log_softmax(output.logits.float(), dim=-1)
    p_model = log_probs.gather(-1, target_codes.unsqueeze(-1)).squeeze(-1).exp()
    p_keep = (target_codes == codes).float()
    m = output.intervened.float()
    p = m * p_model + (1.0 - m) * p_keep
    return -torch.log(eps + (1.0 - eps) * p)


def sparsity_budgets(
    target_dual: DualAscent | None, adjacency_dual: DualAscent | None, progress: float
) -> tuple[float, float]:
    """(target, adjacency) budgets at training ``progress``; NaN for a missing dual."""
    return (
        target_dual.budget_at(progress) if target_dual is not None else float("nan"),
        adjacency_dual.budget_at(progress) if adjacency_dual is not None else float("nan"),
    )


def transition_loss(
    output: TransitionOutput,
    codes: torch.Tensor,
    target_codes: torch.Tensor,
    action: torch.Tensor,
    graph: CausalGraph,
    *,
    eps: float,
    sparsity_mode: str,
    equation_weight: float = 1.0,
    target_dual: DualAscent | None = None,
    adjacency_dual: DualAscent | None = None,
    target_penalty_weight: float = 0.0,
    adjacency_penalty_weight: float = 0.0,
    progress: float = 1.0,
    budgets: tuple[float, float] | None = None,
    kept_weight: float = 1.0,
) -> TransitionLoss:
    """Mixture NLL, equation cross-entropy and the sparsity term of both graphs.

    The equation term trains the logits on every node whatever its mask: the mixture alone gives a
    node's equation gradient only while the node is intervened, so a mask that closes early would
    starve its equation and, with it, the gradient that could reopen the mask.

    "constraint": mean(lambda * (expected - budget(progress))) / N for targets per action and for
    parents per node (update the multipliers afterwards with ``DualAscent.update``); "penalty":
    weights times the mean expected counts; "none": no sparsity term (the expected counts are still
    reported). ``budgets``: the (target, adjacency) budgets at ``progress``, when the caller has
    them already (``CausalVQVAE.transition_loss`` computes them before its compiled part); default:
    the duals' ``budget_at(progress)``. ``kept_weight``: the weight of the equation term on the
    nodes whose code stays (those whose code changes weigh 1; the sum is divided by all nodes): 1 is
    the plain cross-entropy, 0 counts the changed nodes alone (intervention "change", whose equations
    never keep a code; see ModelConfig.kept_equation_weight)."""
    nll = mixture_nll(output, codes, target_codes, eps).mean()
    logits = rearrange(output.logits.float(), "b n k -> b k n")
    if kept_weight == 1.0:
        equation_nll = F.cross_entropy(logits, target_codes)
    else:
        per_node = F.cross_entropy(logits, target_codes, reduction="none")  # (B, N)
        weight = torch.where(target_codes == codes, kept_weight, 1.0)
        equation_nll = (weight * per_node).sum() / target_codes.numel()
    target_statistics = graph.target_statistics(output.target_logits, action)
    expected_targets = graph.pooled_expected_targets(target_statistics)
    expected_parents = graph.expected_parents()
    if budgets is None:
        budgets = sparsity_budgets(target_dual, adjacency_dual, progress)
    target_budget, adjacency_budget = budgets
    if sparsity_mode == "constraint":
        if target_dual is None or adjacency_dual is None:
            raise ValueError("sparsity_mode 'constraint' needs target_dual and adjacency_dual")
        sparsity = target_dual.lagrangian(expected_targets, target_budget) + adjacency_dual.lagrangian(
            expected_parents, adjacency_budget
        )
    elif sparsity_mode == "penalty":
        sparsity = target_penalty_weight * expected_targets.mean() + adjacency_penalty_weight * expected_parents.mean()
    elif sparsity_mode == "none":
        sparsity = nll.new_zeros(())
    else:
        raise ValueError(f"unknown sparsity_mode {sparsity_mode!r}; use 'constraint', 'penalty' or 'none'")
    correct = (output.predicted_codes == target_codes).float()
    return TransitionLoss(
        loss=nll + equation_weight * equation_nll + sparsity,
        nll=nll,
        equation_nll=equation_nll,
        sparsity=sparsity,
        expected_targets=expected_targets,
        target_statistics=target_statistics,
        expected_parents=expected_parents,
        target_budget=target_budget,
        adjacency_budget=adjacency_budget,
        node_accuracy=correct.mean(),
        exact=correct.min(-1).values.mean(),
        intervened_fraction=output.intervened.float().mean(),
        output=output,
    )
