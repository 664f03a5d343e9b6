"""The chunked-job runtime runs any job, not just sampling: a toy job checked against numpy."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from engine.runtime import RunStats, run_in_process
from engine.store import Store


@dataclass
class NormJob:
    """Writes each row's squared norm of latents/z into scores column 0; fails on chunk ``fail_at``."""

    fail_at: int | None = None

    def read(self, store, index):
        return store.chunk_rows(index), store.array("latents/z")[store.chunk_rows(index)]

    def compute(self, inputs):
        rows, z = inputs
        if self.fail_at is not None and rows.start // (rows.stop - rows.start) == self.fail_at:
            raise RuntimeError(f"chunk {self.fail_at} fails")
        return {"rows": rows, "norm": (z.astype(np.float64) ** 2).sum(axis=1)}

    def write(self, store, index, outputs):
        store.array("scores")[outputs["rows"], 0] = outputs["norm"]
        store.commit_chunk(index)
        return {"rows": outputs["rows"].stop - outputs["rows"].start, "big": int((outputs["norm"] > 4).sum())}


def _store(path) -> Store:
    store = Store.create(path, n=1000, chunk=100, z_dim=4, attributes=["norm"])
    store.array("latents/z")[:] = np.random.default_rng(0).standard_normal((1000, 4)).astype(np.float32)
    return store


def test_any_job_runs_in_process_and_its_counters_add_up(tmp_path):
    store = _store(tmp_path / "s.zarr")
    seen = []
    stats = run_in_process(NormJob(), store, range(10), on_chunk=lambda i, rows: seen.append((i, rows)))
    z = store.array("latents/z")[:].astype(np.float64)
    np.testing.assert_allclose(store.array("scores")[:, 0], (z ** 2).sum(axis=1), rtol=1e-6)
    assert isinstance(stats, RunStats) and stats.rows == 1000 and sorted(stats.chunks) == list(range(10))
    assert stats.counters["big"] == int(((z ** 2).sum(axis=1) > 4).sum())
    assert [i for i, _ in seen] == list(range(10)) and {rows for _, rows in seen} == {100}
    assert store.complete


def test_the_first_error_stops_the_run_and_keeps_what_was_committed(tmp_path):
    store = _store(tmp_path / "s.zarr")
    with pytest.raises(RuntimeError, match="chunk 6 fails"):
        run_in_process(NormJob(fail_at=6), store, range(10))
    done = store.progress()
    assert done[:6].all() and not done[6]                   # the chunks before the failure are committed
    pending = store.pending_chunks()
    run_in_process(NormJob(), store, pending)                 # a resume redoes exactly the rest
    assert store.complete


@dataclass
class FailingReadJob(NormJob):
    """Reads fail at chunk 5 while a slow writer keeps the write queue full."""

    def read(self, store, index):
        if index == 5:
            raise OSError("chunk 5 cannot be read")
        return super().read(store, index)

    def write(self, store, index, outputs):
        import time
        time.sleep(0.3)
        return super().write(store, index, outputs)


def test_a_read_error_while_the_writer_is_behind_stops_the_run_without_hanging(tmp_path):
    import threading

    store = _store(tmp_path / "s.zarr")
    outcome = []

    def run():
        try:
            run_in_process(FailingReadJob(), store, range(10))
        except OSError as exc:
            outcome.append(str(exc))

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(timeout=10)
    assert not worker.is_alive(), "the run hung after the reader failed"
    assert outcome == ["chunk 5 cannot be read"]
    done = store.progress()                                # what was computed before the error is committed
    assert done.sum() >= 1 and done[:done.sum()].all() and not done[5:].any()
