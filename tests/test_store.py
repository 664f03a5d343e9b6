"""The store contract: layout readable without latent-engine, schema checks, results round-trip."""
from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
import zarr

from engine.store import SCHEMA, Store, StoreError


def test_plain_zarr_reads_the_layout(planted_store):
    group = zarr.open_group(planted_store.path, mode="r")
    meta = group.attrs["latent_engine"]
    assert meta["schema"] == SCHEMA and meta["seed"] == 7 and meta["n"] == 40_000
    assert group["latents/z"].shape == (40_000, 128) and group["latents/z"].dtype == np.float32
    assert group["latents/z"].chunks == (4096, 128)
    assert group["latents/w"].shape == (40_000, 128)
    assert group["scores"].attrs["attributes"] == meta["attributes"]
    assert group["progress"][:].tolist() == [1] * meta["n_chunks"]


def test_dask_and_xarray_read_without_project_code(planted_store):
    xr = pytest.importorskip("xarray")
    z = da.from_zarr(planted_store.path, component="latents/z")
    assert z.chunks[0][0] == 4096
    np.testing.assert_allclose(float(z.mean().compute()), 0.0, atol=0.01)   # z ~ N(0, I)
    ds = xr.open_zarr(planted_store.path, group="latents", consolidated=False)
    assert ds["z"].dims == ("sample", "z_dim") and ds["w"].dims == ("sample", "w_dim")
    root = xr.open_zarr(planted_store.path, consolidated=False)
    assert root["scores"].dims == ("sample", "attribute")


def test_open_rejects_missing_foreign_and_other_schema(tmp_path):
    with pytest.raises(StoreError, match="no store at"):
        Store.open(tmp_path / "missing.zarr")
    (tmp_path / "folder").mkdir()
    with pytest.raises(StoreError, match="not a zarr v3 store"):
        Store.open(tmp_path / "folder")
    zarr.open_group(str(tmp_path / "plain.zarr"), mode="w")
    with pytest.raises(StoreError, match="not a latent-engine store"):
        Store.open(tmp_path / "plain.zarr")
    store = Store.create(tmp_path / "old.zarr", n=10, chunk=5, z_dim=4)
    meta = dict(store.meta, schema=99)
    store.group.attrs["latent_engine"] = meta
    with pytest.raises(StoreError, match="schema 99"):
        Store.open(tmp_path / "old.zarr")


def test_directions_and_tables_round_trip(tmp_path):
    store = Store.create(tmp_path / "s.zarr", n=10, chunk=5, z_dim=4, attributes=["a"])
    unit = np.eye(4, dtype=np.float32)[:2]
    store.write_direction("sefa", "all", unit, {"space": "z", "eigenvalues": np.array([2.0, 1.0])})
    values, attrs = store.read_direction("sefa/all")
    np.testing.assert_array_equal(values, unit)
    assert attrs["eigenvalues"] == [2.0, 1.0] and store.directions() == ["sefa/all"]
    store.write_table("t", np.ones((2, 3)), rows=["r1", "r2"], cols=["a", "b", "c"])
    table, tattrs = Store.open(tmp_path / "s.zarr").read_table("t")
    assert table.shape == (2, 3) and tattrs["cols"] == ["a", "b", "c"]
    with pytest.raises(StoreError, match="unknown direction 'x/y'"):
        store.read_direction("x/y")
    with pytest.raises(StoreError, match="read-only"):
        Store.open(tmp_path / "s.zarr").write_table("t", np.ones((1, 1)), ["r"], ["c"])
    with pytest.raises(ValueError, match="non-finite"):
        store.write_direction("sefa", "bad", np.full((1, 4), np.nan), {"space": "z"})


def test_create_refuses_existing_store(tmp_path):
    Store.create(tmp_path / "s.zarr", n=10, chunk=5, z_dim=4)
    with pytest.raises(StoreError, match="already exists"):
        Store.create(tmp_path / "s.zarr", n=10, chunk=5, z_dim=4)


def test_unfinished_chunks_are_pending_not_inferred_from_files(tmp_path):
    store = Store.create(tmp_path / "s.zarr", n=12, chunk=5, z_dim=2)
    assert store.n_chunks == 3 and store.chunk_rows(2) == slice(10, 12)
    # A chunk of zeros equals no fill value we could infer from: only `progress` says it is done.
    store.array("latents/z")[0:5] = np.zeros((5, 2), np.float32)
    assert store.pending_chunks() == [0, 1, 2]
    store.write_chunk(1, {"latents/z": np.ones((5, 2), np.float32)})
    assert store.pending_chunks() == [0, 2]
    with pytest.raises(StoreError, match="incomplete: 2 of 3 chunks"):
        store.require_complete()
