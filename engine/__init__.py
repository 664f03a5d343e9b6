"""latent-engine: streaming, resumable analysis of generative models' latent spaces.

The Python API mirrors the command line: every command has a function twin here.
"""
from __future__ import annotations

__version__ = "0.1.0"

from engine.models.registry import load_generator, load_predictor
from engine.sampler import sample
from engine.store import Store, StoreError

__all__ = ["__version__", "Store", "StoreError", "load_generator", "load_predictor", "sample"]
