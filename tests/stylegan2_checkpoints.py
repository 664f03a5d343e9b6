"""Random-weight StyleGAN2 state dicts in the three key layouts the engine reads, written from the layouts
themselves (names and shapes), not from the engine's converters.

* ``rosinality_state``: rosinality/stylegan2-pytorch ``Generator.state_dict()`` (a checkpoint's ``g_ema``);
* ``nvlabs_state``: NVlabs stylegan2-ada-pytorch ``training.networks.Generator`` (``G_ema``): (init_kwargs, state);
  ``flat=True`` gives stylegan3's ``training.networks_stylegan2.Generator`` kwargs instead;
* ``genforce_state``: genforce/sefa ``StyleGAN2Generator.state_dict()`` (``generator_smooth`` / ``generator``).

Every weight, bias, noise strength and average w is random, so nothing is trivially zero or one; weights are drawn
as the references initialize them (N(0, 1), divided by the learning-rate multiplier in the mapping network, so
that w has a realistic scale).
Sizes are small by default so that tests stay fast; the key names do not depend on the size.
"""
from __future__ import annotations

import math

import torch

FILTER_TAPS = (1.0, 3.0, 3.0, 1.0)
MAPPING_LR = 0.01                  # every layout's default mapping learning-rate multiplier
ROSINALITY_CHANNELS = {4: 512, 8: 512, 16: 512, 32: 512, 64: 256, 128: 128, 256: 64, 512: 32, 1024: 16}


def blur_kernel(gain: float = 1.0) -> torch.Tensor:
    """The 4x4 [1, 3, 3, 1] low-pass kernel, summing to ``gain`` (as the layouts store it)."""
    taps = torch.tensor(FILTER_TAPS)
    kernel = torch.outer(taps, taps)
    return kernel / kernel.sum() * gain


def resolutions(size: int) -> list[int]:
    """4, 8, ..., size."""
    return [2 ** i for i in range(2, int(math.log2(size)) + 1)]


class _Random:
    def __init__(self, seed: int) -> None:
        self.gen = torch.Generator().manual_seed(seed)

    def normal(self, *shape: int, scale: float = 1.0, mean: float = 0.0) -> torch.Tensor:
        return torch.randn(shape, generator=self.gen) * scale + mean


def rosinality_state(size: int = 16, style_dim: int = 32, n_mlp: int = 2, channel_multiplier: int = 2,
                     max_channels: int | None = 32, img_channels: int = 3, seed: int = 0) -> dict[str, torch.Tensor]:
    """A rosinality ``Generator(size, style_dim, n_mlp, channel_multiplier)`` state dict with random weights.

    Channels follow rosinality's table (512 up to 32 px, then 256·multiplier, 128·multiplier, ...), capped at
    ``max_channels`` to keep tests small (None: the exact table, what rosinality's own Generator builds).
    """
    rnd = _Random(seed)
    ch = {res: min(ROSINALITY_CHANNELS[res] * (channel_multiplier if res >= 64 else 1), max_channels or 10 ** 9)
          for res in resolutions(size)}
    state: dict[str, torch.Tensor] = {}
    for i in range(1, n_mlp + 1):
        state[f"style.{i}.weight"] = rnd.normal(style_dim, style_dim, scale=1 / MAPPING_LR)
        state[f"style.{i}.bias"] = rnd.normal(style_dim, scale=0.2)
    state["input.input"] = rnd.normal(1, ch[4], 4, 4)

    def styled_conv(prefix: str, cin: int, cout: int, up: bool) -> None:
        state[f"{prefix}.conv.weight"] = rnd.normal(1, cout, cin, 3, 3)
        if up:
            state[f"{prefix}.conv.blur.kernel"] = blur_kernel(gain=4.0)
        state[f"{prefix}.conv.modulation.weight"] = rnd.normal(cin, style_dim)
        state[f"{prefix}.conv.modulation.bias"] = rnd.normal(cin, scale=0.2, mean=1.0)
        state[f"{prefix}.noise.weight"] = rnd.normal(1, scale=0.3)
        state[f"{prefix}.activate.bias"] = rnd.normal(cout, scale=0.2)

    def to_rgb(prefix: str, cin: int, up: bool) -> None:
        state[f"{prefix}.bias"] = rnd.normal(1, img_channels, 1, 1, scale=0.2)
        if up:
            state[f"{prefix}.upsample.kernel"] = blur_kernel(gain=4.0)
        state[f"{prefix}.conv.weight"] = rnd.normal(1, img_channels, cin, 1, 1)
        state[f"{prefix}.conv.modulation.weight"] = rnd.normal(cin, style_dim)
        state[f"{prefix}.conv.modulation.bias"] = rnd.normal(cin, scale=0.2, mean=1.0)

    styled_conv("conv1", ch[4], ch[4], up=False)
    to_rgb("to_rgb1", ch[4], up=False)
    for j, res in enumerate(resolutions(size)[1:]):
        styled_conv(f"convs.{2 * j}", ch[res // 2], ch[res], up=True)
        styled_conv(f"convs.{2 * j + 1}", ch[res], ch[res], up=False)
        to_rgb(f"to_rgbs.{j}", ch[res], up=True)
    for i in range(2 * len(resolutions(size)) - 1):
        res = 2 ** ((i + 5) // 2)
        state[f"noises.noise_{i}"] = rnd.normal(1, 1, res, res)
    return state


def nvlabs_state(img_resolution: int = 16, z_dim: int = 32, w_dim: int = 32, c_dim: int = 0,
                 channel_base: int = 256, channel_max: int = 32, architecture: str = "skip",
                 conv_clamp: float | None = None, mapping_layers: int = 2, img_channels: int = 3,
                 flat: bool = False, w_avg_beta: float | None = 0.995,
                 seed: int = 0) -> tuple[dict[str, object], dict[str, torch.Tensor]]:
    """(init_kwargs, state) of an NVlabs StyleGAN2 ``Generator`` with random weights.

    Channels per resolution: min(channel_base // res, channel_max). ``flat`` lays the synthesis settings out as
    stylegan3's networks_stylegan2 does (top level) instead of stylegan2-ada's ``synthesis_kwargs``;
    ``w_avg_beta=None`` leaves out ``mapping.w_avg`` as NVlabs does.
    """
    rnd = _Random(seed)
    ch = {res: min(channel_base // res, channel_max) for res in resolutions(img_resolution)}
    synthesis = dict(channel_base=channel_base, channel_max=channel_max, num_fp16_res=0,
                     architecture=architecture, conv_clamp=conv_clamp)
    mapping = dict(num_layers=mapping_layers, w_avg_beta=w_avg_beta)
    kwargs: dict[str, object] = dict(z_dim=z_dim, c_dim=c_dim, w_dim=w_dim, img_resolution=img_resolution,
                                     img_channels=img_channels, mapping_kwargs=mapping)
    kwargs.update(synthesis if flat else {"synthesis_kwargs": synthesis})

    state: dict[str, torch.Tensor] = {}
    features = [z_dim + (w_dim if c_dim else 0)] + [w_dim] * mapping_layers
    if c_dim:
        state["mapping.embed.weight"] = rnd.normal(w_dim, c_dim)
        state["mapping.embed.bias"] = rnd.normal(w_dim, scale=0.2)
    for i in range(mapping_layers):
        state[f"mapping.fc{i}.weight"] = rnd.normal(features[i + 1], features[i], scale=1 / MAPPING_LR)
        state[f"mapping.fc{i}.bias"] = rnd.normal(features[i + 1], scale=0.2)
    if w_avg_beta is not None:
        state["mapping.w_avg"] = rnd.normal(w_dim, scale=0.5)

    def layer(prefix: str, cin: int, cout: int, res: int) -> None:
        state[f"{prefix}.resample_filter"] = blur_kernel()
        state[f"{prefix}.affine.weight"] = rnd.normal(cin, w_dim)
        state[f"{prefix}.affine.bias"] = rnd.normal(cin, scale=0.2, mean=1.0)
        state[f"{prefix}.weight"] = rnd.normal(cout, cin, 3, 3)
        state[f"{prefix}.noise_const"] = rnd.normal(res, res)
        state[f"{prefix}.noise_strength"] = rnd.normal(scale=0.3)
        state[f"{prefix}.bias"] = rnd.normal(cout, scale=0.2)

    for res in resolutions(img_resolution):
        block = f"synthesis.b{res}"
        state[f"{block}.resample_filter"] = blur_kernel()
        if res == 4:
            state[f"{block}.const"] = rnd.normal(ch[4], 4, 4)
        else:
            layer(f"{block}.conv0", ch[res // 2], ch[res], res)
        layer(f"{block}.conv1", ch[res], ch[res], res)
        if architecture == "skip" or res == img_resolution:
            state[f"{block}.torgb.affine.weight"] = rnd.normal(ch[res], w_dim)
            state[f"{block}.torgb.affine.bias"] = rnd.normal(ch[res], scale=0.2, mean=1.0)
            state[f"{block}.torgb.weight"] = rnd.normal(img_channels, ch[res], 1, 1)
            state[f"{block}.torgb.bias"] = rnd.normal(img_channels, scale=0.2)
        if architecture == "resnet" and res > 4:
            state[f"{block}.skip.resample_filter"] = blur_kernel()
            state[f"{block}.skip.weight"] = rnd.normal(ch[res], ch[res // 2], 1, 1)
    return kwargs, state


def genforce_state(resolution: int = 16, z_dim: int = 32, w_dim: int = 32, label_size: int = 0,
                   mapping_layers: int = 2, mapping_fmaps: int = 32, fmaps_base: int = 256, fmaps_max: int = 32,
                   architecture: str = "skip", image_channels: int = 3, seed: int = 0) -> dict[str, torch.Tensor]:
    """A genforce ``StyleGAN2Generator(resolution, ...)`` state dict (architecture 'skip' or 'origin').

    Channels per resolution: min(fmaps_base // res, fmaps_max); layer{i} is the i-th modulated conv (odd i
    upsample), output{j} the ToRGB of block j; the stored filter kernels carry genforce's gain of 4.
    """
    rnd = _Random(seed)
    ch = {res: min(fmaps_base // res, fmaps_max) for res in resolutions(resolution)}
    state: dict[str, torch.Tensor] = {}
    features = [z_dim * (2 if label_size else 1)] + [mapping_fmaps] * (mapping_layers - 1) + [w_dim]
    for i in range(mapping_layers):
        state[f"mapping.dense{i}.weight"] = rnd.normal(features[i + 1], features[i], scale=1 / MAPPING_LR)
        state[f"mapping.dense{i}.bias"] = rnd.normal(features[i + 1], scale=0.2)
    if label_size:
        state["mapping.label_weight"] = rnd.normal(label_size, z_dim)
    state["truncation.w_avg"] = rnd.normal(w_dim, scale=0.5)
    state["synthesis.early_layer.const"] = rnd.normal(1, ch[4], 4, 4)

    def layer(i: int, cin: int, cout: int, res: int) -> None:
        prefix = f"synthesis.layer{i}"
        state[f"{prefix}.weight"] = rnd.normal(cout, cin, 3, 3)
        state[f"{prefix}.bias"] = rnd.normal(cout, scale=0.2)
        state[f"{prefix}.style.weight"] = rnd.normal(cin, w_dim)
        state[f"{prefix}.style.bias"] = rnd.normal(cin, scale=0.2)
        state[f"{prefix}.noise"] = rnd.normal(1, 1, res, res)
        state[f"{prefix}.noise_strength"] = rnd.normal(scale=0.3)
        if i % 2 == 1:
            state[f"{prefix}.filter.kernel"] = blur_kernel(gain=4.0)[None, None]

    res_list = resolutions(resolution)
    for block, res in enumerate(res_list):
        if res > 4:
            layer(2 * block - 1, ch[res // 2], ch[res], res)
        layer(2 * block, ch[res], ch[res], res)
        if architecture == "skip" or res == resolution:
            prefix = f"synthesis.output{block}"
            state[f"{prefix}.weight"] = rnd.normal(image_channels, ch[res], 1, 1)
            state[f"{prefix}.bias"] = rnd.normal(image_channels, scale=0.2)
            state[f"{prefix}.style.weight"] = rnd.normal(ch[res], w_dim)
            state[f"{prefix}.style.bias"] = rnd.normal(ch[res], scale=0.2)
    if architecture == "skip":
        state["synthesis.upsample.kernel"] = blur_kernel(gain=4.0)[None, None]
    return state


def rosinality_as_nvlabs(state: dict[str, torch.Tensor], z_dim: int | None = None
                         ) -> tuple[dict[str, object], dict[str, torch.Tensor]]:
    """The same generator as a rosinality ``state`` (equal channels at every resolution), in NVlabs' layout.

    A renaming: both layouts scale weights alike wherever demodulation does not cancel the scale. For tests
    that the layouts agree; the average w is zeros (rosinality's g_ema has none)."""
    n_rgbs = sum(k.startswith("to_rgbs.") and k.endswith(".conv.weight") for k in state)
    size = 4 * 2 ** n_rgbs
    n_mlp = sum(k.startswith("style.") and k.endswith(".weight") for k in state)
    style_dim = state["style.1.weight"].shape[1]
    out: dict[str, torch.Tensor] = {}
    for i in range(n_mlp):
        out[f"mapping.fc{i}.weight"] = state[f"style.{i + 1}.weight"]
        out[f"mapping.fc{i}.bias"] = state[f"style.{i + 1}.bias"]
    out["mapping.w_avg"] = torch.zeros(style_dim)
    out["synthesis.b4.const"] = state["input.input"][0]
    convs = ["conv1"] + [f"convs.{i}" for i in range(2 * n_rgbs)]
    targets = ["synthesis.b4.conv1"] + [f"synthesis.b{res}.conv{k}" for res in resolutions(size)[1:] for k in (0, 1)]
    for i, (src, dst) in enumerate(zip(convs, targets)):
        out[f"{dst}.weight"] = state[f"{src}.conv.weight"][0]
        out[f"{dst}.affine.weight"] = state[f"{src}.conv.modulation.weight"]
        out[f"{dst}.affine.bias"] = state[f"{src}.conv.modulation.bias"]
        out[f"{dst}.bias"] = state[f"{src}.activate.bias"]
        out[f"{dst}.noise_strength"] = state[f"{src}.noise.weight"][0]
        out[f"{dst}.noise_const"] = state[f"noises.noise_{i}"][0, 0]
        out[f"{dst}.resample_filter"] = blur_kernel()
    rgbs = ["to_rgb1"] + [f"to_rgbs.{i}" for i in range(n_rgbs)]
    for src, res in zip(rgbs, resolutions(size)):
        dst = f"synthesis.b{res}.torgb"
        out[f"{dst}.weight"] = state[f"{src}.conv.weight"][0]
        out[f"{dst}.affine.weight"] = state[f"{src}.conv.modulation.weight"]
        out[f"{dst}.affine.bias"] = state[f"{src}.conv.modulation.bias"]
        out[f"{dst}.bias"] = state[f"{src}.bias"].flatten()
        out[f"synthesis.b{res}.resample_filter"] = blur_kernel()
    channels = state["input.input"].shape[1]
    kwargs = dict(z_dim=z_dim or style_dim, c_dim=0, w_dim=style_dim, img_resolution=size,
                  img_channels=state["to_rgb1.conv.weight"].shape[1],
                  mapping_kwargs=dict(num_layers=n_mlp),
                  synthesis_kwargs=dict(channel_base=channels * size, channel_max=channels))
    return kwargs, out


def genforce_as_nvlabs(state: dict[str, torch.Tensor]) -> tuple[dict[str, object], dict[str, torch.Tensor]]:
    """The same generator as a genforce 'skip' ``state`` (no label, equal channels throughout), in NVlabs' layout.

    genforce adds a constant 1 to its style biases and flips the kernels of its upsampling (transposed) convs,
    which NVlabs does not; everything else is a renaming.
    """
    n_convs = sum(k.startswith("synthesis.layer") and k.endswith(".weight") and ".style." not in k for k in state)
    size = 2 ** ((n_convs + 3) // 2)
    n_dense = sum(k.startswith("mapping.dense") and k.endswith(".weight") for k in state)
    out: dict[str, torch.Tensor] = {}
    for i in range(n_dense):
        out[f"mapping.fc{i}.weight"] = state[f"mapping.dense{i}.weight"]
        out[f"mapping.fc{i}.bias"] = state[f"mapping.dense{i}.bias"]
    out["mapping.w_avg"] = state["truncation.w_avg"]
    out["synthesis.b4.const"] = state["synthesis.early_layer.const"][0]
    targets = ["synthesis.b4.conv1"] + [f"synthesis.b{res}.conv{k}" for res in resolutions(size)[1:] for k in (0, 1)]
    for i, dst in enumerate(targets):
        src = f"synthesis.layer{i}"
        weight = state[f"{src}.weight"]
        out[f"{dst}.weight"] = weight.flip(2, 3) if i % 2 == 1 else weight
        out[f"{dst}.affine.weight"] = state[f"{src}.style.weight"]
        out[f"{dst}.affine.bias"] = state[f"{src}.style.bias"] + 1
        out[f"{dst}.bias"] = state[f"{src}.bias"]
        out[f"{dst}.noise_strength"] = state[f"{src}.noise_strength"]
        out[f"{dst}.noise_const"] = state[f"{src}.noise"][0, 0]
        out[f"{dst}.resample_filter"] = blur_kernel()
    for j, res in enumerate(resolutions(size)):
        src, dst = f"synthesis.output{j}", f"synthesis.b{res}.torgb"
        out[f"{dst}.weight"] = state[f"{src}.weight"]
        out[f"{dst}.affine.weight"] = state[f"{src}.style.weight"]
        out[f"{dst}.affine.bias"] = state[f"{src}.style.bias"] + 1
        out[f"{dst}.bias"] = state[f"{src}.bias"]
        out[f"synthesis.b{res}.resample_filter"] = blur_kernel()
    channels = state["synthesis.early_layer.const"].shape[1]
    w_dim = state["truncation.w_avg"].shape[0]
    kwargs = dict(z_dim=state["mapping.dense0.weight"].shape[1], c_dim=0, w_dim=w_dim, img_resolution=size,
                  img_channels=state["synthesis.output0.weight"].shape[0],
                  mapping_kwargs=dict(num_layers=n_dense, layer_features=state["mapping.dense0.weight"].shape[0]),
                  synthesis_kwargs=dict(channel_base=channels * size, channel_max=channels))
    return kwargs, out
