"""Single-threaded CPU workers shared by the kernels that split a batch over the cores (eigh, LinearSVM).

A batch of independent problems runs faster as one problem per single-threaded worker than as one batched
call with several intra-op threads: the level-2 steps of a d = 512 syevd do not scale over threads, and
OpenMP's barrier spinning stalls a multi-threaded call whenever other jobs load the cores. The figures are in
benchmarks/README.md.
"""
from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

import torch


def _fresh_thread_default() -> int:
    """The torch thread count a newly started thread gets (torch keeps the last count set as that default)."""
    seen: list[int] = []
    probe = threading.Thread(target=lambda: seen.append(torch.get_num_threads()))
    probe.start()
    probe.join()
    return seen[0]


def _set_fresh_thread_default(count: int) -> None:
    """Set that default from a throwaway thread, so that no running thread's own count changes."""
    setter = threading.Thread(target=torch.set_num_threads, args=(count,))
    setter.start()
    setter.join()


class _CpuBatchPool:
    """Worker threads that each run torch/MKL with one intra-op thread, for splitting stacks over the cores.

    With the OpenMP backend and MKL, ``torch.set_num_threads`` sets the calling thread's own count (OpenMP and
    MKL keep it per thread) and also the default of threads started later. So every worker is started at once
    (a barrier), sets its own count to 1, and the default is then put back from a throwaway thread; the pool
    is used only if a fresh thread and the caller both still see their old counts afterwards. Where that does
    not hold (another build), stacks go to torch's own batched call, which gives the same results, slower.
    The pool is created once per process (again in a forked child) and never resized: a caller with fewer
    torch threads than workers uses that many.
    """

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None
        self._size = 0
        self._usable: bool | None = None

    @staticmethod
    def _supported() -> bool:
        info = torch.__config__.parallel_info()
        return "parallel backend: OpenMP" in info and torch.backends.mkl.is_available()

    def executor(self) -> tuple[ThreadPoolExecutor, int] | None:
        """(the pool, how many workers this caller may use), or None where splitting cannot help or is unsafe."""
        threads = torch.get_num_threads()
        if threads < 2:
            return None
        with self._lock:
            if self._usable is None:
                self._usable = self._supported() and self._start(threads)
            return (self._pool, min(threads, self._size)) if self._usable else None

    def _start(self, size: int) -> bool:
        default = _fresh_thread_default()
        pool = ThreadPoolExecutor(size, thread_name_prefix="kernels-cpu")
        barrier = threading.Barrier(size)

        def single_threaded(_: int) -> None:
            torch.get_num_threads()  # torch's lazy per-thread init first, or it later resets the count to the default
            torch.set_num_threads(1)
            barrier.wait(timeout=60)

        def count(_: int) -> int:
            barrier.wait(timeout=60)  # one probe per worker
            return torch.get_num_threads()

        try:  # every worker blocks at the barrier until all have started: none is started later
            list(pool.map(single_threaded, range(size)))
            _set_fresh_thread_default(default)
            counts = list(pool.map(count, range(size)))
        except threading.BrokenBarrierError:
            counts = []
        _set_fresh_thread_default(default)
        if counts != [1] * size or torch.get_num_threads() != size or _fresh_thread_default() != default:
            pool.shutdown(wait=bool(counts))  # a broken barrier may leave a worker stuck: do not wait
            return False
        self._pool, self._size = pool, size
        return True


CPU_POOL = _CpuBatchPool()
os.register_at_fork(after_in_child=CPU_POOL._reset)  # a forked child has the pool object but not its threads
