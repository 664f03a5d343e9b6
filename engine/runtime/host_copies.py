"""Device-to-host copies that the device never waits for: pinned buffers filled on a side CUDA stream.

A chunk's outputs (mapped codes, scores) are computed batch by batch on the device; each batch's results must
reach the chunk's numpy arrays before the chunk is written. Copied in line (``tensor.cpu()``), every batch
waits for its own copy and the device idles meanwhile. ``HostCopies`` instead records an event on the compute
stream after a batch, has a side stream wait for that event and copy the batch into page-locked (pinned) host
buffers without blocking, and records a second event when the copy is done. The host lands a batch (pinned
buffer -> numpy rows) only after its copy event, at most ``depth`` puts later, and only then returns the
pinned buffer for reuse; ``finish`` lands the rest before the chunk may be written. The compute stream never
waits on the side stream, so batch i+1's kernels run while batch i is copied.

On a CPU device the copies are made in line (``tensor.cpu().numpy()``), exactly as before this module.
"""
from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
import torch

#: ``put`` calls whose copies may be in flight at once (a batch puts its codes, then its scores: two calls); the
#: host waits for the oldest beyond this. 4 lets two batches' copies overlap the device's work.
COPY_DEPTH = 4


class CopyEvent(Protocol):
    def synchronize(self) -> None: ...


class CudaCopies:
    """The CUDA side of ``HostCopies``: pinned buffers, one side stream, events."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.stream = torch.cuda.Stream(device)

    def pinned(self, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        return torch.empty(shape, dtype=dtype, pin_memory=True)

    def launch(self, pairs: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> CopyEvent:
        """Copy each (pinned, device tensor) pair on the side stream once the compute stream has produced the
        tensors; returns the event recorded after the copies."""
        ready = torch.cuda.Event()
        ready.record(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(self.stream):
            self.stream.wait_event(ready)
            for pinned, tensor in pairs:
                pinned.copy_(tensor, non_blocking=True)
            done = torch.cuda.Event()
            done.record(self.stream)
        return done


class HostCopies:
    """Copies of device tensors into rows of numpy arrays, overlapped with the device's next work.

    ``put([(array, rows, tensor), ...])`` after each batch (tensors already in the array's dtype, computed on
    the current stream); ``finish()`` before the arrays are read. ``ops`` is the asynchronous copier (a
    ``CudaCopies`` for a CUDA device, none on CPU: in-line copies); tests pass a stand-in.
    """

    def __init__(self, device: torch.device, depth: int = COPY_DEPTH, ops: Any = None) -> None:
        if ops is None and device.type == "cuda":
            ops = CudaCopies(device)
        self.ops = ops
        self.depth = int(depth)
        self._flight: deque[tuple[CopyEvent, list[tuple[np.ndarray, slice, torch.Tensor, torch.Tensor]]]] = deque()
        self._free: dict[tuple[tuple[int, ...], torch.dtype], list[torch.Tensor]] = {}

    @property
    def asynchronous(self) -> bool:
        """Whether a tensor put here is read later (its copy lands after the device's next work), so it must
        not change in the meantime."""
        return self.ops is not None

    def put(self, copies: Sequence[tuple[np.ndarray, slice, torch.Tensor]]) -> None:
        """Copy each tensor into ``array[rows]``: at once on CPU, else started now and landed later."""
        if self.ops is None:
            for array, rows, tensor in copies:
                array[rows] = tensor.cpu().numpy()
            return
        staged = [(array, rows, self._buffer(tuple(tensor.shape), tensor.dtype), tensor)
                  for array, rows, tensor in copies]
        # The device tensors stay referenced until their copy is done, so their memory is not reused meanwhile.
        done = self.ops.launch([(pinned, tensor) for _, _, pinned, tensor in staged])
        self._flight.append((done, staged))
        while len(self._flight) > self.depth:
            self._land()

    def finish(self) -> None:
        """Wait for every copy in flight and land it in its array."""
        while self._flight:
            self._land()

    def discard(self) -> None:
        """Forget the copies in flight (after an error): wait for them, land nothing."""
        while self._flight:
            done, staged = self._flight.popleft()
            try:
                done.synchronize()
            except Exception:  # noqa: BLE001 - the error that stopped the chunk is the one to report
                continue
            for _, _, pinned, _ in staged:
                self._release(pinned)

    def _land(self) -> None:
        done, staged = self._flight.popleft()
        done.synchronize()
        for array, rows, pinned, _ in staged:
            array[rows] = pinned.numpy()
            self._release(pinned)

    def _buffer(self, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        free = self._free.get((shape, dtype))
        return free.pop() if free else self.ops.pinned(shape, dtype)

    def _release(self, pinned: torch.Tensor) -> None:
        self._free.setdefault((tuple(pinned.shape), pinned.dtype), []).append(pinned)


def to_device_rows(values: np.ndarray, device: torch.device) -> torch.Tensor:
    """A chunk's host rows ready for batch-by-batch transfer to ``device``: pinned on CUDA (so that
    ``.to(device, non_blocking=True)`` does not block the host), the numpy array's own memory on CPU."""
    tensor = torch.from_numpy(values)
    return tensor.pin_memory() if device.type == "cuda" else tensor
