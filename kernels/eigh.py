"""Batched symmetric eigendecomposition, eigenvalues in descending order, one deterministic sign per vector.

Sign convention (shared by PCA): every eigenvector is flipped so that its entry of largest absolute value is
positive (the first such entry when several tie exactly). SeFa and GANSpace use the top eigenvectors as
editing directions, so "top first" and a reproducible sign matter more than LAPACK's ascending order.

On a CPU, a stack is split over the cores: each worker thread runs single-threaded LAPACK (MKL syevd) on its
share. A d = 512 syevd spends much of its time in memory-bound level-2 steps that do not scale over threads,
whereas independent matrices do: measured on this project's 2-core CPU (200 stacked 512x512 float32 Wishart
matrices, idle machine) torch's batched call 2.7 s with 2 MKL threads, 3.9 s with 1, and 1.97-2.19 s split over 2
single-threaded workers that solve one matrix at a time (LAPACK alone: 1.85-1.89 s); numpy's loop 6.6-7.5 s in
float32, 6.4-7.1 s in float64 (OpenBLAS). Single-threaded workers also
avoid the OpenMP barrier spinning that slowed the 2-thread call up to 20x when other jobs loaded the cores.
Float32 input is computed in float32 unless ``compute_dtype="float64"`` is asked for.
"""

from __future__ import annotations

import math
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import torch

from ._validation import check_finite, check_nonempty, check_option
from .backend import as_tensors, import_cupy, resolve_impl, to_cupy, to_origin


def vector_signs(vectors: torch.Tensor, dim: int = -2) -> torch.Tensor:
    """+1 or -1 per vector along ``dim``: the sign that makes its largest-|value| entry positive.

    Decided from the largest and smallest entries (two cheap reductions); only vectors whose extremes tie in
    magnitude go through the first-entry tie rule.
    """
    top, bottom = vectors.amax(dim=dim, keepdim=True), vectors.amin(dim=dim, keepdim=True)
    signs = torch.where(top >= -bottom, 1, -1).to(vectors.dtype)
    tied = top == -bottom
    if bool(tied.any()):
        idx = vectors.abs().argmax(dim=dim, keepdim=True)
        first = torch.sign(vectors.gather(dim, idx))
        signs = torch.where(tied, torch.where(first == 0, torch.ones_like(first), first), signs)
    return signs


def fix_signs(vectors: torch.Tensor, dim: int = -2) -> torch.Tensor:
    """Flip each vector along ``dim`` so that its largest-|value| entry is positive."""
    return vectors * vector_signs(vectors, dim)


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
        pool = ThreadPoolExecutor(size, thread_name_prefix="kernels-eigh")
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


_CPU_POOL = _CpuBatchPool()
os.register_at_fork(after_in_child=_CPU_POOL._reset)  # a forked child has the pool object but not its threads


def _descending_eigh(a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``torch.linalg.eigh`` turned to this module's order and sign convention.

    LAPACK lists eigenvalues in ascending order; those of -A are A's negated, so solving -A lists A's largest
    first and the eigenvectors need no reordering copy (negation is exact: the accuracy is the same).
    """
    w, v = torch.linalg.eigh(a.neg())
    signs = vector_signs(v, dim=-2)
    if v.requires_grad:
        return w.neg(), v * signs
    return w.neg_(), v.mul_(signs)


def _split_descending_eigh(work: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``_descending_eigh``, with a CPU stack of two or more matrices split over single-threaded workers.

    Each worker solves its matrices one at a time, so that the input, LAPACK's work and the sign fix of one
    matrix stay in the core's cache, and writes the vectors straight into the result, which is laid out per
    matrix in column-major order as LAPACK writes them (as torch's own batched eigh returns them). Inputs that
    need autograd take torch's own batched call. A matrix solved in a stack may differ from the same matrix
    solved alone in the last float bits (single- vs multi-threaded LAPACK blocking).
    """
    count = math.prod(work.shape[:-2])
    found = _CPU_POOL.executor() if work.device.type == "cpu" and count >= 2 and not work.requires_grad else None
    if found is None:
        return _descending_eigh(work)
    pool, workers = found
    d = work.shape[-1]
    flat = work.reshape(count, d, d)
    w = flat.new_empty(count, d)
    v = flat.new_empty(count, d, d).transpose(-1, -2)
    inference = torch.is_inference_mode_enabled()  # grad and inference modes are per thread: carry them over

    def solve(lo: int, hi: int) -> None:
        with torch.inference_mode(inference), torch.no_grad():
            for i in range(lo, hi):
                w[i], v[i] = _descending_eigh(flat[i])

    bounds = [round(i * count / min(count, workers)) for i in range(min(count, workers) + 1)]
    try:
        futures = [pool.submit(solve, lo, hi) for lo, hi in zip(bounds[:-1], bounds[1:])]
    except RuntimeError:  # the interpreter is shutting down and takes no new work for threads
        return _descending_eigh(work)
    for future in futures:
        future.result()
    return w.reshape(work.shape[:-1]), v.reshape(work.shape)


def eigh_tensor(a: torch.Tensor, compute_dtype: torch.dtype | None = None, impl: str = "torch") -> tuple[torch.Tensor, torch.Tensor]:
    """``eigh`` on a torch tensor already checked: (..., d, d) -> descending eigenvalues, columns as vectors."""
    work = a if compute_dtype is None else a.to(compute_dtype)
    if impl == "cupy":
        w, v = import_cupy().linalg.eigh(to_cupy(work))
        w, v = torch.from_dlpack(w).flip(-1), fix_signs(torch.from_dlpack(v).flip(-1), dim=-2)
    else:
        w, v = _split_descending_eigh(work)
    return w.to(a.dtype), v.to(a.dtype)


def eigh(a: Any, compute_dtype: str | None = None, impl: str = "auto") -> tuple[Any, Any]:
    """Eigenvalues and eigenvectors of a symmetric (..., d, d) stack, largest eigenvalue first.

    Returns ``(w, v)`` shaped like ``numpy.linalg.eigh`` (``v[..., :, i]`` is the vector of ``w[..., i]``) but in
    descending order and with the sign convention of this module, as the input's array type and device. Only the
    lower triangle is read, as in numpy. ``compute_dtype`` "float64" computes float32 input in float64.
    ``impl`` "cupy" uses cupy's solver on a GPU (see ``kernels.backend.resolve_impl``).
    """
    owner = "eigh"
    check_option(compute_dtype, "compute_dtype", owner, (None, "float32", "float64"))
    check_option(impl, "impl", owner, ("auto", "torch", "cupy"))
    (t,), origin = as_tensors(a, names=("a",))
    if t.ndim < 2 or t.shape[-1] != t.shape[-2]:
        raise ValueError(f"The 'a' parameter of eigh must be a stack of square matrices. Got shape {tuple(t.shape)} instead.")
    check_nonempty(t, "a", owner)
    check_finite(t, "a", owner)
    # eigh's own choice: torch's cusolver path is already batched; cupy only when asked for explicitly.
    chosen = resolve_impl(impl, t.device, owner) if impl == "cupy" else "torch"
    dtype = None if compute_dtype is None else getattr(torch, compute_dtype)
    w, v = eigh_tensor(t, dtype, chosen)
    return to_origin(w, origin), to_origin(v, origin)
