"""latent-engine: streaming, resumable analysis of generative models' latent spaces.

The Python API mirrors the command line: every command has a function twin here. The twins are imported on
first use, so ``import engine`` stays light: those of the methods come from the method registry
(``engine.methods``), the others from ``_TWINS``.
"""
from __future__ import annotations

import importlib
from typing import Any

from engine._version import __version__

from engine.store import Store, StoreError

#: public name -> module that defines it, for the twins that are not a method's (imported on first use, so
#: that ``import engine`` does not import torch)
_TWINS = {
    "load_generator": "engine.models.registry",
    "load_predictor": "engine.models.registry",
    "sample": "engine.sampler",
    "export": "engine.interop",
    "import_interfacegan": "engine.interop",
    "report": "engine.reporting",
    "demo": "engine.demonstration",
    "load_sweep": "engine.sweep",
    "run_sweep": "engine.sweep",
}


def __getattr__(name: str) -> Any:
    if name in _TWINS:
        return getattr(importlib.import_module(_TWINS[name]), name)
    if name == "__all__":
        return ["__version__", "Store", "StoreError", *_TWINS, *_method_twins()]
    if not name.startswith("__"):
        twin = _method_twins().get(name)
        if twin is not None:
            return twin
    raise AttributeError(f"module 'engine' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__getattr__("__all__")))


def _method_twins() -> dict[str, Any]:
    from engine.methods import twins
    return twins()
