"""Vector quantization with G independent codebooks, EMA or loss-trained, with dead-code restarts.

Layout: the input is (B, N, D). Nodes are split into G contiguous groups, group g using codebook g:
G = 1 shares one codebook across all nodes (grid layout), G = N gives every node its own codebook
(tokens layout).

Rules this module keeps (and tests check):
- the nearest code is found by squared distance in float32 with autocast disabled, so bf16 autocast
  never changes a code assignment;
- the codebook only changes in :meth:`VectorQuantizer.update`, which is a no-op unless the module is
  in training mode *and* grad is enabled: evaluation under ``no_grad`` never moves a code;
- under DDP the statistics are all-reduced and dead-code replacements broadcast from rank 0 at call
  time, so all ranks hold identical codebooks (the decision is never taken at construction);
- nothing in the forward path reads a tensor back to the host.

Notes: the float32 matmuls follow the global matmul precision (with TF32 switched on by the user, a
near tie may resolve differently); ``usage_counts`` are per-rank statistics, not checkpointed (under
DDP, train with ``training.ddp_strategy``, which keeps DDP from copying rank 0's buffers over them).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from .compiling import eager
from .seeding import DeviceGenerators

__all__ = ["QuantizerOutput", "VectorQuantizer", "perplexity"]


@dataclass(frozen=True)
class QuantizerOutput:
    quantized: torch.Tensor  # (B, N, D) float32, straight-through: value = code vector, grad -> z
    codes: torch.Tensor  # (B, N) long, index into the node's codebook
    commitment_loss: torch.Tensor  # () beta * ||z - sg(e)||^2 (mean over elements)
    codebook_loss: torch.Tensor  # () ||sg(z) - e||^2 in "loss" mode, 0 in "ema" mode
    perplexity: torch.Tensor  # () exp(entropy) of this call's code usage, mean over codebooks
    codes_used: torch.Tensor  # () distinct codes used in this call, mean over codebooks
    counts: torch.Tensor  # (G, K) assignments per code in this call


def perplexity(counts: torch.Tensor) -> torch.Tensor:
    """exp(entropy) of the usage distribution per codebook, averaged: (G, K) counts -> ()."""
    counts = counts.float()
    probs = counts / counts.sum(-1, keepdim=True).clamp_min(1e-12)
    entropy = -(probs * probs.clamp_min(1e-12).log()).sum(-1)
    return entropy.exp().mean()


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


class VectorQuantizer(nn.Module):
    """G codebooks of K codes of dimension D.

    Args:
        num_groups: G; the node count N of the input must be a multiple of G.
        codebook_size: K codes per codebook.
        dim: D.
        mode: "ema" (codebook = EMA of assigned encodings, a buffer) or "loss" (codebook is a
            parameter trained by ``codebook_loss``).
        decay: EMA decay of cluster sizes (both modes: dead-code detection) and embedding sums.
        eps: Laplace smoothing of the cluster sizes.
        commitment_beta: beta of the commitment loss.
        dead_code_threshold: codes whose EMA cluster size is below this are restarted.
        restart_dead_codes: whether :meth:`update` restarts dead codes.
        seed: seed of the default restart generator (one per device, created on first use).
    """

    def __init__(
        self,
        num_groups: int,
        codebook_size: int,
        dim: int,
        mode: str = "ema",
        decay: float = 0.99,
        eps: float = 1e-5,
        commitment_beta: float = 0.25,
        dead_code_threshold: float = 1.0,
        restart_dead_codes: bool = True,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if mode not in ("ema", "loss"):
            raise ValueError(f"quantizer mode must be 'ema' or 'loss', got {mode!r}")
        self.num_groups = num_groups
        self.codebook_size = codebook_size
        self.dim = dim
        self.mode = mode
        self.decay = decay
        self.eps = eps
        self.commitment_beta = commitment_beta
        self.dead_code_threshold = dead_code_threshold
        self.restart_dead_codes = restart_dead_codes
        self.seed = seed
        self._generators = DeviceGenerators(seed)

        init = torch.randn(num_groups, codebook_size, dim)
        if mode == "ema":
            self.register_buffer("embedding", init)
            # Start consistent (embedding = embed_sum / cluster_size) with a unit pseudo-count,
            # so the first updates are not divided by a near-zero EMA.
            self.register_buffer("embed_sum", init.clone())
        else:
            self.embedding = nn.Parameter(init)
        self.register_buffer("cluster_size", torch.ones(num_groups, codebook_size))
        # Per-rank usage since the last reset: statistics only, not part of a checkpoint.
        self.register_buffer("usage_counts", torch.zeros(num_groups, codebook_size), persistent=False)

    # ------------------------------------------------------------------ layout helpers
    def _check_nodes(self, num_nodes: int) -> None:
        if num_nodes % self.num_groups:
            raise ValueError(
                f"quantizer has {self.num_groups} codebooks but the input has {num_nodes} nodes; "
                "the node count must be a multiple of the codebook count"
            )

    def _grouped(self, x: torch.Tensor) -> torch.Tensor:
        """(B, N, ...) -> (G, B * N / G, ...): the encodings each codebook sees."""
        return rearrange(x, "b (g n) ... -> g (b n) ...", g=self.num_groups)

    def _node_offsets(self, num_nodes: int, device: torch.device) -> torch.Tensor:
        """(N,) offset of each node's codebook in the flattened (G * K, D) table."""
        group = torch.arange(num_nodes, device=device) // (num_nodes // self.num_groups)
        return group * self.codebook_size

    def generator(self, device: torch.device | str) -> torch.Generator:
        """The default restart generator for ``device`` (seeded from ``seed`` on first use)."""
        return self._generators(device)

    # ------------------------------------------------------------------ lookups
    @torch.no_grad()
    def nearest_codes(self, z: torch.Tensor) -> torch.Tensor:
        """(B, N, D) -> (B, N) index of the nearest code (squared L2), computed in float32."""
        batch, num_nodes, _ = z.shape
        self._check_nodes(num_nodes)
        with torch.autocast(device_type=z.device.type, enabled=False):
            zg = self._grouped(z.detach().float())  # (G, M, D)
            codebook = self.embedding.detach().float()  # (G, K, D)
            distances = torch.baddbmm(
                codebook.pow(2).sum(-1).unsqueeze(1), zg, codebook.transpose(1, 2), alpha=-2.0
            ) + zg.pow(2).sum(-1, keepdim=True)  # (G, M, K)
            codes = distances.argmin(-1)
        return rearrange(codes, "g (b n) -> b (g n)", b=batch)

    def lookup(self, codes: torch.Tensor) -> torch.Tensor:
        """(B, N) long -> (B, N, D) float32 code vectors (node n reads its own codebook)."""
        offsets = self._node_offsets(codes.shape[-1], codes.device)
        table = rearrange(self.embedding, "g k d -> (g k) d")
        return F.embedding(codes + offsets, table.float())

    def counts(self, codes: torch.Tensor) -> torch.Tensor:
        """(B, N) -> (G, K) number of assignments per code."""
        grouped = self._grouped(codes)
        out = torch.zeros(self.num_groups, self.codebook_size, device=codes.device)
        return out.scatter_add_(1, grouped, torch.ones_like(grouped, dtype=out.dtype))

    # ------------------------------------------------------------------ forward
    def forward(self, z: torch.Tensor, update_codebook: bool = False) -> QuantizerOutput:
        """Quantize z (B, N, D). With ``update_codebook`` also calls :meth:`update` afterwards."""
        codes = self.nearest_codes(z)
        with torch.autocast(device_type=z.device.type, enabled=False):
            zf = z.float()
            q = self.lookup(codes)
            commitment = self.commitment_beta * F.mse_loss(zf, q.detach())
            codebook = F.mse_loss(q, zf.detach()) if self.mode == "loss" else zf.new_zeros(())
            quantized = zf + (q - zf).detach()
            counts = self.counts(codes)
            with torch.no_grad():
                self.usage_counts.add_(counts)
            out = QuantizerOutput(
                quantized=quantized,
                codes=codes,
                commitment_loss=commitment,
                codebook_loss=codebook,
                perplexity=perplexity(counts),
                codes_used=(counts > 0).float().sum(-1).mean(),
                counts=counts,
            )
        if update_codebook:
            self.update(z, codes)
        return out

    # ------------------------------------------------------------------ codebook updates
    def updates(self) -> bool:
        """Whether :meth:`update` would change anything now: training mode with grad enabled."""
        return self.training and torch.is_grad_enabled()

    # Eager inside a compiled caller: dynamo cannot trace a torch.Generator, so a draw inside a
    # compiled loss would split its graph; drawn first, the scores enter it as a tensor.
    @eager
    def draw_restart_scores(
        self, num_encodings: int, device: torch.device, generator: torch.Generator | None = None
    ) -> torch.Tensor | None:
        """The random scores by which :meth:`update` picks restart encodings among ``num_encodings``
        (B * N) encodings, drawn with ``generator`` (default: the module's own on ``device``): what
        ``update`` draws when given none. None when restarts are off."""
        if not self.restart_dead_codes:
            return None
        generator = generator or self.generator(device)
        return torch.rand(self.num_groups, num_encodings // self.num_groups, generator=generator, device=device)

    def update(
        self,
        z: torch.Tensor,
        codes: torch.Tensor,
        generator: torch.Generator | None = None,
        restart_scores: torch.Tensor | None = None,
    ) -> None:
        """One EMA step on the encodings ``z`` (B, N, D) assigned to ``codes`` (B, N), then dead-code
        restarts. A no-op unless training with grad enabled (call it from the training step, outside
        ``no_grad``). In "loss" mode only the cluster-size EMA and the restarts run.
        ``generator`` (on z's device) picks restart encodings; default: the module's own.
        ``restart_scores``: that pick's draw, already made (:meth:`draw_restart_scores`)."""
        # Checked before entering no_grad: a no_grad decorator would hide the caller's grad mode.
        if not self.updates():
            return
        with torch.no_grad():
            self._update(z, codes, generator, restart_scores)

    def _update(
        self,
        z: torch.Tensor,
        codes: torch.Tensor,
        generator: torch.Generator | None,
        restart_scores: torch.Tensor | None = None,
    ) -> None:
        self._check_nodes(z.shape[1])
        with torch.autocast(device_type=z.device.type, enabled=False):
            zg = self._grouped(z.detach().float())  # (G, M, D)
            grouped_codes = self._grouped(codes)  # (G, M)
            onehot = torch.zeros(*grouped_codes.shape, self.codebook_size, device=z.device)
            onehot.scatter_(2, grouped_codes.unsqueeze(-1), 1.0)  # (G, M, K)
            counts = onehot.sum(1)  # (G, K)
            sums = torch.bmm(onehot.transpose(1, 2), zg)  # (G, K, D)
            if _distributed():
                stats = torch.cat([counts.unsqueeze(-1), sums], dim=-1)
                dist.all_reduce(stats)
                counts, sums = stats[..., 0], stats[..., 1:]

            self.cluster_size.mul_(self.decay).add_(counts, alpha=1.0 - self.decay)
            if self.mode == "ema":
                self.embed_sum.mul_(self.decay).add_(sums, alpha=1.0 - self.decay)
                total = self.cluster_size.sum(-1, keepdim=True)
                smoothed = (self.cluster_size + self.eps) / (total + self.codebook_size * self.eps) * total
                self.embedding.copy_(self.embed_sum / smoothed.unsqueeze(-1))
            if self.restart_dead_codes:
                if restart_scores is None:
                    restart_scores = self.draw_restart_scores(codes.numel(), z.device, generator)
                self._restart_dead_codes(zg, restart_scores)

    def _restart_dead_codes(self, zg: torch.Tensor, scores: torch.Tensor) -> None:
        """Replace codes with EMA cluster size < threshold by distinct random encodings of this batch
        (rank 0's choice, broadcast), the encodings of the lowest ``scores`` (G, M). Branch-free: no
        host sync even when nothing is dead."""
        num_groups, num_encodings, dim = zg.shape
        if scores.shape != (num_groups, num_encodings):
            raise ValueError(f"restart scores of shape {tuple(scores.shape)} for {num_groups} codebooks of "
                             f"{num_encodings} encodings each; draw them with draw_restart_scores(B * N)")
        order = scores.argsort(-1)  # a random permutation per codebook
        picks = order[:, torch.arange(self.codebook_size, device=zg.device) % num_encodings]  # (G, K)
        candidates = torch.gather(zg, 1, picks.unsqueeze(-1).expand(-1, -1, dim))  # (G, K, D)
        if _distributed():
            dist.broadcast(candidates, src=0)
        dead = self.cluster_size < self.dead_code_threshold  # (G, K)
        reset_size = max(1.0, self.dead_code_threshold)
        self.embedding.copy_(torch.where(dead.unsqueeze(-1), candidates, self.embedding))
        self.cluster_size.copy_(torch.where(dead, torch.full_like(self.cluster_size, reset_size), self.cluster_size))
        if self.mode == "ema":
            self.embed_sum.copy_(torch.where(dead.unsqueeze(-1), candidates * reset_size, self.embed_sum))

    # ------------------------------------------------------------------ usage statistics
    def reset_usage(self) -> None:
        """Zero the accumulated usage counts (e.g. at the start of an epoch)."""
        self.usage_counts.zero_()

    def usage_perplexity(self) -> torch.Tensor:
        """Perplexity of the usage accumulated since the last reset."""
        return perplexity(self.usage_counts)

    def codes_in_use(self) -> torch.Tensor:
        """Distinct codes used since the last reset, per codebook: (G,)."""
        return (self.usage_counts > 0).sum(-1)
