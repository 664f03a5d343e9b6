"""Methods: read a store in chunks, call kernels, write results to ``directions/`` and ``tables/``.

One module per method, and the method registry. Each method module registers what it adds once, in a
module-level ``METHODS`` tuple of ``Method`` records; ``registered()`` finds them by importing every module of
this package whose name does not start with ``_``. Adding a method is therefore adding one module here (plus
its tests); one registration gives

* its Python twins: ``engine.<function name>`` (``engine.boundaries``);
* its commands: ``latent-engine <command>`` (the command's name is the click command's);
* its sweep analyses: the names a sweep file's ``analyses`` list takes, with the function each one calls;
* its report section: what the HTML report shows for the directions it stores under ``directions/<name>/``
  (or whose attrs record ``method: <name>``): the metrics cell of the directions table, a per-direction curve,
  and how ``strongest_directions`` ranks and captions them.

``latent-engine --help`` and ``import engine`` import the method modules through this registry, so a method
module keeps its heavy imports (torch, kernels, models, the sampler) inside the functions that use them.

File formats (export, import-interfacegan, index, query) live in ``engine.interop``.
"""
from __future__ import annotations

import functools
import importlib
import pkgutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from engine.store import Store


@dataclass(frozen=True)
class Spectrum:
    """A per-direction curve the report draws beside the directions table (eigenvalues, explained variance)."""

    values: np.ndarray
    xlabel: str
    ylabel: str
    title: str            # the method's display name, e.g. "SeFa"
    what: str             # the caption after the direction's key, e.g. "eigenvalue spectrum (descending)"


@dataclass(frozen=True)
class ReportSection:
    """What the report shows for one method's directions.

    ``metric(store, key, attrs)`` is the directions table's metrics cell of direction ``key`` ('METHOD/NAME').
    ``spectrum(attrs)`` is a curve to draw for it, or None. ``rank(key, attrs)`` makes a method's directions
    one-row results ranked against each other: it returns (sort key, smallest first; caption), and
    ``strongest_directions`` shows the best ``per_method`` of them. Without ``rank`` the first ``per_method``
    rows of every direction array are shown, each captioned ``<row_label> <row>``.
    """

    metric: Callable[[Store, str, dict[str, Any]], str] | None = None
    spectrum: Callable[[dict[str, Any]], Spectrum | None] | None = None
    rank: Callable[[str, dict[str, Any]], tuple[tuple, str]] | None = None
    row_label: str = "row"


@dataclass(frozen=True)
class Method:
    """One method's registration: see the module docstring.

    ``name`` is the folder its directions are stored under (``directions/<name>/``) and the ``method`` its
    directions' attrs record; ``twins`` are public functions (exported as ``engine.<function name>``),
    ``commands`` click commands, ``analyses`` sweep analysis name -> function.
    """

    name: str
    twins: Sequence[Callable[..., Any]] = ()
    commands: Sequence[Any] = ()
    analyses: Mapping[str, Callable[..., Any]] = field(default_factory=dict)
    report: ReportSection | None = None


class RegistryError(RuntimeError):
    """Two registrations claim the same name: a bug in a method module, not a user mistake."""


@functools.cache
def registered() -> tuple[Method, ...]:
    """Every registered method, in module-name order (modules are imported on the first call)."""
    methods: list[Method] = []
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if not info.name.startswith("_"):
            module = importlib.import_module(f"{__name__}.{info.name}")
            methods.extend(getattr(module, "METHODS", ()))
    _check_unique(methods)
    return tuple(methods)


def _check_unique(methods: Sequence[Method]) -> None:
    for what, names in (("method", [m.name for m in methods]),
                        ("twin", [f.__name__ for m in methods for f in m.twins]),
                        ("command", [c.name for m in methods for c in m.commands]),
                        ("sweep analysis", [a for m in methods for a in m.analyses])):
        seen: set[str] = set()
        for name in names:
            if name in seen:
                raise RegistryError(f"two method registrations claim the {what} name {name!r}")
            seen.add(name)


def method_named(name: str) -> Method | None:
    """The registration called ``name``, or None."""
    return next((m for m in registered() if m.name == name), None)


def twins() -> dict[str, Callable[..., Any]]:
    """Public function name -> function, of every registered method."""
    return {f.__name__: f for m in registered() for f in m.twins}


def commands() -> list[Any]:
    """The click commands of every registered method."""
    return [c for m in registered() for c in m.commands]


def analyses() -> dict[str, Callable[..., Any]]:
    """Sweep analysis name -> function, of every registered method."""
    return {name: f for m in registered() for name, f in m.analyses.items()}


def report_section(key: str, attrs: Mapping[str, Any]) -> ReportSection | None:
    """The report section of direction ``key`` ('METHOD/NAME'): that of the method its attrs record, else
    that of the folder it is stored in; None when neither is registered with one."""
    for name in (attrs.get("method"), key.split("/", 1)[0]):
        found = method_named(name) if isinstance(name, str) else None
        if found is not None and found.report is not None:
            return found.report
    return None


__all__ = ["Method", "RegistryError", "ReportSection", "Spectrum", "analyses", "commands", "method_named",
           "registered", "report_section", "twins"]
