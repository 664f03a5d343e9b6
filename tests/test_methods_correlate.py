"""correlate: boundary cosines, streamed attribute Pearson, and SeFa-Table-1 matching between methods."""
from __future__ import annotations

import numpy as np
import pytest

from engine.methods.correlate import correlate, pearson_merge, pearson_partial
from engine.store import Store
from tests.conftest import run_cli
from tests.test_methods_ganspace import copy_of


@pytest.fixture(scope="module")
def planted_copy(planted_store, tmp_path_factory):
    return copy_of(planted_store, tmp_path_factory, "correlate")


def _unit(rows):
    rows = np.asarray(rows, np.float64)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def test_tables_against_numpy_and_planted_matching(planted_copy):
    rng = np.random.default_rng(0)
    store = Store.open(planted_copy.path, mode="r+")
    boundaries = _unit(rng.standard_normal((3, 128)))
    for name, row in zip(["a", "b", "c"], boundaries):
        store.write_direction("interfacegan", name, row[None], {"space": "z"})
    # A candidate set that holds the boundaries (signs flipped, shuffled) among random directions.
    candidates = _unit(rng.standard_normal((6, 128)))
    candidates[[4, 0, 2]] = -boundaries
    store.write_direction("sefa", "layers_all", candidates, {"space": "z"})
    store.write_direction("sefa", "in_w", _unit(rng.standard_normal((2, 128))), {"space": "w"})

    tables = correlate(planted_copy.path, heatmaps=True)
    cos = tables["boundary_cosine"]
    np.testing.assert_allclose(cos["values"], boundaries @ boundaries.T, atol=1e-6)
    scores = Store.open(planted_copy.path).array("scores")[:].astype(np.float64)
    pearson = tables["attribute_pearson"]
    assert pearson["rows"] == planted_copy.attributes
    np.testing.assert_allclose(pearson["values"], np.corrcoef(scores.T), atol=1e-6)
    match = tables["match_interfacegan_vs_sefa_layers_all"]
    np.testing.assert_array_equal(match["values"][:, 0], [4, 0, 2])
    np.testing.assert_allclose(match["values"][:, 1], 0.0, atol=1e-6)
    assert "match_interfacegan_vs_sefa_in_w" not in tables            # another space: not compared
    stored, attrs = Store.open(planted_copy.path).read_table("match_interfacegan_vs_sefa_layers_all")
    assert attrs["rows"] == ["a", "b", "c"] and attrs["cols"] == ["index", "cosine_distance"]
    assert tables["boundary_cosine"]["png"].endswith("planted_boundary_cosine.png")


def test_pearson_skips_rows_with_nan_and_merges_exactly():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((300, 3)) @ rng.standard_normal((3, 3))
    x[7, 1] = np.nan
    merged = pearson_merge(pearson_partial(x[:100]), pearson_partial(x[100:]))
    clean = x[np.isfinite(x).all(axis=1)]
    np.testing.assert_allclose(np.asarray(merged.result()), np.corrcoef(clean.T), atol=1e-10)


def test_a_stored_table_is_refused_before_any_pass_unless_overwrite(planted_copy, monkeypatch):
    import importlib

    from engine.methods._common import ResultExistsError

    module = importlib.import_module("engine.methods.correlate")  # engine.methods.correlate is also the function

    if "attribute_pearson" not in Store.open(planted_copy.path).tables():
        correlate(planted_copy.path)
    before = Store.open(planted_copy.path).read_table("attribute_pearson")[0]

    def no_pass(*args, **kwargs):
        raise AssertionError("the Pearson pass started before the overwrite check")

    with monkeypatch.context() as patched:
        patched.setattr(Store, "iter_rows", no_pass)
        with pytest.raises(ResultExistsError, match="already has tables/"):
            correlate(planted_copy.path)
    np.testing.assert_array_equal(Store.open(planted_copy.path).read_table("attribute_pearson")[0], before)
    assert "attribute_pearson" in correlate(planted_copy.path, overwrite=True)


@pytest.mark.filterwarnings(r"ignore:.*Dask workers run with MALLOC_TRIM_THRESHOLD_:UserWarning")  # a plain test cluster
def test_an_all_nan_attribute_is_left_out_of_pearson_and_the_others_kept(tmp_path):
    from engine.interop import import_interfacegan

    rng = np.random.default_rng(2)
    z = rng.standard_normal((3000, 4)).astype(np.float32)
    scores = (z[:, :3] @ rng.standard_normal((3, 3)) + rng.standard_normal((3000, 3))).astype(np.float32)
    scores[:, 1] = np.nan
    scores[[5, 9], 2] = np.nan                                      # an ordinary NaN still skips its row only
    np.save(tmp_path / "z.npy", z)
    np.save(tmp_path / "s.npy", scores)
    path = str(tmp_path / "nan.zarr")
    import_interfacegan(tmp_path / "z.npy", tmp_path / "s.npy", path, attributes=["a", "broken", "c"], chunk=512)
    with pytest.warns(UserWarning, match=r"attribute_pearson leaves out 'broken' \(0 finite scores\)"):
        tables = correlate(path)
    pearson = tables["attribute_pearson"]
    assert pearson["rows"] == pearson["cols"] == ["a", "c"]
    kept = scores[:, [0, 2]].astype(np.float64)
    kept = kept[np.isfinite(kept).all(axis=1)]
    np.testing.assert_allclose(pearson["values"], np.corrcoef(kept.T), atol=1e-6)
    values, attrs = Store.open(path).read_table("attribute_pearson")
    assert attrs["rows"] == ["a", "c"] and attrs["n_rows"] == 2998 and np.isfinite(values).all()
    # The distributed reduction leaves out the same column.
    with pytest.warns(UserWarning, match="leaves out 'broken'"):
        again = correlate(path, workers=1, overwrite=True)["attribute_pearson"]
    np.testing.assert_allclose(again["values"], pearson["values"], atol=1e-10)


def test_cli_correlate(planted_copy):
    refused = run_cli("correlate", planted_copy.path)
    assert refused.returncode == 1 and "already has tables/" in refused.stderr and "--overwrite" in refused.stderr
    proc = run_cli("correlate", planted_copy.path, "--overwrite", check=True)
    assert "tables/attribute_pearson" in proc.stdout
    bad = run_cli("correlate", planted_copy.path + ".missing")
    assert bad.returncode == 1 and bad.stderr.strip().startswith("Error: ") and len(bad.stderr.strip().splitlines()) == 1
