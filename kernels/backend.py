"""The one place that turns caller arrays into torch tensors and back, and picks an implementation.

Kernels compute in torch on the array's own device (CPU or CUDA). Inputs may be numpy arrays, torch tensors or
cupy arrays; outputs come back as the caller's array type on the caller's device. Moves are zero-copy where the
memory allows it: ``torch.from_numpy`` for numpy, DLPack for cupy <-> torch on a GPU. cupy is imported lazily,
only when a cupy array is passed or ``impl="cupy"`` is requested, and is used only with a GPU present.
"""

from __future__ import annotations

import contextlib
import functools
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

_FLOAT_DTYPES = (torch.float32, torch.float64)


@dataclass(frozen=True)
class Origin:
    """Where caller arrays came from: ``kind`` is "numpy", "torch" or "cupy"; ``device`` the torch device."""

    kind: str
    device: torch.device


def _kind(x: Any) -> str:
    if isinstance(x, torch.Tensor):
        return "torch"
    if type(x).__module__.split(".")[0] == "cupy":
        return "cupy"
    return "numpy"


def _to_tensor(x: Any) -> torch.Tensor:
    kind = _kind(x)
    if kind == "torch":
        return x
    if kind == "cupy":
        return torch.from_dlpack(x)
    arr = np.asarray(x)
    if arr.dtype.byteorder not in ("=", "|") or any(stride < 0 for stride in arr.strides):
        arr = np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("="))
    with warnings.catch_warnings():  # read-only input (memmap, zarr): kernels never write into their inputs
        warnings.filterwarnings("ignore", "The given NumPy array is not writable", UserWarning)
        return torch.from_numpy(arr)


def as_tensors(*arrays: Any, float_dtype: bool = True, names: tuple[str, ...] = ()) -> tuple[list[torch.Tensor], Origin]:
    """Convert arrays to torch tensors on one device and return them with the caller's Origin.

    With ``float_dtype`` (the default) integer, boolean and half inputs become float32; float32 and float64
    keep their dtype. Raises ValueError if the arrays live on different devices.
    """
    tensors = [_to_tensor(a) for a in arrays]
    devices = {t.device for t in tensors}
    if len(devices) > 1:
        where = ", ".join(f"{n or f'argument {i}'} on {t.device}" for i, (n, t) in
                          enumerate(zip(names or ("",) * len(tensors), tensors)))
        raise ValueError(f"All arrays must be on one device; got {where}. Move them to one device first.")
    if float_dtype:
        tensors = [t if t.dtype in _FLOAT_DTYPES else t.to(torch.float32) for t in tensors]
    return tensors, Origin(_kind(arrays[0]), tensors[0].device)


def to_origin(t: torch.Tensor, origin: Origin) -> Any:
    """Return tensor ``t`` as the caller's array type (numpy, torch or cupy) on its device."""
    if origin.kind == "torch":
        return t
    if origin.kind == "cupy":
        return to_cupy(t)
    return t.detach().cpu().numpy()


@functools.cache
def import_cupy() -> Any:
    """The cupy module, imported on first use (ImportError when it is not installed)."""
    import cupy  # noqa: PLC0415  (lazy on purpose: optional dependency)

    return cupy


@functools.cache
def cupy_available() -> bool:
    """True when cupy imports and sees at least one CUDA device."""
    try:
        return import_cupy().cuda.runtime.getDeviceCount() > 0
    except Exception:  # ImportError, or a cupy without a usable driver
        return False


def resolve_impl(impl: str, device: torch.device, owner: str) -> str:
    """Pick "torch" or "cupy" for a kernel whose cupy path pays on a GPU.

    "auto" means cupy when it is installed and the data are on a CUDA device, else torch. "cupy" on a machine
    without cupy/GPU, or on CPU data, is an error rather than a silent fallback.
    """
    from ._validation import check_option

    check_option(impl, "impl", owner, ("auto", "torch", "cupy"))
    if impl == "torch":
        return "torch"
    usable = device.type == "cuda" and cupy_available()
    if impl == "cupy" and not usable:
        why = "cupy is not installed or sees no GPU" if not cupy_available() else f"the data are on {device}"
        raise ValueError(f"The 'impl' parameter of {owner} is 'cupy' but the cupy path cannot run: {why}.")
    return "cupy" if usable else "torch"


def cuda_index(device: torch.device) -> int | None:
    """The CUDA ordinal of ``device`` (torch's current device for a bare "cuda"), or None off CUDA."""
    if device.type != "cuda":
        return None
    return device.index if device.index is not None else torch.cuda.current_device()


@contextlib.contextmanager
def device_scope(device: torch.device, cupy: bool = False) -> Iterator[None]:
    """Make the data's CUDA device current while a kernel works on it; nothing to do off CUDA.

    torch's ops follow their tensors, but what uses the *current* device does not: cupy kernels and solvers
    (launched on cupy's current device), DLPack exchanges (on the current stream) and tensors created without
    a device. Inside this scope both torch's and, with ``cupy``, cupy's current device are the data's, so data
    on cuda:1 is computed on cuda:1, never on device 0.
    """
    index = cuda_index(device)
    if index is None:
        yield
        return
    with contextlib.ExitStack() as stack:
        stack.enter_context(torch.cuda.device(index))
        if cupy:
            stack.enter_context(import_cupy().cuda.Device(index))
        yield


def to_cupy(t: torch.Tensor) -> Any:
    """Zero-copy view of a CUDA tensor as a cupy array (DLPack)."""
    return import_cupy().from_dlpack(t.contiguous())
