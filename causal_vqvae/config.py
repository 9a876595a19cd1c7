"""Model configuration: one frozen dataclass holding every hyperparameter of :class:`CausalVQVAE`.

The config is the single source of truth a checkpoint is rebuilt from (``config.json`` next to
``model.safetensors``), so it round-trips through plain JSON: tuples become lists and back, and
unknown keys are refused rather than silently dropped.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

from .nn.retrieval import RETRIEVAL_SCORES
from .nn.transition import INTERVENTIONS, TRANSITION_POSITIONS
from .validation import build_settings

__all__ = ["ModelConfig", "LATENT_LAYOUTS", "QUANTIZER_MODES", "SPARSITY_MODES", "RECONSTRUCTION_LOSSES",
           "RETRIEVAL_SCORES", "INTERVENTIONS", "TRANSITION_POSITIONS"]

LATENT_LAYOUTS = ("grid", "tokens")
QUANTIZER_MODES = ("ema", "loss")
SPARSITY_MODES = ("constraint", "penalty", "none")
RECONSTRUCTION_LOSSES = ("mse", "bce")
RETRIEVAL_HEADS = ("conv", "transformer")
# The largest value of each size setting: far above any model this project trains, and low enough
# that a mistyped size is refused before it allocates (codebook_size 2**31 would ask for 256 GB).
SIZE_LIMITS = {
    "in_channels": 64, "image_size": 4096, "num_actions": 100_000, "hidden_dims": 8192, "num_res_blocks": 64,
    "norm_groups": 1024, "code_dim": 8192, "codebook_size": 1 << 16, "num_tokens": 4096,
    "token_codebook_size": 1 << 16, "token_layers": 64, "token_heads": 256, "mlp_ratio": 64,
    "target_head_dim": 8192, "target_context_layers": 64, "transition_dim": 8192, "transition_layers": 64,
    "transition_heads": 256, "retrieval_dim": 8192, "retrieval_layers": 64, "retrieval_heads": 256,
    "transition_window": 127,
}


@dataclass(frozen=True)
class ModelConfig:
    """Every hyperparameter of the model. Sequences are stored as tuples (copies of what was passed).

    Data
        in_channels: image channels, 1 (dSprites) or 3.
        image_size: square input side; must be divisible by ``2 ** len(hidden_dims)``.
        dataset: name of the data the model is for ("dsprites", "shapes3d", "celeba"); only checked
            by ``load_pretrained(expect=...)``.
        num_actions: number of action ids A; actions are long ids in ``[0, A)``.
        action_names: A display names, or empty.
        seed: seeds parameter initialisation and the default generators of the quantizer restart
            and graph sampling (each kept per device, derived from this seed).

    Autoencoder (images in [0, 1]; the decoder ends in logits and ``decode`` applies a sigmoid)
        hidden_dims: widths of the stride-2 4x4 convs; the grid side is image_size / 2**len.
        num_res_blocks: residual blocks at the grid resolution, in the encoder and in the decoder.
        norm_groups: GroupNorm groups (reduced to a divisor of the channel count where needed).
        local_encoder: the encoder normalises each position over its channels and uses 1x1 convs
            after downsampling, so a node's code depends only on a 22-pixel window around its cell
            (3 downsamplings): a change in one region leaves distant codes exactly as they were.
            False (models saved before the field): GroupNorm and 3x3 convs, where a cell sees about
            the whole image and one small dSprites sprite changes about 40 of the 64 codes
            (``experiments/dsprites_code_locality/``, ``docs/edit_exactness.md``). Grid layout only.
        reconstruction_loss: "mse" on sigmoid outputs, or "bce" on the decoder logits (good for
            binary dSprites).

    Latent layout
        latent_layout: "grid" = every cell of the grid is a node sharing one codebook of
            ``codebook_size`` codes; "tokens" = ``num_tokens`` global tokens read from the grid by
            cross-attention, each with its own codebook of ``token_codebook_size`` codes.
        code_dim: width D of a code vector.
        codebook_size: K of the shared codebook (grid layout).
        num_tokens: M nodes (tokens layout).
        token_codebook_size: K of each token's codebook (tokens layout).
        token_layers, token_heads: cross-attention blocks (and heads) of the token encoder and of
            the token decoder.
        mlp_ratio: hidden width / width of every transformer feed-forward.

    Quantizer
        quantizer_mode: "ema" (codebook = EMA of assigned encodings, updated by an explicit call)
            or "loss" (codebook is a parameter trained with the codebook loss).
        ema_decay: EMA decay of cluster sizes and embedding sums.
        ema_eps: Laplace smoothing of the cluster sizes.
        commitment_beta: weight of ||z - sg(e)||^2.
        dead_code_threshold: a code whose EMA cluster size falls below this is dead.
        restart_dead_codes: replace dead codes by random encodings of the current batch.

    Causal graph
        gumbel_temperature: temperature of the relaxed Bernoulli (Gumbel-sigmoid) samples.
        adjacency_init_logit: initial logit of every node -> node edge (high = dense start).
        local_parent_logit: grid layout only; None (default), every edge starts at
            ``adjacency_init_logit``. A number: the edges between cells one step apart (the 8
            around a cell) start at this logit instead, a locality prior that training may undo. A
            short run does not decide a graph that starts uniform (its edge probabilities stay
            alike and below 1/2, so evaluation keeps no parent); neighbours are where a moved or
            reshaped object's codes come from.
        target_init_logit: initial logit of every action -> node intervention target.
        state_dependent_targets: add a state-dependent term (action, code, position and a little
            context) to the global target logits; needed for the grid layout when where the object
            is varies per image (dSprites).
        target_head_dim: width of that state-dependent head.
        target_context_layers: self-attention layers over the nodes inside that head (0 = a pure
            per-node function of action + code + position).
        target_state_bound: the state-dependent term is bound * tanh(raw / bound), so it cannot
            saturate a node's mask beyond what the per-(action, node) global logit can undo.

    Sparsity of both graphs (expected edge counts = sums of sigmoids)
        sparsity_mode: "constraint" (expected counts <= budget by dual ascent; the Lagrangian is
            divided by N so multipliers are in units of the per-node NLL), "penalty" (weighted
            expected counts) or "none".
        target_penalty_weight, adjacency_penalty_weight: weights in "penalty" mode (on the mean
            expected targets per action and the mean expected parents per node).
        target_budget: intervened nodes allowed per action at the end of the schedule. None =
            by layout: 3/8 of the grid's nodes (24 of 64; a grid factor such as a wall hue changes
            16-21 nodes of the twins, and a budget of 4 there switched every intervention off at
            evaluation), or half the tokens in the tokens layout (4 of 8: a twin pair changes 2-3
            tokens, and a budget of 2 there switched interventions off at evaluation too).
        target_budget_start: budget at progress 0; None = number of nodes.
        adjacency_budget: parents allowed per node at the end of the schedule.
        adjacency_budget_start: budget at progress 0; None = number of nodes - 1.
        dual_lr: step size of the Lagrange multipliers' gradient ascent.

    Transition (structural equations)
        transition_dim, transition_layers, transition_heads: width, blocks and heads.
        transition_position: how an equation knows where its node and parents are. "absolute"
            (models saved before the field): a learned embedding per node, added to the node's and
            its parents' inputs, so each cell learns its own equations. "relative" (grid layout
            only): no per-node embedding; each attention layer adds a learned bias per head for the
            parent's offset from the node (dy, dx). Every cell then computes its equation with the
            same weights from what its parents hold (the graph still chooses each cell's parents
            and targets), so a rule learnt where a sprite was seen can serve wherever it is.
            "relative_kv": as "relative", and each layer also adds a learned vector per offset to a
            parent's key and to its value (relative position representations), so a node's state
            holds where the parents it attends to are, not only what they hold (off by default: in
            one run on the demo model, edits within the intervals of the preset's and the
            direction of a turn still undecided; experiments/demo_edits/, fifth round).
        transition_window: 0 (models saved before the field): none. An odd width k >= 3 (grid
            layout only): before the attention layers, each node reads the k x k cells around it
            at once, through an MLP over their concatenated embeddings and the action
            (:class:`~causal_vqvae.nn.window.ParentWindowBlock`; a cell that is not a parent
            enters as the learned constant, so the graph still decides what a node depends on).
            Attention sums what it reads, and could not tell which way a small sprite turns; a
            window computes any function of the neighbourhood's configuration, as a convolution
            does (on the demo model: orientation edits 14% -> 86% exact, the direction of a turn
            retrieved 56% -> 100%; experiments/demo_edits/, seventh round).
        mixture_eps: floor on the probability of the target code under the intervention mixture;
            bounds the loss by -log(eps) and the straight-through gradient to the mask.
        equation_loss_weight: weight of the cross-entropy of the transition logits against the
            target codes, whatever the mask, so the equations keep learning on nodes whose
            intervention mask is currently closed: on every node with ``intervention="resample"``,
            on the nodes whose code changes with ``"change"`` (normalised by all nodes).
        kept_equation_weight: the weight, in that equation term, of the nodes whose code stays
            (the nodes whose code changes weigh 1; the sum is divided by all nodes). 1 (models saved
            before the field): the plain cross-entropy, in which the kept nodes, about two thirds of
            a dSprites grid, teach every equation to keep its code, so that an intervened node whose
            code must change stays (``experiments/edit_diagnosis/``). 0: the equations learn from the
            changed nodes alone, and an intervened node learns to keep its code only through the
            mixture NLL, where the mask has opened. Must be in [0, 1]; "change" uses 0.
        intervention: what an intervened node's structural equation may output. "resample" (the
            default): any code, its current one included. "change": a new code, never the node's
            current one; the equation term then sums over the changed nodes and divides by all
            nodes. Trained under "change", the mask learns to intervene only where a change is
            near certain and closes on the nodes a small change may or may not reach: fine-tuning
            the 3D Shapes release under it for 2,000 steps took its edits from 89% to 75% exact,
            orientation edits 70% unchanged (``docs/edit_exactness.md``). Kept for comparison.
        edit_loss_weight: weight of the pixel MSE between the decoded edit and the decoded target
            codes (``CausalVQVAE.edit_error``), added to the transition loss: it trains the
            equations and the mask by where the edit's codes send the frozen decoder, not by the
            codes' indices. 0: not computed (the models saved before the field).
        keep_threshold: how an intervened node's code is read off its equation at evaluation: it
            keeps its current code only when the equation gives that code at least this
            probability, and otherwise takes the most likely *other* code; None = the most likely
            code, the current one included (models saved before this field). The equations of a
            "resample" model put the current code first on 19-38% of the 3D Shapes nodes whose code
            must change, although its probability is below 1/2 on most of them: a change spread
            over several new codes, each less likely than staying, read one code at a time, leaves
            the node as it was (``experiments/edit_diagnosis/``). 0.5 keeps a node exactly when
            keeping is more likely than changing. No weight depends on it; retrieval does not use
            it; training reads codes with it only in the edit loss (``edit_loss_weight``) and in
            the reported code accuracy.

    Retrieval
        retrieval_head: the learned head, "conv" (a CNN on the pair's code vectors; grid layout only)
            or "transformer" (attention over learned code embeddings, any layout). None = by layout:
            "conv" for the grid, "transformer" for tokens. Models saved before this field existed
            have a transformer head, and load as such.
        retrieval_dim, retrieval_layers, retrieval_heads: its width (channels of the CNN), blocks
            (the CNN's 3x3 blocks at full resolution) and attention heads (transformer only).
        retrieval_score: how retrieval by transition scores an action (lower is better):
            "marginal_nll", the sum over nodes of the mixture NLL of the target codes with each
            node's intervention mask at its probability sigmoid(target logit) rather than
            thresholded: the NLL of the target codes under the model training samples (a hard
            Gumbel-sigmoid mask is 1 with that probability), the mask marginalised out, so that
            its probabilities at T = 1 are the posterior over actions under a uniform prior;
            "code_distance", the sum over nodes of the squared distance between the transition's
            expected code vector (sum_k p_k e_k over an intervened node's predicted codes; a kept
            node's current code) and the target's code vector, in units of the codebook's mean
            squared distance between two codes (so about 1 per sure wrong code); or "nll", the mean
            over nodes of the mixture NLL with the thresholded masks. A thresholded mask makes a
            node just under 1/2 cost -log(mixture_eps) whenever its code changes; weighed by its
            probability, it costs what the structural equation misses. On the current releases'
            5,000 validation pairs "marginal_nll" retrieves 97.9% against 89.5% ("code_distance")
            and 87.7% ("nll") on dSprites, and 99.8% against 98.6% and 99.1% on 3D Shapes
            (``experiments/transition_scores/``). Models saved before this field existed load with
            the default; "code_distance" was the default before "marginal_nll" existed.
        retrieval_temperature: temperature of softmax(-score / T) in retrieval by transition.
    """

    # data
    in_channels: int = 3
    image_size: int = 64
    dataset: str = ""
    num_actions: int = 12
    action_names: tuple[str, ...] = ()
    seed: int = 0
    # autoencoder
    hidden_dims: tuple[int, ...] = (64, 128, 256)
    num_res_blocks: int = 6
    norm_groups: int = 32
    local_encoder: bool = False
    reconstruction_loss: str = "mse"
    # latent layout
    latent_layout: str = "grid"
    code_dim: int = 128
    codebook_size: int = 64
    num_tokens: int = 8
    token_codebook_size: int = 16
    token_layers: int = 2
    token_heads: int = 4
    mlp_ratio: int = 4
    # quantizer
    quantizer_mode: str = "ema"
    ema_decay: float = 0.99
    ema_eps: float = 1e-5
    commitment_beta: float = 0.25
    dead_code_threshold: float = 1.0
    restart_dead_codes: bool = True
    # causal graph
    gumbel_temperature: float = 1.0
    adjacency_init_logit: float = 5.0
    local_parent_logit: float | None = None
    target_init_logit: float = 5.0
    state_dependent_targets: bool = True
    target_head_dim: int = 64
    target_context_layers: int = 1
    target_state_bound: float = 5.0
    # sparsity
    sparsity_mode: str = "constraint"
    target_penalty_weight: float = 0.05
    adjacency_penalty_weight: float = 0.01
    target_budget: float | None = None
    target_budget_start: float | None = None
    adjacency_budget: float = 4.0
    adjacency_budget_start: float | None = None
    dual_lr: float = 0.01
    # transition
    transition_dim: int = 256
    transition_layers: int = 4
    transition_heads: int = 8
    transition_position: str = "absolute"
    transition_window: int = 0
    mixture_eps: float = 1e-3
    equation_loss_weight: float = 1.0
    kept_equation_weight: float = 0.0
    intervention: str = "resample"
    keep_threshold: float | None = 0.5
    edit_loss_weight: float = 0.0
    # retrieval
    retrieval_head: str | None = None
    retrieval_dim: int = 128
    retrieval_layers: int = 2
    retrieval_heads: int = 4
    retrieval_score: str = "marginal_nll"
    retrieval_temperature: float = 1.0

    def __post_init__(self) -> None:
        # Store copies as tuples: the caller's lists are never touched (nor aliased).
        object.__setattr__(self, "hidden_dims", tuple(int(h) for h in self.hidden_dims))
        object.__setattr__(self, "action_names", tuple(str(a) for a in self.action_names))
        for field in fields(self):  # 8 from a JSON file is 8.0 for a float field
            value = getattr(self, field.name)
            if field.type in ("float", "float | None") and isinstance(value, int) and not isinstance(value, bool):
                object.__setattr__(self, field.name, float(value))
        self._validate()

    def _validate(self) -> None:
        def need(ok: bool, message: str) -> None:
            if not ok:
                raise ValueError(f"ModelConfig: {message}")

        for name, limit in SIZE_LIMITS.items():  # beyond these, a model's tensors would not fit any memory
            value = getattr(self, name)
            largest = max(value) if isinstance(value, tuple) and value else value
            need(not isinstance(largest, int) or largest <= limit,
                 f"{name} {value} is above its limit {limit}: a model this size would not fit in memory")
        need(self.in_channels >= 1, f"in_channels must be >= 1, got {self.in_channels}")
        need(len(self.hidden_dims) >= 1, "hidden_dims needs at least one width")
        need(all(h >= 1 for h in self.hidden_dims), f"hidden_dims must be positive, got {self.hidden_dims}")
        factor = 2 ** len(self.hidden_dims)
        need(
            self.image_size % factor == 0 and self.image_size >= factor,
            f"image_size {self.image_size} must be a multiple of 2**len(hidden_dims) = {factor}",
        )
        need(self.num_res_blocks >= 0, f"num_res_blocks must be >= 0, got {self.num_res_blocks}")
        need(self.norm_groups >= 1, f"norm_groups must be >= 1, got {self.norm_groups}")
        need(isinstance(self.local_encoder, bool), f"local_encoder must be true or false, got {self.local_encoder!r}")
        need(self.transition_position in TRANSITION_POSITIONS,
             f"transition_position must be one of {TRANSITION_POSITIONS}, got {self.transition_position!r}")
        need(self.transition_window == 0 or (self.transition_window % 2 == 1 and self.transition_window >= 3),
             f"transition_window must be 0 (none) or an odd width >= 3, got {self.transition_window}")
        need(self.transition_window == 0 or self.latent_layout == "grid",
             "transition_window needs latent_layout 'grid': tokens have no neighbours")
        need(self.transition_position == "absolute" or self.latent_layout == "grid",
             f"transition_position {self.transition_position!r} needs latent_layout 'grid': tokens have no offsets")
        need(self.local_parent_logit is None or self.latent_layout == "grid",
             "local_parent_logit needs latent_layout 'grid': tokens have no neighbours")
        need(not (self.local_encoder and self.latent_layout == "tokens"),
             "local_encoder needs latent_layout 'grid': the tokens layout's encoder attends over the whole image")
        need(
            self.reconstruction_loss in RECONSTRUCTION_LOSSES,
            f"reconstruction_loss must be one of {RECONSTRUCTION_LOSSES}, got {self.reconstruction_loss!r}",
        )
        need(
            self.latent_layout in LATENT_LAYOUTS,
            f"latent_layout must be one of {LATENT_LAYOUTS}, got {self.latent_layout!r}",
        )
        need(self.code_dim >= 1, f"code_dim must be >= 1, got {self.code_dim}")
        need(self.codebook_size >= 1, f"codebook_size must be >= 1, got {self.codebook_size}")
        need(self.num_tokens >= 1, f"num_tokens must be >= 1, got {self.num_tokens}")
        need(self.token_codebook_size >= 1, f"token_codebook_size must be >= 1, got {self.token_codebook_size}")
        need(self.token_layers >= 1, f"token_layers must be >= 1, got {self.token_layers}")
        for name in ("token_heads", "transition_heads", "retrieval_heads"):
            need(getattr(self, name) >= 1, f"{name} must be >= 1")
        need(self.code_dim % self.token_heads == 0 or self.latent_layout == "grid",
             f"code_dim {self.code_dim} must be divisible by token_heads {self.token_heads}")
        need(self.transition_dim % self.transition_heads == 0,
             f"transition_dim {self.transition_dim} must be divisible by transition_heads {self.transition_heads}")
        need(self.retrieval_dim % self.retrieval_heads == 0,
             f"retrieval_dim {self.retrieval_dim} must be divisible by retrieval_heads {self.retrieval_heads}")
        need(self.target_head_dim % 4 == 0 or self.target_context_layers == 0,
             f"target_head_dim {self.target_head_dim} must be divisible by 4 (its attention heads)")
        need(self.transition_layers >= 1, "transition_layers must be >= 1")
        need(self.retrieval_layers >= 1, "retrieval_layers must be >= 1")
        need(self.target_context_layers >= 0, "target_context_layers must be >= 0")
        need(self.target_state_bound > 0.0, f"target_state_bound must be > 0, got {self.target_state_bound}")
        need(self.mlp_ratio >= 1, "mlp_ratio must be >= 1")
        need(
            self.quantizer_mode in QUANTIZER_MODES,
            f"quantizer_mode must be one of {QUANTIZER_MODES}, got {self.quantizer_mode!r}",
        )
        need(0.0 <= self.ema_decay < 1.0, f"ema_decay must be in [0, 1), got {self.ema_decay}")
        need(self.ema_eps > 0.0, f"ema_eps must be > 0, got {self.ema_eps}")
        need(self.commitment_beta >= 0.0, f"commitment_beta must be >= 0, got {self.commitment_beta}")
        need(self.dead_code_threshold >= 0.0, f"dead_code_threshold must be >= 0, got {self.dead_code_threshold}")
        need(self.gumbel_temperature > 0.0, f"gumbel_temperature must be > 0, got {self.gumbel_temperature}")
        need(
            self.sparsity_mode in SPARSITY_MODES,
            f"sparsity_mode must be one of {SPARSITY_MODES}, got {self.sparsity_mode!r}",
        )
        need((self.target_budget is None or self.target_budget >= 0.0) and self.adjacency_budget >= 0.0,
             "budgets must be >= 0")
        need(self.dual_lr >= 0.0, f"dual_lr must be >= 0, got {self.dual_lr}")
        need(self.equation_loss_weight >= 0.0, f"equation_loss_weight must be >= 0, got {self.equation_loss_weight}")
        need(0.0 <= self.kept_equation_weight <= 1.0,
             f"kept_equation_weight must be in [0, 1], got {self.kept_equation_weight}")
        need(0.0 < self.mixture_eps < 1.0, f"mixture_eps must be in (0, 1), got {self.mixture_eps}")
        need(self.intervention in INTERVENTIONS,
             f"intervention must be one of {INTERVENTIONS}, got {self.intervention!r}")
        need(self.keep_threshold is None or (isinstance(self.keep_threshold, (int, float))
                                             and not isinstance(self.keep_threshold, bool)
                                             and 0.0 < self.keep_threshold <= 1.0),
             f"keep_threshold must be in (0, 1] or None, got {self.keep_threshold!r}")
        need(self.edit_loss_weight >= 0.0, f"edit_loss_weight must be >= 0, got {self.edit_loss_weight}")
        need(self.retrieval_temperature > 0.0, "retrieval_temperature must be > 0")
        need(self.retrieval_score in RETRIEVAL_SCORES,
             f"retrieval_score must be one of {RETRIEVAL_SCORES}, got {self.retrieval_score!r}")
        need(self.retrieval_head in (None, *RETRIEVAL_HEADS),
             f"retrieval_head must be one of {RETRIEVAL_HEADS} or None (by layout), got {self.retrieval_head!r}")
        need(self.retrieval_head != "conv" or self.latent_layout == "grid",
             "retrieval_head 'conv' needs latent_layout 'grid' (tokens have no grid to convolve); "
             "use 'transformer' or None")
        need(self.num_actions >= 1, f"num_actions must be >= 1, got {self.num_actions}")
        need(
            len(self.action_names) in (0, self.num_actions),
            f"action_names has {len(self.action_names)} names but num_actions is {self.num_actions}",
        )

    # ------------------------------------------------------------------ derived sizes
    @property
    def grid_size(self) -> int:
        """Side of the encoder's code grid (8 for 64x64 images and three stride-2 convs)."""
        return self.image_size // 2 ** len(self.hidden_dims)

    @property
    def num_nodes(self) -> int:
        """N, the number of quantized nodes of the causal graph."""
        return self.grid_size**2 if self.latent_layout == "grid" else self.num_tokens

    @property
    def resolved_target_budget(self) -> float:
        """``target_budget``, or its layout default when None (see the class docstring)."""
        if self.target_budget is not None:
            return float(self.target_budget)
        return 3 * self.num_nodes / 8 if self.latent_layout == "grid" else self.num_nodes / 2

    @property
    def resolved_retrieval_head(self) -> str:
        """``retrieval_head``, or its layout default when None (see the class docstring)."""
        if self.retrieval_head is not None:
            return self.retrieval_head
        return "conv" if self.latent_layout == "grid" else "transformer"

    @property
    def num_codebooks(self) -> int:
        """G: 1 shared codebook (grid) or one per token (tokens)."""
        return 1 if self.latent_layout == "grid" else self.num_tokens

    @property
    def codes_per_node(self) -> int:
        """K, the number of codes a node can take."""
        return self.codebook_size if self.latent_layout == "grid" else self.token_codebook_size

    def action_name(self, action_id: int) -> str:
        return self.action_names[action_id] if self.action_names else f"action_{action_id}"

    # ------------------------------------------------------------------ serialisation
    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict (tuples as lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "ModelConfig") -> ModelConfig:
        """Inverse of :meth:`to_dict`; missing keys take their defaults. Every key is checked
        (:func:`~causal_vqvae.validation.build_settings`): an unknown key, a value of the wrong
        type or out of its range raises :class:`~causal_vqvae.validation.SettingsError` (a
        ValueError) naming ``where`` (the file) and the key."""
        return build_settings(cls, data, where)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ModelConfig:
        return cls.from_dict(json.loads(text))
