"""Progress bars for long work: tqdm on a terminal, silent when disabled (tests, --json, non-interactive)."""
from __future__ import annotations

import sys
from contextlib import contextmanager
from typing import Iterator

from tqdm.auto import tqdm


@contextmanager
def progress_bar(total: int, desc: str, unit: str = "it", initial: int = 0,
                 enabled: bool = True) -> Iterator[tqdm]:
    """A tqdm bar showing rate (e.g. samples/s); written to stderr so stdout stays parseable."""
    bar = tqdm(total=total, initial=initial, desc=desc, unit=unit, unit_scale=True, dynamic_ncols=True,
               disable=not enabled, file=sys.stderr, smoothing=0.1)
    try:
        yield bar
    finally:
        bar.close()
