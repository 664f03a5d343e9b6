"""The chunked, seeded, resumable sampler: latent draw -> generator -> predictors -> store.

The chunk is the unit of work, resumption and distribution. The codes of chunk i are a pure function of
(seed, i, chunk, z_dim) — ``draw_codes`` — so a store comes out identical whichever process, device or
Dask worker wrote it, resumed or not. Within one process the draw of the next chunk and the writes of the
previous one run on threads while the device computes the current one; both queues are bounded, so memory
holds a few chunks whatever n is.
"""
from __future__ import annotations

import queue
import threading
import time
import warnings
from contextlib import nullcontext
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from engine.allocator import retain_freed_memory
from engine.devices import default_batch, resolve_device
from engine.lock import StoreLock
from engine.models.base import Generator, Predictor
from engine.models.registry import load_generator, load_predictor
from engine.store import MAX_CHUNKS, Store, StoreError, _exists, _is_remote, store_state, warn_repairs

DRAW_RECIPE = "numpy PCG64(SeedSequence(seed, spawn_key=(0, chunk_index))).standard_normal((chunk, z_dim), float32)[:rows]"
_QUEUE_DEPTH = 2


def draw_codes(seed: int, index: int, chunk: int, z_dim: int, rows: int | None = None) -> np.ndarray:
    """The z codes of chunk ``index``: a function of (seed, index, chunk, z_dim) only, identical everywhere."""
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=(0, index))))
    # The generator fills row after row, so the first ``rows`` rows of the chunk's draw are drawn alone:
    # a short last chunk (or chunk > n) never allocates the full chunk.
    return rng.standard_normal((chunk if rows is None else min(rows, chunk), z_dim), dtype=np.float32)


def spaces_for(generator: Generator, requested: Sequence[str] | None) -> list[str]:
    """Validate the requested latent spaces against the generator (default: z, plus w when it has a mapping)."""
    if requested is None or len(requested) == 0:
        return ["z", "w"] if generator.has_mapping else ["z"]
    spaces = list(dict.fromkeys(["z", *requested]))
    unknown = [s for s in spaces if s not in ("z", "w", "wp")]
    if unknown:
        raise ValueError(f"--space must be z, w or wp; got {unknown}")
    if not generator.has_mapping and ("w" in spaces or "wp" in spaces):
        raise ValueError(f"generator {getattr(generator, 'spec', generator)!r} has no mapping network: "
                         "only the 'z' space exists")
    return spaces


@dataclass
class ChunkComputer:
    """Runs one chunk of codes through the generator and predictors on one device, batch by batch."""

    generator: Generator
    predictors: Sequence[Predictor]
    spaces: Sequence[str]
    batch: int
    device: torch.device

    def __post_init__(self) -> None:
        if self.batch <= 0:
            raise ValueError(f"batch must be a positive integer; got {self.batch!r}")
        self.attributes = [a for P in self.predictors for a in P.attributes]

    def __call__(self, z: np.ndarray) -> dict[str, np.ndarray]:
        rows = z.shape[0]
        G = self.generator
        out: dict[str, np.ndarray] = {"latents/z": z}
        if "w" in self.spaces:
            out["latents/w"] = np.empty((rows, G.w_dim), np.float32)
        if "wp" in self.spaces:
            out["latents/wp"] = np.empty((rows, G.num_ws, G.w_dim), np.float32)
        if self.attributes:
            out["scores"] = np.empty((rows, len(self.attributes)), np.float32)
        with torch.inference_mode():
            for start in range(0, rows, self.batch):
                stop = min(start + self.batch, rows)
                zb = torch.from_numpy(z[start:stop]).to(self.device)
                ws = G.mapping(zb)
                if "w" in self.spaces:
                    out["latents/w"][start:stop] = ws[:, 0].float().cpu().numpy()
                if "wp" in self.spaces:
                    out["latents/wp"][start:stop] = ws.float().cpu().numpy()
                if self.attributes:
                    images = G.synthesis(ws)
                    out["scores"][start:stop] = self._score(images).cpu().numpy()
        return out

    def _score(self, images: torch.Tensor) -> torch.Tensor:
        columns = []
        for P in self.predictors:
            scores = P(images)
            if scores.ndim != 2 or scores.shape != (images.shape[0], len(P.attributes)):
                raise ValueError(f"predictor {getattr(P, 'spec', P)!r} returned shape {tuple(scores.shape)}; "
                                 f"expected ({images.shape[0]}, {len(P.attributes)})")
            columns.append(scores.float())
        return torch.cat(columns, dim=1)


@dataclass
class RunStats:
    """What a sampling run did: rows written, wall time, NaN scores seen."""

    rows: int = 0
    seconds: float = 0.0
    nan_scores: int = 0
    chunks: list[int] = field(default_factory=list)

    @property
    def samples_per_s(self) -> float:
        return self.rows / self.seconds if self.seconds else 0.0


def run_chunks(store: Store, computer: ChunkComputer, chunks: Iterable[int], seed: int,
               on_chunk: Callable[[int, int], None] | None = None) -> RunStats:
    """Compute and commit ``chunks`` of ``store``, overlapping the draw and the writes with the device work.

    ``on_chunk(index, rows)`` is called after each commit (progress bars). The first error on any thread
    stops the run; committed chunks stay committed, the rest stay pending for ``--resume``.
    """
    chunks = list(chunks)
    stats = RunStats()
    meta = store.meta
    drawn: queue.Queue = queue.Queue(_QUEUE_DEPTH)
    computed: queue.Queue = queue.Queue(_QUEUE_DEPTH)
    stop = threading.Event()
    errors: list[BaseException] = []

    def put(q: queue.Queue, item: object) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def draw() -> None:
        try:
            for index in chunks:
                rows = store.chunk_rows(index)
                z = draw_codes(seed, index, meta["chunk"], meta["z_dim"], rows.stop - rows.start)
                if not put(drawn, (index, z)):
                    return
            put(drawn, None)
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread
            errors.append(exc)
            stop.set()

    def write() -> None:
        try:
            while True:
                item = computed.get()
                if item is None:
                    return
                index, arrays = item
                if "scores" in arrays:
                    stats.nan_scores += int(np.isnan(arrays["scores"]).sum())
                store.write_chunk(index, arrays)
                stats.rows += arrays["latents/z"].shape[0]
                stats.chunks.append(index)
                if on_chunk is not None:
                    on_chunk(index, arrays["latents/z"].shape[0])
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread
            errors.append(exc)
            stop.set()

    threads = [threading.Thread(target=draw, name="sampler-draw", daemon=True),
               threading.Thread(target=write, name="sampler-write", daemon=True)]
    for thread in threads:
        thread.start()
    start = time.perf_counter()
    try:
        while not stop.is_set():
            try:
                item = drawn.get(timeout=0.1)
            except queue.Empty:
                continue
            if item is None:
                break
            index, z = item
            arrays = computer(z)
            arrays = {name: values for name, values in arrays.items() if name in _stored(store)}
            if not put(computed, (index, arrays)):
                break
    except BaseException:
        stop.set()
        raise
    finally:
        # Let the writer drain what was computed (those chunks are complete) before reporting.
        while threads[1].is_alive():
            try:
                computed.put(None, timeout=0.1)
                break
            except queue.Full:
                if stop.is_set() and errors:
                    break
        threads[1].join()
        stop.set()
        threads[0].join(timeout=5)
        stats.seconds = time.perf_counter() - start
    if errors:
        raise errors[0]
    return stats


def _stored(store: Store) -> set[str]:
    names = {f"latents/{s}" for s in store.spaces}
    if store.attributes:
        names.add("scores")
    return names


def _spec_of(model: object) -> str:
    return getattr(model, "spec", None) or f"{type(model).__module__}:{type(model).__qualname__}"


def prepare_store(path: str, generator: Generator, predictors: Sequence[Predictor], *, n: int, seed: int,
                  chunk: int, spaces: Sequence[str], resume: bool, overwrite: bool) -> Store:
    """Create the store for a run, or reopen it for ``resume`` after checking it is the same run."""
    attributes = [a for P in predictors for a in P.attributes]
    if len(set(attributes)) != len(attributes):
        raise ValueError(f"attribute names collide across predictors: {attributes}")
    record = {"seed": int(seed), "generator": _spec_of(generator),
              "predictors": [_spec_of(P) for P in predictors], "draw": DRAW_RECIPE,
              "torch_version": torch.__version__}
    if resume and _exists(path):
        store = Store.open(path, mode="r+")          # a damaged or unfinished store says so, and how to redo it
        expected = {"n": n, "chunk": chunk, "z_dim": generator.z_dim, "spaces": list(spaces),
                    "attributes": attributes, **{k: record[k] for k in ("seed", "generator", "predictors")}}
        for key, value in expected.items():
            if store.meta.get(key) != value:
                raise StoreError(f"cannot resume {path}: it was sampled with {key}={store.meta.get(key)!r}, "
                                 f"this run asks for {value!r}")
        warn_repairs(path, store.recover())
        return store
    if overwrite:
        _check_overwritable(path)
    return Store.create(path, n=n, chunk=chunk, z_dim=generator.z_dim,
                        w_dim=generator.w_dim if generator.has_mapping else None,
                        num_ws=generator.num_ws if generator.has_mapping else None,
                        spaces=spaces, attributes=attributes, meta=record, overwrite=overwrite)


def _check_overwritable(path: str) -> None:
    """--overwrite replaces stores (damaged or unfinished ones too), never a folder that holds something else."""
    if _is_remote(path):
        if _exists(path):
            Store.open(path)
        return
    if store_state(path) == "foreign":
        raise StoreError(f"refusing to overwrite {path}: it exists and is not a latent-engine store")


def sample(path: str, generator: str | Generator, predictors: Sequence[str | Predictor] = (), *, n: int,
           seed: int = 0, chunk: int = 4096, batch: int | None = None, device: str | torch.device = "auto",
           spaces: Sequence[str] | None = None, resume: bool = False, overwrite: bool = False,
           progress: bool = True, workers: int | None = None, scheduler: str | None = None,
           gpus: str | Sequence[int] | None = None) -> Store:
    """Sample ``n`` codes into the store at ``path`` and return it (opened read-only).

    ``generator`` and ``predictors`` are SPEC strings (see ``engine.models.registry``) or model objects.
    Exactly one of a fresh path, ``resume`` (continue an interrupted run) or ``overwrite`` applies.
    ``workers``, ``scheduler`` or ``gpus`` spread the chunks over a Dask cluster (``engine.distributed``);
    the store is identical either way. ``batch`` (rows per generator call) defaults by device type
    (``engine.devices.DEFAULT_BATCH``); it changes speed and memory, never the codes.
    """
    from engine.progress import progress_bar

    for name, value in (("n", n), ("chunk", chunk), ("batch", 1 if batch is None else batch)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
            raise ValueError(f"{name} must be a positive integer; got {value!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer; got {seed!r}")
    if resume and overwrite:
        raise ValueError("resume and overwrite exclude each other")
    chunk = min(int(chunk), int(n))      # a chunk beyond n would only be a larger empty zarr chunk
    if -(-n // chunk) > MAX_CHUNKS:
        raise ValueError(f"n={n} in chunks of {chunk} makes {-(-n // chunk)} chunks; a store holds at most "
                         f"{MAX_CHUNKS}: use chunks of at least {-(-n // MAX_CHUNKS)} rows")
    path = str(path)
    distributed = workers is not None or scheduler is not None or gpus is not None
    if distributed and not (isinstance(generator, str) and all(isinstance(p, str) for p in predictors)):
        raise ValueError("distributed sampling builds the models on each worker: pass SPEC strings, not objects")
    if distributed:
        from engine.distributed import cluster_client, validate_cluster_flags
        validate_cluster_flags(workers, scheduler, gpus)      # bad flags fail before anything is written
    retain_freed_memory()  # batch after batch reuses the same buffers: see engine.allocator
    dev = resolve_device(device)
    if batch is None:
        batch = default_batch("cuda" if gpus is not None else dev)
    G = load_generator(generator, dev) if isinstance(generator, str) else generator
    Ps = [load_predictor(p, G, dev) if isinstance(p, str) else p for p in predictors]
    chosen = spaces_for(G, spaces)
    with StoreLock(path, purpose="sample"), \
            (cluster_client(workers, scheduler, gpus) if distributed else nullcontext()) as cluster:
        # The cluster is up (or the scheduler reached) before the store is created: no empty store is left
        # behind by an unreachable address.
        store = prepare_store(path, G, Ps, n=n, seed=seed, chunk=chunk, spaces=chosen,
                              resume=resume, overwrite=overwrite)
        pending = store.pending_chunks()
        done_rows = n - sum(store.chunk_rows(i).stop - store.chunk_rows(i).start for i in pending)
        with progress_bar(total=n, initial=done_rows, desc="sample", unit="samples", enabled=progress) as bar:
            if distributed:
                from engine.distributed import run_distributed
                stats = run_distributed(store, generator, list(predictors), pending, batch=batch, device=device,
                                        cluster=cluster, on_chunk=lambda i, rows: bar.update(rows))
            else:
                computer = ChunkComputer(G, Ps, chosen, batch, dev)
                stats = run_chunks(store, computer, pending, seed, on_chunk=lambda i, rows: bar.update(rows))
        if stats.rows:
            store.update_meta(device=str(dev), batch=int(batch), samples_per_s=round(stats.samples_per_s, 1))
        if stats.nan_scores:
            warnings.warn(f"{path}: predictors returned {stats.nan_scores} NaN scores; they are stored as NaN "
                          "and `latent-engine info` counts them per attribute", stacklevel=2)
    return Store.open(path)
