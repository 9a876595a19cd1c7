"""Write ``docs/bad_inputs.md``: every bad input and fault of the tests' tables
(``tests/cli/test_bad_inputs.py`` and ``tests/cli/test_bad_inputs_more.py``), each with the message
it gets today and the test that checks it.

    python scripts/bad_inputs_table.py            # writes docs/bad_inputs.md

Each case runs as its test runs it (a fresh folder, the tiny saved model, an empty cache), on the CPU.
The faults that need a process to be killed or a disk to fill are tested elsewhere and listed at the
end of the page by hand.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
import tempfile
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "tests" / "cli")]

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from causal_vqvae.files import write_text  # noqa: E402

FAULTS = [
    ("SIGKILL inside a checkpoint write, then `--resume last`", "the last complete checkpoint is whole; the resumed "
     "run ends with the unbroken run's weights", "tests/training/test_resume.py::test_a_run_killed_inside_a_"
     "checkpoint_write_or_a_model_save_resumes_to_the_unbroken_weights"),
    ("SIGKILL inside a stage's model save, then `--resume last`", "likewise", "the same test"),
    ("SIGKILL in each stage (and under DDP, in every process), then `--resume last`", "ends equal to an unbroken "
     "run", "tests/training/test_resume.py::test_a_run_killed_twice_and_resumed_ends_like_an_unbroken_one"),
    ("SIGKILL during a cache build", "no cache is left; the next run removes the leftover and builds it whole",
     "tests/data/test_cache.py::test_a_build_killed_midway_leaves_no_cache_and_the_next_run_builds_it_whole"),
    ("A full disk while a checkpoint is written (torch's own error, or an OSError)", "`cannot write the checkpoint "
     "...: <the error>; the last complete checkpoint is kept: make room (a full disk?), then continue with "
     "--resume last`",
     "tests/training/test_run_folder.py::test_a_full_disk_during_a_checkpoint_keeps_the_last_complete_one"),
    ("A damaged cache (8 kinds: meta.json missing, unreadable or of another version, an array missing or cut short, "
     "rows unlike meta.json)", "a warning naming the damage; the cache is built again",
     "tests/data/test_cache.py::test_a_damaged_cache_is_named_removed_and_built_again"),
    ("Two processes building one cache", "one builds, the other waits and reads it",
     "tests/data/test_cache.py::test_two_processes_build_a_shared_cache_once"),
    ("Two runs on one `--out`", "the second is refused with the first one's pid and host",
     "tests/training/test_run_folder.py::test_a_second_run_on_a_locked_folder_is_refused_with_its_holder"),
    ("An image unlike the training data", "`warning: the image looks unlike what this model was trained on ...`",
     "tests/api/test_familiarity.py"),
]


def run_case(case, module, model_dir: Path, model) -> str:
    """The message ``case`` gets, as its test reads it."""
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        patch = pytest.MonkeyPatch()
        patch.setenv("CAUSAL_VQVAE_CACHE", str(tmp / "cache"))
        patch.delenv("CAUSAL_VQVAE_DATA_ROOT", raising=False)
        image = tmp / "in.png"
        Image.fromarray(np.zeros((64, 64), np.uint8)).save(image)
        ctx = module.Ctx(tmp, model, model_dir, image, patch)
        err = io.StringIO()
        try:
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()), \
                    warnings.catch_warnings():
                warnings.simplefilter("ignore")
                call = case.arrange(ctx)
                try:
                    call()
                    message = "(no error)"
                except SystemExit as stop:
                    message = err.getvalue().strip() if isinstance(stop.code, int) else str(stop)
                except Exception as error:  # what the table expects: an exception with a message
                    message = str(error)
        finally:
            patch.undo()
            os.chdir(ROOT)
    message = message.replace(str(tmp), "TMP").replace(str(model_dir), "MODEL")
    return " ".join(message.split())


def cell(text: str, limit: int = 240) -> str:
    text = text if len(text) <= limit else text[:limit - 3] + "..."
    return text.replace("|", "\\|").replace("\n", " ")


def main() -> None:
    import test_bad_inputs as first
    import test_bad_inputs_more as more

    from causal_vqvae import CausalVQVAE, ModelConfig, load
    from tiny import TINY

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as folder:
        model_dir = Path(folder) / "dsprites"
        config = ModelConfig(in_channels=1, dataset="dsprites", num_actions=len(first.DSPRITES_ACTIONS),
                             action_names=first.DSPRITES_ACTIONS, **TINY)
        CausalVQVAE(config).save_pretrained(model_dir)
        model = load(model_dir, device="cpu")
        rows = []
        for module, path in ((first, "tests/cli/test_bad_inputs.py"), (more, "tests/cli/test_bad_inputs_more.py")):
            for case in module.CASES:
                if case.marks:  # e.g. skipped as root: listed, not run
                    rows.append((case.id, case.bad_input, "(run by the test where it applies)", path))
                    continue
                rows.append((case.id, case.bad_input, run_case(case, module, model_dir, model), path))
    lines = [
        "# Bad inputs and faults",
        "",
        "Every bad input tried against the Python API, the loaders, the dataset readers and the commands, with",
        "the message it gets (as it reads today: `TMP` is the test's folder, `MODEL` the saved model) and the",
        "test that checks the message says what was wrong and what to do, and that nothing was written or",
        "half-written. A command's mistake prints one line and exits with status 2; `CAUSAL_VQVAE_DEBUG=1`",
        "shows the traceback. Written by `python scripts/bad_inputs_table.py`.",
        "",
        f"{len(rows)} bad inputs, {len(FAULTS)} kinds of fault.",
        "",
        "| case | given | message | test |",
        "|---|---|---|---|",
    ]
    for case_id, given, message, path in rows:
        lines.append(f"| `{case_id}` | {cell(given, 120)} | {cell(message)} | `{path}` |")
    lines += ["", "## Faults", "", "| fault | what happens | test |", "|---|---|---|"]
    lines += [f"| {fault} | {what} | `{test}` |" for fault, what, test in FAULTS]
    out = ROOT / "docs" / "bad_inputs.md"
    write_text(out, "\n".join(lines) + "\n")
    print(f"wrote {out}: {len(rows)} bad inputs, {len(FAULTS)} faults")


if __name__ == "__main__":
    main()
