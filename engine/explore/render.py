"""Rendering for the explorer: batched synthesis and scoring, image grids as PNG, and a small LRU cache."""
from __future__ import annotations

import base64
import io
from collections import OrderedDict
from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np

BATCH = 64              # images per generator call
CELL = 64               # smallest cell of a grid, in pixels (small images are enlarged by pixel repetition)
MAX_CELL = 256          # largest cell: bigger images are shrunk (area average) before they are sent
COLUMNS = 4             # samples per grid row


class LRU:
    """At most ``size`` values, the least recently used dropped first."""

    def __init__(self, size: int):
        self.size = size
        self._items: OrderedDict[Hashable, Any] = OrderedDict()

    def get(self, key: Hashable) -> Any:
        """The value of ``key`` (now the most recently used), or None."""
        if key not in self._items:
            return None
        self._items.move_to_end(key)
        return self._items[key]

    def put(self, key: Hashable, value: Any) -> None:
        self._items[key] = value
        self._items.move_to_end(key)
        while len(self._items) > self.size:
            self._items.popitem(last=False)

    def __len__(self) -> int:
        return len(self._items)


def synthesize_scored(G: Any, predictors: Sequence[Any], ws: Any, labels: np.ndarray | None,
                      device: str, noise_maps: Sequence[Any] | None = None) -> tuple[Any, np.ndarray | None]:
    """Synthesis inputs ``ws`` (torch, on ``device``) -> images (S, C, H, W) on the CPU and the predictors'
    scores (S, m), or None without predictors; BATCH images per generator call. ``labels`` (S,): classes of a
    class-conditional generator. ``noise_maps``: one (R, 1, r, r) map per noise input of ``G`` (an inverted
    store's rows), image i taking row i mod R (R = S, or a panel's rows with several panels one after the
    other); None: the generator's own noise."""
    import torch

    from engine.models.base import synthesize
    from engine.noise_maps import select_maps

    images, scores = [], []
    with torch.inference_mode():
        for start in range(0, ws.shape[0], BATCH):
            lb = None if labels is None else torch.from_numpy(
                np.asarray(labels[start:start + BATCH], np.int64)).to(device)
            part = ws[start:start + BATCH]
            of_row = None if noise_maps is None else \
                torch.arange(start, start + part.shape[0], device=noise_maps[0].device) % noise_maps[0].shape[0]
            img = synthesize(G, part, lb, select_maps(noise_maps, of_row, device))
            if predictors:
                scores.append(torch.cat([P(img).float() for P in predictors], dim=1).cpu().numpy())
            images.append(img.float().cpu())
    return torch.cat(images), (np.concatenate(scores) if scores else None)


def grid_png(images: Any) -> bytes:
    """(S, C, H, W) images in [-1, 1] -> PNG bytes of a grid, COLUMNS samples a row, cells CELL-MAX_CELL px."""
    import torch
    import torch.nn.functional as F

    from engine.plots import image_grid

    images = images.float()
    size = images.shape[-1]
    if size > MAX_CELL:
        images = F.interpolate(images, size=(MAX_CELL, MAX_CELL * images.shape[-1] // images.shape[-2]),
                               mode="area")
    count = images.shape[0]
    cols = min(COLUMNS, count)
    rows = -(-count // cols)
    if rows * cols > count:
        filler = torch.ones((rows * cols - count, *images.shape[1:]))
        images = torch.cat([images, filler])
    grid = image_grid(images.reshape(rows, cols, *images.shape[1:]), scale=max(1, CELL // images.shape[-1]))
    buffer = io.BytesIO()
    grid.save(buffer, format="PNG")
    return buffer.getvalue()


def data_url(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


__all__ = ["LRU", "data_url", "grid_png", "synthesize_scored"]
