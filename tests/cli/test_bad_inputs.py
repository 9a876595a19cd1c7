"""Bad inputs and the clear error each one gets: one table, one test per row.

Every row names a bad input given to the CLI, ``edit``, a model loader, a dataset reader or training,
the exception it must raise, and two regular expressions its message must match:

- ``wrong``: what was wrong (the offending value, path, shape or dtype);
- ``todo``: what to do about it (the valid values, the expected form, the flag to use).

``{tmp}`` in a pattern stands for the row's ``tmp_path`` and ``{model_dir}`` for the saved model. A
command line that exits with status 2 (argparse style) is read from its stderr, which must hold no
traceback. ``untouched`` checks that nothing was written or half-written (an output path stays absent
or keeps its old bytes, no cache entry is left behind).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from tiny import TINY, TINY_JSON

import causal_vqvae
from causal_vqvae import CausalVQVAE, ModelConfig, load
from causal_vqvae.cli.edit import main as edit_main
from causal_vqvae.cli.retrieve import main as retrieve_main
from datamodules.celeba import CELEBA_ATTRIBUTES
from datamodules.datamodule import DATA_ROOT_ENV, build_datamodule
from datamodules.dsprites import DSPRITES
from datamodules.factors import ActionSpace

DSPRITES_FILE = "dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz"
DSPRITES_ACTIONS = ActionSpace(DSPRITES).names  # shape-, shape+, scale-, ..., posY+ (10)
VALID_ACTIONS = r"valid actions: shape- \(0\), shape\+ \(1\), scale- \(2\), scale\+ \(3\), .*posY\+ \(9\)"
OLD_BYTES = b"an earlier result"


# ------------------------------------------------------------------------------------- fixtures
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny untrained dSprites model (1 channel, the 10 dSprites actions), saved to disk."""
    config = ModelConfig(in_channels=1, dataset="dsprites", num_actions=len(DSPRITES_ACTIONS),
                         action_names=DSPRITES_ACTIONS, **TINY)
    directory = tmp_path_factory.mktemp("models") / "dsprites"
    CausalVQVAE(config).save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def model(model_dir: Path) -> CausalVQVAE:
    return load(model_dir, device="cpu")


@dataclass
class Ctx:
    """What a row's ``arrange`` gets: a fresh folder, the model and a valid image."""

    tmp: Path
    model: CausalVQVAE
    model_dir: Path
    image: Path  # a valid 64x64 gray PNG
    monkeypatch: pytest.MonkeyPatch

    @property
    def cache(self) -> Path:
        return self.tmp / "cache"  # $CAUSAL_VQVAE_CACHE


@pytest.fixture
def ctx(tmp_path: Path, model: CausalVQVAE, model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Ctx:
    monkeypatch.setenv("CAUSAL_VQVAE_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv(DATA_ROOT_ENV, raising=False)
    image = tmp_path / "in.png"
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(image)
    return Ctx(tmp_path, model, model_dir, image, monkeypatch)


# ------------------------------------------------------------------------------------- arrange helpers
def empty_dir(c: Ctx, name: str) -> Path:
    (c.tmp / name).mkdir()
    return c.tmp / name


def text_file(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def truncate(path: Path) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def edit_call(c: Ctx, image: Any, action: Any = "scale+") -> Callable[[], Any]:
    return lambda: causal_vqvae.edit(image, action, model=c.model)


def model_copy(c: Ctx, damage: Callable[[Path], Any]) -> Path:
    """A copy of the saved model with ``damage`` done to it."""
    directory = c.tmp / "damaged_model"
    shutil.copytree(c.model_dir, directory)
    damage(directory)
    return directory


def truncated_weights(c: Ctx) -> Path:
    return model_copy(c, lambda d: truncate(d / "model.safetensors"))


def bomb_png(c: Ctx) -> Path:
    path = c.tmp / "bomb.png"
    Image.new("1", (20000, 20000)).save(path)  # 1 bit per pixel: a small file, 400 M pixels
    return path


def nan_weights(c: Ctx) -> Path:
    def damage(directory: Path) -> None:
        from safetensors.torch import load_file, save_file

        state = load_file(str(directory / "model.safetensors"))
        state["decoder.out.weight" if "decoder.out.weight" in state else min(state)].fill_(float("nan"))
        save_file(state, str(directory / "model.safetensors"))

    return model_copy(c, damage)


def other_codebook_config(c: Ctx) -> Path:
    """The weights of the model beside a config.json of another codebook size."""
    def damage(directory: Path) -> None:
        config = json.loads((directory / "config.json").read_text())
        config["codebook_size"] = config["codebook_size"] * 2
        (directory / "config.json").write_text(json.dumps(config))

    return model_copy(c, damage)


def config_not_json(c: Ctx) -> Path:
    return model_copy(c, lambda d: (d / "config.json").write_text("{not json"))


def config_changed(c: Ctx, change: Callable[[dict], Any]) -> Path:
    """A copy of the saved model whose config.json went through ``change`` (a dict edited in place,
    or a function returning what to write instead)."""
    def damage(directory: Path) -> None:
        config = json.loads((directory / "config.json").read_text())
        replaced = change(config)
        (directory / "config.json").write_text(json.dumps(config if replaced is None else replaced))

    return model_copy(c, damage)


def renamed_key(config: dict, old: str, new: str) -> None:
    config[new] = config.pop(old)


def run_config(c: Ctx, text: str, name: str = "bad.json") -> Callable[[], int]:
    """train.py with a --config file holding ``text``."""
    import train

    path = text_file(c.tmp / name, text)
    return lambda: train.main(["--data", "dsprites", "--gpus", "0", "--no-progress", "--out", str(c.tmp / "run"),
                               "--max-steps", "1", "--config", str(path)])


def dsprites_npz(c: Ctx, **arrays: np.ndarray | None) -> Path:
    """``data/<dSprites file name>``: 8 blank images and valid classes; ``arrays`` replace (None: drop) keys."""
    path = c.tmp / "data" / DSPRITES_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    content = {"imgs": np.zeros((8, 64, 64), np.uint8), "latents_classes": DSPRITES.unravel(torch.arange(8)).numpy()}
    content.update(arrays)
    np.savez_compressed(path, **{k: v for k, v in content.items() if v is not None})
    return path


def shapes3d_h5(c: Ctx, **datasets: np.ndarray) -> Path:
    h5py = pytest.importorskip("h5py")
    path = c.tmp / "data" / "3dshapes.h5"
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        for key, value in datasets.items():
            f.create_dataset(key, data=value)
    return path


def attr_row(name: str, values: int) -> str:
    return " ".join([name, *(["1", "-1"] * 20)[:values]])


def celeba_folder(c: Ctx, values_per_row: tuple[int, int, int] = (40, 40, 40)) -> Path:
    """``data/celeba/`` in the torchvision layout: an attribute file whose rows 000001..000003.jpg hold
    ``values_per_row`` values, a partition putting them in train, valid and test, no image."""
    base = c.tmp / "data" / "celeba"
    (base / "img_align_celeba").mkdir(parents=True)
    rows = [attr_row(f"00000{i + 1}.jpg", n) for i, n in enumerate(values_per_row)]
    (base / "list_attr_celeba.txt").write_text("\n".join(["3", " ".join(CELEBA_ATTRIBUTES), *rows]) + "\n")
    (base / "list_eval_partition.txt").write_text("000001.jpg 0\n000002.jpg 1\n000003.jpg 2\n")
    return base.parent


def prepared(dataset: str, data_root: Path) -> Callable[[], None]:
    """What a training run does first: build the DataModule for ``data_root``, prepare and set it up."""
    def call() -> None:
        dm = build_datamodule(dataset, data_root=str(data_root), num_workers=0)
        dm.prepare_data()
        dm.setup()
    return call


def edit_cli(c: Ctx, out: Path, model: Path | None = None, action: str = "scale+") -> Callable[[], int]:
    argv = ["--model", str(model or c.model_dir), "--image", str(c.image), "--action", action,
            "--out", str(out), "--device", "cpu"]
    return lambda: edit_main(argv)


def old_output(c: Ctx) -> Path:
    """``out.png`` holding an earlier result, which a failed edit must keep."""
    path = c.tmp / "out.png"
    path.write_bytes(OLD_BYTES)
    return path


def read_only_dir(c: Ctx) -> Path:
    locked = empty_dir(c, "locked")
    locked.chmod(0o500)
    return locked


def os_access_says_no(c: Ctx) -> Path:
    c.monkeypatch.setattr("causal_vqvae.images.os.access", lambda path, mode: False)
    return c.tmp / "out.png"


def too_many_gpus() -> int:
    return max(3, torch.cuda.device_count() + 1)


def train_with_too_many_gpus(c: Ctx) -> Callable[[], int]:
    import train  # the entry at the repository's top, as tests/training/test_training.py imports it

    return lambda: train.main(["--data", "dsprites", "--gpus", str(too_many_gpus()), "--out", str(c.tmp / "run")])


TRAIN_CONFIG = {"model": TINY_JSON,
                "train": {"vqvae_steps": 4, "causal_steps": 2, "warmup_steps": 1, "val_every": 2},
                "data": {"batch_size": 4, "val_length": 8, "num_workers": 0}}


def train_call(c: Ctx, *flags: str, out: Path | None = None, data: str = "dsprites",
               config: bool = True) -> Callable[[], int]:
    """train.py on a twin with ``flags``, and with ``config`` a tiny model and schedule (TRAIN_CONFIG)."""
    import train

    argv = ["--data", data, "--gpus", "0", "--no-progress", "--out", str(out or c.tmp / "run"), *flags]
    if config:
        path = c.tmp / "tiny.json"
        path.write_text(json.dumps(TRAIN_CONFIG))
        argv += ["--config", str(path)]
    return lambda: train.main(argv)


def finished_vqvae_run(c: Ctx) -> Path:
    """A run directory whose vqvae stage ran 2 steps (a checkpoint at step 2)."""
    train_call(c, "--stage", "vqvae", "--max-steps", "2", out=c.tmp / "earlier")()
    return c.tmp / "earlier"


def loss_turns_nan_at_step(c: Ctx, step: int) -> None:
    """From optimiser step ``step`` (1-based) on, the training loss is NaN (as after a blow-up)."""
    from causal_vqvae.training.module import CausalVQVAEModule

    original = CausalVQVAEModule.training_step

    def poisoned(self, batch, batch_idx):
        loss = original(self, batch, batch_idx)
        return loss * float("nan") if self.global_step + 1 >= step else loss

    c.monkeypatch.setattr(CausalVQVAEModule, "training_step", poisoned)


def nan_at_step_3(c: Ctx) -> Callable[[], int]:
    loss_turns_nan_at_step(c, 3)
    return train_call(c, "--stage", "vqvae")


def good_checkpoint_kept(c: Ctx) -> None:
    stage = c.tmp / "run" / "vqvae"
    checkpoint = torch.load(stage / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert checkpoint["global_step"] == 2, "the checkpoint on disk is not the last good one (step 2)"
    assert all(torch.isfinite(v).all() for v in checkpoint["state_dict"].values() if v.is_floating_point())
    assert not (stage / "model.safetensors").exists(), "the damaged model was saved"


# ------------------------------------------------------------------------------------- untouched checks
def out_absent(c: Ctx) -> None:
    assert not (c.tmp / "out.png").exists(), "a failed edit wrote its output"
    assert not list(c.tmp.glob(".out.png.*")), "a failed edit left a temporary file"


def out_kept(c: Ctx) -> None:
    assert (c.tmp / "out.png").read_bytes() == OLD_BYTES, "a failed edit changed the existing output"
    assert not list(c.tmp.glob(".out.png.*")), "a failed edit left a temporary file"


def no_cache(c: Ctx) -> None:
    assert not c.cache.exists() or not any(c.cache.iterdir()), f"a failed read left {list(c.cache.iterdir())}"


def afile_kept(c: Ctx) -> None:
    assert (c.tmp / "afile").read_text() == "keep me"


def locked_untouched(c: Ctx) -> None:
    locked = c.tmp / "locked"
    locked.chmod(0o700)  # so that tmp_path can be removed
    assert not any(locked.iterdir()), "a failed edit wrote into the read-only directory"


def run_dir_absent(c: Ctx) -> None:
    assert not (c.tmp / "run").exists(), "a refused run created its --out directory"


# ------------------------------------------------------------------------------------- the table
@dataclass(frozen=True)
class Case:
    id: str
    bad_input: str  # one line: what is given
    arrange: Callable[[Ctx], Callable[[], Any]]  # sets the scene, returns the call that must fail
    raises: type[BaseException]
    wrong: str  # regex: the message names what was wrong
    todo: str  # regex: the message says what to do
    untouched: Callable[[Ctx], None] | None = None  # nothing written or half-written
    marks: tuple = ()


DSPRITES_PATH = r"{tmp}/data/" + re.escape(DSPRITES_FILE)
AS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
GPUS = torch.cuda.device_count()

CASES = [
    # --- edit(): images --------------------------------------------------------------------------
    Case("edit_array_shape_5", "a numpy array of shape (5,)",
         lambda c: edit_call(c, np.zeros(5, np.uint8)),
         ValueError, r"unsupported array of shape \(5,\) and dtype uint8",
         r"numpy images are \(H, W\), \(H, W, C\) or \(B, H, W, C\)"),
    Case("edit_array_dtype_complex", "a complex64 array of shape (64, 64)",
         lambda c: edit_call(c, np.zeros((64, 64), np.complex64)),
         ValueError, r"array of shape \(64, 64\) and dtype complex64", r"use uint8 in \[0, 255\] or float in \[0, 1\]"),
    Case("edit_array_of_strings", "a numpy array of strings",
         lambda c: edit_call(c, np.full((64, 64), "a")),
         ValueError, r"array of shape \(64, 64\) and dtype <U1", r"use uint8 in \[0, 255\] or float in \[0, 1\]"),
    Case("edit_tensor_dtype_int32", "an int32 torch tensor",
         lambda c: edit_call(c, torch.zeros(1, 64, 64, dtype=torch.int32)),
         ValueError, r"tensor of shape \(1, 64, 64\) and dtype torch\.int32",
         r"use uint8 in \[0, 255\] or float in \[0, 1\]"),
    Case("edit_path_not_an_image", "a text file named notes.png",
         lambda c: edit_call(c, str(text_file(c.tmp / "notes.png", "not pixels"))),
         ValueError, r"{tmp}/notes\.png is not an image file", r"give a PNG, JPEG, BMP, \.\.\. file"),
    Case("edit_decompression_bomb", "a 20000x20000 PNG (a decompression bomb)",
         lambda c: edit_call(c, str(bomb_png(c))),
         ValueError, r"{tmp}/bomb\.png is refused: Image size \(400000000 pixels\) exceeds limit",
         r"Give a smaller image"),
    Case("edit_path_empty_file", "a 0-byte file named empty.png",
         lambda c: edit_call(c, str(text_file(c.tmp / "empty.png", ""))),
         ValueError, r"{tmp}/empty\.png is an empty file \(0 bytes\)", r"give a PNG, JPEG, BMP, \.\.\. file"),
    Case("edit_empty_array", "a numpy array of shape (0, 0)",
         lambda c: edit_call(c, np.zeros((0, 0), np.uint8)),
         ValueError, r"empty array of shape \(0, 0\)", r"an image needs at least one pixel"),
    Case("edit_empty_pil_image", "a 0x0 PIL image",
         lambda c: edit_call(c, Image.new("L", (0, 0))),
         ValueError, r"empty image of size 0x0 \(mode L\)", r"an image needs at least one pixel"),
    # --- edit(): actions -------------------------------------------------------------------------
    Case("edit_unknown_action", "the action name 'bigger+'",
         lambda c: edit_call(c, np.zeros((64, 64), np.uint8), "bigger+"),
         ValueError, r"unknown action 'bigger\+'", VALID_ACTIONS),
    Case("edit_action_of_another_dataset", "'floor_hue+' (a 3D Shapes action) on a dSprites model",
         lambda c: edit_call(c, np.zeros((64, 64), np.uint8), "floor_hue+"),
         ValueError, r"unknown action 'floor_hue\+': this dsprites model has no factor 'floor_hue'", VALID_ACTIONS),
    Case("edit_action_id_out_of_range", "the action id 99 for a model with 10 actions",
         lambda c: edit_call(c, np.zeros((64, 64), np.uint8), 99),
         ValueError, r"action id 99 out of range \[0, 10\)", VALID_ACTIONS),
    # --- model directories ----------------------------------------------------------------------
    Case("from_pretrained_expect_other_dataset", "from_pretrained(dSprites model, expect={'dataset': 'shapes3d'})",
         lambda c: lambda: CausalVQVAE.from_pretrained(c.model_dir, expect={"dataset": "shapes3d"}),
         ValueError, r"{model_dir}/config\.json: the model was saved with dataset='dsprites', but "
         r"dataset='shapes3d' is needed here",
         r"train one with python train\.py --data shapes3d, or drop that expectation"),
    Case("load_expect_other_dataset", "load(dSprites model, expect_dataset='shapes3d')",
         lambda c: lambda: load(c.model_dir, device="cpu", expect_dataset="shapes3d"),
         ValueError, r"the model was saved with dataset='dsprites', but dataset='shapes3d' is needed here",
         r"train one with python train\.py --data shapes3d, or drop that expectation"),
    Case("load_truncated_weights", "load() of a model directory whose model.safetensors is cut in half",
         lambda c: partial(load, truncated_weights(c), device="cpu"),
         ValueError, r"cannot read {tmp}/damaged_model/model\.safetensors: it is truncated or corrupt",
         r"save the model again with save_pretrained, or copy the whole directory again"),
    Case("from_pretrained_truncated_weights", "from_pretrained() of a directory whose model.safetensors is cut",
         lambda c: partial(CausalVQVAE.from_pretrained, truncated_weights(c)),
         ValueError, r"cannot read {tmp}/damaged_model/model\.safetensors: it is truncated or corrupt",
         r"save the model again"),
    Case("load_nan_weights", "load() of a model whose weights hold NaN (all-NaN decoder weights)",
         lambda c: partial(load, nan_weights(c), device="cpu"),
         ValueError, r"model\.safetensors: tensor \S+ holds \d+ NaN or infinite value\(s\)",
         r"the weights are damaged .*save the model again"),
    Case("load_weights_of_another_config", "load() of weights beside a config.json of another codebook size",
         lambda c: partial(load, other_codebook_config(c), device="cpu"),
         ValueError, r"tensor quantizer\.\w+ has shape \([\d, ]+\), but its config\.json builds \([\d, ]+\)",
         r"the weights fit codebook_size=\d+.*save both with save_pretrained again"),
    Case("load_config_not_json", "load() of a model directory whose config.json is not JSON",
         lambda c: partial(load, config_not_json(c), device="cpu"),
         ValueError, r"cannot read {tmp}/damaged_model/config\.json: not valid JSON",
         r"save the model again with save_pretrained"),
    Case("load_config_number_as_string", "load() of a model whose config.json says \"codebook_size\": \"64\"",
         lambda c: partial(load, config_changed(c, lambda d: d.update(codebook_size=str(d["codebook_size"]))),
                           device="cpu"),
         ValueError, r"{tmp}/damaged_model/config\.json: key 'codebook_size': expected a whole number, "
         r"got '\d+' \(a string\)", r"write it without quotes"),
    Case("load_config_misspelt_key", "load() of a model whose config.json has 'codebok_size' for 'codebook_size'",
         lambda c: partial(load, config_changed(c, lambda d: renamed_key(d, "codebook_size", "codebok_size")),
                           device="cpu"),
         ValueError, r"config\.json: unknown key 'codebok_size'", r"did you mean 'codebook_size'"),
    Case("load_config_not_an_object", "load() of a model whose config.json is the list [1, 2]",
         lambda c: partial(load, config_changed(c, lambda d: [1, 2]), device="cpu"),
         ValueError, r"config\.json: expected a JSON object of settings, got list",
         r"save the model again with save_pretrained"),
    Case("load_config_list_is_a_number", "load() of a model whose config.json says \"hidden_dims\": 5",
         lambda c: partial(load, config_changed(c, lambda d: d.update(hidden_dims=5)), device="cpu"),
         ValueError, r"config\.json: key 'hidden_dims': .*got 5 \(an integer\)", r"expected a list"),
    Case("load_config_list_item_wrong", "load() of a model whose config.json says \"hidden_dims\": [8, \"x\"]",
         lambda c: partial(load, config_changed(c, lambda d: d.update(hidden_dims=[8, "x"])), device="cpu"),
         ValueError, r"config\.json: key 'hidden_dims\[1\]': .*got 'x' \(a string\)", r"expected a whole number"),
    Case("load_config_huge_codebook", "load() of a model whose config.json says codebook_size 2**31",
         lambda c: partial(load, config_changed(c, lambda d: d.update(codebook_size=2**31)), device="cpu"),
         ValueError, r"config\.json: codebook_size 2147483648 is above its limit 65536",
         r"would not fit in memory"),
    Case("load_config_negative_size", "load() of a model whose config.json says code_dim 0",
         lambda c: partial(load, config_changed(c, lambda d: d.update(code_dim=0)), device="cpu"),
         ValueError, r"config\.json: code_dim must be >= 1, got 0", r"must be >= 1"),
    Case("load_config_bool_as_string", "load() of a model whose config.json says local_encoder \"yes\"",
         lambda c: partial(load, config_changed(c, lambda d: d.update(local_encoder="yes")), device="cpu"),
         ValueError, r"config\.json: key 'local_encoder': expected true or false, got 'yes'", r"true or false"),
    # --- dataset files and folders (build_datamodule(...).prepare_data(), as training does) ------
    Case("dsprites_data_root_without_file", "dSprites with data_root=<an empty folder>",
         lambda c: prepared("dsprites", empty_dir(c, "empty")),
         FileNotFoundError, r"--data-root {tmp}/empty holds none of the dataset's files \(looked for "
         + re.escape(DSPRITES_FILE),
         r"Point --data-root at the file or its folder, or leave it out to use the dsprites procedural twin",
         untouched=no_cache),
    Case("dsprites_data_root_missing", "dSprites with data_root=<a path that does not exist>",
         lambda c: prepared("dsprites", c.tmp / "nowhere"),
         FileNotFoundError, r"--data-root {tmp}/nowhere does not exist \(looked for " + re.escape(DSPRITES_FILE),
         r"Point --data-root at the file or its folder", untouched=no_cache),
    Case("dsprites_truncated_npz", "a dSprites npz cut in half",
         lambda c: prepared("dsprites", truncate(dsprites_npz(c)).parent),
         ValueError, r"cannot read dSprites file " + DSPRITES_PATH + r": it looks truncated",
         r"Download .* again, or run without --data-root to use the procedural twin", untouched=no_cache),
    Case("dsprites_empty_file", "a 0-byte dSprites npz",
         lambda c: prepared("dsprites", text_file(c.tmp / "data" / DSPRITES_FILE, "").parent),
         ValueError, r"dSprites file " + DSPRITES_PATH + r" is empty \(0 bytes\)",
         r"download .* again, or run without --data-root to use the procedural twin", untouched=no_cache),
    Case("dsprites_wrong_keys", "a dSprites npz holding 'images' instead of 'imgs'",
         lambda c: prepared("dsprites", dsprites_npz(c, imgs=None, images=np.zeros((8, 64, 64), np.uint8)).parent),
         ValueError, DSPRITES_PATH + r" lacks the key\(s\) \['imgs'\]; keys found: \['images', 'latents_classes'\]",
         r"point --data-root at the original file, or leave it out", untouched=no_cache),
    Case("shapes3d_wrong_keys", "a 3dshapes.h5 holding 'imgs' instead of 'images'",
         lambda c: prepared("shapes3d", shapes3d_h5(c, imgs=np.zeros((4, 64, 64, 3), np.uint8),
                                                    labels=np.zeros((4, 6))).parent),
         ValueError, r"3D Shapes file {tmp}/data/3dshapes\.h5 lacks 'images' \(found keys \['imgs', 'labels'\]\)",
         r"point --data-root at the original file, or leave it out", untouched=no_cache),
    Case("shapes3d_wrong_image_shape", "a 3dshapes.h5 whose images are 32x32",
         lambda c: prepared("shapes3d", shapes3d_h5(c, images=np.zeros((4, 32, 32, 3), np.uint8),
                                                    labels=np.zeros((4, 6))).parent),
         ValueError, r"{tmp}/data/3dshapes\.h5: 'images' is \(4, 32, 32, 3\) uint8",
         r"expected 'images' \(N, 64, 64, 3\) uint8 .* point --data-root at the original file", untouched=no_cache),
    Case("celeba_attr_row_too_short", "list_attr_celeba.txt whose line 4 has 39 values for 40 attributes",
         lambda c: prepared("celeba", celeba_folder(c, values_per_row=(40, 39, 40))),
         ValueError, r"{tmp}/data/celeba/list_attr_celeba\.txt, line 4: .* got 39 value\(s\) after '000002\.jpg'",
         r"expected a filename and 40 values \(-1/1\).*; fix that line or download the attribute file again",
         untouched=no_cache),
    Case("celeba_empty_data_folder", "CelebA with data_root=<an empty folder>",
         lambda c: prepared("celeba", empty_dir(c, "empty")),
         FileNotFoundError, r"--data-root {tmp}/empty holds neither celeba/list_attr_celeba\.txt .* nor \.parquet",
         r"Point it at the folder that contains celeba/.*or leave it out to use the CelebA procedural twin",
         untouched=no_cache),
    Case("celeba_empty_image_folder", "a CelebA folder with both text files but no image",
         lambda c: prepared("celeba", celeba_folder(c)),
         FileNotFoundError, r"the image folder {tmp}/data/celeba/img_align_celeba is empty",
         r"unzip img_align_celeba\.zip there", untouched=no_cache),
    # --- python -m causal_vqvae.cli.edit / retrieve: exit status 2, the message on stderr -----------
    Case("cli_edit_model_dir_missing", "edit --model <a directory that does not exist>",
         lambda c: edit_cli(c, c.tmp / "out.png", model=c.tmp / "nowhere"),
         SystemExit, r"error: no model at {tmp}/nowhere: the path does not exist",
         r"a model folder \(config\.json and model\.safetensors", untouched=out_absent),
    Case("cli_edit_model_weights_truncated", "edit --model <a directory whose model.safetensors is cut in half>",
         lambda c: edit_cli(c, old_output(c), model=truncated_weights(c)),
         SystemExit, r"error: cannot read {tmp}/damaged_model/model\.safetensors: it is truncated or corrupt",
         r"save the model again", untouched=out_kept),
    Case("cli_edit_unknown_action", "edit --action bigger+ with an existing --out",
         lambda c: edit_cli(c, old_output(c), action="bigger+"),
         SystemExit, r"error: unknown action 'bigger\+'", VALID_ACTIONS, untouched=out_kept),
    Case("cli_edit_out_in_read_only_dir", "edit --out <a file in a directory without write permission>",
         lambda c: edit_cli(c, read_only_dir(c) / "out.png"),
         SystemExit, r"cannot write to the output directory {tmp}/locked: permission denied",
         r"choose a writable directory or change its permissions", untouched=locked_untouched,
         marks=(pytest.mark.skipif(AS_ROOT, reason="root can write to a read-only directory"),)),
    Case("cli_edit_out_dir_not_writable", "edit --out <a file in a directory that os.access calls read-only>",
         lambda c: edit_cli(c, os_access_says_no(c)),
         SystemExit, r"cannot write to the output directory {tmp}: permission denied",
         r"choose a writable directory or change its permissions", untouched=out_absent),
    Case("cli_edit_out_parent_is_a_file", "edit --out afile/out.png where afile is a regular file",
         lambda c: edit_cli(c, text_file(c.tmp / "afile", "keep me") / "out.png"),
         SystemExit, r"cannot write {tmp}/afile/out\.png: {tmp}/afile is a file, not a directory",
         r"choose an output path inside a directory", untouched=afile_kept),
    Case("cli_retrieve_image_missing", "retrieve A B where A does not exist",
         lambda c: lambda: retrieve_main(["--model", str(c.model_dir), str(c.tmp / "missing.png"), str(c.image),
                                          "--device", "cpu"]),
         SystemExit, r"error: image file {tmp}/missing\.png does not exist", r"check the path"),
    # --- train.py -------------------------------------------------------------------------------
    Case("train_more_gpus_than_the_machine", "train.py --gpus N with N above torch.cuda.device_count()",
         train_with_too_many_gpus,
         SystemExit, rf"--gpus {too_many_gpus()} asked for {too_many_gpus()} GPU\(s\) but this machine has {GPUS}",
         r"run with --gpus 0 \(CPU\)" if GPUS == 0 else rf"use --gpus {GPUS} or fewer", untouched=run_dir_absent),
    Case("train_out_is_a_file", "train.py --out <an existing regular file>",
         lambda c: train_call(c, out=text_file(c.tmp / "afile", "keep me")),
         SystemExit, r"--out {tmp}/afile: exists and is not a directory", r"pass a directory for the run",
         untouched=afile_kept),
    Case("train_out_not_writable", "train.py --out <a folder under a regular file> (cannot be created)",
         lambda c: train_call(c, out=text_file(c.tmp / "afile", "keep me") / "run"),
         SystemExit, r"--out {tmp}/afile/run: cannot write there", r"pass a directory you can write to",
         untouched=afile_kept),
    Case("train_init_other_dataset", "train.py --data shapes3d --init <a dSprites model>",
         lambda c: train_call(c, "--stage", "causal", "--max-steps", "2", "--init", str(c.model_dir),
                              data="shapes3d", config=False),
         SystemExit, r"--init {model_dir}: .*saved with dataset='dsprites', but dataset='shapes3d' is needed",
         r"train one with python train\.py --data shapes3d", untouched=run_dir_absent),
    Case("train_resume_missing_checkpoint", "train.py --resume <a .ckpt path that does not exist>",
         lambda c: train_call(c, "--resume", str(c.tmp / "nowhere.ckpt")),
         SystemExit, r"--resume {tmp}/nowhere\.ckpt: no such checkpoint", r"pass 'last' or the path of a \.ckpt"),
    Case("train_resume_other_architecture", "train.py --layout tokens --resume <a grid-layout checkpoint>",
         lambda c: train_call(c, "--stage", "vqvae", "--layout", "tokens", "--resume",
                              str(finished_vqvae_run(c) / "vqvae" / "checkpoints" / "last.ckpt")),
         SystemExit, r"the checkpoint holds a dsprites / grid-layout model, this run builds a dsprites / "
         r"tokens-layout one \(.*latent_layout: 'grid' in the checkpoint, 'tokens' in this run",
         r"resume with the settings the run was started with, or start a new --out"),
    Case("train_resume_last_with_other_settings", "train.py --resume last --seed 1 in a run started with seed 0",
         lambda c: train_call(c, "--stage", "vqvae", "--max-steps", "2", "--seed", "1", "--resume", "last",
                              out=finished_vqvae_run(c)),
         SystemExit, r"--resume: {tmp}/earlier/config\.json was written by a run with other settings "
         r"\(data: .*seed was 0, now 1",
         r"resume with the original flags, or pass a new --out"),
    # --- training configuration (--config files and flags) -----------------------------------------
    Case("train_config_unknown_section", "train.py --config with a section 'modle'",
         lambda c: run_config(c, '{"modle": {}}'),
         SystemExit, r"--config {tmp}/bad\.json: unknown section 'modle'", r"did you mean 'model'",
         untouched=run_dir_absent),
    Case("train_config_misspelt_key", "train.py --config with model.codebok_size",
         lambda c: run_config(c, '{"model": {"codebok_size": 16}}'),
         SystemExit, r"--config {tmp}/bad\.json, model: unknown key 'codebok_size'",
         r"did you mean 'codebook_size'", untouched=run_dir_absent),
    Case("train_config_number_as_string", "train.py --config with train.causal_steps \"9\"",
         lambda c: run_config(c, '{"train": {"causal_steps": "9"}}'),
         SystemExit, r"--config {tmp}/bad\.json, train: key 'causal_steps': expected a whole number, got '9'",
         r"write it without quotes", untouched=run_dir_absent),
    Case("train_config_out_of_range", "train.py --config with train.causal_steps -3",
         lambda c: run_config(c, '{"train": {"causal_steps": -3}}'),
         SystemExit, r"--config {tmp}/bad\.json, train: causal_steps must be >= 0, got -3", r"must be >= 0",
         untouched=run_dir_absent),
    Case("train_config_cross_field", "train.py --config with model.image_size 60 (not a multiple of 8)",
         lambda c: run_config(c, '{"model": {"image_size": 60}}'),
         SystemExit, r"--config {tmp}/bad\.json, model: image_size 60", r"must be a multiple of", 
         untouched=run_dir_absent),
    Case("train_config_run_key", "train.py --config with model.seed (the run's --seed sets it)",
         lambda c: run_config(c, '{"model": {"seed": 3}}'),
         SystemExit, r"--config {tmp}/bad\.json, model: key 'seed' cannot be set here", r"remove it",
         untouched=run_dir_absent),
    Case("train_config_list_item", "train.py --config with data.fractions [0.5, \"a\", 0.2]",
         lambda c: run_config(c, '{"data": {"fractions": [0.5, "a", 0.2]}}'),
         SystemExit, r"data: key 'fractions\[1\]': expected a number, got 'a'", r"expected a number",
         untouched=run_dir_absent),
    Case("train_config_section_not_a_mapping", "train.py --config with \"train\": [1]",
         lambda c: run_config(c, '{"train": [1]}'),
         SystemExit, r"train: expected a mapping of TrainConfig settings", r"key: value", untouched=run_dir_absent),
    Case("train_config_not_a_mapping", "train.py --config holding the JSON list [1]",
         lambda c: run_config(c, "[1]"),
         SystemExit, r"--config {tmp}/bad\.json: expected a mapping", r"sections model, train, data",
         untouched=run_dir_absent),
    Case("train_config_bad_json", "train.py --config whose JSON ends early",
         lambda c: run_config(c, '{"train": '),
         SystemExit, r"--config {tmp}/bad\.json: not valid JSON at line 1, column \d+", r"Expecting value",
         untouched=run_dir_absent),
    Case("train_config_bad_yaml", "train.py --config whose YAML has an unclosed list",
         lambda c: run_config(c, "model:\n  hidden_dims: [\n", name="bad.yaml"),
         SystemExit, r"--config {tmp}/bad\.yaml: not valid YAML at line \d+, column \d+", r"expected",
         untouched=run_dir_absent),
    Case("train_config_missing", "train.py --config <a file that does not exist>",
         lambda c: (lambda: __import__("train").main(["--data", "dsprites", "--out", str(c.tmp / "run"),
                                                      "--config", str(c.tmp / "none.json")])),
         SystemExit, r"--config {tmp}/none\.json: no such file", r"no such file", untouched=run_dir_absent),
    Case("train_max_steps_zero", "train.py --max-steps 0",
         lambda c: train_call(c, "--max-steps", "0"),
         SystemExit, r"argument --max-steps: must be >= 1, got 0", r"see .* --help", untouched=run_dir_absent),
    Case("train_val_every_zero", "train.py --val-every 0",
         lambda c: train_call(c, "--val-every", "0"),
         SystemExit, r"argument --val-every: must be >= 1, got 0", r"see .* --help", untouched=run_dir_absent),
    Case("train_seed_superscript", "train.py --seed ² (a digit int() would take)",
         lambda c: train_call(c, "--seed", "²"),
         SystemExit, r"argument --seed: '²' is not a whole number", r"see .* --help", untouched=run_dir_absent),
    Case("train_negative_gpus", "train.py --gpus -1",
         lambda c: train_call(c, "--gpus", "-1"),
         SystemExit, r"argument --gpus/--devices: must be >= 0, got -1", r"see .* --help",
         untouched=run_dir_absent),
    Case("train_nan_loss", "train.py whose loss turns NaN at step 3 (checkpoints every 2 steps)",
         nan_at_step_3,
         SystemExit, r"stage vqvae: the training loss was not finite \(NaN or inf\) at step 3",
         r"the last good checkpoint \(step 2\) is kept; it is {tmp}/run/vqvae/checkpoints/last\.ckpt\. "
         r"Lower the learning rate .* --resume last", untouched=good_checkpoint_kept),
]


# ------------------------------------------------------------------------------------- the test
def _message(error: BaseException, capsys: pytest.CaptureFixture[str]) -> str:
    """The text a user sees: str(error), or for a CLI exit with a status, its stderr."""
    if isinstance(error, SystemExit) and isinstance(error.code, int):
        assert error.code == 2, f"a usage or input error exits with status 2, got {error.code}"
        err = capsys.readouterr().err
        assert "Traceback" not in err, err
        return err
    return str(error)


@pytest.mark.parametrize("case", [pytest.param(case, id=case.id, marks=case.marks) for case in CASES])
def test_bad_input_gets_a_clear_error(case: Case, ctx: Ctx, capsys: pytest.CaptureFixture[str]) -> None:
    check_case(case, ctx, capsys)


def check_case(case: Case, ctx: Ctx, capsys: pytest.CaptureFixture[str]) -> None:
    """Run ``case``: it must raise its exception, with a message saying what was wrong and what to do,
    and leave what it must leave untouched."""
    call = case.arrange(ctx)
    capsys.readouterr()  # only what the failing call prints counts
    with pytest.raises(case.raises) as caught:
        call()
    message = _message(caught.value, capsys)

    def pattern(text: str) -> str:
        return text.replace("{model_dir}", re.escape(str(ctx.model_dir))).replace("{tmp}", re.escape(str(ctx.tmp)))

    assert re.search(pattern(case.wrong), message, re.DOTALL), f"does not say what was wrong:\n{message}"
    if case.untouched is not None:
        case.untouched(ctx)
    assert re.search(pattern(case.todo), message, re.DOTALL), f"does not say what to do:\n{message}"


def test_the_table_covers_every_layer_and_its_ids_are_unique() -> None:
    ids = [case.id for case in CASES]
    assert len(ids) == len(set(ids))
    assert len(CASES) >= 15
    for prefix in ("edit_", "cli_", "load_", "dsprites_", "shapes3d_", "celeba_", "train_"):
        assert any(i.startswith(prefix) for i in ids), prefix
