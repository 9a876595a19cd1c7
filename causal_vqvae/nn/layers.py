"""Attention building blocks shared by the token autoencoder, the causal graph's state head, the
transition and the retrieval head."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

__all__ = ["Attention", "FeedForward", "TransformerBlock"]


class Attention(nn.Module):
    """Multi-head attention of ``x`` (B, N, D) over ``context`` (B, M, D) (self-attention when None)."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"attention width {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.to_q = nn.Linear(dim, dim)
        self.to_kv = nn.Linear(dim, 2 * dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        context = x if context is None else context
        q = rearrange(self.to_q(x), "b n (h d) -> b h n d", h=self.heads)
        k, v = rearrange(self.to_kv(context), "b m (two h d) -> two b h m d", two=2, h=self.heads)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.out(rearrange(out, "b h n d -> b n (h d)"))


class FeedForward(nn.Module):
    def __init__(self, dim: int, mlp_ratio: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, mlp_ratio * dim), nn.GELU(), nn.Linear(mlp_ratio * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class TransformerBlock(nn.Module):
    """Pre-norm block: x + attn(norm(x), norm(context)); x + ff(norm(x))."""

    def __init__(self, dim: int, heads: int, mlp_ratio: int, cross: bool = False) -> None:
        super().__init__()
        self.norm_x = nn.LayerNorm(dim)
        self.norm_context = nn.LayerNorm(dim) if cross else None
        self.attn = Attention(dim, heads)
        self.norm_ff = nn.LayerNorm(dim)
        self.ff = FeedForward(dim, mlp_ratio)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        if self.norm_context is not None:
            if context is None:
                raise ValueError("a cross-attention block needs a context")
            x = x + self.attn(self.norm_x(x), self.norm_context(context))
        else:
            x = x + self.attn(self.norm_x(x))
        return x + self.ff(self.norm_ff(x))
