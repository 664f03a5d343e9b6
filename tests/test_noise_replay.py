"""Inverted stores with per-image noise maps: every command that renders their stored codes replays the maps.

The fixture store is written here, as ``engine.methods.inversion.prepare_inverted_store`` lays one out, with
random codes, random N(0, 1) noise maps and, as ``inversion/error``, the true pixel MSE of each row's rendering
with its maps against targets kept by the test: so the stored error is reproduced only by a rendering that uses
the maps (without them, the images differ).
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

import engine
from engine.cli import cli
from engine.explore.query import Move, RenderRequest, Samples
from engine.explore.render import grid_png
from engine.explore.session import Explorer
from engine.models.base import noise_inputs, synthesize
from engine.models.registry import load_generator
from engine.reporting import reconstructions, report
from engine.spaces import LatentSpace, codes_from_z, synthesis_input
from engine.store import Store, StoreError

ROWS, CHUNK = 6, 3
DIRECTION = "custom/d"                  # in w; "custom/dp" is its W+ twin, for stores of wp codes


@pytest.fixture(scope="module")
def generator(tmp_path_factory, one_torch_thread):
    """(spec, G, folder): a random-weight 16×16 StyleGAN2 file (rosinality's layout), with noise inputs."""
    from tests.stylegan2_checkpoints import rosinality_state

    folder = tmp_path_factory.mktemp("replay")
    torch.save({"g_ema": rosinality_state(size=16, seed=2)}, folder / "g.pt")
    spec = f"stylegan2:{folder / 'g.pt'}"
    G = load_generator(spec)
    assert len(noise_inputs(G)) > 2
    return spec, G, folder


@pytest.fixture(scope="module")
def directions(generator):
    """A sampled store of the same generator holding a w and a wp direction (what an inverted store is edited
    with)."""
    spec, G, folder = generator
    sampled = engine.sample(str(folder / "sampled.zarr"), spec, [], n=16, chunk=16, spaces=["w"], progress=False)
    writable = Store.open(sampled.path, mode="r+")
    rng = np.random.default_rng(1)
    for name, space, size in (("d", "w", G.w_dim), ("dp", "wp", G.num_ws * G.w_dim)):
        n = rng.standard_normal((1, size)).astype(np.float32)
        writable.write_direction("custom", name, n / np.linalg.norm(n), {"space": space})
    return sampled.path


def _codes(G, space: str, count: int) -> np.ndarray:
    """``count`` codes of ``space`` near the generator's own (mapped seeded draws, jittered per layer in wp)."""
    z = np.random.default_rng(3).standard_normal((count, G.z_dim)).astype(np.float32)
    if space == "z":
        return z
    w, ws = codes_from_z(G, z, LatentSpace(space), "cpu")
    if space == "w":
        return w.astype(np.float32)
    return (ws + 0.1 * np.random.default_rng(4).standard_normal(ws.shape)).astype(np.float32)


def _render(G, space: str, codes: np.ndarray, maps: list[torch.Tensor] | None) -> torch.Tensor:
    with torch.inference_mode():
        x = torch.from_numpy(codes.reshape(len(codes), -1))
        return synthesize(G, synthesis_input(G, x, LatentSpace(space)), noise_maps=maps).float()


def _inverted_store(path, spec: str, G, space: str, noise_layers=None) -> dict:
    """An inverted store as ``prepare_inverted_store`` lays it out, with codes, random noise maps and the true
    error of each row's rendering with its maps; returns what the test keeps (codes, maps, targets, errors)."""
    layers = list(noise_inputs(G)) if noise_layers is None else noise_layers
    shape = tuple(_render(G, space, _codes(G, space, 1), None).shape[1:])
    meta = {"seed": 0, "generator": spec, "predictors": [], "generator_file": dict(G.provenance),
            "inversion": {"settings": {"space": space, "steps": 10, "restarts": 1}, "image_shape": list(shape),
                          "images": {"kind": "npy", "path": "targets.npy"}, "keep_images": True}}
    source = {"kind": "inverted", "source": "inverted", "generator": spec, "images": meta["inversion"]["images"],
              "seed": 0, "steps": 10, "restarts": 1, "feature_loss": None}
    store = Store.create(str(path), n=ROWS, chunk=CHUNK, z_dim=G.z_dim if space == "z" else None,
                         w_dim=G.w_dim if space != "z" else None, num_ws=G.num_ws if space == "wp" else None,
                         spaces=[space], meta=meta, sources={space: source},
                         fill=lambda created: created.add_inversion_arrays(shape, layers))
    rng = np.random.default_rng(5)
    codes = _codes(G, space, ROWS)
    maps = [torch.from_numpy(rng.standard_normal((ROWS, 1, r, r)).astype(np.float32)) for _, r in layers]
    targets = _render(G, space, _codes(G, space, ROWS)[::-1].copy(), None)       # other images: errors ≫ 0
    images = _render(G, space, codes, maps if noise_layers is None else None)
    errors = (images - targets).square().flatten(1).mean(1).numpy()
    for index in range(ROWS // CHUNK):
        rows = slice(index * CHUNK, (index + 1) * CHUNK)
        store.write_chunk(index, {f"latents/{space}": codes[rows], "inversion/error": errors[rows],
                                  "inversion/files": np.array([f"img{i}.png" for i in range(ROWS)])[rows],
                                  "inversion/targets": targets[rows].numpy(),
                                  **{f"inversion/noise/{name}": m[rows].numpy() for (name, _), m in zip(layers, maps)}})
    return {"path": store.path, "codes": codes, "maps": maps, "targets": targets, "errors": errors, "images": images}


@pytest.fixture(scope="module", params=["w", "wp", "z"])
def inverted(request, generator):
    spec, G, folder = generator
    space = request.param
    return _inverted_store(folder / f"inv_{space}.zarr", spec, G, space) | {
        "space": space, "direction": DIRECTION + ("p" if space == "wp" else ""),
        "moved_in": "wp" if space == "wp" else "w"}


def _mse(images: torch.Tensor, targets: torch.Tensor) -> np.ndarray:
    return (images.float() - targets).square().flatten(1).mean(1).numpy()


def test_edit_stored_at_alpha_0_regenerates_each_row_with_its_maps(generator, directions, inverted):
    _, G, _ = generator
    result = engine.edit(inverted["path"], inverted["direction"], direction_from=directions, stored=True,
                         samples=ROWS, alphas="-2,2,3")
    assert result["alphas"][1] == 0
    at_zero = result["images"][:, 1]
    np.testing.assert_allclose(_mse(at_zero, inverted["targets"]), inverted["errors"], rtol=1e-5, atol=1e-7)
    without = _render(G, inverted["space"], inverted["codes"], None)
    assert (at_zero - without).abs().amax(dim=(1, 2, 3)).min() > 0.05          # the maps really matter, per row


def test_edits_away_from_alpha_0_keep_each_rows_maps(generator, directions, inverted):
    _, G, _ = generator
    result = engine.edit(inverted["path"], inverted["direction"], direction_from=directions, stored=True,
                         samples=4, alphas="-3,3,2", batch=2)     # 3 images a row: batches cut through its edits
    maps = [m[:4] for m in inverted["maps"]]
    for a in range(2):
        expected = _render(G, inverted["moved_in"], result["codes"][:, a], maps)   # the direction's space
        np.testing.assert_allclose(result["images"][:, a].numpy(), expected.numpy(), atol=2e-5)
        assert (result["images"][:, a] - _render(G, inverted["moved_in"], result["codes"][:, a], None)).abs().max() \
            > 0.05


def test_drawn_codes_of_an_inverted_store_use_the_generators_own_noise(generator, directions, inverted):
    _, G, _ = generator
    drawn = engine.edit(inverted["path"], DIRECTION, direction_from=directions, samples=2, alphas="0,0,1")
    reference = engine.edit(directions, DIRECTION, samples=2, alphas="0,0,1")   # the same draws, a sampled store
    np.testing.assert_allclose(drawn["images"].numpy(), reference["images"].numpy(), atol=1e-6)


def test_report_renders_reconstructions_with_the_maps_and_shows_the_stored_error(generator, inverted, tmp_path):
    _, G, _ = generator
    rows = np.array([4, 0, 2])
    images = reconstructions(Store.open(inverted["path"]), rows, G)
    np.testing.assert_allclose(images.numpy(), inverted["images"][rows].numpy(), atol=2e-5)
    np.testing.assert_allclose(_mse(images, inverted["targets"][rows]), inverted["errors"][rows], rtol=1e-5)
    page = report(inverted["path"], tmp_path / "report", samples=3, progress=False).read_text()
    for row in range(ROWS):
        if f"img{row}.png: MSE" in page:
            assert f"img{row}.png: MSE {inverted['errors'][row]:.3g}" in page
    assert page.count(": MSE ") >= 3 and "noise map per image on" in page
    # the figure shows targets | the rows rendered with their maps | differences, not the codes alone
    from engine.plots import image_grid
    from engine.reporting import _shown_rows

    shown = _shown_rows(Store.open(inverted["path"]), 3)
    targets = inverted["targets"][shown]

    def figure(images):
        grid = image_grid(torch.stack([targets, images, (images - targets).abs() * 2 - 1], dim=1),
                          scale=max(1, 64 // images.shape[-1]), col_labels=["target", "inverted", "|diff|"])
        return np.asarray(grid.convert("RGB"), np.int16)

    saved = _png((tmp_path / "report/images/inversion_reconstructions.png").read_bytes())
    assert np.abs(saved - figure(inverted["images"][shown])).max() <= 1
    assert np.abs(saved - figure(_render(G, inverted["space"], inverted["codes"][shown], None))).max() > 10


def _png(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), np.int16)


def test_explore_renders_the_base_rows_and_every_panel_with_their_maps(generator, directions, inverted,
                                                                       monkeypatch):
    _, G, _ = generator
    monkeypatch.setattr("engine.explore.render.BATCH", 2)             # generator calls that cut through panels
    explorer = Explorer(inverted["path"], G, direction_from=directions).load()
    rows = (5, 1, 3)
    key = inverted["direction"]
    request = RenderRequest(Samples(rows=rows), ((Move(key, 0, 2.0),), (Move(key, 0, -1.0), Move(key, 0, 0.5))))
    result = explorer.render(request)
    base = result["base"]
    index = list(rows)
    np.testing.assert_allclose(base.images.numpy(), inverted["images"][index].numpy(), atol=2e-5)
    maps = [m[index] for m in inverted["maps"]]
    for panel in result["panels"]:
        with torch.inference_mode():
            with_maps = synthesize(G, torch.from_numpy(panel.codes), noise_maps=maps)
            without = synthesize(G, torch.from_numpy(panel.codes))
        assert np.abs(_png(panel.png) - _png(grid_png(with_maps))).max() <= 1        # PNG rounding at most
        assert np.abs(_png(panel.png) - _png(grid_png(without))).max() > 10


def test_explores_code_download_of_a_store_with_noise_maps_carries_the_maps(generator, directions, inverted):
    from engine.explore.server import create_app

    _, G, _ = generator
    client = create_app(Explorer(inverted["path"], G, direction_from=directions).load()).test_client()
    body = {"rows": [4, 0], "panels": [[{"direction": inverted["direction"], "alpha": 1.5}]]}
    response = client.post("/api/codes?panel=0", json=body)
    assert response.status_code == 200 and "codes_panel0.npz" in response.headers["Content-Disposition"]
    saved = np.load(io.BytesIO(response.data))
    assert list(saved.files) == ["codes", *(f"noise/{name}" for name, _ in noise_inputs(G))]
    for name, stored in zip(saved.files[1:], inverted["maps"]):
        np.testing.assert_array_equal(saved[name], stored[[4, 0]].numpy())
    rendered = client.post("/api/render", json=body).json["panels"][0]["image"]
    with torch.inference_mode():
        images = synthesize(G, torch.from_numpy(saved["codes"]),
                            noise_maps=[torch.from_numpy(saved[name]) for name in saved.files[1:]])
    assert np.abs(_png(grid_png(images)) - _png_url(rendered)).max() <= 1       # what the download re-generates


def _png_url(data_url: str) -> np.ndarray:
    import base64

    return _png(base64.b64decode(data_url.split(",", 1)[1]))


def test_noise_layers_that_do_not_fit_the_generator_are_one_line_errors_naming_both(generator, directions,
                                                                                  tmp_path):
    spec, G, _ = generator
    wrong = [(name + "x", r) for name, r in noise_inputs(G)[:2]]
    store = _inverted_store(tmp_path / "wrong.zarr", spec, G, "w", noise_layers=wrong)
    with pytest.raises(StoreError) as caught:
        engine.edit(store["path"], DIRECTION, direction_from=directions, stored=True, samples=2)
    message = str(caught.value)
    assert "\n" not in message and wrong[0][0] in message and noise_inputs(G)[0][0] in message and spec in message
    result = CliRunner().invoke(cli, ["edit", store["path"], "--direction", DIRECTION, "--direction-from",
                                      directions, "--stored", "--samples", "2", "--device", "cpu"])
    assert result.exit_code == 1 and result.output.startswith("Error: ") and result.output.count("\n") == 1
    assert wrong[1][0] in result.output
    with pytest.raises(StoreError, match=wrong[0][0]):
        Explorer(store["path"], G, direction_from=directions).load()
    page = report(store["path"], tmp_path / "report", progress=False).read_text()      # the rest of it is kept
    assert "Reconstructions skipped" in page and wrong[0][0] in page and "<h2>Directions</h2>" in page


def test_info_says_the_store_holds_noise_maps(generator, inverted):
    _, G, _ = generator
    result = CliRunner().invoke(cli, ["info", inverted["path"]])
    assert result.exit_code == 0, result.output
    layers = len(noise_inputs(G))
    line = next(line for line in result.output.splitlines() if "inversion/noise" in line)
    assert f"noise maps of {layers} layers" in line
    payload = engine.summary.summarize(Store.open(inverted["path"]))["noise_maps"]
    assert payload["layers"] == layers
    assert payload["bytes"] == 4 * ROWS * sum(r * r for _, r in noise_inputs(G))


def test_export_writes_the_noise_maps_beside_the_codes_and_together_they_re_generate_the_images(generator, inverted,
                                                                                            tmp_path):
    _, G, _ = generator
    written = engine.export(inverted["path"], tmp_path / "out", format="interfacegan")
    space = inverted["space"]
    assert sorted(Path(p).name for p in written) == sorted([f"{space}.npy", *(f"noise_{name}.npy" for name, _ in
                                                                              noise_inputs(G))])
    codes = np.load(tmp_path / "out" / f"{space}.npy")
    maps = [torch.from_numpy(np.load(tmp_path / "out" / f"noise_{name}.npy")) for name, _ in noise_inputs(G)]
    np.testing.assert_allclose(_mse(_render(G, space, codes, maps), inverted["targets"]), inverted["errors"],
                               rtol=1e-5, atol=1e-7)
