"""The web editor (causal_vqvae.ui, causal-vqvae ui): its steps as plain functions, its command line,
and the page itself driven in a real headless Chromium through Playwright.

The browser test needs the optional Gradio and Playwright (``pip install -e ".[ui,uitest]"``) and
the system's Chromium (``apt-get install chromium``; Playwright's own browsers are never
downloaded). Without one of them it is skipped, saying which; with CAUSAL_VQVAE_REQUIRE_BROWSER=1
(set by CI, where they are installed) it fails instead, so it cannot be skipped unnoticed.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from causal_vqvae import edit, load
from causal_vqvae.cli.common import CommandExit
from causal_vqvae.cli.ui import main
from causal_vqvae.ui.app import (
    CSS,
    INPUT,
    apply_action,
    build_app,
    draw_sample,
    gallery,
    reset,
    retrieval,
    start,
    undo,
)

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = Path(__file__).resolve().parents[2]
REQUIRE_BROWSER = "CAUSAL_VQVAE_REQUIRE_BROWSER"
WAIT_MS = 30_000  # the longest wait for the page (a step takes well under a second on a CPU)


@pytest.fixture(scope="module")
def model():
    return load("dsprites_twin", device="cpu")


@pytest.fixture(scope="module")
def square() -> Image.Image:
    """A dSprites-like square: white on black, 64x64, gray (mode L)."""
    pixels = np.zeros((64, 64), np.uint8)
    pixels[22:38, 26:42] = 255
    return Image.fromarray(pixels)


def _same(a: Image.Image, b: Image.Image) -> bool:
    return a.mode == b.mode and a.size == b.size and np.array_equal(np.asarray(a), np.asarray(b))


# ------------------------------------------------------------------------------------- the steps
def test_each_action_edits_the_current_image_and_undo_and_reset_go_back(model, square):
    history = start(square)
    assert [name for name, _ in history] == [INPUT]
    one, notes = apply_action(history, "scale+", model)
    assert notes == []  # a dSprites-like image: no conversion, nothing unfamiliar
    assert _same(one[-1][1], edit(square, "scale+", model))
    two, _ = apply_action(one, "posX-", model)
    assert _same(two[-1][1], edit(edit(square, "scale+", model), "posX-", model))  # the shown image, edited
    assert [caption for _, caption in gallery(two)] == ["0: input", "1: scale+", "2: posX-"]
    assert undo(two) == one and undo(undo(two)) == history and undo(history) == history
    assert reset(two) == history and start(None) == [] and undo([]) == [] and reset([]) == []


def test_a_step_without_an_image_or_with_a_wrong_action_says_so(model, square):
    with pytest.raises(ValueError, match="no image to edit"):
        apply_action([], "scale+", model)
    with pytest.raises(ValueError, match="a factor, not an action"):
        apply_action(start(square), "scale", model)


def test_a_conversion_is_a_note_for_the_page(model, square):
    _, notes = apply_action(start(square.convert("RGB")), "scale+", model)
    assert len(notes) == 1 and "channel" in notes[0]


def test_a_sample_is_a_held_out_twin_image_picked_by_its_seed(model):
    first = draw_sample(model, 3)
    assert first.mode == "L" and first.size == (64, 64)
    assert _same(draw_sample(model, 3), first)
    assert any(not _same(draw_sample(model, seed), first) for seed in range(4, 8))


def test_retrieval_ranks_the_applied_action_first_and_draws_the_ranking(model, square):
    rows, picture, notes = retrieval(square, edit(square, "scale+", model), model, "test")
    assert rows[0][0] == "scale+" and len(rows) == 3 and notes == []
    assert float(rows[0][1]) > 0.5 and picture.mode == "RGB"
    with pytest.raises(ValueError, match="both images"):
        retrieval(square, None, model, "test")


# ------------------------------------------------------------------------------------- optional Gradio
def _quiet_run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          check=False)


def test_the_package_loads_no_gradio_and_the_command_help_neither_gradio_nor_torch():
    result = _quiet_run("import sys, causal_vqvae, causal_vqvae.ui\n"
                        "assert 'gradio' not in sys.modules, 'gradio was imported'\n")
    assert result.returncode == 0, result.stderr
    result = _quiet_run(
        "import sys\nfrom causal_vqvae.cli.ui import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit as stop:\n    assert stop.code == 0, stop.code\n"
        "assert 'gradio' not in sys.modules and 'torch' not in sys.modules, 'imported for --help'\n"
    )
    assert result.returncode == 0, result.stderr
    assert "--port PORT" in result.stdout and "--share" in result.stdout


def test_without_gradio_the_app_and_the_command_say_how_to_install_it(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "gradio", None)  # import gradio now fails, as when it is not installed
    with pytest.raises(ImportError, match=r'pip install "causal-vqvae\[ui\]"'):
        build_app()
    with pytest.raises(CommandExit) as stop:
        main(["--device", "cpu"], prog="causal-vqvae ui")
    assert stop.value.code == 2 and 'pip install "causal-vqvae[ui]"' in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [(["--port", "0"], "must be >= 1"),
                                           (["--port", "65536"], "at most 65535"),
                                           (["--device", "gpu"], "is not a device")])
def test_the_command_refuses_a_bad_flag_in_one_line(argv, message, capsys):
    with pytest.raises(SystemExit) as stop:
        main(argv, prog="causal-vqvae ui")
    err = capsys.readouterr().err
    assert stop.value.code == 2 and message in err and len(err.strip().splitlines()) == 1


# ------------------------------------------------------------------------------------- the page, in a browser
def _browser_or_skip():
    """Playwright's sync API and the system's Chromium, or a skip (a failure under
    CAUSAL_VQVAE_REQUIRE_BROWSER=1) saying what is missing."""
    missing = []
    try:
        import gradio  # noqa: F401
    except ImportError:
        missing.append('Gradio (pip install -e ".[ui]")')
    try:
        from playwright import sync_api
    except ImportError:
        sync_api = None
        missing.append('Playwright (pip install -e ".[uitest]")')
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        missing.append("a chromium on PATH (apt-get install chromium)")
    if missing:
        reason = "the browser test needs " + ", ".join(missing)
        if os.environ.get(REQUIRE_BROWSER, "") not in ("", "0"):
            pytest.fail(f"{reason}; {REQUIRE_BROWSER} is set, so it may not be skipped")
        pytest.skip(reason)
    return sync_api, chromium


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _next_result(page, before: str | None) -> tuple[str, Image.Image]:
    """Wait until the result shows another image than ``before`` (its address), then read it as a
    user gets it: through the result's download button."""
    page.wait_for_function("before => { const img = document.querySelector('#result img');"
                           " return img !== null && img.src !== '' && img.src !== before; }", arg=before)
    shown = page.locator("#result img").get_attribute("src")
    with page.expect_download() as download:
        page.locator("#result").get_by_role("button", name="Download").click()
    with Image.open(download.value.path()) as image:
        image.load()
        return shown, image


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::DeprecationWarning:gradio")  # Gradio's own, of pandas and starlette
def test_the_page_edits_step_by_step_and_undoes_in_a_real_browser(tmp_path, model, square):
    sync_api, chromium = _browser_or_skip()
    upload = tmp_path / "square.png"
    square.save(upload)
    with Image.open(upload) as given:
        expected = edit(given, "scale+", model)
    assert not _same(expected, square)

    app = build_app("dsprites_twin", device="cpu")
    _, url, _ = app.launch(server_name="127.0.0.1", server_port=_free_port(), prevent_thread_lock=True, quiet=True,
                           css=CSS)  # the page as causal-vqvae ui serves it
    try:
        with sync_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--headless=new"])
            try:
                page = browser.new_page(accept_downloads=True)
                page.set_default_timeout(WAIT_MS)
                page.goto(url)
                page.locator("#input input[type=file]").set_input_files(str(upload))
                at_input, shown = _next_result(page, None)
                assert _same(shown, square)

                page.get_by_role("button", name="scale+", exact=True).click()
                edited, shown = _next_result(page, at_input)
                assert _same(shown, expected), "the page's scale+ differs from causal_vqvae.edit's"
                sync_api.expect(page.locator("#history img")).to_have_count(2)  # waits for the gallery

                page.get_by_role("button", name="undo", exact=True).click()
                _, shown = _next_result(page, edited)
                assert _same(shown, square)
                sync_api.expect(page.locator("#history img")).to_have_count(1)
            finally:
                browser.close()
    finally:
        app.close(verbose=False)


def test_the_address_is_printed_as_one_json_line(monkeypatch, capsys):
    from causal_vqvae.ui import app

    class FakeApp:
        is_running = False

        def launch(self, **kwargs):
            self.kwargs = kwargs
            return None, "http://127.0.0.1:7999/", None

        def close(self, verbose=True):
            self.closed = True

    fake = FakeApp()
    built = {}
    monkeypatch.setattr(app, "build_app", lambda model, device, any_model: built.update(any_model=any_model) or fake)
    app.launch("dsprites_twin", device="cpu", port=7999, json_output=True)
    assert json.loads(capsys.readouterr().out) == {"url": "http://127.0.0.1:7999/", "share_url": None,
                                                   "model": "dsprites_twin", "device": "cpu"}
    assert fake.kwargs["server_port"] == 7999 and fake.closed
    assert built["any_model"] is True  # on this machine only: any folder may be loaded
    app.launch("dsprites_twin", device="cpu", host="0.0.0.0", port=7999, json_output=True)
    assert built["any_model"] is False  # served to the network: only the released models and this one


def test_a_page_served_beyond_its_machine_loads_only_its_own_models(model, tmp_path):
    pytest.importorskip("gradio")
    from causal_vqvae.ui.app import build_app

    page = build_app("dsprites_twin", any_model=False)
    load_event = next(fn for fn in page.fns.values() if getattr(fn, "name", "") == "on_load")
    loaded, status = load_event.fn(str(tmp_path), "dsprites_twin")
    assert loaded == "dsprites_twin" and "This page loads only dsprites_twin, shapes3d_twin" in status
