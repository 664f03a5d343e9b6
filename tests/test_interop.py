"""InterFaceGAN .npy and GANSpace .npz formats: export, import, round trips and one-line refusals."""
from __future__ import annotations

import re
from types import SimpleNamespace

import numpy as np
import pytest
from click.testing import CliRunner

from engine.cli import cli

from engine.interop import export, import_interfacegan
from engine.store import Store
from tests.conftest import run_cli


def invoke(*args: str) -> SimpleNamespace:
    """The command in this process (faster than ``run_cli``); an exception it did not turn into a one-line
    error is re-raised, as a user would see it as a traceback."""
    result = CliRunner().invoke(cli, list(args))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return SimpleNamespace(returncode=result.exit_code, stdout=result.stdout, stderr=result.stderr)


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
    proc = invoke("import-interfacegan", str(codes), str(score_file), str(target), *extra)
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
    brute_7 = ((z[7] - z) ** 2).sum(-1)
    proc = invoke("query", store.path, "--row", "7", "-k", "2")
    assert proc.returncode == 0, proc.stderr
    header, line = proc.stdout.splitlines()[:2]
    assert header == "nearest stored rows of latents/z by squared L2 distance d² (smaller is nearer)"
    found = re.fullmatch(r"row 7: 7 \(d²=0\), (\d+) \(d²=([0-9.e+-]+)\)", line)
    assert found and int(found[1]) == np.argsort(brute_7)[1]
    assert float(found[2]) == pytest.approx(np.sort(brute_7)[1], rel=1e-3)
    bad = invoke("query", store.path, "-k", "2")
    assert bad.returncode == 1 and bad.stderr.strip().startswith("Error: ")


# ------------------------------------------------------------------------------------------------ GANSpace
GANSPACE_KEYS = ("act_comp", "act_mean", "act_stdev", "lat_comp", "lat_mean", "lat_stdev", "var_ratio",
                 "random_stdevs")


def load_like_ganspace(path) -> dict[str, np.ndarray]:
    """Read a component file as GANSpace's visualize.py / interactive.py do, checking what they assume.

    They read the eight keys with allow_pickle=False, take k from act_comp's first axis, index component r as
    comp[r] and add it to the mean (so comp[r] has the mean's shape), index the stdevs by r and average
    random_stdevs; everything goes through torch.from_numpy(...).float().
    """
    with np.load(path, allow_pickle=False) as data:
        arrays = {key: data[key] for key in GANSPACE_KEYS}
    k = arrays["act_comp"].shape[0]
    for kind in ("act", "lat"):
        assert arrays[f"{kind}_comp"].shape[1:] == arrays[f"{kind}_mean"].shape
        assert arrays[f"{kind}_mean"].shape[0] == 1                   # a batch of one sample
        assert arrays[f"{kind}_stdev"].shape == (k,)
    assert arrays["var_ratio"].shape == arrays["random_stdevs"].shape == (k,)
    assert all(a.dtype == np.float32 for a in arrays.values())
    assert np.isfinite(np.mean(arrays["random_stdevs"]))
    return arrays


def test_ganspace_export_holds_every_key_ganspace_reads(tmp_path):
    from engine.methods.ganspace import pca

    rng = np.random.default_rng(1)
    codes = (rng.standard_normal((6000, 6)) * [4.0, 2.0, 1.0, 1.0, 0.5, 0.25] + 3.0).astype(np.float32)
    np.save(tmp_path / "w.npy", codes)
    np.save(tmp_path / "a.npy", codes[:, :1])
    store = import_interfacegan(tmp_path / "w.npy", tmp_path / "a.npy", tmp_path / "g.zarr", chunk=1000)
    pca(store.path, k=4)
    (npz,) = export(store.path, tmp_path / "out", format="ganspace")
    data = load_like_ganspace(npz)
    assert data["act_comp"].shape == (4, 1, 6) and data["act_mean"].shape == (1, 6)
    stored, _ = Store.open(store.path).read_direction("ganspace/z")
    variance = np.linalg.eigvalsh(np.cov(codes.astype(np.float64).T))[::-1]
    for kind in ("act", "lat"):        # the latents are the decomposed samples: both slots hold them
        np.testing.assert_array_equal(data[f"{kind}_comp"][:, 0], stored)
        np.testing.assert_allclose(data[f"{kind}_mean"][0], codes.mean(0), atol=1e-4)
        np.testing.assert_allclose(data[f"{kind}_stdev"], np.sqrt(variance[:4]), rtol=1e-4)
    np.testing.assert_allclose(np.linalg.norm(data["lat_comp"][:, 0], axis=1), 1, atol=1e-6)
    np.testing.assert_allclose(data["var_ratio"], variance[:4] / variance.sum(), rtol=1e-4)
    # GANSpace's random baseline: unit rows of RandomState(2).normal, over the first 5,000 centred samples
    directions = np.random.RandomState(2).normal(size=(4, 6))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    expected = ((codes[:5000] - codes.mean(0)) @ directions.T).std(0)
    np.testing.assert_allclose(data["random_stdevs"], expected, rtol=1e-4)
    assert data["random_stdevs"].max() < data["act_stdev"][0]


def test_ganspace_export_of_wp_keeps_the_layer_axis(tmp_path):
    from engine.methods.ganspace import pca

    rng = np.random.default_rng(2)
    store = Store.create(str(tmp_path / "wp.zarr"), n=400, chunk=200, z_dim=5, w_dim=4, num_ws=3,
                         spaces=("z", "w", "wp"))
    for index in range(2):
        store.write_chunk(index, {f"latents/{s}": rng.standard_normal(shape).astype(np.float32) for s, shape in
                                  {"z": (200, 5), "w": (200, 4), "wp": (200, 3, 4)}.items()})
    pca(store.path, array="wp", k=5)
    (npz,) = export(store.path, tmp_path / "out", format="ganspace")
    data = load_like_ganspace(npz)
    assert data["lat_comp"].shape == (5, 1, 3, 4) and data["lat_mean"].shape == (1, 3, 4)


def test_export_writes_under_a_temporary_name_until_complete(files, monkeypatch):
    """A killed export must not leave a full-size .npy padded with zeros under the final name."""
    tmp, z, scores = files
    store = import_interfacegan(tmp / "z.npy", tmp / "smile_scores.npy", tmp / "k.zarr", chunk=300)
    out = tmp / "out"
    seen = []
    original = Store.iter_rows

    def interrupted(self, name, block_chunks=1):
        for k, item in enumerate(original(self, name, block_chunks)):
            seen.append(sorted(p.name for p in out.iterdir()))
            if k == 1:
                raise KeyboardInterrupt      # the user's Ctrl-C (or a kill) in the middle of z.npy
            yield item

    monkeypatch.setattr(Store, "iter_rows", interrupted)
    with pytest.raises(KeyboardInterrupt):
        export(store.path, out, format="interfacegan")
    assert all("z.npy" not in names for names in seen) and any(n.startswith(".z.npy.") for n in seen[0])
    assert list(out.iterdir()) == []                 # the temporary file is gone too
    monkeypatch.setattr(Store, "iter_rows", original)
    export(store.path, out, format="interfacegan")
    z_before = np.load(out / "z.npy")
    monkeypatch.setattr(Store, "iter_rows", interrupted)
    seen.clear()
    with pytest.raises(KeyboardInterrupt):
        export(store.path, out, format="interfacegan")
    np.testing.assert_array_equal(np.load(out / "z.npy"), z_before)   # the previous export is kept whole
    assert sorted(p.name for p in out.iterdir()) == ["smile_scores.npy", "z.npy"]


# ------------------------------------------------------------------------------------------------ faiss index
def _one_line_error(proc) -> str:
    lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
    assert proc.returncode == 1 and len(lines) == 1 and lines[0].startswith("Error: "), proc.stderr
    return lines[0]


def test_query_refuses_an_index_of_a_store_that_changed(files):
    from engine.interop import build_index, query

    tmp, z, scores = files
    np.save(tmp / "z_small.npy", z[:600] + 1.0)
    np.save(tmp / "s_small.npy", scores[:600])
    path = str(tmp / "stale.zarr")
    import_interfacegan(tmp / "z.npy", tmp / "smile_scores.npy", path, chunk=256)
    build_index(path)
    import_interfacegan(tmp / "z_small.npy", tmp / "s_small.npy", path, chunk=256, overwrite=True)
    with pytest.raises(ValueError, match="index .* is stale: .* 1000 rows, and the store has changed since"):
        query(path, z[:1], k=3)
    message = _one_line_error(invoke("query", path, "--row", "0"))
    assert "stale" in message and f"run `latent-engine index {path} --array latents/z` again" in message
    build_index(path)
    distances, rows = query(path, z[:1] + 1.0, k=1)
    assert rows[0, 0] == 0 and distances[0, 0] == pytest.approx(0, abs=1e-6)


@pytest.mark.parametrize("damage, message", [
    ("truncate", "is 200 bytes but was written as"),
    ("record", "has no readable record of the store it was built from"),
    ("garbage", "cannot read the faiss index"),
    ("swapped", "holds 1000 codes of 8 values (ip), not what its record says (1000 of 8, l2)"),
])
def test_a_damaged_index_is_a_one_line_error(files, damage, message):
    from engine.interop import build_index, record_path

    tmp, _, _ = files
    store = import_interfacegan(tmp / "z.npy", tmp / "smile_scores.npy", tmp / "d.zarr", chunk=256)
    index = build_index(store.path)["path"]
    content = open(index, "rb").read()
    if damage == "truncate":                       # a killed writer of the old, in-place kind
        open(index, "wb").write(content[:200])
    elif damage == "record":
        record_path(store.path, "z").write_text('{"store": ')
    elif damage == "garbage":                      # same size, unreadable: faiss's own read error
        open(index, "wb").write(b"\0" * len(content))
    else:                                          # another build's index (same size) beside this record
        record = record_path(store.path, "z").read_text()
        build_index(store.path, metric="ip")
        record_path(store.path, "z").write_text(record)
    assert message in _one_line_error(invoke("query", store.path, "--row", "0", "-k", "2"))


def test_index_is_renamed_into_place_and_its_record_written_after_it(files, monkeypatch):
    import faiss

    from engine.interop import build_index, record_path

    tmp, z, _ = files
    store = import_interfacegan(tmp / "z.npy", tmp / "smile_scores.npy", tmp / "r.zarr", chunk=256)
    first = build_index(store.path)
    before = open(first["path"], "rb").read()
    record = record_path(store.path, "z")
    original = faiss.write_index

    def killed(index, path):
        original(index, path)
        assert path != first["path"] and open(first["path"], "rb").read() == before
        assert not record.exists()                 # no record while the new index is not in place
        raise KeyboardInterrupt

    monkeypatch.setattr(faiss, "write_index", killed)
    with pytest.raises(KeyboardInterrupt):
        build_index(store.path, metric="ip")
    assert open(first["path"], "rb").read() == before
    assert sorted(p.name for p in tmp.iterdir() if p.name.startswith(("r.zarr.", ".r.zarr."))) == ["r.zarr.z.faiss"]
    message = _one_line_error(invoke("query", store.path, "--row", "0"))
    assert "no readable record" in message
