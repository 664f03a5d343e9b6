"""What the explorer's page may ask for, checked: samples, panels of moves along directions, their limits.

A render request is JSON:

    {"rows": [0, 1, 2, 3]}  or  {"random": {"count": 8, "seed": 0}}       the samples: store rows
    "panels": [[{"direction": "sefa/layer_fc:2", "alpha": 1.5, "layers": "0-3"}, ...], ...]

Each panel is one grid: the samples moved along every direction it lists at once (α in σ units); two panels
put two edits side by side. Everything a request names is checked here against fixed limits and the store's
own keys, so that a bad request becomes a ``RequestError`` (an HTTP 4xx with its message), never an exception
deeper in the server.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

MAX_SAMPLES = 16        # images per grid
MAX_PANELS = 4          # grids rendered side by side in one request
MAX_MOVES = 4           # directions combined in one grid
ALPHA_LIMIT = 10.0      # |α| in σ units: far beyond any useful edit, still a finite code
MAX_SEED = 2**32 - 1


class RequestError(ValueError):
    """A request the explorer refuses: ``status`` is the HTTP status (4xx), the message says why."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Move:
    """One slider: row ``row`` of direction ``key`` ('METHOD/NAME'), ``alpha`` σ, on ``layers`` (or all)."""

    key: str
    row: int
    alpha: float
    layers: tuple[int, int] | None = None

    @property
    def label(self) -> str:
        return f"{self.key}:{self.row}"


@dataclass(frozen=True)
class Samples:
    """Which store rows to edit: ``rows`` given, or ``count`` drawn at random with ``seed``."""

    rows: tuple[int, ...] | None = None
    count: int | None = None
    seed: int | None = None


@dataclass(frozen=True)
class RenderRequest:
    samples: Samples
    panels: tuple[tuple[Move, ...], ...]


def _integer(value: Any, what: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise RequestError(f"{what} must be an integer from {low} to {high}; got {value!r}")
    return value


def parse_samples(payload: dict[str, Any], n: int) -> Samples:
    """The samples of a request: ``rows`` (indices into the store's ``n`` rows) or ``random``."""
    if "rows" in payload:
        rows = payload["rows"]
        if not isinstance(rows, list) or not rows:
            raise RequestError(f"rows must be a non-empty list of row indices; got {rows!r}")
        if len(rows) > MAX_SAMPLES:
            raise RequestError(f"a grid holds at most {MAX_SAMPLES} samples; got {len(rows)} rows", 413)
        return Samples(rows=tuple(_integer(r, "row", 0, n - 1) for r in rows))
    random = payload.get("random", {"count": min(8, n), "seed": 0})
    if not isinstance(random, dict):
        raise RequestError(f"random must be {{'count': K, 'seed': S}}; got {random!r}")
    count = random.get("count", min(8, n))
    if isinstance(count, int) and not isinstance(count, bool) and count > MAX_SAMPLES:
        raise RequestError(f"a grid holds at most {MAX_SAMPLES} samples; got count {count}", 413)
    return Samples(count=_integer(count, "count", 1, min(MAX_SAMPLES, n)),
                   seed=_integer(random.get("seed", 0), "seed", 0, MAX_SEED))


_DIRECTION = re.compile(r"([^/:]+/[^/:]+)(?::([0-9]{1,6}))?")
_LAYERS = re.compile(r"\s*([0-9]{1,4})\s*(?:-\s*([0-9]{1,4}))?\s*")


def parse_move(item: Any, directions: dict[str, int]) -> Move:
    """One move, checked against ``directions`` (key -> number of rows): unknown keys are a 404."""
    if not isinstance(item, dict):
        raise RequestError(f"a move must be {{'direction': 'METHOD/NAME[:ROW]', 'alpha': A}}; got {item!r}")
    text = item.get("direction")
    match = _DIRECTION.fullmatch(text) if isinstance(text, str) and len(text) < 300 else None
    if match is None:
        raise RequestError(f"direction must be METHOD/NAME or METHOD/NAME:ROW; got {text!r}")
    key, row = match.group(1), int(match.group(2) or 0)
    if key not in directions:
        raise RequestError(f"unknown direction {key!r}", 404)
    if row >= directions[key]:
        raise RequestError(f"direction {key} has {directions[key]} rows (0-{directions[key] - 1}); got row {row}")
    alpha = item.get("alpha", 0.0)
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not math.isfinite(alpha) \
            or abs(alpha) > ALPHA_LIMIT:
        raise RequestError(f"alpha must be a number of σ from {-ALPHA_LIMIT:g} to {ALPHA_LIMIT:g}; got {alpha!r}")
    return Move(key, row, float(alpha), parse_layer_text(item.get("layers")))


def parse_layer_text(text: Any) -> tuple[int, int] | None:
    """'A-B' or 'A' (0-based, inclusive) -> (A, B); None or '' -> every layer. Bounds are checked later."""
    if text is None or text == "":
        return None
    match = _LAYERS.fullmatch(text) if isinstance(text, str) and len(text) < 100 else None
    if match is None:
        raise RequestError(f"layers must be 'A' or 'A-B' (0-based, inclusive); got {text!r}")
    first, last = int(match.group(1)), int(match.group(2) or match.group(1))
    if first > last:
        raise RequestError(f"layers {text!r}: the first layer comes after the last")
    return first, last


def parse_render(payload: Any, n: int, directions: dict[str, int]) -> RenderRequest:
    """A render request (see the module docstring) for a store of ``n`` rows and these ``directions``."""
    if not isinstance(payload, dict):
        raise RequestError("the request body must be a JSON object")
    panels = payload.get("panels", [[]])
    if not isinstance(panels, list) or not panels or not all(isinstance(p, list) for p in panels):
        raise RequestError("panels must be a non-empty list of lists of moves")
    if len(panels) > MAX_PANELS:
        raise RequestError(f"at most {MAX_PANELS} panels side by side; got {len(panels)}", 413)
    if any(len(p) > MAX_MOVES for p in panels):
        raise RequestError(f"at most {MAX_MOVES} directions in one panel", 413)
    return RenderRequest(parse_samples(payload, n),
                         tuple(tuple(parse_move(m, directions) for m in p) for p in panels))


__all__ = ["ALPHA_LIMIT", "MAX_MOVES", "MAX_PANELS", "MAX_SAMPLES", "Move", "RenderRequest", "RequestError",
           "Samples", "parse_render"]
