"""Edit exactness: single edits and chains of k actions, read by the independent factor classifier
(:func:`evaluate_exactness`) and judged by the nearest render (:func:`evaluate_edits`, the pixel
judge of :mod:`.judge`, which needs no training)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from tqdm.auto import tqdm

from .data import batches
from .factor_classifier import FactorClassifier, disturbance, exact_edits
from .judge import judge_edits, rate

__all__ = ["SEQUENCE_STEPS", "action_sequences", "evaluate_exactness", "evaluate_edits"]

SEQUENCE_STEPS = (2, 3, 4)  # successive edits judged besides the single edits of the test pairs


def action_sequences(
    actions, start: torch.Tensor, k: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """``k`` actions for each start state ``(N, F)``, each drawn uniformly among the actions valid at
    the current TRUE state (``ActionSpace.valid_mask``) from ``generator``: returns the ids
    ``(N, k)`` and the true final states ``(N, F)``."""
    state = start
    ids = []
    for _ in range(k):
        valid = actions.valid_mask(state)  # (N, A)
        a = torch.multinomial(valid.double(), 1, generator=generator)[:, 0]
        state, ok = actions.apply(state, a)
        if not bool(ok.all()):
            raise RuntimeError("an action drawn among the valid ones was invalid; ActionSpace is inconsistent")
        ids.append(a)
    return torch.stack(ids, 1), state


def _judged(reads: Mapping[str, list[torch.Tensor]], truth: torch.Tensor, space) -> dict[str, Any]:
    """Exactness of the edited images and of both references, from their readings."""
    def rate(key: str) -> float:
        return float(exact_edits(torch.cat(reads[key]), truth, space).float().mean())

    return {"n": int(truth.shape[0]), "exact": rate("edit"), "reference_true_render": rate("true"),
            "reference_reconstruction": rate("recon")}


@torch.no_grad()
def evaluate_exactness(
    model, classifier: FactorClassifier, dm, pairs: int, batch: int, seed: int, device: torch.device,
) -> dict[str, Any]:
    """Edit exactness (definitions in :mod:`causal_vqvae.eval.factor_classifier`), read by ``classifier``.

    ``k1``: on test items 0..pairs-1, ``model.edit(x, a)`` is exact iff its reading matches the true
    target ``factors_next`` on every factor; with ``per_acted_factor`` (exactness by the factor the
    action moves) and ``disturbed`` (per factor, the fraction of edits of OTHER factors that changed
    its reading). ``k2``, ``k3``, ``k4``: from each of the same test start states, ``model.edit_sequence``
    of k actions from :func:`action_sequences` (one ``torch.Generator`` seeded with ``seed``, drawn for
    each k of :data:`SEQUENCE_STEPS` in turn) is exact iff its reading matches the true final state. Each also gives, as
    references, the exactness of the true renders of the targets (the classifier's own accuracy on
    them) and of ``decode(encode(target))`` (the autoencoder's ceiling for any edit).
    """
    model.eval()
    classifier.eval()
    space, actions = dm.space, dm.actions
    render = dm.source.render

    def read_all(reads: dict[str, list[torch.Tensor]], edited: torch.Tensor, target: torch.Tensor) -> None:
        recon = model.decode_codes(model.encode_codes(target))
        for key, images in (("edit", edited), ("true", target), ("recon", recon)):
            reads[key].append(classifier.read(images).cpu())

    reads: dict[str, list[torch.Tensor]] = {"edit": [], "true": [], "recon": []}
    truth, acted = [], []
    for raw in batches(dm, "test", pairs, batch, "edit exactness, k = 1"):
        b = dm.prepare_batch({k: v.to(device) for k, v in raw.items()})
        read_all(reads, model.edit(b["image"], b["action"]), b["image_next"])
        truth.append(raw["factors_next"])
        acted.append(actions.factor_of(raw["action"]))
    truth_t, acted_t = torch.cat(truth), torch.cat(acted)
    single = {"k": 1, **_judged(reads, truth_t, space)}
    exact = exact_edits(torch.cat(reads["edit"]), truth_t, space)
    single["per_acted_factor"] = {}
    for f in actions.factors:
        members = acted_t == f
        count = int(members.sum())
        single["per_acted_factor"][space.names[f]] = {
            "count": count, "exact": float(exact[members].float().mean()) if count else None}
    single["disturbed"] = disturbance(torch.cat(reads["edit"]), truth_t, acted_t, space)
    results = {"k1": single}

    start = dm._datasets["test"].__getitems__(list(range(pairs)))["factors"]
    generator = torch.Generator().manual_seed(seed)
    for k in SEQUENCE_STEPS:
        ids, final = action_sequences(actions, start, k, generator)
        reads = {"edit": [], "true": [], "recon": []}
        for i in tqdm(range(0, pairs, batch), desc=f"edit exactness, k = {k}", leave=False, dynamic_ncols=True):
            x = render(start[i:i + batch].to(device))
            steps = [ids[i:i + batch, t].to(device) for t in range(k)]
            read_all(reads, model.edit_sequence(x, steps), render(final[i:i + batch].to(device)))
        results[f"k{k}"] = {"k": k, **_judged(reads, final, space)}
    return results


def _verdict_rates(verdicts: Mapping[str, torch.Tensor], members: torch.Tensor | None = None) -> dict[str, Any]:
    keys = ("exact", "exact_strict", "unchanged", "two_sided")
    return {key: rate(verdicts[key] if members is None else verdicts[key][members]) for key in keys
            if key in verdicts}


def _edit_in_a_row(model, x: torch.Tensor, steps: list[torch.Tensor]) -> torch.Tensor:
    """k edits one after the other, each decoded to an image and encoded again (as a user would
    edit the result of an edit)."""
    for action in steps:
        x = model.edit(x, action)
    return x


@torch.no_grad()
def evaluate_edits(model, dm, pairs: int, batch: int, seed: int, device: torch.device) -> dict[str, Any]:
    """Edit exactness by the nearest render (:func:`~causal_vqvae.eval.judge.judge_edits`): every
    rate with its count and Wilson 95% interval.

    ``k1``: ``model.edit(x, a)`` on test items 0..pairs-1, overall and ``per_acted_factor``:
    ``exact`` (a shape's rotational symmetry allowed), ``exact_strict``, ``unchanged`` and
    ``two_sided``. ``k2``..``k4``: from the same start states, the k actions that
    :func:`evaluate_exactness` draws (a generator seeded with ``seed``, drawn for each k of
    :data:`SEQUENCE_STEPS` in turn), applied ``one_edit`` (``model.edit_sequence``: all k in code
    space, one decode) and ``in_a_row`` (k edits, each decoded and encoded again): ``exact`` and
    ``unchanged`` (the image is nearest the start). ``reference_decoder``: the k = 1 verdicts of
    ``decode(encode(target))``, the ceiling of any edit."""
    model.eval()
    space, actions = dm.space, dm.actions
    render = dm.source.render
    verdicts: dict[str, list[torch.Tensor]] = {}
    reference: dict[str, list[torch.Tensor]] = {}
    acted = []
    for raw in batches(dm, "test", pairs, batch, "edit exactness by the nearest render, k = 1"):
        b = dm.prepare_batch({k: v.to(device) for k, v in raw.items()})
        source, target = raw["factors"].to(device), raw["factors_next"].to(device)
        for out, images in ((verdicts, model.edit(b["image"], b["action"])),
                            (reference, model.decode_codes(model.encode_codes(b["image_next"])))):
            for key, value in judge_edits(images, source, target, space, render).items():
                if key not in ("nearest", "side_factor"):
                    out.setdefault(key, []).append(value.cpu())
        acted.append(actions.factor_of(raw["action"]))
    single = {key: torch.cat(v) for key, v in verdicts.items()}
    acted_t = torch.cat(acted)
    results: dict[str, Any] = {
        "k1": {"k": 1, **_verdict_rates(single),
               "per_acted_factor": {space.names[f]: _verdict_rates(single, acted_t == f) for f in actions.factors},
               "reference_decoder": _verdict_rates({key: torch.cat(v) for key, v in reference.items()})},
    }
    start = dm._datasets["test"].__getitems__(list(range(pairs)))["factors"]
    generator = torch.Generator().manual_seed(seed)
    for k in SEQUENCE_STEPS:
        ids, final = action_sequences(actions, start, k, generator)
        chains: dict[str, dict[str, list[torch.Tensor]]] = {"one_edit": {}, "in_a_row": {}}
        for i in tqdm(range(0, pairs, batch), desc=f"edit exactness by the nearest render, k = {k}", leave=False,
                      dynamic_ncols=True):
            first, last = start[i:i + batch].to(device), final[i:i + batch].to(device)
            x = render(first)
            steps = [ids[i:i + batch, t].to(device) for t in range(k)]
            edited = {"one_edit": model.edit_sequence(x, steps), "in_a_row": _edit_in_a_row(model, x, steps)}
            for mode, images in edited.items():
                judged = judge_edits(images, first, last, space, render, single_step=False)
                for key in ("exact", "unchanged"):
                    chains[mode].setdefault(key, []).append(judged[key].cpu())
        results[f"k{k}"] = {"k": k, **{mode: _verdict_rates({key: torch.cat(v) for key, v in judged.items()})
                                       for mode, judged in chains.items()}}
    return results
