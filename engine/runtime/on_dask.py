"""The Dask executor: one task per chunk, retried, rescheduled when its worker dies, committed by the task."""
from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Mapping, Sequence


from engine.distributed import ALLOWED_FAILURES, RETRIES, ClusterError, ClusterHandle, shipped_path
from engine.runtime.job import ChunkJob, RunStats


def run_chunk(job: ChunkJob, store_path: str, index: int, *, threads: Mapping[str, int] | None = None,
              default_threads: int | None = None) -> tuple[int, dict[str, int]]:
    """One Dask task: read, compute, write and commit chunk ``index``; returns (index, counters).

    A pure function of its arguments and the store: running it twice writes the same values, which is what
    makes Dask's retries and rescheduling safe.
    """
    from engine.allocator import retain_freed_memory
    from engine.store import Store

    retain_freed_memory()
    _set_threads(threads, default_threads)
    store = Store.open(store_path, mode="r+")
    counters = job.write(store, index, job.compute(job.read(store, index)))
    return index, dict(counters)


def _set_threads(threads: Mapping[str, int] | None, default: int | None) -> None:
    """Torch threads for this worker: the host's cores shared among its Dask worker threads."""
    if not threads and not default:
        return
    import torch

    wanted = default
    try:
        from distributed import get_worker

        wanted = (threads or {}).get(get_worker().address, default)
    except ValueError:  # not on a worker (called in-process)
        pass
    if wanted and torch.get_num_threads() != wanted:
        torch.set_num_threads(wanted)


def run_on_dask(job: ChunkJob, store_path: str, chunks: Sequence[int], handle: ClusterHandle,
                on_chunk: Callable[[int, int], None] | None = None) -> RunStats:
    """Run ``job`` over ``chunks`` of the store at ``store_path`` on the cluster behind ``handle``.

    The caller holds the store's lock. The first chunk that fails for good (after ``RETRIES``, or after
    ``ALLOWED_FAILURES`` worker deaths) cancels the rest and raises; committed chunks stay committed.
    """
    from distributed import as_completed
    from distributed.scheduler import KilledWorker

    client = handle.client
    stats = RunStats()
    path = shipped_path(store_path)
    run = uuid.uuid4().hex[:8]
    start = time.perf_counter()
    futures = [client.submit(run_chunk, job, path, int(index), threads=handle.threads,
                             default_threads=handle.default_threads, key=f"latent-engine-chunk-{run}-{index}",
                             retries=RETRIES, pure=False, priority=-int(index))
               for index in chunks]
    try:
        for future in as_completed(futures):
            try:
                index, counters = future.result()
            except KilledWorker as exc:
                raise ClusterError(f"a chunk's workers died {ALLOWED_FAILURES + 1} times ({exc}); out of "
                                   "memory? Committed chunks are kept: rerun with --resume") from None
            stats.add(index, counters)
            if on_chunk is not None:
                on_chunk(index, int(counters.get("rows", 0)))
    except BaseException:
        client.cancel(futures)
        raise
    finally:
        stats.seconds = time.perf_counter() - start
    return stats


__all__ = ["run_chunk", "run_on_dask"]
