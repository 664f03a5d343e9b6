"""What every method shares: opening the store it reads or writes, refusing to replace results, argument checks.

Choosing and reading latent spaces is ``engine.spaces``; streaming rows is ``Store.iter_rows``.

Methods take a store path or an open ``Store``; readers open it read-only, writers take its lock and reopen it
with ``mode="r+"`` only after every input has been validated, so a rejected request writes nothing.
"""
from __future__ import annotations

import os
from typing import Any
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

from engine.lock import StoreLock
from engine.store import Store, StoreError, check_positive_int, check_writable, warn_repairs


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





def require_attribute(store: Store, name: str) -> int:
    try:
        return store.attribute_index(name)
    except StoreError:
        raise StoreError(f"unknown attribute {name!r}; {store.path} has {store.attributes or 'no scores'}") from None

def device_option(default: str = "auto") -> Any:
    """The ``--device`` option of the analysis commands: where the chunks go and the math runs."""
    import click

    return click.option("--device", default=default, show_default=True,
                        help="auto, cpu, cuda or cuda:<index>: where the rows are read to and the math runs "
                             "(auto: CUDA if present).")


__all__ = ["ResultExistsError", "check_positive_int", "device_option", "open_for_reading", "require_attribute",
           "require_new", "store_path", "writing"]


#: Bytes of rows per ``partial`` call when ``reduce_rows`` streams in-process: large enough that the per-call
#: float64 (d, d) work of a PCA / Pearson state is small beside its GEMM, small enough to keep memory O(chunk).
REDUCE_BLOCK_BYTES = 32 << 20


def _block_chunks(array: Any) -> int:
    """Whole store chunks per block so that a block holds about ``REDUCE_BLOCK_BYTES``."""
    import numpy as np

    chunk_bytes = int(array.chunks[0]) * int(np.prod(array.shape[1:], dtype=np.int64)) * array.dtype.itemsize
    return max(1, REDUCE_BLOCK_BYTES // max(1, chunk_bytes))


def reduce_rows(reader: Store, array: str, partial: Callable[[Any], Any], merge: Callable[[Any, Any], Any], *,
                workers: int | None = None, scheduler: str | None = None, class_label: int | None = None) -> Any:
    """``partial`` of every block of ``array`` merged into one state: on Dask tasks with ``workers`` /
    ``scheduler`` (``engine.distributed.map_reduce_chunks``), else streamed here; only the rows of class
    ``class_label`` when given (a ValueError if there are none)."""
    if workers is not None or scheduler is not None:
        from engine.distributed import map_reduce_chunks
        return map_reduce_chunks(reader.path, array, partial, merge, workers=workers, scheduler=scheduler,
                                 where_class=class_label)
    import numpy as np

    state = None
    labels = reader.array("labels") if class_label is not None else None
    for rows, block in reader.iter_rows(array, block_chunks=_block_chunks(reader.array(array))):
        if labels is not None:
            block = block[np.asarray(labels[rows]) == class_label]
            if block.shape[0] == 0:
                continue
        part = partial(block)
        state = part if state is None else merge(state, part)
    if state is None:
        raise ValueError(f"{reader.path} has no rows of class {class_label}")
    return state
