"""GANSpace PCA: a flat spectrum on plain z, scikit-learn's answer and the planted axes on W, both reduction paths."""
from __future__ import annotations

import functools
import shutil

import numpy as np
import pytest

from engine.methods.ganspace import pca, pca_merge, pca_partial
from engine.store import Store
from tests.conftest import run_cli


def copy_of(store: Store, tmp_path_factory, label: str) -> Store:
    """A private copy of the shared planted store: method tests write results that other modules must not see."""
    path = tmp_path_factory.mktemp(label) / "planted.zarr"
    shutil.copytree(store.path, path)
    return Store.open(str(path))


@pytest.fixture(scope="module")
def planted_copy(planted_store, tmp_path_factory):
    return copy_of(planted_store, tmp_path_factory, "ganspace")


def test_pca_on_plain_z_finds_no_structure(planted_copy):
    result = pca(planted_copy.path, array="latents/z")
    ratio = np.asarray(result["explained_variance_ratio"])
    d = ratio.size
    assert d == 128 and abs(ratio.sum() - 1) < 1e-6
    # N(0, I): every direction explains ≈ 1/d; the spread is the Marchenko-Pastur edge (1 ± √(d/n))².
    edge = np.sqrt(d / planted_copy.n)
    assert ratio.max() * d < (1 + edge) ** 2 + 0.05 and ratio.min() * d > (1 - edge) ** 2 - 0.05
    assert ratio[0] / ratio[-1] < 1.5


def test_pca_on_planted_w_matches_scikit_learn_and_the_truth(planted_copy):
    from sklearn.decomposition import PCA as SkPCA

    import engine

    result = pca(planted_copy.path, k=10)                         # default array: latents/w
    directions, attrs = Store.open(planted_copy.path).read_direction("ganspace/w")
    assert directions.shape == (10, 128) and attrs["space"] == "w" and attrs["array"] == "latents/w"
    w = Store.open(planted_copy.path).array("latents/w")[:]
    reference = SkPCA(n_components=10, svd_solver="full").fit(w.astype(np.float64))
    np.testing.assert_allclose(attrs["explained_variance_ratio"], reference.explained_variance_ratio_, rtol=1e-4)
    np.testing.assert_allclose(attrs["mean"], reference.mean_, atol=1e-5)
    np.testing.assert_allclose(np.abs(np.sum(directions * reference.components_, axis=1)), 1.0, atol=1e-4)
    truth = engine.load_generator(planted_copy.meta["generator"]).truth
    assert np.all(np.abs(np.sum(directions[:3] * truth.pca_directions_w[:3], axis=1)) > 0.95)
    assert result["n_rows"] == planted_copy.n
    np.testing.assert_allclose(attrs["stdev"], np.sqrt(reference.explained_variance_), rtol=1e-4)


def test_the_distributed_reduction_gives_the_same_answer(planted_copy):
    from engine.distributed import map_reduce_chunks

    state = map_reduce_chunks(planted_copy.path, "latents/w", functools.partial(pca_partial, n_components=5),
                              pca_merge)
    directions, attrs = Store.open(planted_copy.path).read_direction("ganspace/w")
    np.testing.assert_allclose(np.asarray(state.explained_variance_ratio_), attrs["explained_variance_ratio"][:5],
                               rtol=1e-5)


def test_a_stored_result_is_refused_before_any_pass_unless_overwrite(planted_copy, monkeypatch):
    from engine.methods import ganspace
    from engine.methods._common import ResultExistsError

    before = Store.open(planted_copy.path).read_direction("ganspace/w")[0]

    def no_pass(*args, **kwargs):
        raise AssertionError("the PCA pass started before the overwrite check")

    with monkeypatch.context() as patched:
        patched.setattr(Store, "iter_rows", no_pass)
        with pytest.raises(ResultExistsError, match="already has directions/ganspace/w"):
            pca(planted_copy.path, k=3)
    np.testing.assert_array_equal(Store.open(planted_copy.path).read_direction("ganspace/w")[0], before)
    pca(planted_copy.path, k=3, overwrite=True)
    assert Store.open(planted_copy.path).read_direction("ganspace/w")[0].shape == (3, 128)


def test_cli_pca(planted_copy, tmp_path):
    refused = run_cli("pca", planted_copy.path, "--array", "latents/z", "-k", "4")
    lines = [line for line in refused.stderr.strip().splitlines() if line.strip()]
    assert refused.returncode == 1 and len(lines) == 1 and "already has directions/ganspace/z" in lines[0]
    proc = run_cli("pca", planted_copy.path, "--array", "latents/z", "-k", "4", "--overwrite", check=True)
    assert "ganspace/z" in proc.stdout and "variance ratio" in proc.stdout and "more rows" not in proc.stdout
    proc = run_cli("pca", planted_copy.path, "--array", "latents/z", "--overwrite", check=True)
    assert proc.stdout.count("\n") == 1 + 2 + 10 + 1       # the heading, the table head, 10 rows, the note
    assert proc.stdout.rstrip().endswith("118 more rows; --json for all")
    for args, message in ((["-k", "999"], "-k"), (["--array", "latents/wp"], "no array")):
        bad = run_cli("pca", planted_copy.path, *args)
        lines = [line for line in bad.stderr.strip().splitlines() if line.strip()]
        assert bad.returncode == 1 and len(lines) == 1 and lines[0].startswith("Error: ") and message in lines[0]
