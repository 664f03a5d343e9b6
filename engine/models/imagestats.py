"""``imagestats``: label-free attributes measured on any images.

These are the "steerability" attributes of the papers (brightness, position, shape): they need no trained
predictor, so they work on every generator, and for digits they read as ink, stroke thickness, slant and
centre of mass. Images are mapped from [-1, 1] to intensities in [0, 1] (channel mean) before measuring.
"""
from __future__ import annotations

import torch
from torch import nn

ATTRIBUTES = ["brightness", "contrast", "center_x", "center_y", "ink", "thickness", "slant", "edge_density"]
_INK_THRESHOLD = 0.5
_EPS = 1e-6


class ImageStats(nn.Module):
    """Measures ``ATTRIBUTES`` on a batch of images; all are continuous (ranking needs no ties)."""

    attributes = list(ATTRIBUTES)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = ((images.float().mean(dim=1) + 1) / 2).clamp(0, 1)      # (B, H, W) intensity
        B, H, W = x.shape
        ys = torch.linspace(-1, 1, H, device=x.device)[None, :, None]
        xs = torch.linspace(-1, 1, W, device=x.device)[None, None, :]
        mass = x.sum(dim=(1, 2)) + _EPS
        cx = (x * xs).sum(dim=(1, 2)) / mass
        cy = (x * ys).sum(dim=(1, 2)) / mass
        dx, dy = xs - cx[:, None, None], ys - cy[:, None, None]
        mu11 = (x * dx * dy).sum(dim=(1, 2)) / mass
        mu02 = (x * dy * dy).sum(dim=(1, 2)) / mass
        slant = mu11 / (mu02 + _EPS)          # shear of the ink: > 0 leans one way, < 0 the other
        # Soft ink so the score stays continuous under small edits.
        ink_map = torch.sigmoid((x - _INK_THRESHOLD) * 20)
        ink = ink_map.mean(dim=(1, 2))
        gx = (x[:, :, 1:] - x[:, :, :-1]).abs().mean(dim=(1, 2))
        gy = (x[:, 1:, :] - x[:, :-1, :]).abs().mean(dim=(1, 2))
        edges = gx + gy
        thickness = ink / (edges + _EPS)      # ink area per unit of outline: wide strokes score high
        return torch.stack([x.mean(dim=(1, 2)), x.std(dim=(1, 2)), cx, cy, ink, thickness, slant, edges], dim=1)


def imagestats_predictor() -> ImageStats:
    """Factory for ``--predictor imagestats``."""
    return ImageStats()
