"""Every Pillow mode a user's file may have is read by its meaning, not clipped: 1, L, LA, P (with a
transparent colour), I;16, I, F, CMYK, RGB and RGBA; the edit comes back in a mode that can be saved."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import tiny
from causal_vqvae import CausalVQVAE, ModelConfig, edit
from causal_vqvae.api import to_batch
from causal_vqvae.images import write_image

GRAY = dict(in_channels=1, dataset="dsprites", num_actions=2, action_names=("scale-", "scale+"), **tiny.TINY)


@pytest.fixture(scope="module")
def model() -> CausalVQVAE:
    torch.manual_seed(0)
    return CausalVQVAE(ModelConfig(**GRAY)).eval()


def _ramp() -> np.ndarray:
    """(64, 64) in [0, 1]: a horizontal ramp from black to white."""
    return np.tile(np.linspace(0.0, 1.0, 64), (64, 1))


def _as_mode(mode: str) -> tuple[Image.Image, np.ndarray]:
    """An image of ``mode`` and the gray values in [0, 1] it stands for."""
    ramp = _ramp()
    if mode == "I;16":
        return Image.fromarray(np.round(ramp * 65535).astype(np.uint16)), np.round(ramp * 65535) / 65535
    if mode == "I":  # 16-bit data in a 32-bit integer image, as PIL opens many 16-bit PNGs
        return Image.fromarray(np.round(ramp * 65535).astype(np.int32)), np.round(ramp * 65535) / 65535
    if mode == "F":
        return Image.fromarray(ramp.astype(np.float32)), ramp.astype(np.float32)
    eight = np.round(ramp * 255).astype(np.uint8)
    if mode == "1":
        bits = eight >= 128
        return Image.fromarray(eight).point(lambda v: 255 if v >= 128 else 0).convert("1"), bits.astype(float)
    return Image.fromarray(eight).convert(mode), eight / 255.0


@pytest.mark.parametrize("mode", ["I;16", "I", "F", "1", "L", "LA", "RGB", "RGBA"])
def test_a_mode_is_read_by_its_values(model, mode):
    image, expected = _as_mode(mode)
    x, restore = to_batch(image, model)
    assert x.shape == (1, 1, 64, 64)
    assert np.abs(x[0, 0].numpy() - expected).max() < 1.5 / 255, mode  # not clipped to black or white
    back = restore(x)
    assert back.mode == image.mode and back.size == image.size


@pytest.mark.parametrize("mode", ["I;16", "I", "F"])
def test_a_high_depth_image_round_trips_at_its_depth(model, mode):
    image, _ = _as_mode(mode)
    x, restore = to_batch(image, model)
    back = np.asarray(restore(x)).astype(np.float64)
    assert np.abs(back - np.asarray(image).astype(np.float64)).max() <= (1e-6 if mode == "F" else 1.0)


def test_a_float_image_of_0_to_255_and_bad_values(model):
    x, _ = to_batch(Image.fromarray((_ramp() * 255).astype(np.float32)), model)
    assert abs(float(x.max()) - 1.0) < 1e-6 and abs(float(x[0, 0, 0, 32]) - 32 / 63) < 1e-5
    with pytest.raises(ValueError, match="negative values"):
        to_batch(Image.fromarray(np.full((64, 64), -1.0, np.float32), mode="F"), model)
    with pytest.raises(ValueError, match="NaN or infinite"):
        to_batch(Image.fromarray(np.full((64, 64), np.nan, np.float32), mode="F"), model)


def test_cmyk_is_read_as_its_colours_and_saves_as_png(model, tmp_path):
    white = Image.new("CMYK", (64, 64), (0, 0, 0, 0))
    x, _ = to_batch(white, model)
    assert float(x.min()) > 0.99  # no ink is white
    edited = edit(white, "scale+", model)
    assert edited.mode == "CMYK"
    write_image(edited, tmp_path / "out.png")
    assert Image.open(tmp_path / "out.png").mode == "RGB"
    write_image(edited, tmp_path / "out.jpg")
    assert Image.open(tmp_path / "out.jpg").mode == "CMYK"


def test_a_palette_image_keeps_its_transparency(model, tmp_path):
    palette = Image.fromarray(np.round(_ramp() * 3).astype(np.uint8), mode="P")
    palette.putpalette([0, 0, 0, 85, 85, 85, 170, 170, 170, 255, 255, 255] + [0] * 756)
    palette.info["transparency"] = 0  # colour 0 is transparent
    x, restore = to_batch(palette, model)
    assert abs(float(x[0, 0, 0, -1]) - 1.0) < 1e-6 and abs(float(x[0, 0, 0, 30]) - 85 / 255) < 1e-6
    back = restore(x)
    assert back.mode == "RGBA"  # an edit's colours need not be in the palette; the transparency is kept
    alpha = np.asarray(back)[..., 3]
    assert (alpha[:, :10] == 0).all() and (alpha[:, -10:] == 255).all()
    write_image(back, tmp_path / "p.png")
    assert Image.open(tmp_path / "p.png").mode == "RGBA"


def test_a_float_edit_saves_as_png(model, tmp_path):
    image, _ = _as_mode("F")
    write_image(edit(image, "scale+", model), tmp_path / "f.png")
    assert Image.open(tmp_path / "f.png").mode == "L"


@pytest.mark.parametrize("kind", ["png", "jpeg", "pil"])
def test_a_large_image_is_read_reduced_and_given_back_at_its_size(model, tmp_path, kind):
    from causal_vqvae import images

    side = 2400  # 5.8M pixels, above images.LARGE_PIXELS: read reduced
    ramp = np.tile(np.linspace(0, 255, side), (side, 1)).astype(np.uint8)
    picture = Image.fromarray(ramp)
    if kind == "pil":
        source = picture
    else:
        source = tmp_path / f"large.{kind}"
        picture.save(source)
        read, size = images._read_path(source, 64)
        assert size == (side, side) and read.width < side // 4  # decoded at a smaller scale, or reduced
    with pytest.warns(images.ImageConversionWarning, match=r"image 2400x2400 L resized to 64x64"):
        x, restore = to_batch(source, model)
    assert x.shape == (1, 1, 64, 64)
    # what the model reads is the image resized to 64x64, as from the full-size pixels
    small = np.asarray(picture.resize((64, 64), Image.BICUBIC), dtype=np.float64) / 255
    assert np.abs(x[0, 0].numpy() - small).mean() < 0.01
    with pytest.warns(images.ImageConversionWarning):
        edited = edit(source, "scale+", model)
    assert edited.size == (side, side) and edited.mode == "L"
    # given back at its size: the model's 64x64 output enlarged, equal to enlarging it by hand
    with pytest.warns(images.ImageConversionWarning):
        x, restore = to_batch(source, model)
    out = model.edit(x, 1)
    by_hand = Image.fromarray((out[0, 0].numpy() * 255).round().astype(np.uint8)).resize((side, side), Image.BICUBIC)
    assert np.abs(np.asarray(edited, dtype=int) - np.asarray(by_hand, dtype=int)).mean() < 2.0


def test_a_small_image_is_not_reduced(tmp_path):
    from causal_vqvae import images

    Image.new("RGB", (2048, 2048)).save(tmp_path / "edge.png")
    read, size = images._read_path(tmp_path / "edge.png", 64)
    assert read.size == size == (2048, 2048)


def test_a_command_says_each_conversion_note_once(model):
    import io

    from causal_vqvae.api import report_conversions

    stream = io.StringIO()
    image = Image.new("RGB", (32, 32))
    with report_conversions(stream):
        to_batch(image, model)
        to_batch(image, model)  # read twice, as retrieve --out does
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1 and lines[0].startswith("note: image 32x32 RGB resized to 64x64")
