"""Random-weight state dicts in genforce's StyleGAN (v1) key layout, for tests.

``genforce_state`` writes the keys, shapes and order of genforce/sefa's ``StyleGANGenerator.state_dict()``
(``models/stylegan_generator.py``) from the layout alone, with no engine code, so that tests of the converter
check it against an independent description of the file; ``save_genforce_checkpoint`` writes a file as genforce
saves one.
"""
from __future__ import annotations

import os

import torch


def genforce_channels(resolution: int, fmaps_base: int, fmaps_max: int) -> list[int]:
    """Feature maps per resolution 4, 8, ..., ``resolution``: genforce's min(fmaps_base // res, fmaps_max)."""
    return [min(fmaps_base // res, fmaps_max) for res in _resolutions(resolution)]


def _resolutions(resolution: int) -> list[int]:
    return [4 << i for i in range(resolution.bit_length() - 3 + 1)]


def genforce_state(resolution: int = 16, *, z_dim: int = 32, w_dim: int = 32, label_size: int = 0,
                   mapping_layers: int = 2, mapping_fmaps: int = 48, fmaps_base: int = 256, fmaps_max: int = 32,
                   image_channels: int = 3, const_input: bool = True, seed: int = 0) -> dict[str, torch.Tensor]:
    """genforce's ``StyleGANGenerator(resolution, z_space_dim=z_dim, w_space_dim=w_dim, label_size=..., ...)``
    state dict, every learned tensor random and away from its init (no zero bias or noise strength), the noise
    buffers N(0, 1), ``truncation.w_avg`` random, ``synthesis.lod`` 0 and the blur kernels [1, 2, 1]² / 16.

    num_ws = 2 · log2(resolution) - 2 synthesis layers (``synthesis.layer{i}``), one ToRGB per resolution
    (``synthesis.output{k}``), ``mapping_layers`` dense layers (``mapping.dense{i}``; the first takes
    2 · z_dim inputs when ``label_size`` > 0, beside ``mapping.label_weight`` (label_size, z_dim)).
    """
    g = torch.Generator().manual_seed(seed)

    def randn(*shape: int, scale: float = 1.0) -> torch.Tensor:
        return torch.randn(*shape, generator=g) * scale

    state: dict[str, torch.Tensor] = {}
    if label_size:
        state["mapping.label_weight"] = randn(label_size, z_dim)
    widths = [z_dim * (2 if label_size else 1)] + [mapping_fmaps] * (mapping_layers - 1) + [w_dim]
    for i in range(mapping_layers):
        # lr_mul 0.01: genforce stores weights 100x the effective ones and biases 100x smaller in effect.
        state[f"mapping.dense{i}.weight"] = randn(widths[i + 1], widths[i], scale=100.0)
        state[f"mapping.dense{i}.bias"] = randn(widths[i + 1], scale=10.0)
    state["truncation.w_avg"] = randn(w_dim, scale=0.5)
    state["synthesis.lod"] = torch.zeros(())
    blur = torch.tensor([1.0, 2.0, 1.0])
    blur = torch.outer(blur, blur) / blur.sum() ** 2
    channels = genforce_channels(resolution, fmaps_base, fmaps_max)
    for level, res in enumerate(_resolutions(resolution)):
        nf = channels[level]
        for layer in (2 * level, 2 * level + 1):
            key = f"synthesis.layer{layer}"
            state[f"{key}.bias"] = randn(nf, scale=0.2)
            if layer == 0 and const_input:
                state[f"{key}.const"] = 1.0 + randn(1, nf, 4, 4, scale=0.3)
            elif layer == 0:
                state[f"{key}.weight"] = randn(nf, w_dim, 4, 4)
            else:
                state[f"{key}.weight"] = randn(nf, channels[level - 1] if layer % 2 == 0 else nf, 3, 3)
            state[f"{key}.apply_noise.weight"] = randn(nf, scale=0.3)
            state[f"{key}.apply_noise.noise"] = randn(1, 1, res, res)
            state[f"{key}.style.weight"] = randn(2 * nf, w_dim)
            state[f"{key}.style.bias"] = randn(2 * nf, scale=0.2)
            if layer % 2 == 0 and layer > 0:
                state[f"{key}.blur.kernel"] = blur.expand(nf, 1, 3, 3).clone()
        state[f"synthesis.output{level}.bias"] = randn(image_channels, scale=0.1)
        state[f"synthesis.output{level}.weight"] = randn(image_channels, nf, 1, 1)
    return state


def save_genforce_checkpoint(path: str | os.PathLike, resolution: int = 16, *, seed: int = 0,
                             **options) -> dict[str, torch.Tensor]:
    """Write ``path`` as genforce saves a checkpoint: ``{"generator": raw, "discriminator": ...,
    "generator_smooth": averaged}``, both generators from ``genforce_state(resolution, **options)`` (the raw one
    with ``seed + 1``, so a reader that takes the wrong entry is caught); returns the ``generator_smooth`` state."""
    smooth = genforce_state(resolution, seed=seed, **options)
    raw = genforce_state(resolution, seed=seed + 1, **options)
    torch.save({"generator": raw, "discriminator": {"fc.weight": torch.zeros(1, 4)}, "generator_smooth": smooth},
               path)
    return smooth
