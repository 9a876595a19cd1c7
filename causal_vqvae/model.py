"""CausalVQVAE: VQ-VAE + causal graph + structural equations + action retrieval, as a plain nn.Module.

Images are float (B, C, H, W) in [0, 1]; ``decode`` returns [0, 1] (sigmoid of the decoder logits).
Actions are long ids in [0, A). Nothing here needs a Trainer: the loss helpers return dataclasses of
named terms so a Lightning module only has to add them up, step the optimiser, and call
``quantizer.update`` (done inside ``autoencoder_loss``) and ``update_multipliers``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from .config import ModelConfig
from .nn.autoencoder import Decoder, Encoder, TokenDecoder, TokenEncoder
from .nn.compiling import eager
from .nn.graph import CausalGraph, DualAscent, GraphNoise
from .nn.quantizer import QuantizerOutput, VectorQuantizer
from .nn.retrieval import (
    ConvRetrievalHead,
    RetrievalHead,
    RetrievalOutput,
    mixture_vectors,
    score_actions,
)
from .nn.transition import (
    CausalTransition,
    TransitionLoss,
    TransitionOutput,
    sparsity_budgets,
    transition_loss,
)
from .pretrained import PretrainedMixin

__all__ = ["AutoencoderOutput", "AutoencoderLoss", "DecoderLoss", "RetrievalLoss", "CausalVQVAE"]

ActionLike = torch.Tensor | int


@dataclass(frozen=True)
class AutoencoderOutput:
    reconstruction: torch.Tensor  # (B, C, H, W) float32 in [0, 1]
    reconstruction_logits: torch.Tensor  # (B, C, H, W) decoder output before the sigmoid
    z: torch.Tensor  # (B, N, D) encodings before quantization
    quantizer: QuantizerOutput


@dataclass(frozen=True)
class AutoencoderLoss:
    loss: torch.Tensor  # () reconstruction + commitment + codebook
    reconstruction_loss: torch.Tensor  # () MSE on [0, 1] images, or BCE on logits
    commitment_loss: torch.Tensor  # () (beta included)
    codebook_loss: torch.Tensor  # () 0 in "ema" mode
    perplexity: torch.Tensor  # () codebook perplexity of this batch
    codes_used: torch.Tensor  # () distinct codes in this batch (mean over codebooks)
    output: AutoencoderOutput


@dataclass(frozen=True)
class DecoderLoss:
    loss: torch.Tensor  # () reconstruction + edit_weight * edit
    reconstruction_loss: torch.Tensor  # () both images of each pair decoded from their own codes
    edit_loss: torch.Tensor  # () the decoded edit against the pair's second image (0 with edit_weight 0)
    reconstruction_mse: torch.Tensor  # () pixel MSE of the reconstructions (the loss is a BCE in "bce" mode)
    edit_mse: torch.Tensor  # () pixel MSE of the decoded edits (0 with edit_weight 0)


@dataclass(frozen=True)
class RetrievalLoss:
    loss: torch.Tensor  # () cross-entropy of the retrieval head
    accuracy: torch.Tensor  # () top-1 action accuracy
    logits: torch.Tensor  # (B, A)


class CausalVQVAE(PretrainedMixin, nn.Module):
    """See the module docstring. Build from a :class:`ModelConfig`; parameters are initialised from
    ``config.seed`` without touching the global random state."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            self._build(config)

    def _build(self, c: ModelConfig) -> None:
        self.encoder = Encoder(c.in_channels, c.hidden_dims, c.num_res_blocks, c.code_dim, c.norm_groups,
                               c.local_encoder)
        self.decoder = Decoder(c.in_channels, c.hidden_dims, c.num_res_blocks, c.code_dim, c.norm_groups)
        cells = c.grid_size**2
        if c.latent_layout == "tokens":
            token_args = (c.num_tokens, cells, c.code_dim, c.token_layers, c.token_heads, c.mlp_ratio)
            self.token_encoder = TokenEncoder(*token_args)
            self.token_decoder = TokenDecoder(*token_args)
        else:
            self.token_encoder = None
            self.token_decoder = None
        self.quantizer = VectorQuantizer(
            num_groups=c.num_codebooks,
            codebook_size=c.codes_per_node,
            dim=c.code_dim,
            mode=c.quantizer_mode,
            decay=c.ema_decay,
            eps=c.ema_eps,
            commitment_beta=c.commitment_beta,
            dead_code_threshold=c.dead_code_threshold,
            restart_dead_codes=c.restart_dead_codes,
            seed=c.seed,
        )
        graph = CausalGraph(
            num_nodes=c.num_nodes,
            num_actions=c.num_actions,
            num_codebooks=c.num_codebooks,
            codes_per_node=c.codes_per_node,
            adjacency_init_logit=c.adjacency_init_logit,
            target_init_logit=c.target_init_logit,
            temperature=c.gumbel_temperature,
            local_parent_logit=c.local_parent_logit,
            state_dependent_targets=c.state_dependent_targets,
            head_dim=c.target_head_dim,
            context_layers=c.target_context_layers,
            mlp_ratio=c.mlp_ratio,
            state_bound=c.target_state_bound,
        )
        self.transition_net = CausalTransition(
            graph,
            num_codebooks=c.num_codebooks,
            codes_per_node=c.codes_per_node,
            dim=c.transition_dim,
            layers=c.transition_layers,
            heads=c.transition_heads,
            mlp_ratio=c.mlp_ratio,
            seed=c.seed + 1,
            intervention=c.intervention,
            keep_threshold=c.keep_threshold,
            position=c.transition_position,
            window=c.transition_window,
        )
        if c.resolved_retrieval_head == "conv":
            self.retrieval_head = ConvRetrievalHead(
                c.code_dim, c.grid_size, c.num_actions, c.retrieval_dim, c.retrieval_layers
            )
        else:
            self.retrieval_head = RetrievalHead(
                c.num_nodes, c.num_actions, c.num_codebooks, c.codes_per_node,
                c.retrieval_dim, c.retrieval_layers, c.retrieval_heads, c.mlp_ratio,
            )
        n = c.num_nodes
        start_targets = float(n) if c.target_budget_start is None else c.target_budget_start
        start_parents = float(n - 1) if c.adjacency_budget_start is None else c.adjacency_budget_start
        self.target_dual = DualAscent(c.num_actions, c.dual_lr, c.resolved_target_budget, start_targets, scale=n)
        self.adjacency_dual = DualAscent(n, c.dual_lr, c.adjacency_budget, start_parents, scale=n)

    @property
    def graph(self) -> CausalGraph:
        return self.transition_net.graph

    # ------------------------------------------------------------------ autoencoder
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Images (B, C, H, W) in [0, 1] -> encodings (B, N, D) (grid cells or tokens)."""
        c = self.config
        if x.dim() != 4 or tuple(x.shape[1:]) != (c.in_channels, c.image_size, c.image_size):
            raise ValueError(
                f"expected images of shape (B, {c.in_channels}, {c.image_size}, {c.image_size}), got {tuple(x.shape)}"
            )
        cells = rearrange(self.encoder(x), "b d h w -> b (h w) d")
        return cells if self.token_encoder is None else self.token_encoder(cells)

    def quantize(self, z: torch.Tensor, update_codebook: bool = False) -> QuantizerOutput:
        return self.quantizer(z, update_codebook=update_codebook)

    @torch.no_grad()
    def encode_codes(self, x: torch.Tensor) -> torch.Tensor:
        """Images -> codes (B, N) long."""
        return self.quantizer.nearest_codes(self.encode(x))

    def decode_logits(self, quantized: torch.Tensor, frozen: bool = False) -> torch.Tensor:
        """Quantized vectors (B, N, D) -> decoder logits (B, C, H, W). ``frozen``: the decoder's
        weights enter detached, so a loss on the output trains only what made ``quantized``."""
        def run(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
            if not frozen:
                return module(x)
            return torch.func.functional_call(module, {n: p.detach() for n, p in module.named_parameters()}, (x,))

        cells = quantized if self.token_decoder is None else run(self.token_decoder, quantized)
        grid = rearrange(cells, "b (h w) d -> b d h w", h=self.config.grid_size)
        return run(self.decoder, grid)

    def decode(self, quantized_or_codes: torch.Tensor) -> torch.Tensor:
        """Quantized vectors (B, N, D) or codes (B, N) long -> images (B, C, H, W) in [0, 1], float32."""
        if not torch.is_floating_point(quantized_or_codes):
            return self.decode_codes(quantized_or_codes)
        return torch.sigmoid(self.decode_logits(quantized_or_codes)).float()

    def decode_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes (B, N) long -> images (B, C, H, W) in [0, 1]."""
        return torch.sigmoid(self.decode_logits(self.quantizer.lookup(codes))).float()

    def forward(self, x: torch.Tensor) -> AutoencoderOutput:
        z = self.encode(x)
        q = self.quantize(z)
        logits = self.decode_logits(q.quantized)
        return AutoencoderOutput(
            reconstruction=torch.sigmoid(logits).float(), reconstruction_logits=logits, z=z, quantizer=q
        )

    def autoencoder_loss(
        self, x: torch.Tensor, update_codebook: bool = True, generator: torch.Generator | None = None
    ) -> AutoencoderLoss:
        """Reconstruction + VQ losses on images x; with ``update_codebook`` the quantizer's EMA /
        restart step runs too (only in training mode with grad enabled; ``generator`` picks the
        restart encodings, default the quantizer's own)."""
        restart_scores = None
        if update_codebook and self.quantizer.updates():  # drawn first: see draw_restart_scores
            restart_scores = self.quantizer.draw_restart_scores(x.shape[0] * self.config.num_nodes, x.device, generator)
        out = self(x)
        rec = self._pixel_loss(out.reconstruction_logits, out.reconstruction, x)
        q = out.quantizer
        if update_codebook:
            self.quantizer.update(out.z, q.codes, restart_scores=restart_scores)
        return AutoencoderLoss(
            loss=rec + q.commitment_loss + q.codebook_loss,
            reconstruction_loss=rec,
            commitment_loss=q.commitment_loss,
            codebook_loss=q.codebook_loss,
            perplexity=q.perplexity,
            codes_used=q.codes_used,
            output=out,
        )

    def _pixel_loss(self, logits: torch.Tensor, images: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """() the reconstruction loss of ``config.reconstruction_loss`` of decoder ``logits`` (and
        their sigmoid ``images``) against ``x``: a BCE on the logits, or the pixel MSE."""
        if self.config.reconstruction_loss == "bce":
            return F.binary_cross_entropy_with_logits(logits.float(), x.float())
        return F.mse_loss(images, x.float())

    def decoder_loss(self, x: torch.Tensor, x_next: torch.Tensor, action: torch.Tensor,
                     edit_weight: float = 1.0) -> DecoderLoss:
        """The loss of the decoder alone, on pairs (x, a, x'): both images decoded from their own codes
        and, with ``edit_weight`` > 0, the edit of x by a decoded from the codes the transition
        predicts (read as at evaluation, no sampling) against x'. The codes are computed without a
        gradient, so only the decoder learns: it keeps rendering the codes it was trained on, and
        learns to render what the transition writes, whose codes differ from the target's own where
        several codes decode alike. The encoder, codebook, transition and head stay as they are."""
        batch = x.shape[0]
        with torch.no_grad():
            codes = self.encode_codes(torch.cat([x, x_next]))
            if edit_weight > 0:
                codes = torch.cat([codes, self.transition(codes[:batch], action, sample=False).predicted_codes])
            quantized = self.quantizer.lookup(codes)  # no gradient to the codebook ("loss" mode's is a parameter)
        logits = self.decode_logits(quantized)
        images = torch.sigmoid(logits).float()
        targets = torch.cat([x, x_next]).float()
        rec = self._pixel_loss(logits[:2 * batch], images[:2 * batch], targets)
        rec_mse = (images[:2 * batch].detach() - targets).pow(2).mean()
        if edit_weight > 0:
            edit = self._pixel_loss(logits[2 * batch:], images[2 * batch:], x_next)
            edit_mse = (images[2 * batch:].detach() - x_next.float()).pow(2).mean()
        else:
            edit = edit_mse = rec.new_zeros(())
        return DecoderLoss(loss=rec + edit_weight * edit, reconstruction_loss=rec, edit_loss=edit,
                           reconstruction_mse=rec_mse, edit_mse=edit_mse)

    # ------------------------------------------------------------------ transitions
    @staticmethod
    def _actions(action: ActionLike, batch: int, device: torch.device) -> torch.Tensor:
        if isinstance(action, int):
            return torch.full((batch,), action, dtype=torch.long, device=device)
        action = action.to(device=device, dtype=torch.long)
        return action.expand(batch) if action.dim() == 0 else action

    def _check_action_id(self, action: ActionLike) -> None:
        if isinstance(action, int) and not 0 <= action < self.config.num_actions:
            raise ValueError(f"action id {action} out of range [0, {self.config.num_actions})")

    def transition(
        self,
        codes: torch.Tensor,
        action: ActionLike,
        sample: bool | None = None,
        generator: torch.Generator | None = None,
    ) -> TransitionOutput:
        """Apply ``action`` ((B,) ids or an int) to ``codes`` (B, N). Samples the graph masks only
        when ``sample`` (default: training mode)."""
        self._check_action_id(action)
        return self.transition_net(codes, self._actions(action, codes.shape[0], codes.device), sample, generator)

    def transition_loss(
        self,
        x_codes: torch.Tensor,
        action: ActionLike,
        target_codes: torch.Tensor,
        progress: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> TransitionLoss:
        """Mixture NLL of ``target_codes`` after ``action`` on ``x_codes`` plus graph sparsity
        (budgets at training ``progress`` in [0, 1]). Call :meth:`update_multipliers` after the step.
        In training mode the graph masks are sampled with ``generator`` (default: the transition's own)."""
        c = self.config
        noise, budgets = self._transition_loss_inputs(x_codes.shape[0], x_codes.device, progress, generator)
        self._check_action_id(action)
        actions = self._actions(action, x_codes.shape[0], x_codes.device)
        output = self.transition_net(x_codes, actions, noise=noise)
        loss = transition_loss(
            output, x_codes, target_codes, actions, self.graph,
            eps=c.mixture_eps,
            sparsity_mode=c.sparsity_mode,
            equation_weight=c.equation_loss_weight,
            target_dual=self.target_dual,
            adjacency_dual=self.adjacency_dual,
            target_penalty_weight=c.target_penalty_weight,
            adjacency_penalty_weight=c.adjacency_penalty_weight,
            progress=progress,
            budgets=budgets,
            kept_weight=0.0 if c.intervention == "change" else c.kept_equation_weight,
        )
        if c.edit_loss_weight > 0.0:
            edit_mse = self.edit_error(output, x_codes, target_codes)
            loss = replace(loss, loss=loss.loss + c.edit_loss_weight * edit_mse, edit_mse=edit_mse)
        return loss

    def edit_error(self, output: TransitionOutput, codes: torch.Tensor, target_codes: torch.Tensor) -> torch.Tensor:
        """() pixel MSE between the decoded edit and the decoded target codes, the edit's codes read
        as at evaluation (:meth:`CausalTransition.read_codes` where ``output.intervened``), with a
        straight-through gradient to the equations' probabilities and to the intervention mask (the
        decoder and the codebook are not trained by it). It scores an edit by where its codes send
        the decoder, not by the codes' indices: many codes decode alike."""
        tr = self.transition_net
        probs = torch.softmax(output.logits.float(), dim=-1)
        chosen = F.one_hot(tr.read_codes(output.logits, codes), probs.shape[-1]).float()
        weights = chosen + probs - probs.detach()  # forward: the chosen code; backward: the softmax
        edited = mixture_vectors(weights, output.intervened, codes, self.quantizer.embedding.detach().float(),
                                 tr.offsets)
        with torch.no_grad():
            target = torch.sigmoid(self.decode_logits(self.quantizer.lookup(target_codes)).float())
        return (torch.sigmoid(self.decode_logits(edited, frozen=True).float()) - target).pow(2).mean()

    # Eager inside a compiled caller, and first: dynamo cannot trace a torch.Generator, and inductor
    # once returned the budgets of the progress a graph was traced at for every later progress.
    # Made here, the draws and the budgets enter the rest of a compiled loss as inputs (one graph).
    @eager
    def _transition_loss_inputs(
        self, batch: int, device: torch.device, progress: float, generator: torch.Generator | None
    ) -> tuple[GraphNoise | None, tuple[float, float]]:
        """The graph-mask noise of a training-mode loss (None in eval mode: masks are thresholds)
        and the sparsity budgets at ``progress``."""
        noise = self.transition_net.draw_noise(batch, device, generator) if self.transition_net.training else None
        return noise, sparsity_budgets(self.target_dual, self.adjacency_dual, progress)

    def update_multipliers(self, loss: TransitionLoss) -> None:
        """Dual-ascent step of the sparsity constraints (constraint mode, training mode only)."""
        if self.config.sparsity_mode != "constraint" or not self.training:
            return
        self.target_dual.update(loss.expected_targets, loss.target_budget)
        self.adjacency_dual.update(loss.expected_parents, loss.adjacency_budget)

    # ------------------------------------------------------------------ retrieval
    def head_logits(self, codes: torch.Tensor, target_codes: torch.Tensor) -> torch.Tensor:
        """Float32 logits (B, A) of the retrieval head on a pair of codes (B, N). The convolutional
        head reads the code vectors, detached: the head never trains the codebook."""
        if isinstance(self.retrieval_head, ConvRetrievalHead):
            vectors = self.quantizer.lookup(torch.cat([codes, target_codes])).detach()
            return self.retrieval_head(*vectors.chunk(2)).float()
        return self.retrieval_head(codes, target_codes).float()

    def retrieve_codes(
        self,
        codes: torch.Tensor,
        target_codes: torch.Tensor,
        method: str = "head",
        temperature: float | None = None,
    ) -> RetrievalOutput:
        """Which action turned ``codes`` into ``target_codes`` (both (B, N))? Deterministic."""
        if method == "transition":
            temperature = self.config.retrieval_temperature if temperature is None else temperature
            scores = score_actions(self.transition_net, codes, target_codes, self.config.mixture_eps,
                                   self.config.retrieval_score, self.quantizer.embedding)
            logits = -scores / temperature
        elif method == "head":
            scores = None
            logits = self.head_logits(codes, target_codes)
            if temperature is not None:
                logits = logits / temperature
        else:
            raise ValueError(f"unknown retrieval method {method!r}; use 'head' or 'transition'")
        return RetrievalOutput(logits=logits, probs=torch.softmax(logits, -1), action=logits.argmax(-1), scores=scores)

    @torch.no_grad()
    def retrieve(
        self, x: torch.Tensor, x_prime: torch.Tensor, method: str = "head", temperature: float | None = None
    ) -> RetrievalOutput:
        """Which action turned image x into x_prime? ``method``: "head" or "transition"."""
        return self.retrieve_codes(self.encode_codes(x), self.encode_codes(x_prime), method, temperature)

    def retrieval_loss(self, codes: torch.Tensor, target_codes: torch.Tensor, action: torch.Tensor) -> RetrievalLoss:
        """Cross-entropy of the retrieval head on code pairs labelled with their action."""
        logits = self.head_logits(codes, target_codes)
        return RetrievalLoss(
            loss=F.cross_entropy(logits, action),
            accuracy=(logits.argmax(-1) == action).float().mean(),
            logits=logits,
        )

    # ------------------------------------------------------------------ editing
    @torch.no_grad()
    def edit_codes(self, codes: torch.Tensor, action: ActionLike) -> torch.Tensor:
        """Deterministic intervention on codes (B, N) -> new codes (B, N)."""
        return self.transition(codes, action, sample=False).predicted_codes

    @torch.no_grad()
    def edit(self, x: torch.Tensor, action: ActionLike) -> torch.Tensor:
        """encode, quantize, intervene with ``action`` ((B,) ids or an int), decode: images in [0, 1]."""
        return self.decode_codes(self.edit_codes(self.encode_codes(x), action))

    @torch.no_grad()
    def edit_sequence(
        self, x: torch.Tensor, actions: Sequence[ActionLike], return_intermediate: bool = False
    ) -> torch.Tensor:
        """Apply ``actions`` in order (in code space) and decode: (B, C, H, W), or with
        ``return_intermediate`` every step including the start: (B, T + 1, C, H, W)."""
        codes = self.encode_codes(x)
        steps = [codes]
        for action in actions:
            codes = self.edit_codes(codes, action)
            steps.append(codes)
        if not return_intermediate:
            return self.decode_codes(codes)
        frames = self.decode_codes(torch.cat(steps, dim=0))
        return rearrange(frames, "(t b) c h w -> b t c h w", t=len(steps))

    # ------------------------------------------------------------------ bookkeeping
    def parameter_counts(self) -> dict[str, int]:
        """Parameters per top-level submodule, and "total"."""
        counts = {name: sum(p.numel() for p in module.parameters()) for name, module in self.named_children()}
        counts = {k: v for k, v in counts.items() if v}
        counts["total"] = sum(p.numel() for p in self.parameters())
        return counts

    RETRIEVAL_HEAD_FIELDS = ("retrieval_head", "retrieval_dim", "retrieval_layers", "retrieval_heads")
    # The causal part: its graph, sparsity and transition settings (a change to them needs a new
    # transition; the autoencoder, the codes and the retrieval head stay valid).
    TRANSITION_FIELDS = (
        "gumbel_temperature", "adjacency_init_logit", "local_parent_logit", "target_init_logit", "state_dependent_targets",
        "target_head_dim", "target_context_layers", "target_state_bound", "sparsity_mode",
        "target_penalty_weight", "adjacency_penalty_weight", "target_budget", "target_budget_start",
        "adjacency_budget", "adjacency_budget_start", "dual_lr", "transition_dim", "transition_layers",
        "transition_heads", "transition_position", "transition_window", "mixture_eps", "equation_loss_weight",
        "kept_equation_weight", "intervention", "keep_threshold", "edit_loss_weight",
    )

    # Settings that no weight depends on: how the causal stage is trained (budgets and their
    # schedule, the multipliers' step, the losses) and how retrieval by transition scores. A model
    # can change them and keep every weight, the dual multipliers included.
    SETTINGS_FIELDS = (
        "gumbel_temperature", "sparsity_mode", "target_penalty_weight", "adjacency_penalty_weight",
        "target_budget", "target_budget_start", "adjacency_budget", "adjacency_budget_start", "dual_lr",
        "mixture_eps", "equation_loss_weight", "kept_equation_weight", "intervention", "keep_threshold",
        "edit_loss_weight", "retrieval_temperature", "retrieval_score",
    )

    def with_settings(self, **fields: Any) -> CausalVQVAE:
        """A copy of this model with other :attr:`SETTINGS_FIELDS` (e.g. the budgets held from the
        start of a fine-tuning stage: ``target_budget_start=48``) and every weight and buffer kept,
        the dual multipliers included."""
        return self._with_new("with_settings", (), self.SETTINGS_FIELDS, fields)

    def with_retrieval_head(self, **fields: Any) -> CausalVQVAE:
        """A copy of this model with a new, untrained retrieval head of ``fields`` (any of
        :attr:`RETRIEVAL_HEAD_FIELDS`); every other weight and buffer is copied. Train the head with
        the ``head`` stage (``train.py --stage head --init DIR --config FILE``)."""
        return self._with_new("with_retrieval_head", ("retrieval_head.",), self.RETRIEVAL_HEAD_FIELDS, fields)

    def with_new_transition(self, **fields: Any) -> CausalVQVAE:
        """A copy of this model with a new, untrained transition and causal graph (initialised from
        ``config.seed``; dual multipliers at 0) of ``fields`` (any of :attr:`TRANSITION_FIELDS`, e.g.
        other budgets); the autoencoder, codebook and retrieval head are copied. Train it with the
        ``causal`` stage (``train.py --stage causal --init DIR --new-transition``)."""
        return self._with_new("with_new_transition", ("transition_net.", "target_dual.", "adjacency_dual."),
                              self.TRANSITION_FIELDS, fields)

    def _with_new(self, name: str, prefixes: tuple[str, ...], allowed: tuple[str, ...],
                  fields: Mapping[str, Any]) -> CausalVQVAE:
        unknown = sorted(set(fields) - set(allowed))
        if unknown:
            raise ValueError(f"{name} changes only {allowed}, not {unknown}")
        fresh = type(self)(replace(self.config, **fields))
        kept = {k: v for k, v in self.state_dict().items() if not k.startswith(prefixes)}
        missing, unexpected = fresh.load_state_dict(kept, strict=False)
        if unexpected or not all(k.startswith(prefixes) for k in missing):
            raise RuntimeError(f"weights outside {', '.join(p.rstrip('.') for p in prefixes)} did not carry over: "
                               f"missing {missing}, unexpected {unexpected}")
        return fresh.to(next(self.parameters()).device).train(self.training)
