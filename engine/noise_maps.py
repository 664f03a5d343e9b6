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


def stored_noise_maps(store: Store, G: Any, rows: slice | np.ndarray, device: Any = "cpu",
                      repeat: int = 1) -> list[Any] | None:
    """The noise maps of ``rows`` as tensors on ``device``, one (len(rows)·repeat, 1, r, r) per noise input of
    ``G``, each row repeated ``repeat`` times in a row (for a row's several edits); None when the store holds
    none (its codes alone re-generate its images)."""
    import torch

    if not check_noise_layers(store, G):
        return None
    maps = []
    for values in store.read_noise_maps(rows):
        tensor = torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32)).to(device)
        maps.append(tensor.repeat_interleave(repeat, dim=0) if repeat != 1 else tensor)
    return maps


def select_maps(maps: list[Any] | None, index: Any) -> list[Any] | None:
    """The rows ``index`` (a slice or an index tensor) of every map; None stays None."""
    return None if maps is None else [m[index] for m in maps]
