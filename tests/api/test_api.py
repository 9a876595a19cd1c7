"""The user-facing API and command lines: load, edit, retrieve_action, analogy, and the two CLIs.

Every image kind must come back as the same kind, size, mode and dtype; results must equal the
model's own code-space computation; every error must say what was wrong and what is accepted.
"""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from causal_vqvae import CausalVQVAE, ModelConfig, analogy, edit, load, retrieve_action
from causal_vqvae import api, traversal
from causal_vqvae.api import ImageConversionWarning, parse_actions, to_batch
from causal_vqvae.api import GRID_PAD
from causal_vqvae.cli.edit import main as edit_main
from causal_vqvae.nn.retrieval import RetrievalOutput
from causal_vqvae.cli.retrieve import main as retrieve_main
import tiny

NAMES = ("scale-", "scale+", "shape-", "shape+")
TINY = dict(in_channels=3, dataset="shapes3d", num_actions=4, action_names=NAMES, **tiny.TINY)
REPO = Path(__file__).resolve().parents[2]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny model trained a few Adam steps on random data (weights not pristine), saved to disk."""
    model = CausalVQVAE(ModelConfig(**TINY)).train()
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(0)
    config = model.config
    for _ in range(3):
        x = torch.rand(4, 3, 64, 64, generator=gen)
        codes = torch.randint(0, config.codes_per_node, (4, config.num_nodes), generator=gen)
        targets = torch.randint(0, config.codes_per_node, (4, config.num_nodes), generator=gen)
        actions = torch.randint(0, config.num_actions, (4,), generator=gen)
        transition = model.transition_loss(codes, actions, targets, generator=gen)
        loss = model.autoencoder_loss(x).loss + transition.loss + model.retrieval_loss(codes, targets, actions).loss
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        model.update_multipliers(transition)
    directory = tmp_path_factory.mktemp("models") / "tiny"
    model.save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def model(model_dir: Path) -> CausalVQVAE:
    return load(model_dir, device="cpu")


def rgb(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def chained(model: CausalVQVAE, x: torch.Tensor, ids: list[int]) -> torch.Tensor:
    """The reference: encode once, apply each action to the codes in turn, decode once."""
    codes = model.encode_codes(x)
    for action in ids:
        codes = model.edit_codes(codes, action)
    return model.decode_codes(codes)


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(1, C, H, W) float -> (H, W, C) uint8, rounded as the API rounds."""
    return (images[0] * 255).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()


def conversion_warnings(caught: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in caught if issubclass(w.category, ImageConversionWarning)]


# ------------------------------------------------------------------------------------- load
def test_load_returns_the_saved_model_in_eval_mode_on_the_requested_device(model_dir, model):
    assert not model.training
    assert {p.device.type for p in model.parameters()} == {"cpu"}
    reference = CausalVQVAE.from_pretrained(model_dir)
    for name, tensor in reference.state_dict().items():
        assert torch.equal(model.state_dict()[name], tensor), name
    assert not load(model_dir / "config.json", device="cpu").training  # a file inside the directory works too


def test_load_of_a_missing_path_names_it_and_what_a_model_directory_holds(tmp_path):
    with pytest.raises(FileNotFoundError) as error:
        load(tmp_path / "nowhere")
    assert str(tmp_path / "nowhere") in str(error.value)
    assert "config.json" in str(error.value) and "model.safetensors" in str(error.value)
    with pytest.raises(FileNotFoundError, match="config.json and model.safetensors missing"):
        load(tmp_path)


def test_load_refuses_a_model_for_another_dataset(model_dir):
    with pytest.raises(ValueError, match="dsprites"):
        load(model_dir, device="cpu", expect_dataset="dsprites")
    assert load(model_dir, device="cpu", expect_dataset="shapes3d").config.dataset == "shapes3d"


# ------------------------------------------------------------------------------------- input kinds
def _png(tmp_path: Path, width: int, height: int) -> str:
    path = tmp_path / "input.png"
    Image.fromarray(rgb(height, width, seed=3)).save(path)
    return str(path)


INPUT_KINDS = {
    # name: (make input, expected output type, shape or PIL size, dtype or PIL mode, conversion warnings)
    "pil_rgb_64": (lambda tmp: Image.fromarray(rgb(64, 64)), Image.Image, (64, 64), "RGB", 0),
    "pil_gray_100x80": (lambda tmp: Image.fromarray(rgb(80, 100)[..., 0]), Image.Image, (100, 80), "L", 1),
    "numpy_uint8_hwc": (lambda tmp: rgb(64, 64), np.ndarray, (64, 64, 3), np.uint8, 0),
    "numpy_float_batch": (
        lambda tmp: np.random.default_rng(1).random((2, 64, 64, 3), dtype=np.float32), np.ndarray,
        (2, 64, 64, 3), np.float32, 0,
    ),
    "numpy_float64_gray_hw": (
        lambda tmp: np.random.default_rng(2).random((64, 64)), np.ndarray, (64, 64), np.float64, 1,
    ),
    "tensor_chw": (lambda tmp: torch.rand(3, 64, 64), torch.Tensor, (3, 64, 64), torch.float32, 0),
    "tensor_bchw": (lambda tmp: torch.rand(2, 3, 64, 64), torch.Tensor, (2, 3, 64, 64), torch.float32, 0),
    "tensor_uint8_chw": (
        lambda tmp: torch.randint(0, 256, (3, 64, 64), dtype=torch.uint8), torch.Tensor, (3, 64, 64), torch.uint8, 0,
    ),
    "path_50x40": (lambda tmp: _png(tmp, 50, 40), Image.Image, (50, 40), "RGB", 1),
}


@pytest.mark.parametrize("kind", list(INPUT_KINDS))
def test_edit_returns_the_same_kind_size_and_dtype_as_its_input(kind, model, tmp_path):
    make, expected_type, shape, dtype, expected_warnings = INPUT_KINDS[kind]
    image = make(tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = edit(image, "scale+", model)
    assert isinstance(out, expected_type)
    if isinstance(out, Image.Image):
        assert (out.size, out.mode) == (shape, dtype)
    else:
        assert (tuple(out.shape), out.dtype) == (shape, dtype)
    assert len(conversion_warnings(caught)) == expected_warnings


def test_edit_equals_the_model_in_code_space_for_tensors_arrays_and_pil(model):
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    expected = chained(model, x, [1])
    assert torch.allclose(edit(x, "scale+", model), expected, atol=1e-6)
    assert torch.allclose(edit(x[0], "scale+", model), expected[0], atol=1e-6)
    pixels = rgb(64, 64, seed=5)
    reference = to_uint8(chained(model, torch.from_numpy(pixels).permute(2, 0, 1)[None] / 255.0, [1]))
    assert np.array_equal(edit(pixels, "scale+", model), reference)
    assert np.array_equal(np.asarray(edit(Image.fromarray(pixels), "scale+", model)), reference)


def test_a_sequence_of_actions_is_applied_in_order_in_code_space(model):
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(edit(x, ["scale+", "shape-"], model), chained(model, x, [1, 2]), atol=1e-6)
    assert torch.allclose(edit(x, ["scale+", "scale-"], model), chained(model, x, [1, 0]), atol=1e-6)


def test_an_action_as_id_name_or_factor_direction_gives_the_same_edit(model):
    x = torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(2))
    by_id = edit(x, 3, model)
    for same in ("shape+", " shape+ ", ("shape", +1), ("shape", "+"), [3], [("shape", 1)]):
        assert torch.equal(edit(x, same, model), by_id), same


@pytest.mark.parametrize(
    ("action", "ids"),
    [
        (1, [1]),
        (np.int64(2), [2]),
        (torch.tensor(0), [0]),
        ("3", [3]),
        (("scale", -1), [0]),
        (["shape", "+"], [3]),
        (("scale+", "shape-"), [1, 2]),  # two names: a sequence
        (("scale+", 1), [1, 1]),  # a name then an id: a sequence, not (factor, direction)
        ([("scale", 1), "shape-", 3], [1, 2, 3]),
    ],
)
def test_parse_actions_reads_ids_names_pairs_and_sequences(model, action, ids):
    assert parse_actions(model, action) == ids


def test_an_unknown_action_name_lists_every_valid_name(model):
    with pytest.raises(ValueError, match="unknown action 'rotate\\+'") as error:
        edit(torch.rand(3, 64, 64), "rotate+", model)
    assert all(name in str(error.value) for name in NAMES)


@pytest.mark.parametrize(
    ("action", "error", "message"),
    [
        (4, ValueError, "out of range"),
        (-1, ValueError, "out of range"),
        ("scale", ValueError, "add a direction"),
        (("colour", 1), ValueError, "unknown factor 'colour'"),
        ([], ValueError, "empty action sequence"),
        (True, TypeError, "not an action"),
        (1.5, TypeError, "cannot read 1.5"),
        (None, TypeError, "cannot read None"),
    ],
)
def test_invalid_actions_are_refused_with_the_valid_actions(model, action, error, message):
    with pytest.raises(error, match=message) as caught:
        parse_actions(model, action)
    assert all(name in str(caught.value) for name in NAMES)


# ------------------------------------------------------------------------------------- bad images
@pytest.mark.parametrize(
    ("image", "message"),
    [
        (np.zeros((64, 64, 5), np.float32), r"\(64, 64, 5\)"),
        (np.zeros((64, 64, 3), np.int64), "int64"),
        (np.full((64, 64, 3), np.nan, np.float32), "NaN"),
        (np.zeros((0, 0, 3), np.uint8), r"empty array of shape \(0, 0, 3\)"),
        (np.full((64, 64, 3), 255.0, np.float32), r"must be in \[0, 1\] \(divide by 255\?\)"),
        (np.zeros((1, 1, 64, 64, 3), np.uint8), r"\(1, 1, 64, 64, 3\)"),
        (torch.zeros(64, 64, 3), r"\(64, 64, 3\).*t.movedim"),
        (torch.zeros(3, 64, 64, dtype=torch.int64), "torch.int64"),
    ],
)
def test_bad_arrays_are_refused_naming_their_shape_or_dtype(model, image, message):
    with pytest.raises(ValueError, match=message):
        edit(image, "scale+", model)


def test_a_file_that_is_not_an_image_is_refused_clearly(model, tmp_path):
    notes = tmp_path / "notes.png"
    notes.write_text("not pixels")
    with pytest.raises(ValueError, match="not an image file") as error:
        edit(str(notes), "scale+", model)
    assert str(notes) in str(error.value)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        edit(tmp_path / "missing.png", "scale+", model)
    with pytest.raises(TypeError, match="cannot read a dict as an image"):
        edit({}, "scale+", model)


# ------------------------------------------------------------------------------------- conversions
def test_rgb_for_a_one_channel_model_is_converted_by_luminance_with_one_warning():
    gray_model = CausalVQVAE(ModelConfig(**{**TINY, "in_channels": 1, "dataset": "dsprites"})).eval()
    image = Image.fromarray(rgb(218, 178))  # PIL size (178, 218), like a CelebA image
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = edit(image, "scale+", gray_model)
    [note] = conversion_warnings(caught)
    assert note.startswith("image 178x218 RGB resized to 64x64")
    assert "converted to 1 channel (luminance) for a dsprites model" in note
    assert (out.size, out.mode) == ((178, 218), "RGB")

    square = Image.fromarray(rgb(64, 64))
    with pytest.warns(ImageConversionWarning, match="converted to 1 channel"):
        x, _ = to_batch(square, gray_model)
    luminance = np.asarray(square.convert("L")) / 255.0  # PIL's own conversion, rounded to uint8
    assert x.shape == (1, 1, 64, 64)
    assert np.abs(x[0, 0].numpy() - luminance).max() <= 0.5 / 255 + 1e-6


def test_restore_is_exact_for_inputs_that_already_fit(model):
    pixels = rgb(64, 64, seed=7)
    for image in (pixels, Image.fromarray(pixels), torch.from_numpy(pixels).permute(2, 0, 1).contiguous()):
        x, restore = to_batch(image, model)
        back = restore(x)
        assert np.array_equal(np.asarray(back).reshape(-1), np.asarray(image).reshape(-1))
        assert not restore.batched


def test_alpha_is_set_aside_and_put_back_unchanged(model):
    pixels = np.random.default_rng(4).integers(0, 256, (64, 64, 4), dtype=np.uint8)
    with pytest.warns(ImageConversionWarning, match="alpha set aside"):
        out = edit(pixels, "shape-", model)
    assert out.shape == (64, 64, 4)
    assert np.array_equal(out[..., 3], pixels[..., 3])
    with pytest.warns(ImageConversionWarning, match="64x64 RGBA"):
        rgba = edit(Image.fromarray(pixels), "shape-", model)
    assert rgba.mode == "RGBA" and np.array_equal(np.asarray(rgba)[..., 3], pixels[..., 3])


# ------------------------------------------------------------------------------------- retrieval
@pytest.mark.parametrize("method", ["transition", "head"])
def test_retrieve_action_ranks_every_action_with_probabilities_summing_to_one(model, method):
    a = torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(5))
    ranked = retrieve_action(a, edit(a, "shape+", model), model, method=method)
    names, probs = zip(*ranked)
    assert sorted(names) == sorted(NAMES)
    assert list(probs) == sorted(probs, reverse=True)
    assert sum(probs) == pytest.approx(1.0, abs=1e-5)
    assert retrieve_action(a, edit(a, "shape+", model), model, method=method, top_k=2) == ranked[:2]


def test_retrieve_action_on_batches_gives_one_ranking_per_pair(model):
    a = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(6))
    ranked = retrieve_action(a, edit(a, "scale-", model), model)
    assert len(ranked) == 2 and all(len(r) == 4 for r in ranked)
    with pytest.raises(ValueError, match="top_k"):
        retrieve_action(a, a, model, top_k=5)
    with pytest.raises(ValueError, match="unknown retrieval method"):
        retrieve_action(a, a, model, method="oracle")


def test_retrieve_action_sorts_the_model_probabilities_ties_by_id(model, monkeypatch):
    probs = torch.tensor([[0.1, 0.6, 0.1, 0.2]])
    methods = []

    def fixed(x, x_prime, method, temperature=None):
        methods.append(method)
        return RetrievalOutput(logits=probs.log(), probs=probs, action=probs.argmax(-1), scores=None)

    monkeypatch.setattr(model, "retrieve", fixed)
    ranked = retrieve_action(torch.rand(3, 64, 64), torch.rand(3, 64, 64), model)
    assert methods == ["head"]  # the default: the more accurate method on the released models
    assert [name for name, _ in ranked] == ["scale+", "shape+", "scale-", "shape-"]
    assert [p for _, p in ranked] == pytest.approx([0.6, 0.2, 0.1, 0.1])


@pytest.fixture
def oracle(monkeypatch) -> CausalVQVAE:
    """A model with a known answer: action k intervenes exactly on the nodes n with n % 4 == k, its
    structural equations are sharp (near one-hot), and re-encoding a decoded image gives back the
    codes it was decoded from. Then only action k explains the change made by action k."""
    model = CausalVQVAE(ModelConfig(**TINY)).eval()
    config = model.config
    nodes = torch.arange(config.num_nodes)
    with torch.no_grad():
        owner = torch.arange(config.num_actions)[:, None] == nodes[None] % config.num_actions
        model.graph.target_logits.copy_(torch.where(owner, 20.0, -20.0))
        model.transition_net.head_weight.mul_(50.0)
    seen: dict[bytes, torch.Tensor] = {}
    encode, decode = model.encode_codes, model.decode_codes

    def decode_and_remember(codes):
        images = decode(codes)
        for image, image_codes in zip(images, codes):
            seen[image.numpy().tobytes()] = image_codes.clone()
        return images

    def encode_remembered(x):
        fresh = encode(x)
        return torch.stack([seen.get(image.numpy().tobytes(), new) for image, new in zip(x, fresh)])

    monkeypatch.setattr(model, "decode_codes", decode_and_remember)
    monkeypatch.setattr(model, "encode_codes", encode_remembered)
    return model


def test_retrieval_and_analogy_find_the_action_that_made_the_edit(oracle):
    gen = torch.Generator().manual_seed(8)
    x, y = torch.rand(3, 64, 64, generator=gen), torch.rand(3, 64, 64, generator=gen)
    codes = oracle.encode_codes(x[None])
    for action, name in enumerate(NAMES):
        changed = oracle.edit_codes(codes, action) != codes
        assert changed.any(), f"precondition: {name} must change some code of x"
        edited = edit(x, name, oracle)
        ranked = retrieve_action(x, edited, oracle, method="transition")
        assert ranked[0][0] == name
        assert all(ranked[0][1] > p for _, p in ranked[1:])
        result, found = analogy(x, edited, y, oracle, method="transition")
        assert found == name
        assert torch.equal(result, edit(y, name, oracle))


def test_analogy_returns_the_kind_of_image_c_and_one_name_per_image(model):
    a, b = torch.rand(3, 64, 64), torch.rand(3, 64, 64)
    c = rgb(40, 50)
    with pytest.warns(ImageConversionWarning, match="50x40"):
        out, name = analogy(a, b, c, model)
    assert isinstance(out, np.ndarray) and out.shape == c.shape and out.dtype == np.uint8
    assert name == retrieve_action(a, b, model)[0][0]
    outs, names = analogy(a, b, torch.rand(2, 3, 64, 64), model)
    assert outs.shape == (2, 3, 64, 64) and names == [name, name]


# ------------------------------------------------------------------------------------- package
def test_causal_vqvae_edit_stays_callable_after_the_command_line_module_is_imported(model):
    import causal_vqvae.cli.edit  # noqa: F401 - the import is the point: it must not rebind the package's edit

    x = torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(9))
    assert torch.equal(causal_vqvae.edit(x, "shape-", model), api.edit(x, "shape-", model))
    assert {"load", "edit", "retrieve_action", "analogy"} <= set(causal_vqvae.__all__)


# ------------------------------------------------------------------------------------- command lines
def test_edit_cli_writes_the_edit_at_the_input_size(model_dir, model, tmp_path, capsys):
    image, out = _png(tmp_path, 50, 40), tmp_path / "out.png"
    assert edit_main(["--model", str(model_dir), "--image", image, "--action", "scale+", "--action", "shape-",
                      "--out", str(out), "--device", "cpu"]) == 0
    captured = capsys.readouterr()
    assert "applied scale+, shape-" in captured.out
    assert "note: image 50x40 RGB resized to 64x64" in captured.err
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ImageConversionWarning)
        expected = edit(image, ["scale+", "shape-"], model)
    written = Image.open(out)
    assert written.size == (50, 40)
    assert np.array_equal(np.asarray(written), np.asarray(expected))
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_edit_cli_traverse_writes_a_grid_of_factor_rows_and_every_action(model_dir, model, tmp_path, capsys):
    image, out, steps = _png(tmp_path, 64, 64), tmp_path / "grid.png", 2
    assert edit_main(["--model", str(model_dir), "--image", image, "--traverse", "--steps", str(steps),
                      "--out", str(out), "--device", "cpu", "--plain"]) == 0
    rows, columns = 2 + 1, max(2 * steps + 1, len(NAMES))  # scale, shape, every action
    grid = np.asarray(Image.open(out))
    assert grid.shape == (rows * 64 + (rows + 1) * GRID_PAD, columns * 64 + (columns + 1) * GRID_PAD, 3)
    assert f"{rows} rows x {columns} columns" in capsys.readouterr().out

    def cell(row: int, column: int) -> np.ndarray:
        top, left = GRID_PAD + row * (64 + GRID_PAD), GRID_PAD + column * (64 + GRID_PAD)
        return grid[top:top + 64, left:left + 64]

    def same(cell_pixels: np.ndarray, edited) -> bool:
        # The grid decodes every cell in one batch, the API one image: the decoder's float sums may
        # differ in the last bit (2e-7 seen), which can move a pixel by one level after rounding.
        return np.abs(cell_pixels.astype(int) - np.asarray(edited).astype(int)).max() <= 1

    assert same(cell(0, steps + 1), edit(image, "scale+", model))

    # Without --plain: the same grid, cells twice as large, beside a title, headers and row names.
    labelled = tmp_path / "labelled.png"
    assert edit_main(["--model", str(model_dir), "--image", image, "--traverse", "--steps", str(steps),
                      "--out", str(labelled), "--device", "cpu"]) == 0
    picture = np.asarray(Image.open(labelled).convert("RGB")).astype(int)
    top = 2 * traversal.LABEL_LINE + 4
    inner = picture[top:top + grid.shape[0] * traversal.LABEL_SCALE, traversal.LABEL_LEFT:traversal.LABEL_LEFT + grid.shape[1] * 2]
    frame = (inner[::2, ::2] == (0, 90, 200)).all(-1)  # the reconstructions' frames, in the padding
    assert frame.any() and not frame[GRID_PAD:-GRID_PAD, GRID_PAD:GRID_PAD + 64].any()
    assert np.abs(inner[::2, ::2] - grid.astype(int))[~frame].max() <= 1  # the plain grid, scaled by nearest neighbour
    title_band, names_band = picture[:top], picture[top:, :traversal.LABEL_LEFT]
    assert (title_band < 128).any() and (names_band < 128).any()  # black text: the title and row names
    assert picture.shape == (top + grid.shape[0] * 2 + traversal.LABEL_LINE + 4, traversal.LABEL_LEFT + grid.shape[1] * 2, 3)
    assert same(cell(1, steps - 2), edit(image, ["shape-", "shape-"], model))
    assert same(cell(2, 3), edit(image, "shape+", model))


def test_traverse_marks_the_steps_past_a_factors_range_and_the_steps_that_change_no_code(model, tmp_path):
    import copy

    from causal_vqvae.api import NO_CHANGE, OUT_OF_RANGE, FactorState

    still = copy.deepcopy(model)
    with torch.no_grad():  # shape+ intervenes on no node: every step of it changes no code
        still.graph.target_logits[NAMES.index("shape+")] = -50.0
    x, _ = to_batch(rgb(64, 64, 1), still)
    steps = 3
    state = {"scale": FactorState(0, 3), "shape": FactorState(1, 2, cyclic=True)}
    marked = api.traverse(still, x, steps, state)
    plain = api.traverse(still, x, steps)
    assert torch.equal(marked.frames, plain.frames) and marked.labels == plain.labels  # marks change no pixel
    scale_row, shape_row, once = marked.marks
    # scale is at its first class of 3: every "-" step and the third "+" step go past its range
    assert scale_row[:steps] == (OUT_OF_RANGE,) * steps and scale_row[steps] == ""
    assert scale_row[steps + 3] == OUT_OF_RANGE and OUT_OF_RANGE not in scale_row[steps + 1:steps + 3]
    assert OUT_OF_RANGE not in shape_row  # cyclic: never past its range
    assert shape_row[steps + 1:steps + 4] == (NO_CHANGE,) * 3
    assert once[NAMES.index("scale-")] == OUT_OF_RANGE and once[NAMES.index("shape+")] == NO_CHANGE
    # a cell is marked "no change" exactly when its step left every code as it was
    codes = still.encode_codes(x)
    for row, name in ((0, "scale"), (1, "shape")):
        for sign in (-1, 1):
            previous = codes
            for step in range(1, steps + 1):
                current = still.edit_codes(previous, parse_actions(still, f"{name}{'+' if sign > 0 else '-'}")[0])
                mark = marked.marks[row][steps + sign * step]
                if mark != OUT_OF_RANGE:
                    assert (mark == NO_CHANGE) == torch.equal(current, previous), (name, sign, step)
                previous = current
    assert plain.marks[0][:steps] != (OUT_OF_RANGE,) * steps  # without a state: no range is known

    picture = np.asarray(api.labelled_grid_image(marked, "marked")).astype(int)
    unmarked = np.asarray(api.labelled_grid_image(
        api.Traversal(marked.frames, marked.labels, marked.rows), "marked")).astype(int)
    side, pad, top = 64 * traversal.LABEL_SCALE, GRID_PAD * traversal.LABEL_SCALE, 2 * traversal.LABEL_LINE + 4
    assert picture.shape[0] == unmarked.shape[0] + 2 * traversal.LABEL_LINE  # one legend line per kind of mark

    def cell(image: np.ndarray, row: int, column: int) -> np.ndarray:
        y, x0 = top + pad + row * (side + pad), traversal.LABEL_LEFT + pad + column * (side + pad)
        return image[y:y + side, x0:x0 + side]

    crossed, greyed = cell(picture, 0, 0), cell(picture, 1, steps + 1)
    red = (crossed[..., 0] > 120) & (crossed[..., 1] < 40) & (crossed[..., 2] < 40)
    assert red.sum() > side  # the cross's two diagonals
    expected = np.round(0.4 * cell(unmarked, 1, steps + 1) + 0.6 * 200)
    assert np.abs(greyed - expected).max() <= 1  # greyed toward (200, 200, 200)
    assert np.array_equal(cell(picture, 0, steps + 1), cell(unmarked, 0, steps + 1))  # unmarked cells as drawn


def test_a_twin_sample_records_its_factors_and_edit_traverse_reads_them(model_dir, tmp_path, capsys):
    from datamodules.preview import main as preview_main

    from causal_vqvae.traversal import FACTOR_STATE_KEY, read_factor_state

    sample = tmp_path / "sample.png"
    preview_main(["--data", "shapes3d", "--out", str(tmp_path / "p.png"), "--steps", "2", "--sample", str(sample),
                  "--seed", "2"])
    from datamodules import build_datamodule

    dm = build_datamodule("shapes3d", batch_size=8, num_workers=0)
    dm.setup()
    classes = dm.sample_batch("test", size=3)["factors"][2].tolist()
    state = read_factor_state(sample, "shapes3d")
    assert [(name, s.value, s.size, s.cyclic) for name, s in state.items()] == [
        (f.name, c, f.size, f.cyclic) for f, c in zip(dm.space.factors, classes)]
    assert read_factor_state(sample, "dsprites") == {}  # a sample of another dataset
    assert read_factor_state(sample) == state
    plain = tmp_path / "plain.png"
    Image.open(sample).save(plain)  # the pixels without the text chunk
    assert read_factor_state(plain) == {} and read_factor_state(tmp_path / "absent.png") == {}
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text(FACTOR_STATE_KEY, "{not json")
    Image.open(sample).save(tmp_path / "damaged.png", pnginfo=info)
    assert read_factor_state(tmp_path / "damaged.png") == {}

    # The tiny model's factors are scale (8 classes) and shape (4): a state at scale's last class
    # puts every "+" step out of range, and `edit --traverse --json` lists the marks.
    info = PngInfo()
    info.add_text(FACTOR_STATE_KEY, '{"dataset": "shapes3d", "factors": [{"name": "scale", "value": 7, "size": 8}]}')
    Image.open(sample).save(tmp_path / "top.png", pnginfo=info)
    capsys.readouterr()
    assert edit_main(["--model", str(model_dir), "--image", str(tmp_path / "top.png"), "--traverse", "--steps", "2",
                      "--out", str(tmp_path / "grid.png"), "--device", "cpu", "--json"]) == 0
    import json

    marks = json.loads(capsys.readouterr().out)["marks"]
    assert marks[0][3:] == ["out of range", "out of range"] and "out of range" not in marks[0][:3]
    assert "out of range" not in marks[1]


def test_edit_cli_analogy_applies_the_retrieved_action(model_dir, model, tmp_path, capsys):
    paths = []
    for seed in range(3):
        paths.append(tmp_path / f"{seed}.png")
        Image.fromarray(rgb(64, 64, seed)).save(paths[-1])
    out = tmp_path / "analogy.png"
    assert edit_main(["--model", str(model_dir), "--image", str(paths[2]), "--analogy", str(paths[0]),
                      str(paths[1]), "--out", str(out), "--device", "cpu"]) == 0
    expected, name = analogy(str(paths[0]), str(paths[1]), str(paths[2]), model)
    assert f"applied {name}" in capsys.readouterr().out
    assert np.array_equal(np.asarray(Image.open(out)), np.asarray(expected))


def test_edit_cli_exits_2_with_a_message_when_the_output_cannot_be_written(model_dir, tmp_path, capsys, monkeypatch):
    image = _png(tmp_path, 64, 64)
    args = ["--model", str(model_dir), "--image", image, "--action", "scale+", "--device", "cpu"]
    assert edit_main([*args, "--out", str(tmp_path / "new_dir" / "out.png")]) == 0  # a missing folder is made
    assert (tmp_path / "new_dir" / "out.png").is_file()
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(SystemExit) as exit_info:
        edit_main([*args, "--out", str(tmp_path / "a_file" / "out.png")])
    assert exit_info.value.code == 2
    assert "is a file, not a directory" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:  # a format no image writer has: refused before any work
        edit_main([*args, "--out", str(tmp_path / "new_dir2" / "out.txt")])
    assert exit_info.value.code == 2 and not (tmp_path / "new_dir2").exists()
    capsys.readouterr()

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("causal_vqvae.files.tempfile.mkstemp", refuse)
    with pytest.raises(SystemExit) as exit_info:
        edit_main([*args, "--out", str(tmp_path / "out.png")])
    assert exit_info.value.code == 2
    assert "cannot write" in capsys.readouterr().err and not (tmp_path / "out.png").exists()

    monkeypatch.setattr("causal_vqvae.images.os.access", lambda path, mode: False)  # a read-only directory
    with pytest.raises(SystemExit) as exit_info:
        edit_main([*args, "--out", str(tmp_path / "out.png")])
    assert exit_info.value.code == 2
    assert f"cannot write to the output directory {tmp_path}: permission denied" in capsys.readouterr().err


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root can write to a read-only directory")
def test_edit_cli_exits_2_for_a_read_only_output_directory(model_dir, tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(SystemExit) as exit_info:
            edit_main(["--model", str(model_dir), "--image", _png(tmp_path, 64, 64), "--action", "scale+",
                       "--out", str(locked / "out.png")])
    finally:
        locked.chmod(0o700)
    assert exit_info.value.code == 2 and "permission denied" in capsys.readouterr().err


def test_edit_cli_exits_2_listing_the_actions_for_an_unknown_action(model_dir, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        edit_main(["--model", str(model_dir), "--image", _png(tmp_path, 64, 64), "--action", "grow+",
                   "--out", str(tmp_path / "out.png"), "--device", "cpu"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "unknown action 'grow+'" in err and all(name in err for name in NAMES)


def test_retrieve_cli_prints_every_action_when_top_is_the_number_of_actions(model_dir, model, tmp_path, capsys):
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    Image.fromarray(rgb(64, 64, 0)).save(a)
    Image.fromarray(rgb(64, 64, 1)).save(b)
    assert retrieve_main(["--model", str(model_dir), str(a), str(b), "--top", "4", "--device", "cpu"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[1].split() == ["rank", "action", "probability"]
    table = [line.split() for line in lines[2:]]
    assert [row[0] for row in table] == ["1", "2", "3", "4"]
    assert sorted(row[1] for row in table) == sorted(NAMES)
    expected = retrieve_action(str(a), str(b), model)
    assert [row[1] for row in table] == [name for name, _ in expected]
    assert [float(row[2]) for row in table] == pytest.approx([p for _, p in expected], abs=1e-4)


def test_retrieve_cli_exits_2_for_a_missing_model(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        retrieve_main(["--model", str(tmp_path / "none"), "a.png", "b.png"])
    assert exit_info.value.code == 2 and "no model at" in capsys.readouterr().err


def test_python_dash_m_edit_runs_end_to_end(model_dir, tmp_path):
    image, out = _png(tmp_path, 64, 64), tmp_path / "out.png"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "error::RuntimeWarning"}
    result = subprocess.run(
        [sys.executable, "-m", "causal_vqvae.cli.edit", "--model", str(model_dir), "--image", image,
         "--action", "shape+", "--out", str(out), "--device", "cpu"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert Image.open(out).size == (64, 64)
