"""Training augmentation for what a procedural twin does not match in real images.

Which differences matter was measured, not guessed (``experiments/real_image_gap/``): the released 3D
Shapes model was given held-out twin renders changed one way at a time, and each change's cost in
edits was set against what the real frames cost (84.6% exact, against 95.3% from their twin renders
and 94.2% from clean held-out renders; 36% of the latent codes as the render's). A different **renderer** of the same state (twin version 2) costs as much as the
real frames (80.4%, 41% of codes); resampling, blur and JPEG cost 3-6 points, a colour or
brightness shift 1-2 points but 3-6 dB of reconstruction, and the GIF's palette little (93.0%).
So the augmentations are, by name (:data:`AUGMENTATIONS`):

- ``renderer``: the image rendered by another renderer version of the twin (3D Shapes: the next
  version, and version 3 for a model on the last, version 4: 1 -> 2, 2 -> 3, 3 -> 4, 4 -> 3);
- ``resample``: down to 40x40 and back up, mixed with the image by a random strength;
- ``blur``: a Gaussian blur (sigma 1 pixel), mixed with the image by a random strength (the study
  measured sigma 0.7);
- ``jpeg``: JPEG's 8x8 block DCT quantisation at a random quality between 50 and 95;
- ``colour``: a gain of up to 8% per channel and a brightness offset of up to 0.05;
- ``border``: the 1-pixel frame of DeepMind's GIF (light top and left lines, a grey bottom line).

Each applies to an item with ``probability``, its draws a pure function of ``(seed, item index)``
(a counter-based hash, as the pairs are drawn: no generator state, the same on every DDP rank and
after a resume), and the same to both images of a pair. They run on the batch's device, on
training batches only (:meth:`datamodules.base._BaseDataModule.prepare_batch` with ``augment``).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

__all__ = ["AUGMENTATIONS", "augment_images", "blur", "check_augment", "gif_border", "item_uniforms",
           "no_other_renderer", "resample"]

AUGMENTATIONS = ("renderer", "resample", "blur", "jpeg", "colour", "border")
_DRAWS = 8  # uniforms per item and augmentation: whether, then its parameters

# splitmix64 constants as signed int64 (torch has no uint64 arithmetic; int64 products wrap alike).
_GOLDEN = 0x9E3779B97F4A7C15 - (1 << 64)
_C1 = 0xBF58476D1CE4E5B9 - (1 << 64)
_C2 = 0x94D049BB133111EB - (1 << 64)


def _shift(x: torch.Tensor, bits: int) -> torch.Tensor:
    """Logical right shift of int64 (torch's >> is arithmetic)."""
    return (x >> bits) & ((1 << (64 - bits)) - 1)


def _mix64(x: torch.Tensor) -> torch.Tensor:
    z = x + _GOLDEN
    z = (z ^ _shift(z, 30)) * _C1
    z = (z ^ _shift(z, 27)) * _C2
    return z ^ _shift(z, 31)


def item_uniforms(index: torch.Tensor, seed: int, count: int) -> torch.Tensor:
    """``(B, count)`` uniforms in [0, 1), a pure function of each item's ``index`` and ``seed``, on
    the index's device (no host sync)."""
    key = _mix64(_mix64(index.long() * 0x2545F491 + int(seed) * 0x5DEECE66) + 0xA06)
    counters = torch.arange(count, device=index.device, dtype=torch.long)
    bits = _shift(_mix64(key[:, None] ^ (counters[None] * 0x632BE5AB)), 40)  # 24 random bits: exact in float32
    return bits.float().div_(float(1 << 24))


def check_augment(names: Sequence[str], probability: float, versions: int, twin: bool) -> tuple[str, ...]:
    """The augmentation names checked (known, no repeats), as a tuple; ``renderer`` needs a twin with
    more than one renderer version (``versions``) and a twin as the data (``twin``). Raises
    ValueError naming the problem."""
    if isinstance(names, str):
        names = [n for n in names.split(",") if n]
    names = tuple(names)
    for name in names:
        if name not in AUGMENTATIONS:
            from difflib import get_close_matches

            close = get_close_matches(str(name), AUGMENTATIONS, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(f"augment: unknown augmentation {name!r}{hint}; choose from {', '.join(AUGMENTATIONS)}")
    if len(set(names)) != len(names):
        raise ValueError(f"augment: {list(names)} names an augmentation twice")
    if not 0.0 < probability <= 1.0:
        raise ValueError(f"augment_probability must be in (0, 1], got {probability}")
    why = no_other_renderer(versions, twin)
    if "renderer" in names and why:
        raise ValueError(f"augment: 'renderer' swaps the twin's renderer version, but {why}; leave it out")
    return names


def no_other_renderer(versions: int, twin: bool) -> str | None:
    """Why the data has no other renderer for the ``renderer`` augmentation to draw with (a twin of
    ``versions`` renderer versions; ``twin`` False: a real file), or None where it has one."""
    if versions < 2:
        return "this dataset's twin has one renderer version (only 3D Shapes has more)"
    return None if twin else "the data is a real file, which has one rendering"


def _per_item(t: torch.Tensor) -> torch.Tensor:
    return t.view(-1, 1, 1, 1)


def blur(x: torch.Tensor, sigma: float = 1.0) -> torch.Tensor:
    """A separable Gaussian blur of ``(B, C, H, W)`` images (5 taps, edges replicated)."""
    radius = 2
    t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    c = x.shape[1]
    padded = F.pad(x, (radius,) * 4, mode="replicate")
    h = F.conv2d(padded, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(h, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def resample(x: torch.Tensor, size: int = 40) -> torch.Tensor:
    """Images down to ``size`` x ``size`` (bilinear, antialiased) and back up (bicubic), unclamped."""
    small = F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
    return F.interpolate(small, size=x.shape[-1], mode="bicubic", align_corners=False)


# JPEG's luminance quantisation table (ITU-T T.81, Annex K), row-major.
_JPEG_TABLE = (16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56,
               14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
               49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99)


@functools.lru_cache(maxsize=8)
def _jpeg_constants(device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """The 8x8 DCT matrix and the quantisation table on ``device``, made once per device (a copy to
    a GPU at every batch would wait on it)."""
    n = torch.arange(8, dtype=torch.float64)
    d = torch.cos((2 * n[None] + 1) * n[:, None] * math.pi / 16) * math.sqrt(2 / 8)
    d[0] /= math.sqrt(2)
    table = torch.tensor(_JPEG_TABLE, dtype=torch.float64).view(8, 8)
    return d.to(device=device, dtype=dtype), table.to(device=device, dtype=dtype)


def _jpeg(x: torch.Tensor, quality: torch.Tensor) -> torch.Tensor:
    """Block DCT quantisation of each channel at ``quality`` (B,) in [1, 100], as JPEG scales its
    table (the luminance table for every channel, no chroma subsampling)."""
    b, c, h, w = x.shape
    if h % 8 or w % 8:
        return x  # only whole 8x8 blocks; the twins' 64x64 images always are
    d, table = _jpeg_constants(x.device, x.dtype)
    scale = torch.where(quality < 50, 5000 / quality, 200 - 2 * quality)  # (B,)
    step = ((table[None] * scale.view(-1, 1, 1) + 50) / 100).floor().clamp_min(1) / 255  # (B, 8, 8)
    blocks = (x - 0.5).reshape(b, c, h // 8, 8, w // 8, 8).transpose(3, 4)  # (B, C, H/8, W/8, 8, 8)
    coefficients = d @ blocks @ d.T
    step = step.view(b, 1, 1, 1, 8, 8)
    quantised = (coefficients / step).round() * step
    out = (d.T @ quantised @ d).transpose(3, 4).reshape(b, c, h, w) + 0.5
    return out


def gif_border(x: torch.Tensor) -> torch.Tensor:
    """The 1-pixel frame of DeepMind's GIF drawn on images: light top and left lines, a grey bottom."""
    out = x.clone()
    out[..., 0, :] = 1.0
    out[..., :, 0] = 1.0
    out[..., -1, :] = 206 / 255
    return out


def augment_images(images: Sequence[torch.Tensor], index: torch.Tensor, names: Sequence[str], probability: float,
                   seed: int, render_alternate: Callable[[int], torch.Tensor] | None = None) -> list[torch.Tensor]:
    """``images`` (each ``(B, C, H, W)`` in [0, 1], e.g. a pair's two images) augmented alike per
    item: each of ``names`` applies to item b with ``probability``, drawn from ``(seed, index[b])``.
    ``render_alternate(i)`` renders ``images[i]``'s states by another renderer (for ``renderer``)."""
    if not names:
        return list(images)
    u = item_uniforms(index, seed, _DRAWS * len(AUGMENTATIONS))
    out = [x for x in images]
    for k, name in enumerate(AUGMENTATIONS):
        if name not in names:
            continue
        draws = u[:, _DRAWS * k:_DRAWS * (k + 1)]
        chosen = _per_item(draws[:, 0] < probability)
        strength = _per_item(draws[:, 1])
        for i, x in enumerate(out):
            if name == "renderer":
                if render_alternate is None:
                    raise ValueError("augment: 'renderer' needs another renderer of the twin")
                changed = render_alternate(i).to(x.dtype)
            elif name == "resample":
                changed = x + strength * (resample(x) - x)
            elif name == "blur":
                changed = x + strength * (blur(x) - x)
            elif name == "jpeg":
                changed = _jpeg(x, 50 + 45 * draws[:, 1].to(x.dtype))
            elif name == "colour":
                gain = 1 + 0.08 * (2 * draws[:, 2:2 + x.shape[1]] - 1)  # (B, C)
                offset = 0.05 * (2 * draws[:, 5] - 1)
                changed = x * gain[:, :, None, None].to(x.dtype) + _per_item(offset).to(x.dtype)
            else:  # border
                changed = gif_border(x)
            out[i] = torch.where(chosen, changed.clamp(0, 1), x)
    return out
