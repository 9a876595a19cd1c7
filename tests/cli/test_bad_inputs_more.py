"""More bad inputs, in the table form of ``test_bad_inputs.py`` (same ``Case`` rows, same checks): the
Python API's images and actions, every command's flags, model folders, settings files, dataset
roots and caches. ``docs/bad_inputs.md`` lists both tables with the message each case gets
(``python scripts/bad_inputs_table.py`` writes it).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from test_bad_inputs import (  # the first table's fixtures and helpers
    VALID_ACTIONS,
    Case,
    Ctx,
    check_case,
    config_changed,
    ctx,  # noqa: F401 - a fixture
    edit_call,
    model,  # noqa: F401 - a fixture
    model_copy,
    model_dir,  # noqa: F401 - a fixture
    run_dir_absent,
    text_file,
)

import causal_vqvae
from causal_vqvae import load
from causal_vqvae.cli.bench import main as bench_main
from causal_vqvae.cli.edit import main as edit_main
from causal_vqvae.cli.main import main as command_main
from causal_vqvae.cli.preview import main as preview_main
from causal_vqvae.cli.retrieve import main as retrieve_main
from causal_vqvae.cli.train import main as train_main

pytestmark = pytest.mark.usefixtures("one_thread")

COMMANDS = {"edit": edit_main, "retrieve": retrieve_main, "bench": bench_main, "preview": preview_main,
            "train": train_main, "causal-vqvae": command_main}
HELP = r"\(see .+ --help\)"
BLACK = np.zeros((64, 64), np.uint8)


def cli(*argv: str) -> Callable[[Ctx], Callable[[], Any]]:
    """A row's arrange: the command ``argv[0]`` with the rest; {tmp}, {image} and {model} filled in."""
    def arrange(c: Ctx) -> Callable[[], Any]:
        args = [a.format(tmp=c.tmp, image=c.image, model=c.model_dir) for a in argv]
        text_file(c.tmp / "notes.txt", "not an image")
        main = COMMANDS[args[0]]
        if args[0] == "causal-vqvae":
            def call() -> None:
                status = main(args[1:])
                raise SystemExit(status)
            return call
        return partial(main, args[1:])
    return arrange


def edit_cli(*flags: str) -> Callable[[Ctx], Callable[[], Any]]:
    return cli("edit", "--model", "{model}", "--image", "{image}", "--device", "cpu", *flags)


def api(call: Callable[[Ctx], Any]) -> Callable[[Ctx], Callable[[], Any]]:
    return lambda c: lambda: call(c)


def edit_array(image: Any, action: Any = "scale+") -> Callable[[Ctx], Callable[[], Any]]:
    return lambda c: edit_call(c, image, action)


def damaged(change: Callable[[Path], Any]) -> Callable[[Ctx], Callable[[], Any]]:
    return lambda c: partial(load, model_copy(c, change), device="cpu")


def configured(change: Callable[[dict], Any]) -> Callable[[Ctx], Callable[[], Any]]:
    return lambda c: partial(load, config_changed(c, change), device="cpu")


def train_with_config(text: str, name: str = "bad.json") -> Callable[[Ctx], Callable[[], Any]]:
    def arrange(c: Ctx) -> Callable[[], Any]:
        path = text_file(c.tmp / name, text)
        return partial(train_main, ["--data", "dsprites", "--gpus", "0", "--no-progress", "--max-steps", "1",
                                    "--out", str(c.tmp / "run"), "--config", str(path)])
    return arrange


def train_flags(*flags: str) -> Callable[[Ctx], Callable[[], Any]]:
    return cli("train", "--data", "dsprites", "--gpus", "0", "--no-progress", "--out", "{tmp}/run", *flags)


def out_absent(c: Ctx) -> None:
    assert not (c.tmp / "out.png").exists() and not (c.tmp / "out").exists(), "a refused command wrote its output"


VALID = r"valid actions: shape- \(0\)"

CASES = [
    # --- the Python API: images ---------------------------------------------------------------------
    Case("api_image_five_channels", "an array (64, 64, 5)", edit_array(np.zeros((64, 64, 5), np.uint8)),
         ValueError, r"array of shape \(64, 64, 5\).*C = 5, but C must be 1, 2, 3 or 4", r"Channels-first"),
    Case("api_image_tensor_5d", "a tensor (1, 1, 1, 64, 64)", edit_array(torch.zeros(1, 1, 1, 64, 64)),
         ValueError, r"unsupported tensor of shape \(1, 1, 1, 64, 64\)", r"tensors are \(H, W\), \(C, H, W\)"),
    Case("api_image_nan", "a float array of NaN", edit_array(np.full((64, 64), np.nan, np.float32)),
         ValueError, r"contains NaN or infinite values", r"images must be finite floats in \[0, 1\]"),
    Case("api_image_inf", "a float array of +inf", edit_array(np.full((64, 64), np.inf, np.float32)),
         ValueError, r"contains NaN or infinite values", r"finite floats in \[0, 1\]"),
    Case("api_image_float_above_one", "a float array of 2.0", edit_array(np.full((64, 64), 2.0, np.float32)),
         ValueError, r"has values in \[2, 2\]", r"float images must be in \[0, 1\] \(divide by 255\?\)"),
    Case("api_image_float_negative", "a float array of -0.5", edit_array(np.full((64, 64), -0.5, np.float32)),
         ValueError, r"has values in \[-0\.5, -0\.5\]", r"float images must be in \[0, 1\]"),
    Case("api_image_float_0_255", "a float64 array of 200.0 (0..255 floats)", edit_array(np.full((64, 64), 200.0)),
         ValueError, r"dtype float64 has values in \[200, 200\]", r"divide by 255"),
    Case("api_image_bool", "a bool array", edit_array(np.zeros((64, 64), bool)),
         ValueError, r"unsupported array of shape \(64, 64\) and dtype bool", r"use uint8 in \[0, 255\] or float"),
    Case("api_image_int16", "an int16 array", edit_array(np.zeros((64, 64), np.int16)),
         ValueError, r"dtype int16", r"use uint8 in \[0, 255\] or float in \[0, 1\]"),
    Case("api_image_uint16", "a uint16 array", edit_array(np.zeros((64, 64), np.uint16)),
         ValueError, r"dtype uint16", r"use uint8 in \[0, 255\] or float in \[0, 1\]"),
    Case("api_image_object_array", "an object array", edit_array(np.array([[None]])),
         ValueError, r"dtype object", r"use uint8 in \[0, 255\] or float"),
    Case("api_image_list", "a nested list of numbers", edit_array([[0, 1], [1, 0]]),
         TypeError, r"cannot read a list as an image", r"accepted: a PIL image, an image file path"),
    Case("api_image_none", "None", edit_array(None),
         TypeError, r"cannot read a NoneType as an image", r"accepted: a PIL image"),
    Case("api_image_bytes", "the bytes of a PNG header", edit_array(b"\x89PNG"),
         TypeError, r"cannot read a bytes as an image", r"an image file path"),
    Case("api_image_url", "an http:// URL", edit_array("http://example.com/a.png"),
         ValueError, r"http://example\.com/a\.png is a URL: images are read from files, nothing is downloaded",
         r"download it and give the file's path"),
    Case("api_image_directory", "a folder's path", lambda c: edit_call(c, str(c.tmp)),
         IsADirectoryError, r"{tmp} is a directory, not an image file", r"give the path of one image"),
    Case("api_image_missing_relative", "a relative path that does not exist", edit_array("nowhere/none.png"),
         FileNotFoundError, r"image file nowhere/none\.png does not exist \(looked for .*nowhere/none\.png\)",
         r"check the path"),
    Case("api_image_truncated_png", "a PNG cut in half",
         lambda c: edit_call(c, str(_truncated_png(c))),
         ValueError, r"cannot read the image {tmp}/cut\.png: .*", r"the file may be truncated or damaged"),
    Case("api_image_batch_for_traverse", "traverse() of a batch of 2", api(lambda c: causal_vqvae.traverse(
        c.model, torch.zeros(2, 1, 64, 64), 1)),
         ValueError, r"traverse takes one image \(1, C, S, S\), got shape \(2, 1, 64, 64\)", r"takes one image"),
    Case("api_traverse_steps_zero", "traverse(..., steps=0)", api(lambda c: causal_vqvae.traverse(
        c.model, torch.zeros(1, 1, 64, 64), 0)),
         ValueError, r"steps must be >= 1, got 0", r">= 1"),
    # --- the Python API: actions --------------------------------------------------------------------
    Case("api_action_none", "action None", edit_array(BLACK, None),
         TypeError, r"cannot read None \(NoneType\) as an action", r"give an id, a name, a \(factor, direction\) pair"),
    Case("api_action_float", "action 1.5", edit_array(BLACK, 1.5),
         TypeError, r"cannot read 1\.5 \(float\) as an action", VALID),
    Case("api_action_negative_id", "action id -1", edit_array(BLACK, -1),
         ValueError, r"action id -1 out of range \[0, 10\)", VALID_ACTIONS),
    Case("api_action_bool", "action True", edit_array(BLACK, True),
         TypeError, r"True is not an action", VALID),
    Case("api_action_pair_direction_2", "action ('scale', 2)", edit_array(BLACK, ("scale", 2)),
         ValueError, r"\('scale', 2\) is not a \(factor, direction\) pair", r"the direction must be \+1, -1, '\+' or '-'"),
    Case("api_action_triple", "action ('scale', 1, 2)", edit_array(BLACK, ("scale", 1, 2)),
         ValueError, r"\('scale', 1, 2\) is not a \(factor, direction\) pair", r"e\.g\. \('scale', \+1\)"),
    Case("api_action_pair_unknown_factor", "action ('bogus', 1)", edit_array(BLACK, ("bogus", 1)),
         ValueError, r"unknown factor 'bogus' in \('bogus', \+1\)", VALID),
    Case("api_action_factor_without_direction", "action 'scale'", edit_array(BLACK, "scale"),
         ValueError, r"'scale' is a factor, not an action", r"add a direction, e\.g\. 'scale\+'"),
    Case("api_action_empty_list", "action []", edit_array(BLACK, []),
         ValueError, r"empty action sequence", r"give at least one action"),
    Case("api_action_empty_string", "action ''", edit_array(BLACK, ""),
         ValueError, r"unknown action ''", VALID),
    Case("api_action_superscript", "action '²'", edit_array(BLACK, "²"),
         ValueError, r"unknown action '²'", VALID),
    Case("api_action_dict", "action {'scale': 1}", edit_array(BLACK, {"scale": 1}),
         TypeError, r"cannot read \{'scale': 1\} \(dict\) as an action", r"give an id, a name"),
    Case("api_action_tensor_of_two", "action tensor([1, 2])", edit_array(BLACK, torch.tensor([1, 2])),
         TypeError, r"cannot read tensor\(\[1, 2\]\) \(Tensor\) as an action", VALID),
    Case("api_action_misspelt", "action 'scael+'", edit_array(BLACK, "scael+"),
         ValueError, r"unknown action 'scael\+'", r"did you mean scale\+"),
    # --- the Python API: models and retrieval ------------------------------------------------------
    Case("api_load_none", "load(None)", api(lambda c: load(None)),
         TypeError, r"load\(\) takes a model folder, .*, got None \(NoneType\)", r"a released name or a Hugging Face"),
    Case("api_load_int", "load(123)", api(lambda c: load(123)),
         TypeError, r"got 123 \(int\)", r"a model folder, a training run's folder"),
    Case("api_load_empty_name", "load('')", api(lambda c: load("")),
         TypeError, r"got '' \(an empty name\)", r"a model folder"),
    Case("api_load_missing_name", "load('nowhere')", api(lambda c: load("nowhere")),
         FileNotFoundError, r"no model at nowhere: the path does not exist", r"give a model folder"),
    Case("api_load_misspelt_release", "load('shapes3d_twn')", api(lambda c: load("shapes3d_twn")),
         FileNotFoundError, r"no model at shapes3d_twn", r"did you mean shapes3d_twin"),
    Case("api_load_folder_without_model", "load(<an empty folder>)", api(lambda c: load(c.tmp)),
         FileNotFoundError, r"no model at {tmp}: config\.json and model\.safetensors missing", r"give a model folder"),
    Case("api_load_a_file", "load(<a text file>)", api(lambda c: load(text_file(c.tmp / "notes.txt", "x"))),
         FileNotFoundError, r"no model at {tmp}/notes\.txt: it is a file", r"give a model folder"),
    Case("api_edit_model_int", "edit(..., model=5)", api(lambda c: causal_vqvae.edit(BLACK, "scale+", 5)),
         TypeError, r"model must be a CausalVQVAE or the path of a model directory, got int",
         r"use causal_vqvae\.load\(path\) once"),
    Case("api_retrieve_top_k_zero", "retrieve_action(..., top_k=0)",
         api(lambda c: causal_vqvae.retrieve_action(BLACK, BLACK, c.model, top_k=0)),
         ValueError, r"top_k must be an int in \[1, 10\] or None, got 0", r"\[1, 10\]"),
    Case("api_retrieve_method_bogus", "retrieve_action(..., method='bogus')",
         api(lambda c: causal_vqvae.retrieve_action(BLACK, BLACK, c.model, method="bogus")),
         ValueError, r"unknown retrieval method 'bogus'", r"use one of \('transition', 'head'\)"),
    Case("api_retrieve_batches_differ", "retrieve_action(2 images, 3 images)",
         api(lambda c: causal_vqvae.retrieve_action(np.zeros((2, 64, 64, 1), np.uint8),
                                                    np.zeros((3, 64, 64, 1), np.uint8), c.model)),
         ValueError, r"image_a holds 2 images and image_b 3", r"give as many, or one on a side"),
    # --- edit on the command line -------------------------------------------------------------------
    Case("cli_edit_steps_zero", "edit --traverse --steps 0", edit_cli("--traverse", "--steps", "0"),
         SystemExit, r"argument --steps: must be >= 1, got 0", HELP, untouched=out_absent),
    Case("cli_edit_steps_too_many", "edit --traverse --steps 41", edit_cli("--traverse", "--steps", "41"),
         SystemExit, r"argument --steps: at most 40 steps each way", HELP),
    Case("cli_edit_steps_not_a_number", "edit --traverse --steps abc", edit_cli("--traverse", "--steps", "abc"),
         SystemExit, r"argument --steps: 'abc' is not a whole number", HELP),
    Case("cli_edit_unknown_format", "edit --out out.xyz", edit_cli("--action", "scale+", "--out", "{tmp}/out.xyz"),
         SystemExit, r"cannot tell an image format from the name {tmp}/out\.xyz", r"end it in \.png \(lossless\) or \.jpg"),
    Case("cli_edit_image_missing", "edit --image missing.png",
         cli("edit", "--model", "{model}", "--image", "{tmp}/missing.png", "--action", "scale+", "--out", "{tmp}/o.png"),
         SystemExit, r"image file {tmp}/missing\.png does not exist", r"check the path"),
    Case("cli_edit_image_not_an_image", "edit --image notes.txt",
         cli("edit", "--model", "{model}", "--image", "{tmp}/notes.txt", "--action", "scale+", "--out", "{tmp}/o.png"),
         SystemExit, r"{tmp}/notes\.txt is not an image file PIL can read", r"give a PNG, JPEG, BMP"),
    Case("cli_edit_model_is_a_file", "edit --model notes.txt",
         cli("edit", "--model", "{tmp}/notes.txt", "--image", "{image}", "--action", "scale+"),
         SystemExit, r"no model at {tmp}/notes\.txt: it is a file", r"give a model folder"),
    Case("cli_edit_device_bogus", "edit --device bogus", edit_cli("--action", "scale+", "--device", "bogus"),
         SystemExit, r"argument --device: 'bogus' is not a device", r"use auto, cpu, cuda, cuda:N or mps"),
    Case("cli_edit_analogy_missing", "edit --analogy missing.png in.png",
         edit_cli("--analogy", "{tmp}/missing.png", "{image}", "--out", "{tmp}/o.png"),
         SystemExit, r"image file {tmp}/missing\.png does not exist", r"check the path"),
    Case("cli_edit_no_mode", "edit without --action, --traverse or --analogy", edit_cli(),
         SystemExit, r"one of the arguments --action --traverse --analogy is required", HELP),
    Case("cli_edit_two_modes", "edit --traverse --action scale+", edit_cli("--traverse", "--action", "scale+"),
         SystemExit, r"argument --action: not allowed with argument --traverse", HELP),
    Case("cli_edit_action_id_out_of_range", "edit --action 99", edit_cli("--action", "99", "--out", "{tmp}/o.png"),
         SystemExit, r"action id 99 out of range \[0, 10\)", VALID),
    Case("cli_edit_action_superscript", "edit --action ²", edit_cli("--action", "²", "--out", "{tmp}/o.png"),
         SystemExit, r"unknown action '²'", VALID),
    Case("cli_edit_method_bogus", "edit --method bogus", edit_cli("--action", "scale+", "--method", "bogus"),
         SystemExit, r"argument --method: invalid choice: 'bogus'", r"choose from 'transition', 'head'"),
    Case("cli_edit_model_missing", "edit --model nowhere",
         cli("edit", "--model", "{tmp}/nowhere", "--image", "{image}", "--action", "scale+"),
         SystemExit, r"no model at {tmp}/nowhere: the path does not exist", r"give a model folder"),
    # --- retrieve, bench, preview and the dispatcher ------------------------------------------------
    Case("cli_retrieve_top_zero", "retrieve --top 0", cli("retrieve", "--model", "{model}", "{image}", "{image}",
                                                           "--top", "0"),
         SystemExit, r"argument --top: must be >= 1, got 0", HELP),
    Case("cli_retrieve_top_not_a_number", "retrieve --top abc", cli("retrieve", "--model", "{model}", "{image}",
                                                                     "{image}", "--top", "abc"),
         SystemExit, r"argument --top: 'abc' is not a whole number", HELP),
    Case("cli_retrieve_one_image", "retrieve with one image", cli("retrieve", "--model", "{model}", "{image}"),
         SystemExit, r"the following arguments are required: B", HELP),
    Case("cli_retrieve_picture_format", "retrieve --out x.xyz", cli("retrieve", "--model", "{model}", "{image}",
                                                                     "{image}", "--out", "{tmp}/x.xyz"),
         SystemExit, r"cannot tell an image format from the name {tmp}/x\.xyz", r"end it in \.png"),
    Case("cli_retrieve_method_bogus", "retrieve --method bogus", cli("retrieve", "--model", "{model}", "{image}",
                                                                      "{image}", "--method", "bogus"),
         SystemExit, r"argument --method: invalid choice: 'bogus'", r"choose from"),
    Case("cli_bench_pairs_zero", "bench --pairs 0", cli("bench", "--model", "{model}", "--data", "dsprites",
                                                         "--pairs", "0"),
         SystemExit, r"argument --pairs: must be >= 1, got 0", HELP),
    Case("cli_bench_batch_size_zero", "bench --batch-size 0", cli("bench", "--model", "{model}", "--data", "dsprites",
                                                                   "--batch-size", "0"),
         SystemExit, r"argument --batch-size/--batch: must be >= 1, got 0", HELP),
    Case("cli_bench_data_bogus", "bench --data bogus", cli("bench", "--model", "{model}", "--data", "bogus"),
         SystemExit, r"argument --data: invalid choice: 'bogus'", r"choose from 'dsprites', 'shapes3d'"),
    Case("cli_bench_model_of_other_data", "bench --data shapes3d with a dSprites model",
         cli("bench", "--model", "{model}", "--data", "shapes3d", "--pairs", "4", "--out", "{tmp}/b.json"),
         SystemExit, r"the model was trained on 'dsprites', not 'shapes3d'", r"bench it with --data dsprites"),
    Case("cli_bench_out_not_json", "bench --out results.txt",
         cli("bench", "--model", "{model}", "--data", "dsprites", "--out", "{tmp}/results.txt"),
         SystemExit, r"--out {tmp}/results\.txt: the results are JSON", r"give a path ending in \.json, or a folder"),
    Case("cli_bench_seed_negative", "bench --seed -1", cli("bench", "--model", "{model}", "--data", "dsprites",
                                                            "--seed", "-1"),
         SystemExit, r"argument --seed: must be >= 0, got -1", HELP),
    Case("cli_preview_data_bogus", "preview --data bogus", cli("preview", "--data", "bogus"),
         SystemExit, r"argument --data: invalid choice: 'bogus'", r"choose from"),
    Case("cli_preview_twin_version_for_dsprites", "preview --data dsprites --twin-version 2",
         cli("preview", "--data", "dsprites", "--twin-version", "2", "--out", "{tmp}/out.png"),
         SystemExit, r"twin_version must be '1' for dsprites .*, got '2'",
         r"only 3D Shapes has more than one twin version", untouched=out_absent),
    Case("cli_bench_twin_version_bogus", "bench --twin-version 5",
         cli("bench", "--model", "{model}", "--data", "shapes3d", "--twin-version", "5"),
         SystemExit, r"argument --twin-version: invalid choice: '5'", r"choose from '1', '2', '3', '4'"),
    Case("cli_bench_real_images_for_dsprites", "bench --data dsprites --real-images FILE",
         cli("bench", "--model", "{model}", "--data", "dsprites", "--real-images", "{tmp}/notes.txt", "--out",
             "{tmp}/out/b.json"),
         SystemExit, r"--real-images measures a 3D Shapes model on real 3D Shapes images; --data is dsprites",
         r"pass --data shapes3d with a 3D Shapes model, or leave --real-images out", untouched=out_absent),
    Case("cli_bench_real_count_with_npz", "bench --real-images FRAMES.npz --real-count 5",
         cli("bench", "--model", "{model}", "--data", "shapes3d", "--real-images", "{tmp}/frames.npz", "--real-count",
             "5", "--out", "{tmp}/out/b.json"),
         SystemExit, r"--real-count draws held-out images from a real 3dshapes\.h5",
         r"give --real-images the \.h5 \(or its folder\), or leave --real-count out", untouched=out_absent),
    Case("cli_unknown_command", "causal-vqvae bogus", cli("causal-vqvae", "bogus"),
         SystemExit, r"unknown command 'bogus'", r"commands: train, edit, retrieve, bench, preview"),
    Case("cli_misspelt_command", "causal-vqvae eidt", cli("causal-vqvae", "eidt"),
         SystemExit, r"unknown command 'eidt'", r"did you mean edit"),
    # --- train's flags --------------------------------------------------------------------------------
    Case("train_data_bogus", "train --data bogus", cli("train", "--data", "bogus"),
         SystemExit, r"argument --data: invalid choice: 'bogus'", r"choose from 'celeba', 'dsprites', 'shapes3d'"),
    Case("train_preset_bogus", "train --preset bogus", train_flags("--preset", "bogus"),
         SystemExit, r"argument --preset: invalid choice: 'bogus'", r"choose from 'cpu-small', 'default', 'small'",
         untouched=run_dir_absent),
    Case("train_stage_bogus", "train --stage bogus", train_flags("--stage", "bogus"),
         SystemExit, r"argument --stage: invalid choice: 'bogus'", r"choose from 'vqvae', 'causal', 'joint', 'head'"),
    Case("train_layout_bogus", "train --layout bogus", train_flags("--layout", "bogus"),
         SystemExit, r"argument --layout: invalid choice: 'bogus'", r"choose from 'grid', 'tokens'"),
    Case("train_keep_bogus", "train --keep bogus", train_flags("--keep", "bogus"),
         SystemExit, r"argument --keep: invalid choice: 'bogus'", r"choose from 'last', 'best'"),
    Case("train_compile_mode_bogus", "train --compile-mode bogus", train_flags("--compile-mode", "bogus"),
         SystemExit, r"argument --compile-mode: invalid choice: 'bogus'", r"choose from 'default'"),
    Case("train_accelerator_bogus", "train --accelerator bogus", train_flags("--accelerator", "bogus"),
         SystemExit, r"argument --accelerator: invalid choice: 'bogus'", r"choose from 'auto', 'gpu', 'cpu'"),
    Case("train_batch_size_zero", "train --batch-size 0", train_flags("--batch-size", "0"),
         SystemExit, r"argument --batch-size: must be >= 1, got 0", HELP, untouched=run_dir_absent),
    Case("train_max_epochs_zero", "train --max-epochs 0", train_flags("--max-epochs", "0"),
         SystemExit, r"argument --max-epochs: must be >= 1, got 0", HELP, untouched=run_dir_absent),
    Case("train_num_workers_negative", "train --num-workers -1", train_flags("--num-workers", "-1"),
         SystemExit, r"argument --num-workers: must be >= 0, got -1", HELP, untouched=run_dir_absent),
    Case("train_num_nodes_zero", "train --num-nodes 0", train_flags("--num-nodes", "0"),
         SystemExit, r"argument --num-nodes: must be >= 1, got 0", HELP, untouched=run_dir_absent),
    Case("train_twin_version_bogus", "train --twin-version 5", train_flags("--twin-version", "5"),
         SystemExit, r"argument --twin-version: invalid choice: '5'", r"choose from '1', '2', '3', '4'",
         untouched=run_dir_absent),
    Case("train_twin_version_for_dsprites", "train --data dsprites --twin-version 2",
         train_flags("--twin-version", "2", "--max-steps", "1"),
         SystemExit, r"--twin-version 2: twin_version must be '1' for dsprites",
         r"only 3D Shapes has more than one twin version", untouched=run_dir_absent),
    Case("train_twin_version_with_data_root", "train --data shapes3d --twin-version 2 --data-root DIR",
         cli("train", "--data", "shapes3d", "--twin-version", "2", "--data-root", "{tmp}", "--gpus", "0",
             "--no-progress", "--out", "{tmp}/run", "--max-steps", "1"),
         SystemExit, r"--twin-version 2: twin_version '2' chooses a renderer of the shapes3d procedural twin, and "
                     r"data_root {tmp} is real data, which has none",
         r"leave twin_version at '1' to read the real data, or leave data_root out to use the twin",
         untouched=run_dir_absent),
    Case("train_augment_bogus", "train --augment blurr", train_flags("--augment", "blurr", "--max-steps", "1"),
         SystemExit, r"--augment blurr: augment: unknown augmentation 'blurr' \(did you mean 'blur'\?\)",
         r"choose from renderer, resample, blur, jpeg, colour, border", untouched=run_dir_absent),
    Case("train_augment_renderer_for_dsprites", "train --data dsprites --augment renderer",
         train_flags("--augment", "renderer", "--max-steps", "1"),
         SystemExit, r"--augment renderer: augment: 'renderer' swaps the twin's renderer version, but this "
                     r"dataset's twin has one renderer version", r"leave it out", untouched=run_dir_absent),
    Case("train_code_pool_text", "train --code-pool many", train_flags("--code-pool", "many"),
         SystemExit, r"argument --code-pool: 'many' is not a whole number", HELP, untouched=run_dir_absent),
    Case("train_max_steps_per_stage_count", "train --max-steps 1 2 3 for two stages",
         train_flags("--preset", "cpu-small", "--max-steps", "1", "2", "3"),
         SystemExit, r"--max-steps takes one number or one per stage \(2: \['vqvae', 'causal'\]\)", r"one per stage",
         untouched=run_dir_absent),
    Case("train_code_pool_smaller_than_a_batch", "train --preset cpu-small --code-pool 4",
         train_flags("--preset", "cpu-small", "--code-pool", "4"),
         SystemExit, r"--code-pool 4 is smaller than one batch \(32 pairs x 1 device\(s\)\)",
         r"pass a larger pool, e\.g\. 40000", untouched=run_dir_absent),
    Case("train_resume_and_overwrite", "train --resume last --overwrite",
         train_flags("--resume", "last", "--overwrite"),
         SystemExit, r"--resume continues a run and --overwrite replaces it", r"give one of them",
         untouched=run_dir_absent),
    Case("train_new_transition_without_init", "train --new-transition without --init",
         train_flags("--new-transition"),
         SystemExit, r"--new-transition replaces the transition and graph of a saved model",
         r"pass --init DIR and run the causal stage", untouched=run_dir_absent),
    Case("train_causal_stage_without_init", "train --stage causal without --init",
         train_flags("--stage", "causal", "--max-steps", "1"),
         SystemExit, r"the causal stage trains on a frozen autoencoder", r"pass --init DIR with a trained one",
         untouched=run_dir_absent),
    Case("train_head_stage_without_init", "train --stage head without --init",
         train_flags("--stage", "head", "--max-steps", "1"),
         SystemExit, r"the head stage retrains the retrieval head of a trained model", r"pass --init DIR",
         untouched=run_dir_absent),
    Case("train_decoder_stage_without_init", "train --stage decoder without --init",
         train_flags("--stage", "decoder", "--max-steps", "1"),
         SystemExit, r"the decoder stage fine-tunes the decoder of a trained model", r"pass --init DIR",
         untouched=run_dir_absent),
    Case("train_init_missing", "train --stage causal --init nowhere",
         train_flags("--stage", "causal", "--max-steps", "1", "--init", "{tmp}/nowhere"),
         SystemExit, r"--init {tmp}/nowhere: no config\.json in {tmp}/nowhere",
         r"is this a directory written by save_pretrained\?", untouched=run_dir_absent),
    Case("train_data_root_missing", "train --data-root /nowhere",
         train_flags("--data-root", "{tmp}/nowhere", "--max-steps", "1"),
         SystemExit, r"dsprites: no real file found: --data-root {tmp}/nowhere does not exist",
         r"looked for dsprites_ndarray", untouched=run_dir_absent),
    Case("train_data_root_not_a_dataset", "train --data-root notes.txt (dSprites)",
         train_flags("--data-root", "{tmp}/notes.txt", "--max-steps", "1"),
         SystemExit, r"{tmp}/notes\.txt is neither an \.npz \(zip\) nor an \.hdf5 file",
         r"expected dsprites_ndarray_co1sh3sc6or40x32y32_64x64\.npz or \.hdf5", untouched=run_dir_absent),
    Case("train_celeba_root_not_a_dataset", "train --data celeba --data-root notes.txt",
         cli("train", "--data", "celeba", "--gpus", "0", "--out", "{tmp}/run", "--max-steps", "1",
             "--data-root", "{tmp}/notes.txt"),
         SystemExit, r"celeba: --data-root {tmp}/notes\.txt holds neither celeba/list_attr_celeba\.txt",
         r"Point it at the folder that contains celeba/", untouched=run_dir_absent),
    Case("train_shapes3d_root_without_file", "train --data shapes3d --data-root <a folder without 3dshapes.h5>",
         cli("train", "--data", "shapes3d", "--gpus", "0", "--out", "{tmp}/run", "--max-steps", "1",
             "--data-root", "{tmp}"),
         SystemExit, r"shapes3d: no real file found: --data-root {tmp} holds none of the dataset's files",
         r"Point --data-root at the file or its folder, or leave it out", untouched=run_dir_absent),
    # --- settings files -----------------------------------------------------------------------------
    Case("train_config_bool_as_string", "--config with model.local_encoder \"yes\"",
         train_with_config('{"model": {"local_encoder": "yes"}}'),
         SystemExit, r"model: key 'local_encoder': expected true or false, got 'yes'", r"true or false",
         untouched=run_dir_absent),
    Case("train_config_renderer_version_for_dsprites", "--config with data.renderer_version \"2\" on dSprites",
         train_with_config('{"data": {"renderer_version": "2"}}'),
         SystemExit, r"data: renderer_version '2' names a renderer of the twin, but this dataset's twin has one "
                     r"renderer version", r"leave it out", untouched=run_dir_absent),
    Case("train_config_null_for_a_number", "--config with train.vqvae_lr null",
         train_with_config('{"train": {"vqvae_lr": null}}'),
         SystemExit, r"train: key 'vqvae_lr': expected a number, got None \(null\)", r"a number",
         untouched=run_dir_absent),
    Case("train_config_list_for_a_string", "--config with train.keep [\"best\"]",
         train_with_config('{"train": {"keep": ["best"]}}'),
         SystemExit, r"train: key 'keep': expected a string, got \['best'\] \(a list\)", r"a string",
         untouched=run_dir_absent),
    Case("train_config_float_for_an_int", "--config with train.val_every 2.5",
         train_with_config('{"train": {"val_every": 2.5}}'),
         SystemExit, r"train: key 'val_every': expected a whole number, got 2\.5", r"a whole number",
         untouched=run_dir_absent),
    Case("train_config_keep_bogus", "--config with train.keep \"sometimes\"",
         train_with_config('{"train": {"keep": "sometimes"}}'),
         SystemExit, r"train: keep must be one of \('last', 'best'\), got 'sometimes'", r"one of",
         untouched=run_dir_absent),
    Case("train_config_huge_codebook", "--config with model.codebook_size 2**31",
         train_with_config('{"model": {"codebook_size": 2147483648}}'),
         SystemExit, r"model: codebook_size 2147483648 is above its limit 65536", r"would not fit in memory",
         untouched=run_dir_absent),
    Case("train_config_misspelt_train_key", "--config with train.causal_step",
         train_with_config('{"train": {"causal_step": 5}}'),
         SystemExit, r"train: unknown key 'causal_step'", r"did you mean 'causal_steps'", untouched=run_dir_absent),
    Case("train_config_misspelt_data_key", "--config with data.batchsize",
         train_with_config('{"data": {"batchsize": 5}}'),
         SystemExit, r"data: unknown key 'batchsize'", r"did you mean 'batch_size'", untouched=run_dir_absent),
    Case("train_config_twin_version_bogus", "--config with data.twin_version \"3\"",
         train_with_config('{"data": {"twin_version": "3"}}'),
         SystemExit, r"--config {tmp}/bad\.json, data: twin_version must be '1' for dsprites .*, got '3'",
         r"only 3D Shapes has more than one twin version", untouched=run_dir_absent),
    Case("train_config_data_run_key", "--config with data.dataset (set by --data)",
         train_with_config('{"data": {"dataset": "celeba"}}'),
         SystemExit, r"data: key 'dataset' cannot be set here", r"remove it", untouched=run_dir_absent),
    Case("train_config_yaml_tab", "--config YAML indented with a tab",
         train_with_config("model:\n\tcode_dim: 8\n", name="bad.yaml"),
         SystemExit, r"--config {tmp}/bad\.yaml: not valid YAML at line 2", r"found character '\\t'",
         untouched=run_dir_absent),
    Case("train_config_not_text", "--config of binary bytes",
         lambda c: partial(train_main, ["--data", "dsprites", "--out", str(c.tmp / "run"), "--config",
                                        str(_binary(c.tmp / "bad.json"))]),
         SystemExit, r"--config {tmp}/bad\.json: not a text file", r"pass a JSON or YAML file",
         untouched=run_dir_absent),
    Case("train_config_a_folder", "--config <a folder>",
         lambda c: partial(train_main, ["--data", "dsprites", "--out", str(c.tmp / "run"), "--config", str(c.tmp)]),
         SystemExit, r"--config {tmp}: not a file", r"pass a JSON or YAML file", untouched=run_dir_absent),
    # --- model folders --------------------------------------------------------------------------------
    Case("load_weights_missing", "load() of a folder whose model.safetensors was deleted",
         damaged(lambda d: (d / "model.safetensors").unlink()),
         FileNotFoundError, r"no model at {tmp}/damaged_model: model\.safetensors missing",
         r"copy the whole folder again, or save the model again"),
    Case("load_config_missing", "load() of a folder whose config.json was deleted",
         damaged(lambda d: (d / "config.json").unlink()),
         FileNotFoundError, r"no model at {tmp}/damaged_model: config\.json missing", r"give a model folder"),
    Case("load_config_other_format", "load() of a config.json of format 99",
         configured(lambda d: d.update(format=99)),
         ValueError, r"config\.json: checkpoint format 99, but this code reads format 1", r"format 1"),
    Case("load_config_other_architecture", "load() of a config.json of another architecture",
         configured(lambda d: d.update(architecture="VQVAE2")),
         ValueError, r"config\.json: architecture is 'VQVAE2', expected 'CausalVQVAE'", r"expected 'CausalVQVAE'"),
    Case("load_config_null_size", "load() of a config.json with code_dim null",
         configured(lambda d: d.update(code_dim=None)),
         ValueError, r"config\.json: key 'code_dim': expected a whole number, got None \(null\)", r"a whole number"),
    Case("load_config_layout_bogus", "load() of a config.json with latent_layout 'mesh'",
         configured(lambda d: d.update(latent_layout="mesh")),
         ValueError, r"config\.json: latent_layout must be one of \('grid', 'tokens'\), got 'mesh'", r"one of"),
    Case("load_config_actions_mismatch", "load() of a config.json with 3 action names for 10 actions",
         configured(lambda d: d.update(action_names=["a", "b", "c"])),
         ValueError, r"config\.json: action_names has 3 names but num_actions is 10", r"num_actions is 10"),
    Case("load_config_empty_file", "load() of an empty config.json",
         damaged(lambda d: (d / "config.json").write_text("")),
         ValueError, r"cannot read {tmp}/damaged_model/config\.json: not valid JSON", r"save the model again"),
    Case("load_weights_empty_file", "load() of a 0-byte model.safetensors",
         damaged(lambda d: (d / "model.safetensors").write_bytes(b"")),
         ValueError, r"cannot read {tmp}/damaged_model/model\.safetensors: it is truncated or corrupt",
         r"save the model again"),
    Case("load_weights_not_safetensors", "load() of a model.safetensors holding text",
         damaged(lambda d: (d / "model.safetensors").write_text("not weights")),
         ValueError, r"cannot read {tmp}/damaged_model/model\.safetensors: it is truncated or corrupt",
         r"copy the whole directory again"),
]


def _truncated_png(c: Ctx) -> Path:
    path = c.tmp / "cut.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64), dtype=np.uint8)).save(path)
    path.write_bytes(path.read_bytes()[:300])
    return path


def _binary(path: Path) -> Path:
    path.write_bytes(bytes(range(256)) * 4)
    return path


@pytest.mark.parametrize("case", [pytest.param(case, id=case.id, marks=case.marks) for case in CASES])
def test_bad_input_gets_a_clear_error(case: Case, ctx: Ctx, capsys: pytest.CaptureFixture[str]) -> None:  # noqa: F811
    check_case(case, ctx, capsys)


def test_the_tables_hold_150_cases_with_unique_ids() -> None:
    from test_bad_inputs import CASES as FIRST

    ids = [case.id for case in (*FIRST, *CASES)]
    assert len(ids) == len(set(ids)), sorted(i for i in ids if ids.count(i) > 1)
    assert len(ids) >= 150, len(ids)


def test_the_docs_page_lists_every_case() -> None:
    from test_bad_inputs import CASES as FIRST

    page = (Path(__file__).resolve().parents[2] / "docs" / "bad_inputs.md").read_text()
    listed = re.findall(r"^\| `([a-z0-9_]+)` \|", page, re.MULTILINE)
    assert sorted(listed) == sorted(case.id for case in (*FIRST, *CASES)), \
        "docs/bad_inputs.md is out of date: run python scripts/bad_inputs_table.py"
