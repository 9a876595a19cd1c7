"""Held-out benchmark of a trained model on a procedural twin (dSprites or 3D Shapes).

    python -m causal_vqvae.bench --model DIR --data dsprites [--pairs 2000] [--batch 256] [--seed 0]
                                 [--device cpu|cuda] [--out results.json]

On the first ``--pairs`` TEST pairs (x, a, x') of the twin (items 0..pairs-1, drawn with ``--seed``),
with the model in eval mode, under ``no_grad``, on one device, it measures:

- action retrieval by both methods ("transition", "head"): action accuracy, factor accuracy (the
  predicted action moves the right factor, ``id // 2`` equal), accuracy per factor of the true
  action, the A x A confusion matrix (rows true, columns predicted), and throughput in pairs/s
  (encode both images + retrieve, timed after one warm-up batch: ``perf_counter`` on the CPU, CUDA
  events + synchronize on a GPU);
- baselines scored by the same :func:`accuracy_report`: chance (a uniform random predictor, in
  expectation), a constant predictor (the most frequent action among the first ``--pairs`` TRAIN
  pairs), and the oracle on the true factors (``ActionSpace.action_between``; must be 1.0);
- edit fidelity (a twin renders the true x'): ``edit(x, a)`` against x' (MSE and PSNR per image,
  averaged), with the reconstruction of x' and the unedited x as reference points, and the
  transition's code accuracy: predicted codes against ``encode_codes(x')`` (node accuracy and the
  fraction of pairs with every node right).

It prints a table, writes the JSON atomically, and one confusion-matrix PNG per method next to it
(``<stem>_confusion_<method>.png``). This module is the benchmark harness, so it may import
``datamodules``; it never imports the CelebA module or Hugging Face ``datasets``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shlex
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["METHODS", "DATASETS", "accuracy_report", "evaluate", "main"]

METHODS = ("transition", "head")
DATASETS = ("dsprites", "shapes3d")


# ------------------------------------------------------------------------------------- scoring
def _as_numpy(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _ratio(num: float, den: float) -> float | None:
    return float(num / den) if den > 0 else None


def accuracy_report(pred: Any, true: Any, num_actions: int, factor_names: Sequence[str]) -> dict[str, Any]:
    """Score predicted action ids against true ones.

    ``pred``: ``(N,)`` predicted ids, or ``(N, A)`` rows of probabilities (a randomised predictor,
    scored in expectation); ``true``: ``(N,)`` ids in ``[0, A)``. Action ids are factor-major, minus
    then plus, so ``id // 2`` is the factor's position in ``factor_names`` (one name per actionable
    factor). Everything is read off the confusion matrix ``C`` (rows true, columns predicted):

    - ``action_accuracy``: trace(C) / N;
    - ``factor_accuracy``: the mass where predicted and true action move the same factor;
    - ``per_factor[name]``: ``count`` of pairs whose TRUE action moves that factor, and their
      ``action_accuracy`` / ``factor_accuracy`` (None where the count is 0);
    - ``confusion``: C as nested lists (ints for hard predictions).
    """
    true = _as_numpy(true).astype(np.int64).reshape(-1)
    pred = _as_numpy(pred)
    num_actions = int(num_actions)
    factor_names = [str(n) for n in factor_names]
    if num_actions < 1:
        raise ValueError(f"num_actions must be positive, got {num_actions}")
    if len(factor_names) != (num_actions + 1) // 2:
        raise ValueError(f"{num_actions} actions need {(num_actions + 1) // 2} factor names, got {len(factor_names)}")
    if true.size and (true.min() < 0 or true.max() >= num_actions):
        raise ValueError(f"true action ids must lie in [0, {num_actions})")
    n = true.shape[0]
    if pred.ndim == 2:
        if pred.shape != (n, num_actions):
            raise ValueError(f"probability rows must have shape ({n}, {num_actions}), got {pred.shape}")
        soft = pred.astype(np.float64)
        hard = False
    else:
        pred = pred.astype(np.int64).reshape(-1)
        if pred.shape[0] != n:
            raise ValueError(f"pred has {pred.shape[0]} entries, true has {n}")
        if pred.size and (pred.min() < 0 or pred.max() >= num_actions):
            raise ValueError(f"predicted action ids must lie in [0, {num_actions})")
        soft = np.zeros((n, num_actions), dtype=np.float64)
        soft[np.arange(n), pred] = 1.0
        hard = True
    confusion = np.zeros((num_actions, num_actions), dtype=np.float64)
    np.add.at(confusion, true, soft)  # row true[i] += prediction row i

    factor_of = np.arange(num_actions) // 2
    same_factor = factor_of[:, None] == factor_of[None, :]
    rows = confusion.sum(1)
    correct = np.diag(confusion)
    factor_correct = (confusion * same_factor).sum(1)
    per_factor = {}
    for f, name in enumerate(factor_names):
        members = factor_of == f
        count = rows[members].sum()
        per_factor[name] = {
            "count": int(round(count)),
            "action_accuracy": _ratio(correct[members].sum(), count),
            "factor_accuracy": _ratio(factor_correct[members].sum(), count),
        }
    table = confusion.round().astype(np.int64).tolist() if hard else confusion.tolist()
    return {
        "n": int(n),
        "action_accuracy": _ratio(correct.sum(), n),
        "factor_accuracy": _ratio(factor_correct.sum(), n),
        "per_factor": per_factor,
        "confusion": table,
    }


def psnr(mse: torch.Tensor, floor: float = 1e-10) -> torch.Tensor:
    """PSNR in dB of images in [0, 1] from their per-image MSE (floored so it stays finite)."""
    return 10.0 * torch.log10(1.0 / mse.clamp_min(floor))


# ------------------------------------------------------------------------------------- timing
class _Timer:
    """Accumulates seconds of timed calls: CUDA events + synchronize on a GPU, else perf_counter."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.seconds = 0.0

    def __call__(self, fn: Callable[[], Any]) -> Any:
        if self.cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            torch.cuda.synchronize()
            start.record()
            out = fn()
            end.record()
            torch.cuda.synchronize()
            self.seconds += start.elapsed_time(end) / 1000.0
            return out
        start = time.perf_counter()
        out = fn()
        self.seconds += time.perf_counter() - start
        return out


# ------------------------------------------------------------------------------------- data
def _datamodule(name: str, pairs: int, batch: int, seed: int):
    """The DataModule of ``name`` on its procedural twin (never a real file: fidelity needs the
    twin's true renders), its test split holding exactly ``pairs`` pairs."""
    from datamodules.datamodule import build_datamodule  # the harness may import datamodules

    if name not in DATASETS:
        raise ValueError(f"--data must be one of {DATASETS}, got {name!r}")
    dm = build_datamodule(name, batch_size=batch, test_length=pairs, train_length=pairs, seed=seed, num_workers=0)
    dm.source = dm.entry.twin()  # force the twin even if $CAUSAL_VQVAE_DATA_ROOT names a real file
    dm.setup()
    return dm


def _batches(dm, split: str, pairs: int, batch: int):
    for start in range(0, pairs, batch):
        yield dm._datasets[split].__getitems__(list(range(start, min(start + batch, pairs))))


def _check_model(model, dm, name: str) -> None:
    c = model.config
    actions = dm.actions
    if c.dataset and c.dataset != name:
        raise ValueError(f"the model was trained on {c.dataset!r}, not {name!r}")
    if c.num_actions != len(actions):
        raise ValueError(f"the model has {c.num_actions} actions, {name} has {len(actions)}")
    if c.action_names and tuple(c.action_names) != tuple(actions.names):
        raise ValueError(f"the model's actions {tuple(c.action_names)} differ from {name}'s {actions.names}")
    if c.in_channels != dm.channels:
        raise ValueError(f"the model takes {c.in_channels} channels, the {name} twin has {dm.channels}")


# ------------------------------------------------------------------------------------- evaluation
@torch.no_grad()
def evaluate(model, dm, name: str, pairs: int, batch: int, device: torch.device) -> dict[str, Any]:
    """Every measurement of the module docstring on test items 0..pairs-1; returns the results dict."""
    model.eval()
    actions = dm.actions
    num_actions = len(actions)
    factor_names = [dm.space.names[f] for f in actions.factors]

    def retrieve(x: torch.Tensor, x_next: torch.Tensor, method: str) -> torch.Tensor:
        return model.retrieve_codes(model.encode_codes(x), model.encode_codes(x_next), method).action

    # one untimed warm-up batch per method
    first = dm.prepare_batch({k: v.to(device) for k, v in next(_batches(dm, "test", pairs, batch)).items()})
    for method in METHODS:
        retrieve(first["image"], first["image_next"], method)

    timers = {m: _Timer(device) for m in METHODS}
    predicted: dict[str, list[torch.Tensor]] = {m: [] for m in METHODS}
    true, oracle = [], []
    sums = {"edit_mse": 0.0, "edit_psnr": 0.0, "recon_mse": 0.0, "recon_psnr": 0.0,
            "identity_mse": 0.0, "identity_psnr": 0.0, "node_acc": 0.0, "all_nodes": 0.0}
    for raw in _batches(dm, "test", pairs, batch):
        b = dm.prepare_batch({k: v.to(device) for k, v in raw.items()})
        x, x_next, a = b["image"], b["image_next"], b["action"]
        true.append(a.cpu())
        oracle.append(actions.action_between(b["factors"], b["factors_next"]).cpu())
        for method in METHODS:
            predicted[method].append(timers[method](lambda: retrieve(x, x_next, method)).cpu())

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
    train_ids = torch.cat([raw["action"] for raw in _batches(dm, "train", pairs, batch)])
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
    }


# ------------------------------------------------------------------------------------- output
def _atomic(path: Path, write: Callable[[str], None]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(temp)
        os.chmod(temp, 0o644)
        os.replace(temp, path)
    except BaseException:
        if os.path.exists(temp):
            os.remove(temp)
        raise


def write_json(path: Path, data: dict) -> None:
    def write(temp: str) -> None:
        with open(temp, "w") as f:
            json.dump(data, f, indent=2, allow_nan=False)
            f.write("\n")

    _atomic(path, write)


def confusion_image(confusion: Sequence[Sequence[float]], names: Sequence[str], title: str = ""):
    """A PIL heatmap of a confusion matrix: rows true, columns predicted, shaded by the row fraction."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default()
    matrix = np.asarray(confusion, dtype=np.float64)
    a = matrix.shape[0]
    cell = 34
    probe = ImageDraw.Draw(Image.new("L", (1, 1)))

    def size(text: str) -> tuple[int, int]:
        box = probe.textbbox((0, 0), text, font=font)
        return box[2] - box[0], box[3] - box[1]

    label_w = max(size(n)[0] for n in names) + 10
    left, top = label_w + 16, label_w + 28
    width, height = left + a * cell + 10, top + a * cell + 24
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    draw.text((4, 2), title or "confusion (rows true, columns predicted)", fill="black", font=font)
    draw.text((left, height - 16), "predicted", fill="black", font=font)
    rows = matrix.sum(1, keepdims=True)
    fraction = np.divide(matrix, rows, out=np.zeros_like(matrix), where=rows > 0)
    for i in range(a):
        w, h = size(names[i])
        draw.text((left - w - 6, top + i * cell + (cell - h) // 2), names[i], fill="black", font=font)
        label = Image.new("RGB", (label_w, 14), "white")
        ImageDraw.Draw(label).text((2, 1), names[i], fill="black", font=font)
        label = label.rotate(90, expand=True)
        image.paste(label, (left + i * cell + (cell - 14) // 2, top - label_w - 4))
        for j in range(a):
            v = fraction[i, j]
            colour = (int(255 * (1 - v)), int(255 * (1 - 0.6 * v)), 255) if v > 0 else (255, 255, 255)
            x0, y0 = left + j * cell, top + i * cell
            draw.rectangle([x0, y0, x0 + cell - 1, y0 + cell - 1], fill=colour, outline=(200, 200, 200))
            value = matrix[i, j]
            if value:
                text = f"{int(round(value))}" if abs(value - round(value)) < 1e-9 else f"{value:.1f}"
                tw, th = size(text)
                draw.text((x0 + (cell - tw) // 2, y0 + (cell - th) // 2), text,
                          fill="white" if v > 0.55 else "black", font=font)
    return image


def write_png(path: Path, image) -> None:
    _atomic(path, lambda temp: image.save(temp, format="PNG"))


def _fmt(x: float | None) -> str:
    return "   -  " if x is None else f"{100 * x:6.2f}"


def format_table(results: dict) -> str:
    lines = [f"{'method':<30} {'action %':>9} {'factor %':>9} {'pairs/s':>10}", "-" * 61]
    for method, r in results["methods"].items():
        rate = r["pairs_per_s"]
        lines.append(f"{method:<30} {_fmt(r['action_accuracy']):>9} {_fmt(r['factor_accuracy']):>9} "
                     f"{'-' if rate is None else f'{rate:,.0f}':>10}")
    for name, r in results["baselines"].items():
        label = f"baseline: {name}" + (f" ({r['action_name']})" if name == "constant" else "")
        lines.append(f"{label:<30} {_fmt(r['action_accuracy']):>9} {_fmt(r['factor_accuracy']):>9} {'':>10}")
    f = results["fidelity"]
    lines += [
        "",
        f"edit fidelity:   MSE {f['edit_mse']:.5f}  PSNR {f['edit_psnr_db']:.2f} dB"
        f"   (reconstruction of x': PSNR {f['reconstruction_psnr_db']:.2f} dB; unedited x: "
        f"PSNR {f['identity_psnr_db']:.2f} dB)",
        f"transition codes: node accuracy {100 * f['code_node_accuracy']:.2f}%"
        f"   all nodes right {100 * f['code_all_nodes_accuracy']:.2f}% of pairs",
    ]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------- CLI
def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m causal_vqvae.bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="model directory written by save_pretrained")
    p.add_argument("--data", required=True, choices=DATASETS, help="procedural twin to evaluate on")
    p.add_argument("--pairs", type=int, default=2000, help="test pairs (items 0..pairs-1)")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--seed", type=int, default=0, help="which pairs are drawn")
    p.add_argument("--device", choices=("cpu", "cuda"), default=None, help="default: cuda if available")
    p.add_argument("--out", default="results.json", help="JSON path; confusion PNGs go next to it")
    return p


def main(argv: Sequence[str] | None = None) -> dict:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    if args.pairs < 1 or args.batch < 1:
        raise SystemExit("--pairs and --batch must be positive")
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda asked for, but no GPU is available")
    torch.manual_seed(args.seed)

    from .api import load

    model = load(args.model, device=device).eval()
    dm = _datamodule(args.data, args.pairs, args.batch, args.seed)
    _check_model(model, dm, args.data)
    results = evaluate(model, dm, args.data, args.pairs, args.batch, device)

    out = Path(args.out)
    meta = {
        "data": f"{args.data} procedural twin",
        "model": str(Path(args.model).resolve()),
        "seed": args.seed,
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "pairs": args.pairs,
        "batch": args.batch,
        "split": "test",
        "command": "python -m causal_vqvae.bench " + shlex.join(argv),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    data = {"meta": meta, **results}

    pngs = {}
    for method in METHODS:
        png = out.with_name(f"{out.stem}_confusion_{method}.png")
        acc = results["methods"][method]["action_accuracy"]
        title = f"{args.data} twin, {method}: action acc {100 * acc:.1f}% (rows true, cols predicted)"
        write_png(png, confusion_image(results["methods"][method]["confusion"], results["action_names"], title))
        pngs[method] = png.name
    data["confusion_png"] = pngs
    write_json(out, data)

    print(f"{meta['data']}, {args.pairs} test pairs, seed {args.seed}, {meta['device_name']}, "
          f"model {args.model}")
    print(format_table(results))
    print(f"wrote {out} and {', '.join(pngs.values())}")
    return data


if __name__ == "__main__":
    main()
