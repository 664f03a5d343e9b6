"""Batched symmetric eigendecomposition, eigenvalues in descending order, one deterministic sign per vector.

Sign convention (shared by PCA): every eigenvector is flipped so that its entry of largest absolute value is
positive (the first such entry when several tie exactly). SeFa and GANSpace use the top eigenvectors as
editing directions, so "top first" and a reproducible sign matter more than LAPACK's ascending order.

On a CPU, a stack is split over the cores (``kernels._threads``): each worker thread runs single-threaded
LAPACK (MKL syevd) on one matrix at a time. A d = 512 syevd spends much of its time in memory-bound level-2
steps that do not scale over threads, whereas independent matrices do; single-threaded workers also avoid
OpenMP's barrier spinning when other jobs load the cores (figures: benchmarks/README.md).
Float32 input is computed in float32 unless ``compute_dtype="float64"`` is asked for.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from ._validation import check_finite, check_nonempty, check_option
from ._threads import CPU_POOL as _CPU_POOL
from .backend import as_tensors, device_scope, import_cupy, resolve_impl, to_cupy, to_origin


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
    """``_descending_eigh``, with a CPU stack split over single-threaded workers (one matrix: one worker).

    Each worker solves its matrices one at a time, so that the input, LAPACK's work and the sign fix of one
    matrix stay in the core's cache, and writes the vectors straight into the result, which is laid out per
    matrix in column-major order as LAPACK writes them (as torch's own batched eigh returns them). Inputs that
    need autograd take torch's own batched call. A matrix solved in a stack may differ from the same matrix
    solved alone in the last float bits (single- vs multi-threaded LAPACK blocking). A single matrix goes to
    one worker too: multi-threaded syevd of one 512×512 matrix is several times slower than single-threaded
    whenever other jobs load the cores (OpenMP barriers; benchmarks/README.md, "Read floor").
    """
    count = math.prod(work.shape[:-2])
    found = _CPU_POOL.executor() if work.device.type == "cpu" and count >= 1 and not work.requires_grad else None
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
    with device_scope(work.device, cupy=impl == "cupy"):
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
