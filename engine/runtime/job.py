"""The contract of a chunked job, and what a run of one reports."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from engine.store import Store


class ChunkJob(Protocol):
    """One chunk's work, in three steps that executors may run on different threads or machines.

    ``read`` gathers the chunk's inputs on the host (a thread beside the device), ``compute`` runs the device
    work, and ``write`` stores the outputs and commits the chunk, returning counters that the executor sums
    (``rows`` at least). A job sent to Dask is pickled: it holds plain values (model SPECs, not models) and
    builds what it needs where it runs. Running a chunk twice must write the same values.
    """

    def read(self, store: Store, index: int) -> Any: ...

    def compute(self, inputs: Any) -> Mapping[str, np.ndarray]: ...

    def write(self, store: Store, index: int, outputs: Mapping[str, np.ndarray]) -> Mapping[str, int]: ...


@dataclass
class RunStats:
    """What a run did: chunks committed (in commit order), summed counters, wall time."""

    seconds: float = 0.0
    chunks: list[int] = field(default_factory=list)
    counters: dict[str, int] = field(default_factory=dict)

    def add(self, index: int, counters: Mapping[str, int]) -> None:
        self.chunks.append(index)
        for name, value in counters.items():
            self.counters[name] = self.counters.get(name, 0) + int(value)

    @property
    def rows(self) -> int:
        return self.counters.get("rows", 0)

    @property
    def nan_scores(self) -> int:
        return self.counters.get("nan_scores", 0)

    @property
    def samples_per_s(self) -> float:
        return self.rows / self.seconds if self.seconds else 0.0
