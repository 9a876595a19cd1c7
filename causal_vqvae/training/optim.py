"""The AdamW parameter groups of a training stage, and the conversion of optimiser states saved
under older group layouts to today's, so that ``--resume`` keeps every parameter's Adam state."""

from __future__ import annotations

from typing import Any

import torch

from ..model import CausalVQVAE
from .config import TrainConfig

__all__ = ["drop_untrained_from_vqvae_optimizer_state", "optimizer_group_mismatch", "parameter_groups",
           "regroup_optimizer_state"]


def parameter_groups(
    model: CausalVQVAE, lr: float, graph_lr_scale: float, weight_decay: float, head_lr: float = 0.0
) -> list[dict[str, Any]]:
    """AdamW parameter groups of the trainable parameters of ``model``: the graph's edge logits at
    ``lr * graph_lr_scale`` without weight decay; with ``head_lr`` > 0 the retrieval head at
    ``head_lr`` (:meth:`TrainConfig.head_lr_in`); everything else at ``lr`` with ``weight_decay`` (see
    :class:`TrainConfig`). Empty groups are left out; the schedule scales every group alike."""
    edge_ids = {id(p) for p in model.graph.edge_logits()}
    head_ids = {id(p) for p in model.retrieval_head.parameters()} if head_lr > 0.0 else set()
    trainable = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in trainable if id(p) not in edge_ids and id(p) not in head_ids], "lr": lr,
         "weight_decay": weight_decay, "name": "model"},
        {"params": [p for p in trainable if id(p) in edge_ids], "lr": lr * graph_lr_scale, "weight_decay": 0.0,
         "name": "graph_edge_logits"},
        {"params": [p for p in trainable if id(p) in head_ids], "lr": head_lr, "weight_decay": weight_decay,
         "name": "retrieval_head"},
    ]
    return [g for g in groups if g["params"]]


def _carry_adam_state(
    saved: dict[str, Any], old_layout: list[list[torch.nn.Parameter]], groups: list[dict[str, Any]]
) -> tuple[dict[int, Any], list[list[int]], list[int]]:
    """Move the per-parameter state of the optimiser state dict ``saved``, whose groups held
    ``old_layout``'s parameters in that order, to the parameter groups ``groups``: the new state by
    index, each new group's parameter indices, and the saved group each new group's first
    parameter came from. Parameters without state (never given a gradient) get none."""
    where = {id(p): (g, saved["param_groups"][g]["params"][i])
             for g, params in enumerate(old_layout) for i, p in enumerate(params)}
    state, ids, sources, index = {}, [], [], 0
    for group in groups:
        ids.append([])
        for p in group["params"]:
            old_id = where[id(p)][1]
            if old_id in saved["state"]:
                state[index] = saved["state"][old_id]
            ids[-1].append(index)
            index += 1
        sources.append(where[id(group["params"][0])][0])
    return state, ids, sources


def drop_untrained_from_vqvae_optimizer_state(checkpoint: dict[str, Any], model: CausalVQVAE,
                                               cfg: TrainConfig) -> None:
    """Bring the optimiser state of a ``vqvae``-stage checkpoint written while that stage left every
    parameter trainable (before it froze all but the autoencoder, which DDP needs) to this stage's
    groups, in place: the autoencoder's parameters keep their Adam moments and step counts; the
    others never had a gradient there, so they had no state to lose. The saved layout is one group of
    every parameter, or :func:`parameter_groups`'s two (the edge logits apart). Anything else is left
    to torch's own checks."""
    optimizers = checkpoint.get("optimizer_states") or []
    if checkpoint.get("hyper_parameters", {}).get("stage") != "vqvae" or len(optimizers) != 1:
        return
    saved = optimizers[0]
    every = list(model.parameters())
    edge_ids = {id(p) for p in model.graph.edge_logits()}
    layouts = [[every], [[p for p in every if id(p) not in edge_ids], [p for p in every if id(p) in edge_ids]]]
    sizes = [len(g["params"]) for g in saved.get("param_groups", [])]
    old_layout = next((lay for lay in layouts if [len(g) for g in lay] == sizes), None)
    if old_layout is None:  # this version's layout, or one torch's own checks judge
        return
    groups = parameter_groups(model, cfg.lr("vqvae"), cfg.graph_lr_scale, cfg.weight_decay)
    state, ids, sources = _carry_adam_state(saved, old_layout, groups)
    param_groups = [{**saved["param_groups"][source], "params": group_ids, "name": group["name"]}
                    for group, group_ids, source in zip(groups, ids, sources)]
    optimizers[0] = {"state": state, "param_groups": param_groups}
    for schedule in checkpoint.get("lr_schedulers") or []:
        for key in ("base_lrs", "_last_lr", "lr_lambdas"):
            if len(schedule.get(key) or []) == len(sizes):
                schedule[key] = [schedule[key][g] for g in sources]


def regroup_optimizer_state(checkpoint: dict[str, Any], model: CausalVQVAE, cfg: TrainConfig, stage: str) -> None:
    """Bring the optimiser state of a checkpoint written before the edge logits had a group of their
    own (before ``TrainConfig.graph_lr_scale``: one AdamW group of every trainable parameter, in
    ``model.parameters()`` order) to :func:`parameter_groups`'s groups, in place. Every parameter
    keeps its Adam moments and step count; the groups' rates, and the schedule's, become this
    config's (the edge logits at ``graph_lr_scale`` times the rest, the retrieval head at
    ``causal_head_lr`` where set), so the run goes on as one started with it would. Other layouts
    are left to :func:`optimizer_group_mismatch` and torch's own checks."""
    optimizers = checkpoint.get("optimizer_states") or []
    if len(optimizers) != 1 or len(optimizers[0].get("param_groups", [])) != 1:
        return
    groups = parameter_groups(model, cfg.lr(stage), cfg.graph_lr_scale, cfg.weight_decay, cfg.head_lr_in(stage))
    trainable = [p for p in model.parameters() if p.requires_grad]
    saved = optimizers[0]
    (old,) = saved["param_groups"]
    if len(groups) == 1 or len(old["params"]) != len(trainable):
        return
    factors = [g["lr"] / cfg.lr(stage) if cfg.lr(stage) else 1.0 for g in groups]
    shared = {k: v for k, v in old.items() if k not in ("params", "param_names", "lr", "initial_lr", "weight_decay")}
    state, all_ids, _ = _carry_adam_state(saved, [trainable], groups)
    param_groups = []
    for group, factor, ids in zip(groups, factors, all_ids):
        regrouped = {**shared, "params": ids, "name": group["name"], "weight_decay": group["weight_decay"],
                     "lr": old["lr"] * factor}
        if "initial_lr" in old:
            regrouped["initial_lr"] = old["initial_lr"] * factor
        param_groups.append(regrouped)
    optimizers[0] = {"state": state, "param_groups": param_groups}
    for schedule in checkpoint.get("lr_schedulers") or []:
        for key in ("base_lrs", "_last_lr"):
            if len(schedule.get(key) or []) == 1:
                schedule[key] = [schedule[key][0] * factor for factor in factors]
        if len(schedule.get("lr_lambdas") or []) == 1:
            schedule["lr_lambdas"] = schedule["lr_lambdas"] * len(groups)


def optimizer_group_mismatch(checkpoint: dict[str, Any], model: CausalVQVAE, cfg: TrainConfig,
                             stage: str) -> str | None:
    """What is wrong when a checkpoint's optimiser groups (by name, after the conversions above) are
    not this run's, e.g. one written with the retrieval head in a group of its own
    (``causal_head_lr`` above 0) resumed without it, or the reverse; None when they match or the
    checkpoint predates group names (torch's own checks then judge)."""
    optimizers = checkpoint.get("optimizer_states") or []
    if len(optimizers) != 1:
        return None
    saved = [group.get("name") for group in optimizers[0].get("param_groups", [])]
    mine = [g["name"] for g in parameter_groups(model, cfg.lr(stage), cfg.graph_lr_scale, cfg.weight_decay,
                                                  cfg.head_lr_in(stage))]
    if None in saved or saved == mine:
        return None
    hint = ("; the retrieval head has a group of its own when the train setting causal_head_lr is above 0: "
            "resume with the causal_head_lr the run was started with") if "retrieval_head" in saved + mine else ""
    return f"the checkpoint's optimiser has the parameter groups {saved}, this run's are {mine}{hint}"
