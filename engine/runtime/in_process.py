"""The in-process executor: read, compute and write overlap on three threads with bounded queues."""
from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterable

from engine.runtime.job import ChunkJob, RunStats
from engine.store import Store

#: Chunks waiting between two steps; memory holds a few chunks whatever the number of chunks is.
QUEUE_DEPTH = 2


def run_in_process(job: ChunkJob, store: Store, chunks: Iterable[int],
                   on_chunk: Callable[[int, int], None] | None = None) -> RunStats:
    """Run ``job`` over ``chunks`` of ``store`` (opened for writing), committing each as it is written.

    The next chunk is read and the previous one written on threads while this thread computes; both queues are
    bounded. ``on_chunk(index, rows)`` is called after each commit (progress bars). The first error on any
    thread stops the run: chunks written before it stay committed, the rest stay pending for a resume.
    """
    chunks = list(chunks)
    stats = RunStats()
    read_queue: queue.Queue = queue.Queue(QUEUE_DEPTH)
    write_queue: queue.Queue = queue.Queue(QUEUE_DEPTH)
    stop = threading.Event()
    errors: list[BaseException] = []

    def put(q: queue.Queue, item: object) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def reader() -> None:
        try:
            for index in chunks:
                if not put(read_queue, (index, job.read(store, index))):
                    return
            put(read_queue, None)
        except BaseException as exc:  # noqa: BLE001 - handed to the calling thread
            errors.append(exc)
            stop.set()

    def writer() -> None:
        try:
            while True:
                item = write_queue.get()
                if item is None:
                    return
                index, outputs = item
                counters = job.write(store, index, outputs)
                stats.add(index, counters)
                if on_chunk is not None:
                    on_chunk(index, int(counters.get("rows", 0)))
        except BaseException as exc:  # noqa: BLE001 - handed to the calling thread
            errors.append(exc)
            stop.set()

    threads = [threading.Thread(target=reader, name="chunk-read", daemon=True),
               threading.Thread(target=writer, name="chunk-write", daemon=True)]
    for thread in threads:
        thread.start()
    start = time.perf_counter()
    try:
        while not stop.is_set():
            try:
                item = read_queue.get(timeout=0.1)
            except queue.Empty:
                continue
            if item is None:
                break
            index, inputs = item
            if not put(write_queue, (index, job.compute(inputs))):
                break
    except BaseException:
        stop.set()
        raise
    finally:
        # Let the writer drain what was computed (those chunks are complete) before reporting. A live writer
        # keeps taking from the queue, so the end marker always gets in; a dead one ends the loop.
        while threads[1].is_alive():
            try:
                write_queue.put(None, timeout=0.1)
                break
            except queue.Full:
                continue
        threads[1].join()
        stop.set()
        threads[0].join(timeout=5)
        stats.seconds = time.perf_counter() - start
    if errors:
        raise errors[0]
    return stats
