"""SeFa (paper 003): closed-form directions from the weights that take the latent code in.

For a selection of layers, the weights (out_i, d) are stacked into A, each row normalised to unit length (as
SeFa's ``factorize_weight``), and the directions are the eigenvectors of AᵀA in descending eigenvalue order:
``kernels.eigh`` sorts, fixing the reference code's unsorted ``np.linalg.eig``. Several layer selections
(``layers=["all", "0-1", "2-3"]``) are factorized in one batched eigh call.

Weights come from a generator object exposing ``latent_weights()`` (``engine.models.base.Factorizable``) or
from a checkpoint read by ``engine.models.checkpoints`` (no network is built).
"""
from __future__ import annotations

import os
import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from engine.methods._common import check_positive_int
from engine.store import Store, StoreError

METHOD = "sefa"
LATENT_SPACE = {"stylegan2": "w", "stylegan": "w", "pggan": "z", "biggan": "z"}


def parse_layers(spec: str, count: int) -> list[int]:
    """'all' | '0-3' | '0,2,5' | '0-2,5' -> sorted layer indices in [0, count)."""
    text = str(spec).strip().lower()
    if text == "all":
        return list(range(count))
    chosen: set[int] = set()
    for part in text.split(","):
        match = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", part)
        if not match:
            raise ValueError(f"--layers must be 'all', a range '0-3' or a list '0,2,5'; got {spec!r}")
        lo = int(match.group(1))
        hi = int(match.group(2)) if match.group(2) is not None else lo
        if hi < lo:
            raise ValueError(f"--layers range {part.strip()!r} runs backwards")
        chosen.update(range(lo, hi + 1))
    bad = sorted(i for i in chosen if i >= count)
    if bad:
        raise ValueError(f"--layers {spec!r} names layer {bad[0]}, but the model has {count} latent layers "
                         f"(0-{count - 1})")
    return sorted(chosen)


def _selection_name(spec: str) -> str:
    return "layers_" + re.sub(r"\s+", "", str(spec).lower()).replace(",", "_")


def factorize(weights: Sequence[torch.Tensor], selections: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
    """Eigen-decompose AᵀA for each selection of layers: (eigenvalues (b, d), eigenvectors as rows (b, d, d))."""
    import kernels

    grams = []
    for chosen in selections:
        A = torch.cat([weights[i].to(torch.float64) for i in chosen])
        norms = torch.linalg.vector_norm(A, dim=1, keepdim=True)
        A = A / torch.where(norms > 0, norms, torch.ones_like(norms))
        grams.append(A.T @ A)
    values, vectors = kernels.eigh(torch.stack(grams))
    return values.numpy(), vectors.transpose(-1, -2).numpy()


def load_weights(generator: Any = None, checkpoint: str | os.PathLike | None = None, family: str | None = None,
                 *, include_torgb: bool = False, trust_checkpoint: bool = False) -> tuple[list[tuple[str, torch.Tensor]], str, str]:
    """(layers [(name, (out, d))], space of the code they act on, a source label)."""
    if (generator is None) == (checkpoint is None):
        raise ValueError("sefa needs exactly one of --generator SPEC or --checkpoint PATH --family F")
    if checkpoint is not None:
        from engine.models.checkpoints import FAMILIES, read_latent_weights
        if family not in FAMILIES:
            raise ValueError(f"--checkpoint needs --family, one of {', '.join(FAMILIES)}; got {family!r}")
        layers = read_latent_weights(checkpoint, family, include_torgb=include_torgb, trust=trust_checkpoint)
        return layers, LATENT_SPACE[family], f"{family}:{checkpoint}"
    if family is not None:
        raise ValueError("--family goes with --checkpoint; a --generator knows its own layout")
    if isinstance(generator, str):
        from engine.models.registry import load_generator
        G = load_generator(generator)
    else:
        G = generator
    if not callable(getattr(G, "latent_weights", None)):
        raise ValueError(f"generator {getattr(G, 'spec', G)!r} does not expose latent_weights() "
                         "(engine.models.base.Factorizable); pass its checkpoint with --family instead")
    layers = [(name, torch.as_tensor(w).detach().float().cpu()) for name, w in G.latent_weights()]
    if not layers:
        raise ValueError(f"generator {getattr(G, 'spec', G)!r} returned no latent weights")
    space = "w" if getattr(G, "has_mapping", False) else "z"
    return layers, space, f"generator:{getattr(G, 'spec', type(G).__name__)}"


def sefa(*, generator: Any = None, checkpoint: str | os.PathLike | None = None, family: str | None = None,
         layers: str | Sequence[str] = "all", k: int = 10, store: str | os.PathLike | Store | None = None,
         include_torgb: bool = False, trust_checkpoint: bool = False, name: str | None = None) -> dict[str, dict[str, Any]]:
    """SeFa directions for each layer selection in ``layers``; written to ``directions/sefa/<name>`` when
    ``store`` is given (created if missing). Returns {name: {"directions": (k, d), eigenvalues, layers, ...}}.

    ``name`` overrides the default ``layers_<spec>`` (one selection only).
    """
    k = check_positive_int("-k", k)
    specs = [layers] if isinstance(layers, str) else list(layers)
    if not specs:
        raise ValueError("--layers needs at least one selection")
    if name is not None and (len(specs) != 1 or "/" in name or not name):
        raise ValueError("--name needs exactly one --layers selection and a plain name without '/'")
    weights, space, source = load_weights(generator, checkpoint, family, include_torgb=include_torgb,
                                          trust_checkpoint=trust_checkpoint)
    names = [n for n, _ in weights]
    tensors = [w for _, w in weights]
    d = tensors[0].shape[1]
    if any(w.shape[1] != d for w in tensors):
        raise ValueError(f"{source}: the latent weights disagree on the code size")
    if k > d:
        raise ValueError(f"-k must be at most the code size {d}; got {k}")
    selections = [parse_layers(spec, len(tensors)) for spec in specs]
    out_names = [name] if name else [_selection_name(spec) for spec in specs]
    if len(set(out_names)) != len(out_names):
        raise ValueError(f"--layers selections repeat: {specs}")
    target_path = None if store is None else (store.path if isinstance(store, Store) else str(store))
    if target_path is not None:
        _check_target(target_path, space, d)

    values, vectors = factorize(tensors, selections)
    results: dict[str, dict[str, Any]] = {}
    for j, (out, chosen) in enumerate(zip(out_names, selections)):
        results[out] = {
            "directions": vectors[j, :k].astype(np.float32), "space": space, "method": METHOD,
            "eigenvalues": values[j, :k].astype(np.float64), "eigenvalue_sum": float(values[j].sum()),
            "layers": chosen, "layer_names": [names[i] for i in chosen], "layers_spec": str(specs[j]),
            "family": family or "generator", "source": source, "include_torgb": bool(include_torgb),
        }
    if target_path is not None:
        _write(target_path, results, d, source)
    return results


def _check_target(path: str, space: str, d: int) -> None:
    from engine.store import _exists
    if not _exists(path):
        return
    existing = Store.open(path)
    if space in existing.spaces:
        dim = existing.latent_array(space).shape[-1]
        if dim != d:
            raise StoreError(f"{path} stores {space} codes of size {dim}; these SeFa directions have size {d}")


def _write(path: str, results: dict[str, dict[str, Any]], d: int, source: str) -> None:
    from engine.lock import StoreLock
    from engine.store import _exists

    with StoreLock(path, purpose="sefa"):
        if _exists(path):
            target = Store.open(path, mode="r+")
        else:
            # A directions-only store: one placeholder row, never sampled (info reports it incomplete).
            target = Store.create(path, n=1, chunk=1, z_dim=d, meta={"generator": source, "directions_only": True})
        for out, result in results.items():
            attrs = {key: value for key, value in result.items() if key != "directions"}
            target.write_direction(METHOD, out, result["directions"], attrs)
