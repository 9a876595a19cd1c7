"""The benchmark's and validation's pictures: every action applied to held-out images beside the
true targets, the learned graph, confusion matrices."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ..files import atomic_write

__all__ = ["actions_image", "graph_image", "confusion_image", "target_probabilities", "write_png"]

CELL = 64  # image side in the actions picture
PAIR_GAP = 2  # between an edit and its true target
GROUP_GAP = 10  # between columns of different actions
MARGIN = 6
HEADER = 30  # action names, then "edit" / "true"
ROW_GAP = 4
INVALID_GREY = (150, 150, 150)


def _font():
    from PIL import ImageFont

    return ImageFont.load_default()


def _text_size(text: str, font) -> tuple[int, int]:
    from PIL import Image, ImageDraw

    box = ImageDraw.Draw(Image.new("L", (1, 1))).textbbox((0, 0), text, font=font)
    return box[2] - box[0], box[3] - box[1]


def _shade(v: float) -> tuple[int, int, int]:
    """White (0) to blue (1), the confusion matrices' scale."""
    return (int(255 * (1 - v)), int(255 * (1 - 0.6 * v)), 255) if v > 0 else (255, 255, 255)


def _pil(image: torch.Tensor):
    """``(C, H, W)`` in [0, 1] -> an RGB PIL image (gray repeated)."""
    from PIL import Image

    pixels = (image.float().clamp(0, 1) * 255).round().byte().cpu()
    if pixels.shape[0] == 1:
        pixels = pixels.expand(3, -1, -1)
    return Image.fromarray(pixels.permute(1, 2, 0).numpy(), "RGB")


def actions_columns(num_actions: int) -> list[int]:
    """Left x of every image column of the actions picture: input, reconstruction, then an
    (edit, true target) pair per action."""
    xs = [MARGIN, MARGIN + CELL + GROUP_GAP]
    x = xs[-1] + CELL + GROUP_GAP
    for _ in range(num_actions):
        xs += [x, x + CELL + PAIR_GAP]
        x += 2 * CELL + PAIR_GAP + GROUP_GAP
    return xs


@torch.no_grad()
def actions_image(model, dm, states: torch.Tensor, device: torch.device):
    """Every action applied to the images of ``states`` ``(R, F)``: one row per state, the input and
    its reconstruction first, then for each action ``model.edit`` beside the twin's render of the
    TRUE target (the action applied to the true state). Where the action is invalid at that state
    (past a non-cyclic end) the target cell is grey with an X. A header row names the actions."""
    from PIL import Image, ImageDraw

    actions = dm.actions
    font = _font()
    states = states.to(device)
    x = dm.source.render(states)
    recon = model.decode_codes(model.encode_codes(x))
    xs = actions_columns(len(actions))
    width = xs[-1] + CELL + MARGIN
    height = HEADER + len(states) * (CELL + ROW_GAP) + MARGIN
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)

    def label(text: str, left: int, span: int, top: int) -> None:
        w, _ = _text_size(text, font)
        draw.text((left + (span - w) // 2, top), text, fill="black", font=font)

    label("input", xs[0], CELL, 4)
    label("recon", xs[1], CELL, 4)
    for a, name in enumerate(actions.names):
        left = xs[2 + 2 * a]
        label(name, left, 2 * CELL + PAIR_GAP, 2)
        label("edit", left, CELL, 16)
        label("true", left + CELL + PAIR_GAP, CELL, 16)
    for r in range(len(states)):
        top = HEADER + r * (CELL + ROW_GAP)
        image.paste(_pil(x[r]), (xs[0], top))
        image.paste(_pil(recon[r]), (xs[1], top))
    for a in range(len(actions)):
        edited = model.edit(x, a)
        target, valid = actions.apply(states, torch.full((len(states),), a, device=device))
        truth = dm.source.render(target)
        for r in range(len(states)):
            top = HEADER + r * (CELL + ROW_GAP)
            left = xs[2 + 2 * a]
            image.paste(_pil(edited[r]), (left, top))
            tx = left + CELL + PAIR_GAP
            if bool(valid[r]):
                image.paste(_pil(truth[r]), (tx, top))
            else:
                draw.rectangle([tx, top, tx + CELL - 1, top + CELL - 1], fill=INVALID_GREY)
                draw.line([tx + 8, top + 8, tx + CELL - 9, top + CELL - 9], fill="black", width=3)
                draw.line([tx + 8, top + CELL - 9, tx + CELL - 9, top + 8], fill="black", width=3)
    return image


def _heatmap(draw, probs: np.ndarray, hard: np.ndarray, left: int, top: int, cell: int) -> None:
    """Cells shaded by probability; a black dot where the hard (evaluation) value is 1."""
    dot = max(1, cell // 4)
    for i in range(probs.shape[0]):
        for j in range(probs.shape[1]):
            x0, y0 = left + j * cell, top + i * cell
            draw.rectangle([x0, y0, x0 + cell - 1, y0 + cell - 1], fill=_shade(float(probs[i, j])),
                           outline=(225, 225, 225))
            if hard[i, j]:
                cx, cy = x0 + cell // 2, y0 + cell // 2
                draw.rectangle([cx - dot, cy - dot, cx + dot - 1, cy + dot - 1], fill="black")


@torch.no_grad()
def graph_image(model, action_names: Sequence[str], images: torch.Tensor):
    """The learned graph, three panels: (1) action -> node intervention targets, rows actions and
    columns nodes, shaded by the probability that the action intervenes on the node, averaged over
    ``images`` (held-out images: :func:`target_probabilities`, global and
    state-dependent target logits together), with a dot where that mean is above 0.5; (2) grid
    layout only: each action's targets as a mini-map of the encoder's ``grid_size`` x
    ``grid_size`` grid (node n at row n // side, column n % side); (3) the node ->
    node adjacency, rows parents j and columns children i, shaded by ``graph.adjacency_probs()``
    with a dot on ``graph.hard_adjacency()`` edges."""
    from PIL import Image, ImageDraw

    graph, config = model.graph, model.config
    font = _font()
    targets = target_probabilities(model, images).cpu().numpy()  # (A, N)
    target_hard = (targets > 0.5).astype(np.float64)
    adjacency = graph.adjacency_probs().cpu().numpy()  # (N, N)
    adjacency_hard = graph.hard_adjacency().cpu().numpy()
    a, n = targets.shape
    names = [str(x) for x in action_names]
    label_w = max(_text_size(x, font)[0] for x in names) + 8
    cell = max(6, min(16, 720 // n))
    adj_cell = max(4, min(12, 640 // n))
    side = config.grid_size
    mini = 6  # pixels per node in the mini-maps
    grid = config.latent_layout == "grid"

    tick = side if grid else 1  # column labels every grid row of nodes (every token)
    map_step = max(side * mini, max(_text_size(x, font)[0] for x in names)) + 10
    y = MARGIN
    panels = [("title", y)]
    y += 18
    panels.append(("targets", y))
    y += 28 + a * cell + 10
    if grid:
        panels.append(("maps", y))
        y += 30 + side * mini + 10
    panels.append(("adjacency", y))
    y += 28 + n * adj_cell + MARGIN
    width = max(MARGIN + label_w + n * cell, MARGIN + a * map_step, MARGIN + 40 + n * adj_cell, 460) + MARGIN
    image = Image.new("RGB", (width, y), "white")
    draw = ImageDraw.Draw(image)
    where = dict(panels)
    draw.text((MARGIN, where["title"]), f"learned graph ({config.latent_layout} layout, {n} nodes, {a} actions); "
              "shade: probability, white 0 to blue 1", fill="black", font=font)

    def ticks(left: int, top: int, size: int) -> None:
        for j in range(0, n, tick):
            draw.text((left + j * size, top), str(j), fill="black", font=font)

    top = where["targets"]
    draw.text((MARGIN, top), f"action -> node targets: P(intervene), mean over {images.shape[0]} held-out "
              "images; dot = mean > 0.5", fill="black", font=font)
    ticks(MARGIN + label_w, top + 14, cell)
    for i, name in enumerate(names):
        w, h = _text_size(name, font)
        draw.text((MARGIN + label_w - w - 4, top + 28 + i * cell + (cell - h) // 2), name, fill="black", font=font)
    _heatmap(draw, targets, target_hard, MARGIN + label_w, top + 28, cell)

    if grid:
        top = where["maps"]
        draw.text((MARGIN, top), f"targets on the {side}x{side} code grid, per action (node n at row n // {side}, "
                  f"column n % {side})", fill="black", font=font)
        for i, name in enumerate(names):
            left = MARGIN + i * map_step
            draw.text((left, top + 16), name, fill="black", font=font)
            _heatmap(draw, targets[i].reshape(side, side), target_hard[i].reshape(side, side), left, top + 30, mini)

    top = where["adjacency"]
    draw.text((MARGIN, top), "node -> node adjacency: rows parent j, columns child i; dot = hard_adjacency()",
              fill="black", font=font)
    ticks(MARGIN + 40, top + 14, adj_cell)
    for j in range(0, n, tick):
        draw.text((MARGIN, top + 28 + j * adj_cell), str(j), fill="black", font=font)
    _heatmap(draw, adjacency, adjacency_hard, MARGIN + 40, top + 28, adj_cell)
    return image


@torch.no_grad()
def target_probabilities(model, images: torch.Tensor) -> torch.Tensor:
    """(A, N): for each action, the probability that it intervenes on each node, averaged over
    ``images`` (global and state-dependent target logits together)."""
    codes = model.encode_codes(images)
    rows = []
    for action in range(model.config.num_actions):
        ids = torch.full((codes.shape[0],), action, dtype=torch.long, device=codes.device)
        rows.append(torch.sigmoid(model.graph.targets(codes, ids)).mean(0))
    return torch.stack(rows)


def confusion_image(confusion: Sequence[Sequence[float]], names: Sequence[str], title: str = ""):
    """A PIL heatmap of a confusion matrix: rows true, columns predicted, shaded by the row fraction."""
    from PIL import Image, ImageDraw

    font = _font()
    matrix = np.asarray(confusion, dtype=np.float64)
    a = matrix.shape[0]
    cell = 34
    label_w = max(_text_size(n, font)[0] for n in names) + 10
    left, top = label_w + 16, label_w + 28
    width, height = left + a * cell + 10, top + a * cell + 24
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    draw.text((4, 2), title or "confusion (rows true, columns predicted)", fill="black", font=font)
    draw.text((left, height - 16), "predicted", fill="black", font=font)
    rows = matrix.sum(1, keepdims=True)
    fraction = np.divide(matrix, rows, out=np.zeros_like(matrix), where=rows > 0)
    for i in range(a):
        w, h = _text_size(names[i], font)
        draw.text((left - w - 6, top + i * cell + (cell - h) // 2), names[i], fill="black", font=font)
        label = Image.new("RGB", (label_w, 14), "white")
        ImageDraw.Draw(label).text((2, 1), names[i], fill="black", font=font)
        label = label.rotate(90, expand=True)
        image.paste(label, (left + i * cell + (cell - 14) // 2, top - label_w - 4))
        for j in range(a):
            v = fraction[i, j]
            x0, y0 = left + j * cell, top + i * cell
            draw.rectangle([x0, y0, x0 + cell - 1, y0 + cell - 1], fill=_shade(v), outline=(200, 200, 200))
            value = matrix[i, j]
            if value:
                text = f"{round(value)}" if abs(value - round(value)) < 1e-9 else f"{value:.1f}"
                tw, th = _text_size(text, font)
                draw.text((x0 + (cell - tw) // 2, y0 + (cell - th) // 2), text,
                          fill="white" if v > 0.55 else "black", font=font)
    return image


def write_png(path: Path, image) -> None:
    atomic_write(path, lambda temp: image.save(temp, format="PNG"))
