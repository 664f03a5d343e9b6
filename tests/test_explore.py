"""latent-engine explore: the JSON API (Flask's test client), the command, and the safety rules.

The edits are checked against ``engine.edit`` (same σ, same codes, same images) and against the combination
rule written out by hand; refusals are checked for their status and message.
"""
from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

import engine
from engine.cli import cli
from engine.explore import Explorer, check_host, is_loopback
from engine.explore.query import ALPHA_LIMIT, MAX_PANELS, MAX_SAMPLES
from engine.explore.server import create_app
from engine.explore.render import data_url, grid_png
from engine.store import Store
from tests.conftest import PLANTED_SMALL, ROOT


@pytest.fixture(scope="module")
def digits_store(tmp_path_factory):
    """A small digits store (z, w; digits + imagestats scores) with InterFaceGAN, SeFa and GANSpace directions."""
    path = str(tmp_path_factory.mktemp("explore") / "digits.zarr")
    engine.sample(path, "digits", ["digits", "imagestats"], n=1024, seed=0, chunk=512, batch=512, device="cpu",
                  spaces=["z", "w"], progress=False)
    engine.boundaries(path, space="w", attributes=["slant", "ink"], ratio=0.1)
    engine.sefa(generator="digits", store=path, k=4)
    engine.pca(path, array="latents/w", k=4)
    return path


@pytest.fixture(scope="module")
def explorer(digits_store):
    return Explorer(digits_store, device="cpu").load()


@pytest.fixture(scope="module")
def client(explorer):
    return create_app(explorer).test_client()


def _render(client, panels, **samples):
    body = {**(samples or {"rows": [0, 1, 2, 3]}), "panels": panels}
    return client.post("/api/render", json=body)


def _png(data_url: str) -> np.ndarray:
    import base64

    return np.asarray(Image.open(io.BytesIO(base64.b64decode(data_url.split(",", 1)[1]))))


def _codes(client, panels, panel=0, **samples):
    body = {**(samples or {"rows": [0, 1, 2, 3]}), "panels": panels}
    response = client.post(f"/api/codes?panel={panel}", json=body)
    assert response.status_code == 200, response.json
    return np.load(io.BytesIO(response.data))


# ------------------------------------------------------------------ what the page lists
def test_directions_are_grouped_by_method_with_the_reports_metrics(client, digits_store):
    from engine.methods import report_section

    groups = client.get("/api/directions").json
    by_method = {g["method"]: g for g in groups}
    assert {"interfacegan", "sefa", "ganspace"} <= set(by_method)
    assert by_method["sefa"]["title"] == "SeFa" and by_method["interfacegan"]["title"] == "InterFaceGAN"
    store = Store.open(digits_store)
    listed = {d["key"]: d for g in groups for d in g["directions"]}
    assert set(listed) == set(store.directions())
    for key, item in listed.items():
        values, attrs = store.read_direction(key)
        assert item["rows"] == values.shape[0] and item["editable"] and item["space"] == attrs["space"]
        assert item["metric"] == report_section(key, attrs).metric(store, key, attrs) != ""
    assert listed["ganspace/w"]["row_label"] == "component"


def test_store_and_status_say_what_is_loaded(client, digits_store):
    store = client.get("/api/store").json
    assert store["path"] == digits_store and store["n"] == 1024 and store["spaces"] == ["z", "w"]
    assert store["generator"] == "digits" and store["num_ws"] == 1 and store["inverted"] is False
    assert store["limits"]["samples"] == MAX_SAMPLES and store["note"] is None
    status = client.get("/api/status").json
    assert status["ready"] and status["error"] is None and status["done"] == status["total"]


def test_the_page_and_its_assets_are_served_from_the_package():
    from engine.explore.server import STATIC

    assert {p.name for p in STATIC.iterdir()} >= {"index.html", "app.js", "style.css"}
    app = create_app(Explorer.__new__(Explorer)).test_client()
    page = app.get("/")
    assert page.status_code == 200 and b"latent-engine explore" in page.data and b"/static/app.js" in page.data
    assert b"http" not in page.data.replace(b"http-equiv", b"")          # nothing from a CDN
    assert app.get("/static/app.js").status_code == 200
    assert app.get("/static/style.css").status_code == 200


# ------------------------------------------------------------------ edits
def test_a_w_move_matches_engine_edit_codes_sigma_and_images(client, digits_store, explorer):
    alpha = 2.5
    reference = engine.edit(digits_store, "interfacegan/slant@w", alphas=[alpha, alpha, 1], stored=True,
                            samples=4, device="cpu")
    response = _render(client, [[{"direction": "interfacegan/slant@w", "alpha": alpha}]])
    assert response.status_code == 200, response.json
    body = response.json
    assert body["rows"] == [0, 1, 2, 3]
    assert body["sigma"]["interfacegan/slant@w:0"] == pytest.approx(reference["sigma"], rel=1e-9)
    codes = _codes(client, [[{"direction": "interfacegan/slant@w", "alpha": alpha}]])
    assert codes.shape == (4, 1, 64)                                          # digits: one layer of w
    np.testing.assert_allclose(codes[:, 0], reference["codes"][:, 0], rtol=1e-5, atol=1e-5)
    expected = np.asarray(Image.open(io.BytesIO(grid_png(reference["images"][:, 0]))))
    np.testing.assert_allclose(_png(body["panels"][0]["image"]).astype(int), expected.astype(int), atol=1)


def test_images_change_with_alpha_and_repeat_exactly_for_the_same_request(client, digits_store):
    def image(alpha):
        response = _render(client, [[{"direction": "sefa/layer_fc:1", "alpha": alpha}]], random={"count": 6, "seed": 3})
        assert response.status_code == 200, response.json
        return response.json

    zero, one, again = image(0.0), image(1.0), image(1.0)
    assert zero["panels"][0]["image"] == zero["original"]                     # α = 0 is the unedited grid
    assert one["panels"][0]["image"] != zero["panels"][0]["image"]
    assert one == again
    fresh = create_app(Explorer(digits_store, device="cpu").load()).test_client()    # no cache shared
    assert _render(fresh, [[{"direction": "sefa/layer_fc:1", "alpha": 1.0}]],
                   random={"count": 6, "seed": 3}).json == one
    difference = np.abs(_png(one["panels"][0]["image"]).astype(int) - _png(zero["original"]).astype(int))
    assert difference.mean() > 1.0


def test_rescored_attributes_follow_the_edit(client):
    up = _render(client, [[{"direction": "interfacegan/slant@w", "alpha": 3.0}]], random={"count": 16, "seed": 1})
    scores = {s["attribute"]: s for s in up.json["panels"][0]["scores"]}
    assert set(scores) >= {"slant", "ink", "digit_0"}
    assert scores["slant"]["change"] > 0 and scores["slant"]["change_std"] > 0.5
    assert up.json["panels"][0]["scores"][0]["attribute"] == "slant"          # most changed first
    down = _render(client, [[{"direction": "interfacegan/slant@w", "alpha": -3.0}]], random={"count": 16, "seed": 1})
    assert {s["attribute"]: s for s in down.json["panels"][0]["scores"]}["slant"]["change"] < 0
    assert scores["slant"]["change"] == pytest.approx(scores["slant"]["after"] - scores["slant"]["before"])


def test_side_by_side_panels_equal_each_panel_alone(client):
    a = [{"direction": "sefa/layer_fc:0", "alpha": 2.0}]
    b = [{"direction": "ganspace/w:1", "alpha": -1.5}]
    both = _render(client, [a, b], rows=[5, 9, 700]).json
    assert both["panels"][0]["image"] == _render(client, [a], rows=[5, 9, 700]).json["panels"][0]["image"]
    assert both["panels"][1]["image"] == _render(client, [b], rows=[5, 9, 700]).json["panels"][0]["image"]
    assert both["panels"][0]["image"] != both["panels"][1]["image"]


def test_random_samples_are_distinct_committed_rows_fixed_by_the_seed(client):
    first = _render(client, [[]], random={"count": 8, "seed": 11}).json["rows"]
    assert first == _render(client, [[]], random={"count": 8, "seed": 11}).json["rows"]
    assert first != _render(client, [[]], random={"count": 8, "seed": 12}).json["rows"]
    assert len(set(first)) == 8 and all(0 <= r < 1024 for r in first)


@pytest.fixture(scope="module")
def planted_wp(tmp_path_factory):
    """A planted store with z, w and wp (4 layers) and directions in z (a boundary) and w (PCA)."""
    path = str(tmp_path_factory.mktemp("explore") / "planted.zarr")
    engine.sample(path, PLANTED_SMALL, ["planted"], n=600, seed=2, chunk=300, batch=300, device="cpu",
                  spaces=["z", "w", "wp"], progress=False)
    engine.boundaries(path, space="z", attributes=["age"], ratio=0.1)
    engine.pca(path, array="latents/w", k=3)
    engine.pca(path, array="latents/wp", k=2)
    return path


def test_moves_combine_z_first_then_each_w_move_on_its_layers(planted_wp):
    from engine.methods.editing import _reference_codes, direction_spread
    from engine.models.base import map_codes
    from engine.spaces import LatentSpace

    explorer = Explorer(planted_wp, device="cpu").load()
    client = create_app(explorer).test_client()
    assert "not pictures" in client.get("/api/store").json["note"]
    store = Store.open(planted_wp)
    G = explorer.G
    rows = [3, 4, 300]
    moves = [{"direction": "interfacegan/age", "alpha": 1.5},
             {"direction": "ganspace/w:1", "alpha": -2.0, "layers": "1-2"},
             {"direction": "ganspace/wp:0", "alpha": 0.5}]
    codes = _codes(client, [moves], rows=rows)

    def unit_and_sigma(key, row, space):
        n = store.read_direction(key)[0][row].astype(np.float64)
        n /= np.linalg.norm(n)
        return n, direction_spread(_reference_codes(store, space, G, "cpu"), n)

    nz, sz = unit_and_sigma("interfacegan/age", 0, LatentSpace("z"))
    nw, sw = unit_and_sigma("ganspace/w", 1, LatentSpace("w"))
    nwp, swp = unit_and_sigma("ganspace/wp", 0, LatentSpace("wp"))
    z = np.asarray(store.latent_array("z")[rows], np.float64) + 1.5 * sz * nz
    with torch.inference_mode():
        ws = map_codes(G, torch.from_numpy(z.astype(np.float32))).numpy().astype(np.float64)
    ws[:, 1:3] += -2.0 * sw * nw                       # planted does not truncate: w moves are plain shifts
    ws += (0.5 * swp * nwp).reshape(G.num_ws, G.w_dim)
    assert codes.shape == (3, G.num_ws, G.w_dim)
    np.testing.assert_allclose(codes, ws, rtol=1e-4, atol=1e-4)
    assert not np.allclose(codes[:, 0], ws[:, 0] + (-2.0 * sw * nw))      # layer 0 kept its code


def test_a_z_dependent_direction_moves_where_its_model_says(digits_store, monkeypatch):
    """direction_at is the one place a move's direction comes from: a model's .at(x, row) replaces the row."""
    import engine.explore.session as session

    class Rotating:
        def at(self, x, row):
            d = np.roll(x, 1, axis=1)
            return d / np.linalg.norm(d, axis=1, keepdims=True)

    explorer = Explorer(digits_store, device="cpu").load()
    monkeypatch.setattr(session, "_direction_model",
                        lambda store, key: Rotating() if key == "ganspace/w" else None)
    client = create_app(explorer).test_client()
    codes = _codes(client, [[{"direction": "ganspace/w:0", "alpha": 1.0}]])
    w = np.asarray(Store.open(digits_store).latent_array("w")[:4], np.float64)
    step = np.roll(w, 1, axis=1)
    step /= np.linalg.norm(step, axis=1, keepdims=True)
    np.testing.assert_allclose(codes[:, 0], w + explorer.sigma("ganspace/w", 0) * step, rtol=1e-5, atol=1e-5)


def test_a_latentclr_linear_direction_moves_each_code_as_engine_edit_moves_it(tmp_path):
    """A real z-dependent model (LatentCLR, linear): the page's moved codes are edit's x + α σ d(x)."""
    from engine.methods.latentclr import latentclr

    path = str(tmp_path / "clr.zarr")
    engine.sample(path, "digits", [], n=256, seed=0, chunk=256, batch=256, device="cpu", spaces=["z", "w"],
                  progress=False)
    latentclr(path, layer="up1", model="linear", k=2, batch=8, steps=5, save_every=5, progress=False)
    key = "latentclr/up1_linear"
    assert Store.open(path).read_direction(key)[1]["z_dependent"]
    explorer = Explorer(path, device="cpu").load()
    client = create_app(explorer).test_client()
    rows, alpha = [0, 1, 2, 3], 1.5
    reference = engine.edit(path, f"{key}:1", alphas=[alpha, alpha, 1], stored=True, samples=4, device="cpu")
    codes = _codes(client, [[{"direction": f"{key}:1", "alpha": alpha}]], rows=rows)
    assert explorer.sigma(key, 1) == pytest.approx(reference["sigma"], rel=1e-9)
    np.testing.assert_allclose(codes[:, 0], reference["codes"][:, 0], rtol=1e-5, atol=1e-5)
    w = np.asarray(Store.open(path).latent_array("w")[:4], np.float64)
    steps = codes[:, 0] - w
    steps /= np.linalg.norm(steps, axis=1, keepdims=True)
    assert np.abs(steps @ steps.T - 1).max() > 1e-4                   # each code moved its own way


def test_a_model_without_a_direction_at_a_code_leaves_that_code_unmoved(digits_store, monkeypatch):
    """model.at() is used as it is: a zero row (no direction there) moves nothing, where re-normalising it
    made the code NaN."""
    import engine.explore.session as session

    class ZeroAtFirst:
        def at(self, x, row):
            d = np.ones_like(x) / np.sqrt(x.shape[1])
            d[0] = 0
            return d

    monkeypatch.setattr(session, "_direction_model", lambda store, key: ZeroAtFirst() if key == "ganspace/w" else None)
    explorer = Explorer(digits_store, device="cpu").load()
    codes = _codes(create_app(explorer).test_client(), [[{"direction": "ganspace/w:0", "alpha": 2.0}]])
    w = np.asarray(Store.open(digits_store).latent_array("w")[:4], np.float64)
    assert np.isfinite(codes).all()
    np.testing.assert_allclose(codes[0, 0], w[0], atol=1e-6)
    np.testing.assert_allclose(codes[1:, 0], w[1:] + 2.0 * explorer.sigma("ganspace/w", 0) / 8.0, atol=1e-5)


def test_odd_digits_in_a_panel_index_or_a_huge_layer_number_are_a_400_not_a_500(client):
    body = {"rows": [0], "panels": [[]]}
    for panel in ("²", "١", "0" * 5000, "-1", "1"):
        response = client.post(f"/api/codes?panel={panel}", json=body)
        assert response.status_code == 400 and "panel must be an index from 0 to 0" in response.json["error"]
    for layers in ("1" * 5000, "0-" + "9" * 5000, "12345", "²"):
        move = {"direction": "sefa/layer_fc", "alpha": 1, "layers": layers}
        response = client.post("/api/render", json={"rows": [0], "panels": [[move]]})
        assert response.status_code == 400 and "layers must be 'A' or 'A-B'" in response.json["error"]


@pytest.mark.parametrize("host", ["127.0.0.1:8765", "localhost", "localhost:80", "[::1]:8765", "127.0.0.1"])
def test_requests_addressed_to_this_machine_are_answered(explorer, host):
    assert create_app(explorer).test_client().get("/api/status", headers={"Host": host}).status_code == 200


@pytest.mark.parametrize("host", ["evil.example:8765", "evil.example", "127.0.0.1.evil.example", "10.0.0.2:8765",
                                  "localhost.evil.example:8765", ""])
def test_requests_to_another_host_name_are_refused_unless_remote_is_allowed(explorer, host):
    """DNS rebinding: a page on evil.example whose name now resolves to 127.0.0.1 sends Host: evil.example."""
    refused = create_app(explorer).test_client().post("/api/render", json={"rows": [0], "panels": [[]]},
                                                      headers={"Host": host})
    assert refused.status_code == 403 and "is not this machine" in refused.json["error"]
    assert create_app(explorer).test_client().get("/", headers={"Host": host}).status_code == 403
    allowed = create_app(explorer, allow_remote=True).test_client()
    assert allowed.get("/api/status", headers={"Host": host or "x"}).status_code == 200


@pytest.fixture(scope="module")
def inverted_store(tmp_path_factory, digits_store):
    """A store made by ``engine.invert``: six images the digits GAN made, inverted into w (5 steps), targets
    kept; it holds no z, scores or directions of its own. Returns (path, w codes, targets)."""
    from engine.models.base import synthesize
    from engine.spaces import LatentSpace, synthesis_input

    folder = tmp_path_factory.mktemp("explore")
    G = engine.load_generator("digits")
    w = np.asarray(Store.open(digits_store).latent_array("w")[100:106], np.float32)
    with torch.no_grad():
        images = synthesize(G, synthesis_input(G, torch.from_numpy(w), LatentSpace("w"))).numpy()
    np.save(folder / "images.npy", images)
    store = engine.invert(folder / "images.npy", str(folder / "inverted.zarr"), "digits", space="w", steps=5,
                          keep_images=True, device="cpu", progress=False)
    assert store.directions() == [] and store.spaces == ["w"] and not store.attributes
    targets = np.asarray(store.array("inversion/targets")[:], np.float32)
    return store.path, np.asarray(store.latent_array("w")[:], np.float32), targets


def test_an_inverted_store_renders_what_engine_edit_renders_with_directions_from_a_sampled_store(
        inverted_store, digits_store):
    path, w, targets = inverted_store
    alone = create_app(Explorer(path, device="cpu").load()).test_client()
    assert alone.get("/api/directions").json == []                     # nothing of its own to move along
    explorer = Explorer(path, device="cpu", direction_from=digits_store).load()
    client = create_app(explorer).test_client()
    store = client.get("/api/store").json
    assert store["inverted"] and store["targets"] and store["spaces"] == ["w"] and store["n"] == 6
    assert store["direction_from"] == digits_store and store["noise_maps"] is False
    # the inverted store records no predictors: the sampled store's re-score its edits, and the page is told so
    assert store["predictors"] == ["digits", "imagestats"] and store["attributes"] == Store.open(digits_store).attributes
    listed = {d["key"]: d for g in client.get("/api/directions").json for d in g["directions"]}
    assert set(listed) == set(Store.open(digits_store).directions()) and listed["interfacegan/slant@w"]["editable"]
    rows, alpha = [0, 1, 2], 2.0
    reference = engine.edit(path, "interfacegan/slant@w", alphas=[alpha, alpha, 1], stored=True, samples=3,
                            device="cpu", direction_from=digits_store)
    body = _render(client, [[{"direction": "interfacegan/slant@w", "alpha": alpha}]], rows=rows).json
    assert body["rows"] == rows
    assert body["sigma"]["interfacegan/slant@w:0"] == pytest.approx(reference["sigma"], rel=1e-9)
    codes = _codes(client, [[{"direction": "interfacegan/slant@w", "alpha": alpha}]], rows=rows)
    np.testing.assert_allclose(codes[:, 0], reference["codes"][:, 0], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(_codes(client, [[]], rows=rows)[:, 0], w[rows], atol=1e-6)
    expected = np.asarray(Image.open(io.BytesIO(grid_png(reference["images"][:, 0]))))
    np.testing.assert_allclose(_png(body["panels"][0]["image"]).astype(int), expected.astype(int), atol=1)
    errors = np.asarray(Store.open(path).array("inversion/error")[:])
    assert body["inversion_error"] == pytest.approx(errors[rows].tolist())
    assert body["targets"] == data_url(grid_png(torch.from_numpy(targets[rows])))
    scores = {s["attribute"] for s in body["panels"][0]["scores"]}     # the sampled store's predictors re-score
    assert {"slant", "digit_0"} <= scores and scores == set(store["attributes"])


@pytest.fixture(scope="module")
def noise_store(tmp_path_factory):
    """Images inverted with their own noise maps (``optimize_noise``) by a random-weight 8×8 StyleGAN2 file, and
    a store sampled from the same file with one w direction: (inverted path, sampled path)."""
    from tests.stylegan2_checkpoints import rosinality_state

    folder = tmp_path_factory.mktemp("explore_noise")
    torch.save({"g_ema": rosinality_state(size=8, seed=4)}, folder / "g.pt")
    spec = f"stylegan2:{folder / 'g.pt'}"
    sampled = engine.sample(str(folder / "sampled.zarr"), spec, [], n=16, chunk=16, spaces=["w"], progress=False)
    w_dim = engine.load_generator(spec).w_dim
    Store.open(sampled.path, mode="r+").write_direction("custom", "d", np.eye(1, w_dim, dtype=np.float32),
                                                        {"space": "w"})
    np.save(folder / "images.npy", np.random.default_rng(0).integers(0, 256, (2, 8, 8, 3), dtype=np.uint8))
    inverted = engine.invert(folder / "images.npy", folder / "inverted.zarr", spec, steps=1, optimize_noise=True,
                             device="cpu", progress=False)
    assert inverted.noise_layers()
    return inverted.path, sampled.path


def test_the_page_is_told_when_codes_download_as_npz_with_noise_maps(noise_store, client):
    inverted, sampled = noise_store
    assert client.get("/api/store").json["noise_maps"] is False
    with_maps = create_app(Explorer(inverted, device="cpu", direction_from=sampled).load()).test_client()
    assert with_maps.get("/api/store").json["noise_maps"] is True
    download = with_maps.post("/api/codes?panel=0", json={"rows": [0], "panels": [[{"direction": "custom/d",
                                                                                     "alpha": 1}]]})
    assert download.headers["Content-Disposition"].endswith(".npz")       # what the flag promises


def test_the_download_link_names_the_file_it_gives(noise_store, digits_store):
    """In Chromium (skipped without it): the link says .npz for a store with noise maps, .npy otherwise."""
    from tests.test_explore_browser import _page, _served

    inverted, sampled = noise_store
    with _page() as (page, errors):
        for path, options, direction, text in ((inverted, {"direction_from": sampled}, "custom/d:0",
                                                "download codes + noise maps .npz"),
                                               (digits_store, {}, "interfacegan/slant@w:0", "download codes .npy")):
            with _served(path, **options) as url:
                page.goto(url)
                page.wait_for_selector("#loading", state="hidden", timeout=60_000)
                page.wait_for_selector("#directions details", timeout=60_000)
                page.check(f'input[data-direction="{direction}"]')
                page.wait_for_selector("#panel-0[src^='data:image/png']")
                assert text in page.inner_text(".panel-tools")
        assert not errors, errors


def test_directions_from_a_store_of_another_generator_are_refused(inverted_store, planted_wp):
    with pytest.raises(ValueError, match="direction_from .* was made with generator"):
        Explorer(inverted_store[0], device="cpu", direction_from=planted_wp)
    out = CliRunner().invoke(cli, ["explore", inverted_store[0], "--direction-from", planted_wp, "--port", "0"])
    assert out.exit_code != 0 and "was made with generator" in out.output and "Traceback" not in out.output


def test_a_store_of_wp_codes_only_starts_from_them_and_moves_w_directions_on_their_layers(planted_wp, tmp_path):
    source = Store.open(planted_wp)
    wp = np.asarray(source.latent_array("wp")[:10])
    path = str(tmp_path / "wp_only.zarr")
    G = engine.load_generator(PLANTED_SMALL)

    def fill(store):
        store.write_chunk(0, {"latents/wp": wp})

    Store.create(path, n=10, chunk=10, w_dim=G.w_dim, num_ws=G.num_ws, spaces=["wp"], fill=fill,
                 meta={"generator": PLANTED_SMALL, "predictors": ["planted"], "seed": 0},
                 sources={"wp": {"kind": "inverted", "source": "inverted"}})
    values, attrs = source.read_direction("ganspace/w")
    Store.open(path, mode="r+").write_direction("ganspace", "w", values, attrs)
    explorer = Explorer(path, device="cpu").load()
    client = create_app(explorer).test_client()
    np.testing.assert_array_equal(_codes(client, [[]], rows=[2, 7]), wp[[2, 7]])
    moved = _codes(client, [[{"direction": "ganspace/w:0", "alpha": 2.0, "layers": "2-3"}]], rows=[2, 7])
    expected = wp[[2, 7]].astype(np.float64)
    n = values[0] / np.linalg.norm(values[0])
    expected[:, 2:4] += 2.0 * explorer.sigma("ganspace/w", 0) * n
    np.testing.assert_allclose(moved, expected, rtol=1e-5, atol=1e-5)


def test_a_truncated_w_plus_generator_renders_what_engine_edit_renders_on_a_layer_range(tmp_path):
    """A StyleGAN2 file (num_ws > 1, truncation on the first layers): a w move on layers 1-4 gives the images
    ``engine.edit`` gives for the same α, σ and layers (its w codes truncated on the way, as mapping did)."""
    from tests import stylegan2_checkpoints as sg2files

    state = sg2files.rosinality_state(size=16, seed=1)
    latent_avg = torch.randn(32, generator=torch.Generator().manual_seed(4))
    torch.save({"g_ema": state, "latent_avg": latent_avg, "args": {"size": 16}}, tmp_path / "ros.pt")
    spec = f"stylegan2:{tmp_path / 'ros.pt'},truncation=0.5,truncation_cutoff=3"
    path = str(tmp_path / "sg2.zarr")
    engine.sample(path, spec, ["imagestats"], n=64, seed=0, chunk=64, batch=64, device="cpu", spaces=["z", "w"],
                  progress=False)
    engine.pca(path, array="latents/w", k=2)
    explorer = Explorer(path, device="cpu").load()
    assert explorer.G.num_ws > 5
    client = create_app(explorer).test_client()
    body = _render(client, [[{"direction": "ganspace/w:0", "alpha": 2.0, "layers": "1-4"}]],
                   rows=[0, 1, 2]).json
    reference = engine.edit(path, "ganspace/w:0", alphas=[2.0, 2.0, 1], stored=True, samples=3, layers="1-4",
                            device="cpu")
    expected = np.asarray(Image.open(io.BytesIO(grid_png(reference["images"][:, 0]))))
    np.testing.assert_allclose(_png(body["panels"][0]["image"]).astype(int), expected.astype(int), atol=1)
    assert body["panels"][0]["image"] != body["original"]


def test_grids_enlarge_small_images_shrink_large_ones_and_fill_the_last_row():
    from engine.explore.render import CELL, COLUMNS, MAX_CELL

    small = torch.linspace(-1, 1, 5 * 16 * 16).reshape(5, 1, 16, 16)
    grid = np.asarray(Image.open(io.BytesIO(grid_png(small))))
    rows = -(-5 // COLUMNS)
    assert grid.shape == (rows * (CELL + 2) + 2, COLUMNS * (CELL + 2) + 2, 3)
    cell = grid[2:2 + CELL, 2:2 + CELL, 0].astype(int)           # first image, enlarged by pixel repetition
    expected = np.clip((small[0, 0].numpy() + 1) * 127.5 + 0.5, 0, 255).astype(int)
    np.testing.assert_array_equal(cell[::CELL // 16, ::CELL // 16], expected)
    assert (grid[-CELL - 2:-2, -CELL - 2:-2] == 255).all()          # the empty places of the last row are blank
    large = torch.zeros(2, 3, 512, 512)
    assert np.asarray(Image.open(io.BytesIO(grid_png(large)))).shape == (MAX_CELL + 4, 2 * (MAX_CELL + 2) + 2, 3)


# ------------------------------------------------------------------ refusals
@pytest.mark.parametrize("body, status, message", [
    ({"rows": [0], "panels": [[{"direction": "nosuch/thing", "alpha": 1}]]}, 404, "unknown direction 'nosuch/thing'"),
    ({"rows": [0], "panels": [[{"direction": "sefa/layer_fc:4", "alpha": 1}]]}, 400, "has 4 rows"),
    ({"rows": [0], "panels": [[{"direction": "../../etc/passwd", "alpha": 1}]]}, 400, "direction must be"),
    ({"rows": [0], "panels": [[{"direction": "sefa/layer_fc", "alpha": ALPHA_LIMIT + 1}]]}, 400, "alpha must be"),
    ({"rows": [0], "panels": [[{"direction": "sefa/layer_fc", "alpha": "3"}]]}, 400, "alpha must be"),
    ({"rows": [0], "panels": [[{"direction": "sefa/layer_fc", "alpha": True}]]}, 400, "alpha must be"),
    ({"rows": [1024], "panels": [[]]}, 400, "row must be an integer from 0 to 1023"),
    ({"rows": [-1], "panels": [[]]}, 400, "row must be"),
    ({"rows": [], "panels": [[]]}, 400, "rows must be a non-empty list"),
    ({"rows": list(range(MAX_SAMPLES + 1)), "panels": [[]]}, 413, f"at most {MAX_SAMPLES} samples"),
    ({"random": {"count": 10_000, "seed": 0}, "panels": [[]]}, 413, "at most"),
    ({"random": {"count": 4, "seed": -2}, "panels": [[]]}, 400, "seed must be"),
    ({"rows": [0], "panels": [[]] * (MAX_PANELS + 1)}, 413, "panels side by side"),
    ({"rows": [0], "panels": [[{"direction": "sefa/layer_fc", "alpha": 0}]] * 1 + [[{"direction": "sefa/layer_fc", "alpha": 0}] * 5]}, 413, "at most 4 directions"),
    ({"rows": [0], "panels": [[{"direction": "sefa/layer_fc", "alpha": 1, "layers": "0-3"}]]}, 400, "layers 0-3 must lie in 0-0"),
    ({"rows": [0], "panels": [[{"direction": "sefa/layer_fc", "alpha": 1, "layers": "x"}]]}, 400, "layers must be"),
    ({"rows": [0], "panels": "all"}, 400, "panels must be"),
    ([1, 2], 400, "JSON object"),
])
def test_bad_render_requests_get_a_4xx_and_a_message(client, body, status, message):
    response = client.post("/api/render", json=body)
    assert response.status_code == status, response.json
    assert message in response.json["error"]


def test_paths_outside_the_package_and_odd_requests_are_refused(client, tmp_path):
    for path in ("/static/../setup.py", "/static/..%2f..%2fsetup.py", "/static/%2e%2e/__init__.py",
                 "/static//etc/passwd", "/../../etc/passwd", "/api/nothing", "/api/render/../../setup.py"):
        response = client.get(path, follow_redirects=True)        # '//' is redirected to '/', then refused
        assert response.status_code == 404, path
        assert b"import" not in response.data and b"root:" not in response.data
        assert "error" in response.json
    assert client.get("/api/render").status_code == 405
    not_json = client.post("/api/render", data="rows=1", content_type="text/plain")
    assert not_json.status_code == 400 and "JSON" in not_json.json["error"]
    huge = client.post("/api/render", data=b"[" + b"0," * 40_000 + b"0]", content_type="application/json")
    assert huge.status_code == 413
    assert client.post("/api/codes?panel=3", json={"rows": [0], "panels": [[]]}).status_code == 400


def test_requests_before_the_generator_is_loaded_get_503_with_the_stage(digits_store):
    explorer = Explorer(digits_store, device="cpu")
    client = create_app(explorer).test_client()
    assert client.get("/api/status").json["ready"] is False
    response = _render(client, [[]])
    assert response.status_code == 503 and "still loading" in response.json["error"]
    broken = Explorer(digits_store, generator="nosuchmodel", device="cpu")
    broken.start().join(60)
    status = create_app(broken).test_client().get("/api/status").json
    assert status["stage"] == "failed" and "nosuchmodel" in status["error"]
    assert create_app(broken).test_client().post("/api/render", json={"panels": [[]]}).status_code == 503


def test_predictors_that_cannot_be_built_leave_the_edits_without_scores(inverted_store, digits_store, tmp_path):
    import shutil

    import zarr

    path = str(tmp_path / "copy.zarr")
    shutil.copytree(inverted_store[0], path)
    group = zarr.open_group(path, mode="r+")
    meta = dict(group.attrs["latent_engine"])
    group.attrs["latent_engine"] = {**meta, "predictors": ["nosuchpredictor"]}
    client = create_app(Explorer(path, device="cpu", direction_from=digits_store).load()).test_client()
    assert "nosuchpredictor" in client.get("/api/store").json["predictor_error"]
    body = _render(client, [[{"direction": "sefa/layer_fc:0", "alpha": 1.0}]], rows=[0]).json
    assert body["panels"][0]["scores"] == [] and body["panels"][0]["image"] != body["original"]


def test_exploring_never_writes_to_the_store(digits_store, client):
    def snapshot():
        return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in Path(digits_store).rglob("*")}

    before = snapshot()
    _render(client, [[{"direction": "ganspace/w:2", "alpha": 4.0}]], random={"count": 8, "seed": 99})
    _codes(client, [[{"direction": "ganspace/w:2", "alpha": 4.0}]])
    assert snapshot() == before
    assert Store.open(digits_store).mode == "r"


# ------------------------------------------------------------------ host and command line
@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "localhost", "::1", "[::1]"])
def test_loopback_hosts_are_served_without_a_flag(host):
    assert is_loopback(host) and check_host(host) == host


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.4", "example.org"])
def test_other_hosts_need_allow_remote(host):
    with pytest.raises(ValueError, match="allow_remote"):
        check_host(host)
    assert check_host(host, allow_remote=True) == host


def test_the_command_refuses_a_remote_host_and_a_missing_store_in_one_line(digits_store, tmp_path):
    result = CliRunner().invoke(cli, ["explore", digits_store, "--host", "0.0.0.0"])
    assert result.exit_code == 1 and "--allow-remote" in result.output and "Traceback" not in result.output
    result = CliRunner().invoke(cli, ["explore", str(tmp_path / "none.zarr"), "--port", "0"])
    assert result.exit_code == 1 and "no store at" in result.output
    assert len(result.output.strip().splitlines()) == 1
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = CliRunner().invoke(cli, ["explore", digits_store, "--port", str(port), "--device", "cpu"])
    assert result.exit_code == 1 and f"--port {port} on 127.0.0.1 is in use" in result.output


def test_the_command_serves_the_page_on_loopback_until_stopped(digits_store):
    proc = subprocess.Popen([sys.executable, "-m", "engine", "explore", digits_store, "--port", "0",
                             "--device", "cpu"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        line = proc.stdout.readline()
        assert "http://127.0.0.1:" in line, line + proc.stderr.read()
        url = line.split(" at ", 1)[1].split()[0]
        deadline = time.time() + 60
        while time.time() < deadline:
            status = json.load(urllib.request.urlopen(url + "api/status", timeout=5))
            if status["ready"] or status["error"]:
                break
            time.sleep(0.2)
        assert status["ready"], status
        page = urllib.request.urlopen(url, timeout=5).read()
        assert b"latent-engine explore" in page
        request = urllib.request.Request(url + "api/render", method="POST", headers={"Content-Type": "application/json"},
                                         data=json.dumps({"rows": [0, 1], "panels": [[{"direction": "sefa/layer_fc", "alpha": 2}]]}).encode())
        body = json.load(urllib.request.urlopen(request, timeout=30))
        assert body["rows"] == [0, 1] and body["panels"][0]["image"].startswith("data:image/png;base64,")
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert proc.returncode in (0, -signal.SIGINT)


def test_the_demo_prints_the_command_that_explores_its_store(monkeypatch, tmp_path):
    import engine.demonstration

    store = str(tmp_path / "demo.zarr")
    fake = {"store": store, "report": str(tmp_path / "report/index.html"), "timings": {"sample": 1.0},
            "val_accuracy": {"slant": 0.9}, "mean_val_accuracy": 0.9, "directions": ["interfacegan/slant@w"]}
    monkeypatch.setattr(engine.demonstration, "demo", lambda *a, **k: fake)
    result = CliRunner().invoke(cli, ["demo", str(tmp_path), "-q"])
    assert result.exit_code == 0, result.output
    assert f"latent-engine explore {store}" in result.output
