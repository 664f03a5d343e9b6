"""Mean difference, the baseline to InterFaceGAN: against numpy, against the planted truth, through the registry."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

import engine
from engine.methods._common import ResultExistsError
from engine.methods.meandiff import meandiff
from engine.store import Store
from tests.conftest import PLANTED_SMALL, run_cli


@pytest.fixture(scope="module")
def planted_copy(planted_store, tmp_path_factory):
    """A private copy of the shared planted store: these tests write directions other modules must not see."""
    path = tmp_path_factory.mktemp("meandiff") / "planted.zarr"
    shutil.copytree(planted_store.path, path)
    return Store.open(str(path))


def numpy_meandiff(codes: np.ndarray, scores: np.ndarray, k: int) -> np.ndarray:
    """The unit mean(top k) − mean(bottom k) over finite scores, ties broken by row as boundaries breaks them."""
    rows = np.flatnonzero(np.isfinite(scores))
    values = scores[rows]
    top = rows[np.lexsort((rows, -values))[:k]]
    bottom = rows[np.lexsort((-rows, values))[:k]]
    difference = codes[top].astype(np.float64).mean(0) - codes[bottom].astype(np.float64).mean(0)
    return difference / np.linalg.norm(difference)


def test_meandiff_equals_numpy_and_finds_the_planted_directions(planted_copy):
    store = Store.open(planted_copy.path)
    ratio = 0.1
    results = meandiff(store.path, ratio=ratio, space="z", attributes=None)
    z = np.asarray(store.latent_array("z")[:])
    scores = np.asarray(store.array("scores")[:], np.float64)
    truth = engine.load_generator(PLANTED_SMALL).truth
    planted = truth.attribute_directions("z")
    for name in truth.attributes:
        column = scores[:, store.attribute_index(name)]
        k = int(np.isfinite(column).sum() * ratio)
        stored, attrs = Store.open(store.path).read_direction(f"meandiff/{name}")
        assert stored.shape == (1, z.shape[1]) and attrs["num"] == k == results[name]["num"]
        np.testing.assert_allclose(stored[0], numpy_meandiff(z, column, k), atol=2e-6)
        # z ~ N(0, I) is isotropic: the mean difference of a linear score's extremes points along its normal.
        assert float(stored[0] @ planted[truth.attributes.index(name)]) > 0.95, name
        midpoint = (z[np.argsort(-column)[:k]].mean(0) + z[np.argsort(column)[:k]].mean(0)) / 2
        assert abs(float(stored[0] @ midpoint) + attrs["offset"]) < 1e-4


def test_meandiff_w_names_like_boundaries_and_refuses_to_overwrite(planted_copy):
    store = Store.open(planted_copy.path)
    name = store.attributes[0]
    result = meandiff(store.path, space="w", attributes=[name], num=500)
    assert list(result) == [f"{name}@w"] and result[f"{name}@w"]["space"] == "w"
    w = np.asarray(store.latent_array("w")[:])
    column = np.asarray(store.array("scores")[:, store.attribute_index(name)], np.float64)
    stored, _ = Store.open(store.path).read_direction(f"meandiff/{name}@w")
    np.testing.assert_allclose(stored[0], numpy_meandiff(w, column, 500), atol=2e-6)
    with pytest.raises(ResultExistsError, match=f"meandiff/{name}@w"):
        meandiff(store.path, space="w", attributes=[name], num=400)
    meandiff(store.path, space="w", attributes=[name], num=400, overwrite=True)
    assert Store.open(store.path).read_direction(f"meandiff/{name}@w")[1]["num"] == 400


def test_meandiff_is_registered_as_a_command_a_sweep_analysis_and_a_report_section(planted_store, tmp_path):
    from engine.reporting import report, strongest_directions
    from engine.sweep import ANALYSES, analysis_function

    path = str(tmp_path / "planted.zarr")
    shutil.copytree(planted_store.path, path)
    name = Store.open(path).attributes[0]
    assert engine.meandiff is meandiff and analysis_function("meandiff") is meandiff and "meandiff" in ANALYSES
    proc = run_cli("meandiff", path, "--attribute", name, "--ratio", "0.05", "--json", check=True)
    assert json.loads(proc.stdout)[name]["num"] == int(Store.open(path).n * 0.05)
    assert "Examples:" in run_cli("meandiff", "--help", check=True).stdout
    engine.boundaries(path, attributes=[name], ratio=0.05)
    html = report(path, tmp_path / "out", per_method=1, samples=1, progress=False).read_text()
    assert f"cosine to interfacegan/{name} 0.9" in html
    assert not [t for t in engine.correlate(path) if "meandiff" in t]    # one-row candidates: no match tables
    shown = dict(strongest_directions(Store.open(path), per_method=1))
    assert shown[f"meandiff/{name}"].startswith(f"meandiff/{name} (mean distance ")
