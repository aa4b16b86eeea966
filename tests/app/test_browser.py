"""`p2p ui` in a real browser: Debian's Chromium, driven by Playwright through its executable path, types an inline
edit, presses Run, and gets the pictures `p2p edit` writes for the command line the page shows. The screenshot goes
to the test's folder; P2P_UI_SCREENSHOT=docs/images/ui.png remakes README's. Needs `apt-get install chromium` and
`pip install playwright` (never `playwright install`: its own browser download is not used)."""

from __future__ import annotations

import importlib.util
import io
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

# Found, not imported: gradio takes seconds to import, and collection runs in every test worker; the app
# imports it when a test starts it.
if importlib.util.find_spec("gradio") is None:
    pytest.skip("the ui extra (pip install 'p2p-cli[ui]') is not installed", allow_module_level=True)
playwright = pytest.importorskip("playwright.sync_api", reason="playwright is not installed: pip install playwright")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None, reason="no chromium on PATH: apt-get install -y chromium (Debian)"),
]

ROOT = Path(__file__).resolve().parents[2]
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
PROMPT = "a big [red->green] circle and a small blue square on a white background"


def test_an_inline_edit_in_the_browser_gives_the_pictures_of_the_cli(tmp_path):
    from typer.testing import CliRunner

    from p2p_cli.app import launch
    from p2p_cli.cli.main import app as cli_app

    started = time.perf_counter()
    served = launch(block=False, quiet=True)
    profile = tempfile.mkdtemp(prefix="p2p-chromium-")
    try:
        with playwright.sync_playwright() as p:
            browser = p.chromium.launch_persistent_context(
                profile, executable_path=CHROMIUM, headless=True, args=FLAGS,
                viewport={"width": 1280, "height": 880})
            page = browser.new_page()
            page.goto(served.local_url)
            box = page.get_by_label("Prompt with inline edits")
            box.fill("a big [red->green circle")  # half typed: the page shows validate's line, not a traceback
            recipe = page.locator("#p2p-recipe")
            recipe.get_by_text("--prompt: invalid recipe (1 problem)").wait_for(timeout=15000)
            box.fill(PROMPT)
            recipe.get_by_text("source: a big red circle and a small blue square").wait_for(timeout=15000)
            page.get_by_role("radio", name="shapes-mmdit").check()
            page.get_by_role("button", name="Run").click()
            pictures = page.locator("#p2p-gallery img")
            pictures.nth(2).wait_for(timeout=120000)
            command = page.locator("#p2p-command textarea").input_value()
            shown = [Image.open(io.BytesIO(page.request.get(pictures.nth(k).get_attribute("src")).body()))
                     for k in range(3)]
            page.evaluate("window.scrollTo(0, 0)")
            page.mouse.move(0, 0)
            page.wait_for_timeout(500)  # let the slider and the file list settle
            screenshot = Path(os.environ.get("P2P_UI_SCREENSHOT") or tmp_path / "ui.png")
            screenshot.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(screenshot))
            browser.close()
    finally:
        served.close()
        shutil.rmtree(profile, ignore_errors=True)
    print(f"browser test: {time.perf_counter() - started:.1f} s to the screenshot")
    assert Image.open(screenshot).size[0] > 0

    assert command.startswith(f"p2p edit --prompt '{PROMPT}' --model shapes-mmdit --seed 1 --steps 50")
    import shlex

    out = tmp_path / "cli"
    done = CliRunner().invoke(cli_app, shlex.split(command)[1:] + ["--out", str(out), "--quiet"])
    assert done.exit_code == 0, done.output
    (folder,) = list(out.iterdir())
    for picture, role in zip(shown, ["source", "edit-1", "baseline-1"]):
        expected = np.asarray(Image.open(folder / f"{role}.png").convert("RGB"))
        # The app runs in gradio's worker thread, whose OpenMP pool is not the main thread's: the float sums can
        # round differently, which moves a value across an 8-bit step now and then (seen: 1 value of 12288 off by
        # one). The in-process app tests (tests/app/test_app.py) check exact equality on one thread.
        diff = np.abs(np.asarray(picture.convert("RGB")).astype(int) - expected.astype(int))
        assert diff.max() <= 1 and (diff > 0).mean() < 1e-3, (role, diff.max(), (diff > 0).mean())
