"""The engine's own StyleGAN2 generator, and converters from the three key layouts its checkpoints come in.

``StyleGAN2Network`` computes what the reference implementations compute (config E/F of "Analyzing and Improving
the Image Quality of StyleGAN": a mapping MLP, then modulated/demodulated 3x3 convs from a learned 4x4 constant,
a [1, 3, 3, 1] low-pass filter around every 2x upsampling, per-layer noise, and ToRGB outputs summed over the
resolutions), written for speed: each modulated conv scales the activations by the styles, runs ONE plain conv
for the whole batch with the shared weight and rescales the result by the demodulation coefficients (NVlabs'
non-fused form, equal to the per-sample-weight form up to rounding); the resampling filters are depthwise convs.

Converters (each returns the network in eval mode with gradients off, every tensor of ``state`` loaded, or raises
``CheckpointError`` naming the first missing, unexpected or misshapen key and the layout):

* ``from_rosinality(state, latent_avg=None)``: rosinality/stylegan2-pytorch ``Generator`` (the ``g_ema`` entry);
  size, style_dim, n_mlp and the channel counts are read from key names and shapes. Its mapping learning-rate
  multiplier (``lr_mlp``) and blur kernel are not stored as such: lr_mlp is rosinality's 0.01, the kernel is read
  from the stored ``blur.kernel`` buffers.
* ``from_nvlabs(init_kwargs, state)``: NVlabs stylegan2-ada-pytorch ``training/networks.py`` ``Generator``, or
  stylegan3's ``training/networks_stylegan2.py`` (whose kwargs are flat and whose ``conv_clamp`` defaults to 256).
  Architectures 'skip', 'orig' and 'resnet'; conditional files embed c as NVlabs does.
* ``from_genforce(state)``: genforce/sefa ``StyleGAN2Generator`` (``generator_smooth`` or ``generator``), its
  'skip' and 'origin' architectures; a label (``mapping.label_weight``) is embedded as genforce does.

The parameters hold effective weights: the equalized-learning-rate gains and learning-rate multipliers of each
layout are folded in at conversion (so the same network serves every layout). Noise: ``noise="const"`` uses the
file's stored per-layer noise (genforce's and rosinality's noise buffers, NVlabs' ``noise_const``) scaled by the
layer's learned strength, as the references' const/non-random modes do.
"""
from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from engine.models.checkpoints import CheckpointError

NOISE_MODES = ("const", "random", "none")
ARCHITECTURES = ("skip", "orig", "resnet")
LRELU_SLOPE = 0.2
LRELU_GAIN = math.sqrt(2.0)
DEMODULATION_EPS = 1e-8


@dataclass(frozen=True)
class Architecture:
    """What fixes the network's shapes and math, as read from a file.

    ``channels`` maps each resolution (4, 8, ..., ``img_resolution``) to its feature count; ``mapping_features``
    lists the mapping MLP's widths from its input to w. ``label_mode`` says how a class label enters the mapping:
    "embed" (NVlabs: a linear embedding, normalized apart from z, then concatenated) or "concat" (genforce:
    ``c @ label_weight`` concatenated to z, the two normalized together).
    """

    z_dim: int
    w_dim: int
    img_resolution: int
    img_channels: int
    channels: Mapping[int, int]
    mapping_features: tuple[int, ...]
    c_dim: int = 0
    embed_features: int = 0
    label_mode: str = "embed"
    architecture: str = "skip"
    conv_clamp: float | None = None
    kernel_size: int = 3
    use_noise: bool = True
    resolutions: tuple[int, ...] = field(init=False)

    def __post_init__(self) -> None:
        log2 = int(math.log2(self.img_resolution)) if self.img_resolution >= 4 else 0
        if self.img_resolution < 4 or 2 ** log2 != self.img_resolution:
            raise ValueError(f"img_resolution must be a power of 2, at least 4; got {self.img_resolution}")
        if self.architecture not in ARCHITECTURES:
            raise ValueError(f"architecture must be one of {', '.join(ARCHITECTURES)}; got {self.architecture!r}")
        object.__setattr__(self, "resolutions", tuple(2 ** i for i in range(2, log2 + 1)))


class _ModulatedConv(nn.Module):
    """One StyleGAN2 layer: style affine, modulated conv (optionally 2x up), demodulation, noise, bias, activation.

    Also the ToRGB layer (``demodulate=False``, no noise, linear activation). ``gain`` multiplies the activation's
    output and ``clamp`` then bounds it, as NVlabs' ``bias_act`` does; ``ws_index`` is the row of ws it reads.
    """

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int, *, kernel_size: int,
                 ws_index: int, up: bool = False, demodulate: bool = True, use_noise: bool = True,
                 activation: bool = True, gain: float = 1.0, clamp: float | None = None) -> None:
        super().__init__()
        self.in_channels, self.out_channels, self.resolution = in_channels, out_channels, resolution
        self.kernel_size, self.ws_index, self.up = kernel_size, ws_index, up
        self.demodulate, self.use_noise, self.activation = demodulate, use_noise, activation
        self.gain = (LRELU_GAIN if activation else 1.0) * gain
        self.clamp = clamp * gain if clamp is not None else None
        self.affine = nn.Linear(w_dim, in_channels)
        self.weight = nn.Parameter(torch.zeros(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        if use_noise:
            self.register_buffer("noise_const", torch.zeros(resolution, resolution))
            self.noise_strength = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor, ws: torch.Tensor, resample_filter: torch.Tensor, noise: str | torch.Tensor,
                generator: torch.Generator | None) -> torch.Tensor:
        """``noise``: a mode of ``NOISE_MODES``, or this layer's per-image noise maps (B, 1, r, r) used in place
        of the stored one (scaled by the learned strength, as the stored one is)."""
        batch = x.shape[0]
        styles = self.affine(ws[:, self.ws_index])
        if self.demodulate:
            # Scaling the styles leaves the demodulated output unchanged (up to eps) and keeps fp16 finite.
            styles = styles / styles.abs().amax(dim=1, keepdim=True).clamp_min(torch.finfo(styles.dtype).tiny)
        x = x * styles.reshape(batch, -1, 1, 1)
        if self.up:
            x = _conv_up(x, self.weight, resample_filter)
        else:
            x = F.conv2d(x, self.weight, padding=self.kernel_size // 2)
        # The activation's gain is folded into what precedes it: leaky_relu(a) * g == leaky_relu(a * g), g > 0.
        shift = (self.bias * self.gain).reshape(1, -1, 1, 1)
        if self.use_noise and not (isinstance(noise, str) and noise == "none"):
            shift = shift + self._noise(x, noise, generator) * self.gain
        if self.demodulate:
            x = torch.addcmul(shift, x, self._demodulation(styles).mul(self.gain).reshape(batch, -1, 1, 1))
        else:
            x = x * self.gain + shift if self.gain != 1 else x + shift
        if self.activation:
            x = F.leaky_relu(x, LRELU_SLOPE, inplace=True)      # x is a fresh tensor that backward does not need
        if self.clamp is not None:
            x = x.clamp(-self.clamp, self.clamp)
        return x

    def _demodulation(self, styles: torch.Tensor) -> torch.Tensor:
        """(B, out): 1 / sqrt(sum over (in, kh, kw) of (weight · style)² + eps), without per-sample weights."""
        return (styles.square() @ self._weight_energy().t() + DEMODULATION_EPS).rsqrt()

    def _weight_energy(self) -> torch.Tensor:
        """sum over (kh, kw) of weight², (out, in); cached while the weight stays the same tensor, unmodified
        (an inference-mode result is not reused outside inference mode, where autograd could not save it)."""
        key = (self.weight.data_ptr(), self.weight._version, self.weight.dtype, self.weight.device,
               torch.is_inference_mode_enabled())
        if getattr(self, "_energy_key", None) != key or torch.is_grad_enabled() and self.weight.requires_grad:
            self._energy = self.weight.square().sum(dim=(2, 3))
            self._energy_key = key
        return self._energy

    def _noise(self, x: torch.Tensor, mode: str | torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        if isinstance(mode, torch.Tensor):
            return mode.to(x) * self.noise_strength
        if mode == "const":
            return self.noise_const * self.noise_strength
        shape = (x.shape[0], 1, self.resolution, self.resolution)
        device = generator.device if generator is not None else x.device
        drawn = torch.randn(shape, generator=generator, device=device)
        return drawn.to(x.device, x.dtype) * self.noise_strength


class _SkipConv(nn.Module):
    """The 'resnet' architecture's shortcut: 1x1 conv (no bias), then 2x upsampling."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(out_channels, in_channels, 1, 1))

    def forward(self, x: torch.Tensor, resample_filter: torch.Tensor) -> torch.Tensor:
        return upsample2d(F.conv2d(x, self.weight), resample_filter)


class _Block(nn.Module):
    """One resolution: (2x up conv,) conv, (ToRGB,) (resnet shortcut)."""

    def __init__(self, arch: Architecture, resolution: int, first_ws: int) -> None:
        super().__init__()
        self.resolution = resolution
        self.architecture = arch.architecture
        channels, w_dim = arch.channels[resolution], arch.w_dim
        layer = dict(kernel_size=arch.kernel_size, use_noise=arch.use_noise, clamp=arch.conv_clamp)
        resnet = arch.architecture == "resnet" and resolution > 4
        index = first_ws
        self.up_conv = None
        if resolution > 4:
            self.up_conv = _ModulatedConv(arch.channels[resolution // 2], channels, w_dim, resolution, up=True,
                                          ws_index=index, **layer)
            index += 1
        self.conv = _ModulatedConv(channels, channels, w_dim, resolution, ws_index=index,
                                   gain=math.sqrt(0.5) if resnet else 1.0, **layer)
        index += 1
        self.num_convs = index - first_ws
        self.to_rgb = None
        if arch.architecture == "skip" or resolution == arch.img_resolution:
            self.to_rgb = _ModulatedConv(channels, arch.img_channels, w_dim, resolution, kernel_size=1,
                                         ws_index=index, demodulate=False, use_noise=False, activation=False,
                                         clamp=arch.conv_clamp)
        self.skip = _SkipConv(arch.channels[resolution // 2], channels) if resnet else None

    def forward(self, x: torch.Tensor, img: torch.Tensor | None, ws: torch.Tensor, resample_filter: torch.Tensor,
                noise: str | Mapping[str, torch.Tensor], generator: torch.Generator | None,
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``noise``: a mode, or the maps of this block's noise layers by part ("up_conv", "conv")."""
        shortcut = self.skip(x, resample_filter) if self.skip is not None else None
        if self.up_conv is not None:
            x = self.up_conv(x, ws, resample_filter, _part(noise, "up_conv"), generator)
        x = self.conv(x, ws, resample_filter, _part(noise, "conv"), generator)
        if shortcut is not None:
            x = x + shortcut
        if img is not None:
            img = upsample2d(img, resample_filter)
        if self.to_rgb is not None:
            y = self.to_rgb(x, ws, resample_filter, "none", generator)
            img = y if img is None else img + y
        return x, img


def _part(noise: str | Mapping[str, torch.Tensor], part: str) -> str | torch.Tensor:
    return noise if isinstance(noise, str) else noise.get(part, "none")


class _Mapping(nn.Module):
    """z (and a one-hot label) -> w: normalize, then leaky-ReLU linear layers."""

    def __init__(self, arch: Architecture) -> None:
        super().__init__()
        self.z_dim, self.c_dim, self.label_mode = arch.z_dim, arch.c_dim, arch.label_mode
        widths = arch.mapping_features
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:]))
        self.embed = None
        if arch.c_dim and arch.label_mode == "embed":
            self.embed = nn.Linear(arch.c_dim, arch.embed_features)
        if arch.c_dim and arch.label_mode == "concat":
            self.label_weight = nn.Parameter(torch.zeros(arch.c_dim, arch.z_dim))

    def forward(self, z: torch.Tensor, c: torch.Tensor | None) -> torch.Tensor:
        if self.c_dim == 0:
            x = _normalize(z)
        elif self.label_mode == "embed":
            x = torch.cat([_normalize(z), _normalize(self.embed(c.to(z.dtype)))], dim=1)
        else:
            x = _normalize(torch.cat([z, c.to(z.dtype) @ self.label_weight], dim=1))
        for layer in self.layers:
            x = F.leaky_relu(layer(x), LRELU_SLOPE) * LRELU_GAIN
        return x


class StyleGAN2Network(nn.Module):
    """A StyleGAN2 generator: ``mapping_w(z, c)`` -> w, ``synthesis(ws)`` -> raw images.

    Attributes: ``z_dim``, ``c_dim``, ``w_dim``, ``num_ws`` (rows of ws the synthesis reads: 2·log2(R) − 2),
    ``img_resolution``, ``img_channels``, ``w_avg`` (buffer (w_dim,), the file's average w; zeros when
    ``has_w_avg`` is False), ``arch`` (the ``Architecture``) and ``layer_names`` (the modulated layers' module
    names in the order they run, ToRGBs included; each such module's output is a (B, C, r, r) feature map and
    its ``ws_index`` says which row of ws it reads). Build one with a converter below; a fresh one is all zeros.
    """

    def __init__(self, arch: Architecture, resample_filter: Sequence[float] | torch.Tensor = (1, 3, 3, 1)) -> None:
        super().__init__()
        self.arch = arch
        self.z_dim, self.c_dim, self.w_dim = arch.z_dim, arch.c_dim, arch.w_dim
        self.img_resolution, self.img_channels = arch.img_resolution, arch.img_channels
        self.has_w_avg = False
        self.register_buffer("w_avg", torch.zeros(arch.w_dim))
        self.register_buffer("resample_filter", make_filter(resample_filter))
        self.mapping_network = _Mapping(arch)
        self.const = nn.Parameter(torch.zeros(arch.channels[4], 4, 4))
        blocks, index = [], 0
        for res in arch.resolutions:
            blocks.append(_Block(arch, res, index))
            index += blocks[-1].num_convs
        self.blocks = nn.ModuleList(blocks)
        self.num_ws = index + 1                      # the last ToRGB reads the row after the last conv
        self.layer_names = tuple(f"blocks.{i}.{part}" for i, block in enumerate(self.blocks)
                                 for part in ("up_conv", "conv", "to_rgb") if getattr(block, part) is not None)
        self.noise_layers = tuple((f"blocks.{i}.{part}", block.resolution) for i, block in enumerate(self.blocks)
                                  for part in ("up_conv", "conv")
                                  if getattr(block, part) is not None and getattr(block, part).use_noise)

    def mapping_w(self, z: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        """(B, z_dim) [+ one-hot c (B, c_dim) for conditional models] -> w (B, w_dim), before truncation.

        ``c`` is required when ``c_dim > 0`` and ignored otherwise. Inputs are cast to the network's dtype.
        """
        if z.ndim != 2 or z.shape[1] != self.z_dim:
            raise ValueError(f"z must have shape (batch, {self.z_dim}); got {tuple(z.shape)}")
        if self.c_dim:
            if c is None:
                raise ValueError(f"this generator is conditional: c of shape (batch, {self.c_dim}) is required")
            if tuple(c.shape) != (z.shape[0], self.c_dim):
                raise ValueError(f"c must have shape ({z.shape[0]}, {self.c_dim}); got {tuple(c.shape)}")
        dtype = self.const.dtype                     # the network's precision, whatever the caller's
        return self.mapping_network(z.to(dtype), None if c is None else c.to(dtype))

    def synthesis(self, ws: torch.Tensor, noise: str = "const", generator: torch.Generator | None = None,
                  noise_maps: Sequence[torch.Tensor] | None = None) -> torch.Tensor:
        """ws (B, num_ws, w_dim) -> raw images (B, img_channels, R, R), not clamped.

        noise: "const" = the file's stored noise (images a function of ws alone), "random" = fresh N(0, 1) noise
        drawn with ``generator`` (on its device; same state -> same images), "none" = no noise. ``noise_maps``,
        one (B, 1, r, r) map per entry of ``noise_layers`` in that order, replaces the stored noise (per-image
        noise, as an inversion optimises it); ``noise`` is then ignored. ``ws`` is cast to the network's dtype.
        """
        if noise not in NOISE_MODES:
            raise ValueError(f"noise must be one of {', '.join(NOISE_MODES)}; got {noise!r}")
        if ws.ndim != 3 or ws.shape[1:] != (self.num_ws, self.w_dim):
            raise ValueError(f"ws must have shape (batch, {self.num_ws}, {self.w_dim}); got {tuple(ws.shape)}")
        per_block: list[str | dict[str, torch.Tensor]] = [noise] * len(self.blocks)
        if noise_maps is not None:
            maps = check_noise_maps(self.noise_layers, noise_maps, ws.shape[0])
            per_block = [{} for _ in self.blocks]
            for (name, _), value in zip(self.noise_layers, maps):
                _, index, part = name.split(".")
                per_block[int(index)][part] = value
        ws = ws.to(self.const.dtype)
        x = self.const.unsqueeze(0).expand(ws.shape[0], -1, -1, -1)
        img = None
        for block, block_noise in zip(self.blocks, per_block):
            x, img = block(x, img, ws, self.resample_filter, block_noise, generator)
        return img

    def latent_weights(self, include_torgb: bool = False) -> list[tuple[str, torch.Tensor]]:
        """SeFa's weights: each modulated conv's style affine (in, w_dim) in synthesis order, the ToRGBs' after
        them with ``include_torgb``; in the files' scale (the 1/sqrt(w_dim) gain taken back out), so they equal
        what ``engine.models.checkpoints.latent_weights`` reads from the file."""
        kinds = ("convs", "to_rgbs") if include_torgb else ("convs",)
        return [(name, layer.affine.weight.detach() * math.sqrt(self.w_dim))
                for kind in kinds for name, layer in _layers(self, kind)]

    def forward(self, z: torch.Tensor, c: torch.Tensor | None = None, noise: str = "const") -> torch.Tensor:
        """Images for ``z`` without truncation: ``synthesis(mapping_w(z, c) repeated num_ws times)``."""
        w = self.mapping_w(z, c)
        return self.synthesis(w.unsqueeze(1).expand(-1, self.num_ws, -1), noise=noise)


# ---------------------------------------------------------------------------------------------- converters

ROSINALITY_LR_MLP = 0.01          # rosinality's Generator(lr_mlp=0.01); the file does not record it
GENFORCE_LR_MUL = 0.01            # genforce's StyleGAN2Generator(mapping_lr_mul=0.01); not recorded either


def from_rosinality(state: Mapping[str, torch.Tensor], latent_avg: torch.Tensor | None = None) -> StyleGAN2Network:
    """The network of a rosinality/stylegan2-pytorch ``Generator`` state dict (a checkpoint's ``g_ema``).

    ``latent_avg``: the average w that converted checkpoints carry beside ``g_ema`` (becomes ``w_avg``); without it
    ``has_w_avg`` is False. Raises ``CheckpointError`` for a key missing, unexpected or of the wrong shape.
    """
    r = _Reader(state, "rosinality")
    arch = _rosinality_arch(r)
    n_rgbs = len(arch.resolutions) - 1
    net = StyleGAN2Network(arch, _first_filter(r, "convs.0.conv.blur.kernel") if n_rgbs else (1, 3, 3, 1))
    values = {"const": r.take("input.input", (1, *net.const.shape))[0]}
    for i, layer in enumerate(net.mapping_network.layers):
        values.update(_dense(r, f"style.{i + 1}", f"mapping_network.layers.{i}", layer, lr_mul=ROSINALITY_LR_MLP))
    conv_keys = ["conv1"] + [f"convs.{i}" for i in range(2 * n_rgbs)]
    rgb_keys = ["to_rgb1"] + [f"to_rgbs.{i}" for i in range(n_rgbs)]
    for i, (name, layer) in enumerate(_layers(net, "convs")):
        src = conv_keys[i]
        values.update(_modulation(r, f"{src}.conv.modulation", name, layer, bias_offset=0.0))
        values[f"{name}.weight"] = r.take(f"{src}.conv.weight", (1, *layer.weight.shape))[0] * _fan_in_gain(layer)
        values[f"{name}.bias"] = r.take(f"{src}.activate.bias", layer.bias.shape)
        values[f"{name}.noise_strength"] = r.take(f"{src}.noise.weight", (1,))[0]
        values[f"{name}.noise_const"] = r.take(f"noises.noise_{i}", (1, 1, *layer.noise_const.shape))[0, 0]
        if layer.up:
            r.check_filter(f"{src}.conv.blur.kernel", net.resample_filter, gain=4.0)
    for i, (name, layer) in enumerate(_layers(net, "to_rgbs")):
        src = rgb_keys[i]
        values.update(_modulation(r, f"{src}.conv.modulation", name, layer, bias_offset=0.0))
        values[f"{name}.weight"] = r.take(f"{src}.conv.weight", (1, *layer.weight.shape))[0] * _fan_in_gain(layer)
        values[f"{name}.bias"] = r.take(f"{src}.bias", (1, layer.out_channels, 1, 1)).flatten()
        if i > 0:
            r.check_filter(f"{src}.upsample.kernel", net.resample_filter, gain=4.0)
    if latent_avg is not None:
        values["w_avg"] = _as_w_avg(latent_avg, arch.w_dim, "rosinality latent_avg")
    return _finish(net, values, r)


def from_nvlabs(init_kwargs: Mapping[str, object], state: Mapping[str, torch.Tensor], *,
                module: str | None = None) -> StyleGAN2Network:
    """The network of an NVlabs StyleGAN2 ``Generator`` (``G_ema``): its constructor kwargs and state dict.

    stylegan2-ada-pytorch's ``training.networks.Generator`` takes ``synthesis_kwargs={...}``; stylegan3's
    ``training.networks_stylegan2.Generator`` takes the same settings flat and defaults ``conv_clamp`` to 256.
    ``module`` (the pickled class's module, when known) decides which defaults apply; without it, flat synthesis
    settings mean stylegan3's. A setting the engine does not implement (an activation other than 'lrelu', an
    unknown kwarg) is a ``CheckpointError`` naming it, as is a key missing, unexpected or of the wrong shape.
    """
    arch, filter_taps = _nvlabs_arch(init_kwargs, module)
    r = _Reader(state, "NVlabs")
    net = StyleGAN2Network(arch, _nvlabs_filter(r, filter_taps))
    map_kwargs = dict(init_kwargs.get("mapping_kwargs") or {})
    lr = float(map_kwargs.get("lr_multiplier", _NVLABS_MAPPING["lr_multiplier"]))
    values = {"const": r.take("synthesis.b4.const", net.const.shape)}
    for i, layer in enumerate(net.mapping_network.layers):
        values.update(_dense(r, f"mapping.fc{i}", f"mapping_network.layers.{i}", layer, lr_mul=lr))
    if net.mapping_network.embed is not None:
        values.update(_dense(r, "mapping.embed", "mapping_network.embed", net.mapping_network.embed, lr_mul=1.0))
    if map_kwargs.get("w_avg_beta", _NVLABS_MAPPING["w_avg_beta"]) is not None:
        values["w_avg"] = r.take("mapping.w_avg", (arch.w_dim,))
    for i, (res, block) in enumerate(zip(arch.resolutions, net.blocks)):
        values.update(_nvlabs_block(r, f"synthesis.b{res}", f"blocks.{i}", block, net.resample_filter))
    return _finish(net, values, r)


def _nvlabs_filter(r: _Reader, taps: object) -> torch.Tensor:
    """The stored filter of block 4 (the one all layers use), checked against init_kwargs' resample_filter."""
    f = _first_filter(r, "synthesis.b4.resample_filter")
    if taps is not None:
        named = make_filter(taps)
        if named.shape != f.shape or not torch.allclose(named, f, atol=1e-6):
            raise CheckpointError("NVlabs key 'synthesis.b4.resample_filter' differs from init_kwargs' "
                                  "resample_filter")
    return f


def _nvlabs_block(r: _Reader, src: str, name: str, block: _Block, f: torch.Tensor) -> dict[str, torch.Tensor]:
    """One NVlabs ``SynthesisBlock``'s tensors (``src`` = synthesis.b{res}) under the engine block's names."""
    values = {}
    r.check_filter(f"{src}.resample_filter", f, gain=1.0)
    for part, mine, layer in (("conv0", "up_conv", block.up_conv), ("conv1", "conv", block.conv)):
        if layer is None:
            continue
        values.update(_modulation(r, f"{src}.{part}.affine", f"{name}.{mine}", layer, bias_offset=0.0))
        values[f"{name}.{mine}.weight"] = r.take(f"{src}.{part}.weight", layer.weight.shape)
        values[f"{name}.{mine}.bias"] = r.take(f"{src}.{part}.bias", layer.bias.shape)
        if layer.use_noise:
            values[f"{name}.{mine}.noise_const"] = r.take(f"{src}.{part}.noise_const", layer.noise_const.shape)
            values[f"{name}.{mine}.noise_strength"] = r.take(f"{src}.{part}.noise_strength", ())
        r.check_filter(f"{src}.{part}.resample_filter", f, gain=1.0)
    if block.to_rgb is not None:
        rgb = block.to_rgb
        values.update(_modulation(r, f"{src}.torgb.affine", f"{name}.to_rgb", rgb, bias_offset=0.0))
        values[f"{name}.to_rgb.weight"] = r.take(f"{src}.torgb.weight", rgb.weight.shape) * _fan_in_gain(rgb)
        values[f"{name}.to_rgb.bias"] = r.take(f"{src}.torgb.bias", rgb.bias.shape)
    if block.skip is not None:
        weight = r.take(f"{src}.skip.weight", block.skip.weight.shape)
        values[f"{name}.skip.weight"] = weight * math.sqrt(0.5 / weight.shape[1])     # gain 1/sqrt(fan_in), sqrt(1/2)
        r.check_filter(f"{src}.skip.resample_filter", f, gain=1.0)
    return values


def from_genforce(state: Mapping[str, torch.Tensor]) -> StyleGAN2Network:
    """The network of a genforce/sefa ``StyleGAN2Generator`` state dict (``generator_smooth`` or ``generator``).

    Resolution, widths, label size and architecture ('skip' or 'origin') are read from the keys; the mapping's
    learning-rate multiplier is genforce's 0.01 and ``final_tanh`` its default (off). ``truncation.w_avg``
    becomes ``w_avg``. Raises ``CheckpointError`` for a key missing, unexpected or of the wrong shape.
    """
    r = _Reader(state, "genforce")
    arch = _genforce_arch(r)
    n_blocks = len(arch.resolutions)
    net = StyleGAN2Network(arch, _first_filter(r, "synthesis.layer1.filter.kernel", flip=True) if n_blocks > 1
                           else (1, 3, 3, 1))
    values = {"const": r.take("synthesis.early_layer.const", (1, *net.const.shape))[0],
              "w_avg": r.take("truncation.w_avg", (arch.w_dim,))}
    for i, layer in enumerate(net.mapping_network.layers):
        values.update(_dense(r, f"mapping.dense{i}", f"mapping_network.layers.{i}", layer, lr_mul=GENFORCE_LR_MUL))
    if arch.c_dim:
        values["mapping_network.label_weight"] = r.take("mapping.label_weight", (arch.c_dim, arch.z_dim))
    for i, (name, layer) in enumerate(_layers(net, "convs")):
        src = f"synthesis.layer{i}"
        values.update(_modulation(r, f"{src}.style", name, layer, bias_offset=1.0))
        weight = r.take(f"{src}.weight", layer.weight.shape) * _fan_in_gain(layer)
        # genforce flips the kernel of its upsampling (transposed) conv; the engine's does not
        values[f"{name}.weight"] = weight.flip(2, 3) if layer.up else weight
        values[f"{name}.bias"] = r.take(f"{src}.bias", layer.bias.shape)
        values[f"{name}.noise_const"] = r.take(f"{src}.noise", (1, 1, *layer.noise_const.shape))[0, 0]
        values[f"{name}.noise_strength"] = r.take(f"{src}.noise_strength", ())
        if layer.up:
            r.check_filter(f"{src}.filter.kernel", net.resample_filter, gain=4.0, flip=True)
    rgbs = _layers(net, "to_rgbs")
    for (name, layer), block in zip(rgbs, range(n_blocks - len(rgbs), n_blocks)):
        src = f"synthesis.output{block}"
        values.update(_modulation(r, f"{src}.style", name, layer, bias_offset=1.0))
        values[f"{name}.weight"] = r.take(f"{src}.weight", layer.weight.shape) * _fan_in_gain(layer)
        values[f"{name}.bias"] = r.take(f"{src}.bias", layer.bias.shape)
    if arch.architecture == "skip" and n_blocks > 1:
        r.check_filter("synthesis.upsample.kernel", net.resample_filter, gain=4.0, flip=True)
    return _finish(net, values, r)


def _rosinality_arch(r: _Reader) -> Architecture:
    """size, style_dim, n_mlp and the channels per resolution, from rosinality's key names and shapes."""
    n_rgbs = len(r.numbered(r"to_rgbs\.(\d+)\.conv\.weight"))
    n_mlp = len(r.numbered(r"style\.(\d+)\.weight"))
    style_dim = r.peek("style.1.weight").shape[1]
    channels = {4: r.peek("input.input").shape[1]}
    channels.update({8 * 2 ** i: r.peek(f"convs.{2 * i}.conv.weight").shape[1] for i in range(n_rgbs)})
    return Architecture(z_dim=style_dim, w_dim=style_dim, img_resolution=4 * 2 ** n_rgbs,
                        img_channels=r.peek("to_rgb1.conv.weight").shape[1], channels=channels,
                        mapping_features=(style_dim,) * (n_mlp + 1),
                        kernel_size=r.peek("conv1.conv.weight").shape[-1])


def _genforce_arch(r: _Reader) -> Architecture:
    """Resolution, widths, label size and architecture, from genforce's key names and shapes."""
    n_convs = len(r.numbered(r"synthesis\.layer(\d+)\.weight"))
    n_dense = len(r.numbered(r"mapping\.dense(\d+)\.weight"))
    if n_convs < 1 or n_convs % 2 == 0 or n_dense < 1:
        raise CheckpointError("missing key 'synthesis.layer0.weight' or 'mapping.dense0.weight' in the genforce "
                              "layout (an odd number of synthesis.layer{i} and at least one mapping.dense{i})")
    log2 = (n_convs + 3) // 2
    label_size = r.peek("mapping.label_weight").shape[0] if r.has("mapping.label_weight") else 0
    dense = [r.peek(f"mapping.dense{i}.weight") for i in range(n_dense)]
    w_dim = r.peek("synthesis.layer0.style.weight").shape[1]
    if dense[-1].shape[0] != w_dim:
        raise CheckpointError(f"genforce key 'mapping.dense{n_dense - 1}.weight' has {dense[-1].shape[0]} outputs; "
                              f"expected w_dim {w_dim} (per-layer w, repeat_w=False, is not supported)")
    channels = {2 ** (k + 2): r.peek(f"synthesis.layer{max(2 * k - 1, 0)}.weight").shape[0]
                for k in range(log2 - 1)}
    skip = r.has("synthesis.output0.weight") and log2 > 2
    return Architecture(z_dim=dense[0].shape[1] // (2 if label_size else 1), w_dim=w_dim,
                        img_resolution=2 ** log2, img_channels=r.peek(f"synthesis.output{log2 - 2}.weight").shape[0],
                        channels=channels,
                        mapping_features=(dense[0].shape[1], *(d.shape[0] for d in dense)), c_dim=label_size,
                        label_mode="concat", architecture="skip" if skip else "orig",
                        kernel_size=r.peek("synthesis.layer0.weight").shape[-1])


_NVLABS_TOP = ("z_dim", "c_dim", "w_dim", "img_resolution", "img_channels")
_NVLABS_SYNTHESIS = {"channel_base": 32768, "channel_max": 512, "num_fp16_res": 0, "architecture": "skip",
                     "resample_filter": None, "conv_clamp": None, "fp16_channels_last": False,
                     "fused_modconv_default": True, "kernel_size": 3, "use_noise": True, "activation": "lrelu"}
_NVLABS_MAPPING = {"num_layers": 8, "embed_features": None, "layer_features": None, "activation": "lrelu",
                   "lr_multiplier": 0.01, "w_avg_beta": 0.995}


def _nvlabs_arch(init_kwargs: Mapping[str, object], module: str | None) -> tuple[Architecture, object]:
    """The architecture NVlabs' constructor builds from ``init_kwargs``, and the resample_filter it names."""
    if not isinstance(init_kwargs, Mapping):
        raise CheckpointError(f"NVlabs init_kwargs must be a dict; got {type(init_kwargs).__name__}")
    kwargs = dict(init_kwargs)
    missing = [k for k in _NVLABS_TOP if k not in kwargs]
    if missing:
        raise CheckpointError(f"NVlabs init_kwargs lack {missing[0]!r}")
    top = {k: kwargs.pop(k) for k in _NVLABS_TOP}
    mapping = dict(kwargs.pop("mapping_kwargs", None) or {})
    nested = "synthesis_kwargs" in kwargs
    synthesis = dict(kwargs.pop("synthesis_kwargs", None) or {})
    if nested and kwargs:
        raise CheckpointError(f"NVlabs init_kwargs: unknown setting {next(iter(kwargs))!r}")
    synthesis.update(kwargs)                      # stylegan3's networks_stylegan2.Generator takes them flat
    stylegan3 = module == "training.networks_stylegan2" or (module is None and not nested and bool(kwargs))
    for given, known, what in ((synthesis, _NVLABS_SYNTHESIS, "synthesis"), (mapping, _NVLABS_MAPPING, "mapping")):
        unknown = [k for k in given if k not in known]
        if unknown:
            raise CheckpointError(f"NVlabs init_kwargs: unknown {what} setting {unknown[0]!r}")
        if given.get("activation", "lrelu") != "lrelu":
            raise CheckpointError(f"NVlabs init_kwargs: {what} activation {given['activation']!r} is not supported "
                                  "(only 'lrelu')")
    syn = {**_NVLABS_SYNTHESIS, **({"conv_clamp": 256} if stylegan3 else {}), **synthesis}
    mp = {**_NVLABS_MAPPING, **mapping}
    z_dim, c_dim, w_dim = (int(top[k]) for k in ("z_dim", "c_dim", "w_dim"))
    embed = (w_dim if mp["embed_features"] is None else int(mp["embed_features"])) if c_dim else 0
    hidden = w_dim if mp["layer_features"] is None else int(mp["layer_features"])
    n = int(mp["num_layers"])
    resolution = int(top["img_resolution"])
    if syn["architecture"] not in ARCHITECTURES:
        raise CheckpointError(f"NVlabs init_kwargs: architecture {syn['architecture']!r} is not one of "
                              f"{', '.join(ARCHITECTURES)}")
    try:
        arch = Architecture(
            z_dim=z_dim, w_dim=w_dim, img_resolution=resolution, img_channels=int(top["img_channels"]),
            channels={res: min(int(syn["channel_base"]) // res, int(syn["channel_max"]))
                      for res in (2 ** i for i in range(2, resolution.bit_length()))},
            mapping_features=(z_dim + embed, *([hidden] * (n - 1)), w_dim), c_dim=c_dim, embed_features=embed,
            label_mode="embed", architecture=syn["architecture"],
            conv_clamp=None if syn["conv_clamp"] is None else float(syn["conv_clamp"]),
            kernel_size=int(syn["kernel_size"]), use_noise=bool(syn["use_noise"]))
    except ValueError as exc:
        raise CheckpointError(f"NVlabs init_kwargs: {exc}") from None
    return arch, syn["resample_filter"]


class _Reader:
    """Takes tensors out of a layout's state dict by name, checking shapes; ``finish`` refuses leftovers."""

    def __init__(self, state: Mapping[str, torch.Tensor], layout: str) -> None:
        if not isinstance(state, Mapping):
            raise CheckpointError(f"the {layout} state must be a {{name: tensor}} dict; got {type(state).__name__}")
        self.state, self.layout, self.used = state, layout, set()

    def has(self, key: str) -> bool:
        return key in self.state

    def numbered(self, pattern: str) -> list[int]:
        """The numbers i of the keys matching ``pattern`` (one group), checked to run 0.. or 1.. without a gap."""
        regex = re.compile(pattern)
        found = sorted(int(m.group(1)) for k in self.state if (m := regex.fullmatch(k)))
        if found and found != list(range(found[0], found[0] + len(found))):
            gap = next(i for i in range(found[0], found[-1]) if i not in found)
            key = pattern.replace(r"(\d+)", str(gap)).replace("\\", "")
            raise CheckpointError(f"missing key {key!r} in the {self.layout} layout")
        return found

    def peek(self, key: str) -> torch.Tensor:
        value = self.state.get(key)
        if value is None:
            raise CheckpointError(f"missing key {key!r} in the {self.layout} layout")
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(f"key {key!r} in the {self.layout} layout holds a {type(value).__name__}, "
                                  "not a tensor")
        return value

    def take(self, key: str, shape: Sequence[int]) -> torch.Tensor:
        value = self.peek(key)
        if tuple(value.shape) != tuple(shape):
            raise CheckpointError(f"key {key!r} in the {self.layout} layout has shape {tuple(value.shape)}; "
                                  f"expected {tuple(shape)}")
        self.used.add(key)
        return value.detach().to(torch.float32)

    def check_filter(self, key: str, f: torch.Tensor, gain: float, flip: bool = False) -> None:
        """Consume a stored resampling-filter buffer, refusing one that is not the network's filter."""
        stored = self.peek(key).detach().float()
        # NVlabs stores long separable filters as 1-D taps; the others keep the 2-D kernel, times the gain
        got = make_filter(stored) if stored.ndim == 1 else stored.reshape(stored.shape[-2:]) / gain
        got = got.flip(0, 1) if flip else got
        if got.shape != f.shape or not torch.allclose(got, f, atol=1e-6):
            raise CheckpointError(f"key {key!r} in the {self.layout} layout is not the resampling filter the other "
                                  "layers use")
        self.used.add(key)

    def finish(self) -> None:
        extra = [k for k in self.state if k not in self.used]
        if extra:
            more = f" (and {len(extra) - 1} more)" if len(extra) > 1 else ""
            raise CheckpointError(f"unexpected key {extra[0]!r} in the {self.layout} layout{more}")


def _first_filter(r: _Reader, key: str, flip: bool = False) -> torch.Tensor:
    """The 2-D filter that the buffer ``key`` holds (any gain; flipped back where the layout stores it flipped)."""
    stored = r.peek(key).detach().float()
    stored = stored.reshape(stored.shape[-2:]) if stored.ndim > 2 else stored
    f = make_filter(stored)
    return f.flip(0, 1) if flip and f.ndim == 2 else f


def _layers(net: StyleGAN2Network, kind: str) -> list[tuple[str, _ModulatedConv]]:
    """(name, module) of the modulated convs ("convs") or the ToRGBs ("to_rgbs"), in synthesis order."""
    parts = ("up_conv", "conv") if kind == "convs" else ("to_rgb",)
    return [(f"blocks.{i}.{part}", getattr(b, part)) for i, b in enumerate(net.blocks) for part in parts
            if getattr(b, part) is not None]


def _dense(r: _Reader, src: str, name: str, layer: nn.Linear, lr_mul: float) -> dict[str, torch.Tensor]:
    """An equalized-learning-rate linear layer: weight · lr_mul / sqrt(fan_in), bias · lr_mul."""
    out_f, in_f = layer.weight.shape
    return {f"{name}.weight": r.take(f"{src}.weight", (out_f, in_f)) * (lr_mul / math.sqrt(in_f)),
            f"{name}.bias": r.take(f"{src}.bias", (out_f,)) * lr_mul}


def _modulation(r: _Reader, src: str, name: str, layer: _ModulatedConv, bias_offset: float) -> dict[str, torch.Tensor]:
    """A layer's style affine (gain 1 / sqrt(w_dim); genforce adds a constant 1 to the stored bias)."""
    values = _dense(r, src, f"{name}.affine", layer.affine, lr_mul=1.0)
    values[f"{name}.affine.bias"] = values[f"{name}.affine.bias"] + bias_offset
    return values


def _fan_in_gain(layer: _ModulatedConv) -> float:
    return 1 / math.sqrt(layer.in_channels * layer.kernel_size ** 2)


def _as_w_avg(value: object, w_dim: int, what: str) -> torch.Tensor:
    if not isinstance(value, torch.Tensor) or value.numel() != w_dim:
        shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
        raise CheckpointError(f"{what} must hold {w_dim} values (w_dim); got {shape}")
    return value.detach().float().reshape(w_dim)


def _finish(net: StyleGAN2Network, values: dict[str, torch.Tensor], r: _Reader) -> StyleGAN2Network:
    """Refuse the file's unused keys, copy ``values`` into the network, return it in eval mode, frozen."""
    r.finish()
    targets = dict(net.named_parameters()) | dict(net.named_buffers())
    unset = [k for k in targets if k not in values and k not in ("w_avg", "resample_filter")]
    if unset or any(k not in targets for k in values):            # a converter bug, not a user's file
        raise AssertionError(f"converter left {unset} unset or set unknown {set(values) - set(targets)}")
    with torch.no_grad():
        for key, value in values.items():
            targets[key].copy_(value.reshape(targets[key].shape))
    net.has_w_avg = "w_avg" in values
    return net.eval().requires_grad_(False)


# ---------------------------------------------------------------------------------------------- resampling

def check_noise_maps(layers: Sequence[tuple[str, int]], maps: Sequence[torch.Tensor],
                     batch: int) -> list[torch.Tensor]:
    """``maps`` as a list, after checking there is one (batch, 1, r, r) map per noise layer (name, r)."""
    maps = list(maps)
    if len(maps) != len(layers):
        raise ValueError(f"noise_maps must hold one map per noise layer ({len(layers)}); got {len(maps)}")
    for (name, res), value in zip(layers, maps):
        if tuple(value.shape) != (batch, 1, res, res):
            raise ValueError(f"noise map of {name} must have shape ({batch}, 1, {res}, {res}); "
                             f"got {tuple(value.shape)}")
    return maps


def make_filter(taps: Sequence[float] | torch.Tensor) -> torch.Tensor:
    """The 2-D low-pass filter (fh, fw), summing to 1, for 1-D taps (outer product) or a 2-D kernel."""
    f = torch.as_tensor(taps, dtype=torch.float32)
    if f.ndim == 1:
        f = torch.outer(f, f)
    if f.ndim != 2 or f.numel() == 0 or float(f.sum()) == 0:
        raise ValueError(f"resample filter must be 1-D taps or a 2-D kernel with a non-zero sum; got {f.shape}")
    return f / f.sum()


def _depthwise(f: torch.Tensor, channels: int, dtype: torch.dtype, gain: float) -> torch.Tensor:
    # conv2d correlates: flip the filter so that it convolves, as upfirdn2d does
    return (f.flip(0, 1) * gain).to(dtype).expand(channels, 1, *f.shape)


def _filter(x: torch.Tensor, f: torch.Tensor, pads: tuple[int, int, int, int], gain: float) -> torch.Tensor:
    """Convolve every channel with ``f`` after padding (x0, x1, y0, y1); negative pads crop."""
    x0, x1, y0, y1 = pads
    weight = _depthwise(f, x.shape[1], x.dtype, gain)
    if x0 == x1 and y0 == y1 and x0 >= 0 and y0 >= 0:
        return F.conv2d(x, weight, padding=(y0, x0), groups=x.shape[1])
    return F.conv2d(F.pad(x, [x0, x1, y0, y1]), weight, groups=x.shape[1])


def upsample2d(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """2x upsampling: zeros between samples, then ``f`` (gain 4), padded as NVlabs' ``upsample2d``.

    Done as one depthwise transposed conv (stride 2), which equals that padded convolution up to a crop.
    """
    fh, fw = f.shape
    # upfirdn2d pads the zero-stuffed signal by ((fw+1)//2, (fw-2)//2); the transposed conv's full output is
    # that signal convolved with `f` at full extent, i.e. (fw-1-pad0) extra samples before and (fw-2-pad1) after.
    cx0, cx1 = fw - 1 - (fw + 1) // 2, fw - 2 - (fw - 2) // 2
    cy0, cy1 = fh - 1 - (fh + 1) // 2, fh - 2 - (fh - 2) // 2
    weight = (f * 4).to(x.dtype).expand(x.shape[1], 1, fh, fw)
    if cx0 == cx1 and cy0 == cy1 and cx0 >= 0 and cy0 >= 0:
        return F.conv_transpose2d(x, weight, stride=2, padding=(cy0, cx0), groups=x.shape[1])
    y = F.conv_transpose2d(x, weight, stride=2, groups=x.shape[1])
    return F.pad(y, [-cx0, -cx1, -cy0, -cy1])


def _conv_up(x: torch.Tensor, weight: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """NVlabs' ``conv2d_resample(up=2, padding=k//2)``: a stride-2 transposed conv, then ``f`` (gain 4)."""
    kh, kw = weight.shape[2:]
    fh, fw = f.shape
    x0 = kw // 2 + (fw + 1) // 2 - (kw - 1)
    x1 = kw // 2 + (fw - 2) // 2 - (kw - 2)
    y0 = kh // 2 + (fh + 1) // 2 - (kh - 1)
    y1 = kh // 2 + (fh - 2) // 2 - (kh - 2)
    px, py = max(min(-x0, -x1), 0), max(min(-y0, -y1), 0)
    x = F.conv_transpose2d(x, weight.transpose(0, 1), stride=2, padding=(py, px))
    return _filter(x, f, (x0 + px, x1 + px, y0 + py, y1 + py), gain=4.0)


def _normalize(x: torch.Tensor) -> torch.Tensor:
    return x * (x.square().mean(dim=1, keepdim=True) + 1e-8).rsqrt()
