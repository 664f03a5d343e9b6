"""Resolve a model SPEC string to a Generator or Predictor.

A SPEC is either a built-in name with optional arguments, or an import path to the user's own factory:

    planted                      built-in, default options
    planted:seed=3,noise=1.0     built-in with keyword options (values parsed as Python literals)
    convstack:channels=128       built-in with keyword options
    mypkg.models:make_gan        the user's factory, called with no arguments
    mypkg.models:make_gan:size=64
    stylegan2:ffhq.pkl,truncation=0.7   a StyleGAN-family file (engine.models.stylegan_files) with its options

Built-ins are named lazily (module path strings) so importing the registry never builds or imports a model.
A factory that declares a ``generator`` parameter (predictors tied to one generator, e.g. ``planted``)
receives the generator being sampled.
"""
from __future__ import annotations

import ast
import importlib
import inspect
from pathlib import Path
from typing import Any, Callable

import torch

from engine.models.base import Generator, Predictor, check_generator, check_predictor

BUILTIN_GENERATORS: dict[str, str] = {
    "planted": "engine.models.planted:planted_generator",
    "convstack": "engine.models.convstack:convstack_generator",
    "digits": "engine.models.digits:digits_generator",
    "stylegan2": "engine.models.stylegan_files:stylegan2_generator",
    "stylegan3": "engine.models.stylegan_files:stylegan3_generator",
    "stylegan": "engine.models.stylegan_files:stylegan_generator",
    "pggan": "engine.models.gan_files:pggan_generator",
    "biggan": "engine.models.gan_files:biggan_generator",
}
BUILTIN_PREDICTORS: dict[str, str] = {
    "planted": "engine.models.planted:planted_predictor",
    "imagestats": "engine.models.imagestats:imagestats_predictor",
    "digits": "engine.models.digits:digits_predictor",
}


class SpecError(ValueError):
    """A model SPEC that cannot be resolved; the message names the spec and what is wrong."""


def parse_options(text: str) -> tuple[list[Any], dict[str, Any]]:
    """'a,k=1,name=x' -> (['a'], {'k': 1, 'name': 'x'}); values are Python literals where they parse."""
    args: list[Any] = []
    kwargs: dict[str, Any] = {}
    if not text:
        return args, kwargs
    for part in text.split(","):
        key, eq, value = part.partition("=")
        if eq:
            kwargs[key.strip()] = _literal(value.strip())
        else:
            args.append(_literal(part.strip()))
    return args, kwargs


def _literal(text: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _resolve(spec: str, builtins: dict[str, str], kind: str) -> tuple[Callable[..., Any], str]:
    """Return (factory, option text) for ``spec``."""
    if not isinstance(spec, str) or not spec.strip():
        raise SpecError(f"empty {kind} spec")
    head, _, rest = spec.partition(":")
    if head in builtins:
        target, options = builtins[head], rest
    elif "." in head and rest:
        factory_name, _, options = rest.partition(":")
        target = f"{head}:{factory_name}"
    else:
        known = ", ".join(sorted(builtins))
        raise SpecError(f"unknown {kind} {spec!r}: use a built-in ({known}) or 'package.module:factory'")
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise SpecError(f"{kind} {spec!r}: cannot import {module_name!r} ({exc})") from exc
    except Exception as exc:  # noqa: BLE001 - the user's module failed while importing: say where
        raise SpecError(f"{kind} {spec!r}: importing {module_name!r} raised {_describe(exc)}") from exc
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise SpecError(f"{kind} {spec!r}: {module_name!r} has no callable {attr!r}")
    return factory, options


def _call(factory: Callable[..., Any], options: str, spec: str, kind: str, **context: Any) -> Any:
    args, kwargs = parse_options(options)
    signature = inspect.signature(factory)
    for name, value in context.items():
        if name in signature.parameters:
            kwargs[name] = value
    try:
        signature.bind(*args, **kwargs)
    except TypeError as exc:               # only options the factory does not take are the SPEC's fault
        raise SpecError(f"{kind} {spec!r}: bad options ({exc})") from exc
    try:
        return factory(*args, **kwargs)
    except (SpecError, MemoryError, KeyboardInterrupt):
        raise
    except (ValueError, OSError) as exc:
        if not getattr(factory, "__module__", "").startswith("engine."):
            raise SpecError(f"{kind} {spec!r}: its factory raised {_describe(exc)}") from exc
        # A built-in's own error already says what is wrong (a missing file, an unknown option, a refused pickle).
        raise SpecError(f"{kind} {spec!r}: {_message(exc)}") from exc
    except Exception as exc:  # noqa: BLE001 - a factory that fails is the model's problem, not a bug here
        raise SpecError(f"{kind} {spec!r}: its factory raised {_describe(exc)}") from exc


def _message(exc: BaseException) -> str:
    text = str(exc)
    return text.splitlines()[0] if text else type(exc).__name__


def _describe(exc: BaseException) -> str:
    """'SyntaxError: invalid syntax (mod.py, line 3)' / 'RuntimeError: message', on one line."""
    if isinstance(exc, SyntaxError):
        return f"SyntaxError: {exc.msg} ({Path(exc.filename or '?').name}, line {exc.lineno})"
    message = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


def load_generator(spec: str, device: str | torch.device = "cpu") -> Generator:
    """Build the generator named by ``spec``, in eval mode on ``device``."""
    factory, options = _resolve(spec, BUILTIN_GENERATORS, "generator")
    G = _call(factory, options, spec, "generator")
    check_generator(G, spec)
    if isinstance(G, torch.nn.Module):
        G = G.eval().requires_grad_(False).to(device)
    # A factory may name its model more exactly (a file's absolute path), so that the SPEC recorded in a store
    # finds the same model from any directory and on every Dask worker.
    G.spec = getattr(G, "spec", None) or spec
    return G


def load_predictor(spec: str, generator: Generator | None = None,
                   device: str | torch.device = "cpu") -> Predictor:
    """Build the predictor named by ``spec``; ``generator`` is passed to factories that ask for it."""
    factory, options = _resolve(spec, BUILTIN_PREDICTORS, "predictor")
    P = _call(factory, options, spec, "predictor", generator=generator)
    check_predictor(P, spec)
    if isinstance(P, torch.nn.Module):
        P = P.eval().requires_grad_(False).to(device)
    P.spec = spec
    return P
