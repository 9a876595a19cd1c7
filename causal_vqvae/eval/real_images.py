"""How a 3D Shapes model does on real images, against the twin render of the same state.

Users bring real images, not the twin's renders. This module measures what that costs, image by
image: each real image is paired with a twin render of its state (its label in the real
``3dshapes.h5``; for DeepMind's GIF frames, which carry no labels, the state whose render is nearest,
found exactly among all 480,000: :func:`datamodules.shapes3d.fidelity.nearest_states`), and the
model runs on both:

- **twin distance**: PSNR between the real image and that render (how far the twin is);
- **reconstruction**: PSNR of ``decode(encode(x))`` against ``x``, for the real image and for the render;
- **edits**: every action valid from the image's state, applied to the real image and to the render,
  each judged by the nearest render (:func:`~causal_vqvae.eval.judge.judge_edits`: exact, unchanged,
  two-sided; the target is the state one step away).

The gaps (render minus real) are what a model loses on real images; the issue's targets are at most
3 dB of reconstruction and 5 points of exact edits.

    images = load_real_images("shared/data/shapes3d_real_frames.npz")   # or a 3dshapes.h5
    report = evaluate_real_images(model, images, device)
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from datamodules.factors import ActionSpace
from datamodules.pairs import split_of
from datamodules.shapes3d import SHAPES3D, render_shapes3d, twin_scene
from datamodules.shapes3d.fidelity import nearest_states, real_frames_64
from datamodules.shapes3d.reader import FILE_NAME, read_shapes3d

from ..files import write_json
from .judge import judge_edits, rate
from .metrics import psnr

__all__ = ["RealImages", "load_real_images", "evaluate_real_images", "format_real_images", "real_images_picture"]

GIF_FRAME_SHAPE = (227, 226, 3)  # one frame of DeepMind's GIF: a 223x223 upscale in a 2-pixel frame


@dataclass
class RealImages:
    """Real 3D Shapes images ``(N, 3, 64, 64)`` float in [0, 1] and the state of each ``(N, 6)``
    long, with where they came from and how the states were found (``"label"`` or ``"nearest"``)."""

    images: torch.Tensor
    states: torch.Tensor
    description: str
    states_from: str
    twin_version: str = "1"


def _nearest_cached(images: torch.Tensor, version: str, cache_root: Path | None,
                    candidates: torch.Tensor | None) -> torch.Tensor:
    """:func:`nearest_states` of ``images``, kept in ``cache_root/bench/nearest_states/`` under a hash
    of the images' bytes, the version and the candidates (the search takes about a minute)."""
    if cache_root is None:
        return nearest_states(images, version, candidates)[0]
    digest = hashlib.sha256(images.numpy().astype(np.float32).tobytes())
    digest.update(f"v{version} {twin_scene(version)!r}".encode())  # a refitted scene searches again
    if candidates is not None:
        digest.update(candidates.long().numpy().tobytes())
    path = Path(cache_root) / "bench" / "nearest_states" / f"{digest.hexdigest()[:16]}.json"
    if path.is_file():
        try:
            index = json.loads(path.read_text())["state_index"]
            if len(index) == len(images):
                return torch.tensor(index, dtype=torch.long)
        except (ValueError, KeyError, TypeError):
            pass  # a damaged record: searched again and rewritten
    index = nearest_states(images, version, candidates)[0]
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, {"twin_version": version, "images": len(images), "state_index": index.tolist()})
    return index


def load_real_images(path: str | Path, count: int = 500, seed: int = 0, twin_version: str = "1",
                     cache_root: str | Path | None = None, candidates: torch.Tensor | None = None,
                     split_seed: int = 0) -> RealImages:
    """Real 3D Shapes images and their states from ``path``:

    - ``.npz`` with ``images`` of DeepMind's GIF frames ``(N, 227, 226, 3)`` uint8 (the frame cut
      off and area-downsampled to 64x64, :func:`real_frames_64`) or of 64x64 images ``(N, 64, 64, 3)``
      uint8: each state is the nearest twin render's (renderer ``twin_version``; among ``candidates``,
      flat state indices, where given), cached under ``cache_root``;
    - ``3dshapes.h5`` (or its folder): ``count`` images of held-out (test split, ``split_seed``) states
      drawn with ``seed``, each with its label. A file with fewer rows than 480,000 must hold the
      first states in index order (as :func:`read_shapes3d` allows with ``allow_subset``).

    Raises ValueError (or FileNotFoundError) naming the path and what it should hold."""
    path = Path(path).expanduser()
    if path.is_dir() or path.suffix in (".h5", ".hdf5"):
        return _from_h5(path, count, seed, twin_version, cache_root, split_seed)
    if not path.is_file():
        raise FileNotFoundError(f"real images not found at {path}: pass DeepMind's 3D Shapes GIF frames as .npz "
                                f"(key 'images') or the real {FILE_NAME} (or its folder)")
    if path.suffix != ".npz":
        raise ValueError(f"{path}: real images are read from an .npz (key 'images') or {FILE_NAME}, "
                         f"not a {path.suffix or 'suffix-less'} file")
    try:
        with np.load(path, allow_pickle=False) as data:
            files = list(data.files)
            raw = data["images"] if "images" in files else None
    except Exception as error:  # noqa: BLE001 - a damaged zip (BadZipFile), a pickled array (ValueError), ...
        raise ValueError(f"{path}: not a readable .npz ({type(error).__name__}: {error})") from None
    if raw is None:
        raise ValueError(f"{path}: no 'images' array (it has {', '.join(files) or 'none'}); "
                         "save the frames under the key 'images'")
    if raw.dtype != np.uint8 or raw.ndim != 4:
        raise ValueError(f"{path}: 'images' must be uint8 (N, 227, 226, 3) GIF frames or (N, 64, 64, 3) images, "
                         f"got {raw.dtype} {tuple(raw.shape)}")
    if tuple(raw.shape[1:]) == GIF_FRAME_SHAPE:
        images, kind = (real_frames_64(raw) / 255).float(), "GIF frames, frame cut, area-downsampled to 64x64"
    elif tuple(raw.shape[1:]) == (64, 64, 3):
        images, kind = torch.from_numpy(raw).permute(0, 3, 1, 2).float() / 255, "64x64 images"
    else:
        raise ValueError(f"{path}: 'images' must be (N, 227, 226, 3) GIF frames or (N, 64, 64, 3) images, "
                         f"got {tuple(raw.shape)}")
    if len(images) == 0:
        raise ValueError(f"{path}: 'images' holds no image")
    cache = None if cache_root is None else Path(cache_root)
    states = SHAPES3D.unravel(_nearest_cached(images, twin_version, cache, candidates))
    return RealImages(images, states, f"{len(images)} real images of {path.name} ({kind})", "nearest", twin_version)


def _from_h5(path: Path, count: int, seed: int, twin_version: str, cache_root, split_seed: int) -> RealImages:
    file = path / FILE_NAME if path.is_dir() else path
    if not file.is_file():
        raise FileNotFoundError(f"real images not found: {file} does not exist; pass DeepMind's {FILE_NAME} "
                                "(or its folder), or GIF frames as an .npz with key 'images'")
    try:
        source = read_shapes3d(file, cache_root=cache_root, allow_subset=True)
    except (ValueError, OSError, KeyError) as error:
        raise ValueError(f"real images {file}: not a readable {FILE_NAME} ({type(error).__name__}: {error})") from None
    labels = np.asarray(source.labels)
    held_out = np.flatnonzero(split_of(SHAPES3D, labels, split_seed) == 2)
    if held_out.size == 0:
        raise ValueError(f"{path}: none of its {len(labels)} states is in the test split; pass the whole {FILE_NAME}")
    rows = np.sort(np.random.default_rng(seed).choice(held_out, size=min(count, held_out.size), replace=False))
    images = source.fetch(rows).permute(0, 3, 1, 2).float() / 255
    states = torch.from_numpy(labels[rows]).long()
    return RealImages(images, states, f"{len(rows)} held-out images of the real {FILE_NAME} "
                                      f"({len(labels):,} rows; test split, drawn with seed {seed})", "label",
                      twin_version)


def _stats(values: torch.Tensor) -> dict[str, float]:
    v = values.double()
    return {"mean": round(float(v.mean()), 3), "median": round(float(v.median()), 3),
            "min": round(float(v.min()), 3), "max": round(float(v.max()), 3)}


@torch.no_grad()
def evaluate_real_images(model, real: RealImages, device: torch.device | str = "cpu", batch: int = 256
                         ) -> dict[str, Any]:
    """The figures of the module docstring for ``model`` (a 3D Shapes CausalVQVAE, eval mode) on
    ``real``: ``twin_distance_db``, ``reconstruction_db`` (``real``, ``twin``, ``gap``),
    ``code_agreement`` (the fraction of latent nodes whose code is the twin render's) and ``edits``
    (``from_real``, ``from_twin``: exact / exact_strict / unchanged / two_sided rates with Wilson
    intervals, overall and ``per_acted_factor``; ``gap_points``: exact from the twin minus from real)."""
    model.eval()
    device = torch.device(device)
    render = functools.partial(render_shapes3d, version=real.twin_version)
    actions = ActionSpace(SHAPES3D)
    twin = render(real.states)
    reconstruct, codes = {}, {}
    for name, images in (("real", real.images), ("twin", twin)):
        codes[name] = torch.cat([model.encode_codes(images[i:i + batch].to(device)).cpu()
                                 for i in range(0, len(images), batch)])
        out = torch.cat([model.decode_codes(codes[name][i:i + batch].to(device)).float().cpu()
                         for i in range(0, len(images), batch)])
        reconstruct[name] = psnr((out.clamp(0, 1) - images).square().flatten(1).mean(1))
    valid = actions.valid_mask(real.states)  # (N, A)
    image_index, action_ids = valid.nonzero(as_tuple=True)
    targets = actions.apply(real.states[image_index], action_ids)[0]
    verdicts: dict[str, dict[str, list[torch.Tensor]]] = {"from_real": {}, "from_twin": {}}
    for i in range(0, len(action_ids), batch):
        rows, ids = image_index[i:i + batch], action_ids[i:i + batch].to(device)
        for name, images in (("from_real", real.images), ("from_twin", twin)):
            edited = model.edit(images[rows].to(device), ids).float()
            judged = judge_edits(edited, real.states[rows], targets[i:i + batch], SHAPES3D, render)
            for key in ("exact", "exact_strict", "unchanged", "two_sided"):
                verdicts[name].setdefault(key, []).append(judged[key])
    acted = actions.factor_of(action_ids)
    edits: dict[str, Any] = {}
    for name, parts in verdicts.items():
        joined = {key: torch.cat(v) for key, v in parts.items()}
        edits[name] = {**{key: rate(v) for key, v in joined.items()},
                       "per_acted_factor": {SHAPES3D.names[f]: {key: rate(v[acted == f]) for key, v in joined.items()}
                                            for f in actions.factors}}
    edits["gap_points"] = round(100 * (edits["from_twin"]["exact"]["rate"] - edits["from_real"]["exact"]["rate"]), 2)
    return {
        "images": real.description,
        "count": len(real.images),
        "states_from": {"label": "each image's label in the file",
                        "nearest": "the nearest twin render's state (exact search of all 480,000)"}[real.states_from],
        "twin_version": real.twin_version,
        "twin_distance_db": _stats(psnr((twin - real.images).square().flatten(1).mean(1))),
        "reconstruction_db": {"real": _stats(reconstruct["real"]), "twin": _stats(reconstruct["twin"]),
                              "gap": round(float((reconstruct["twin"] - reconstruct["real"]).mean()), 3)},
        # the fraction of latent nodes whose code is the twin render's: what the transition sees differently
        "code_agreement": round(float((codes["real"] == codes["twin"]).float().mean()), 4),
        "edits": edits,
        "targets": {"reconstruction_gap_db": 3.0, "edit_gap_points": 5.0},
    }


def format_real_images(report: dict[str, Any]) -> str:
    """The report of :func:`evaluate_real_images` as a printed table."""
    def pct(r: dict) -> str:
        low, high = r["wilson95"]
        return f"{100 * r['rate']:.1f} [{100 * low:.1f}, {100 * high:.1f}]"

    rec, edits = report["reconstruction_db"], report["edits"]
    real, twin = edits["from_real"], edits["from_twin"]
    lines = [f"real images: {report['images']}; states: {report['states_from']}; twin version {report['twin_version']}",
             f"twin render of the same state: PSNR {report['twin_distance_db']['mean']:.2f} dB "
             f"({report['twin_distance_db']['min']:.1f}-{report['twin_distance_db']['max']:.1f}); "
             f"{100 * report['code_agreement']:.1f}% of latent codes as the render's",
             f"{'real images':<26} {'real':>20} {'twin render':>20} {'gap (target)':>14}",
             f"{'reconstruction PSNR dB':<26} {rec['real']['mean']:>20.2f} {rec['twin']['mean']:>20.2f} "
             f"{rec['gap']:>8.2f} (<= 3)",
             f"{'edits exact %':<26} {pct(real['exact']):>20} {pct(twin['exact']):>20} "
             f"{edits['gap_points']:>8.1f} (<= 5)",
             f"{'edits unchanged %':<26} {pct(real['unchanged']):>20} {pct(twin['unchanged']):>20}"]
    for factor, r in real["per_acted_factor"].items():
        t = twin["per_acted_factor"][factor]
        lines.append(f"{'  ' + factor + ' exact %':<26} {pct(r['exact']):>20} {pct(t['exact']):>20}")
    return "\n".join(lines)


PICTURE_ACTIONS = ("scale+", "shape+", "orientation+")  # the geometry edits: where real images lose most


@torch.no_grad()
def real_images_picture(model, real: RealImages, device: torch.device | str = "cpu", rows: int = 6,
                        actions: tuple[str, ...] = PICTURE_ACTIONS, title: str = ""):
    """A PIL picture of ``rows`` real images (spread over those from which every one of ``actions``
    is valid):
    per row the real image, its reconstruction and the twin render of its state, then for each
    action the edit of the real image, the edit of the render and the render of the true target."""
    from PIL import Image, ImageDraw

    from .pictures import CELL, MARGIN, PAIR_GAP, _font, _pil, _text_size

    space = ActionSpace(SHAPES3D)
    ids = [space.parse(a) for a in actions]
    usable = space.valid_mask(real.states)[:, ids].all(1).nonzero().flatten()
    if len(usable) == 0:
        raise ValueError(f"no real image has all of {actions} valid")
    usable = usable[torch.linspace(0, len(usable) - 1, min(rows, len(usable))).round().long()]  # spread out
    device = torch.device(device)
    states = real.states[usable]
    x = real.images[usable].to(device)
    twin = render_shapes3d(states, version=real.twin_version).to(device)
    groups = [("real", "recon", "twin")] + [(f"{a}: real", "twin", "true") for a in actions]
    group_width = 3 * CELL + 2 * PAIR_GAP
    head, gap = 34 + (14 if title else 0), 12
    image = Image.new("RGB", (MARGIN + len(groups) * (group_width + gap), head + len(usable) * (CELL + 4) + MARGIN),
                      "white")
    draw, font = ImageDraw.Draw(image), _font()
    if title:
        draw.text((MARGIN, 2), title, fill="black", font=font)
    columns = [x, model.decode_codes(model.encode_codes(x)), twin]  # then per action: two edits, the target
    for a in ids:
        target = render_shapes3d(space.apply(states, torch.full((len(states),), a))[0], version=real.twin_version)
        columns += [model.edit(x, a), model.edit(twin, a), target.to(device)]
    for g, names in enumerate(groups):
        left = MARGIN + g * (group_width + gap)
        for c, name in enumerate(names):
            w, _ = _text_size(name, font)
            draw.text((left + c * (CELL + PAIR_GAP) + (CELL - w) // 2, head - 16), name, fill="black", font=font)
        for r in range(len(usable)):
            for c in range(3):
                image.paste(_pil(columns[3 * g + c][r]), (left + c * (CELL + PAIR_GAP), head + r * (CELL + 4)))
    return image
