"""Methods: read a store in chunks, call kernels, write results to ``directions/`` and ``tables/``.

One module per method; each public function here is the Python twin of a command.
"""
from __future__ import annotations

from engine.methods.interfacegan import boundaries, condition

__all__ = ["boundaries", "condition"]
