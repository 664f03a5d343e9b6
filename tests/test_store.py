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


def test_schema_2_records_where_latent_rows_came_from(tmp_path):
    import engine

    store = engine.sample(str(tmp_path / "s.zarr"), "tests.models_for_tests:truncating_generator", n=64, chunk=32,
                          seed=3, spaces=["z", "w", "wp"], progress=False)
    assert store.meta["schema"] == SCHEMA == 2
    source = zarr.open_group(store.path, mode="r")["latents/z"].attrs["source"]   # plain zarr reads it
    assert source["kind"] == "sampled" and source["seed"] == 3 and source["chunk"] == 32
    assert store.latent_source("w")["kind"] == "mapped" and store.latent_source("w")["from"] == "latents/z"
    # w is the mapping output before truncation; wp the per-layer codes the synthesis used.
    from tests.models_for_tests import truncating_generator
    import torch
    G = truncating_generator()
    z = torch.from_numpy(store.array("latents/z")[:])
    with torch.no_grad():
        np.testing.assert_allclose(store.array("latents/w")[:], G.mapping_w(z).numpy(), atol=1e-6)
        np.testing.assert_allclose(store.array("latents/wp")[:], G.mapping(z).numpy(), atol=1e-6)
    assert not np.allclose(store.array("latents/w")[:], store.array("latents/wp")[:, 0])


def test_schema_1_stores_open_and_read_as_before(tmp_path):
    store = Store.create(tmp_path / "old.zarr", n=10, chunk=5, z_dim=4, spaces=["z", "w"], w_dim=4,
                         meta={"seed": 5, "draw": "recipe", "generator": "g"})
    group = zarr.open_group(str(tmp_path / "old.zarr"), mode="r+")
    for space in ("z", "w"):                                   # schema 1 had no source attrs
        group[f"latents/{space}"].attrs.clear()
    group.attrs["latent_engine"] = dict(store.meta, schema=1)
    old = Store.open(tmp_path / "old.zarr")
    assert old.meta["schema"] == 1 and old.spaces == ["z", "w"]
    assert old.latent_source("z") == {"kind": "sampled", "seed": 5, "draw": "recipe", "chunk": 5}
    assert old.latent_source("w") == {"kind": "mapped", "from": "latents/z", "generator": "g", "layer": 0}


def test_a_store_of_w_codes_has_no_z(tmp_path):
    from engine.interop import import_interfacegan

    w = np.random.default_rng(0).standard_normal((50, 6)).astype(np.float32)
    np.save(tmp_path / "w.npy", w)
    np.save(tmp_path / "smile_scores.npy", w[:, :1])
    store = import_interfacegan(tmp_path / "w.npy", tmp_path / "smile_scores.npy", tmp_path / "s.zarr",
                                chunk=20, space="w")
    assert store.spaces == ["w"] and "latents/z" not in zarr.open_group(store.path, mode="r")
    np.testing.assert_array_equal(store.array("latents/w")[:], w)
    assert store.latent_source("w") == {"kind": "imported", "format": "interfacegan",
                                        "files": [str((tmp_path / "w.npy").absolute())]}
    with pytest.raises(StoreError, match="has no 'z' codes"):
        store.latent_array("z")


def test_xarray_opens_a_directions_group_with_w_and_wp_boundaries(tmp_path):
    xr = pytest.importorskip("xarray")
    store = Store.create(tmp_path / "s.zarr", n=10, chunk=5, z_dim=4, w_dim=4, num_ws=3, spaces=["z", "w", "wp"])
    unit = np.eye(12, dtype=np.float32)
    store.write_direction("interfacegan", "age@w", unit[:1, :4], {"space": "w"})
    store.write_direction("interfacegan", "age@wp1", unit[1:2, :4], {"space": "wp", "layer": 1})
    store.write_direction("interfacegan", "age@wp", unit[2:3], {"space": "wp"})
    store.write_direction("interfacegan", "age@wp_pair", unit[3:5], {"space": "wp"})
    ds = xr.open_zarr(store.path, group="directions/interfacegan", consolidated=False)
    assert ds["age@wp1"].dims == ("age@wp1_component", "w_dim") and ds["age@wp"].dims[1] == "wp_flat_dim"
    np.testing.assert_array_equal(ds["age@wp_pair"].values, unit[3:5])
