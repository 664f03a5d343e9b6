"""edit: z + αn, InterFaceGAN's distance form, image grids, and re-scoring against the planted Gram matrix."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

import engine
from engine.methods.editing import edit, parse_alphas
from engine.models.planted import ATTRIBUTE_GRAM
from engine.plots import heatmap, image_grid, line_plot
from engine.store import Store
from tests.conftest import run_cli
from tests.test_methods_ganspace import copy_of


@pytest.fixture(scope="module")
def planted_copy(planted_store, tmp_path_factory):
    """The shared planted store, copied, with the planted smile normal stored as a direction."""
    path = copy_of(planted_store, tmp_path_factory, "edit").path
    truth = engine.load_generator(planted_store.meta["generator"]).truth
    store = Store.open(path, mode="r+")
    smile = truth.attribute_directions("z")[truth.attributes.index("smile")]
    store.write_direction("interfacegan", "smile", smile[None], {"space": "z"})
    store.write_direction("interfacegan", "smile_w", truth.attribute_directions("w")[3][None], {"space": "w"})
    return Store.open(path), truth


def test_rescoring_along_the_planted_normal_reproduces_the_gram_row(planted_copy, tmp_path):
    store, truth = planted_copy
    out = tmp_path / "grid.png"
    result = edit(store.path, "interfacegan/smile", alphas="-2,2,5", samples=16, rescore=True, out=out)
    # The planted scores are nᵀz + quadratic noise in directions orthogonal to every n, so moving z by αn_smile
    # changes attribute a by exactly α·(n_aᵀn_smile): SeFa's re-scoring table is the Gram row, times α.
    smile = truth.attributes.index("smile")
    expected = np.outer(result["alphas"], ATTRIBUTE_GRAM[smile])
    np.testing.assert_allclose(result["rescore"][:, :5], expected, atol=0.02)
    table, attrs = Store.open(store.path).read_table("rescore_interfacegan_smile")
    assert attrs["rows"] == ["-2", "-1", "0", "1", "2"] and attrs["cols"][:5] == truth.attributes
    image = Image.open(out)
    assert image.size[1] > image.size[0]                              # 16 rows of samples, 5 columns of α
    assert Image.open(result["plot"]).size[0] > 100


def test_distance_form_and_w_space(planted_copy):
    store, _ = planted_copy
    result = edit(store.path, "interfacegan/smile", alphas="-3,3,3", samples=4, distance=True, stored=True)
    n = Store.open(store.path).read_direction("interfacegan/smile")[0][0]
    np.testing.assert_allclose(result["codes"] @ n, np.tile([-3.0, 0.0, 3.0], (4, 1)), atol=1e-4)
    z = Store.open(store.path).array("latents/z")[:4]
    plain = edit(store.path, "interfacegan/smile", alphas="1,1,1", samples=4, stored=True)
    np.testing.assert_allclose(plain["codes"][:, 0], z + n, atol=1e-5)
    w = edit(store.path, "interfacegan/smile_w", alphas="0,1,2", samples=2)
    assert w["space"] == "w" and w["images"].shape == (2, 2, 3, 16, 16)


def test_plots_are_general():
    grid = image_grid(np.zeros((2, 3, 1, 8, 8)), pad=1)
    assert grid.size == (3 * 9 + 1, 2 * 9 + 1) and grid.mode == "RGB"
    assert heatmap(np.eye(2), ["a", "b"], ["a", "b"], title="t").size[0] > 50
    assert line_plot([0, 1], {"x": [0, 1]}).size[0] > 50
    with pytest.raises(ValueError):
        image_grid(np.zeros((2, 3, 8, 8)))


def test_parse_alphas():
    np.testing.assert_allclose(parse_alphas("-3,3,7"), np.linspace(-3, 3, 7))
    for bad in ("1,2", "a,b,c", "0,1,0"):
        with pytest.raises(ValueError):
            parse_alphas(bad)


def test_cli_edit(planted_copy, tmp_path):
    store, _ = planted_copy
    out = tmp_path / "e.png"
    proc = run_cli("edit", store.path, "--direction", "interfacegan/smile", "--alphas", "-1,1,3", "--samples", "2",
                   "--rescore", "--out", str(out), check=True)
    assert out.exists() and (tmp_path / "e_rescore.png").exists() and "smile" in proc.stdout
    for args, message in ((["--direction", "interfacegan/nope"], "unknown direction"),
                          (["--direction", "interfacegan/smile", "--alphas", "1,2"], "--alphas")):
        bad = run_cli("edit", store.path, *args)
        lines = [line for line in bad.stderr.strip().splitlines() if line.strip()]
        assert bad.returncode == 1 and len(lines) == 1 and message in lines[0]
