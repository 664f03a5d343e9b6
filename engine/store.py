"""The Store: a Zarr v3 group with latent-engine's fixed layout (schema 2; schema 1 stores open and read too).

All zarr access of the project goes through this module, so the layout lives in one place:

    (group attrs) latent_engine   run metadata: schema, engine version, seed, n, chunk, models, spaces, ...
    latents/z    (n, z_dim)             float32, chunks (chunk, z_dim); optional from schema 2 (imported W codes)
    latents/w    (n, w_dim)             float32, the mapping network's output before truncation
    latents/wp   (n, num_ws, w_dim)     float32, the per-layer codes the synthesis used (after truncation)
    scores       (n, m)                 float32, attrs `attributes`
    progress     (n_chunks,)            uint8, 1 once every array of that chunk is written
    directions/<method>/<name>  (k, d)  float32 unit rows, attrs: space, parameters, metrics
    tables/<name>               (r, c)  float32, attrs `rows`, `cols`
    inversion/error  (n,)               float32, an inverted store's reconstruction MSE per row
    inversion/files  (n,)               strings, the image each row was inverted from
    inversion/targets (n, C, H, W)      float32 in [-1, 1], the resized targets (only when asked to keep them)
    inversion/noise/<layer> (n, 1, r, r) float32, the per-image noise maps an inversion optimised (generators with
                                        noise inputs); group attrs `layers`, their synthesis order

Schema 2: every ``latents/*`` array's attrs carry ``source``, where its rows came from (``{"kind": "sampled",
"seed", "draw", "chunk"}``, ``{"kind": "mapped", "from": "latents/z", "generator", ...}``, ``{"kind":
"imported", "files", "format"}``, ``{"kind": "inverted", ...}``); ``Store.latent_source`` gives the same for
schema 1 stores, derived from their run metadata.

Every array names its dimensions, so plain ``zarr``, ``dask.array.from_zarr`` and ``xarray.open_zarr`` read
it without this package. ``progress`` has one zarr chunk per sampler chunk: zarr loses writes when two
processes write parts of one chunk, and it skips chunks equal to the fill value, so completion is recorded
explicitly and never inferred from chunk files.
"""
from __future__ import annotations

import datetime as _dt
import errno
import json
import os
import warnings
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from engine._version import __version__
from engine.atomic import Staging, local_path

SCHEMA = 2
READABLE_SCHEMAS = (1, 2)
# A store of more chunks than this makes `progress` (one zarr chunk per sampler chunk) too slow to read.
MAX_CHUNKS = 100_000
META_KEY = "latent_engine"
SPACES = ("z", "w", "wp")
LATENT_DIMS = {"z": ("sample", "z_dim"), "w": ("sample", "w_dim"), "wp": ("sample", "layer", "w_dim")}


class StoreError(ValueError):
    """A store that is missing, of another schema, incomplete or inconsistent with the request."""


class StoreWriteError(StoreError):
    """The file system refused a write (full, read-only, no permission); the message says what is left."""


# zarr's own writes go to '<key>.<uuid>.partial' and are renamed into place; a killed write leaves the partial
# file, which zarr then reports on every listing. Writers delete them (Store.recover); readers need not hear it.
warnings.filterwarnings("ignore", message=r"Object at .*\.partial is not recognized")


def write_failure(exc: OSError, what: str, state: str, retry: str) -> StoreWriteError:
    """A one-line error for an OSError raised while writing ``what``: the cause, what is left, what to do."""
    cause = {errno.ENOSPC: "disk full", errno.EDQUOT: "disk quota exceeded", errno.EROFS: "read-only file system",
             errno.EACCES: "permission denied", errno.EPERM: "permission denied"}.get(exc.errno)
    advice = {errno.ENOSPC: "free space and ", errno.EDQUOT: "free space and ",
              errno.EROFS: "write to a writable location or "}.get(exc.errno, "")
    where = f" ({exc.filename})" if cause in (None, "permission denied") and exc.filename else ""
    return StoreWriteError(f"{cause or exc.strerror or type(exc).__name__}{where} while writing {what}; "
                           f"{state}; {advice}{retry}")


def read_ahead(rows: Iterable[slice], read: Callable[[slice], np.ndarray],
               depth: int = 2) -> Iterator[tuple[slice, np.ndarray]]:
    """``(rows, read(rows))`` in order, with up to ``depth`` reads in flight on threads.

    zarr's decompression releases the GIL, so reads overlap each other and the caller's work on the last
    block; at most ``depth`` blocks wait in memory.
    """
    pending: deque = deque()
    with ThreadPoolExecutor(max_workers=depth, thread_name_prefix="latent-read") as pool:
        for r in rows:
            pending.append((r, pool.submit(read, r)))
            if len(pending) >= depth:
                done, future = pending.popleft()
                yield done, future.result()
        while pending:
            done, future = pending.popleft()
            yield done, future.result()


def warn_repairs(path: str, repairs: Sequence[str]) -> None:
    """One warning for what ``Store.recover`` tidied, so the user knows an earlier writer was interrupted."""
    if repairs:
        shown = "; ".join(repairs[:3]) + (f"; and {len(repairs) - 3} more" if len(repairs) > 3 else "")
        warnings.warn(f"{path}: tidied what an interrupted writer left: {shown}", stacklevel=3)


def check_writable(path: str) -> None:
    """Fail early, before any computation, when results could not be written to the local store at ``path``."""
    if is_remote(path):
        return
    root = Path(path.removeprefix("file://")).absolute()
    for folder, what in ((root, "the store"), (root.parent, "the folder of the store (its lock and staging)")):
        if folder.exists() and not os.access(folder, os.W_OK):
            reason = "is on a read-only file system" if _read_only_fs(folder) else "is not writable by this user"
            raise StoreWriteError(f"{what} {folder} {reason}; nothing was computed or written")


def _read_only_fs(folder: Path) -> bool:
    try:
        return bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def store_state(path: str) -> str:
    """What is at a local ``path``: 'missing', 'empty' (an empty folder), 'store', 'unfinished' (a store whose
    creation never completed), 'damaged' (its root zarr.json is unreadable) or 'foreign' (anything else)."""
    root = Path(path.removeprefix("file://"))
    if not root.exists():
        return "missing"
    if root.is_dir() and not any(root.iterdir()):
        return "empty"
    meta_file = root / "zarr.json"
    if not meta_file.is_file():
        return "foreign"
    try:
        meta = json.loads(meta_file.read_text())
    except (OSError, ValueError):
        return "damaged"
    if not isinstance(meta, dict):
        return "damaged"
    attrs = meta.get("attributes") or {}
    if META_KEY in attrs:
        return "store" if isinstance(attrs[META_KEY], dict) else "damaged"
    members = {p.name for p in root.iterdir()} - {"zarr.json"}
    layout = {"latents", "scores", "progress", "directions", "tables", "labels", "models", "inversion"}
    return "unfinished" if meta.get("node_type") == "group" and members and members <= layout else "foreign"


def engine_version() -> str:
    return __version__


def is_remote(path: str) -> bool:
    return "://" in path and not path.startswith("file://")


def exists(path: str) -> bool:
    if is_remote(path):
        import fsspec
        fs, root = fsspec.core.url_to_fs(path)
        return fs.exists(root)
    return Path(path.removeprefix("file://")).exists()


def _float_fill() -> float:
    return float("nan")


class Store:
    """A latent-engine store; create with ``Store.create``, open with ``Store.open`` (read-only by default)."""

    def __init__(self, group: zarr.Group, path: str, mode: str):
        self.group = group
        self.path = path
        self.mode = mode
        self.meta: dict[str, Any] = dict(group.attrs[META_KEY])

    # ------------------------------------------------------------------ open / create
    @classmethod
    def open(cls, path: str | os.PathLike, mode: str = "r") -> "Store":
        """Open an existing store; raises StoreError if ``path`` is not a latent-engine store this version reads."""
        path = str(path)
        if mode not in ("r", "r+"):
            raise ValueError(f"Store.open mode must be 'r' or 'r+'; got {mode!r}")
        if not exists(path):
            raise StoreError(f"no store at {path}")
        if not is_remote(path):
            state = store_state(path)
            if state == "damaged":
                raise StoreError(f"{path} is damaged: its root zarr.json cannot be read; sample it again with "
                                 "--overwrite")
            if state == "unfinished":
                raise StoreError(f"{path} is not a latent-engine store (no '{META_KEY}' attrs): its creation "
                                 "was interrupted; sample it again with --overwrite")
        try:
            group = zarr.open_group(path, mode=mode)
        except (FileNotFoundError, zarr.errors.GroupNotFoundError, ValueError, KeyError) as exc:
            raise StoreError(f"{path} is not a zarr v3 store ({type(exc).__name__})") from exc
        meta = group.attrs.get(META_KEY)
        if not isinstance(meta, dict):
            raise StoreError(f"{path} is a zarr group but not a latent-engine store (no '{META_KEY}' attrs)")
        if meta.get("schema") not in READABLE_SCHEMAS:
            raise StoreError(f"{path} has store schema {meta.get('schema')!r}; this latent-engine reads "
                             f"schemas {', '.join(map(str, READABLE_SCHEMAS))}")
        return cls(group, path, mode)

    @classmethod
    def create(cls, path: str | os.PathLike, *, n: int, chunk: int, z_dim: int | None = None,
               w_dim: int | None = None, num_ws: int | None = None, spaces: Sequence[str] = ("z",),
               attributes: Sequence[str] = (), meta: dict[str, Any] | None = None,
               sources: dict[str, dict[str, Any]] | None = None, overwrite: bool = False,
               fill: Callable[["Store"], None] | None = None, num_classes: int | None = None) -> "Store":
        """Create a store for ``n`` rows in chunks of ``chunk`` rows: empty, or filled by ``fill``.

        ``sources`` gives, per space, where its rows come from (the ``source`` attrs of ``latents/<space>``).
        ``num_classes`` (class-conditional generators) adds ``labels`` (n,) int32, each row's class, written
        with the codes (-1 until its chunk is).
        ``fill(store)`` writes the rows before the store is put in place, so a store made from files in one go
        (an import) replaces an existing one all or nothing. Refuses an existing path unless ``overwrite``;
        the caller holds the store's lock.
        """
        path = str(path)
        check_positive_int("n", n)
        check_positive_int("chunk", chunk)
        unknown = [s for s in spaces if s not in SPACES]
        if unknown or not spaces:
            raise ValueError(f"spaces must be among {SPACES} (at least one); got {list(spaces)}")
        if "z" in spaces and not z_dim:
            raise ValueError("space 'z' needs z_dim")
        if ("w" in spaces or "wp" in spaces) and not w_dim:
            raise ValueError("spaces 'w'/'wp' need a generator with a mapping network (w_dim)")
        if "wp" in spaces and not num_ws:
            raise ValueError("space 'wp' needs num_ws")
        unsourced = set(sources or {}) - set(spaces)
        if unsourced:
            raise ValueError(f"sources names spaces the store does not have: {sorted(unsourced)}")
        n_chunks = check_chunk_count(n, chunk)
        if num_classes is not None:
            check_positive_int("num_classes", num_classes)
        if is_remote(path):
            if exists(path) and not overwrite:
                raise StoreError(f"{path} already exists; pass --resume to continue it or --overwrite to replace it")
            group = zarr.open_group(path, mode="w")
            _lay_out(group, n=n, chunk=chunk, n_chunks=n_chunks, z_dim=z_dim, w_dim=w_dim, num_ws=num_ws,
                     spaces=spaces, attributes=attributes, meta=meta, sources=sources,
                     num_classes=num_classes)
            created = cls(group, path, "r+")
            if fill is not None:
                fill(created)
            return created
        # Built complete beside the target, then renamed into place: a creation killed half-way leaves only
        # staging (deleted by the next writer), never a folder that is neither a store nor free to replace.
        staging = Staging(path)
        staging.recover()
        if exists(path) and not overwrite:
            raise StoreError(f"{path} already exists; pass --resume to continue it or --overwrite to replace it")
        staged = staging.new_folder("create")
        try:
            group = zarr.open_group(str(staged), mode="w")
            _lay_out(group, n=n, chunk=chunk, n_chunks=n_chunks, z_dim=z_dim, w_dim=w_dim, num_ws=num_ws,
                     spaces=spaces, attributes=attributes, meta=meta, sources=sources,
                     num_classes=num_classes)
            if fill is not None:
                fill(cls(group, str(staged), "r+"))
            staging.install(staged, local_path(path))
        except OSError as exc:
            staging.discard(staged)
            state = "the existing store is unchanged" if exists(path) else "nothing was created"
            raise write_failure(exc, f"the new store {path}", state, "run the command again") from exc
        except StoreWriteError as exc:          # a chunk that ``fill`` wrote: the cause, said for a creation
            staging.discard(staged)
            state = "the existing store is unchanged" if exists(path) else "nothing was created"
            cause = exc.__cause__ if isinstance(exc.__cause__, OSError) else OSError(str(exc))
            raise write_failure(cause, f"the new store {path}", state, "run the command again") from exc
        except BaseException:
            staging.discard(staged)
            raise
        group = zarr.open_group(path, mode="r+")
        return cls(group, path, "r+")

    # ------------------------------------------------------------------ layout facts
    @property
    def n(self) -> int:
        return int(self.meta["n"])

    @property
    def chunk(self) -> int:
        return int(self.meta["chunk"])

    @property
    def n_chunks(self) -> int:
        return int(self.meta["n_chunks"])

    @property
    def attributes(self) -> list[str]:
        return list(self.meta.get("attributes", []))

    @property
    def spaces(self) -> list[str]:
        return list(self.meta["spaces"])

    @property
    def num_classes(self) -> int | None:
        """How many classes the generator's labels index; None for a store without ``labels``."""
        value = self.meta.get("num_classes")
        return int(value) if value else None

    def class_rows(self, label: int) -> np.ndarray:
        """The (sorted) indices of the committed rows of class ``label``, streamed from ``labels``.

        A ValueError names the problem: a store without labels, or a class outside 0..num_classes-1."""
        if self.num_classes is None:
            raise ValueError(f"{self.path} has no class labels (its generator is not class-conditional): drop "
                             "--class")
        if isinstance(label, bool) or not isinstance(label, (int, np.integer)) \
                or not 0 <= label < self.num_classes:
            raise ValueError(f"class must be an integer from 0 to {self.num_classes - 1}; got {label!r}")
        found = [span.start + np.flatnonzero(block == label) for span, block in self.iter_rows("labels")]
        rows = np.concatenate(found) if found else np.empty(0, np.int64)
        committed = self.progress()
        return rows[committed[rows // self.chunk].astype(bool)] if rows.size else rows

    def chunk_rows(self, index: int) -> slice:
        """The rows of sampler chunk ``index`` (the last chunk may be short)."""
        if not 0 <= index < self.n_chunks:
            raise IndexError(f"chunk {index} out of range [0, {self.n_chunks})")
        start = index * self.chunk
        return slice(start, min(start + self.chunk, self.n))

    def array(self, name: str) -> zarr.Array:
        """A stored array by path ('latents/z', 'scores', 'directions/sefa/all', ...)."""
        try:
            node = self.group[name]
        except KeyError:
            raise StoreError(f"{self.path} has no array {name!r}") from None
        if not isinstance(node, zarr.Array):
            raise StoreError(f"{self.path}: {name!r} is a group, not an array")
        return node

    def latent_array(self, space: str) -> zarr.Array:
        if space not in self.spaces:
            raise StoreError(f"{self.path} has no {space!r} codes; it stores {self.spaces}")
        return self.array(f"latents/{space}")

    def latent_source(self, space: str) -> dict[str, Any]:
        """Where the rows of ``latents/<space>`` came from (schema 2 attrs; derived for schema 1 stores)."""
        source = self.latent_array(space).attrs.get("source")
        if isinstance(source, dict):
            return dict(source)
        meta = self.meta
        if meta.get("imported_from"):
            return {"kind": "imported", "files": [v for k, v in meta["imported_from"].items() if k != "format"],
                    "format": meta["imported_from"].get("format")}
        if space == "z":
            return {"kind": "sampled", "seed": meta.get("seed"), "draw": meta.get("draw"), "chunk": self.chunk}
        # Schema 1 stored w as the first layer's copy of the mapping output (no built-in truncated it).
        return {"kind": "mapped", "from": "latents/z", "generator": meta.get("generator"),
                "layer": 0 if space == "w" else None}

    def attribute_index(self, name: str) -> int:
        if name not in self.attributes:
            raise StoreError(f"unknown attribute {name!r}; {self.path} has {self.attributes}")
        return self.attributes.index(name)

    # ------------------------------------------------------------------ progress
    def progress(self) -> np.ndarray:
        """(n_chunks,) bool: which chunks are committed."""
        return self.group["progress"][:].astype(bool)

    def pending_chunks(self) -> list[int]:
        return [int(i) for i in np.flatnonzero(~self.progress())]

    @property
    def complete(self) -> bool:
        return bool(self.progress().all())

    def require_complete(self) -> None:
        pending = self.pending_chunks()
        if pending:
            inverted = any(self.latent_source(space).get("kind") == "inverted" for space in self.spaces)
            command = f"invert IMAGES {self.path} --resume" if inverted else f"sample {self.path} ... --resume"
            raise StoreError(f"{self.path} is incomplete: {len(pending)} of {self.n_chunks} chunks are not "
                             f"written; finish it with `latent-engine {command}`")

    def write_chunk(self, index: int, arrays: dict[str, np.ndarray]) -> None:
        """Write every array of chunk ``index``, then commit it; a crash before the commit leaves it pending."""
        rows = self.chunk_rows(index)
        expected = rows.stop - rows.start
        for name, values in arrays.items():
            if values.shape[0] != expected:
                raise ValueError(f"chunk {index}: {name} has {values.shape[0]} rows, expected {expected}")
        try:
            for name, values in arrays.items():
                self.array(name)[rows] = values
            self.commit_chunk(index)
        except OSError as exc:
            raise write_failure(exc, f"chunk {index} of {self.path}", "the chunks committed before it are kept",
                                "continue the run with --resume") from exc

    def add_inversion_arrays(self, image_shape: Sequence[int] | None = None,
                             noise_layers: Sequence[tuple[str, int]] = ()) -> None:
        """Lay out an inverted store's ``inversion/`` arrays (see the module docstring), empty: ``error`` and
        ``files``, ``targets`` when ``image_shape`` (C, H, W) is given, and one ``noise/<layer>`` array per
        (layer name, resolution) of ``noise_layers``; written with each chunk. The image-sized arrays hold one
        shard per store chunk (written whole, in one object, as any chunk) of one-row inner chunks, so that
        ``explore`` and the report read the rows they show without the rest of their chunks (up to 24 MiB a
        row at 1024²)."""
        n, chunk = self.n, self.chunk
        group = self.group.require_group("inversion")
        if noise_layers:
            noise = group.require_group("noise")
            noise.attrs["layers"] = [str(name) for name, _ in noise_layers]
            for name, res in noise_layers:
                noise.create_array(str(name), shape=(n, 1, int(res), int(res)), chunks=(1, 1, int(res), int(res)),
                                   shards=(chunk, 1, int(res), int(res)), dtype="float32", fill_value=_float_fill(),
                                   dimension_names=("sample", "channel", "height", "width"),
                                   attributes={"layer": str(name), "resolution": int(res)})
        group.create_array("error", shape=(n,), chunks=(chunk,), dtype="float32", fill_value=_float_fill(),
                           dimension_names=("sample",), attributes={"units": "pixel MSE, images in [-1, 1]"})
        group.create_array("files", shape=(n,), chunks=(chunk,), dtype=str, fill_value="",
                           dimension_names=("sample",))
        if image_shape is not None:
            shape = (n, *(int(v) for v in image_shape))
            group.create_array("targets", shape=shape, chunks=(1, *shape[1:]), shards=(chunk, *shape[1:]),
                               dtype="float32",
                               fill_value=_float_fill(), dimension_names=("sample", "channel", "height", "width"),
                               attributes={"range": [-1.0, 1.0]})

    def noise_layers(self) -> list[tuple[str, int]]:
        """(layer name, resolution) of the per-image noise maps an inversion stored (``inversion/noise``), in
        the synthesis order; empty when the store holds none."""
        try:
            group = self.group["inversion/noise"]
        except KeyError:
            return []
        return [(name, int(self.array(f"inversion/noise/{name}").shape[-1])) for name in group.attrs["layers"]]

    def read_noise_maps(self, rows: slice | np.ndarray) -> list[np.ndarray]:
        """The stored noise maps of ``rows`` (a slice or row indices), one (len(rows), 1, r, r) array per
        ``noise_layers`` entry; empty when the store holds none."""
        return [self.array(f"inversion/noise/{name}")[rows] if isinstance(rows, slice)
                else self.array(f"inversion/noise/{name}").get_orthogonal_selection(
                    (np.asarray(rows, dtype=np.int64),))
                for name, _ in self.noise_layers()]

    def commit_chunk(self, index: int) -> None:
        self.group["progress"][index] = 1

    def iter_rows(self, name: str, block_chunks: int = 1) -> Iterator[tuple[slice, np.ndarray]]:
        """Stream ``name`` in blocks of whole store chunks: (rows, values), the next blocks read ahead.

        The one way the engine streams rows: memory holds O(block) whatever n is (``read_ahead``).
        """
        array = self.array(name)
        step = int(array.chunks[0]) * block_chunks
        n = int(array.shape[0])
        return read_ahead((slice(start, min(start + step, n)) for start in range(0, n, step)),
                          lambda rows: np.asarray(array[rows]))

    # ------------------------------------------------------------------ results
    def write_direction(self, method: str, name: str, values: np.ndarray, attrs: dict[str, Any]) -> zarr.Array:
        """Write ``directions/<method>/<name>`` (k, d) with attrs, all or nothing; replaces an earlier result.

        Callers decide whether replacing is allowed (``engine.methods._common.require_new``).
        """
        self._require_writable()
        values = np.asarray(values, dtype=np.float32)
        if values.ndim != 2:
            raise ValueError(f"a direction array must be (k, d); got shape {values.shape}")
        if not np.all(np.isfinite(values)):
            raise ValueError(f"directions/{method}/{name} has non-finite values")
        if "space" not in attrs:
            raise ValueError("direction attrs must name the 'space' the directions live in")
        _check_node_name(method)
        _check_node_name(name)

        def build(group: zarr.Group, key: str) -> None:
            array = group.create_array(key, shape=values.shape, dtype="float32", chunks=values.shape,
                                       dimension_names=(f"{name}_component", _direction_dim(attrs)),
                                       attributes=jsonable(attrs))
            array[...] = values

        self.group.require_group("directions").require_group(method)
        return self._replace(f"directions/{method}/{name}", build)

    def directions(self) -> list[str]:
        """All stored directions as 'method/name'."""
        found: list[str] = []
        root = self.group.get("directions")
        if root is None:
            return found
        for method, group in sorted(root.groups()):
            found += [f"{method}/{name}" for name, _ in sorted(group.arrays())]
        return found

    def read_direction(self, key: str) -> tuple[np.ndarray, dict[str, Any]]:
        """'method/name' -> ((k, d) float32, attrs)."""
        if key not in self.directions():
            raise StoreError(f"unknown direction {key!r}; {self.path} has {self.directions() or 'none'}")
        array = self.array(f"directions/{key}")
        return array[...], dict(array.attrs)

    def write_table(self, name: str, values: np.ndarray, rows: Sequence[str], cols: Sequence[str],
                    attrs: dict[str, Any] | None = None) -> zarr.Array:
        """Write ``tables/<name>`` (r, c) with row and column labels, all or nothing; replaces an earlier table."""
        self._require_writable()
        values = np.asarray(values, dtype=np.float32)
        if values.shape != (len(rows), len(cols)):
            raise ValueError(f"table {name}: values {values.shape} do not match {len(rows)} rows × {len(cols)} cols")
        _check_node_name(name)

        def build(group: zarr.Group, key: str) -> None:
            array = group.create_array(key, shape=values.shape, dtype="float32", chunks=values.shape,
                                       dimension_names=(f"{name}_row", f"{name}_col"),
                                       attributes=jsonable({"rows": list(rows), "cols": list(cols),
                                                             **(attrs or {})}))
            array[...] = values

        self.group.require_group("tables")
        return self._replace(f"tables/{name}", build)

    def _replace(self, key: str, build: Callable[[zarr.Group, str], None]) -> zarr.Array:
        self.replace_node(key, build)
        return self.array(key)

    def replace_node(self, key: str, build: Callable[[zarr.Group, str], None]) -> None:
        """Replace the node ``key`` (an array or a group; its parent groups are made if missing) by what
        ``build(parent, leaf)`` creates, built complete in staging and put in place in one step
        (``engine.atomic``): a reader sees the old node or the new one, never half of it. The caller holds the
        store's lock."""
        self._require_writable()
        parent_key, _, leaf = key.rpartition("/")
        parent = self.group.require_group(parent_key) if parent_key else self.group
        if is_remote(self.path):
            # Object stores cannot rename: written in place, so a reader may see it half-written.
            if leaf in parent:
                del parent[leaf]
            build(parent, leaf)
            return
        staging = Staging(self.path)
        staged = staging.new_folder("write")
        try:
            build(zarr.open_group(str(staged), mode="w"), "result")
            staging.install(staged / "result", local_path(self.path) / key)
        except OSError as exc:
            raise write_failure(exc, f"{key} of {self.path}", "the store is unchanged",
                                "run the command again") from exc
        finally:
            staging.discard(staged)

    def recover(self) -> list[str]:
        """Undo what a killed writer left: finish or drop its staged results, delete zarr's partial files.

        Call while holding the store's lock (the engine's writers do); returns one line per repair.
        """
        self._require_writable()
        if is_remote(self.path):
            return []
        repairs = Staging(self.path).recover()
        root = Path(self.path.removeprefix("file://"))
        for partial in root.rglob("*.partial"):
            partial.unlink(missing_ok=True)
            repairs.append(f"removed {partial.relative_to(root)}")
        return repairs

    def tables(self) -> list[str]:
        root = self.group.get("tables")
        return [] if root is None else sorted(name for name, _ in root.arrays())

    def read_table(self, name: str) -> tuple[np.ndarray, dict[str, Any]]:
        if name not in self.tables():
            raise StoreError(f"unknown table {name!r}; {self.path} has {self.tables() or 'none'}")
        array = self.array(f"tables/{name}")
        return array[...], dict(array.attrs)

    def update_meta(self, **fields: Any) -> None:
        """Merge ``fields`` into the run metadata (e.g. timings)."""
        self._require_writable()
        self.meta.update(jsonable(fields))
        self.group.attrs[META_KEY] = self.meta

    def _require_writable(self) -> None:
        if self.mode == "r":
            raise StoreError(f"{self.path} is open read-only; open it with mode='r+' to write results")

    def __repr__(self) -> str:
        return f"Store({self.path!r}, n={self.n}, chunk={self.chunk}, spaces={self.spaces})"


def _lay_out(group: zarr.Group, *, n: int, chunk: int, n_chunks: int, z_dim: int, w_dim: int | None,
             num_ws: int | None, spaces: Sequence[str], attributes: Sequence[str],
             meta: dict[str, Any] | None, sources: dict[str, dict[str, Any]] | None,
             num_classes: int | None = None) -> None:
    """Create every array of an empty store in ``group``; the run metadata is written last."""
    record = {
        "schema": SCHEMA, "engine_version": engine_version(), "n": int(n), "chunk": int(chunk),
        "n_chunks": int(n_chunks), "z_dim": int(z_dim) if z_dim else None, "w_dim": int(w_dim) if w_dim else None,
        "num_ws": int(num_ws) if num_ws else None, "spaces": list(spaces), "attributes": list(attributes),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        **({"num_classes": int(num_classes)} if num_classes else {}),
        **(meta or {}),
    }
    latents = group.create_group("latents")
    shapes = {"z": (n, z_dim), "w": (n, w_dim), "wp": (n, num_ws, w_dim)}
    for space in spaces:
        shape = shapes[space]
        latents.create_array(space, shape=shape, chunks=(chunk, *shape[1:]), dtype="float32",
                             fill_value=_float_fill(), dimension_names=LATENT_DIMS[space],
                             attributes=jsonable({"source": (sources or {}).get(space, {"kind": "unknown"})}))
    if attributes:
        group.create_array("scores", shape=(n, len(attributes)), chunks=(chunk, len(attributes)),
                           dtype="float32", fill_value=_float_fill(), dimension_names=("sample", "attribute"),
                           attributes={"attributes": list(attributes)})
    if num_classes:
        group.create_array("labels", shape=(n,), chunks=(chunk,), dtype="int32", fill_value=-1,
                           dimension_names=("sample",), attributes={"num_classes": int(num_classes)})
    group.create_array("progress", shape=(n_chunks,), chunks=(1,), dtype="uint8", fill_value=0,
                       dimension_names=("chunk",))
    group.create_group("directions")
    group.create_group("tables")
    group.attrs[META_KEY] = record


def _direction_dim(attrs: dict[str, Any]) -> str:
    """The dimension name of a direction's columns: equal names mean equal sizes, so xarray can open a whole
    ``directions/<method>`` group (one wp layer is w-sized; flattened wp is not)."""
    space = attrs["space"]
    if space == "wp":
        return "w_dim" if attrs.get("layer") is not None else "wp_flat_dim"
    return f"{space}_dim"


def _check_node_name(name: str) -> None:
    if not isinstance(name, str) or not name or "/" in name or name.startswith(".") or name.endswith(".partial"):
        raise ValueError(f"a stored name must be non-empty, without '/', not start with '.' nor end in "
                         f"'.partial'; got {name!r}")


def check_positive_int(name: str, value: object) -> int:
    """``value`` as an int, or a ValueError naming ``name`` when it is not a positive integer."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(f"{name} must be a positive integer; got {value!r}")
    return int(value)


def check_chunk_count(n: int, chunk: int) -> int:
    """The number of chunks of ``n`` rows in chunks of ``chunk``; a ValueError past ``MAX_CHUNKS``."""
    n_chunks = -(-n // chunk)
    if n_chunks > MAX_CHUNKS:
        raise ValueError(f"n={n} in chunks of {chunk} makes {n_chunks} chunks; a store holds at most "
                         f"{MAX_CHUNKS}: use chunks of at least {-(-n // MAX_CHUNKS)} rows")
    return n_chunks


def jsonable(value: Any) -> Any:
    """Convert numpy scalars/arrays in ``value`` to plain JSON types for zarr attrs."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value
