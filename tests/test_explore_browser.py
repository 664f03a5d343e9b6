"""latent-engine explore in a real browser: headless Chromium loads the page, moves a slider, sees the grid change.

Needs the distribution's Chromium (``apt-get install -y chromium``) and playwright-python (the test extra),
which drives that Chromium (no browser download); skipped cleanly where either is absent.
"""
from __future__ import annotations

import base64
import io
import shutil
import threading
from contextlib import contextmanager

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
def digits_path(tmp_path_factory):
    """A small digits store with an InterFaceGAN boundary and SeFa directions."""
    path = str(tmp_path_factory.mktemp("browser") / "digits.zarr")
    engine.sample(path, "digits", ["digits", "imagestats"], n=512, seed=0, chunk=512, batch=512, device="cpu",
                  spaces=["z", "w"], progress=False)
    engine.boundaries(path, space="w", attributes=["slant"], ratio=0.1)
    engine.sefa(generator="digits", store=path, k=3)
    return path


@contextmanager
def _served(path, **options):
    """The explorer of ``path``, served by waitress on a free loopback port in this process: its URL."""
    from waitress import create_server

    from engine.explore import Explorer
    from engine.explore.server import create_app

    explorer = Explorer(path, device="cpu", **options)
    httpd = create_server(create_app(explorer), host="127.0.0.1", port=0, threads=2)
    explorer.start()
    thread = threading.Thread(target=httpd.run, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.effective_port}/"
    finally:
        httpd.close()


@contextmanager
def _page():
    """A page of a headless Chromium, and the list its script errors are gathered in."""
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            yield page, errors
        finally:
            browser.close()


@pytest.fixture(scope="module")
def server(digits_path):
    with _served(digits_path) as url:
        yield url


def _pixels(data_url: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(data_url.split(",", 1)[1]))), np.int16)


def test_moving_a_slider_re_renders_the_grid(server, tmp_path):
    with _page() as (page, errors):
        page.goto(server)
        page.wait_for_selector("#loading", state="hidden", timeout=60_000)
        page.wait_for_selector("#directions details, #no-directions", timeout=60_000)   # listed after loading
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


def test_an_inverted_store_says_it_needs_directions_and_shows_those_of_direction_from(digits_path, tmp_path):
    images = engine.edit(digits_path, "sefa/layer_fc:0", alphas=[0, 0, 1], stored=True, samples=4)["images"][:, 0]
    np.save(tmp_path / "images.npy", images.numpy())
    inverted = str(tmp_path / "inverted.zarr")
    engine.invert(tmp_path / "images.npy", inverted, "digits", space="w", steps=3, keep_images=True, device="cpu",
                  progress=False)
    with _page() as (page, errors):
        with _served(inverted) as url:
            page.goto(url)
            page.wait_for_selector("#loading", state="hidden", timeout=60_000)
            page.wait_for_selector("#directions details, #no-directions", timeout=60_000)   # listed after loading
            assert "--direction-from" in page.inner_text("#no-directions")
        with _served(inverted, direction_from=digits_path) as url:
            page.goto(url)
            page.wait_for_selector("#loading", state="hidden", timeout=60_000)
            page.wait_for_selector("#directions details, #no-directions", timeout=60_000)   # listed after loading
            assert f"directions from {digits_path}" in page.inner_text("#store-line")
            assert page.query_selector("#no-directions") is None
            page.check('input[data-direction="interfacegan/slant@w:0"]')
            page.wait_for_selector("#panel-0[src^='data:image/png']")
            page.wait_for_selector("#targets-figure:not([hidden])")
        assert not errors, errors
