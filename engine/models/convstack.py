"""``convstack``: a randomly initialised PGGAN-like convolution stack, for throughput work.

It has no semantics; it exists so that benchmarks and ``latent-engine bench`` can measure the engine on a
generator whose compute dominates (hundreds of MFLOPs per image), as real generators do. Seeded: the same
options give the same weights everywhere.
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from engine.models.base import IdentityMapping


class ConvStack(IdentityMapping, nn.Module):
    """z -> FC to (channels, 4, 4) -> [upsample, conv3x3, conv3x3] per doubling -> toRGB -> tanh."""

    def __init__(self, z_dim: int = 512, channels: int = 256, resolution: int = 32, seed: int = 0):
        super().__init__()
        if resolution < 8 or resolution & (resolution - 1):
            raise ValueError(f"convstack resolution must be a power of two >= 8; got {resolution}")
        torch.manual_seed(seed)
        self.z_dim = self.w_dim = int(z_dim)
        self.num_ws = 1
        self.channels = channels
        self.fc = nn.Linear(z_dim, channels * 16)
        blocks = []
        c = channels
        for _ in range(int(math.log2(resolution)) - 2):
            out = max(c // 2, 16) if blocks else c
            blocks.append(nn.ModuleList([nn.Conv2d(c, out, 3, padding=1), nn.Conv2d(out, out, 3, padding=1)]))
            c = out
        self.blocks = nn.ModuleList(blocks)
        self.to_rgb = nn.Conv2d(c, 3, 1)
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Conv2d)):
                # He initialisation keeps activations from vanishing, so images have real contrast.
                nn.init.kaiming_normal_(module.weight, a=0.2, nonlinearity="leaky_relu")
                nn.init.zeros_(module.bias)

    def synthesis(self, ws: torch.Tensor) -> torch.Tensor:
        x = F.leaky_relu(self.fc(ws[:, 0]), 0.2).reshape(-1, self.channels, 4, 4)
        for conv1, conv2 in self.blocks:
            x = F.interpolate(x, scale_factor=2.0, mode="nearest")
            x = F.leaky_relu(conv2(F.leaky_relu(conv1(x), 0.2)), 0.2)
        return torch.tanh(self.to_rgb(x))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.synthesis(self.mapping(z))

    def latent_weights(self) -> list[tuple[str, torch.Tensor]]:
        return [("fc", self.fc.weight)]


def convstack_generator(z_dim: int = 512, channels: int = 256, resolution: int = 32, seed: int = 0) -> ConvStack:
    """Factory for ``--generator convstack[:channels=..,resolution=..,seed=..]``."""
    return ConvStack(z_dim=z_dim, channels=channels, resolution=resolution, seed=seed)
