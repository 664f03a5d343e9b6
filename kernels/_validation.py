"""Parameter and input checks shared by every kernel, with scikit-learn's message format.

All failures are ``ValueError`` (or a subclass) whose message names the parameter, its owner and the value,
e.g. "The 'C' parameter of LinearSVM must be a float in (0, inf). Got -1 instead."
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Iterable

import torch


class NotFittedError(ValueError, AttributeError):
    """Raised when a fitted attribute or method is used before ``fit`` (as scikit-learn's NotFittedError)."""


class ConvergenceWarning(UserWarning):
    """An iterative solver stopped at ``max_iter`` before meeting its tolerance."""


_BRACKETS = {"neither": "()", "left": "[)", "right": "(]", "both": "[]"}


def check_interval(
    value: Any,
    name: str,
    owner: str,
    kind: type,
    low: float | None = None,
    high: float | None = None,
    closed: str = "neither",
) -> Any:
    """Return ``value`` if it is a ``kind`` (int or float) inside the interval, else raise ValueError.

    ``low``/``high`` of None mean -inf/inf; ``closed`` says which finite ends are included.
    """
    is_int = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    ok_type = is_int if kind is int else (is_int or isinstance(value, numbers.Real) and not isinstance(value, bool))
    ok = ok_type and not (isinstance(value, float) and math.isnan(value))
    if ok and low is not None:
        ok = value >= low if closed in ("left", "both") else value > low
    if ok and high is not None:
        ok = value <= high if closed in ("right", "both") else value < high
    if not ok:
        left, right = _BRACKETS[closed]
        lo = "-inf" if low is None else f"{low:g}"
        hi = "inf" if high is None else f"{high:g}"
        article = "an" if kind is int else "a"
        raise ValueError(
            f"The '{name}' parameter of {owner} must be {article} {kind.__name__} in {left}{lo}, {hi}{right}. "
            f"Got {value!r} instead."
        )
    return value


def check_option(value: Any, name: str, owner: str, options: Iterable[Any]) -> Any:
    """Return ``value`` if it is one of ``options``, else raise ValueError listing them."""
    options = tuple(options)
    if value not in options:
        listed = ", ".join(repr(o) for o in options)
        raise ValueError(f"The '{name}' parameter of {owner} must be one of {{{listed}}}. Got {value!r} instead.")
    return value


def check_ndim(t: torch.Tensor, name: str, owner: str, ndims: tuple[int, ...]) -> torch.Tensor:
    """Raise ValueError unless ``t.ndim`` is one of ``ndims``."""
    if t.ndim not in ndims:
        want = " or ".join(f"{n}-D" for n in ndims)
        raise ValueError(f"The '{name}' parameter of {owner} must be a {want} array. Got shape {tuple(t.shape)} instead.")
    return t


def check_finite(t: torch.Tensor, name: str, owner: str) -> torch.Tensor:
    """Raise ValueError if a floating tensor holds NaN or infinity."""
    # min and max propagate NaN and expose ±inf in one pass, without a boolean copy of t
    if t.is_floating_point() and t.numel() and not bool(torch.isfinite(torch.stack(torch.aminmax(t))).all()):
        raise ValueError(f"The '{name}' parameter of {owner} contains NaN or infinity.")
    return t


def check_nonempty(t: torch.Tensor, name: str, owner: str) -> torch.Tensor:
    """Raise ValueError if ``t`` has no rows (its second-to-last axis is empty) or no columns."""
    if t.numel() == 0:
        raise ValueError(f"The '{name}' parameter of {owner} must have at least one row and one column. "
                         f"Got shape {tuple(t.shape)} instead.")
    return t


def check_fitted(estimator: Any, attribute: str) -> None:
    """Raise NotFittedError if ``estimator`` lacks the private state ``attribute`` that fit sets."""
    if getattr(estimator, attribute, None) is None:
        raise NotFittedError(
            f"This {type(estimator).__name__} instance is not fitted yet. Call 'fit' with appropriate arguments "
            "before using this estimator."
        )
