"""Settings read from files: checked against the declared types of their dataclass
(causal_vqvae.validation), with the file and the key named."""

from __future__ import annotations

import re
from dataclasses import dataclass

import pytest

from causal_vqvae.validation import (
    SettingsError,
    build_settings,
    check_settings,
    suggest,
)


@dataclass(frozen=True)
class Example:
    count: int = 1
    rate: float = 0.5
    name: str = "a"
    widths: tuple[int, ...] = (1, 2)
    cap: float | None = None
    flag: bool = False

    def __post_init__(self) -> None:
        if self.count < 1:
            raise ValueError(f"Example: count must be >= 1, got {self.count}")


def test_values_are_converted_as_declared_and_only_the_given_keys_come_back():
    checked = check_settings(Example, {"rate": 2, "widths": [3, 4], "cap": None}, "f.json")
    assert checked == {"rate": 2.0, "widths": (3, 4), "cap": None}
    assert isinstance(checked["rate"], float) and isinstance(checked["widths"], tuple)
    assert build_settings(Example, {"count": 3, "flag": True}, "f.json") == Example(count=3, flag=True)


@pytest.mark.parametrize(("data", "message"), [
    ({"count": "3"}, r"f\.json: key 'count': expected a whole number, got '3' \(a string\); write it without quotes"),
    ({"count": "three"}, r"key 'count': expected a whole number, got 'three' \(a string\)$"),
    ({"count": 2.5}, r"key 'count': expected a whole number, got 2\.5 \(a number\)"),
    ({"count": True}, r"key 'count': expected a whole number, got True \(a boolean\)"),
    ({"rate": "0.1"}, r"key 'rate': expected a number, got '0\.1' \(a string\); write it without quotes"),
    ({"flag": "true"}, r"key 'flag': expected true or false, got 'true'"),
    ({"flag": 1}, r"key 'flag': expected true or false, got 1"),
    ({"widths": 3}, r"key 'widths': expected a list, got 3 \(an integer\)"),
    ({"widths": [1, "x"]}, r"key 'widths\[1\]': expected a whole number, got 'x'"),
    ({"name": 4}, r"key 'name': expected a string, got 4"),
    ({"cuont": 3}, r"f\.json: unknown key 'cuont' \(did you mean 'count'\?\)"),
    ({"zzz": 3}, r"unknown key 'zzz'; the known keys are cap, count, flag, name, rate, widths"),
    ([1, 2], r"f\.json: expected a mapping of Example settings \(key: value\), got \[1, 2\] \(a list\)"),
])
def test_a_wrong_setting_is_named_with_its_file_and_key(data, message):
    with pytest.raises(SettingsError, match=message):
        check_settings(Example, data, "f.json")


def test_ranges_are_the_dataclass_own_and_fixed_keys_cannot_be_set():
    with pytest.raises(SettingsError, match=r"^f\.json: count must be >= 1, got 0$"):
        build_settings(Example, {"count": 0}, "f.json")
    with pytest.raises(SettingsError, match=r"f\.json: key 'name' cannot be set here.*remove it"):
        build_settings(Example, {"name": "b"}, "f.json", name="fixed")
    assert build_settings(Example, {"count": 2}, "f.json", name="fixed") == Example(count=2, name="fixed")


def test_suggestions_name_close_words_only():
    assert suggest("codebok_size", ["codebook_size", "code_dim"]) == " (did you mean 'codebook_size'?)"
    assert suggest("xyz", ["codebook_size"]) == ""


def test_a_yaml_config_reads_exponents_as_numbers(tmp_path):
    from causal_vqvae.training.presets import read_overrides

    path = tmp_path / "c.yaml"
    path.write_text("train:\n  causal_lr: 3e-3\n  vqvae_lr: 2.0E-3\n  causal_steps: 100\n")
    assert read_overrides(str(path)) == {"train": {"causal_lr": 0.003, "vqvae_lr": 0.002, "causal_steps": 100}}


def test_several_config_files_merge_key_by_key_in_order(tmp_path):
    from causal_vqvae.training.presets import read_overrides

    first, second = tmp_path / "a.json", tmp_path / "b.yaml"
    first.write_text('{"model": {"edit_loss_weight": 1000, "keep_threshold": 0.5}, "train": {"causal_lr": 0.001}}')
    second.write_text("model:\n  keep_threshold: 0.25\ndata:\n  renderer_version: '1'\n")
    assert read_overrides([str(first), str(second)]) == {
        "model": {"edit_loss_weight": 1000, "keep_threshold": 0.25},
        "train": {"causal_lr": 0.001},
        "data": {"renderer_version": "1"},
    }
    assert read_overrides([str(second), str(first)])["model"]["keep_threshold"] == 0.5
    empty, nulls = tmp_path / "empty.yaml", tmp_path / "nulls.yaml"
    empty.write_text("")
    nulls.write_text("model:\ntrain:\n")
    origins: dict[str, list[str]] = {}  # the files that set each section, for the run's range errors
    assert read_overrides([first, empty, nulls, second], origins) == read_overrides([str(first), str(second)])
    assert origins == {"model": [str(first), str(second)], "train": [str(first)], "data": [str(second)]}
    missing = tmp_path / "missing.json"
    with pytest.raises(SettingsError, match=rf"^--config {re.escape(str(missing))}: no such file"):
        read_overrides([str(first), str(missing)])


def test_config_is_repeatable_and_a_range_error_names_the_file_that_set_the_section(tmp_path, capsys):
    from causal_vqvae.cli.train import build_parser
    from causal_vqvae.cli.train import main as train_main

    assert build_parser().parse_args(["--data", "dsprites", "--config", "a", "--config", "b"]).config == ["a", "b"]
    model, train = tmp_path / "model.json", tmp_path / "train.json"
    model.write_text('{"model": {"keep_threshold": 0.5}}')
    train.write_text('{"train": {"causal_lr": -1.0}}')
    with pytest.raises(SystemExit):
        train_main(["--data", "dsprites", "--preset", "cpu-small", "--config", str(model), "--config", str(train),
                    "--out", str(tmp_path / "run"), "--max-steps", "1"])
    printed = capsys.readouterr().err
    assert f"--config {train}, train: causal_lr" in printed and str(model) not in printed
