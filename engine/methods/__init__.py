"""Methods: read a store in chunks, call kernels, write results to ``directions/`` and ``tables/``.

One module per method; each public function here is the Python twin of a command:

    boundaries  -> latent-engine boundaries     (interfacegan.py)
    condition   -> latent-engine condition      (interfacegan.py)
    edit        -> latent-engine edit           (editing.py)
    sefa        -> latent-engine sefa           (sefa.py)
    pca         -> latent-engine pca            (ganspace.py)
    correlate   -> latent-engine correlate      (correlate.py)

File formats (export, import-interfacegan, index, query) live in ``engine.interop``.
"""
from __future__ import annotations

from engine.methods.correlate import correlate
from engine.methods.editing import edit
from engine.methods.ganspace import pca
from engine.methods.interfacegan import boundaries, condition
from engine.methods.sefa import sefa

__all__ = ["boundaries", "condition", "correlate", "edit", "pca", "sefa"]
