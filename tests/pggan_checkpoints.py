"""Random-weight PGGAN checkpoints in genforce's exact key layout, built without genforce's code.

genforce's ``PGGANGenerator.state_dict()`` for resolution R = 4 · 2^(L - 1) (L resolutions) holds, in this order:
``lod`` (a 0-d float buffer), then per resolution k = 0 .. L - 1 ``layer{2k}.weight``/``.bias``,
``layer{2k+1}.weight``/``.bias`` and ``output{k}.weight``/``.bias``. ``layer0.weight`` is (c0, z_dim, 4, 4),
an up layer ``layer{2k}.weight`` (k ≥ 1) is (c_k, c_{k-1}, 3, 3) or, with ``fused_scale``, (c_{k-1}, c_k, 3, 3),
``layer{2k+1}.weight`` is (c_k, c_k, 3, 3), ``output{k}.weight`` is (img_channels, c_k, 1, 1) and every bias is
(out,). Weights are stored unscaled (N(0, 1) at genforce's init); the ToRGB and conv scaling is applied at run
time. Its checkpoint files are ``{'generator': state}`` (training files add ``generator_smooth``, the averaged
weights, and the discriminator).
"""
from __future__ import annotations

import os
from collections.abc import Sequence

import torch


def pggan_channels(resolution: int, fmaps_base: int = 16 << 10, fmaps_max: int = 512) -> list[int]:
    """genforce's feature maps at 4, 8, ..., ``resolution`` px: min(fmaps_base // res, fmaps_max)."""
    return [min(fmaps_base // res, fmaps_max) for res in _resolutions(resolution)]


def _resolutions(resolution: int) -> list[int]:
    if resolution < 4 or resolution & (resolution - 1):
        raise ValueError(f"resolution must be a power of two >= 4; got {resolution}")
    return [4 << k for k in range(resolution.bit_length() - 2)]


def pggan_state(resolution: int = 16, *, z_dim: int = 32, channels: Sequence[int] | None = None,
                img_channels: int = 3, lod: float = 0.0, fused_scale: bool = False,
                seed: int = 0) -> dict[str, torch.Tensor]:
    """A genforce ``PGGANGenerator`` state dict at ``resolution`` px with seeded random weights (float32, CPU).

    ``channels`` (one count per resolution 4, 8, ..., ``resolution``) defaults to ``pggan_channels`` with
    fmaps_base 256 and fmaps_max 32, small enough for fast tests. Weights are N(0, 1) and biases N(0, 0.1²)
    (not genforce's zero init, so a test notices a bias that is ignored); ``lod`` fills the ``lod`` buffer.
    """
    levels = _resolutions(resolution)
    channels = list(channels) if channels is not None else pggan_channels(resolution, fmaps_base=256, fmaps_max=32)
    if len(channels) != len(levels):
        raise ValueError(f"channels needs one count per resolution {levels}; got {channels}")
    rng = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {"lod": torch.tensor(float(lod))}
    for k, c in enumerate(channels):
        if k == 0:
            first = (c, z_dim, 4, 4)
        else:
            first = (channels[k - 1], c, 3, 3) if fused_scale else (c, channels[k - 1], 3, 3)
        for key, shape, out in ((f"layer{2 * k}", first, c), (f"layer{2 * k + 1}", (c, c, 3, 3), c),
                                (f"output{k}", (img_channels, c, 1, 1), img_channels)):
            state[f"{key}.weight"] = torch.randn(shape, generator=rng)
            state[f"{key}.bias"] = 0.1 * torch.randn(out, generator=rng)
    return state


def save_pggan_checkpoint(path: str | os.PathLike, *, smooth: bool = False, **options) -> dict[str, torch.Tensor]:
    """Write a genforce-style checkpoint ``{'generator': state}`` (with ``smooth``, also ``generator_smooth``, a
    second seeded state as the averaged weights) to ``path``; ``options`` go to ``pggan_state``. Returns the
    state the engine should load: ``generator_smooth`` when written, else ``generator``."""
    state = pggan_state(**options)
    payload = {"generator": state}
    if smooth:
        payload["generator_smooth"] = pggan_state(**{**options, "seed": options.get("seed", 0) + 1})
    torch.save(payload, path)
    return payload["generator_smooth"] if smooth else state
