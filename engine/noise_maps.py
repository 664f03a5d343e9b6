"""Per-image noise maps: what an inversion optimised beside each code, read back to re-generate its image.

An inversion into a generator with noise inputs (StyleGAN, StyleGAN2) optimises one (1, r, r) noise map per
noise layer and image, as StyleGAN2's projector does, and stores them under ``inversion/noise/<layer>``. The
stored code reproduces the stored reconstruction only together with its maps, so every command that renders
an inverted store's codes (``edit --stored``, the report, ``explore``) renders them with ``stored_noise_maps``;
an edit moves the code and keeps the maps.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from engine.models.base import noise_inputs
from engine.store import Store, StoreError


def check_noise_layers(store: Store, G: Any) -> list[tuple[str, int]]:
    """The store's noise layers, after checking that ``G`` has exactly those noise inputs (else StoreError)."""
    stored = store.noise_layers()
    if stored and [tuple(layer) for layer in stored] != list(noise_inputs(G)):
        have = ", ".join(f"{name} ({res}²)" for name, res in noise_inputs(G)) or "none"
        raise StoreError(f"{store.path} holds noise maps for layers {', '.join(name for name, _ in stored)}, but "
                         f"generator {getattr(G, 'spec', G)!r} has noise inputs: {have}")
    return stored


def stored_noise_maps(store: Store, G: Any, rows: slice | np.ndarray, device: Any = "cpu") -> list[Any] | None:
    """The noise maps of ``rows`` as tensors on ``device``, one (len(rows), 1, r, r) per noise input of ``G``;
    None when the store holds none (its codes alone re-generate its images). Callers that render many images
    keep them on the CPU and move each batch's rows (``select_maps``): at 1024² they take 10.7 MiB a row."""
    import torch

    if not check_noise_layers(store, G):
        return None
    return [torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32)).to(device)
            for values in store.read_noise_maps(rows)]


def select_maps(maps: list[Any] | None, index: Any, device: Any = None) -> list[Any] | None:
    """The rows ``index`` (a slice or an index tensor on the maps' device) of every map, moved to ``device``
    when given; None stays None."""
    if maps is None:
        return None
    return [m[index] if device is None else m[index].to(device) for m in maps]
