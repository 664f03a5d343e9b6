"""Exact covariance PCA that streams: one pass over chunks, mergeable across workers, O(d² + chunk·d) memory.

The state is the float64 (count, mean, scatter) of ``kernels._scatter``; components are the top eigenvectors of
the covariance (``kernels.eigh``, computed in float64), with eigh's sign convention: each component's
largest-|value| entry is positive. Results equal a full-SVD PCA of all rows up to rounding (no randomized or
incremental approximation), which is what GANSpace's flat spectra need.
"""

from __future__ import annotations

from typing import Any

import torch

from ._scatter import ScatterState, row_chunks
from ._validation import check_fitted, check_interval
from .backend import Origin, as_tensors, to_origin
from .eigh import eigh_tensor


class PCA:
    """Principal component analysis by exact streaming covariance.

    Parameters
    ----------
    n_components : int or None
        Components kept; None keeps min(n_samples, n_features).

    Use ``fit(X)`` for an array (or an iterable of 2-D chunks), ``partial_fit(chunk)`` to stream, and
    ``merge(other)`` to combine PCAs that saw different rows. Fitted attributes (``components_`` (k, d),
    ``explained_variance_`` (k,), ``explained_variance_ratio_``, ``mean_`` (d,), ``n_samples_seen_``) come back
    as the array type and float dtype of the first chunk (computed in float64); they are recomputed lazily after new data arrive.
    """

    def __init__(self, n_components: int | None = None) -> None:
        self.n_components = n_components

    # -- accumulation ---------------------------------------------------------------------------------------
    def partial_fit(self, X: Any) -> "PCA":
        """Add a chunk of rows (n_rows, d) to the running state."""
        (t,), origin = as_tensors(X, names=("X",))
        self._check_n_components(t.shape[-1])
        self._state_for(origin, t.dtype).update(t)
        self._result = None
        return self

    def fit(self, X: Any) -> "PCA":
        """Fit on an in-memory (n, d) array, or on an iterable of (n_i, d) chunks; forgets earlier data."""
        self._state = None
        if _is_array(X):
            (t,), origin = as_tensors(X, names=("X",))
            self._check_n_components(t.shape[-1])
            state = self._state_for(origin, t.dtype)
            for chunk in row_chunks(t) if t.ndim == 2 and t.shape[0] else (t,):  # (t,): update names the error
                state.update(chunk)
            self._result = None
            return self
        for chunk in X:
            self.partial_fit(chunk)
        if getattr(self, "_state", None) is None:
            raise ValueError("The 'X' parameter of PCA.fit must hold at least one row. Got an empty chunk stream "
                             "instead.")
        return self

    def merge(self, other: "PCA") -> "PCA":
        """Combine ``other``'s accumulated rows into this PCA (in place) and return self."""
        check_fitted(other, "_state")
        self._state_for(other._origin, other._dtype).merge(other._state)
        self._check_n_components(self._state.mean.shape[0])
        self._result = None
        return self

    def _state_for(self, origin: Origin, dtype: torch.dtype) -> ScatterState:
        if getattr(self, "_state", None) is None:
            self._state, self._origin, self._dtype, self._result = ScatterState("PCA"), origin, dtype, None
        return self._state

    def _check_n_components(self, d: int) -> None:
        if self.n_components is not None:
            check_interval(self.n_components, "n_components", "PCA", int, 1, closed="left")
        if self.n_components is not None and self.n_components > d:
            raise ValueError(f"The 'n_components' parameter of PCA must be an int in [1, {d}] (the number of "
                             f"features). Got {self.n_components!r} instead.")

    # -- results --------------------------------------------------------------------------------------------
    def _fitted(self) -> dict[str, torch.Tensor]:
        check_fitted(self, "_state")
        if self._result is None:
            state = self._state
            if state.n < 2:
                raise ValueError(f"PCA needs at least 2 rows to estimate a covariance. Got {state.n} instead.")
            k = self.n_components or min(state.n, state.mean.shape[0])
            values, vectors = eigh_tensor(state.symmetric_m2() / (state.n - 1))
            values = values.clamp_min(0.0)
            total = values.sum()
            self._result = {
                "components_": vectors[:, :k].T.contiguous(),
                "explained_variance_": values[:k],
                "explained_variance_ratio_": values[:k] / total if total > 0 else torch.zeros_like(values[:k]),
                "mean_": state.mean,
            }
        return self._result

    def _out(self, name: str) -> Any:
        return to_origin(self._fitted()[name].to(self._dtype), self._origin)

    @property
    def components_(self) -> Any:
        """(k, d) unit rows, largest variance first, largest-|entry| positive."""
        return self._out("components_")

    @property
    def explained_variance_(self) -> Any:
        """(k,) variances along the components (covariance eigenvalues, ddof=1)."""
        return self._out("explained_variance_")

    @property
    def explained_variance_ratio_(self) -> Any:
        """(k,) fraction of the total variance per component."""
        return self._out("explained_variance_ratio_")

    @property
    def mean_(self) -> Any:
        """(d,) mean of all rows seen."""
        return self._out("mean_")

    @property
    def n_samples_seen_(self) -> int:
        """Rows accumulated so far."""
        check_fitted(self, "_state")
        return self._state.n

    def transform(self, X: Any) -> Any:
        """Project rows (n, d) onto the components: (X - mean_) @ components_.T, as X's array type."""
        result = self._fitted()
        (t,), origin = as_tensors(X, names=("X",))
        d = result["mean_"].shape[0]
        if t.ndim != 2 or t.shape[1] != d:
            raise ValueError(f"The 'X' parameter of PCA.transform must have shape (n, {d}). Got {tuple(t.shape)} "
                             "instead.")
        comps = result["components_"].to(t.device)
        out = (t.to(torch.float64) - result["mean_"].to(t.device)) @ comps.T
        return to_origin(out.to(t.dtype), origin)


def _is_array(x: Any) -> bool:
    """numpy/torch/cupy arrays are fitted in memory; anything else is iterated as a stream of chunks."""
    return hasattr(x, "shape") and hasattr(x, "dtype")
