"""The chunked, seeded, resumable sampler: latent draw -> generator -> predictors -> store.

The chunk is the unit of work, resumption and distribution. The codes of chunk i are a pure function of
(seed, i, chunk, z_dim) — ``draw_codes`` — so a store comes out identical whichever process, device or
Dask worker wrote it, resumed or not. Sampling is one chunked job (``SamplingJob``: read = draw the codes,
compute = generator and predictors, write = commit) that either executor of ``engine.runtime`` runs: the
threaded in-process pipeline or Dask tasks.
"""
from __future__ import annotations

import os
import threading
import warnings
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field

import numpy as np
import torch

from engine.allocator import retain_freed_memory
from engine.devices import default_batch, resolve_device
from engine.distributed import ClusterError, ClusterHandle, ClusterRequest, cluster_client, validate_cluster_flags
from engine.lock import StoreLock
from engine.models.base import Generator, Predictor, conditional, map_codes, mapped_w, synthesize
from engine.models.registry import load_generator, load_predictor
from engine.spaces import spaces_for
from engine.runtime import RunStats, run_chunk, run_in_process, run_on_dask
from engine.runtime.host_copies import HostCopies, to_device_rows
from engine.store import (Store, StoreError, check_chunk_count, check_positive_int, exists, is_remote, store_state,
                          warn_repairs)

DRAW_RECIPE = "numpy PCG64(SeedSequence(seed, spawn_key=(0, chunk_index))).standard_normal((chunk, z_dim), float32)[:rows]"
#: How a generator's random noise (StyleGAN ``noise=random``) is seeded per chunk, recorded with the store.
NOISE_RECIPE = "torch.Generator seeded SeedSequence(seed, spawn_key=(1, chunk_index)).generate_state(1, uint64)[0] >> 1, drawn batch after batch"
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


TRUNCATED_DRAW_RECIPE = ("numpy PCG64(SeedSequence(seed, spawn_key=(0, chunk_index))).uniform(Φ(-bound), Φ(bound), "
                         "(chunk, z_dim)) -> torch.special.ndtri (float64) × scale, float32[:rows]")
LABEL_RECIPE = ("numpy PCG64(SeedSequence(seed, spawn_key=(3, chunk_index))).integers(0, len(choice), chunk) "
                "indexing choice (all classes when none is given), int32[:rows]")


def draw_codes(seed: int, index: int, chunk: int, z_dim: int, rows: int | None = None,
               distribution: Mapping[str, object] | None = None) -> np.ndarray:
    """The z codes of chunk ``index``: a function of (seed, index, chunk, z_dim) only, identical everywhere.

    N(0, I) unless ``distribution`` is ``{"kind": "truncated_normal", "bound": b, "scale": ψ}``: the normal
    restricted to [-b, b] (drawn by inverting its CDF), times ψ, as BigGAN samples with its truncation trick.
    """
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=(0, index))))
    # The generator fills row after row, so the first ``rows`` rows of the chunk's draw are drawn alone:
    # a short last chunk (or chunk > n) never allocates the full chunk.
    shape = (chunk if rows is None else min(rows, chunk), z_dim)
    if not distribution:
        return rng.standard_normal(shape, dtype=np.float32)
    if distribution.get("kind") != "truncated_normal":
        raise ValueError(f"unknown latent distribution {distribution!r}")
    bound, scale = float(distribution["bound"]), float(distribution["scale"])
    low, high = torch.special.ndtr(torch.tensor([-bound, bound], dtype=torch.float64)).tolist()
    u = rng.uniform(low, high, shape)
    z = torch.special.ndtri(torch.from_numpy(u)).numpy()
    return (np.clip(z, -bound, bound) * scale).astype(np.float32)


def draw_labels(seed: int, index: int, chunk: int, rows: int, choice: Sequence[int] | None,
                num_classes: int) -> np.ndarray:
    """The class labels of chunk ``index`` (``LABEL_RECIPE``): like its codes, a function of (seed, index)."""
    if choice is not None and len(choice) == 1:
        return np.full(min(rows, chunk), int(choice[0]), np.int32)
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=(3, index))))
    picks = rng.integers(0, num_classes if choice is None else len(choice), chunk)[:rows]
    return (picks if choice is None else np.asarray(choice, np.int64)[picks]).astype(np.int32)


def noise_seed(seed: int, index: int) -> int:
    """The seed of chunk ``index``'s generator noise (``NOISE_RECIPE``): like its codes, a function of (seed, i)."""
    state = np.random.SeedSequence(seed, spawn_key=(1, index)).generate_state(1, np.uint64)[0]
    return int(state >> np.uint64(1))


@dataclass(frozen=True)
class ChunkCodes:
    """What a sampling chunk starts from: its index (which seeds any generator noise), its codes and, for a
    class-conditional generator, their class labels."""

    index: int
    z: np.ndarray
    labels: np.ndarray | None = None


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}; got {precision!r}")
    return precision


@dataclass
class ChunkComputer:
    """Runs one chunk of codes through the generator and predictors on one device, batch by batch.

    On CUDA the codes go up from pinned memory and the results come back through pinned buffers on a side
    stream (``engine.runtime.host_copies``), so a batch's compute never waits for the previous batch's copy.
    ``channels_last`` converts the models' 4-D weights to channels-last (in place) and hands the predictors
    channels-last images: faster convolutions on GPUs with tensor cores, not measured here, so off by default.
    """

    generator: Generator
    predictors: Sequence[Predictor]
    spaces: Sequence[str]
    batch: int
    device: torch.device
    precision: str = "fp32"
    channels_last: bool = False

    def __post_init__(self) -> None:
        if self.batch <= 0:
            raise ValueError(f"batch must be a positive integer; got {self.batch!r}")
        check_precision(self.precision)
        self.attributes = [a for P in self.predictors for a in P.attributes]
        if self.channels_last:
            for model in (self.generator, *self.predictors):
                if isinstance(model, torch.nn.Module):
                    model.to(memory_format=torch.channels_last)
        self._per_thread = threading.local()

    def _host_copies(self) -> HostCopies:
        """This thread's copier: a Dask worker with several threads runs chunks at once with the same models."""
        copies = getattr(self._per_thread, "copies", None)
        if copies is None:
            copies = self._per_thread.copies = HostCopies(self.device)
        return copies

    def _autocast(self):
        """The generator and predictors in ``precision`` (torch autocast); codes and scores stay float32."""
        dtype = PRECISIONS[self.precision]
        if dtype is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=dtype)

    def __call__(self, z: np.ndarray, noise_seed: int | None = None,
                 labels: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """Codes, mapped codes and scores of one chunk; ``noise_seed`` restarts the generator's random noise
        (generators with ``reseed_noise``) so that a chunk's images do not depend on the chunks before it;
        ``labels`` are the codes' classes for a class-conditional generator."""
        rows = z.shape[0]
        G = self.generator
        reseed = getattr(G, "reseed_noise", None)
        if noise_seed is not None and callable(reseed):
            reseed(noise_seed)
        out: dict[str, np.ndarray] = {"latents/z": z}
        if labels is not None:
            out["labels"] = labels
        if "w" in self.spaces:
            out["latents/w"] = np.empty((rows, G.w_dim), np.float32)
        if "wp" in self.spaces:
            out["latents/wp"] = np.empty((rows, G.num_ws, G.w_dim), np.float32)
        if self.attributes:
            out["scores"] = np.empty((rows, len(self.attributes)), np.float32)
        copies = self._host_copies()
        try:
            with torch.inference_mode(), self._autocast():
                self._batches(z, labels, out, copies)
            copies.finish()      # every batch has landed before the chunk is handed to the writer
        except BaseException:
            copies.discard()
            raise
        return out

    def _batches(self, z: np.ndarray, labels: np.ndarray | None, out: dict[str, np.ndarray],
                 copies: HostCopies) -> None:
        G = self.generator
        cuda = self.device.type == "cuda"
        if cuda:
            z_host = to_device_rows(z, self.device)
            labels_host = None if labels is None else to_device_rows(labels.astype(np.int64), self.device)
        for start in range(0, z.shape[0], self.batch):
            stop = min(start + self.batch, z.shape[0])
            if cuda:
                zb = z_host[start:stop].to(self.device, non_blocking=True)
                lb = None if labels_host is None else labels_host[start:stop].to(self.device, non_blocking=True)
            else:
                # A copy torch owns (aligned as torch aligns), whatever offset the batch has inside the chunk.
                zb = torch.from_numpy(z[start:stop]).to(self.device, copy=True)
                lb = None if labels is None else torch.from_numpy(labels[start:stop].astype(np.int64)).to(self.device)
            rows = slice(start, stop)
            ws = map_codes(G, zb, lb)
            codes = []
            # Copied asynchronously (a side CUDA stream), the codes land while the synthesis runs: a copy of
            # their own keeps a synthesis that changes them in place from racing that copy.
            deferred = copies.asynchronous
            if "w" in self.spaces:
                codes.append((out["latents/w"], rows, mapped_w(G, zb, ws, lb).to(torch.float32, copy=deferred)))
            if "wp" in self.spaces:
                codes.append((out["latents/wp"], rows, ws.to(torch.float32, copy=deferred)))
            copies.put(codes)  # before the synthesis, which may change the codes in place
            if self.attributes:
                images = synthesize(G, ws, lb)
                if self.channels_last and images.ndim == 4:
                    images = images.contiguous(memory_format=torch.channels_last)
                copies.put([(out["scores"], rows, self._score(images))])

    def _score(self, images: torch.Tensor) -> torch.Tensor:
        columns = []
        for P in self.predictors:
            scores = P(images)
            if scores.ndim != 2 or scores.shape != (images.shape[0], len(P.attributes)):
                raise ValueError(f"predictor {getattr(P, 'spec', P)!r} returned shape {tuple(scores.shape)}; "
                                 f"expected ({images.shape[0]}, {len(P.attributes)})")
            columns.append(scores.float())
        return torch.cat(columns, dim=1)


@dataclass(frozen=True)
class ModelSpecs:
    """The models of a sampling job as plain values, so the job can be shipped to Dask workers."""

    generator: str
    predictors: tuple[str, ...]
    device: str
    batch: int
    spaces: tuple[str, ...]
    precision: str = "fp32"
    channels_last: bool = False


#: Model sets a process keeps built for the next chunks (one run normally needs one).
MODEL_CACHE_SIZE = 2
_MODELS: "OrderedDict[ModelSpecs, ChunkComputer]" = OrderedDict()
_MODELS_LOCK = threading.Lock()


def _built(specs: ModelSpecs) -> ChunkComputer:
    """This process's ChunkComputer for ``specs``, built on first use and kept for the next chunks."""
    with _MODELS_LOCK:
        if specs in _MODELS:
            _MODELS.move_to_end(specs)
            return _MODELS[specs]
        dev = resolve_device(specs.device)
        G = load_generator(specs.generator, dev)
        Ps = [load_predictor(p, G, dev) for p in specs.predictors]
        computer = ChunkComputer(G, Ps, list(specs.spaces), specs.batch, dev, specs.precision, specs.channels_last)
        _MODELS[specs] = computer
        while len(_MODELS) > MODEL_CACHE_SIZE:
            _MODELS.popitem(last=False)
        return computer


@dataclass
class SamplingJob:
    """Sampling as a chunked job (``engine.runtime.ChunkJob``): draw the chunk's codes, run the models, commit.

    Give ``computer`` (models already built, in-process runs) or ``models`` (SPECs, built where the job runs
    and cached per process: Dask workers). Only the SPEC form can be pickled.
    """

    seed: int
    chunk: int
    z_dim: int
    models: ModelSpecs | None = None
    computer: ChunkComputer | None = field(default=None, compare=False)
    distribution: dict | None = None          # how z is drawn (``draw_codes``); None: N(0, I)
    num_classes: int | None = None            # class-conditional generators: labels are drawn per chunk
    label_choice: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if (self.models is None) == (self.computer is None):
            raise ValueError("a SamplingJob needs exactly one of models (SPECs) or computer (built models)")

    def read(self, store: Store, index: int) -> ChunkCodes:
        rows = store.chunk_rows(index)
        count = rows.stop - rows.start
        labels = None
        if self.num_classes:
            labels = draw_labels(self.seed, index, self.chunk, count, self.label_choice, self.num_classes)
        return ChunkCodes(index, draw_codes(self.seed, index, self.chunk, self.z_dim, count, self.distribution),
                          labels)

    def compute(self, codes: ChunkCodes) -> dict[str, np.ndarray]:
        return (self.computer or _built(self.models))(codes.z, noise_seed(self.seed, codes.index), codes.labels)

    def write(self, store: Store, index: int, outputs: Mapping[str, np.ndarray]) -> dict[str, int]:
        stored = {f"latents/{s}" for s in store.spaces} | ({"scores"} if store.attributes else set()) \
            | ({"labels"} if store.num_classes else set())
        arrays = {name: values for name, values in outputs.items() if name in stored}
        store.write_chunk(index, arrays)
        nans = int(np.isnan(arrays["scores"]).sum()) if "scores" in arrays else 0
        return {"rows": int(arrays["latents/z"].shape[0]), "nan_scores": nans}

    def __getstate__(self) -> dict:
        if self.models is None:
            raise TypeError("a SamplingJob with built models cannot be pickled: give it ModelSpecs to ship it")
        return {**self.__dict__, "computer": None}


def sample_chunk(store_path: str, index: int, generator_spec: str, predictor_specs: Sequence[str], *,
                 batch: int, device: str = "auto", precision: str = "fp32",
                 channels_last: bool = False) -> tuple[int, dict[str, int]]:
    """Compute and commit chunk ``index`` of the store at ``store_path`` in this process (a Dask task does
    exactly this); returns (index, counters). Running it twice writes the same values."""
    store = Store.open(store_path)
    job = _spec_job(store, generator_spec, predictor_specs, batch=batch, device=device, precision=precision,
                    channels_last=channels_last)
    return run_chunk(job, store_path, index)


def _spec_job(store: Store, generator_spec: str, predictor_specs: Sequence[str], *, batch: int,
              device: str, precision: str = "fp32", channels_last: bool = False) -> SamplingJob:
    meta = store.meta
    specs = ModelSpecs(generator_spec, tuple(predictor_specs), str(device), int(batch), tuple(store.spaces),
                       check_precision(precision), bool(channels_last))
    return SamplingJob(int(meta["seed"]), store.chunk, int(meta["z_dim"]), models=specs, **draw_settings(meta))


def draw_settings(meta: Mapping[str, object]) -> dict[str, object]:
    """The SamplingJob fields that decide a store's draws, as its metadata records them."""
    labels = meta.get("labels") or {}
    choice = labels.get("choice") if isinstance(labels, Mapping) else None
    return {"distribution": meta.get("distribution") or None, "num_classes": meta.get("num_classes") or None,
            "label_choice": None if choice is None else tuple(int(c) for c in choice)}


def generator_draws(G: Generator) -> dict[str, object]:
    """What a store records of how ``G``'s codes and labels are drawn (``draw_settings`` reads it back)."""
    record: dict[str, object] = {}
    distribution = getattr(G, "latent_distribution", None)
    record["draw"] = TRUNCATED_DRAW_RECIPE if distribution else DRAW_RECIPE
    if distribution:
        record["distribution"] = dict(distribution)
    if conditional(G):
        choice = getattr(G, "label_choice", None)
        record["labels"] = {"recipe": LABEL_RECIPE, "num_classes": int(G.num_classes),
                            "choice": None if choice is None else [int(c) for c in choice]}
    return record


def run_distributed(store: Store, generator_spec: str, predictor_specs: Sequence[str], chunks: Sequence[int], *,
                    batch: int, device: str | torch.device = "auto", cluster: ClusterHandle | None = None,
                    workers: int | None = None, scheduler: str | None = None,
                    gpus: str | Sequence[int] | None = None, precision: str = "fp32",
                    channels_last: bool = False,
                    on_chunk: Callable[[int, int], None] | None = None) -> RunStats:
    """Sample ``chunks`` of ``store`` on a Dask cluster: the one ``cluster`` the caller opened, or one started
    (or reached) here from ``workers`` / ``scheduler`` / ``gpus`` and closed at the end. The caller holds the
    store's lock; models are built on each worker from their SPECs."""
    if cluster is None:
        if validate_cluster_flags(workers, scheduler, gpus) is None:
            raise ClusterError("run_distributed needs one of workers, scheduler or gpus")
        with cluster_client(workers, scheduler, gpus) as handle:
            return run_distributed(store, generator_spec, predictor_specs, chunks, batch=batch, device=device,
                                   cluster=handle, precision=precision, channels_last=channels_last,
                                   on_chunk=on_chunk)
    job = _spec_job(store, generator_spec, predictor_specs, batch=batch,
                    device=_worker_device(cluster.request, device), precision=precision,
                    channels_last=channels_last)
    return run_on_dask(job, store.path, [int(i) for i in chunks], cluster, on_chunk=on_chunk)


def _worker_device(request: ClusterRequest, device: str | torch.device) -> str:
    device = str(device or "auto")
    if request.kind == "cuda":
        if device == "cpu":
            raise ClusterError("gpus runs one worker per GPU: it cannot be combined with --device cpu")
        return "cuda"  # each worker sees only its own GPU, as cuda:0
    return device


def _spec_of(model: object) -> str:
    return getattr(model, "spec", None) or f"{type(model).__module__}:{type(model).__qualname__}"


def numerics(batch: int, device: torch.device, distributed: bool = False,
             precision: str = "fp32", channels_last: bool = False) -> dict[str, object]:
    """What decides the last float bits of w and the scores (never of z): recorded when a store is created and
    compared when it is resumed. Thread counts are per worker on a cluster, so they are left out there."""
    record = {"batch": int(batch), "device_type": device.type, "precision": precision,
              "memory_format": "channels_last" if channels_last else "contiguous",
              "torch_version": torch.__version__,
              "cpu_capability": torch.backends.cpu.get_cpu_capability(),
              "float32_matmul_precision": torch.get_float32_matmul_precision()}
    if not distributed:
        record["torch_threads"] = torch.get_num_threads()
    return record


def _warn_if_numerics_differ(path: str, stored: dict, now: dict) -> None:
    changed = [f"{key} {stored[key]!r} -> {now[key]!r}" for key in now if key in stored and stored[key] != now[key]]
    if changed:
        warnings.warn(f"{path}: this resume differs from the run that created it ({'; '.join(changed)}): latents/z "
                      "stays identical, but w and scores of the resumed chunks may differ from an uninterrupted run "
                      "in the last float bits", stacklevel=3)


def prepare_store(path: str, generator: Generator, predictors: Sequence[Predictor], *, n: int, seed: int,
                  chunk: int, spaces: Sequence[str], resume: bool, overwrite: bool,
                  numerics: dict[str, object] | None = None) -> Store:
    """Create the store for a run, or reopen it for ``resume`` after checking it is the same run.

    ``numerics`` (see ``numerics()``) is recorded in a new store's metadata."""
    attributes = [a for P in predictors for a in P.attributes]
    if len(set(attributes)) != len(attributes):
        raise ValueError(f"attribute names collide across predictors: {attributes}")
    record = {"seed": int(seed), "generator": _spec_of(generator),
              "predictors": [_spec_of(P) for P in predictors], **generator_draws(generator),
              "torch_version": torch.__version__, **({"numerics": numerics} if numerics else {})}
    provenance = getattr(generator, "provenance", None)
    if provenance:
        record["generator_file"] = dict(provenance)
        if provenance.get("noise") == "random":
            record["noise"] = NOISE_RECIPE
    if resume and exists(path):
        store = Store.open(path, mode="r+")          # a damaged or unfinished store says so, and how to redo it
        expected = {"n": n, "chunk": chunk, "z_dim": generator.z_dim, "spaces": list(spaces),
                    "attributes": attributes, **{k: record.get(k) for k in ("seed", "generator", "predictors",
                                                                            "distribution", "labels")}}
        if provenance and (store.meta.get("generator_file") or {}).get("sha256") != provenance.get("sha256"):
            raise StoreError(f"cannot resume {path}: the generator file {provenance.get('path')} is not the one "
                             f"it was sampled with (SHA-256 {str(provenance.get('sha256'))[:12]}… now, "
                             f"{str((store.meta.get('generator_file') or {}).get('sha256'))[:12]}… then)")
        for key, value in expected.items():
            if store.meta.get(key) != value:
                raise StoreError(f"cannot resume {path}: it was sampled with {key}={store.meta.get(key)!r}, "
                                 f"this run asks for {value!r}")
        warn_repairs(path, store.recover())
        return store
    if overwrite:
        check_overwritable(path)
    mapped = {"kind": "mapped", "from": "latents/z", "generator": record["generator"]}
    sources = {"z": {"kind": "sampled", "seed": int(seed), "draw": record["draw"], "chunk": int(chunk),
                     **({"distribution": record["distribution"]} if "distribution" in record else {})},
               "w": {**mapped, "codes": "the mapping network's output, before truncation"},
               "wp": {**mapped, "codes": "the per-layer codes the synthesis used, after truncation"}}
    return Store.create(path, n=n, chunk=chunk, z_dim=generator.z_dim,
                        w_dim=generator.w_dim if generator.has_mapping else None,
                        num_ws=generator.num_ws if generator.has_mapping else None,
                        spaces=spaces, attributes=attributes, meta=record,
                        sources={space: sources[space] for space in spaces}, overwrite=overwrite,
                        num_classes=int(generator.num_classes) if conditional(generator) else None)


def _resumed_settings(path: str, meta: Mapping, requested_batch: int | None, batch: int,
                      requested_precision: str | None, precision: str) -> tuple[int, str]:
    """The batch and precision a run computes in: a resume takes the ones the run began with where none is
    asked for, and refuses a precision that differs (scores change well beyond float rounding), or a batch that
    differs when the generator draws random noise batch after batch (the images would change)."""
    stored = meta.get("numerics") or {}
    if stored.get("batch"):
        if requested_batch is None:
            batch = int(stored["batch"])              # a resume computes in the batches the run began with
        elif meta.get("noise") and int(requested_batch) != int(stored["batch"]):
            raise StoreError(f"cannot resume {path}: its generator draws random noise batch after batch, and it was "
                             f"sampled with --batch {stored['batch']}; resume with that batch (or without --batch)")
    if stored.get("precision"):
        if requested_precision is None:
            precision = str(stored["precision"])
        elif requested_precision != stored["precision"]:
            raise StoreError(f"cannot resume {path}: it was sampled with --precision {stored['precision']}, this "
                             f"run asks for {requested_precision}")
    return batch, precision


def _client_models(generator: str | Generator, predictors: Sequence[str | Predictor], device: torch.device,
                   distributed: bool) -> tuple[Generator, list[Predictor]]:
    """The models this process uses: on ``device`` for an in-process run; for a distributed run the workers
    build their own, so this process builds them on the CPU (only their metadata is read), never on a GPU."""
    dev = torch.device("cpu") if distributed else device
    G = load_generator(generator, dev) if isinstance(generator, str) else generator
    return G, [load_predictor(p, G, dev) if isinstance(p, str) else p for p in predictors]


def check_overwritable(path: str) -> None:
    """--overwrite replaces stores (damaged or unfinished ones too), never a folder that holds something else."""
    if is_remote(path):
        if exists(path):
            Store.open(path)
        return
    if store_state(path) == "foreign":
        raise StoreError(f"refusing to overwrite {path}: it exists and is not a latent-engine store")


def sample(path: str, generator: str | Generator, predictors: Sequence[str | Predictor] = (), *, n: int,
           seed: int = 0, chunk: int = 4096, batch: int | None = None, device: str | torch.device = "auto",
           spaces: Sequence[str] | None = None, resume: bool = False, overwrite: bool = False,
           progress: bool = True, workers: int | None = None, scheduler: str | None = None,
           gpus: str | Sequence[int] | None = None, precision: str | None = None,
           cluster: str | os.PathLike | None = None, channels_last: bool = False) -> Store:
    """Sample ``n`` codes into the store at ``path`` and return it (opened read-only).

    ``generator`` and ``predictors`` are SPEC strings (see ``engine.models.registry``) or model objects.
    Exactly one of a fresh path, ``resume`` (continue an interrupted run) or ``overwrite`` applies.
    ``workers``, ``scheduler``, ``gpus`` or ``cluster`` (a cluster file, ``engine.cluster_config``) spread the
    chunks over a Dask cluster (``engine.distributed``); the store is identical either way, and this process
    then builds the models on the CPU only (for the store's metadata), never on a GPU. ``batch`` (rows per
    generator call) defaults by device type (``engine.devices.DEFAULT_BATCH``); it changes speed and memory,
    never the codes. ``precision`` (fp32, bf16, fp16; default fp32, or on a resume the run's own) runs the
    generator and predictors under torch autocast; codes and scores are stored as float32. A resume refuses another precision, and, for a generator
    with random noise (drawn batch after batch), another batch. ``channels_last`` runs convolutions in the
    channels-last memory format (see ``ChunkComputer``).
    """
    from engine.progress import progress_bar

    for name, value in (("n", n), ("chunk", chunk), ("batch", 1 if batch is None else batch)):
        check_positive_int(name, value)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer; got {seed!r}")
    if resume and overwrite:
        raise ValueError("resume and overwrite exclude each other")
    requested_precision = precision
    precision = check_precision(precision or "fp32")
    chunk = min(int(chunk), int(n))      # a chunk beyond n would only be a larger empty zarr chunk
    check_chunk_count(int(n), chunk)
    path = str(path)
    distributed = any(v is not None for v in (workers, scheduler, gpus, cluster))
    if distributed and not (isinstance(generator, str) and all(isinstance(p, str) for p in predictors)):
        raise ValueError("distributed sampling builds the models on each worker: pass SPEC strings, not objects")
    # Bad flags or a bad cluster file fail before anything is written.
    request = validate_cluster_flags(workers, scheduler, gpus, cluster) if distributed else None
    retain_freed_memory()  # batch after batch reuses the same buffers: see engine.allocator
    dev = resolve_device(device)
    requested_batch = batch
    if batch is None:
        batch = default_batch("cuda" if request is not None and request.kind == "cuda" else dev)
    G, Ps = _client_models(generator, predictors, dev, distributed)
    chosen = spaces_for(G, spaces)
    with StoreLock(path, purpose="sample"), \
            (cluster_client(workers, scheduler, gpus, request.config) if distributed else nullcontext()) as handle:
        # The cluster is up (or the scheduler reached) before the store is created: no empty store is left
        # behind by an unreachable address.
        store = prepare_store(path, G, Ps, n=n, seed=seed, chunk=chunk, spaces=chosen, resume=resume,
                              overwrite=overwrite,
                              numerics=numerics(batch, dev, distributed, precision, channels_last))
        stored = store.meta.get("numerics") or {}
        batch, precision = _resumed_settings(path, store.meta, requested_batch, batch, requested_precision,
                                             precision)
        _warn_if_numerics_differ(path, stored, numerics(batch, dev, distributed, precision, channels_last))
        pending = store.pending_chunks()
        done_rows = n - sum(store.chunk_rows(i).stop - store.chunk_rows(i).start for i in pending)
        with progress_bar(total=n, initial=done_rows, desc="sample", unit="samples", enabled=progress) as bar:
            if distributed:
                stats = run_distributed(store, _spec_of(G), list(predictors), pending, batch=batch, device=device,
                                        cluster=handle, precision=precision, channels_last=channels_last,
                                        on_chunk=lambda i, rows: bar.update(rows))
            else:
                job = SamplingJob(int(seed), store.chunk, G.z_dim,
                                  computer=ChunkComputer(G, Ps, chosen, batch, dev, precision, channels_last),
                                  **draw_settings(store.meta))
                stats = run_in_process(job, store, pending, on_chunk=lambda i, rows: bar.update(rows))
        if stats.rows:
            store.update_meta(device=str(dev), batch=int(batch), samples_per_s=round(stats.samples_per_s, 1))
        if stats.nan_scores:
            warnings.warn(f"{path}: predictors returned {stats.nan_scores} NaN scores; they are stored as NaN "
                          "and `latent-engine info` counts them per attribute", stacklevel=2)
    return Store.open(path)
