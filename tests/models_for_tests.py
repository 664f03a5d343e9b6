"""User-style models for tests, loaded through the `package.module:factory` SPEC path."""
from __future__ import annotations

import torch
from torch import nn


class HalfNaN(nn.Module):
    """Scores every other image NaN, as a broken user predictor might."""

    attributes = ["broken"]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        scores = images.reshape(images.shape[0], -1).mean(dim=1, keepdim=True)
        scores[::2] = float("nan")
        return scores


class WrongShape(nn.Module):
    attributes = ["a", "b"]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return images.reshape(images.shape[0], -1)[:, :3]


def half_nan() -> HalfNaN:
    return HalfNaN()


def wrong_shape() -> WrongShape:
    return WrongShape()
