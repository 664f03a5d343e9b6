"""Other tools' file formats: InterFaceGAN's .npy files and GANSpace's .npz, both ways where it makes sense.

* ``export_interfacegan(store, outdir)``: ``<attr>_<space>_boundary.npy`` (1, d) float32 per InterFaceGAN
  direction (what InterFaceGAN's ``edit.py`` loads), ``<space>.npy`` codes per stored space and
  ``<attr>_scores.npy`` (N, 1) per attribute (what its ``train_boundary.py`` loads). Arrays are written
  through ``np.lib.format.open_memmap`` chunk by chunk, so no full copy is held in RAM.
* ``export_ganspace(store, outdir)``: ``<space>_ganspace.npz`` per GANSpace direction set with GANSpace's
  keys ``lat_comp`` (k, 1, d), ``lat_mean`` (1, d), ``lat_stdev`` (k,), ``var_ratio`` (k,).
* ``import_interfacegan(codes, scores, store)``: a store from InterFaceGAN's files, read memory-mapped and
  written chunk by chunk (codes become ``latents/z``; the store records where they came from).
* ``build_index(store)`` / ``query(store, codes)``: an exact faiss index (``IndexFlatL2`` or ``IndexFlatIP``) over
  stored codes, filled chunk by chunk and saved beside the store as ``<store>.<space>.faiss``; row ids are the
  store's row numbers. (faiss keeps the vectors it indexes in memory: d·4 bytes per row.)
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
import numpy as np

from engine.store import Store, StoreError

FORMATS = ("interfacegan", "ganspace")


def _open_npy(path: str | os.PathLike, what: str) -> np.ndarray:
    path = str(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no {what} file {path}")
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise ValueError(f"{path} is not a readable .npy array ({str(exc).splitlines()[0]})") from None
    if not isinstance(array, np.ndarray) or not np.issubdtype(array.dtype, np.number):
        raise ValueError(f"{path} must hold a numeric array; got dtype {getattr(array, 'dtype', '?')}")
    return array


# ------------------------------------------------------------------------------------------------ export
def export(store: str | os.PathLike | Store, outdir: str | os.PathLike, *, format: str = "interfacegan") -> list[str]:
    """Write the store's results in another tool's format into ``outdir``; returns the files written."""
    if format not in FORMATS:
        raise ValueError(f"--format must be one of {', '.join(FORMATS)}; got {format!r}")
    reader = Store.open(store.path if isinstance(store, Store) else str(store))
    return (export_interfacegan if format == "interfacegan" else export_ganspace)(reader, outdir)


def export_interfacegan(reader: Store, outdir: str | os.PathLike) -> list[str]:
    directions = [k for k in reader.directions() if k.startswith("interfacegan/")]
    reader.require_complete()
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    written: list[str] = []
    for key in directions:
        values, attrs = reader.read_direction(key)
        if values.shape[0] != 1:
            continue
        space = attrs.get("space", "z") + ("" if attrs.get("layer") is None else f"{attrs['layer']}")
        path = out / f"{key.split('/', 1)[1]}_{space}_boundary.npy"
        np.save(path, values.astype(np.float32))
        written.append(str(path))
    for space in reader.spaces:
        array = reader.latent_array(space)
        path = out / f"{space}.npy"
        target = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=array.shape)
        for rows, block in reader.iter_rows(f"latents/{space}"):
            target[rows] = block
        target.flush()
        del target
        written.append(str(path))
    if reader.attributes:
        targets = {}
        for name in reader.attributes:
            path = out / f"{name}_scores.npy"
            targets[name] = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(reader.n, 1))
            written.append(str(path))
        for rows, block in reader.iter_rows("scores"):
            for j, name in enumerate(reader.attributes):
                targets[name][rows, 0] = block[:, j]
        for target in targets.values():
            target.flush()
    return written


def export_ganspace(reader: Store, outdir: str | os.PathLike) -> list[str]:
    keys = [k for k in reader.directions() if k.startswith("ganspace/")]
    if not keys:
        raise StoreError(f"{reader.path} has no GANSpace directions; run `latent-engine pca {reader.path}` first")
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for key in keys:
        values, attrs = reader.read_direction(key)
        k, d = values.shape
        mean = np.asarray(attrs.get("mean"), np.float32).reshape(1, d)
        stdev = np.asarray(attrs.get("stdev") or np.sqrt(attrs["explained_variance"]), np.float32)
        path = out / f"{key.split('/', 1)[1]}_ganspace.npz"
        np.savez(path, lat_comp=values.reshape(k, 1, d).astype(np.float32), lat_mean=mean,
                 lat_stdev=stdev[:k], var_ratio=np.asarray(attrs["explained_variance_ratio"], np.float32)[:k])
        written.append(str(path))
    return written


# ------------------------------------------------------------------------------------------------ import
def import_interfacegan(codes: str | os.PathLike, scores: str | os.PathLike, store: str | os.PathLike, *,
                        attributes: Sequence[str] | None = None, chunk: int = 4096,
                        overwrite: bool = False) -> Store:
    """Build a store from InterFaceGAN's ``CODES.npy`` (N, d) and ``SCORES.npy`` (N,), (N, 1) or (N, m).

    ``attributes`` names the score columns (default: the scores file's name without ``_scores``, or
    ``attr_<j>`` for several columns). Returns the store opened read-only.
    """
    from engine.lock import StoreLock

    if isinstance(chunk, bool) or not isinstance(chunk, (int, np.integer)) or chunk <= 0:
        raise ValueError(f"--chunk must be a positive integer; got {chunk!r}")
    z = _open_npy(codes, "codes")
    s = _open_npy(scores, "scores")
    if z.ndim != 2 or z.shape[0] == 0 or z.shape[1] == 0:
        raise ValueError(f"{codes} must hold codes of shape (N, d); got {z.shape}")
    if s.ndim == 1:
        s = s[:, None]
    if s.ndim != 2 or s.shape[1] == 0:
        raise ValueError(f"{scores} must hold scores of shape (N,), (N, 1) or (N, m); got {s.shape}")
    if s.shape[0] != z.shape[0]:
        raise ValueError(f"{codes} holds {z.shape[0]} codes but {scores} holds {s.shape[0]} scores: the files must "
                         "have the same length")
    names = list(attributes or [])
    if not names:
        stem = Path(scores).stem
        base = stem[: -len("_scores")] if stem.endswith("_scores") else stem
        names = [base] if s.shape[1] == 1 else [f"{base}_{j}" for j in range(s.shape[1])]
    if len(names) != s.shape[1] or len(set(names)) != len(names):
        raise ValueError(f"--attribute must name each of the {s.shape[1]} score column(s) once; got {names}")
    n, d = z.shape
    meta = {"generator": None, "predictors": [], "seed": None,
            "imported_from": {"codes": os.path.abspath(codes), "scores": os.path.abspath(scores),
                              "format": "interfacegan"}}
    from engine.store import _exists
    if _exists(str(store)) and not overwrite:
        raise StoreError(f"{store} already exists; pass --overwrite to replace it")
    with StoreLock(str(store), purpose="import-interfacegan"):
        if overwrite:
            from engine.sampler import _check_overwritable
            _check_overwritable(str(store))
        target = Store.create(str(store), n=n, chunk=chunk, z_dim=d, attributes=names, meta=meta,
                              overwrite=overwrite)
        for index in range(target.n_chunks):
            rows = target.chunk_rows(index)
            target.write_chunk(index, {"latents/z": np.asarray(z[rows], np.float32),
                                       "scores": np.asarray(s[rows], np.float32)})
    return Store.open(str(store))


# ------------------------------------------------------------------------------------------------ faiss
METRICS = ("l2", "ip")


def index_path(store_path: str, space: str) -> Path:
    """Where the faiss index of ``space`` lives: beside the store, ``run.zarr`` -> ``run.zarr.<space>.faiss``."""
    base = Path(store_path.removeprefix("file://").rstrip("/"))
    return base.with_name(f"{base.name}.{space}.faiss")


def build_index(store: str | os.PathLike | Store, *, array: str | None = None, metric: str = "l2") -> dict:
    """Index the codes of ``array`` (default latents/w if stored, else latents/z; wp flattened) with faiss."""
    import faiss

    from engine.methods.ganspace import resolve_array

    if metric not in METRICS:
        raise ValueError(f"--metric must be one of {', '.join(METRICS)}; got {metric!r}")
    reader = Store.open(store.path if isinstance(store, Store) else str(store))
    if "://" in reader.path and not reader.path.startswith("file://"):
        raise ValueError("index writes a file beside the store: give a local store path")
    reader.require_complete()
    path, space = resolve_array(reader, array)
    d = int(np.prod(reader.array(path).shape[1:]))
    index = faiss.IndexFlatL2(d) if metric == "l2" else faiss.IndexFlatIP(d)
    for _, block in reader.iter_rows(path):
        index.add(np.ascontiguousarray(block.reshape(block.shape[0], -1), dtype=np.float32))
    out = index_path(reader.path, space)
    faiss.write_index(index, str(out))
    return {"path": str(out), "rows": int(index.ntotal), "dim": d, "metric": metric, "array": path}


def query(store: str | os.PathLike | Store, codes: np.ndarray, *, space: str | None = None,
          k: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` nearest stored rows of each code (n, d): (distances (n, k), row numbers (n, k))."""
    import faiss

    from engine.methods.ganspace import resolve_array

    reader = Store.open(store.path if isinstance(store, Store) else str(store))
    _, space = resolve_array(reader, space)
    path = index_path(reader.path, space)
    if not path.exists():
        raise FileNotFoundError(f"no index {path}; build it with `latent-engine index {reader.path} --array "
                                f"latents/{space}`")
    index = faiss.read_index(str(path))
    codes = np.ascontiguousarray(np.asarray(codes, np.float32).reshape(len(codes), -1))
    if codes.ndim != 2 or codes.shape[1] != index.d:
        raise ValueError(f"query codes must have {index.d} values each (the indexed {space} codes); got shape "
                         f"{codes.shape}")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= index.ntotal:
        raise ValueError(f"-k must be in [1, {index.ntotal}]; got {k!r}")
    distances, rows = index.search(codes, int(k))
    return distances, rows


__all__ = ["export", "export_interfacegan", "export_ganspace", "import_interfacegan", "build_index", "query",
           "FORMATS"]
