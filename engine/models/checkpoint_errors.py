"""The error every checkpoint reader raises, and how a reader's exception becomes its one line.

Kept apart from ``checkpoints`` so that the readers it uses (``nvlabs_pickle``) share it without an import cycle.
"""
from __future__ import annotations

from collections.abc import Mapping


class CheckpointError(ValueError):
    """A checkpoint that cannot be read safely, is not a state dict, or lacks the weights asked for."""


def first_line(exc: BaseException) -> str:
    """The first informative line of ``exc``'s message, at most 200 characters."""
    text = str(exc)
    # torch's weights-only refusal is a paragraph of advice; the reason follows "WeightsUnpickler error:".
    text = text.split("WeightsUnpickler error:", 1)[-1]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0][:200] if lines else "no message"


def state_size(state: Mapping[str, object], key: str, axis: int, layout: str) -> int:
    """The size of ``state[key]`` along ``axis``, read to infer an architecture from a file's key shapes; a
    one-line ``CheckpointError`` naming ``layout`` if the key or axis is missing."""
    if key not in state:
        raise CheckpointError(f"{layout} layout: missing key {key!r}")
    shape = tuple(state[key].shape)
    if len(shape) <= axis:
        raise CheckpointError(f"{layout} layout: {key} has shape {shape}; expected at least {axis + 1} dimensions")
    return shape[axis]
