"""Pearson correlation of columns (streaming, mergeable) and cosine comparison of direction sets.

Pearson uses the same float64 (count, mean, scatter) state as PCA (``kernels._scatter``): one pass over chunks,
each centred on its own mean, merged with Chan's update, so it matches ``numpy.corrcoef(X, rowvar=False)``
to the rounding of the float32 GEMMs (~1e-7). A constant column has no correlation: its row and column are NaN, as in
numpy.

Direction matching (SeFa, Table 1) ignores sign: a direction and its negative are one editing axis, and
eigenvector signs are a convention. ``best_match`` therefore ranks by |cos| and reports the cosine distance
1 - |cos| (0 for the same axis, 1 for orthogonal).
"""

from __future__ import annotations

from typing import Any

import torch

from ._scatter import ScatterState, row_chunks
from ._validation import check_finite, check_ndim, check_nonempty
from .backend import Origin, as_tensors, to_origin


class PearsonState:
    """Streaming Pearson correlation of the columns of row chunks.

    ``update(chunk)`` adds rows (n_i, d), ``merge(other)`` folds in another worker's state, ``result()`` returns
    the (d, d) float64 correlation matrix as the first chunk's array type.
    """

    def __init__(self) -> None:
        self._state = ScatterState("PearsonState")
        self._origin: Origin | None = None

    def update(self, chunk: Any) -> "PearsonState":
        """Add a chunk of rows; returns self."""
        return self._add(chunk, "chunk")

    def _add(self, rows: Any, name: str) -> "PearsonState":
        (t,), origin = as_tensors(rows, names=(name,))
        for part in row_chunks(t) if t.ndim == 2 and t.shape[0] else (t,):  # (t,): let update name the error
            self._state.update(part, name)
        self._origin = self._origin or origin
        return self

    def merge(self, other: "PearsonState") -> "PearsonState":
        """Fold ``other`` into this state (in place); returns self."""
        self._state.merge(other._state)
        self._origin = self._origin or other._origin
        return self

    @property
    def n_samples_seen_(self) -> int:
        """Rows accumulated so far."""
        return self._state.n

    def result(self) -> Any:
        """The (d, d) correlation matrix; ValueError before any rows arrived."""
        if self._state.n == 0:
            raise ValueError("The 'chunk' parameter of PearsonState.update was never given a row: cannot "
                             "correlate an empty chunk stream.")
        m2 = self._state.symmetric_m2()
        scale = torch.sqrt(torch.diagonal(m2))
        corr = (m2 / scale[:, None] / scale[None, :]).clamp(-1.0, 1.0)
        corr.fill_diagonal_(1.0)
        corr[scale == 0] = torch.nan
        corr[:, scale == 0] = torch.nan
        return to_origin(corr, self._origin)


def pearson(X: Any) -> Any:
    """Pearson correlation of the columns of an in-memory (n, d) array, like ``numpy.corrcoef(X, rowvar=False)``."""
    state = PearsonState()
    state._state.owner = "pearson"  # errors name the caller's parameter, not the streaming API's
    return state._add(X, "X").result()


def _unit_rows(t: torch.Tensor, name: str, owner: str) -> torch.Tensor:
    check_ndim(t, name, owner, (2,))
    check_nonempty(t, name, owner)
    check_finite(t, name, owner)
    norms = torch.linalg.vector_norm(t, dim=1, keepdim=True)
    if bool((norms == 0).any()):
        row = int(torch.nonzero(norms[:, 0] == 0)[0])
        raise ValueError(f"The '{name}' parameter of {owner} must have nonzero rows. Got a zero row at index {row} "
                         "instead.")
    return t / norms


def _cosines(A: Any, B: Any, owner: str) -> tuple[torch.Tensor, Origin]:
    (a, b), origin = as_tensors(A, B, names=("A", "B"))
    dtype = torch.promote_types(a.dtype, b.dtype)
    a, b = _unit_rows(a.to(dtype), "A", owner), _unit_rows(b.to(dtype), "B", owner)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"The 'B' parameter of {owner} must have as many columns as 'A' ({a.shape[1]}). Got "
                         f"shape {tuple(b.shape)} instead.")
    return a @ b.T, origin


def cosine_matrix(A: Any, B: Any) -> Any:
    """Cosine similarity of every row of A (m, d) with every row of B (k, d): (m, k), signed."""
    cos, origin = _cosines(A, B, "cosine_matrix")
    return to_origin(cos, origin)


def best_match(A: Any, B: Any) -> tuple[Any, Any]:
    """For each row of A, the index of the row of B with the largest |cos| and the cosine distance 1 - |cos|.

    Returns ``(index (m,) int64, distance (m,))`` as A's array type.
    """
    cos, origin = _cosines(A, B, "best_match")
    high, high_index = cos.max(dim=1)  # two reductions instead of an |cos| copy of the whole table
    low, low_index = cos.min(dim=1)
    negative = -low > high
    index = torch.where(negative, low_index, high_index)
    best = torch.where(negative, -low, high)
    return to_origin(index, origin), to_origin((1.0 - best).clamp_min(0.0), origin)
