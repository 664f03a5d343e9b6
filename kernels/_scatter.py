"""Streaming count, mean and scatter matrix of rows: the shared state behind PCA and Pearson correlation.

Each chunk is centred on its own float32 mean into a reused buffer, and its scatter is one GEMM in the chunk's
dtype (float32 for float32 data); the float32 rounding of the subtracted mean is corrected in float64
(S = XcᵀXc - k·r rᵀ, r the mean of the centred chunk). Chunks and workers merge with Chan, Golub & LeVeque's
pairwise update in float64, so one pass gives the same state as any split of the rows. Memory: O(d² + chunk·d).

GEMM engine: CPU chunks use numpy's GEMM (OpenBLAS) on a zero-copy view, the fastest of numpy, torch (MKL)
and scipy's ``ssyrk`` on the development machine; CUDA chunks use torch's. Chunks are centred into a reused
buffer (a fresh allocation per chunk pays its page faults each time). The measured figures are in
benchmarks/README.md, "Design figures".
"""

from __future__ import annotations

import threading
from typing import Iterator

import numpy as np
import torch

from ._validation import check_finite, check_ndim

#: The calling thread's centring buffer (``ScatterState._buffer``): one chunk's size, reused by every state.
_SCRATCH = threading.local()

#: Rows per GEMM when an in-memory array is streamed (bounds the centred copy to chunk·d floats).
CHUNK_ROWS = 65536


class ScatterState:
    """Mergeable (count, mean, scatter) of the rows seen so far, all float64, on the data's device."""

    def __init__(self, owner: str) -> None:
        self.owner = owner
        self.n = 0
        self.mean: torch.Tensor | None = None
        self.m2: torch.Tensor | None = None

    def update(self, chunk: torch.Tensor, name: str = "X") -> "ScatterState":
        """Add the rows of a 2-D chunk (n_rows, d); an empty chunk or a width change is a ValueError."""
        check_ndim(chunk, name, self.owner, (2,))
        k, d = chunk.shape
        if k == 0 or d == 0:
            raise ValueError(f"The '{name}' parameter of {self.owner} must have at least one row and one column. "
                             f"Got shape {tuple(chunk.shape)} instead.")
        if self.mean is not None and d != self.mean.shape[0]:
            raise ValueError(f"The '{name}' parameter of {self.owner} has {d} columns but earlier chunks had "
                             f"{self.mean.shape[0]}.")
        mean32 = _column_mean(chunk)
        if not bool(torch.isfinite(mean32).all()):  # NaN/inf reach the mean; the full check only then
            check_finite(chunk, name, self.owner)
            raise ValueError(f"The '{name}' parameter of {self.owner} holds values too large to sum in "
                             f"{chunk.dtype}; pass float64 data.")
        centred = _subtract(chunk, mean32, self._buffer(chunk)[:k])
        residual = _column_mean(centred).to(torch.float64)
        m2 = _gram(centred).to(torch.float64).addr_(residual, residual, alpha=-k)
        return self._merge(k, mean32.to(torch.float64) + residual, m2)

    def _buffer(self, chunk: torch.Tensor) -> torch.Tensor:
        """A scratch array at least as large as ``chunk``, kept between chunks *and states* of this thread.

        A streamed reduction makes a new state per block (``partial``) and merges them: a buffer per state would
        be a fresh allocation per block, whose page faults cost more than the centring itself.
        """
        buf = getattr(_SCRATCH, "buffer", None)
        if buf is None or buf.shape[0] < chunk.shape[0] or buf.shape[1:] != chunk.shape[1:] or \
                buf.dtype != chunk.dtype or buf.device != chunk.device:
            buf = _SCRATCH.buffer = torch.empty_like(chunk)
        return buf

    def __getstate__(self) -> dict:
        """Pickled without the scratch buffer and on the host: a state shipped between processes (a Dask worker's
        partial state on its GPU) arrives in host memory wherever it is unpickled; ``merge`` moves it to the
        receiving state's device."""
        return {key: value.cpu() if isinstance(value, torch.Tensor) else value
                for key, value in self.__dict__.items() if key != "_scratch"}

    def merge(self, other: "ScatterState") -> "ScatterState":
        """Fold another worker's state into this one (in place) and return self."""
        if other.n == 0:
            return self
        if self.mean is not None and other.mean.shape != self.mean.shape:
            raise ValueError(f"Cannot merge {self.owner} states of {self.mean.shape[0]} and {other.mean.shape[0]} "
                             "columns.")
        device = self.device_or(other)  # m2 is updated in place later: never share other's tensor
        return self._merge(other.n, other.mean.to(device), other.m2.to(device, copy=True))

    def device_or(self, other: "ScatterState") -> torch.device:
        """This state's device, or ``other``'s while this one is empty."""
        return (self.mean if self.mean is not None else other.mean).device

    def _merge(self, k: int, mean: torch.Tensor, m2: torch.Tensor) -> "ScatterState":
        """Fold in k rows of ``mean`` and scatter ``m2`` (a tensor this state may keep and update in place)."""
        if self.n == 0:
            self.n, self.mean, self.m2 = k, mean, m2
            return self
        n = self.n + k
        delta = mean - self.mean
        self.mean = self.mean + delta * (k / n)
        self.m2.add_(m2).addr_(delta, delta, alpha=self.n * k / n)
        self.n = n
        return self

    def symmetric_m2(self) -> torch.Tensor:
        """The scatter matrix, exactly symmetrised."""
        return (self.m2 + self.m2.T) * 0.5


def _column_mean(t: torch.Tensor) -> torch.Tensor:
    """The mean of each column in t's dtype: numpy's pairwise sum on a CPU (3-5x torch's column reduction), torch's
    elsewhere."""
    if t.device.type == "cpu":
        return torch.from_numpy(np.asarray(t.numpy().mean(0)))
    return t.mean(0)


def _subtract(t: torch.Tensor, row: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """t - row into ``out``: numpy on a CPU (torch's two-thread elementwise ops stall under load), torch elsewhere."""
    if t.device.type == "cpu":
        np.subtract(t.numpy(), row.numpy(), out=out.numpy())
        return out
    return torch.sub(t, row, out=out)


def _gram(centred: torch.Tensor) -> torch.Tensor:
    """centredᵀ @ centred: numpy's GEMM (zero-copy) on CPU, torch's elsewhere; see the module note."""
    if centred.device.type == "cpu":
        view = centred.numpy()
        return torch.from_numpy(view.T @ view)
    return centred.T @ centred


def row_chunks(t: torch.Tensor, rows: int = CHUNK_ROWS) -> Iterator[torch.Tensor]:
    """Views of consecutive row blocks of a 2-D tensor."""
    for start in range(0, t.shape[0], rows):
        yield t[start:start + rows]
