"""latent-engine explore in a real browser: headless Chromium loads the page, moves a slider, sees the grid change.

Needs the distribution's Chromium (``apt-get install -y chromium``) and playwright-python (the test extra),
which drives that Chromium (no browser download); skipped cleanly where either is absent.
"""
from __future__ import annotations

import base64
import io
import shutil
import threading

import numpy as np
import pytest
from PIL import Image

import engine

playwright = pytest.importorskip("playwright.sync_api", reason="playwright-python is not installed")
CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no Chromium on this machine (apt-get install chromium)")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The explorer of a small digits store, served by waitress on a free loopback port in this process."""
    from waitress import create_server

    from engine.explore import Explorer
    from engine.explore.server import create_app

    path = str(tmp_path_factory.mktemp("browser") / "digits.zarr")
    engine.sample(path, "digits", ["digits", "imagestats"], n=512, seed=0, chunk=512, batch=512, device="cpu",
                  spaces=["z", "w"], progress=False)
    engine.boundaries(path, space="w", attributes=["slant"], ratio=0.1)
    engine.sefa(generator="digits", store=path, k=3)
    explorer = Explorer(path, device="cpu")
    httpd = create_server(create_app(explorer), host="127.0.0.1", port=0, threads=2)
    explorer.start()
    thread = threading.Thread(target=httpd.run, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.effective_port}/"
    httpd.close()


def _pixels(data_url: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(data_url.split(",", 1)[1]))), np.int16)


def test_moving_a_slider_re_renders_the_grid(server, tmp_path):
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(server)
            page.wait_for_selector("#loading", state="hidden", timeout=60_000)
            assert "slant" in page.inner_text("#directions") and "SeFa" in page.inner_text("#directions")
            page.check('input[data-direction="interfacegan/slant@w:0"]')
            page.wait_for_selector("#panel-0[src^='data:image/png']")
            before = page.get_attribute("#panel-0", "src")
            assert before == page.get_attribute("#original", "src")           # α = 0: the unedited grid

            page.fill('input.alpha[data-direction="interfacegan/slant@w:0"]', "3")
            page.wait_for_function("b => document.querySelector('#panel-0').src !== b", arg=before, timeout=30_000)
            after = page.get_attribute("#panel-0", "src")
            assert np.abs(_pixels(after) - _pixels(before)).mean() > 1.0
            assert "3.0σ" in page.inner_text("#sliders")
            assert page.inner_text(".scores tr:nth-child(2) td:first-child") == "slant"   # most changed attribute
            page.screenshot(path=str(tmp_path / "explore.png"))
            assert not errors, errors
            assert page.is_hidden("#message")
        finally:
            browser.close()
