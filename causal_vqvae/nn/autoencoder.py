"""Convolutional encoder/decoder (64x64 <-> 8x8 grid) and the token read-out/read-in of the
``tokens`` latent layout, plus the small attention blocks the rest of the package reuses.

Output range: the decoder ends in *logits*; ``CausalVQVAE.decode`` applies a sigmoid, so decoded
images are in [0, 1] like the inputs (never a tanh against [0, 1] targets).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from torch import nn

__all__ = [
    "group_norm",
    "ResidualBlock",
    "Encoder",
    "Decoder",
    "Attention",
    "FeedForward",
    "TransformerBlock",
    "TokenEncoder",
    "TokenDecoder",
]


def group_norm(channels: int, groups: int) -> nn.GroupNorm:
    """GroupNorm with the largest group count <= ``groups`` that divides ``channels``."""
    return nn.GroupNorm(math.gcd(channels, groups), channels)


class ResidualBlock(nn.Module):
    """x + conv1x1(act(norm(conv3x3(act(norm(x))))))."""

    def __init__(self, channels: int, groups: int) -> None:
        super().__init__()
        self.block = nn.Sequential(
            group_norm(channels, groups),
            nn.SiLU(),
            nn.Conv2d(channels, channels, 3, padding=1),
            group_norm(channels, groups),
            nn.SiLU(),
            nn.Conv2d(channels, channels, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x)


class Encoder(nn.Module):
    """(B, C, H, W) -> (B, code_dim, H / 2**L, W / 2**L): L stride-2 4x4 convs, a 3x3 conv, residual
    blocks, and a 1x1 conv to ``code_dim``."""

    def __init__(
        self, in_channels: int, hidden_dims: tuple[int, ...], num_res_blocks: int, code_dim: int, groups: int
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_channels
        for width in hidden_dims:
            layers += [nn.Conv2d(channels, width, 4, stride=2, padding=1), group_norm(width, groups), nn.SiLU()]
            channels = width
        layers.append(nn.Conv2d(channels, channels, 3, padding=1))
        layers += [ResidualBlock(channels, groups) for _ in range(num_res_blocks)]
        layers += [group_norm(channels, groups), nn.SiLU(), nn.Conv2d(channels, code_dim, 1)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Decoder(nn.Module):
    """Mirror of :class:`Encoder`: (B, code_dim, h, w) -> (B, C, H, W) *logits*."""

    def __init__(
        self, out_channels: int, hidden_dims: tuple[int, ...], num_res_blocks: int, code_dim: int, groups: int
    ) -> None:
        super().__init__()
        widths = tuple(reversed(hidden_dims))  # a new tuple: the config is never mutated
        channels = widths[0]
        layers: list[nn.Module] = [nn.Conv2d(code_dim, channels, 3, padding=1)]
        layers += [ResidualBlock(channels, groups) for _ in range(num_res_blocks)]
        layers += [group_norm(channels, groups), nn.SiLU()]
        for width in widths[1:]:
            layers += [
                nn.ConvTranspose2d(channels, width, 4, stride=2, padding=1),
                group_norm(width, groups),
                nn.SiLU(),
            ]
            channels = width
        layers.append(nn.ConvTranspose2d(channels, out_channels, 4, stride=2, padding=1))
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


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


class TokenEncoder(nn.Module):
    """Grid features (B, P, D) -> M global tokens (B, M, D): learned queries cross-attend to the grid,
    so each token can gather one factor wherever it is in the image."""

    def __init__(self, num_tokens: int, num_cells: int, dim: int, layers: int, heads: int, mlp_ratio: int) -> None:
        super().__init__()
        self.queries = nn.Parameter(torch.randn(num_tokens, dim) * 0.02)
        self.cell_pos = nn.Parameter(torch.randn(num_cells, dim) * 0.02)
        self.blocks = nn.ModuleList(TransformerBlock(dim, heads, mlp_ratio, cross=True) for _ in range(layers))
        self.norm = nn.LayerNorm(dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, grid: torch.Tensor) -> torch.Tensor:
        context = grid + self.cell_pos  # (B, P, D)
        tokens = repeat(self.queries, "m d -> b m d", b=grid.shape[0])
        for block in self.blocks:
            tokens = block(tokens, context)
        return self.proj(self.norm(tokens))


class TokenDecoder(nn.Module):
    """Tokens (B, M, D) -> grid features (B, P, D): one learned query per grid cell cross-attends to
    the tokens (with a position embedding per token)."""

    def __init__(self, num_tokens: int, num_cells: int, dim: int, layers: int, heads: int, mlp_ratio: int) -> None:
        super().__init__()
        self.cell_queries = nn.Parameter(torch.randn(num_cells, dim) * 0.02)
        self.token_pos = nn.Parameter(torch.randn(num_tokens, dim) * 0.02)
        self.blocks = nn.ModuleList(TransformerBlock(dim, heads, mlp_ratio, cross=True) for _ in range(layers))
        self.norm = nn.LayerNorm(dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        context = tokens + self.token_pos
        cells = repeat(self.cell_queries, "p d -> b p d", b=tokens.shape[0])
        for block in self.blocks:
            cells = block(cells, context)
        return self.proj(self.norm(cells))
