"""Action retrieval: which action turned codes into target codes?

(a) By transition: run every action's transition in one batched pass (B -> B * A) and score each
    (``ModelConfig.retrieval_score``) by the mixture NLL of the target codes with the intervention
    masks at their probabilities, the masks marginalised out ("marginal_nll"); by the distance from
    the mixture's expected code vectors to the target's, summed over nodes ("code_distance"); or by
    the mixture NLL with thresholded masks ("nll"); probabilities are softmax(-score / T).
    Deterministic: nothing is sampled (the adjacency is thresholded, and so are the intervention
    masks except in "marginal_nll", which weighs by their probabilities).
(b) By a learned head -> logits over actions: in the grid layout a small CNN over the pair of code
    grids, read as the quantizer's code vectors (:class:`ConvRetrievalHead`); in the tokens layout,
    which has no grid, a transformer over learned code embeddings (:class:`RetrievalHead`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from torch import nn

from .graph import node_code_offsets
from .layers import TransformerBlock
from .transition import CausalTransition, TransitionOutput, mixture_nll

__all__ = ["RETRIEVAL_SCORES", "RetrievalOutput", "score_actions", "output_scores", "marginal_intervention",
           "mixture_vectors", "code_distance", "scores_to_probs", "RetrievalHead", "ConvRetrievalHead"]

# How retrieval by transition scores an action (see output_scores).
RETRIEVAL_SCORES = ("marginal_nll", "code_distance", "nll")


@dataclass(frozen=True)
class RetrievalOutput:
    logits: torch.Tensor  # (B, A) higher = more likely (-score / T for the transition method)
    probs: torch.Tensor  # (B, A) softmax of logits
    action: torch.Tensor  # (B,) argmax
    scores: torch.Tensor | None  # (B, A) the retrieval score of each action (transition method), else None


def score_actions(
    transition: CausalTransition,
    codes: torch.Tensor,
    target_codes: torch.Tensor,
    eps: float = 1e-3,
    score: str = "nll",
    codebooks: torch.Tensor | None = None,
) -> torch.Tensor:
    """(B, A) score of each action applied to ``codes`` (B, N) against ``target_codes`` (B, N),
    lower is better; all A actions run in one batched, deterministic pass. ``score``:

    - "marginal_nll": the sum over nodes of the mixture NLL of the target codes with each node's
      intervention mask at its probability (:func:`marginal_intervention`): the NLL of the target
      codes under the model that training samples, the masks marginalised out, so that
      softmax(-score) is the posterior over actions under a uniform prior;
    - "nll": the mean over nodes of the mixture NLL of the target codes (:func:`mixture_nll`), with
      the thresholded masks;
    - "code_distance": the sum over nodes of :func:`code_distance`, the distance from the mixture's
      expected code vector to the target's in units of a typical wrong code, with ``codebooks``
      (G, K, D) the code vectors (the quantizer's ``embedding``)."""
    num_actions = transition.num_actions
    batch = codes.shape[0]
    codes_all = repeat(codes, "b n -> (b a) n", a=num_actions)
    targets_all = repeat(target_codes, "b n -> (b a) n", a=num_actions)
    actions = repeat(torch.arange(num_actions, device=codes.device), "a -> (b a)", b=batch)
    output = transition(codes_all, actions, sample=False, repeats=num_actions)
    scores = output_scores(output, codes_all, targets_all, score, eps, codebooks, transition.offsets)
    return rearrange(scores, "(b a) -> b a", a=num_actions)


def output_scores(
    output: TransitionOutput,
    codes: torch.Tensor,
    target_codes: torch.Tensor,
    score: str,
    eps: float,
    codebooks: torch.Tensor | None = None,
    offsets: torch.Tensor | None = None,
) -> torch.Tensor:
    """(B,) ``score`` of each transition in ``output`` (from ``codes``) against ``target_codes``
    (both (B, N)); see :func:`score_actions`. ``codebooks`` and ``offsets``
    (``CausalTransition.offsets``) for "code_distance"."""
    if score == "marginal_nll":
        return mixture_nll(marginal_intervention(output), codes, target_codes, eps).sum(-1)
    if score == "nll":
        return mixture_nll(output, codes, target_codes, eps).mean(-1)
    if score == "code_distance":
        if codebooks is None or offsets is None:
            raise ValueError("score 'code_distance' needs the codebooks (G, K, D), e.g. model.quantizer.embedding, "
                             "and the transition's node offsets")
        return code_distance(output, codes, target_codes, codebooks, offsets).sum(-1)
    raise ValueError(f"unknown retrieval score {score!r}; use one of {RETRIEVAL_SCORES}")


def marginal_intervention(output: TransitionOutput) -> TransitionOutput:
    """``output`` with each node's intervention mask at its probability, sigmoid(target logit),
    in place of the thresholded 0/1. Training samples the hard mask from Bernoulli(sigmoid(logit))
    (a straight-through Gumbel-sigmoid sample is 1 with that probability, at any temperature), so
    the mixture with these weights is the model's likelihood with the mask marginalised out.
    Deterministic: nothing is sampled."""
    return replace(output, intervened=torch.sigmoid(output.target_logits.float()))


def mixture_vectors(
    weights: torch.Tensor, intervened: torch.Tensor, codes: torch.Tensor, codebooks: torch.Tensor,
    offsets: torch.Tensor,
) -> torch.Tensor:
    """(B, N, D) each node's vector under the intervention mixture: ``sum_k weights_k e_k`` over its
    codebook where ``intervened`` (B, N) is 1, its current code's vector where it is 0 (values
    between mix the two). ``weights`` (B, N, K); ``codebooks`` (G, K, D); ``offsets`` (N,): node n's
    first row in the flattened (G * K, D) table (``CausalTransition.offsets``)."""
    codes_per_node = codebooks.shape[1]
    group = offsets // codes_per_node  # (N,)
    if codebooks.shape[0] == 1:
        predicted = weights @ codebooks[0]
    else:
        predicted = torch.einsum("bnk,nkd->bnd", weights, codebooks[group])
    kept = F.embedding(codes + offsets, rearrange(codebooks, "g k d -> (g k) d"))
    m = intervened.float().unsqueeze(-1)
    return m * predicted + (1.0 - m) * kept


def code_distance(
    output: TransitionOutput, codes: torch.Tensor, target_codes: torch.Tensor, codebooks: torch.Tensor,
    offsets: torch.Tensor,
) -> torch.Tensor:
    """(B, N) squared distance between the intervention mixture's expected code vector and the
    target code's vector, divided by the mean squared distance between two distinct codes of the
    node's codebook: 0 for a sure right code, about 1 for a sure wrong one. The expected vector is
    ``sum_k softmax(logits)_k e_k`` where the node is intervened and its current code's vector where
    it is kept. ``codebooks`` (G, K, D) with K >= 2; ``offsets`` (N,): node n's first row in the
    flattened (G * K, D) table (``CausalTransition.offsets``)."""
    codes_per_node = codebooks.shape[1]
    vectors = codebooks.detach().float()
    # mean over i != j of |e_i - e_j|^2 = 2 K / (K - 1) * (total variance of the codes)
    spread = 2.0 * codes_per_node / (codes_per_node - 1) * vectors.var(dim=1, unbiased=False).sum(-1)  # (G,)
    table = rearrange(vectors, "g k d -> (g k) d")
    group = offsets // codes_per_node  # (N,)
    probs = torch.softmax(output.logits.float(), dim=-1)  # (B, N, K)
    expected = mixture_vectors(probs, output.intervened, codes, vectors, offsets)
    distance = (expected - F.embedding(target_codes + offsets, table)).pow(2).sum(-1)
    return distance / spread[group].clamp_min(1e-12)


def scores_to_probs(scores: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """softmax(-score / T) over actions."""
    return torch.softmax(-scores / temperature, dim=-1)


class RetrievalHead(nn.Module):
    """Classifier on a pair of code grids: per node [e(x), e(x'), e(x') - e(x)] -> width, a CLS token,
    ``layers`` transformer blocks, logits over actions."""

    def __init__(
        self,
        num_nodes: int,
        num_actions: int,
        num_codebooks: int,
        codes_per_node: int,
        dim: int = 128,
        layers: int = 2,
        heads: int = 4,
        mlp_ratio: int = 4,
    ) -> None:
        super().__init__()
        self.register_buffer("offsets", node_code_offsets(num_nodes, num_codebooks, codes_per_node), persistent=False)
        self.code_embed = nn.Embedding(num_codebooks * codes_per_node, dim)
        self.pair = nn.Linear(3 * dim, dim)
        self.position = nn.Parameter(torch.randn(num_nodes, dim) * 0.02)
        self.cls = nn.Parameter(torch.randn(dim) * 0.02)
        self.blocks = nn.ModuleList(TransformerBlock(dim, heads, mlp_ratio) for _ in range(layers))
        self.norm = nn.LayerNorm(dim)
        self.out = nn.Linear(dim, num_actions)

    def forward(self, codes: torch.Tensor, target_codes: torch.Tensor) -> torch.Tensor:
        """codes, target_codes (B, N) -> logits (B, A)."""
        source = self.code_embed(codes + self.offsets)
        target = self.code_embed(target_codes + self.offsets)
        h = self.pair(torch.cat([source, target, target - source], dim=-1)) + self.position  # (B, N, D)
        cls = repeat(self.cls, "d -> b 1 d", b=codes.shape[0])
        h = torch.cat([cls, h], dim=1)
        for block in self.blocks:
            h = block(h)
        return self.out(self.norm(h[:, 0]))


def _conv_block(in_channels: int, out_channels: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1),
        nn.GroupNorm(math.gcd(8, out_channels), out_channels),
        nn.GELU(),
    )


class ConvRetrievalHead(nn.Module):
    """Classifier on a pair of code grids (grid layout), given as code *vectors* ``(B, N, D)``: the
    quantizer's codebook entries of each node's code, which the model passes in detached (the head
    never moves the codebook). Per cell ``[q, q', q' - q]`` -> ``layers`` 3x3 conv blocks at full
    resolution, one stride-2 block and one more block -> flatten -> MLP -> logits over actions.

    Why vectors and convolutions: the codebook already places codes that decode alike near each
    other, and an action moves content between neighbouring cells, which a convolution sees
    directly. The transformer head over learned code embeddings (:class:`RetrievalHead`) has to
    learn both from the pairs. On the codes of the released dSprites twin autoencoder it retrieved
    85.8% of the test pairs after 512k training pairs, and this head, 64 wide, 99.7% after 154k
    (``benchmarks/results/retrieval_head_cpu/``; ``experiments/retrieval_head_variants/`` separates
    the two choices)."""

    def __init__(self, code_dim: int, grid_size: int, num_actions: int, width: int = 128, layers: int = 2) -> None:
        super().__init__()
        self.grid_size = grid_size
        blocks = [_conv_block(3 * code_dim, width)] + [_conv_block(width, width) for _ in range(layers - 1)]
        blocks += [_conv_block(width, width, stride=2), _conv_block(width, width)]
        self.features = nn.Sequential(*blocks)
        half = (grid_size + 1) // 2
        self.out = nn.Sequential(
            nn.Flatten(), nn.Linear(width * half * half, 2 * width), nn.GELU(), nn.Linear(2 * width, num_actions)
        )

    def forward(self, vectors: torch.Tensor, target_vectors: torch.Tensor) -> torch.Tensor:
        """vectors, target_vectors (B, N, D) with N = grid_size**2 -> logits (B, A)."""
        pair = torch.cat([vectors, target_vectors, target_vectors - vectors], dim=-1)
        grid = rearrange(pair, "b (h w) d -> b d h w", h=self.grid_size)
        return self.out(self.features(grid))
