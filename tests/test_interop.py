"""InterFaceGAN .npy and GANSpace .npz formats: export, import, round trips and one-line refusals."""
from __future__ import annotations

import numpy as np
import pytest

from engine.interop import export, import_interfacegan
from engine.store import Store
from tests.conftest import run_cli


@pytest.fixture()
def files(tmp_path):
    rng = np.random.default_rng(0)
    z = rng.standard_normal((1000, 8)).astype(np.float32)
    scores = (z[:, 0] + 0.5 * rng.standard_normal(1000)).astype(np.float32)[:, None]
    np.save(tmp_path / "z.npy", z)
    np.save(tmp_path / "smile_scores.npy", scores)
    return tmp_path, z, scores


def test_import_then_export_round_trips(files):
    tmp, z, scores = files
    store = import_interfacegan(tmp / "z.npy", tmp / "smile_scores.npy", tmp / "s.zarr", chunk=300)
    assert store.n == 1000 and store.chunk == 300 and store.attributes == ["smile"] and store.complete
    np.testing.assert_array_equal(store.array("latents/z")[:], z)
    from engine.methods.ganspace import pca
    from engine.methods.interfacegan import boundaries
    boundaries(store.path, num=100)
    pca(store.path, k=3)
    written = export(store.path, tmp / "out", format="interfacegan")
    names = sorted(p.rsplit("/", 1)[1] for p in written)
    assert names == ["smile_scores.npy", "smile_z_boundary.npy", "z.npy"]
    np.testing.assert_array_equal(np.load(tmp / "out" / "z.npy"), z)
    np.testing.assert_array_equal(np.load(tmp / "out" / "smile_scores.npy"), scores)
    boundary = np.load(tmp / "out" / "smile_z_boundary.npy")
    assert boundary.shape == (1, 8) and boundary.dtype == np.float32
    np.testing.assert_array_equal(boundary, Store.open(store.path).read_direction("interfacegan/smile")[0])
    (npz,) = export(store.path, tmp / "gs", format="ganspace")
    data = np.load(npz)
    assert data["lat_comp"].shape == (3, 1, 8) and data["lat_mean"].shape == (1, 8)
    assert data["lat_stdev"].shape == (3,) and data["var_ratio"].shape == (3,)
    np.testing.assert_allclose(data["lat_mean"][0], z.mean(0), atol=1e-5)


def test_import_several_columns_and_names(files):
    tmp, z, _ = files
    np.save(tmp / "two.npy", np.c_[z[:, 0], z[:, 1]])
    store = import_interfacegan(tmp / "z.npy", tmp / "two.npy", tmp / "t.zarr", attributes=["a", "b"])
    assert store.attributes == ["a", "b"]


@pytest.mark.parametrize("case, message", [
    ("codes3d", "shape (N, d)"),
    ("lengths", "same length"),
    ("scores3d", "(N,), (N, 1) or (N, m)"),
    ("names", "--attribute"),
    ("missing", "no codes file"),
])
def test_cli_import_refusals_are_one_line_and_write_nothing(files, case, message):
    tmp, z, scores = files
    codes, score_file, extra = tmp / "z.npy", tmp / "smile_scores.npy", []
    if case == "codes3d":
        np.save(tmp / "c3.npy", z.reshape(1000, 2, 4))
        codes = tmp / "c3.npy"
    elif case == "lengths":
        np.save(tmp / "short.npy", scores[:999])
        score_file = tmp / "short.npy"
    elif case == "scores3d":
        np.save(tmp / "s3.npy", scores[:, :, None])
        score_file = tmp / "s3.npy"
    elif case == "names":
        extra = ["--attribute", "a", "--attribute", "b"]
    else:
        codes = tmp / "absent.npy"
    target = tmp / "bad.zarr"
    proc = run_cli("import-interfacegan", str(codes), str(score_file), str(target), *extra)
    lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
    assert proc.returncode == 1 and len(lines) == 1 and lines[0].startswith("Error: ") and message in lines[0]
    assert not target.exists()


def test_cli_export_and_import(files):
    tmp, _, _ = files
    run_cli("import-interfacegan", str(tmp / "z.npy"), str(tmp / "smile_scores.npy"), str(tmp / "c.zarr"),
            check=True)
    proc = run_cli("export", str(tmp / "c.zarr"), str(tmp / "o"), "--format", "interfacegan", check=True)
    assert "z.npy" in proc.stdout
    bad = run_cli("export", str(tmp / "c.zarr"), str(tmp / "g"), "--format", "ganspace")
    assert bad.returncode == 1 and "no GANSpace directions" in bad.stderr


def test_faiss_index_finds_the_brute_force_neighbours(files):
    from engine.interop import build_index, query

    tmp, z, _ = files
    store = import_interfacegan(tmp / "z.npy", tmp / "smile_scores.npy", tmp / "f.zarr", chunk=256)
    built = build_index(store.path)
    assert built["rows"] == 1000 and built["path"].endswith("f.zarr.z.faiss")
    queries = z[[3, 500]] + 0.01
    distances, rows = query(store.path, queries, k=4)
    brute = ((queries[:, None, :] - z[None]) ** 2).sum(-1)
    np.testing.assert_array_equal(rows, np.argsort(brute, axis=1)[:, :4])
    np.testing.assert_allclose(distances, np.sort(brute, axis=1)[:, :4], rtol=1e-4)
    proc = run_cli("query", store.path, "--row", "7", "-k", "2", check=True)
    assert proc.stdout.startswith("row 7: 7 (0)")
    bad = run_cli("query", store.path, "-k", "2")
    assert bad.returncode == 1 and bad.stderr.strip().startswith("Error: ")
