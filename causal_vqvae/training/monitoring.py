"""Pictures of a model in training: edit grids, the learned graph, codebook usage.

:class:`ValidationPictures` draws them after every validation epoch, on the first rank, into
TensorBoard (when the run logs there) and as PNG files in the run directory, so a run can be
watched without TensorBoard too:

``edits``
    one pair of rows per held-out image: on top the input, its reconstruction and the model's edit
    for every action; below, the true target of each action where the data can show it (a
    procedural twin renders it; a real dSprites / 3D Shapes file holds it) and grey where the
    action is not valid at that state or the target is unknown (CelebA). The vqvae stage draws
    only input and reconstruction.
``targets`` / ``adjacency``
    the learned graph: action -> node intervention probabilities (rows actions, columns nodes),
    averaged over the held-out images of the edit grid, so that a state-dependent target head is
    included (the global logits alone can say little: see ``graph_image`` in the bench); and
    node -> node edge probabilities (rows parents, columns children). White is 0, dark blue 1.
``codebook``
    codes used during the epoch: one bar per code (per codebook for the tokens layout), height
    proportional to its count, codes never used in red at the baseline.

The drawing functions return ``(3, H, W)`` uint8 tensors and know nothing of Lightning.

:class:`MetricHistory` keeps the curves as plain JSON beside them (``OUT/<stage>/curves.json``): one
row per validation with the step, the wall time and every logged metric, so that a run's curves can
be read, plotted or committed without TensorBoard.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Sequence
from pathlib import Path

import pytorch_lightning as pl
import torch

from ..eval.pictures import target_probabilities
from ..files import atomic_write, write_json

__all__ = ["MetricHistory", "ValidationPictures", "codebook_histogram", "edit_grid", "heatmap", "image_rows",
           "target_probabilities", "write_png"]

_PAD = 2
_BACKGROUND = 255
_MISSING = 160  # grey cell: no true target to show
_BAR = torch.tensor([40, 40, 40], dtype=torch.uint8)[:, None, None]
_UNUSED = torch.tensor([220, 30, 30], dtype=torch.uint8)[:, None, None]  # a code never used: red


def _rgb_uint8(images: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) floats in [0, 1], C in {1, 3} -> (B, 3, H, W) uint8 on the CPU."""
    images = images.detach().float().cpu().clamp(0, 1)
    if images.shape[1] == 1:
        images = images.expand(-1, 3, -1, -1)
    return (images * 255).round().to(torch.uint8)


def image_rows(rows: Sequence[Sequence[torch.Tensor | None]], size: int) -> torch.Tensor:
    """Tile rows of (3, size, size) uint8 cells (None: a grey cell) into one (3, H, W) picture."""
    if not rows or not any(rows):
        raise ValueError("image_rows needs at least one row with one cell")
    columns = max(len(r) for r in rows)
    step = size + _PAD
    canvas = torch.full((3, _PAD + step * len(rows), _PAD + step * columns), _BACKGROUND, dtype=torch.uint8)
    for i, row in enumerate(rows):
        for j, cell in enumerate(row):
            top, left = _PAD + i * step, _PAD + j * step
            if cell is None:
                canvas[:, top:top + size, left:left + size] = _MISSING
            else:
                if tuple(cell.shape) != (3, size, size):
                    raise ValueError(f"cell ({i}, {j}) has shape {tuple(cell.shape)}, expected (3, {size}, {size})")
                canvas[:, top:top + size, left:left + size] = cell
    return canvas


def heatmap(values: torch.Tensor, cell: int = 8) -> torch.Tensor:
    """(R, C) values in [0, 1] -> (3, R*cell, C*cell) uint8, white at 0 to dark blue at 1."""
    if values.dim() != 2:
        raise ValueError(f"heatmap takes a 2-D matrix, got shape {tuple(values.shape)}")
    v = values.detach().float().cpu().clamp(0, 1)
    white, blue = torch.tensor([255.0, 255.0, 255.0]), torch.tensor([8.0, 48.0, 160.0])
    rgb = white[:, None, None] + (blue - white)[:, None, None] * v[None]
    picture = rgb.round().to(torch.uint8)
    return picture.repeat_interleave(cell, 1).repeat_interleave(cell, 2)


def codebook_histogram(counts: torch.Tensor, height: int = 64, bar: int = 3) -> torch.Tensor:
    """(G, K) code counts -> (3, G*(height+4), K*bar) uint8: one bar chart per codebook, bars scaled
    to the largest count of the codebook, unused codes marked red along the baseline."""
    if counts.dim() != 2:
        raise ValueError(f"codebook_histogram takes (codebooks, codes) counts, got shape {tuple(counts.shape)}")
    counts = counts.detach().float().cpu()
    groups, codes = counts.shape
    panel = height + 4
    picture = torch.full((3, groups * panel, codes * bar), _BACKGROUND, dtype=torch.uint8)
    peak = counts.amax(1, keepdim=True).clamp_min(1)
    heights = (counts / peak * height).round().long()
    for g in range(groups):
        base = g * panel + height
        for k in range(codes):
            left = k * bar
            h = int(heights[g, k])
            if counts[g, k] == 0:
                picture[:, base:base + 3, left:left + bar - 1] = _UNUSED
            elif h:
                picture[:, base - h:base, left:left + bar - 1] = _BAR
    return picture


def write_png(path: Path, picture: torch.Tensor) -> None:
    """Write a (3, H, W) uint8 tensor as PNG through a temporary file and a rename."""
    from PIL import Image

    image = Image.fromarray(picture.permute(1, 2, 0).contiguous().numpy())
    atomic_write(path, lambda temp: image.save(temp, format="PNG"))


def _true_targets(datamodule, factors: torch.Tensor, action: int) -> tuple[torch.Tensor | None, torch.Tensor]:
    """Images of ``action`` applied to the states ``factors`` (None where the data cannot show them)
    and which states allow the action."""
    actions = datamodule.actions
    ids = torch.full((factors.shape[0],), action, dtype=torch.long, device=factors.device)
    new, valid = actions.apply(factors, ids)
    source = getattr(datamodule, "source", None)
    if hasattr(source, "render"):
        return source.render(new), valid
    space = datamodule.space
    if hasattr(source, "fetch") and len(source) == space.num_states:
        # A real dSprites / 3D Shapes file: one row per state, in ravel order. (CelebA's rows are
        # photos, not states: its targets are unknown.)
        from datamodules.sources import to_float_images

        return to_float_images(source.fetch(space.ravel(new.cpu()))).to(factors.device), valid
    return None, valid


@torch.no_grad()
def edit_grid(model, batch: dict[str, torch.Tensor], datamodule=None, with_edits: bool = True) -> torch.Tensor:
    """The ``edits`` picture of the module docstring for a prepared batch (``image``, ``factors``)."""
    x = batch["image"]
    size = x.shape[-1]
    recon = _rgb_uint8(model(x).reconstruction)
    inputs = _rgb_uint8(x)
    rows: list[list[torch.Tensor | None]] = []
    if not with_edits:
        return image_rows([[inputs[i], recon[i]] for i in range(x.shape[0])], size)
    codes = model.encode_codes(x)
    edits, targets = [], []
    for action in range(model.config.num_actions):
        edits.append(_rgb_uint8(model.decode_codes(model.edit_codes(codes, action))))
        truth, valid = (None, None)
        if datamodule is not None and "factors" in batch:
            truth, valid = _true_targets(datamodule, batch["factors"], action)
        targets.append(None if truth is None else (_rgb_uint8(truth), valid.cpu()))
    for i in range(x.shape[0]):
        rows.append([inputs[i], recon[i], *(e[i] for e in edits)])
        rows.append([None, None, *(None if t is None or not t[1][i] else t[0][i] for t in targets)])
    return image_rows(rows, size)


class ValidationPictures(pl.Callback):
    """Draw the module docstring's pictures after each validation epoch (first rank only).

    ``directory``: where the PNGs go (``<name>_step<global step>.png``); ``images``: held-out
    images in the edit grid (validation items 0..images-1, the same every epoch).
    """

    def __init__(self, directory: str | os.PathLike, images: int = 6) -> None:
        if images < 1:
            raise ValueError(f"images must be >= 1, got {images}")
        self.directory = Path(directory)
        self.images = images

    @torch.no_grad()
    def pictures(self, pl_module: pl.LightningModule, datamodule) -> dict[str, torch.Tensor]:
        model = pl_module.model
        stage = getattr(pl_module, "stage", "causal")
        out = {}
        batch = None
        if datamodule is not None and hasattr(datamodule, "sample_batch"):
            batch = datamodule.sample_batch("val", size=self.images, device=pl_module.device)
            out["edits"] = edit_grid(model, batch, datamodule, with_edits=stage != "vqvae")
        if stage != "vqvae":
            graph = model.graph
            out["targets"] = heatmap(torch.sigmoid(graph.target_logits.float()) if batch is None
                                     else target_probabilities(model, batch["image"]))
            out["adjacency"] = heatmap(graph.adjacency_probs())
        out["codebook"] = codebook_histogram(model.quantizer.usage_counts)
        return out

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        pictures = self.pictures(pl_module, trainer.datamodule)  # Lightning validates in eval mode
        step = trainer.global_step
        for name, picture in pictures.items():
            write_png(self.directory / f"{name}_step{step:07d}.png", picture)
            for logger in trainer.loggers:
                experiment = getattr(logger, "experiment", None)
                if hasattr(experiment, "add_image"):
                    experiment.add_image(f"pictures/{name}", picture, step)


class MetricHistory(pl.Callback):
    """Append the logged metrics to ``path`` (JSON) after every validation, on the first rank.

    The file is ``{"rows": [{"step", "seconds", "samples_per_s", <metric>: value, ...}, ...]}``:
    ``seconds`` is the training wall time of this stage up to the row (validation included; the
    time before an interruption is carried over on resume), ``samples_per_s`` the samples (images or
    pairs, every device) per second since the previous row. A resumed run keeps the rows up to the
    step it resumes from and drops the later ones, which the interrupted run may have written past
    its last checkpoint; a validation that the interruption cut short is not repeated, so its row
    may be missing. Each write goes through a temporary file and a rename.
    """

    def __init__(self, path: str | os.PathLike, samples_per_step: int) -> None:
        if samples_per_step < 1:
            raise ValueError(f"samples_per_step must be >= 1, got {samples_per_step}")
        self.path = Path(path)
        self.samples_per_step = samples_per_step
        self.rows: list[dict[str, float]] = []
        self._offset = 0.0
        self._clock = time.perf_counter()
        self._last = (0, 0.0)  # (step, seconds) of the previous row
        self._started = False

    def _start(self, step: int) -> None:
        """Continue from ``step``: keep the rows written up to it and carry their time over."""
        rows = json.loads(self.path.read_text())["rows"] if step and self.path.is_file() else []
        self.rows = [r for r in rows if r["step"] <= step]
        self._offset = self.rows[-1]["seconds"] if self.rows else 0.0
        self._clock = time.perf_counter()
        self._last = (step, self._offset)
        self._started = True

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start(trainer.global_step)

    def elapsed(self) -> float:
        """The stage's training wall time so far, as the rows count it: the time before an
        interruption carried over, plus this run's since training started."""
        return self._offset + time.perf_counter() - self._clock

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        if not self._started:  # a validation with no training before it (a run resumed at its last step)
            self._start(trainer.global_step)
        step = trainer.global_step
        seconds = self.elapsed()
        done, before = step - self._last[0], seconds - self._last[1]
        row = {"step": step, "seconds": round(seconds, 3),
               "samples_per_s": round(done * self.samples_per_step / before, 1) if done and before > 0 else None}
        for name, value in sorted(trainer.callback_metrics.items()):
            value = float(value)
            row[name] = value if math.isfinite(value) else None
        self.rows = [r for r in self.rows if r["step"] < step] + [row]
        self._last = (step, seconds)
        write_json(self.path, {"rows": self.rows})
