"""Dask, in one module: clusters from the command-line flags, chunk tasks, retries, tree reductions.

Dask only orchestrates (the dask-ml way): every task is a pure module-level function of plain arguments.

* Chunked jobs (sampling and others) run on a cluster through ``engine.runtime.run_on_dask``: one task per
  chunk. Writes are idempotent (a redone chunk overwrites the same rows with the same values), so a chunk
  whose worker died half-way through is simply computed again elsewhere: Dask reschedules the tasks of a dead
  worker (up to ``distributed.scheduler.allowed-failures`` deaths per task; ``ALLOWED_FAILURES`` on the
  clusters this module starts) and retries tasks that raised (``RETRIES``, for transient I/O errors on
  shared stores).
* ``map_reduce_chunks(store_path, array, partial, merge)`` reads one store chunk per task on the workers,
  applies ``partial`` and merges the partial states pairwise as they arrive (a tree reduction that keeps a
  few states in memory, whatever the number of chunks): PCA and Pearson over stores larger than a node.

Clusters (``cluster_client``): ``workers=K`` starts a ``LocalCluster`` of K single-threaded processes (with
nannies, so a killed worker is restarted, but without the nannies' ``MALLOC_TRIM_THRESHOLD_``: see
``TRIM_VARIABLE``); ``scheduler=ADDRESS`` connects to any running Dask deployment
(``dask scheduler`` + ``dask worker``, dask-jobqueue, Kubernetes) within ``CONNECT_TIMEOUT_S`` seconds;
``gpus="0,1"`` starts ``dask_cuda.LocalCUDACluster`` with one worker per GPU (the ``[gpu]`` extra);
``cluster=FILE`` starts the cluster a YAML file describes (``engine.cluster_config``: local, a scheduler's
address, or SLURM/PBS jobs through dask-jobqueue, the ``[cluster]`` extra).

The client of a distributed run (this process) builds no model on a GPU: models are built on the workers.

Torch threads: Dask's nannies start workers with OMP/MKL_NUM_THREADS=1, so each task sets torch's thread
count itself: with W Dask worker threads on a host of C cores, each gets max(1, C // W) torch threads (two
single-threaded workers on two cores: one thread each; one worker: both cores).

The store path must be reachable by every worker under the same name: a local path for ``--workers``, a
shared file system path or an fsspec URL (``s3://...``) for a remote cluster. Relative local paths are made
absolute before they are shipped.
"""
from __future__ import annotations

import json
import os
import socket
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from engine import cluster_config
from engine.cluster_config import ClusterConfig, ClusterError

S = TypeVar("S")

#: Seconds to reach an existing scheduler before giving up with the address in the message.
CONNECT_TIMEOUT_S = 5.0
#: Re-runs of a chunk task that raised (transient I/O on a shared store); deterministic errors surface after.
RETRIES = 1
#: Deaths of workers running one task before Dask gives up on it (on clusters this module starts).
ALLOWED_FAILURES = 3
#: Dask's nannies start workers with MALLOC_TRIM_THRESHOLD_=65536. Setting it also pins glibc's mmap threshold
#: at 128 KiB, so every large torch buffer is mapped and faulted in afresh (benchmarks/README.md has the
#: slowdown). Clusters started here leave the variable out; workers found with it get a warning.
TRIM_VARIABLE = "MALLOC_TRIM_THRESHOLD_"
# ClusterError (imported above) lives in engine.cluster_config, which imports nothing of the engine.


# ---------------------------------------------------------------------------------------------- flags
@dataclass(frozen=True)
class ClusterRequest:
    """The validated cluster flags: kind is 'local', 'address', 'cuda' or 'jobqueue' (SLURM/PBS jobs); ``config``
    is the cluster file's ``engine.cluster_config.ClusterConfig`` when the cluster came from one."""

    kind: str
    workers: int | None = None
    address: str | None = None
    gpus: tuple[int, ...] = ()
    config: ClusterConfig | None = None

    def describe(self) -> str:
        if self.config is not None:
            return self.config.describe()
        if self.kind == "local":
            return f"a local cluster of {self.workers} worker process(es)"
        if self.kind == "cuda":
            return f"a local CUDA cluster on GPU(s) {','.join(map(str, self.gpus))}"
        return f"the Dask scheduler at {self.address}"


def validate_cluster_flags(workers: int | None = None, scheduler: str | None = None,
                           gpus: str | Sequence[int] | None = None,
                           cluster: str | os.PathLike | ClusterConfig | None = None) -> ClusterRequest | None:
    """Check ``--workers/--scheduler/--gpus/--cluster`` before anything starts; None when none was given.

    ``cluster`` is a cluster file's path (or an ``engine.cluster_config.ClusterConfig``). Raises ClusterError
    (a ValueError: one line on the command line) for ``--workers 0``, two flags at once, a malformed ``--gpus``
    list, ``--gpus`` on a machine without GPUs or without dask-cuda, or a bad cluster file.
    """
    given = [name for name, value in (("--workers", workers), ("--scheduler", scheduler), ("--gpus", gpus),
                                      ("--cluster", cluster)) if value is not None]
    if not given:
        return None
    if len(given) > 1:
        raise ClusterError(f"{' and '.join(given)} exclude each other: pick one way to get a cluster")
    if cluster is not None:
        return _request_of_file(cluster)
    if workers is not None:
        if isinstance(workers, bool) or not isinstance(workers, (int, np.integer)) or workers <= 0:
            raise ClusterError(f"workers must be a positive integer; got {workers!r}")
        return ClusterRequest("local", workers=int(workers))
    if scheduler is not None:
        address = str(scheduler).strip()
        if not address:
            raise ClusterError("scheduler needs an address such as tcp://host:8786; got an empty string")
        return ClusterRequest("address", address=address)
    return ClusterRequest("cuda", gpus=_check_gpus(gpus))


def _request_of_file(cluster: str | os.PathLike | ClusterConfig) -> ClusterRequest:
    config = cluster if isinstance(cluster, ClusterConfig) else cluster_config.load_cluster_config(cluster)
    if config.kind == "scheduler":
        return ClusterRequest("address", address=str(config.options["address"]).strip(), config=config)
    if config.kind == "local" and "gpus" in config.options:
        return ClusterRequest("cuda", gpus=_check_gpus(cluster_config.gpu_list(config.options["gpus"])),
                              config=config)
    if config.kind == "local":
        return ClusterRequest("local", workers=int(config.options.get("workers", 1)), config=config)
    return ClusterRequest("jobqueue", config=config)


def _check_gpus(gpus: str | Sequence[int]) -> tuple[int, ...]:
    text = gpus if isinstance(gpus, str) else ",".join(str(g) for g in gpus)
    try:
        indices = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise ClusterError(f"gpus must be comma-separated GPU indices such as 0,1; got {text!r}") from None
    if any(i < 0 for i in indices) or len(set(indices)) != len(indices):
        raise ClusterError(f"gpus must list distinct non-negative GPU indices; got {text!r}")
    import torch

    if not torch.cuda.is_available():
        raise ClusterError(f"gpus {text}: this machine has no CUDA GPU that torch can use "
                           "(use --workers K for CPU processes)")
    count = torch.cuda.device_count()
    if max(indices) >= count:
        raise ClusterError(f"gpus {text}: this machine has {count} CUDA device(s) (indices 0..{count - 1})")
    try:
        import dask_cuda  # noqa: F401
    except ImportError:
        raise ClusterError("gpus needs dask-cuda, which is not installed: pip install dask-cuda (the [gpu] "
                           "extra)") \
            from None
    return indices


# ---------------------------------------------------------------------------------------------- clusters
@dataclass
class ClusterHandle:
    """A connected client and the torch threads each of its workers should use."""

    client: Any
    request: ClusterRequest
    startup_s: float
    threads: dict[str, int]
    default_threads: int


@contextmanager
def cluster_client(workers: int | None = None, scheduler: str | None = None,
                   gpus: str | Sequence[int] | None = None,
                   cluster: str | os.PathLike | ClusterConfig | None = None) -> Iterator[ClusterHandle]:
    """A Dask client for the flags (exactly one given); clusters started here are closed on exit.

    ``cluster`` is a cluster file (or its ``ClusterConfig``): the cluster it describes is started (a
    ``scheduler`` kind reached) for the client and closed with it."""
    request = validate_cluster_flags(workers, scheduler, gpus, cluster)
    if request is None:
        raise ClusterError("a cluster needs one of --workers K, --scheduler ADDRESS, --gpus LIST or --cluster FILE")
    if request.config is not None:
        start = time.perf_counter()
        with started_cluster(request.config) as address:
            with _client_of(request, _connect(address), start) as handle:
                yield handle
        return
    import dask
    from distributed import Client

    start = time.perf_counter()
    started = None
    with dask.config.set({"distributed.scheduler.allowed-failures": ALLOWED_FAILURES,
                          f"distributed.nanny.pre-spawn-environ.{TRIM_VARIABLE}": None}):
        if request.kind == "address":
            client = _connect(request.address)
        else:
            try:
                started = _start_cluster(request)
            except Exception as exc:  # noqa: BLE001 - the cause goes in the one-line message
                raise ClusterError(f"could not start {request.describe()}: {exc} (scripts that start "
                                   "clusters need an `if __name__ == '__main__':` guard)") from exc
            client = Client(started)
    try:
        with _client_of(request, client, start) as handle:
            yield handle
    finally:
        if started is not None:
            started.close()


@contextmanager
def _client_of(request: ClusterRequest, client: Any, start: float) -> Iterator[ClusterHandle]:
    """The handle of a connected ``client`` (its workers surveyed for torch threads); closes the client."""
    try:
        facts = _survey(client)
        _warn_about_trimming(facts)
        threads, default = _torch_threads(facts)
        yield ClusterHandle(client, request, time.perf_counter() - start, threads, default)
    finally:
        client.close()


#: Clusters started by ``started_cluster`` and still open: key -> [scheduler address, users].
_RUNNING: dict[str, list] = {}


@contextmanager
def started_cluster(config: ClusterConfig) -> Iterator[str]:
    """Start the cluster a cluster file describes (a ``scheduler`` kind is only reached, not started) and yield
    the address of its scheduler; the cluster is closed on exit. Inside an outer ``started_cluster`` of the same
    config the running cluster is reused, not started again: a sweep opens one and all its runs share it."""
    if config.kind == "scheduler":
        yield str(config.options["address"]).strip()
        return
    key = json.dumps([config.kind, config.path, dict(config.options)], sort_keys=True, default=str)
    if key in _RUNNING:
        _RUNNING[key][1] += 1
        try:
            yield _RUNNING[key][0]
        finally:
            _RUNNING[key][1] -= 1
        return
    import dask
    import distributed  # noqa: F401 - its config defaults must exist before dask.config.set, which would
    # otherwise drop the whole "distributed" section on exit

    try:
        with dask.config.set({"distributed.scheduler.allowed-failures": ALLOWED_FAILURES,
                              f"distributed.nanny.pre-spawn-environ.{TRIM_VARIABLE}": None}):
            cluster = cluster_config.build_cluster(config)
    except ClusterError:
        raise
    except Exception as exc:  # noqa: BLE001 - the cause goes in the one-line message
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ClusterError(f"could not start {config.describe()}: {reason} (scripts that start clusters need "
                           "an `if __name__ == '__main__':` guard)") from exc
    _RUNNING[key] = [cluster.scheduler_address, 1]
    try:
        yield cluster.scheduler_address
    finally:
        del _RUNNING[key]
        cluster.close()


def _connect(address: str) -> Any:
    from distributed import Client

    try:
        return Client(address, timeout=f"{CONNECT_TIMEOUT_S}s")
    except Exception as exc:  # noqa: BLE001 - any failure to connect is the same user-facing error
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ClusterError(f"cannot reach the Dask scheduler at {address} within {CONNECT_TIMEOUT_S:g} s "
                           f"({reason}); is it running, and is the address right?") from None


def _start_cluster(request: ClusterRequest) -> Any:
    import logging

    common = dict(threads_per_worker=1, dashboard_address=None, silence_logs=logging.ERROR)
    if request.kind == "cuda":
        from dask_cuda import LocalCUDACluster

        return LocalCUDACluster(CUDA_VISIBLE_DEVICES=",".join(map(str, request.gpus)), **common)
    from distributed import LocalCluster

    return LocalCluster(n_workers=request.workers, processes=True, **common)


@dataclass(frozen=True)
class WorkerFacts:
    """What the engine needs to know of one worker process."""

    host: str
    cores: int
    nthreads: int
    trim_threshold: str | None


def _worker_facts(dask_worker: Any) -> WorkerFacts:
    """The facts of one worker; runs on the worker."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        cores = os.cpu_count() or 1
    return WorkerFacts(socket.gethostname(), cores, int(dask_worker.state.nthreads), os.environ.get(TRIM_VARIABLE))


def _survey(client: Any) -> dict[str, WorkerFacts]:
    """Facts per worker address; empty when the workers cannot answer (they then get the defaults)."""
    try:
        return client.run(_worker_facts)
    except Exception:  # noqa: BLE001 - a worker that cannot answer gets the default
        return {}


def _warn_about_trimming(facts: dict[str, WorkerFacts]) -> None:
    values = sorted({f.trim_threshold for f in facts.values() if f.trim_threshold is not None})
    if values:
        warnings.warn(f"{sum(f.trim_threshold is not None for f in facts.values())} of {len(facts)} Dask workers run "
                      f"with {TRIM_VARIABLE}={','.join(values)} (the nanny's default), which made sampling 2.7x "
                      "slower in the benchmarks; start them with the Dask config "
                      f"distributed.nanny.pre-spawn-environ.{TRIM_VARIABLE} set to null", stacklevel=3)


def _torch_threads(facts: dict[str, WorkerFacts]) -> tuple[dict[str, int], int]:
    """Torch threads per worker: the host's cores shared among the host's Dask worker threads."""
    per_host: dict[str, int] = {}
    for f in facts.values():
        per_host[f.host] = per_host.get(f.host, 0) + f.nthreads
    threads = {addr: max(1, f.cores // per_host[f.host]) for addr, f in facts.items()}
    return threads, min(threads.values(), default=1)


def shipped_path(path: str) -> str:
    """Local paths become absolute (workers may run elsewhere); URLs go as they are."""
    if "://" in path and not path.startswith("file://"):
        return path
    return os.path.abspath(path.removeprefix("file://"))


# ---------------------------------------------------------------------------------------------- reductions
def read_block(store_path: str, array: str, block: int) -> np.ndarray:
    """Rows of store chunk ``block`` of ``array`` (read-only open, zarr directly)."""
    from engine.store import Store

    values = Store.open(store_path).array(array)
    step = values.chunks[0]
    return values[block * step:min((block + 1) * step, values.shape[0])]


def partial_of_block(store_path: str, array: str, block: int, partial: Callable[[np.ndarray], S],
                     where_class: int | None = None) -> S | None:
    """One map task: ``partial`` of one store chunk (of its rows of class ``where_class`` only, if given; None
    when the chunk has none)."""
    values = read_block(store_path, array, block)
    if where_class is not None:
        values = values[read_block(store_path, "labels", block) == where_class]
        if values.shape[0] == 0:
            return None
    return partial(values)


def merge_states(merge: Callable[[S, S], S], left: S | None, right: S | None) -> S | None:
    """One reduce task (a chunk without rows of the class asked for has no state: None)."""
    if left is None or right is None:
        return right if left is None else left
    return merge(left, right)


def _blocks_of(store_path: str, array: str) -> int:
    from engine.store import Store

    store = Store.open(store_path)
    values = store.array(array)  # StoreError naming the path when the array is missing
    if array.startswith("latents/") or array == "scores":
        store.require_complete()
    if values.ndim == 0 or values.shape[0] == 0:
        raise ValueError(f"{store_path}: {array} has no rows to reduce")
    return -(-values.shape[0] // values.chunks[0])


def map_reduce_chunks(store_path: str, array: str, partial: Callable[[np.ndarray], S],
                      merge: Callable[[S, S], S], *, workers: int | None = None,
                      scheduler: str | None = None, where_class: int | None = None,
                      cluster: str | os.PathLike | ClusterConfig | None = None) -> S:
    """Apply ``partial`` to every store chunk of ``array`` and merge the states into one.

    With ``workers``, ``scheduler`` or ``cluster`` (a cluster file) each chunk is read and reduced on a Dask
    worker and the partial states are merged pairwise as they arrive (a tree reduction: memory holds a few
    states, not one per chunk); with none of them, the same map and merges run in this process. ``partial`` and ``merge`` must be picklable
    (module-level functions, ``functools.partial`` or lambdas, which Dask ships with cloudpickle) and
    ``merge`` may modify and return its first argument. Sampled arrays (``latents/*``, ``scores``) must be
    complete. The merge order varies between runs, so results agree to float rounding, not bit for bit.
    ``where_class`` keeps only the rows whose ``labels`` equal it; a ValueError if there are none.
    """
    store_path = str(store_path)
    request = validate_cluster_flags(workers, scheduler, None, cluster)
    n_blocks = _blocks_of(store_path, array)
    if request is None:
        # A binary-counter tree in this process: O(log n_blocks) states held, merged in row order.
        stack: list[tuple[int, S]] = []
        for block in range(n_blocks):
            state, level = partial_of_block(store_path, array, block, partial, where_class), 0
            while stack and stack[-1][0] == level:
                state, level = merge_states(merge, stack.pop()[1], state), level + 1
            stack.append((level, state))
        state = stack.pop()[1]
        while stack:
            state = merge_states(merge, stack.pop()[1], state)
        return _some_rows(state, store_path, where_class)
    from distributed import as_completed

    path = shipped_path(store_path)
    with cluster_client(workers, scheduler, None, cluster) as handle:
        client = handle.client
        # No list of the futures is kept: a partial state is released as soon as it has been merged.
        pending = as_completed([client.submit(partial_of_block, path, array, b, partial, where_class, pure=False,
                                              retries=RETRIES, priority=-b) for b in range(n_blocks)])
        waiting = None
        for future in pending:
            if future.status == "error":
                future.result()  # fail fast with the task's own exception
            if waiting is None:
                waiting = future
                continue
            pending.add(client.submit(merge_states, merge, waiting, future, pure=False, retries=RETRIES,
                                      priority=1))
            waiting = None
        result = waiting.result()  # raises the first error of any task; closing the client cancels the rest
    return _some_rows(result, store_path, where_class)


def _some_rows(state: S | None, store_path: str, where_class: int | None) -> S:
    if state is None:
        raise ValueError(f"{store_path} has no rows of class {where_class}")
    return state
