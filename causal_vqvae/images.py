"""Images in and out: whatever a caller holds (a PIL image, a file path, a numpy array or a torch
tensor; one image or a batch) to what a model reads, float (B, C, S, S) in [0, 1], and back to the
same kind, size, mode and dtype; and image files written atomically.

A conversion that changes the image (resizing, a different channel count) is reported by one
:class:`ImageConversionWarning` per image, so nothing happens silently. A model here is anything
with a ``config`` (:class:`causal_vqvae.ModelConfig`) and parameters: this module does not import it.
"""

from __future__ import annotations

import contextlib
import os
import sys
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange
from PIL import Image, UnidentifiedImageError
from torch import nn

from .familiarity import UnfamiliarImageWarning, check_familiar
from .files import atomic_write

__all__ = ["ImageConversionWarning", "Restore", "report_conversions", "to_batch", "check_output", "write_image"]

# ITU-R 601-2 luma, the weights PIL's convert("L") uses, so arrays and PIL images agree.
_LUMA = (0.299, 0.587, 0.114)
_ACCEPTED = (
    "a PIL image, an image file path, a numpy array (H, W), (H, W, C) or (B, H, W, C), or a torch tensor "
    "(H, W), (C, H, W) or (B, C, H, W); C is 1 (gray), 2 (gray + alpha), 3 (RGB) or 4 (RGBA); uint8 values "
    "in [0, 255] or float values in [0, 1]"
)


class ImageConversionWarning(UserWarning):
    """An input image was resized or changed channels to fit the model (and is converted back)."""


@contextlib.contextmanager
def report_conversions(stream: TextIO | None = None) -> Iterator[None]:
    """For command lines: print every :class:`ImageConversionWarning` raised inside as a plain
    ``note: ...`` line and every :class:`~causal_vqvae.familiarity.UnfamiliarImageWarning` as a
    ``warning: ...`` line on ``stream`` (default stderr), instead of a warning with a source line;
    other warnings are shown as usual."""
    caught: list[warnings.WarningMessage] = []
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ImageConversionWarning)
            warnings.simplefilter("always", UnfamiliarImageWarning)
            yield
    finally:
        # Shown after the recording context is left: inside it, showwarning would record again. A
        # command reads an image more than once (retrieve --out): each note is said once.
        shown: set[tuple[type, str]] = set()
        for item in caught:
            if (item.category, str(item.message)) in shown:
                continue
            shown.add((item.category, str(item.message)))
            if issubclass(item.category, ImageConversionWarning):
                print(f"note: {item.message}", file=stream or sys.stderr)
            elif issubclass(item.category, UnfamiliarImageWarning):
                print(f"warning: {item.message}", file=stream or sys.stderr)
            else:
                warnings.showwarning(item.message, item.category, item.filename, item.lineno)


@dataclass(frozen=True)
class _Pixels:
    """An input decoded to floats, before fitting it to the model."""

    pixels: torch.Tensor  # (B, C, H, W) float32 in [0, 1], C = 1 or 3 (alpha split off)
    alpha: torch.Tensor | None  # (B, 1, H, W) float32, or None
    mode: str  # what the user gave, in words: a PIL mode, or "gray" / "RGB" / "RGBA" / "gray+alpha"


@dataclass(frozen=True)
class Restore:
    """Turns model outputs (B, C, S, S) in [0, 1] back into the input's kind, size, mode and dtype.

    ``batched``: the input was a batch (so results are lists / batches); ``batch_size``: its B."""

    batched: bool
    batch_size: int
    size: tuple[int, int]  # (H, W) of the input
    channels: int  # colour channels of the input, without alpha
    alpha: torch.Tensor | None  # (B, 1, H, W) alpha of the input, put back unchanged
    package: Callable[[torch.Tensor], Any]  # (B, C_in [+ 1], H, W) float [0, 1] -> the input's kind

    def __call__(self, images: torch.Tensor) -> Any:
        if images.dim() != 4 or images.shape[0] != self.batch_size:
            raise ValueError(f"expected {self.batch_size} images (B, C, H, W), got shape {tuple(images.shape)}")
        images = images.detach().float()
        if tuple(images.shape[-2:]) != self.size:
            images = F.interpolate(images, size=self.size, mode="bicubic", antialias=True, align_corners=False)
            images = images.clamp(0.0, 1.0)
        images = _convert_channels(images, self.channels)
        if self.alpha is not None:
            images = torch.cat([images, self.alpha.to(images.device)], dim=1)
        return self.package(images)


def _convert_channels(images: torch.Tensor, channels: int) -> torch.Tensor:
    """(B, C, H, W) with C in {1, 3} -> ``channels``: luminance for 3 -> 1, repetition for 1 -> 3."""
    have = images.shape[1]
    if have == channels:
        return images
    if have == 3 and channels == 1:
        weights = images.new_tensor(_LUMA).view(1, 3, 1, 1)
        return (images * weights).sum(1, keepdim=True)
    if have == 1:
        return images.expand(-1, channels, -1, -1).contiguous()
    raise ValueError(f"cannot convert {have}-channel images to {channels} channels")


def _check_values(values: torch.Tensor, what: str) -> None:
    if torch.is_floating_point(values):
        if not bool(torch.isfinite(values).all()):
            raise ValueError(f"{what} contains NaN or infinite values; images must be finite floats in [0, 1]")
        low, high = float(values.min()), float(values.max())
        if low < 0.0 or high > 1.0:
            hint = " (divide by 255?)" if high > 1.0 else ""
            raise ValueError(f"{what} has values in [{low:g}, {high:g}]; float images must be in [0, 1]{hint}")


def _colour_mode(channels: int) -> str:
    return {1: "gray", 2: "gray+alpha", 3: "RGB", 4: "RGBA"}[channels]


def _from_channels_last(values: torch.Tensor, what: str) -> _Pixels:
    """(B, H, W, C) uint8 or float tensor -> _Pixels."""
    _check_values(values, what)
    floats = values.float() / 255.0 if values.dtype == torch.uint8 else values.float()
    return _split_alpha(rearrange(floats, "b h w c -> b c h w"))


def _split_alpha(images: torch.Tensor) -> _Pixels:
    """(B, C, H, W) float with C in 1..4 -> colour and alpha."""
    channels = images.shape[1]
    mode = _colour_mode(channels)
    if channels in (2, 4):
        return _Pixels(images[:, :-1].contiguous(), images[:, -1:].contiguous(), mode)
    return _Pixels(images.contiguous(), None, mode)


def _read_numpy(array: np.ndarray) -> tuple[_Pixels, bool, Callable[[torch.Tensor], Any]]:
    what = f"array of shape {array.shape} and dtype {array.dtype}"
    if array.dtype != np.uint8 and not np.issubdtype(array.dtype, np.floating):
        raise ValueError(f"unsupported {what}: use uint8 in [0, 255] or float in [0, 1]. Accepted: {_ACCEPTED}")
    if array.ndim not in (2, 3, 4):
        raise ValueError(
            f"unsupported {what}: numpy images are (H, W), (H, W, C) or (B, H, W, C). Accepted: {_ACCEPTED}"
        )
    if array.size == 0:
        raise ValueError(f"empty {what}: an image needs at least one pixel")
    if array.ndim >= 3 and array.shape[-1] not in (1, 2, 3, 4):
        layout = "(H, W, C)" if array.ndim == 3 else "(B, H, W, C)"
        raise ValueError(
            f"unsupported {what}: read as {layout}, channels last, so C = {array.shape[-1]}, but C must be "
            "1, 2, 3 or 4. Channels-first data needs np.moveaxis(a, -3, -1); a batch of gray images "
            "(B, H, W) needs a[..., None]"
        )
    batched = array.ndim == 4
    values = torch.tensor(array)  # a copy: the caller's array may be read-only or strided
    values = values.reshape((1, *values.shape[-2:], 1) if array.ndim == 2 else (-1, *values.shape[-3:]))
    pixels = _from_channels_last(values, what)
    shape, dtype = array.shape, array.dtype

    def package(images: torch.Tensor) -> np.ndarray:
        out = rearrange(images, "b c h w -> b h w c").cpu().numpy()
        if dtype == np.uint8:
            out = np.clip(np.rint(out * 255.0), 0, 255)
        return out.astype(dtype).reshape(shape)

    return pixels, batched, package


def _read_tensor(tensor: torch.Tensor) -> tuple[_Pixels, bool, Callable[[torch.Tensor], Any]]:
    what = f"tensor of shape {tuple(tensor.shape)} and dtype {tensor.dtype}"
    if tensor.dtype != torch.uint8 and not torch.is_floating_point(tensor):
        raise ValueError(f"unsupported {what}: use uint8 in [0, 255] or float in [0, 1]. Accepted: {_ACCEPTED}")
    if tensor.dim() not in (2, 3, 4):
        raise ValueError(f"unsupported {what}: tensors are (H, W), (C, H, W) or (B, C, H, W). Accepted: {_ACCEPTED}")
    if tensor.numel() == 0:
        raise ValueError(f"empty {what}: an image needs at least one pixel")
    if tensor.dim() >= 3 and tensor.shape[-3] not in (1, 2, 3, 4):
        layout = "(C, H, W)" if tensor.dim() == 3 else "(B, C, H, W)"
        raise ValueError(
            f"unsupported {what}: read as {layout}, channels first, so C = {tensor.shape[-3]}, but C must be "
            "1, 2, 3 or 4. Channels-last data needs t.movedim(-1, -3); a batch of gray images (B, H, W) "
            "needs t.unsqueeze(1)"
        )
    batched = tensor.dim() == 4
    values = tensor.detach()
    values = values.reshape((1, 1, *values.shape) if values.dim() == 2 else (-1, *values.shape[-3:]))
    values = rearrange(values, "b c h w -> b h w c")
    pixels = _from_channels_last(values, what)
    shape, dtype, device = tensor.shape, tensor.dtype, tensor.device

    def package(images: torch.Tensor) -> torch.Tensor:
        if dtype == torch.uint8:
            images = (images * 255.0).round().clamp(0, 255)
        return images.to(device=device, dtype=dtype).reshape(shape)

    return pixels, batched, package


def _pil_base_mode(image: Image.Image) -> str:
    """The L / LA / RGB / RGBA mode an image is read in."""
    mode = image.mode
    alpha = "A" in mode or "a" in mode or (mode in ("P", "L", "RGB") and "transparency" in image.info)
    gray = mode in ("1", "L", "LA", "La", "F") or mode.startswith("I")
    if gray:
        return "LA" if alpha else "L"
    return "RGBA" if alpha else "RGB"


# Modes read by their numbers rather than through PIL's convert, which clips them to 8 bits.
_HIGH_DEPTH = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")


def _depth_scale(image: Image.Image, array: np.ndarray) -> float:
    """The value that stands for white in a 16-bit, 32-bit integer or float image: 65535 for 16-bit
    modes; for "I" and "F" the smallest of 1 (floats), 255 and 65535 that holds every value, else
    the image's maximum (its darkest value is still 0)."""
    if image.mode.startswith("I;16"):
        return 65535.0
    if not np.isfinite(array).all():
        raise ValueError(f"image of mode {image.mode} holds NaN or infinite values; give finite pixel values")
    low, high = float(array.min()), float(array.max())
    if low < 0:
        raise ValueError(f"image of mode {image.mode} holds negative values (down to {low:g}); give values from 0 "
                         "(black) up")
    for white in ((1.0,) if image.mode == "F" else ()) + (255.0, 65535.0):
        if high <= white:
            return white
    return high


def _read_pil(image: Image.Image) -> tuple[_Pixels, bool, Callable[[torch.Tensor], Any]]:
    if image.width == 0 or image.height == 0:
        raise ValueError(f"empty image of size {image.width}x{image.height} (mode {image.mode}): "
                         "an image needs at least one pixel")
    mode = image.mode
    if mode in _HIGH_DEPTH:
        numbers = np.asarray(image).astype(np.float64)
        white = _depth_scale(image, numbers)
        values = torch.from_numpy((numbers / white).astype(np.float32))[None, :, :, None]  # (1, H, W, 1)
        pixels = _Pixels(rearrange(values, "b h w c -> b c h w").contiguous(), None, mode)
    else:
        base = _pil_base_mode(image)
        array = np.array(image.convert(base) if image.mode != base else image)
        if array.ndim == 2:
            array = array[:, :, None]
        pixels = _from_channels_last(torch.from_numpy(array)[None], f"image of mode {image.mode}")  # uint8
        pixels = _Pixels(pixels.pixels, pixels.alpha, image.mode)
        white = 255.0

    def package(images: torch.Tensor) -> Image.Image:
        if mode in _HIGH_DEPTH:
            values = images[0, 0].clamp(0, 1).cpu().double().numpy() * white
            if mode == "F":
                return Image.fromarray(values.astype(np.float32))
            if mode.startswith("I;16"):
                return Image.fromarray(np.round(values).astype(np.uint16))
            return Image.fromarray(np.round(values).astype(np.int32))
        array = (images[0] * 255.0).round().clamp(0, 255).to(torch.uint8)
        array = rearrange(array, "c h w -> h w c").cpu().numpy()
        out = Image.fromarray(array[:, :, 0] if array.shape[-1] == 1 else array)
        if out.mode == mode:
            return out
        if mode == "P":
            # An edit's colours need not be in the palette: a palette image comes back as RGB, or
            # RGBA when it had a transparent colour (its alpha carried through the edit).
            return out
        if mode == "1":
            return out.convert("L").point(lambda v: 255 if v >= 128 else 0).convert("1")
        return out.convert(mode)

    return pixels, False, package


# Images above this many pixels are reduced while they are read (JPEG: decoded at 1/2, 1/4 or 1/8
# scale; others: a box filter) to about WORK_SIDES model sides, and the result is enlarged back to
# the input's size with PIL in 8 bits: a 10000x10000 PNG is edited in 0.96 GB at the most (import
# torch included; benchmarks/start_time.py), where float copies at full size took 4.5 GB. The model
# reads 64x64 pixels either way.
LARGE_PIXELS = 2048 * 2048
WORK_SIDES = 4


def _reduction(size: tuple[int, int], side: int) -> int:
    """The integer factor a ``size`` (W, H) image is reduced by before the model reads it (1: none)."""
    width, height = size
    if width * height <= LARGE_PIXELS:
        return 1
    return max(1, min(width, height) // (WORK_SIDES * side))


def _reduced(image: Image.Image, side: int) -> Image.Image:
    """``image`` reduced by :func:`_reduction` (itself when small). Palette and bilevel images are
    converted first, so the box filter averages colours rather than palette indices."""
    factor = _reduction(image.size, side)
    if factor == 1:
        return image
    if image.mode in ("P", "1"):
        image = image.convert("RGBA" if image.mode == "P" and "transparency" in image.info else
                              "RGB" if image.mode == "P" else "L")
    if image.mode in ("I;16", "I;16B", "I;16L"):
        image = image.convert("I")
    return image.reduce(factor)


def _read_path(path: str | os.PathLike, side: int | None = None) -> tuple[Image.Image, tuple[int, int]]:
    """The image at ``path`` and its size (W, H) in the file; with ``side`` (the model's), a large
    image comes back reduced (:func:`_reduced`; JPEG decoded at a smaller scale)."""
    if str(path).startswith(("http://", "https://", "ftp://")):
        raise ValueError(f"{path} is a URL: images are read from files, nothing is downloaded; download it and "
                         "give the file's path")
    path = Path(path).expanduser()
    if not path.exists():
        where = "" if path.is_absolute() else f" (looked for {path.absolute()})"
        raise FileNotFoundError(f"image file {path} does not exist{where}; check the path")
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a directory, not an image file; give the path of one image")
    if path.stat().st_size == 0:
        raise ValueError(f"{path} is an empty file (0 bytes), not an image; give a PNG, JPEG, BMP, ... file")
    try:
        with warnings.catch_warnings(), Image.open(path) as opened:
            # PIL warns above 89M pixels; such an image is read reduced here (a bomb still raises)
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            size = opened.size
            if side is not None and _reduction(size, side) > 1 and opened.format == "JPEG":
                wanted = _reduction(size, side)
                opened.draft(opened.mode, (size[0] // wanted, size[1] // wanted))  # decode at a smaller scale
            opened.load()
            image = opened if side is None else _reduced(opened, side)
            return (opened.copy() if image is opened else image), size  # a copy outlives the open file
    except UnidentifiedImageError:
        raise ValueError(f"{path} is not an image file PIL can read; give a PNG, JPEG, BMP, ... file") from None
    except Image.DecompressionBombError as error:
        raise ValueError(f"{path} is refused: {error} Give a smaller image (the model reads "
                         "64x64 pixels)") from None
    except PermissionError:
        raise
    except OSError as error:
        raise ValueError(f"cannot read the image {path}: {error}; the file may be truncated or damaged") from None


def _conversion_note(pixels: _Pixels, model: nn.Module, size: tuple[int, int] | None = None) -> str | None:
    """One sentence saying how ``pixels`` (read from an image of ``size`` (W, H), default theirs)
    are changed to fit ``model``, or None when they already fit."""
    config = model.config
    batch, channels, height, width = pixels.pixels.shape
    if size is not None:
        width, height = size
    side = config.image_size
    target = {1: "L", 3: "RGB"}.get(config.in_channels)
    changes = []
    if (height, width) != (side, side):
        stretched = " (stretched: aspect ratio not kept)" if height != width else ""
        changes.append(f"resized to {side}x{side}{stretched}")
    same_mode = pixels.mode == target or (pixels.mode in ("gray", *_HIGH_DEPTH) and target == "L")
    if not same_mode:
        if config.in_channels == 1:
            how = "luminance" if channels == 3 else "gray"
        elif channels == 1:
            how = "gray repeated"
        else:
            how = "RGB"
        if pixels.alpha is not None:
            how += ", alpha set aside and put back in the result"
        plural = "" if config.in_channels == 1 else "s"
        changes.append(f"converted to {config.in_channels} channel{plural} ({how})")
    if not changes:
        return None
    what = "image" if batch == 1 else f"batch of {batch} images"
    model_name = f"a {config.dataset} model" if config.dataset else "this model"
    return f"{what} {width}x{height} {pixels.mode} {' and '.join(changes)} for {model_name}"


def _enlarging(package: Callable[[torch.Tensor], Image.Image], size: tuple[int, int]) -> Callable:
    """``package``, then the PIL image enlarged to ``size`` (W, H) in its own mode (bicubic)."""
    def enlarge(images: torch.Tensor) -> Image.Image:
        small = package(images)
        resample = Image.NEAREST if small.mode in ("1", "P") else Image.BICUBIC
        return small.resize(size, resample)

    return enlarge


def _to_batch(image: Any, model: nn.Module, stacklevel: int) -> tuple[torch.Tensor, Restore]:
    config = model.config
    size = None  # (W, H) of a large image that is read reduced, and given back at that size
    if isinstance(image, (str, os.PathLike)):
        image, size = _read_path(image, config.image_size)
    if isinstance(image, Image.Image):
        size = size or image.size
        image = _reduced(image, config.image_size)
        pixels, batched, package = _read_pil(image)
        if image.size != size:
            package = _enlarging(package, size)
        else:
            size = None
    elif isinstance(image, np.ndarray):
        pixels, batched, package = _read_numpy(image)
    elif isinstance(image, torch.Tensor):
        pixels, batched, package = _read_tensor(image)
    else:
        raise TypeError(f"cannot read a {type(image).__name__} as an image; accepted: {_ACCEPTED}")

    batch, channels, height, width = pixels.pixels.shape
    if config.in_channels not in (1, 3) and channels != config.in_channels:
        raise ValueError(f"the model reads {config.in_channels}-channel images, got {channels} channels")
    note = _conversion_note(pixels, model, size)
    if note is not None:
        warnings.warn(note, ImageConversionWarning, stacklevel=stacklevel)
    x = _convert_channels(pixels.pixels.to(_device(model)), config.in_channels)
    side = config.image_size
    if (height, width) != (side, side):
        x = F.interpolate(x, size=(side, side), mode="bicubic", antialias=True, align_corners=False).clamp(0.0, 1.0)
    restore = Restore(batched, batch, (height, width), channels, pixels.alpha, package)
    check_familiar(model, x, stacklevel=stacklevel)
    return x.contiguous(), restore


def to_batch(image: Any, model: nn.Module) -> tuple[torch.Tensor, Restore]:
    """``image`` -> (images (B, C, S, S) float32 in [0, 1] on the model's device, ``restore``).

    Accepts a PIL image, a file path (read with PIL), a numpy array (H, W), (H, W, C) or
    (B, H, W, C), or a tensor (H, W), (C, H, W) or (B, C, H, W): uint8 in [0, 255] or float in
    [0, 1], with 1 (gray), 2 (gray + alpha), 3 (RGB) or 4 (RGBA) channels. Another size is resized
    (bicubic, antialiased); gray becomes RGB by repetition and RGB gray by luminance; alpha is set
    aside. Any such change emits one :class:`ImageConversionWarning` saying what was done.

    ``restore(outputs)`` turns model outputs (B, C, S, S) back into the input's kind at its size,
    mode and dtype (a path gives a PIL image); ``restore.batched`` says whether it was a batch."""
    return _to_batch(image, model, stacklevel=3)


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


# ------------------------------------------------------------------------------------- files
def _image_format(out: Path) -> str:
    fmt = Image.registered_extensions().get(out.suffix.lower())
    if fmt is None or fmt not in Image.SAVE:
        raise ValueError(f"cannot tell an image format from the name {out}; end it in .png (lossless) or .jpg")
    return fmt


def image_format(out: str | os.PathLike) -> str:
    """The image format that ``out``'s extension names (ValueError naming the accepted ones)."""
    return _image_format(Path(out))


def check_output(out: Path) -> str:
    """Fail early, before any work: the image format of ``out`` and a writable directory for it."""
    fmt = _image_format(out)
    parent = out.parent
    if parent.exists() and not parent.is_dir():
        raise OSError(
            f"cannot write {out}: {parent} is a file, not a directory; choose an output path inside a directory"
        )
    if not parent.is_dir():
        raise OSError(f"output directory {parent} does not exist; create it first")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OSError(
            f"cannot write to the output directory {parent}: permission denied; choose a writable directory "
            "or change its permissions"
        )
    return fmt


_PNG_MODES = ("1", "L", "LA", "I", "I;16", "P", "RGB", "RGBA")


def write_image(image: Image.Image, out: str | os.PathLike) -> Path:
    """Save ``image`` to ``out`` atomically (a temporary file next to it, then ``os.replace``), in the
    format its extension names; JPEG gets RGB or L."""
    out = Path(out)
    fmt = _image_format(out)
    if fmt == "JPEG" and image.mode not in ("L", "RGB", "CMYK"):
        image = image.convert("RGB")
    elif fmt == "PNG" and image.mode not in _PNG_MODES:  # e.g. CMYK, or F (floats)
        image = image.convert("RGBA" if "A" in image.mode else "L" if image.mode == "F" else "RGB")
    atomic_write(out, lambda temp: image.save(temp, format=fmt))
    return out
