"""latent-engine: streaming, resumable analysis of generative models' latent spaces.

The Python API mirrors the command line: every command has a function twin here. The method twins are
imported on first use, so ``import engine`` (and the CLI's start-up) stays light.
"""
from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

from engine.models.registry import load_generator, load_predictor
from engine.sampler import sample
from engine.store import Store, StoreError

#: command twin -> module that defines it
_TWINS = {
    "boundaries": "engine.methods.interfacegan",
    "condition": "engine.methods.interfacegan",
    "edit": "engine.methods.editing",
    "sefa": "engine.methods.sefa",
    "pca": "engine.methods.ganspace",
    "correlate": "engine.methods.correlate",
    "export": "engine.interop",
    "import_interfacegan": "engine.interop",
    "report": "engine.report",
    "demo": "engine.demo",
    "load_sweep": "engine.sweep",
    "run_sweep": "engine.sweep",
}

__all__ = ["__version__", "Store", "StoreError", "load_generator", "load_predictor", "sample", *_TWINS]


def __getattr__(name: str) -> Any:
    if name in _TWINS:
        return getattr(importlib.import_module(_TWINS[name]), name)
    raise AttributeError(f"module 'engine' has no attribute {name!r}")
