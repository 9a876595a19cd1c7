"""Held-out action retrieval by both methods beside its baselines (chance, constant, the oracle on
the true factors), edit fidelity against the twin's true renders, and the transition's code accuracy:
:func:`evaluate`."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .data import batches
from .metrics import Timer, accuracy_report, psnr

__all__ = ["METHODS", "evaluate"]

METHODS = ("transition", "head")


@torch.no_grad()
def evaluate(model, dm, name: str, pairs: int, batch: int, device: torch.device) -> dict[str, Any]:
    """On test items 0..pairs-1: retrieval by both methods, the chance, constant and oracle
    baselines, edit fidelity (see the module docstring) and the graph's
    ``adjacency_summary``; returns the results dict."""
    model.eval()
    actions = dm.actions
    num_actions = len(actions)
    factor_names = [dm.space.names[f] for f in actions.factors]

    def retrieve(x: torch.Tensor, x_next: torch.Tensor, method: str) -> torch.Tensor:
        return model.retrieve_codes(model.encode_codes(x), model.encode_codes(x_next), method).action

    # one untimed warm-up batch per method
    first = dm.prepare_batch({k: v.to(device) for k, v in next(batches(dm, "test", pairs, batch)).items()})
    for method in METHODS:
        retrieve(first["image"], first["image_next"], method)

    timers = {m: Timer(device) for m in METHODS}
    predicted: dict[str, list[torch.Tensor]] = {m: [] for m in METHODS}
    true, oracle = [], []
    sums = {"edit_mse": 0.0, "edit_psnr": 0.0, "recon_mse": 0.0, "recon_psnr": 0.0,
            "identity_mse": 0.0, "identity_psnr": 0.0, "node_acc": 0.0, "all_nodes": 0.0}
    for raw in batches(dm, "test", pairs, batch, "retrieval and edit fidelity"):
        b = dm.prepare_batch({k: v.to(device) for k, v in raw.items()})
        x, x_next, a = b["image"], b["image_next"], b["action"]
        true.append(a.cpu())
        oracle.append(actions.action_between(b["factors"], b["factors_next"]).cpu())
        for method in METHODS:
            predicted[method].append(timers[method](retrieve, x, x_next, method).cpu())

        codes, target_codes = model.encode_codes(x), model.encode_codes(x_next)
        pred_codes = model.transition(codes, a, sample=False).predicted_codes
        edited = model.decode_codes(pred_codes)  # == model.edit(x, a)
        for key, image in (("edit", edited), ("recon", model.decode_codes(target_codes)), ("identity", x)):
            mse = (image.float() - x_next.float()).pow(2).flatten(1).mean(1)
            sums[f"{key}_mse"] += mse.sum().item()
            sums[f"{key}_psnr"] += psnr(mse).sum().item()
        right = pred_codes == target_codes
        sums["node_acc"] += right.float().mean(1).sum().item()
        sums["all_nodes"] += right.all(1).float().sum().item()

    true_ids = torch.cat(true)
    n = true_ids.shape[0]
    methods = {}
    for method in METHODS:
        report = accuracy_report(torch.cat(predicted[method]), true_ids, num_actions, factor_names)
        seconds = timers[method].seconds
        report["seconds"] = seconds
        report["pairs_per_s"] = n / seconds if seconds > 0 else None
        methods[method] = report

    # baselines, scored by the same accuracy_report
    oracle_ids = torch.cat(oracle)
    if (oracle_ids < 0).any():
        raise RuntimeError("the oracle found no single action for some test pairs; the twin's pairs are broken")
    train_ids = torch.cat([raw["action"] for raw in batches(dm, "train", pairs, batch)])
    constant_id = int(torch.bincount(train_ids, minlength=num_actions).argmax())
    chance = accuracy_report(np.full((n, num_actions), 1.0 / num_actions), true_ids, num_actions, factor_names)
    chance["uniform"] = 1.0 / num_actions
    constant = accuracy_report(torch.full((n,), constant_id), true_ids, num_actions, factor_names)
    constant.update(action_id=constant_id, action_name=actions.names[constant_id], train_pairs=int(train_ids.numel()))
    baselines = {
        "chance": chance,
        "constant": constant,
        "oracle": accuracy_report(oracle_ids, true_ids, num_actions, factor_names),
    }

    fidelity = {
        "edit_mse": sums["edit_mse"] / n,
        "edit_psnr_db": sums["edit_psnr"] / n,
        "reconstruction_mse": sums["recon_mse"] / n,  # decode(encode(x')) vs x': the edit's ceiling
        "reconstruction_psnr_db": sums["recon_psnr"] / n,
        "identity_mse": sums["identity_mse"] / n,  # x itself vs x': editing nothing
        "identity_psnr_db": sums["identity_psnr"] / n,
        "code_node_accuracy": sums["node_acc"] / n,
        "code_all_nodes_accuracy": sums["all_nodes"] / n,
    }
    return {
        "action_names": list(actions.names),
        "factor_names": factor_names,
        "label_counts": torch.bincount(true_ids, minlength=num_actions).tolist(),
        "methods": methods,
        "baselines": baselines,
        "fidelity": fidelity,
        "graph": model.graph.adjacency_summary(),
    }
