"""Other tools' file formats: InterFaceGAN's .npy files and GANSpace's .npz, both ways where it makes sense.

* ``export_interfacegan(store, outdir)``: ``<attr>_<space>_boundary.npy`` (1, d) float32 per InterFaceGAN
  direction (what InterFaceGAN's ``edit.py`` loads), ``<space>.npy`` codes per stored space and
  ``<attr>_scores.npy`` (N, 1) per attribute (what its ``train_boundary.py`` loads), and for an inverted store
  with noise maps ``noise_<layer>.npy`` (N, 1, r, r) per noise layer, without which its codes do not
  re-generate its reconstructions (``synthesize(..., noise_maps=)``). Arrays are written
  through ``np.lib.format.open_memmap`` chunk by chunk, so no full copy is held in RAM.
* ``export_ganspace(store, outdir)``: ``<space>_ganspace.npz`` per GANSpace direction set, with every key
  GANSpace's ``visualize.py`` and ``interactive.py`` read, float32, as its ``decomposition.py`` writes them
  for a decomposition of the latents themselves (StyleGAN's W): the components fill both the activation
  (``act_*``) and the latent (``lat_*``) slots. With S = (1, *row shape) (``(1, d)``; ``(1, L, d)`` for wp):
  ``act_comp``/``lat_comp`` (k, *S) unit rows, ``act_mean``/``lat_mean`` S, ``act_stdev``/``lat_stdev`` (k,)
  (√ explained variance), ``var_ratio`` (k,), and ``random_stdevs`` (k,), GANSpace's random baseline: the
  spread of the first ≤5,000 centred codes along k random unit directions (its normal draw, seed 2).
* ``export_latentclr(store, outdir)``: per LatentCLR direction set ``<name>_latentclr.npz`` with ``directions``
  (K, d) float32 unit rows and, for a z-dependent model (linear / nonlinear), ``model.<param>`` for every array
  of its ``models/latentclr/<name>`` group (PyTorch ``state_dict`` names and shapes, documented in
  ``engine.direction_models``), and ``<name>_latentclr.json``: the direction's attrs (space, tapped layer,
  settings, loss) and, under ``model``, the architecture (kind, k, size, depth, the edit formula).
* Every file is written under a temporary name in ``outdir`` and renamed when complete: an interrupted
  export leaves the previous file or none, never a half-written one.
* ``import_interfacegan(codes, scores, store)``: a store from InterFaceGAN's files, read memory-mapped and
  written chunk by chunk (codes become ``latents/z``; the store records where they came from).
* ``build_index(store)`` / ``query(store, codes)``: an exact faiss index (``IndexFlatL2`` or ``IndexFlatIP``) over
  stored codes, filled chunk by chunk and saved beside the store as ``<store>.<space>.faiss``; row ids are the
  store's row numbers. (faiss keeps the vectors it indexes in memory: d·4 bytes per row.) The index is
  renamed into place when complete, then ``<store>.<space>.faiss.json`` records the store it was built
  from (created time, n, array, hashes of the array's first and last chunk) and the index file's size;
  ``query`` refuses an index whose record is missing or does not match the store and file as they are now.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from engine.store import Store, StoreError, check_positive_int

FORMATS = ("interfacegan", "ganspace", "latentclr")


def open_npy(path: str | os.PathLike, what: str) -> np.ndarray:
    """The numeric .npy array at ``path``, memory-mapped; ``what`` names the file in errors ("codes")."""
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


@contextlib.contextmanager
def _replacing(path: Path) -> Iterator[Path]:
    """Yield a temporary name beside ``path``; when the block ends without error, move it onto ``path``.

    A reader of ``path`` sees the previous file or the complete new one, never a partial one; on an error
    the temporary file is removed.
    """
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        yield temporary
        with open(temporary, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)


# ------------------------------------------------------------------------------------------------ export
def export(store: str | os.PathLike | Store, outdir: str | os.PathLike, *, format: str = "interfacegan") -> list[str]:
    """Write the store's results in another tool's format into ``outdir``; returns the files written."""
    if format not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}; got {format!r}")
    reader = Store.open(store.path if isinstance(store, Store) else str(store))
    writers = {"interfacegan": export_interfacegan, "ganspace": export_ganspace, "latentclr": export_latentclr}
    return writers[format](reader, outdir)


def export_interfacegan(reader: Store, outdir: str | os.PathLike) -> list[str]:
    """InterFaceGAN's files of ``reader`` in ``outdir`` (see the module docstring); returns the paths written."""
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
        attribute = attrs.get("attribute") or key.split("/", 1)[1]    # 'smile', not the stored 'smile@w'
        path = out / f"{attribute}_{space}_boundary.npy"
        with _replacing(path) as temporary, open(temporary, "wb") as handle:
            np.save(handle, values.astype(np.float32))
        written.append(str(path))
    # An inverted store's codes re-generate its images only with their noise maps: those go beside them.
    arrays = [(f"latents/{space}", out / f"{space}.npy") for space in reader.spaces]
    arrays += [(f"inversion/noise/{name}", out / f"noise_{name}.npy") for name, _ in reader.noise_layers()]
    for name, path in arrays:
        with _replacing(path) as temporary:
            target = np.lib.format.open_memmap(temporary, mode="w+", dtype=np.float32, shape=reader.array(name).shape)
            for rows, block in reader.iter_rows(name):
                target[rows] = block
            target.flush()
            del target
        written.append(str(path))
    if reader.attributes:
        paths = [out / f"{name}_scores.npy" for name in reader.attributes]
        with contextlib.ExitStack() as stack:
            temporaries = [stack.enter_context(_replacing(path)) for path in paths]
            targets = [np.lib.format.open_memmap(t, mode="w+", dtype=np.float32, shape=(reader.n, 1))
                       for t in temporaries]
            for rows, block in reader.iter_rows("scores"):
                for j, target in enumerate(targets):
                    target[rows, 0] = block[:, j]
            for target in targets:
                target.flush()
            del targets, target
        written += [str(path) for path in paths]
    return written


def export_ganspace(reader: Store, outdir: str | os.PathLike) -> list[str]:
    """GANSpace's ``.npz`` of each ``directions/ganspace/*`` in ``outdir`` (keys: module docstring)."""
    keys = [k for k in reader.directions() if k.startswith("ganspace/")]
    if not keys:
        raise StoreError(f"{reader.path} has no GANSpace directions; run `latent-engine pca {reader.path}` first")
    layer_keys = [k for k in keys if reader.read_direction(k)[1].get("tapped_layer")]
    if layer_keys and len(layer_keys) == len(keys):
        raise StoreError(f"{reader.path} holds only layer GANSpace results ({', '.join(layer_keys)}), which "
                         "GANSpace's file format cannot hold; read them from the store")
    if layer_keys:
        # GANSpace's file pairs latent components with the PCA's own mean and spread in that space; a layer's
        # PCA regressed to the latent has neither (its PCA lives in feature space).
        warnings.warn(f"export --format ganspace leaves out {', '.join(layer_keys)}: a layer's PCA regressed to "
                      "the latent space has no latent mean or spread for GANSpace's file; read it from the store "
                      f"(directions/{layer_keys[0]})", UserWarning, stacklevel=2)
        keys = [k for k in keys if k not in layer_keys]
    reader.require_complete()
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for key in keys:
        values, attrs = reader.read_direction(key)
        path = out / f"{key.split('/', 1)[1]}_ganspace.npz"
        with _replacing(path) as temporary, open(temporary, "wb") as handle:
            np.savez_compressed(handle, **ganspace_arrays(reader, key, values, attrs))
        written.append(str(path))
    return written


def export_latentclr(reader: Store, outdir: str | os.PathLike) -> list[str]:
    """``<name>_latentclr.npz`` and ``.json`` per ``directions/latentclr/*`` in ``outdir`` (module docstring)."""
    from engine.direction_models import read_group
    from engine.store import jsonable

    keys = [k for k in reader.directions() if k.startswith("latentclr/")]
    if not keys:
        raise StoreError(f"{reader.path} has no LatentCLR directions; run `latent-engine latentclr {reader.path} "
                         "--layer NAME` first")
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for key in keys:
        values, attrs = reader.read_direction(key)
        arrays = {"directions": values.astype(np.float32)}
        record = dict(attrs)
        if attrs.get("z_dependent"):
            params, architecture = read_group(reader, attrs["model"])
            arrays.update({f"model.{name}": value for name, value in params.items()})
            record["model"] = {"group": attrs["model"], **architecture}
        name = key.split("/", 1)[1]
        npz, meta = out / f"{name}_latentclr.npz", out / f"{name}_latentclr.json"
        with _replacing(npz) as temporary, open(temporary, "wb") as handle:
            np.savez(handle, **arrays)
        with _replacing(meta) as temporary:
            temporary.write_text(json.dumps(jsonable(record), indent=1))
        written += [str(npz), str(meta)]
    return written


RANDOM_DIRECTIONS_SEED = 2        # GANSpace's SEED_RANDOM_DIRS: the same random baseline as its own files
RANDOM_DIRECTIONS_ROWS = 5000     # GANSpace measures the random baseline on at most this many samples


def ganspace_arrays(reader: Store, key: str, values: np.ndarray, attrs: dict) -> dict[str, np.ndarray]:
    """The eight float32 arrays of GANSpace's component file for the direction set ``key`` of ``reader``."""
    k, dim = values.shape
    path = attrs.get("array") or f"latents/{attrs.get('space', 'w')}"
    if path not in [f"latents/{s}" for s in reader.spaces]:
        raise StoreError(f"directions/{key} was computed from {path}, which {reader.path} does not store")
    sample_shape = (1, *reader.array(path).shape[1:])
    if int(np.prod(sample_shape)) != dim:
        raise StoreError(f"directions/{key} has {dim} values per component but {path} has {sample_shape[1:]}")
    mean = np.asarray(attrs["mean"], np.float64).reshape(dim)
    stdev = np.asarray(attrs.get("stdev") or np.sqrt(attrs["explained_variance"]), np.float32)[:k]
    components = values.reshape(k, *sample_shape)          # PCA's rows are unit already, as GANSpace's are
    return {name: np.ascontiguousarray(value, np.float32) for name, value in {
        "act_comp": components, "act_mean": mean.reshape(sample_shape), "act_stdev": stdev,
        "lat_comp": components, "lat_mean": mean.reshape(sample_shape), "lat_stdev": stdev,
        "var_ratio": np.asarray(attrs["explained_variance_ratio"])[:k],
        "random_stdevs": random_stdevs(reader, path, mean, k)}.items()}


def random_stdevs(reader: Store, path: str, mean: np.ndarray, k: int, block: int = 256) -> np.ndarray:
    """Std of the first ≤5,000 codes of ``path``, centred on ``mean``, along ``k`` random unit directions.

    The directions are GANSpace's: rows of a standard normal draw (numpy ``RandomState``, seed 2), normalised;
    drawn ``block`` rows at a time (the same stream) so memory stays O(block × d).
    """
    dim = mean.size
    rows = min(RANDOM_DIRECTIONS_ROWS, reader.n)
    codes = np.asarray(reader.array(path)[:rows], np.float64).reshape(rows, dim) - mean
    generator = np.random.RandomState(RANDOM_DIRECTIONS_SEED)
    stdevs = []
    for start in range(0, k, block):
        directions = generator.normal(size=(min(block, k - start), dim))
        directions /= np.linalg.norm(directions, axis=1, keepdims=True)
        stdevs.append((codes @ directions.T).std(axis=0))
    return np.concatenate(stdevs)


# ------------------------------------------------------------------------------------------------ import
def import_interfacegan(codes: str | os.PathLike, scores: str | os.PathLike, store: str | os.PathLike, *,
                        attributes: Sequence[str] | None = None, chunk: int = 4096, space: str = "z",
                        overwrite: bool = False) -> Store:
    """Build a store from InterFaceGAN's ``CODES.npy`` and ``SCORES.npy`` (N,), (N, 1) or (N, m).

    ``space`` says what the codes are, as InterFaceGAN's ``generate_data.py`` names its files: ``z`` (N, d),
    ``w`` (N, d) or ``wp`` (N, L, d); they are stored as ``latents/<space>``, with the source files in its
    attrs. ``attributes`` names the score columns (default: the scores file's name without ``_scores``, or
    ``attr_<j>`` for several columns). Returns the store opened read-only.
    """
    from engine.lock import StoreLock

    check_positive_int("chunk", chunk)
    if space not in ("z", "w", "wp"):
        raise ValueError(f"space must be z, w or wp; got {space!r}")
    z = open_npy(codes, "codes")
    s = open_npy(scores, "scores")
    expected = "(N, L, d)" if space == "wp" else "(N, d)"
    if z.ndim != (3 if space == "wp" else 2) or 0 in z.shape:
        raise ValueError(f"{codes} must hold {space} codes of shape {expected}; got {z.shape}")
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
        raise ValueError(f"attributes must name each of the {s.shape[1]} score column(s) once; got {names}")
    n, d = z.shape[0], z.shape[-1]
    meta = {"generator": None, "predictors": [], "seed": None,
            "imported_from": {"codes": os.path.abspath(codes), "scores": os.path.abspath(scores),
                              "format": "interfacegan"}}
    from engine.store import exists
    if exists(str(store)) and not overwrite:
        raise StoreError(f"{store} already exists; pass --overwrite to replace it")
    with StoreLock(str(store), purpose="import-interfacegan"):
        if overwrite:
            from engine.sampler import check_overwritable
            check_overwritable(str(store))
        source = {"kind": "imported", "format": "interfacegan", "files": [os.path.abspath(codes)]}
        def fill(target: Store) -> None:
            for index in range(target.n_chunks):
                rows = target.chunk_rows(index)
                target.write_chunk(index, {f"latents/{space}": np.asarray(z[rows], np.float32),
                                           "scores": np.asarray(s[rows], np.float32)})

        Store.create(str(store), n=n, chunk=chunk, z_dim=d if space == "z" else None,
                     w_dim=None if space == "z" else d, num_ws=z.shape[1] if space == "wp" else None,
                     spaces=[space], attributes=names, meta=meta, sources={space: source}, overwrite=overwrite,
                     fill=fill)
    return Store.open(str(store))


# ------------------------------------------------------------------------------------------------ faiss
METRICS = ("l2", "ip")


def index_path(store_path: str, space: str) -> Path:
    """Where the faiss index of ``space`` lives: beside the store, ``run.zarr`` -> ``run.zarr.<space>.faiss``."""
    base = Path(store_path.removeprefix("file://").rstrip("/"))
    return base.with_name(f"{base.name}.{space}.faiss")


def record_path(store_path: str, space: str) -> Path:
    """The index's record of the store it was built from: ``<index>.json``."""
    path = index_path(store_path, space)
    return path.with_name(path.name + ".json")


def store_fingerprint(reader: Store, path: str) -> dict:
    """What identifies the rows of ``path`` in ``reader``: created time, n, array, first/last chunk hashes."""
    def digest(index: int) -> str:
        block = np.ascontiguousarray(reader.array(path)[reader.chunk_rows(index)], np.float32)
        return hashlib.sha256(block.tobytes()).hexdigest()

    return {"created": reader.meta.get("created"), "n": reader.n, "array": path,
            "first_chunk_sha256": digest(0), "last_chunk_sha256": digest(reader.n_chunks - 1)}


def build_index(store: str | os.PathLike | Store, *, array: str | None = None, metric: str = "l2") -> dict:
    """Index the codes of ``array`` (default latents/w if stored, else latents/z; wp flattened) with faiss.

    The index file is complete before it takes its name; its record (``record_path``) is written after it.
    Returns path, rows, dim, metric and array.
    """
    import faiss

    from engine.spaces import resolve_array

    if metric not in METRICS:
        raise ValueError(f"metric must be one of {', '.join(METRICS)}; got {metric!r}")
    reader = Store.open(store.path if isinstance(store, Store) else str(store))
    if "://" in reader.path and not reader.path.startswith("file://"):
        raise ValueError("index writes a file beside the store: give a local store path")
    reader.require_complete()
    path, space = resolve_array(reader, array)
    d = int(np.prod(reader.array(path).shape[1:]))
    index = faiss.IndexFlatL2(d) if metric == "l2" else faiss.IndexFlatIP(d)
    for _, block in reader.iter_rows(path):
        index.add(np.ascontiguousarray(block.reshape(block.shape[0], -1), dtype=np.float32))
    out, record = index_path(reader.path, space), record_path(reader.path, space)
    result = {"path": str(out), "rows": int(index.ntotal), "dim": d, "metric": metric, "array": path}
    with contextlib.suppress(FileNotFoundError):
        os.unlink(record)           # between the two renames the index has no record: refused, not trusted
    with _replacing(out) as temporary:
        faiss.write_index(index, str(temporary))
    with _replacing(record) as temporary:
        temporary.write_text(json.dumps({**result, "index_bytes": out.stat().st_size,
                                         "store": store_fingerprint(reader, path)}, indent=2) + "\n")
    return result


def _rerun(reader: Store, space: str) -> str:
    return f"run `latent-engine index {reader.path} --array latents/{space}` again"


def index_record(reader: Store, space: str) -> dict:
    """The record of ``space``'s index, checked against the store and the index file as they are now.

    Raises FileNotFoundError without an index, StoreError when the record is missing, unreadable or stale.
    """
    path, record_file = index_path(reader.path, space), record_path(reader.path, space)
    if not path.exists():
        raise FileNotFoundError(f"no index {path}; build it with `latent-engine index {reader.path} --array "
                                f"latents/{space}`")
    try:
        record = json.loads(record_file.read_text())
        built_from = record["store"]
        array, size = built_from["array"], int(record["index_bytes"])
    except (OSError, ValueError, KeyError, TypeError):
        raise StoreError(f"the index {path} has no readable record of the store it was built from "
                         f"({record_file.name}); {_rerun(reader, space)}") from None
    if size != path.stat().st_size:
        raise StoreError(f"the index {path} is {path.stat().st_size} bytes but was written as {size}: it is "
                         f"damaged; {_rerun(reader, space)}")
    if array not in [f"latents/{s}" for s in reader.spaces] or store_fingerprint(reader, array) != built_from:
        raise StoreError(f"the index {path} is stale: it was built from {reader.path} as created "
                         f"{built_from.get('created')} with {built_from.get('n')} rows, and the store has "
                         f"changed since; {_rerun(reader, space)}")
    return record


def _read_index(path: Path, reader: Store, space: str):
    import faiss

    try:
        return faiss.read_index(str(path))
    except RuntimeError as exc:
        detail = re.sub(r"^Error in .*? at \S+:\d+: ", "", str(exc).strip().splitlines()[0])
        raise StoreError(f"cannot read the faiss index {path} ({detail}); {_rerun(reader, space)}") from None


def query(store: str | os.PathLike | Store, codes: np.ndarray, *, space: str | None = None,
          k: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` nearest stored rows of each code (n, d): (distances (n, k), row numbers (n, k)).

    Distances are squared L2 for an ``l2`` index and inner products for an ``ip`` one (``index_record``'s
    ``metric``). Refuses an index that does not match the store (see ``index_record``).
    """
    import faiss

    from engine.spaces import resolve_array

    reader = Store.open(store.path if isinstance(store, Store) else str(store))
    _, space = resolve_array(reader, space)
    record = index_record(reader, space)
    index = _read_index(index_path(reader.path, space), reader, space)
    metric = {faiss.METRIC_L2: "l2", faiss.METRIC_INNER_PRODUCT: "ip"}.get(index.metric_type)
    if (index.ntotal, index.d, metric) != (reader.n, record["dim"], record["metric"]):
        raise StoreError(f"the index {index_path(reader.path, space)} holds {index.ntotal} codes of {index.d} "
                         f"values ({metric}), not what its record says ({reader.n} of {record['dim']}, "
                         f"{record['metric']}); {_rerun(reader, space)}")
    codes = np.ascontiguousarray(np.asarray(codes, np.float32).reshape(len(codes), -1))
    if codes.ndim != 2 or codes.shape[1] != index.d:
        raise ValueError(f"query codes must have {index.d} values each (the indexed {space} codes); got shape "
                         f"{codes.shape}")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= index.ntotal:
        raise ValueError(f"-k must be in [1, {index.ntotal}]; got {k!r}")
    distances, rows = index.search(codes, int(k))
    return distances, rows


__all__ = ["export", "export_interfacegan", "export_ganspace", "import_interfacegan", "build_index", "query",
           "index_record", "FORMATS", "export_latentclr"]
