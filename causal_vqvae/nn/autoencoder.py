"""Convolutional encoder/decoder (64x64 <-> 8x8 grid) and the token read-out/read-in of the
``tokens`` latent layout.

Output range: the decoder ends in *logits*; ``CausalVQVAE.decode`` applies a sigmoid, so decoded
images are in [0, 1] like the inputs (never a tanh against [0, 1] targets).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import repeat
from torch import nn

from .layers import TransformerBlock

__all__ = [
    "group_norm",
    "PositionNorm",
    "ResidualBlock",
    "Encoder",
    "Decoder",
    "TokenEncoder",
    "TokenDecoder",
]


def group_norm(channels: int, groups: int) -> nn.GroupNorm:
    """GroupNorm with the largest group count <= ``groups`` that divides ``channels``."""
    return nn.GroupNorm(math.gcd(channels, groups), channels)


class PositionNorm(nn.Module):
    """Normalises each position of a (B, C, H, W) map over its C channels alone (a layer norm per
    pixel, with a learned scale and shift per channel): unlike GroupNorm, no statistic is taken
    over the image, so one region of the input cannot shift the features of another."""

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # layer_norm over the channels of each position (autocast runs it in float32)
        y = F.layer_norm(x.permute(0, 2, 3, 1), (x.shape[1],), self.weight, self.bias, self.eps)
        return y.permute(0, 3, 1, 2)


class ResidualBlock(nn.Module):
    """x + conv1x1(act(norm(conv3x3(act(norm(x)))))); ``local``: per-position norms and a 1x1
    conv in place of the 3x3, so the block widens no receptive field."""

    def __init__(self, channels: int, groups: int, local: bool = False) -> None:
        super().__init__()
        norm = (lambda: PositionNorm(channels)) if local else (lambda: group_norm(channels, groups))
        self.block = nn.Sequential(
            norm(),
            nn.SiLU(),
            nn.Conv2d(channels, channels, 1 if local else 3, padding=0 if local else 1),
            norm(),
            nn.SiLU(),
            nn.Conv2d(channels, channels, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x)


class Encoder(nn.Module):
    """(B, C, H, W) -> (B, code_dim, H / 2**L, W / 2**L): L stride-2 4x4 convs, a 3x3 conv, residual
    blocks, and a 1x1 conv to ``code_dim``.

    ``local``: every norm is per position (:class:`PositionNorm`) and every conv after the
    downsampling is 1x1, so a cell's features depend only on the input window of its L strided
    convs (22 pixels, the 8-pixel cell and 7 around it, for L = 3), however many residual blocks:
    a change in one region of the image leaves the codes of distant cells exactly as they were. With
    GroupNorm and 3x3 convs a cell sees about the whole image, so one small sprite moves most codes."""

    def __init__(
        self, in_channels: int, hidden_dims: tuple[int, ...], num_res_blocks: int, code_dim: int, groups: int,
        local: bool = False,
    ) -> None:
        super().__init__()
        norm = PositionNorm if local else (lambda width: group_norm(width, groups))
        layers: list[nn.Module] = []
        channels = in_channels
        for width in hidden_dims:
            layers += [nn.Conv2d(channels, width, 4, stride=2, padding=1), norm(width), nn.SiLU()]
            channels = width
        layers.append(nn.Conv2d(channels, channels, 1) if local else nn.Conv2d(channels, channels, 3, padding=1))
        layers += [ResidualBlock(channels, groups, local) for _ in range(num_res_blocks)]
        layers += [norm(channels), nn.SiLU(), nn.Conv2d(channels, code_dim, 1)]
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
