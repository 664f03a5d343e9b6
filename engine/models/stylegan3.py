"""StyleGAN3 (alias-free GAN), configs T and R: the engine's own network and the NVlabs converter.

``from_nvlabs(init_kwargs, state)`` builds the network that NVlabs' ``training/networks_stylegan3.py``
``Generator(**init_kwargs)`` describes and loads every tensor of its ``state_dict()`` into it, strictly: a missing or
unexpected key, a shape that differs from the one the architecture implies, or an init kwarg the engine does not
know is a ``CheckpointError`` of one line naming it. Nothing is recomputed that the file carries: the Fourier
input's ``freqs``, ``phases`` and ``transform``, each layer's up/down FIR filters and ``magnitude_ema``, and
``w_avg`` come from the state. Only the geometry (sizes, sampling rates, resampling factors, padding), which the
pickle does not store, is derived from ``init_kwargs`` with NVlabs' formulas.

The math is NVlabs': equalized-learning-rate dense layers (lr multiplier 0.01 in the mapping), the
normalised, demodulated modulated convolution with the layer's input gain ``magnitude_ema ** -0.5``, and the
filtered leaky ReLU as its reference path computes it (bias, zero-insertion upsampling with gain ``up**2``,
``lrelu(·, slope) * gain`` clamped to ``conv_clamp``, FIR downsampling), written on depthwise convolutions.
Config R (``conv_kernel=1``, ``use_radial_filters``, doubled channels) differs only in what ``init_kwargs`` and
the state say, so one network serves both. StyleGAN3 has no noise inputs.

Two deliberate differences, both below float32 resolution of the images: the style pre-normalisation before
demodulation is per sample (NVlabs' mean runs over the whole batch, which cancels in the demodulation up to its
1e-8 epsilon), so an image does not depend on the batch it is drawn in; and the modulation scales activations
and demodulates the output of one shared-weight convolution instead of building per-sample weights.
"""
from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass, fields

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from engine.models.checkpoints import CheckpointError

LAYOUT = "NVlabs StyleGAN3"
NOISE_MODES = ("const", "random", "none")
LRELU_SLOPE = 0.2
LRELU_GAIN = math.sqrt(2)
# NVlabs mapping_kwargs -> StyleGAN3Architecture fields (w_avg_beta, a training decay, is ignored)
MAPPING_KWARGS = {"num_layers": "mapping_layers", "lr_multiplier": "mapping_lr_multiplier"}


@dataclass(frozen=True)
class StyleGAN3Architecture:
    """What NVlabs' ``Generator(**init_kwargs)`` is made of; defaults are NVlabs' own."""

    z_dim: int
    c_dim: int
    w_dim: int
    img_resolution: int
    img_channels: int
    mapping_layers: int = 2
    mapping_lr_multiplier: float = 0.01
    channel_base: int = 32768
    channel_max: int = 512
    num_layers: int = 14
    num_critical: int = 2
    first_cutoff: float = 2
    first_stopband: float = 2 ** 2.1
    last_stopband_rel: float = 2 ** 0.3
    margin_size: int = 10
    output_scale: float = 0.25
    conv_kernel: int = 3
    filter_size: int = 6
    lrelu_upsampling: int = 2
    use_radial_filters: bool = False
    conv_clamp: float | None = 256

    @property
    def num_ws(self) -> int:
        """Per-layer codes the synthesis takes: the Fourier input, ``num_layers`` layers and the ToRGB."""
        return self.num_layers + 2

    @classmethod
    def from_init_kwargs(cls, init_kwargs: Mapping) -> StyleGAN3Architecture:
        """The architecture of NVlabs' ``Generator(**init_kwargs)``; ``CheckpointError`` for a kwarg it cannot take.

        Keys that only matter for training or for NVlabs' fp16 on CUDA (``num_fp16_res``, ``magnitude_ema_beta``,
        ``mapping_kwargs.w_avg_beta``) are accepted and ignored.
        """
        if not isinstance(init_kwargs, Mapping):
            raise CheckpointError(f"{LAYOUT} init_kwargs must be a dict; got {type(init_kwargs).__name__}")
        kwargs = dict(init_kwargs)
        mapping = kwargs.pop("mapping_kwargs", None) or {}
        if not isinstance(mapping, Mapping):
            raise CheckpointError(f"{LAYOUT} init_kwargs['mapping_kwargs'] must be a dict; "
                                  f"got {type(mapping).__name__}")
        for ignored in ("num_fp16_res", "magnitude_ema_beta"):
            kwargs.pop(ignored, None)
        own = {f.name for f in fields(cls)} - set(MAPPING_KWARGS.values())
        unknown = [k for k in kwargs if k not in own] + [f"mapping_kwargs.{k}" for k in mapping
                                                         if k not in MAPPING_KWARGS and k != "w_avg_beta"]
        if unknown:
            raise CheckpointError(f"{LAYOUT} init_kwargs has {unknown[0]!r}, which the engine's StyleGAN3 does not "
                                  "know (a different network or NVlabs version)")
        given = {**kwargs, **{MAPPING_KWARGS[k]: v for k, v in mapping.items() if k in MAPPING_KWARGS}}
        missing = [k for k in ("z_dim", "c_dim", "w_dim", "img_resolution", "img_channels") if k not in given]
        if missing:
            raise CheckpointError(f"{LAYOUT} init_kwargs lacks {missing[0]!r}")
        arch = cls(**given)
        arch._validate()
        return arch

    def _validate(self) -> None:
        positive = ("z_dim", "w_dim", "img_resolution", "img_channels", "mapping_layers", "channel_base",
                    "channel_max", "num_layers", "conv_kernel", "filter_size", "lrelu_upsampling")
        for name in positive:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise CheckpointError(f"{LAYOUT} init_kwargs {name} must be a positive integer; got {value!r}")
        if isinstance(self.c_dim, bool) or not isinstance(self.c_dim, (int, np.integer)) or self.c_dim < 0:
            raise CheckpointError(f"{LAYOUT} init_kwargs c_dim must be an integer >= 0; got {self.c_dim!r}")
        if self.conv_clamp is not None and (isinstance(self.conv_clamp, bool) or
                                            not isinstance(self.conv_clamp, numbers.Real) or self.conv_clamp < 0):
            raise CheckpointError(f"{LAYOUT} init_kwargs conv_clamp must be None or a number >= 0; "
                                  f"got {self.conv_clamp!r}")
        if not isinstance(self.num_critical, (int, np.integer)) or not 0 <= self.num_critical < self.num_layers:
            raise CheckpointError(f"{LAYOUT} init_kwargs num_critical must be in [0, num_layers); "
                                  f"got {self.num_critical!r}")


@dataclass(frozen=True)
class LayerGeometry:
    """One synthesis layer's shape and resampling, derived as NVlabs' ``SynthesisLayer.__init__`` derives them."""

    index: int
    in_channels: int
    out_channels: int
    in_size: int
    out_size: int
    conv_kernel: int
    up: int
    down: int
    padding: tuple[int, int, int, int]     # x_before, x_after, y_before, y_after, w.r.t. the upsampled image
    up_taps: int                            # 1: no filter (the state then has no up_filter)
    down_taps: int
    down_radial: bool                       # a 2-D (taps, taps) downsampling filter instead of a separable one
    is_torgb: bool

    @property
    def name(self) -> str:
        """NVlabs' attribute name, ``L{index}_{out_size}_{out_channels}``."""
        return f"L{self.index}_{self.out_size}_{self.out_channels}"


@dataclass(frozen=True)
class InputGeometry:
    """The Fourier-feature input: channels, size in pixels, sampling rate and bandwidth (cycles per unit)."""

    channels: int
    size: int
    sampling_rate: float
    bandwidth: float


def geometry(arch: StyleGAN3Architecture) -> tuple[InputGeometry, list[LayerGeometry]]:
    """The input's and each layer's geometry: NVlabs' geometric progression of cutoffs and stopbands."""
    n, res = arch.num_layers, arch.img_resolution
    last_cutoff = res / 2
    last_stopband = last_cutoff * arch.last_stopband_rel
    exponents = np.minimum(np.arange(n + 1) / (n - arch.num_critical), 1)
    cutoffs = arch.first_cutoff * (last_cutoff / arch.first_cutoff) ** exponents
    stopbands = arch.first_stopband * (last_stopband / arch.first_stopband) ** exponents
    rates = np.exp2(np.ceil(np.log2(np.minimum(stopbands * 2, res))))
    sizes = rates + arch.margin_size * 2
    sizes[-2:] = res
    channels = np.rint(np.minimum((arch.channel_base / 2) / cutoffs, arch.channel_max))
    channels[-1] = arch.img_channels
    source = InputGeometry(int(channels[0]), int(sizes[0]), float(rates[0]), float(cutoffs[0]))
    layers = [_layer(arch, idx, int(channels[max(idx - 1, 0)]), int(channels[idx]), int(sizes[max(idx - 1, 0)]),
                     int(sizes[idx]), int(rates[max(idx - 1, 0)]), int(rates[idx]))
              for idx in range(n + 1)]
    return source, layers


def _layer(arch: StyleGAN3Architecture, idx: int, in_channels: int, out_channels: int, in_size: int, out_size: int,
           in_rate: int, out_rate: int) -> LayerGeometry:
    is_torgb = idx == arch.num_layers
    critical = idx >= arch.num_layers - arch.num_critical
    kernel = 1 if is_torgb else arch.conv_kernel
    tmp_rate = max(in_rate, out_rate) * (1 if is_torgb else arch.lrelu_upsampling)
    up, down = tmp_rate // in_rate, tmp_rate // out_rate
    if up * in_rate != tmp_rate or down * out_rate != tmp_rate:
        raise CheckpointError(f"{LAYOUT} init_kwargs give layer {idx} sampling rates {in_rate} -> {out_rate} that "
                              f"lrelu_upsampling={arch.lrelu_upsampling} cannot resample by integer factors")
    up_taps = arch.filter_size * up if up > 1 and not is_torgb else 1
    down_taps = arch.filter_size * down if down > 1 and not is_torgb else 1
    pad_total = (out_size - 1) * down + 1 - (in_size + kernel - 1) * up + up_taps + down_taps - 2
    pad_lo = (pad_total + up) // 2          # NVlabs' symmetric interpretation of sample positions
    pad_hi = pad_total - pad_lo
    return LayerGeometry(idx, in_channels, out_channels, in_size, out_size, kernel, up, down,
                         (pad_lo, pad_hi, pad_lo, pad_hi), up_taps, down_taps,
                         arch.use_radial_filters and not critical, is_torgb)


class _Dense(nn.Module):
    """Equalized-learning-rate dense layer: ``act(x @ (weight·lr/√in)ᵀ + bias·lr)``, lrelu with gain √2."""

    def __init__(self, in_features: int, out_features: int, lrelu: bool = False, lr_multiplier: float = 1.0):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(out_features, in_features))
        self.bias = nn.Parameter(torch.zeros(out_features))
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier
        self.lrelu = lrelu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.linear(x, self.weight * self.weight_gain, self.bias * self.bias_gain)
        return F.leaky_relu(x, LRELU_SLOPE) * LRELU_GAIN if self.lrelu else x


def _normalize_2nd_moment(x: torch.Tensor) -> torch.Tensor:
    return x * (x.square().mean(dim=1, keepdim=True) + 1e-8).rsqrt()


class _FourierInput(nn.Module):
    """Fourier features at the file's frequencies and phases, rotated and translated by an affine of w."""

    def __init__(self, w_dim: int, geo: InputGeometry):
        super().__init__()
        self.geo = geo
        self.affine = _Dense(w_dim, 4)
        self.mix = nn.Parameter(torch.zeros(geo.channels, geo.channels))
        self.register_buffer("transform", torch.eye(3))
        self.register_buffer("freqs", torch.zeros(geo.channels, 2))
        self.register_buffer("phases", torch.zeros(geo.channels))

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        features = self._features(self.affine(w))
        return (features @ (self.mix / math.sqrt(self.geo.channels)).t()).permute(0, 3, 1, 2)

    def _features(self, t: torch.Tensor) -> torch.Tensor:
        """(B, 4) rotation-translation parameters -> (B, size, size, channels) damped sines."""
        geo = self.geo
        t = t / t[:, :2].norm(dim=1, keepdim=True)             # (cos, sin, tx, ty), rotation normalised
        cos, sin, tx, ty = t.unbind(dim=1)
        zero, one = torch.zeros_like(cos), torch.ones_like(cos)
        rotate = torch.stack([cos, -sin, zero, sin, cos, zero, zero, zero, one], dim=1).reshape(-1, 3, 3)
        translate = torch.stack([one, zero, -tx, zero, one, -ty, zero, zero, one], dim=1).reshape(-1, 3, 3)
        transforms = rotate @ translate @ self.transform.unsqueeze(0)
        phases = self.phases.unsqueeze(0) + (self.freqs.unsqueeze(0) @ transforms[:, :2, 2:]).squeeze(2)
        freqs = self.freqs.unsqueeze(0) @ transforms[:, :2, :2]                               # (B, C, 2)
        amplitudes = (1 - (freqs.norm(dim=2) - geo.bandwidth) / (geo.sampling_rate / 2 - geo.bandwidth)).clamp(0, 1)
        coords = (torch.arange(geo.size, device=t.device, dtype=t.dtype) + 0.5 - geo.size / 2) / geo.sampling_rate
        x = coords.reshape(1, 1, -1, 1) * freqs[:, None, None, :, 0]                          # (B, 1, W, C)
        y = coords.reshape(1, -1, 1, 1) * freqs[:, None, None, :, 1]                          # (B, H, 1, C)
        return torch.sin((x + y + phases[:, None, None, :]) * (2 * math.pi)) * amplitudes[:, None, None, :]


class _SynthesisLayer(nn.Module):
    """Modulated convolution, then the filtered leaky ReLU (or, for the ToRGB, bias and clamp only)."""

    def __init__(self, w_dim: int, geo: LayerGeometry, conv_clamp: float | None):
        super().__init__()
        self.geo = geo
        self.conv_clamp = conv_clamp
        self.affine = _Dense(w_dim, geo.in_channels)
        self.weight = nn.Parameter(torch.zeros(geo.out_channels, geo.in_channels, geo.conv_kernel, geo.conv_kernel))
        self.bias = nn.Parameter(torch.zeros(geo.out_channels))
        self.register_buffer("magnitude_ema", torch.ones(()))
        self.register_buffer("up_filter", torch.zeros(geo.up_taps) if geo.up_taps > 1 else None)
        down_shape = (geo.down_taps,) * (2 if geo.down_radial else 1)
        self.register_buffer("down_filter", torch.zeros(down_shape) if geo.down_taps > 1 else None)

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        geo = self.geo
        styles = self.affine(w)
        input_gain = self.magnitude_ema.rsqrt()
        if geo.is_torgb:
            scale = styles * (input_gain / math.sqrt(geo.in_channels * geo.conv_kernel ** 2))
            x = F.conv2d(x * scale[:, :, None, None].to(x.dtype), self.weight.to(x.dtype))
            return filtered_lrelu(x, self.bias, None, None, padding=geo.padding, gain=1.0, slope=1.0,
                                  clamp=self.conv_clamp)
        weight = self.weight * self.weight.square().mean(dim=[1, 2, 3], keepdim=True).rsqrt()
        styles = styles * styles.square().mean(dim=1, keepdim=True).rsqrt()
        demod = (styles.square() @ weight.square().sum(dim=[2, 3]).t() + 1e-8).rsqrt()        # (B, out)
        x = x * (styles * input_gain)[:, :, None, None].to(x.dtype)
        x = F.conv2d(x, weight.to(x.dtype), padding=geo.conv_kernel - 1) * demod[:, :, None, None].to(x.dtype)
        return filtered_lrelu(x, self.bias, self.up_filter, self.down_filter, up=geo.up, down=geo.down,
                              padding=geo.padding, gain=LRELU_GAIN, slope=LRELU_SLOPE, clamp=self.conv_clamp)


def filtered_lrelu(x: torch.Tensor, bias: torch.Tensor, up_filter: torch.Tensor | None,
                   down_filter: torch.Tensor | None, up: int = 1, down: int = 1,
                   padding: tuple[int, int, int, int] = (0, 0, 0, 0), gain: float = LRELU_GAIN,
                   slope: float = LRELU_SLOPE, clamp: float | None = None) -> torch.Tensor:
    """NVlabs' filtered leaky ReLU, channel by channel, as its reference path defines it.

    Add ``bias``; upsample by inserting ``up - 1`` zeros after each pixel, pad by ``padding`` (x before, x after,
    y before, y after; negative crops) and convolve with ``up_filter`` times ``up**2`` (1-D filters: separable,
    along both axes), keeping the outputs whose footprint lies inside; ``lrelu(·, slope) * gain``, clamped to
    ``[-clamp, clamp]``; convolve with ``down_filter`` (1-D separable or 2-D) and keep every ``down``-th pixel.
    A ``None`` filter is the identity.
    """
    x = _upsample(x + bias.to(x.dtype)[:, None, None], up_filter, up, padding)
    # In place: the upsampled image is the largest tensor of the network, and it is new here.
    if slope != 1:
        x = F.leaky_relu_(x, slope)
    if gain != 1:
        x = x.mul_(gain)
    if clamp is not None:
        x = x.clamp_(-clamp, clamp)
    return _downsample(x, down_filter, down)


def _upsample(x: torch.Tensor, f: torch.Tensor | None, up: int, padding: tuple[int, int, int, int]) -> torch.Tensor:
    """Zero-insertion upsampling, padding and FIR filtering as one strided transposed convolution per axis."""
    if f is None and up == 1:
        return F.pad(x, padding)
    channels, (height, width) = x.shape[1], x.shape[2:]
    taps = f if f is not None else x.new_ones(1)
    if taps.ndim != 1:
        raise ValueError(f"the upsampling filter must be 1-D (separable); got shape {tuple(taps.shape)}")
    k = taps.shape[0]
    taps = (taps * up).to(x.dtype)
    x = F.conv_transpose2d(x, taps.reshape(1, 1, 1, k).expand(channels, 1, 1, k), stride=(1, up), groups=channels)
    x = F.conv_transpose2d(x, taps.reshape(1, 1, k, 1).expand(channels, 1, k, 1), stride=(up, 1), groups=channels)
    # That is the full convolution of the zero-inserted image, (n - 1)·up + k long per axis; output j of the
    # padded valid convolution is its sample j + k - 1 - pad_before (past its end: the trailing zeros, 0).
    px0, px1, py0, py1 = padding
    out_w, out_h = width * up + px0 + px1 - (k - 1), height * up + py0 + py1 - (k - 1)
    skip_x, skip_y = k - 1 - px0, k - 1 - py0
    return F.pad(x, (-skip_x, out_w + skip_x - x.shape[3], -skip_y, out_h + skip_y - x.shape[2]))


def _downsample(x: torch.Tensor, f: torch.Tensor | None, down: int) -> torch.Tensor:
    """FIR filtering (valid convolution) and keeping every ``down``-th pixel, as strided depthwise convolutions."""
    if f is None:
        return x[:, :, ::down, ::down] if down > 1 else x
    channels = x.shape[1]
    taps = f.flip(list(range(f.ndim))).to(x.dtype)      # a convolution, not a correlation
    if taps.ndim == 2:
        return F.conv2d(x, taps[None, None].expand(channels, 1, *taps.shape), stride=down, groups=channels)
    k = taps.shape[0]
    x = F.conv2d(x, taps.reshape(1, 1, 1, k).expand(channels, 1, 1, k), stride=(1, down), groups=channels)
    return F.conv2d(x, taps.reshape(1, 1, k, 1).expand(channels, 1, k, 1), stride=(down, 1), groups=channels)


class StyleGAN3Network(nn.Module):
    """NVlabs' StyleGAN3 generator (configs T and R) as the engine runs it: ``mapping_w`` and ``synthesis``.

    Built empty from a ``StyleGAN3Architecture``; ``from_nvlabs`` fills it from a file's state.
    """

    def __init__(self, arch: StyleGAN3Architecture):
        super().__init__()
        self.arch = arch
        self.z_dim, self.c_dim, self.w_dim = int(arch.z_dim), int(arch.c_dim), int(arch.w_dim)
        self.num_ws = arch.num_ws
        self.img_resolution, self.img_channels = int(arch.img_resolution), int(arch.img_channels)
        self.output_scale = float(arch.output_scale)
        self.has_w_avg = True
        self.embed = _Dense(self.c_dim, self.w_dim) if self.c_dim > 0 else None
        widths = [self.z_dim + (self.w_dim if self.c_dim > 0 else 0)] + [self.w_dim] * arch.mapping_layers
        self.mapping = nn.ModuleList(_Dense(i, o, lrelu=True, lr_multiplier=arch.mapping_lr_multiplier)
                                     for i, o in zip(widths[:-1], widths[1:]))
        self.register_buffer("w_avg", torch.zeros(self.w_dim))
        source, layers = geometry(arch)
        self.input = _FourierInput(self.w_dim, source)
        conv_clamp = None if arch.conv_clamp is None else float(arch.conv_clamp)
        self.layers = nn.ModuleList(_SynthesisLayer(self.w_dim, geo, conv_clamp) for geo in layers)

    def mapping_w(self, z: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        """(B, z_dim) [+ one-hot c (B, c_dim) for a conditional model] -> w (B, w_dim), before truncation."""
        if z.ndim != 2 or z.shape[1] != self.z_dim:
            raise ValueError(f"z must have shape (batch, {self.z_dim}); got {tuple(z.shape)}")
        x = _normalize_2nd_moment(z)
        if self.embed is not None:
            if c is None or c.shape != (z.shape[0], self.c_dim):
                got = "none" if c is None else f"shape {tuple(c.shape)}"
                raise ValueError(f"c must have shape ({z.shape[0]}, {self.c_dim}) for this conditional model; "
                                 f"got {got}")
            x = torch.cat([x, _normalize_2nd_moment(self.embed(c.to(x.dtype)))], dim=1)
        elif c is not None and c.numel():
            raise ValueError(f"c must be None for this unconditional model (c_dim=0); got shape {tuple(c.shape)}")
        for layer in self.mapping:
            x = layer(x)
        return x

    def synthesis(self, ws: torch.Tensor, noise: str = "const",
                  generator: torch.Generator | None = None) -> torch.Tensor:
        """ws (B, num_ws, w_dim) -> raw images (B, img_channels, R, R), not clamped.

        StyleGAN3 has no noise inputs: ``noise`` (one of "const", "random", "none") and ``generator`` are
        accepted for the common interface and change nothing.
        """
        if noise not in NOISE_MODES:
            raise ValueError(f"noise must be one of {', '.join(NOISE_MODES)}; got {noise!r}")
        if ws.ndim != 3 or ws.shape[1:] != (self.num_ws, self.w_dim):
            raise ValueError(f"ws must have shape (batch, {self.num_ws}, {self.w_dim}); got {tuple(ws.shape)}")
        # Channels-last all through: depthwise FIR convolutions run many times faster in it on CPU (oneDNN).
        x = self.input(ws[:, 0]).contiguous(memory_format=torch.channels_last)
        for i, layer in enumerate(self.layers):
            x = layer(x, ws[:, i + 1])
        return (x * self.output_scale if self.output_scale != 1 else x).contiguous()


def nvlabs_keys(arch: StyleGAN3Architecture) -> dict[str, tuple[str, tuple[int, ...]]]:
    """{NVlabs state key: (the engine's parameter or buffer name, expected shape)} for ``arch``."""
    source, layers = geometry(arch)
    keys: dict[str, tuple[str, tuple[int, ...]]] = {}
    if arch.c_dim > 0:
        keys["mapping.embed.weight"] = ("embed.weight", (arch.w_dim, arch.c_dim))
        keys["mapping.embed.bias"] = ("embed.bias", (arch.w_dim,))
    widths = [arch.z_dim + (arch.w_dim if arch.c_dim > 0 else 0)] + [arch.w_dim] * arch.mapping_layers
    for i, (fan_in, fan_out) in enumerate(zip(widths[:-1], widths[1:])):
        keys[f"mapping.fc{i}.weight"] = (f"mapping.{i}.weight", (fan_out, fan_in))
        keys[f"mapping.fc{i}.bias"] = (f"mapping.{i}.bias", (fan_out,))
    keys["mapping.w_avg"] = ("w_avg", (arch.w_dim,))
    c = source.channels
    keys.update({"synthesis.input.weight": ("input.mix", (c, c)),
                 "synthesis.input.affine.weight": ("input.affine.weight", (4, arch.w_dim)),
                 "synthesis.input.affine.bias": ("input.affine.bias", (4,)),
                 "synthesis.input.transform": ("input.transform", (3, 3)),
                 "synthesis.input.freqs": ("input.freqs", (c, 2)),
                 "synthesis.input.phases": ("input.phases", (c,))})
    for i, geo in enumerate(layers):
        src, dst = f"synthesis.{geo.name}", f"layers.{i}"
        keys[f"{src}.weight"] = (f"{dst}.weight", (geo.out_channels, geo.in_channels, geo.conv_kernel,
                                                   geo.conv_kernel))
        keys[f"{src}.bias"] = (f"{dst}.bias", (geo.out_channels,))
        keys[f"{src}.magnitude_ema"] = (f"{dst}.magnitude_ema", ())
        if geo.up_taps > 1:
            keys[f"{src}.up_filter"] = (f"{dst}.up_filter", (geo.up_taps,))
        if geo.down_taps > 1:
            keys[f"{src}.down_filter"] = (f"{dst}.down_filter", (geo.down_taps,) * (2 if geo.down_radial else 1))
        keys[f"{src}.affine.weight"] = (f"{dst}.affine.weight", (geo.in_channels, arch.w_dim))
        keys[f"{src}.affine.bias"] = (f"{dst}.affine.bias", (geo.in_channels,))
    return keys


def from_nvlabs(init_kwargs: Mapping, state: Mapping[str, torch.Tensor]) -> StyleGAN3Network:
    """The engine's network for NVlabs' stylegan3 ``G_ema``: ``init_kwargs`` its constructor kwargs (plain dicts),
    ``state`` its ``state_dict()``. Every tensor is loaded, strictly; the network is returned in eval mode."""
    arch = StyleGAN3Architecture.from_init_kwargs(init_kwargs)
    expected = nvlabs_keys(arch)
    for key in state:
        if key not in expected:
            raise CheckpointError(f"{LAYOUT} state has unexpected key {key!r} (not in the network its init_kwargs "
                                  f"describe: {_describe(arch)})")
    net = StyleGAN3Network(arch)
    own = net.state_dict()
    loaded = {}
    for key, (name, shape) in expected.items():
        if key not in state:
            raise CheckpointError(f"{LAYOUT} state lacks {key!r} (expected by the network its init_kwargs "
                                  f"describe: {_describe(arch)})")
        tensor = state[key]
        if not isinstance(tensor, torch.Tensor) or tuple(tensor.shape) != shape:
            got = tuple(tensor.shape) if isinstance(tensor, torch.Tensor) else type(tensor).__name__
            raise CheckpointError(f"{LAYOUT} state key {key!r} has shape {got}; the network its init_kwargs "
                                  f"describe ({_describe(arch)}) expects {shape}")
        loaded[name] = tensor.detach().to(own[name].dtype)
    net.load_state_dict(loaded, strict=True)
    return net.eval()


def _describe(arch: StyleGAN3Architecture) -> str:
    config = "R" if arch.conv_kernel == 1 and arch.use_radial_filters else "T" if arch.conv_kernel == 3 else "custom"
    return (f"config {config}, {arch.img_resolution} px, {arch.num_layers} layers, channel_base={arch.channel_base}, "
            f"channel_max={arch.channel_max}")
