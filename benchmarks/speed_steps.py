"""The steps ``model_speed.py`` times: the measurement names, the model of a preset (or the tiny
smoke-test model), the rendered input sets, and one optimiser or inference step per measurement
(:func:`build_step`). A script module beside ``model_speed.py``, not a package."""

from __future__ import annotations

import sys
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch

# ``python benchmarks/model_speed.py`` puts benchmarks/ on the path, not the repository root.
_ROOT = Path(__file__).resolve().parents[1]
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

from causal_vqvae.config import ModelConfig  # noqa: E402
from causal_vqvae.model import CausalVQVAE  # noqa: E402
from causal_vqvae.training.config import TrainConfig  # noqa: E402
from causal_vqvae.training.module import AUTOENCODER_PARTS, parameter_groups  # noqa: E402
from causal_vqvae.training.presets import PRESETS  # noqa: E402
from datamodules.factors import ActionSpace  # noqa: E402
from datamodules.pairs import TransitionPairs  # noqa: E402
from datamodules.shapes3d import SHAPES3D, Shapes3DScene, render_shapes3d  # noqa: E402

AE_TRAIN = "autoencoder training"
TRANSITION_TRAIN = "transition training"
RETRIEVAL_TRAIN = "retrieval training"
HEAD_INFER = "retrieval inference (head)"
TRANSITION_INFER = "retrieval inference (transition)"
MEASUREMENTS = (AE_TRAIN, TRANSITION_TRAIN, RETRIEVAL_TRAIN, HEAD_INFER, TRANSITION_INFER)
UNITS = {AE_TRAIN: "img/s"} | {m: "pairs/s" for m in MEASUREMENTS[1:]}

# --tiny: a model small enough for a CPU smoke test (3 channels, 64x64 as the twin renders).
TINY_MODEL: dict[str, Any] = dict(
    hidden_dims=(8, 16, 16), num_res_blocks=1, norm_groups=4, code_dim=8, codebook_size=16,
    num_tokens=4, token_codebook_size=8, token_layers=1, token_heads=2, mlp_ratio=2,
    target_head_dim=8, transition_dim=16, transition_layers=1, transition_heads=2,
    retrieval_dim=16, retrieval_layers=1, retrieval_heads=2,
)
# --tiny renders with one ray per pixel and a one-sample shadow: the same twin scene, but its
# surface-weight table builds in about a second on a busy CPU instead of ten.
TINY_SCENE = Shapes3DScene(supersample=1, shadow_samples=1, shadow_texels_per_unit=16)


# ------------------------------------------------------------------------------------------ setup
def preset_model(preset: str) -> dict[str, Any]:
    """The model fields of ``train.py --preset NAME`` (lists as tuples, as ModelConfig holds them)."""
    if preset not in PRESETS:
        raise SystemExit(f"unknown --preset {preset!r}; choose from {sorted(PRESETS)}")
    return {k: tuple(v) if isinstance(v, list) else v for k, v in PRESETS[preset]["model"].items()}


def model_config(layout: str, tiny: bool, preset: str = "default") -> ModelConfig:
    """The measured model: ``train.py``'s preset (``--tiny``: TINY_MODEL) in ``layout``. The
    retrieval head is the layout's default (the CNN for the grid, the transformer for tokens)."""
    actions = ActionSpace(SHAPES3D)
    fields = TINY_MODEL if tiny else preset_model(preset)
    return ModelConfig(
        in_channels=3, image_size=64, dataset="shapes3d", num_actions=len(actions),
        action_names=tuple(actions.names), seed=0, **{**fields, "latent_layout": layout},
    )


def render_sets(
    batch: int, num_sets: int, device: torch.device, scene: Shapes3DScene | None = None
) -> list[dict[str, torch.Tensor]]:
    """``num_sets`` batches of twin pairs (distinct pairs), rendered on ``device``."""
    pairs = TransitionPairs(SHAPES3D, "train", length=batch * num_sets, seed=0)
    sets = []
    for k in range(num_sets):
        b = pairs.__getitems__(np.arange(k * batch, (k + 1) * batch))
        sets.append({
            "x": render_shapes3d(b["factors"].to(device), scene),
            "x_next": render_shapes3d(b["factors_next"].to(device), scene),
            "action": b["action"].to(device),
        })
    return sets


def autocast_for(device: torch.device, precision: str):
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return nullcontext()


def _is_autoencoder_param(name: str) -> bool:
    return name.split(".", 1)[0] in AUTOENCODER_PARTS


def _adamw(params: list, lr: float, tc: TrainConfig, impl: str, device: torch.device):
    """AdamW over ``params``: parameters, or parameter groups (which keep their own lr and decay)."""
    kwargs: dict[str, Any] = {"lr": lr, "weight_decay": tc.weight_decay}
    if impl == "fused" and device.type == "cuda":
        kwargs["fused"] = True
    elif impl == "foreach":
        kwargs["foreach"] = True
    return torch.optim.AdamW(params, **kwargs)


def _clip(params: list[torch.nn.Parameter], tc: TrainConfig) -> None:
    if tc.grad_clip:
        torch.nn.utils.clip_grad_norm_(params, tc.grad_clip, foreach=True)


def build_step(
    measurement: str, config: ModelConfig, device: torch.device, precision: str, tc: TrainConfig,
    adamw: str, channels_last: bool = False,
) -> tuple[Callable[[dict[str, torch.Tensor]], Any], CausalVQVAE]:
    """A fresh model and the step function ``step(inputs)`` of ``measurement``."""
    model = CausalVQVAE(config).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    amp = lambda: autocast_for(device, precision)  # noqa: E731

    if measurement == AE_TRAIN:
        model.train()
        params = [p for n, p in model.named_parameters() if _is_autoencoder_param(n)]
        opt = _adamw(params, tc.vqvae_lr, tc, adamw, device)

        def step(inp):
            opt.zero_grad(set_to_none=True)
            with amp():
                loss = model.autoencoder_loss(inp["x"]).loss
            loss.backward()
            _clip(params, tc)
            opt.step()

        return step, model

    if measurement in (TRANSITION_TRAIN, RETRIEVAL_TRAIN):
        # The causal stage: autoencoder frozen and in eval mode (no codebook update).
        model.train()
        for name in AUTOENCODER_PARTS:
            part = getattr(model, name, None)
            if part is not None:
                part.requires_grad_(False)
                part.eval()
        if measurement == RETRIEVAL_TRAIN:
            params = list(model.retrieval_head.parameters())
            opt = _adamw(params, tc.causal_lr, tc, adamw, device)
        else:  # as the causal stage: the graph's edge logits in a group of their own
            groups = parameter_groups(model, tc.causal_lr, tc.graph_lr_scale, tc.weight_decay)
            params = [p for g in groups for p in g["params"]]
            opt = _adamw(groups, tc.causal_lr, tc, adamw, device)
        generator = torch.Generator(device=device)
        generator.manual_seed(1)
        progress = 0.5

        if measurement == RETRIEVAL_TRAIN:
            def step(inp):
                opt.zero_grad(set_to_none=True)
                with amp():
                    loss = model.retrieval_loss(inp["codes"], inp["codes_next"], inp["action"]).loss
                loss.backward()
                _clip(params, tc)
                opt.step()

            return step, model

        def step(inp):
            opt.zero_grad(set_to_none=True)
            with amp():
                tl = model.transition_loss(inp["codes"], inp["action"], inp["codes_next"], progress=progress,
                                           generator=generator)
                rl = model.retrieval_loss(inp["codes"], inp["codes_next"], inp["action"])
                loss = tc.transition_weight * tl.loss + tc.retrieval_weight * rl.loss
            loss.backward()
            _clip(params, tc)
            opt.step()
            # Dual ascent after the step, as the training module does.
            model.update_multipliers(tl)

        return step, model

    if measurement in (HEAD_INFER, TRANSITION_INFER):
        model.eval().requires_grad_(False)  # nothing to differentiate (and no grad hooks for the FLOP count)
        method = "head" if measurement == HEAD_INFER else "transition"

        def step(inp):
            with torch.no_grad(), amp():
                return model.retrieve(inp["x"], inp["x_next"], method=method).action

        return step, model

    raise ValueError(f"unknown measurement {measurement!r}")
