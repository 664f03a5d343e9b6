"""Model protocols, the SPEC registry and the built-in models."""
from engine.models.base import Factorizable, Generator, Predictor
from engine.models.registry import SpecError, load_generator, load_predictor

__all__ = ["Factorizable", "Generator", "Predictor", "SpecError", "load_generator", "load_predictor"]
