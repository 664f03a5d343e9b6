"""Keep freed torch buffers in the process between batches instead of handing them back to the OS.

On a CPU, a generator's forward pass allocates and frees the same activation buffers batch after batch. glibc
serves buffers above its mmap threshold with fresh mappings and returns freed memory above its trim threshold
to the OS, so each batch faults every page of its activations in again (benchmarks/README.md, "Design
figures", has the page-fault counts and timings that motivated this). The thresholds are the ones glibc's own adaptive heuristic tends towards (mmap threshold at its 32 MiB ceiling),
with a trim threshold large enough for one batch's activations to stay: resident memory is bounded by the
run's peak as before, and stays flat as n grows.

Applied once per process by the sampler (``engine.sample``, the CLI, Dask chunk tasks). Left alone where the
allocator was configured on purpose: ``MALLOC_TRIM_THRESHOLD_``, ``MALLOC_MMAP_THRESHOLD_``,
``MALLOC_TOP_PAD_``, ``MALLOC_MMAP_MAX_`` or ``GLIBC_TUNABLES`` set in the environment, or a C library that
is not glibc.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform
import threading

#: glibc's ceiling for its adaptive mmap threshold (64-bit): buffers below it come from the reusable heap.
MMAP_THRESHOLD = 32 << 20
#: Freed memory at the top of the heap kept for the next batch before any is returned to the OS.
TRIM_THRESHOLD = 128 << 20
#: Environment settings that mean someone configured malloc on purpose.
CONFIGURED_BY = ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TOP_PAD_", "MALLOC_MMAP_MAX_",
                 "GLIBC_TUNABLES")

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameter numbers (malloc.h)
_lock = threading.Lock()
_outcome: bool | None = None


def retain_freed_memory() -> bool:
    """Set glibc's mmap and trim thresholds for batch-after-batch workloads; True if they are in force.

    Idempotent and cheap after the first call. Returns False (and changes nothing) on a C library other than
    glibc or where the environment configures malloc itself (see ``CONFIGURED_BY``).
    """
    global _outcome
    with _lock:
        if _outcome is None:
            _outcome = _apply()
        return _outcome


def _apply() -> bool:
    if platform.libc_ver()[0] != "glibc" or any(name in os.environ for name in CONFIGURED_BY):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    # mallopt returns 1 on success; the mmap threshold first, as setting it fixes glibc's adaptive heuristic
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
