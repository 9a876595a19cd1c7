"""3D Shapes: how close a twin is to DeepMind's published frames, and what the frames' GIF allows.

DeepMind publishes 53 frames of 3D Shapes as an animated GIF (``shared/data/shapes3d_real_frames.npz``,
``images`` ``(53, 227, 226, 3)`` uint8): each 64x64 render was upscaled to 223x223, framed by a
white and a grey line (two pixels at the top, bottom and left, one grey pixel at the right), and
quantised to one palette of at most 256 colours shared by all frames. This module undoes what it
can and measures the rest:

* :func:`real_frames_64` cuts the frame and area-downsamples the 223x223 picture back to 64x64;
* :func:`gif_round_trip` sends 64x64 images through the same trip (upscale, frame, palette, cut,
  area-downsample), so ``psnr(x, gif_round_trip(x))`` bounds how close *any* renderer can come to
  the real frames under this measurement;
* :func:`psnr` in dB on [0, 255] images;
* :func:`nearest_states`: the twin state whose render is nearest each image, found exactly among all
  480,000 states (or the candidates given).
"""

from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .space import IMAGE_SIZE, SHAPES3D
from .twin import render_shapes3d

__all__ = ["GIF_CONTENT", "gif_round_trip", "nearest_states", "psnr", "real_frames_64"]

GIF_CONTENT = 223  # side of the upscaled picture inside the GIF's frame
_GIF_SHAPE = (227, 226)  # rows, columns of a GIF frame
_CONTENT = (slice(2, 2 + GIF_CONTENT), slice(2, 2 + GIF_CONTENT))  # the frame: 2 px top/bottom/left, 1 px right
_RESAMPLE = {"nearest": Image.NEAREST, "bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC,
             "lanczos": Image.LANCZOS}


@functools.lru_cache(maxsize=4)
def area_matrix(size_in: int, size_out: int) -> torch.Tensor:
    """``(size_out, size_in)`` float64 exact area-averaging: output pixel i averages the input over
    ``[i, i + 1) * size_in / size_out``, counting partly covered input pixels by their covered part."""
    edges = torch.arange(size_out + 1, dtype=torch.float64) * size_in / size_out
    lo, hi = edges[:-1, None], edges[1:, None]
    pixel = torch.arange(size_in, dtype=torch.float64)[None]
    overlap = (torch.minimum(hi, pixel + 1) - torch.maximum(lo, pixel)).clamp_min(0)
    return overlap / overlap.sum(1, keepdim=True)


def _area_down(images: torch.Tensor) -> torch.Tensor:
    """``(N, 3, 223, 223)`` -> ``(N, 3, 64, 64)`` float64 by exact area averaging."""
    a = area_matrix(images.shape[-1], IMAGE_SIZE)
    return a @ images.double() @ a.T


def real_frames_64(gif_frames: np.ndarray) -> torch.Tensor:
    """GIF frames ``(N, 227, 226, 3)`` uint8 -> ``(N, 3, 64, 64)`` float64 in [0, 255]: the frame
    cut off, the 223x223 picture area-downsampled."""
    if gif_frames.ndim != 4 or tuple(gif_frames.shape[1:3]) != _GIF_SHAPE or gif_frames.shape[3] != 3:
        raise ValueError(f"expected GIF frames (N, 227, 226, 3), got {tuple(gif_frames.shape)}")
    content = torch.from_numpy(np.ascontiguousarray(gif_frames[:, _CONTENT[0], _CONTENT[1]]))
    return _area_down(content.permute(0, 3, 1, 2))


def _framed(image: np.ndarray) -> np.ndarray:
    frame = np.full((*_GIF_SHAPE, 3), 255, np.uint8)
    frame[1:-1, 1:] = 206
    frame[_CONTENT] = image
    return frame


def gif_round_trip(images: torch.Tensor, resample: str = "bicubic", palette: str = "shared") -> torch.Tensor:
    """Send renders ``(N, 3, 64, 64)`` in [0, 1] through the GIF's trip and back: rounded to uint8,
    upscaled to 223x223 (PIL ``resample``), framed as in the GIF, quantised to at most 256 colours
    (PIL's median cut, no dithering), the frame cut and the picture area-downsampled. Returns
    ``(N, 3, 64, 64)`` float64 in [0, 255].

    ``palette="shared"`` fits one palette to all N images, as the GIF has (its 53 frames use 255
    colours together); ``"per_image"`` fits one per image, which loses less.
    """
    if resample not in _RESAMPLE:
        raise ValueError(f"resample must be one of {sorted(_RESAMPLE)}, got {resample!r}")
    if palette not in ("shared", "per_image"):
        raise ValueError(f"palette must be 'shared' or 'per_image', got {palette!r}")
    small = (images.detach().cpu().clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).numpy()
    framed = [_framed(np.asarray(Image.fromarray(x).resize((GIF_CONTENT, GIF_CONTENT), _RESAMPLE[resample])))
              for x in small]
    if palette == "shared":
        sheet = Image.fromarray(np.concatenate(framed, 0)).quantize(256, dither=Image.Dither.NONE)
        quantised = np.asarray(sheet.convert("RGB")).reshape(len(framed), *_GIF_SHAPE, 3)
    else:
        quantised = np.stack([np.asarray(Image.fromarray(f).quantize(256, dither=Image.Dither.NONE).convert("RGB"))
                              for f in framed])
    return real_frames_64(quantised)


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB per image of ``(N, C, H, W)`` images in [0, 255]."""
    mse = ((a.double() - b.double()) ** 2).mean(dim=(1, 2, 3))
    return 10 * torch.log10(255.0**2 / mse)


_POOL = 8  # block size of the search's lower bound (64x64 -> 8x8)


@torch.no_grad()
def nearest_states(images: torch.Tensor, version: str = "1", candidates: torch.Tensor | None = None,
                   chunk: int = 4096, images_at_once: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """The twin state whose render (of renderer ``version``) is nearest each image by mean squared
    error: ``(flat state index (N,) long, mean squared error (N,) float64)``, images ``(N, 3, 64, 64)``
    in [0, 1] on the CPU.

    Exact, among all 480,000 states or the flat indices ``candidates``: every candidate is rendered
    once and 8x8 block-averaged; the block-averaged squared error is a lower bound on the full one
    (Jensen's inequality, block by block), so full renders are compared in increasing order of the
    bound until the bound passes the best error found. About a minute per version on one CPU thread
    for all states and 53 images; ``images_at_once`` images are searched together (their bounds take
    8 bytes per image and candidate: 250 MB for 64 images and all states)."""
    if images.dim() != 4 or tuple(images.shape[1:]) != (3, IMAGE_SIZE, IMAGE_SIZE):
        raise ValueError(f"nearest_states takes (N, 3, 64, 64) images, got {tuple(images.shape)}")
    pool = (torch.arange(SHAPES3D.num_states) if candidates is None else candidates.long().flatten()).cpu()
    if pool.numel() == 0:
        raise ValueError("nearest_states needs at least one candidate state")
    if len(images) > images_at_once:  # the bounds take 8 bytes per image and candidate: a few images at a time
        parts = [nearest_states(images[i:i + images_at_once], version, candidates, chunk, images_at_once)
                 for i in range(0, len(images), images_at_once)]
        return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
    targets = images.detach().cpu().double()
    pooled = F.avg_pool2d(targets, _POOL).flatten(1)
    bounds = torch.empty(targets.shape[0], pool.numel(), dtype=torch.float64)
    for start in range(0, pool.numel(), chunk):
        index = pool[start:start + chunk]
        blocks = F.avg_pool2d(render_shapes3d(SHAPES3D.unravel(index), version=version), _POOL).flatten(1).double()
        bounds[:, start:start + chunk] = torch.cdist(pooled, blocks).square() / pooled.shape[1]
    bounds -= 1e-9  # float rounding of the distance must never exclude the true nearest
    best_index = torch.empty(targets.shape[0], dtype=torch.long)
    best_error = torch.empty(targets.shape[0], dtype=torch.float64)
    for k in range(targets.shape[0]):
        order = torch.argsort(bounds[k])
        error, index = float("inf"), -1
        for start in range(0, order.numel(), 1024):
            rows = order[start:start + 1024]
            if float(bounds[k, rows[0]]) >= error:
                break
            states = pool[rows]
            errors = (render_shapes3d(SHAPES3D.unravel(states), version=version).double() - targets[k]).square()
            errors = errors.mean(dim=(1, 2, 3))
            i = int(errors.argmin())
            if float(errors[i]) < error:
                error, index = float(errors[i]), int(states[i])
        best_index[k], best_error[k] = index, error
    return best_index, best_error
