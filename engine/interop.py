"""Other tools' file formats: InterFaceGAN's .npy files and GANSpace's .npz, both ways where it makes sense.

* ``export_interfacegan(store, outdir)``: ``<attr>_<space>_boundary.npy`` (1, d) float32 per InterFaceGAN
  direction (what InterFaceGAN's ``edit.py`` loads), ``<space>.npy`` codes per stored space and
  ``<attr>_scores.npy`` (N, 1) per attribute (what its ``train_boundary.py`` loads). Arrays are written
  through ``np.lib.format.open_memmap`` chunk by chunk, so no full copy is held in RAM.
* ``export_ganspace(store, outdir)``: ``<space>_ganspace.npz`` per GANSpace direction set with GANSpace's
  keys ``lat_comp`` (k, 1, d), ``lat_mean`` (1, d), ``lat_stdev`` (k,), ``var_ratio`` (k,).
* ``import_interfacegan(codes, scores, store)``: a store from InterFaceGAN's files, read memory-mapped and
  written chunk by chunk (codes become ``latents/z``; the store records where they came from).
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


__all__ = ["export", "export_interfacegan", "export_ganspace", "import_interfacegan", "FORMATS"]
