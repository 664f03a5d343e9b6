"""Rows read from a store onto the device where the math runs, and results back to the host once.

The analyses (``boundaries``, ``meandiff``, ``pca``, ``correlate``, ``sefa``, ``condition``) read numpy blocks
from Zarr and hand them to ``to_device``. On a CPU that is a zero-copy ``torch.from_numpy`` view. On CUDA each
block is copied into a page-locked (pinned) host buffer and from there to the GPU with a non-blocking copy: the
copy runs on the device's stream while the host goes on to decompress the next block. Two staging buffers per
device and thread take turns; before a buffer is refilled, the host waits for the event recorded after its last
copy, so a block in flight is never overwritten. The buffers are kept (grown, never shrunk) for the thread's
next blocks: a run holds pinned memory of about twice its largest block. ``to_host`` brings a result (tensor,
numpy or a kernel's output) back as numpy, once, at the end.
"""
from __future__ import annotations

import threading
import warnings
from typing import Any

import numpy as np
import torch

from engine.devices import resolve_device

#: Pinned staging buffers per (device, thread): one filled by the host while the other's copy is in flight.
SLOTS = 2


class _Slot:
    """One pinned host buffer and the event recorded after the last copy out of it."""

    def __init__(self) -> None:
        self.buffer: torch.Tensor | None = None
        self.event: Any = None

    def stage(self, block: np.ndarray) -> torch.Tensor:
        """``block`` copied into this slot's pinned buffer (grown when too small), as a tensor of its shape."""
        if self.event is not None:
            self.event.synchronize()  # the previous copy out of this buffer has finished reading it
        nbytes = block.nbytes
        if self.buffer is None or self.buffer.numel() < nbytes:
            self.buffer = torch.empty(max(nbytes, 1), dtype=torch.uint8, pin_memory=True)
        host = self.buffer[:nbytes].view(_torch_dtype(block.dtype)).view(block.shape)
        host.numpy()[...] = block
        return host


class HostToDevice:
    """Copies host blocks to one CUDA device through ``SLOTS`` alternating pinned buffers (see the module note)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self._slots = [_Slot() for _ in range(SLOTS)]
        self._next = 0

    def __call__(self, block: np.ndarray) -> torch.Tensor:
        slot = self._slots[self._next]
        self._next = (self._next + 1) % len(self._slots)
        host = slot.stage(np.ascontiguousarray(block))
        out = host.to(self.device, non_blocking=True)
        slot.event = torch.cuda.Event()
        slot.event.record(torch.cuda.current_stream(self.device))
        return out


_local = threading.local()


def _feed(device: torch.device) -> HostToDevice:
    feeds = getattr(_local, "feeds", None)
    if feeds is None:
        feeds = _local.feeds = {}
    if device not in feeds:
        feeds[device] = HostToDevice(device)
    return feeds[device]


def as_device(device: str | torch.device | None) -> torch.device:
    """``device`` as a torch device (None and "cpu" are the CPU); ValueError naming the choice if unusable."""
    return torch.device("cpu") if device is None else resolve_device(device)


def to_device(block: Any, device: torch.device) -> torch.Tensor:
    """A host block (numpy or anything ``np.asarray`` takes) as a tensor on ``device``.

    CPU: a zero-copy view where the block's memory allows (a copy only for non-native byte order or negative
    strides). CUDA: staged through a pinned buffer and copied without blocking the host (module note). A
    tensor already on ``device`` is returned as is.
    """
    if isinstance(block, torch.Tensor):
        return block.to(device, non_blocking=True)
    block = np.asarray(block)
    if block.dtype.byteorder not in ("=", "|"):
        block = block.astype(block.dtype.newbyteorder("="))
    if device.type == "cuda":
        return _feed(device)(block)
    if any(stride < 0 for stride in block.strides):
        block = np.ascontiguousarray(block)
    with warnings.catch_warnings():  # read-only blocks (zarr, memmap): the analyses never write into their input
        warnings.filterwarnings("ignore", "The given NumPy array is not writable", UserWarning)
        return torch.from_numpy(block)


def to_host(value: Any, dtype: Any = None) -> np.ndarray:
    """A result (torch tensor on any device, numpy array, cupy array or scalar) as a numpy array."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    elif type(value).__module__.split(".")[0] == "cupy":
        value = value.get()
    return np.asarray(value) if dtype is None else np.asarray(value, dtype)


def _torch_dtype(dtype: np.dtype) -> torch.dtype:
    return torch.from_numpy(np.empty(0, dtype)).dtype
