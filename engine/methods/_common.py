"""What every method shares: opening the store it reads or writes, streaming codes of one space, argument checks.

Methods take a store path or an open ``Store``; readers open it read-only, writers take its lock and reopen it
with ``mode="r+"`` only after every input has been validated, so a rejected request writes nothing.
"""
from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import numpy as np

from engine.lock import StoreLock
from engine.store import Store, StoreError, check_writable, warn_repairs


def store_path(store: str | os.PathLike | Store) -> str:
    return store.path if isinstance(store, Store) else str(store)


def open_for_reading(store: str | os.PathLike | Store, *, complete: bool = True) -> Store:
    """A read-only view of ``store``; with ``complete`` an unfinished sampling run is refused."""
    opened = Store.open(store_path(store))
    if complete:
        opened.require_complete()
    return opened


@contextmanager
def writing(store: str | os.PathLike | Store, purpose: str) -> Iterator[Store]:
    """Hold the store's lock and yield it opened for writing results."""
    path = store_path(store)
    with StoreLock(path, purpose=purpose):
        opened = Store.open(path, mode="r+")
        warn_repairs(path, opened.recover())
        yield opened


class ResultExistsError(StoreError):
    """A command would replace a stored result, and the caller did not ask to overwrite it."""


def require_new(store: Store, paths: Sequence[str], overwrite: bool) -> None:
    """Refuse, before any work, to replace stored results unless ``overwrite``, or to compute results that a
    read-only store could not keep.

    ``paths`` are store paths such as ``directions/interfacegan/age`` or ``tables/boundary_cosine``. Nothing in
    a store is replaced silently: the error names what exists and how to replace it.
    """
    check_writable(store.path)
    if overwrite:
        return
    present = set(f"directions/{key}" for key in store.directions()) | set(f"tables/{t}" for t in store.tables())
    existing = [p for p in paths if p in present]
    if existing:
        shown = ", ".join(existing[:3]) + (f" and {len(existing) - 3} more" if len(existing) > 3 else "")
        raise ResultExistsError(f"{store.path} already has {shown}; pass overwrite=True (--overwrite) to "
                                "replace it, or choose another name")


def check_positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(f"{name} must be a positive integer; got {value!r}")
    return int(value)


def prefetched(rows: Iterable[slice], read: Callable[[slice], np.ndarray],
               depth: int = 2) -> Iterator[tuple[slice, np.ndarray]]:
    """``(rows, read(rows))`` in order, with up to ``depth`` reads in flight on threads.

    zarr's decompression releases the GIL, so two reads overlap each other and the caller's work on the last
    block (measured on a 2-core machine: a 400 MB pass 1.2-2.3 s serial, 0.9 s with two in flight). At most
    ``depth`` blocks wait in memory.
    """
    pending: deque = deque()
    with ThreadPoolExecutor(max_workers=depth, thread_name_prefix="latent-read") as pool:
        for r in rows:
            pending.append((r, pool.submit(read, r)))
            if len(pending) >= depth:
                done, future = pending.popleft()
                yield done, future.result()
        while pending:
            done, future = pending.popleft()
            yield done, future.result()


def stream_rows(store: Store, name: str) -> Iterator[tuple[slice, np.ndarray]]:
    """``Store.iter_rows`` with two chunks read ahead (see ``prefetched``)."""
    array = store.array(name)
    step, n = int(array.chunks[0]), int(array.shape[0])
    return prefetched((slice(s, min(s + step, n)) for s in range(0, n, step)), lambda rows: np.asarray(array[rows]))


class LatentView:
    """Rows of one latent space as (n, dim) matrices: z, w, wp flattened to (n, L·d), or one wp layer."""

    def __init__(self, store: Store, space: str, layer: int | None = None):
        if space not in ("z", "w", "wp"):
            raise ValueError(f"--space must be z, w or wp; got {space!r}")
        self.array = store.latent_array(space)
        self.space = space
        self.layer = None
        if layer is not None:
            if space != "wp":
                raise ValueError(f"--layer selects one layer of the wp space; it does not apply to {space!r}")
            num_ws = self.array.shape[1]
            if isinstance(layer, bool) or not 0 <= int(layer) < num_ws:
                raise ValueError(f"--layer must be in [0, {num_ws}) for this store's wp codes; got {layer!r}")
            self.layer = int(layer)
        shape = self.array.shape
        self.dim = int(shape[-1]) if space != "wp" or self.layer is not None else int(shape[1] * shape[2])
        self.rows_per_chunk = int(self.array.chunks[0])
        self.n = int(shape[0])

    def _shape(self, values: np.ndarray) -> np.ndarray:
        if self.space != "wp":
            return values
        if self.layer is not None:
            return np.ascontiguousarray(values[:, self.layer])
        return values.reshape(values.shape[0], -1)

    def read(self, rows: slice) -> np.ndarray:
        if self.space == "wp" and self.layer is not None:
            return np.asarray(self.array[rows, self.layer])
        return self._shape(np.asarray(self.array[rows]))

    def blocks(self, block_chunks: int = 1) -> Iterator[tuple[slice, np.ndarray]]:
        """Stream the rows in blocks of whole storage chunks: (rows, (b, dim) float32)."""
        step = self.rows_per_chunk * block_chunks
        yield from prefetched((slice(start, min(start + step, self.n)) for start in range(0, self.n, step)),
                              self.read)

    def gather(self, index: np.ndarray) -> np.ndarray:
        """Rows ``index`` (any order, repeats allowed) as (len(index), dim), reading each chunk once."""
        return self.gather_many([index])[0]

    def gather_many(self, indexes: Sequence[np.ndarray],
                    on_chunk: Callable[[int], object] | None = None) -> list[np.ndarray]:
        """``[gather(i) for i in indexes]`` in one pass: each storage chunk holding any wanted row is read once.

        ``on_chunk(rows)`` is called after each chunk read (rows = the chunk's row count), e.g. a bar's update.

        The rows go straight into the outputs, with no intermediate copy of the selection: a fresh 100 MB costs
        ~0.3 s of page faults on the first touch on this project's machine, more than copying it.
        """
        import torch  # row copies through torch: numpy's fancy indexing into fresh memory was ~5x slower here

        flat = [np.asarray(i, dtype=np.int64).ravel() for i in indexes]
        outs = [np.empty((i.size, self.dim), np.float32) for i in flat]
        rows = np.concatenate(flat) if flat else np.empty(0, np.int64)
        if rows.size and (rows.min() < 0 or rows.max() >= self.n):
            raise IndexError(f"row index out of range [0, {self.n}) in gather")
        owner = np.repeat(np.arange(len(flat)), [i.size for i in flat])
        position = np.concatenate([np.arange(i.size) for i in flat]) if flat else rows
        order = np.argsort(rows, kind="stable")
        rows, owner, position = rows[order], owner[order], position[order]
        chunk_of = rows // self.rows_per_chunk
        starts = np.r_[0, np.flatnonzero(np.diff(chunk_of)) + 1] if rows.size else np.empty(0, np.int64)
        bounds = list(zip(starts.tolist(), np.r_[starts[1:], rows.size].tolist()))
        spans = (slice(int(chunk_of[lo]) * self.rows_per_chunk,
                       min((int(chunk_of[lo]) + 1) * self.rows_per_chunk, self.n)) for lo, _ in bounds)
        targets = [torch.from_numpy(o) for o in outs]
        for (lo, hi), (span, block) in zip(bounds, prefetched(spans, self.read)):
            source = torch.from_numpy(block)
            for k in np.unique(owner[lo:hi]).tolist():
                mine = lo + np.flatnonzero(owner[lo:hi] == k)
                local = torch.from_numpy(rows[mine] - span.start)
                targets[k].index_copy_(0, torch.from_numpy(position[mine]), source.index_select(0, local))
            if on_chunk is not None:
                on_chunk(span.stop - span.start)
        return [o.reshape(*np.shape(i), self.dim) for o, i in zip(outs, indexes)]

    @property
    def label(self) -> str:
        return self.space if self.layer is None else f"{self.space}[{self.layer}]"


def default_space(store: Store) -> str:
    """w when the store has it (the better-behaved space for most generators), else z."""
    return "w" if "w" in store.spaces else "z"


def require_attribute(store: Store, name: str) -> int:
    try:
        return store.attribute_index(name)
    except StoreError:
        raise StoreError(f"unknown attribute {name!r}; {store.path} has {store.attributes or 'no scores'}") from None
