"""Action retrieval: which action turned codes into target codes?

(a) By transition: run every action's transition in one batched pass (B -> B * A) and score each by
    the mean NLL of the target codes under the intervention mixture; probabilities are
    softmax(-score / T). Deterministic: the graph masks are thresholded, never sampled.
(b) By a learned head: a small transformer over the pair of code grids -> logits over actions.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from einops import rearrange, repeat
from torch import nn

from .autoencoder import TransformerBlock
from .graph import node_code_offsets
from .transition import CausalTransition, mixture_nll

__all__ = ["RetrievalOutput", "score_actions", "scores_to_probs", "RetrievalHead"]


@dataclass(frozen=True)
class RetrievalOutput:
    logits: torch.Tensor  # (B, A) higher = more likely (-score / T for the transition method)
    probs: torch.Tensor  # (B, A) softmax of logits
    action: torch.Tensor  # (B,) argmax
    scores: torch.Tensor | None  # (B, A) mean NLL per action (transition method), else None


def score_actions(
    transition: CausalTransition, codes: torch.Tensor, target_codes: torch.Tensor, eps: float = 1e-3
) -> torch.Tensor:
    """(B, A) mean-over-nodes NLL of ``target_codes`` (B, N) after each action applied to ``codes``
    (B, N): lower is better. All A actions run in one batched, deterministic pass."""
    num_actions = transition.num_actions
    batch = codes.shape[0]
    codes_all = repeat(codes, "b n -> (b a) n", a=num_actions)
    targets_all = repeat(target_codes, "b n -> (b a) n", a=num_actions)
    actions = repeat(torch.arange(num_actions, device=codes.device), "a -> (b a)", b=batch)
    output = transition(codes_all, actions, sample=False)
    nll = mixture_nll(output, codes_all, targets_all, eps).mean(-1)  # (B * A,)
    return rearrange(nll, "(b a) -> b a", a=num_actions)


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
