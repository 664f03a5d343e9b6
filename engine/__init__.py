"""latent-engine: streaming, resumable analysis of generative models' latent spaces.

The Python API mirrors the command line: every command has a function twin here. The method twins are
imported on first use, so ``import engine`` (and the CLI's start-up) stays light.
"""
from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

from engine.store import Store, StoreError

#: public name -> module that defines it (imported on first use, so that ``import engine`` does not import torch)
_TWINS = {
    "load_generator": "engine.models.registry",
    "load_predictor": "engine.models.registry",
    "sample": "engine.sampler",
    "boundaries": "engine.methods.interfacegan",
    "condition": "engine.methods.interfacegan",
    "edit": "engine.methods.editing",
    "sefa": "engine.methods.sefa",
    "pca": "engine.methods.ganspace",
    "correlate": "engine.methods.correlate",
    "export": "engine.interop",
    "import_interfacegan": "engine.interop",
    "report": "engine.reporting",
    "demo": "engine.demonstration",
    "load_sweep": "engine.sweep",
    "run_sweep": "engine.sweep",
}

__all__ = ["__version__", "Store", "StoreError", *_TWINS]


def __getattr__(name: str) -> Any:
    if name in _TWINS:
        return getattr(importlib.import_module(_TWINS[name]), name)
    raise AttributeError(f"module 'engine' has no attribute {name!r}")
