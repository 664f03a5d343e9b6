"""The engine's BigGAN-deep generator, built from huggingface pytorch-pretrained-BigGAN files.

``from_huggingface(config, state)`` takes the parsed ``config.json`` (``BigGANConfig`` fields) and the state dict of
``pytorch_model.bin`` and returns a ``BigGANNetwork`` in eval mode computing the same images as that package's
``BigGAN(z, class_vector, truncation)``:

* the condition vector is ``[z, embeddings(class_vector)]`` (the class embedding is a bias-free linear map of the
  class vector, so one-hot vectors and mixtures of classes both work);
* a linear layer maps it to a 4x4 map with ``16 * channel_width`` channels (stored in TensorFlow's (h, w, c) order);
* residual bottleneck blocks (``config.layers``: (upsample?, in, out) channel multipliers), each four conditional
  batch norms + ReLU + convs (1x1, 3x3, 3x3, 1x1), nearest-neighbour upsampling inside the block and on the skip
  path, the skip keeping the first half of its channels where the block halves them; self-attention (no softmax
  scaling, 2x2 max-pooled keys and values, gain ``gamma``) before block ``attention_layer_position``;
* a final batch norm + ReLU, a 3x3 conv whose first three channels are the image, and tanh. Images are not clamped.

Two steps are computed differently with the same sums: each upsampling block's nearest upsampling + 3x3 conv runs
as four 2x2 convolutions of the low-resolution map (``upsample_conv3x3``), and only the three image channels of the
final conv are computed.

Every batch norm uses stored statistics, one row per truncation ψ on a grid of ``n_stats`` values in [0, 1]; between
grid points the reference blends the two neighbouring rows, weighting the *lower* one by the fractional part of
ψ·(n_stats-1). That is what the published weights were converted with, so it is reproduced exactly.

Spectral norm is resolved once at load time, exactly as ``torch.nn.utils.spectral_norm`` does in eval mode: the
file stores ``W = <name>.weight_orig`` with ``<name>.weight_u`` and ``<name>.weight_v``, and the layer uses
``W / (u · (W_mat v))`` with ``W_mat = W.reshape(out, -1)``. Modules here carry the file's names (``gen_z``,
``layers.N.bn_0.scale``, ``conv_to_rgb``...; the file prefixes all but ``embeddings`` with ``generator.``), and
hold the effective weights under ``weight``.
"""
from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from engine.models.checkpoints import CheckpointError

LAYOUT = "huggingface pytorch-pretrained-BigGAN layout"
# BigGANConfig's defaults (the 128x128 model); the reference fills fields missing from config.json with these.
DEFAULT_CONFIG: dict[str, Any] = {
    "output_dim": 128, "z_dim": 128, "class_embed_dim": 128, "channel_width": 128, "num_classes": 1000,
    "layers": [[False, 16, 16], [True, 16, 16], [False, 16, 16], [True, 16, 8], [False, 8, 8], [True, 8, 4],
               [False, 4, 4], [True, 4, 2], [False, 2, 2], [True, 2, 1]],
    "attention_layer_position": 8, "eps": 1e-4, "n_stats": 51,
}
IMG_CHANNELS = 3

Layers = tuple[tuple[bool, int, int], ...]


def stats_at(means: torch.Tensor, variances: torch.Tensor, truncation: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The batch-norm statistics (mean, variance) stored for ``truncation``, rows (n_stats, C) -> (C,) each.

    ψ falls between grid rows ``i`` and ``i + 1`` with fractional part ``f``; the reference returns
    ``row[i] * f + row[i + 1] * (1 - f)`` (and ``row[i]`` exactly on a grid point). At the top of the grid, where the
    reference would index past its last row, the last row is used.
    """
    n_stats = means.shape[0]
    coef, start = math.modf(truncation / (1.0 / (n_stats - 1)))
    start = int(start)
    if coef == 0.0:
        return means[start], variances[start]
    upper = min(start + 1, n_stats - 1)
    return (means[start] * coef + means[upper] * (1 - coef),
            variances[start] * coef + variances[upper] * (1 - coef))


def _normalize_relu(x: torch.Tensor, gain: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """relu(x * gain + shift) with per-(sample, channel) gain and shift (B or 1, C), in x's dtype."""
    gain = gain.to(x.dtype)[..., None, None]
    shift = shift.to(x.dtype)[..., None, None]
    return torch.addcmul(shift, x, gain).relu_()


class ConditionalBatchNorm(nn.Module):
    """Batch norm with stored per-ψ statistics and a class/latent-conditioned gain ``1 + scale(c)`` and offset
    ``offset(c)``, followed by ReLU (the reference always applies one next)."""

    def __init__(self, num_features: int, condition_dim: int, n_stats: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.scale = nn.Linear(condition_dim, num_features, bias=False)
        self.offset = nn.Linear(condition_dim, num_features, bias=False)
        self.register_buffer("running_means", torch.zeros(n_stats, num_features))
        self.register_buffer("running_vars", torch.ones(n_stats, num_features))

    def forward(self, x: torch.Tensor, condition: torch.Tensor, truncation: float) -> torch.Tensor:
        mean, var = stats_at(self.running_means, self.running_vars, truncation)
        gain = (1 + self.scale(condition).float()) * torch.rsqrt(var.float() + self.eps)
        shift = self.offset(condition).float() - mean.float() * gain
        return _normalize_relu(x, gain, shift)


class BatchNorm(nn.Module):
    """The final, unconditional batch norm (stored per-ψ statistics, affine ``weight``/``bias``), then ReLU."""

    def __init__(self, num_features: int, n_stats: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))
        self.register_buffer("running_means", torch.zeros(n_stats, num_features))
        self.register_buffer("running_vars", torch.ones(n_stats, num_features))

    def forward(self, x: torch.Tensor, truncation: float) -> torch.Tensor:
        mean, var = stats_at(self.running_means, self.running_vars, truncation)
        gain = self.weight.float() * torch.rsqrt(var.float() + self.eps)
        shift = self.bias.float() - mean.float() * gain
        return _normalize_relu(x, gain[None], shift[None])


class SelfAttention(nn.Module):
    """SAGAN self-attention: queries at every pixel, keys and values max-pooled 2x2, unscaled softmax,
    ``x + gamma * o_conv(attention)``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.snconv1x1_theta = nn.Conv2d(channels, channels // 8, 1, bias=False)
        self.snconv1x1_phi = nn.Conv2d(channels, channels // 8, 1, bias=False)
        self.snconv1x1_g = nn.Conv2d(channels, channels // 2, 1, bias=False)
        self.snconv1x1_o_conv = nn.Conv2d(channels // 2, channels, 1, bias=False)
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        query = self.snconv1x1_theta(x).flatten(2).transpose(1, 2)                     # (B, hw, c/8)
        key = F.max_pool2d(self.snconv1x1_phi(x), 2).flatten(2).transpose(1, 2)        # (B, hw/4, c/8)
        value = F.max_pool2d(self.snconv1x1_g(x), 2).flatten(2).transpose(1, 2)        # (B, hw/4, c/2)
        attention = torch.softmax(torch.bmm(query, key.transpose(1, 2)), dim=-1)       # (B, hw, hw/4)
        attended = torch.bmm(attention, value).transpose(1, 2).reshape(b, c // 2, h, w)
        return x + self.gamma * self.snconv1x1_o_conv(attended)


class GenBlock(nn.Module):
    """BigGAN-deep's residual bottleneck block: (BN-ReLU-conv) x 4 with 1x1, 3x3, 3x3, 1x1 kernels and
    ``in // 4`` middle channels, optional 2x nearest upsampling before the first 3x3 conv and on the skip path."""

    def __init__(self, in_channels: int, out_channels: int, condition_dim: int, upsample: bool, n_stats: int,
                 eps: float) -> None:
        super().__init__()
        middle = in_channels // 4
        self.upsample = upsample
        self.drop_channels = in_channels != out_channels
        self.bn_0 = ConditionalBatchNorm(in_channels, condition_dim, n_stats, eps)
        self.conv_0 = nn.Conv2d(in_channels, middle, 1)
        self.bn_1 = ConditionalBatchNorm(middle, condition_dim, n_stats, eps)
        self.conv_1 = nn.Conv2d(middle, middle, 3, padding=1)
        self.bn_2 = ConditionalBatchNorm(middle, condition_dim, n_stats, eps)
        self.conv_2 = nn.Conv2d(middle, middle, 3, padding=1)
        self.bn_3 = ConditionalBatchNorm(middle, condition_dim, n_stats, eps)
        self.conv_3 = nn.Conv2d(middle, out_channels, 1)

    def forward(self, x: torch.Tensor, condition: torch.Tensor, truncation: float) -> torch.Tensor:
        h = self.conv_0(self.bn_0(x, condition, truncation))
        h = self.bn_1(h, condition, truncation)
        h = upsample_conv3x3(h, self.conv_1.weight, self.conv_1.bias) if self.upsample else self.conv_1(h)
        h = self.conv_2(self.bn_2(h, condition, truncation))
        h = self.conv_3(self.bn_3(h, condition, truncation))
        skip = x[:, : x.shape[1] // 2] if self.drop_channels else x
        return add_upsampled(h, skip) if self.upsample else h + skip


def _phase_kernels(weight: torch.Tensor) -> torch.Tensor:
    """(out, in, 3, 3) -> (4 * out, in, 2, 2): for each output phase (a, b) of a 2x nearest upsampling, the 2x2
    kernel over the low-resolution input that the 3x3 kernel amounts to (taps landing on one input pixel summed)."""
    def fold(w: torch.Tensor, dim: int, phase: int) -> torch.Tensor:
        t0, t1, t2 = w.unbind(dim)
        return torch.stack((t0, t1 + t2) if phase == 0 else (t0 + t1, t2), dim)

    return torch.cat([fold(fold(weight, 2, a), 3, b) for a in (0, 1) for b in (0, 1)])


def upsample_conv3x3(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``conv2d(interpolate(x, scale_factor=2, mode="nearest"), weight, bias, padding=1)`` for a 3x3 ``weight``,
    computed without the upsampled input: output pixel (2i + a, 2j + b) only sees input rows i - 1 + a, i + a and
    columns j - 1 + b, j + b, so each of the four phases is a 2x2 conv of ``x`` (2.25x fewer multiply-adds)."""
    batch, _, height, width = x.shape
    out_channels = weight.shape[0]
    phases = F.conv2d(F.pad(x, (1, 1, 1, 1)), _phase_kernels(weight), None if bias is None else bias.repeat(4))
    phases = phases.reshape(batch, 2, 2, out_channels, height + 1, width + 1)
    out = phases.new_empty(batch, out_channels, height, 2, width, 2)
    for a in (0, 1):
        for b in (0, 1):
            out[:, :, :, a, :, b] = phases[:, a, b, :, a:a + height, b:b + width]
    return out.view(batch, out_channels, 2 * height, 2 * width)


def add_upsampled(h: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
    """``h + interpolate(skip, scale_factor=2, mode="nearest")`` without materialising the upsampled ``skip``."""
    batch, channels, height, width = skip.shape
    grid = h.reshape(batch, channels, height, 2, width, 2) + skip[:, :, :, None, :, None]
    return grid.view(batch, channels, 2 * height, 2 * width)


class BigGANNetwork(nn.Module):
    """BigGAN-deep: (z, class vector, ψ) -> images (B, 3, R, R) after tanh, not clamped.

    The constructor builds the architecture with default-initialised weights; ``from_huggingface`` builds it from a
    file's config and loads the file's weights. ``layers`` are (upsample?, in, out) channel multipliers of
    ``channel_width`` as in ``BigGANConfig``; self-attention runs before block ``attention_layer_position`` (none if
    that is not a block index).
    """

    img_channels = IMG_CHANNELS

    def __init__(self, z_dim: int = 128, num_classes: int = 1000, channel_width: int = 128,
                 layers: Sequence[Sequence] = tuple(map(tuple, DEFAULT_CONFIG["layers"])),
                 attention_layer_position: int = 8, eps: float = 1e-4, n_stats: int = 51) -> None:
        super().__init__()
        arch = _check_architecture({"z_dim": z_dim, "num_classes": num_classes, "channel_width": channel_width,
                                    "layers": layers, "attention_layer_position": attention_layer_position,
                                    "eps": eps, "n_stats": n_stats}, source="BigGANNetwork", exc=ValueError)
        self.z_dim, self.num_classes, self.channel_width = z_dim, num_classes, channel_width
        self.layer_spec: Layers = arch["layers"]
        self.img_resolution = 4 * 2 ** sum(up for up, _, _ in self.layer_spec)
        condition_dim = 2 * z_dim
        self.embeddings = nn.Linear(num_classes, z_dim, bias=False)
        self.gen_z = nn.Linear(condition_dim, 4 * 4 * 16 * channel_width)
        blocks: list[nn.Module] = []
        for i, (up, c_in, c_out) in enumerate(self.layer_spec):
            if i == attention_layer_position:
                blocks.append(SelfAttention(channel_width * c_in))
            blocks.append(GenBlock(channel_width * c_in, channel_width * c_out, condition_dim, up, n_stats, eps))
        self.layers = nn.ModuleList(blocks)
        self.bn = BatchNorm(channel_width, n_stats, eps)
        # The file's conv has channel_width outputs; only the first three are the image.
        self.conv_to_rgb = nn.Conv2d(channel_width, channel_width, 3, padding=1)
        self.eval()

    def forward(self, z: torch.Tensor, class_vector: torch.Tensor, truncation: float) -> torch.Tensor:
        """z (B, z_dim), class_vector (B, num_classes) (one-hot or any mixture), ψ in (0, 1] -> (B, 3, R, R)."""
        self._check_inputs(z, class_vector, truncation)
        dtype = self.embeddings.weight.dtype
        z, class_vector = z.to(dtype), class_vector.to(dtype)
        embedding = self.embeddings(class_vector)
        condition = torch.cat((z, embedding.to(z.dtype)), dim=1)       # autocast may give a lower-precision embedding
        x = self.gen_z(condition)
        x = x.view(-1, 4, 4, 16 * self.channel_width).permute(0, 3, 1, 2).contiguous()   # TF's (h, w, c) order
        for layer in self.layers:
            x = layer(x, condition, truncation) if isinstance(layer, GenBlock) else layer(x)
        x = self.bn(x, truncation)
        rgb = F.conv2d(x, self.conv_to_rgb.weight[:IMG_CHANNELS], self.conv_to_rgb.bias[:IMG_CHANNELS], padding=1)
        return torch.tanh(rgb)

    def _check_inputs(self, z: torch.Tensor, class_vector: torch.Tensor, truncation: float) -> None:
        if z.ndim != 2 or z.shape[1] != self.z_dim:
            raise ValueError(f"z must have shape (batch, {self.z_dim}); got {tuple(z.shape)}")
        if class_vector.ndim != 2 or class_vector.shape != (z.shape[0], self.num_classes):
            raise ValueError(f"class_vector must have shape ({z.shape[0]}, {self.num_classes}) (batch, num_classes); "
                             f"got {tuple(class_vector.shape)}")
        if isinstance(truncation, bool) or not isinstance(truncation, numbers.Real) or not 0 < truncation <= 1:
            raise ValueError(f"truncation must be a number in (0, 1]; got {truncation!r}")

    def describe(self) -> str:
        """A short name of the architecture, for messages: 'BigGAN-deep 128px, channel_width 128, 10 blocks'."""
        return f"BigGAN-deep {self.img_resolution}px, channel_width {self.channel_width}, {len(self.layer_spec)} blocks"


# ---------------------------------------------------------------------------------------------------------------
# config.json


def _positive_int(config: Mapping, name: str, exc: type[Exception], source: str, least: int = 1) -> int:
    value = config[name]
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise exc(f"{source}: {name} must be an integer >= {least}; got {value!r}")
    return value


def _check_layers(value: object, channel_width: int, exc: type[Exception], source: str) -> Layers:
    """The layer list as (bool, int, int) triples, refusing one the reference could not run."""
    if not isinstance(value, Sequence) or isinstance(value, str) or not value:
        raise exc(f"{source}: layers must be a non-empty list of [upsample, in, out]; got {value!r}")
    layers = []
    for i, layer in enumerate(value):
        if (not isinstance(layer, Sequence) or isinstance(layer, str) or len(layer) != 3
                or layer[0] not in (True, False) or any(isinstance(c, bool) or not isinstance(c, int) or c < 1
                                                        for c in layer[1:])):
            raise exc(f"{source}: layers[{i}] must be [upsample (bool), in (int >= 1), out (int >= 1)]; got {layer!r}")
        layers.append((bool(layer[0]), int(layer[1]), int(layer[2])))
    expected_in = 16
    for i, (_, c_in, c_out) in enumerate(layers):
        if c_in != expected_in:
            raise exc(f"{source}: layers[{i}] takes {c_in} x channel_width channels but receives {expected_in} "
                      "(the first block takes 16, each next one what the previous gives)")
        if c_out not in (c_in, c_in // 2) or (c_out != c_in and c_in % 2) or (channel_width * c_in) // 4 < 1:
            raise exc(f"{source}: layers[{i}] = {list(value[i])} must keep or halve its channels "
                      "(in, or in / 2 out) and have at least 4 x channel_width input channels")
        expected_in = c_out
    if expected_in != 1:
        raise exc(f"{source}: the last layer must give 1 x channel_width channels (the final batch norm's); "
                  f"got {expected_in}")
    return tuple(layers)


def _check_architecture(config: Mapping, source: str, exc: type[Exception]) -> dict[str, Any]:
    arch: dict[str, Any] = {name: _positive_int(config, name, exc, source)
                            for name in ("z_dim", "num_classes", "channel_width")}
    arch["n_stats"] = _positive_int(config, "n_stats", exc, source, least=2)
    position = config["attention_layer_position"]
    if isinstance(position, bool) or not isinstance(position, int):
        raise exc(f"{source}: attention_layer_position must be an integer; got {position!r}")
    arch["attention_layer_position"] = position
    eps = config["eps"]
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not eps > 0:
        raise exc(f"{source}: eps must be a positive number; got {eps!r}")
    arch["eps"] = float(eps)
    arch["layers"] = _check_layers(config["layers"], arch["channel_width"], exc, source)
    if 0 <= position < len(arch["layers"]) and (arch["channel_width"] * arch["layers"][position][1]) // 8 < 1:
        raise exc(f"{source}: the self-attention before layers[{position}] needs at least 8 input channels")
    return arch


def parse_config(config: Mapping) -> dict[str, Any]:
    """``BigGANNetwork`` keyword arguments from a parsed config.json, refusing (``CheckpointError``, one line) a
    field the reference could not build or run.

    Fields missing from ``config`` take ``BigGANConfig``'s defaults (``DEFAULT_CONFIG``), as the reference's
    ``from_dict`` does; ``output_dim``, when given, must be the resolution ``layers`` produce; ``class_embed_dim`` is
    ignored, as in the reference, whose class embedding is ``z_dim`` wide.
    """
    if not isinstance(config, Mapping):
        raise CheckpointError(f"config.json must hold an object of BigGANConfig fields; got a {type(config).__name__}")
    merged = {**DEFAULT_CONFIG, **config}
    arch = _check_architecture(merged, "config.json", CheckpointError)
    resolution = 4 * 2 ** sum(up for up, _, _ in arch["layers"])
    if merged["output_dim"] != resolution:
        raise CheckpointError(f"config.json: output_dim {merged['output_dim']!r} disagrees with its layers, which "
                              f"upsample 4x4 to {resolution}x{resolution}")
    return arch


# ---------------------------------------------------------------------------------------------------------------
# pytorch_model.bin


def _spectral_norm_modules(net: BigGANNetwork) -> dict[str, nn.Module]:
    """The network's modules the file stores spectral-normalised: every linear and conv but the class embedding."""
    return {name: module for name, module in net.named_modules()
            if isinstance(module, (nn.Linear, nn.Conv2d)) and name != "embeddings"}


def _file_key(name: str) -> str:
    return name if name.startswith("embeddings.") else f"generator.{name}"


def file_layout(net: BigGANNetwork) -> dict[str, tuple[int, ...]]:
    """{key: shape} of the state dict huggingface pytorch-pretrained-BigGAN saves for ``net``'s architecture."""
    normalized = _spectral_norm_modules(net)
    layout: dict[str, tuple[int, ...]] = {}
    for name, tensor in net.state_dict().items():
        module, _, leaf = name.rpartition(".")
        if module in normalized and leaf == "weight":
            shape = tuple(tensor.shape)
            layout[_file_key(f"{module}.weight_orig")] = shape
            layout[_file_key(f"{module}.weight_u")] = (shape[0],)
            layout[_file_key(f"{module}.weight_v")] = (math.prod(shape[1:]),)
        else:
            layout[_file_key(name)] = tuple(tensor.shape)
    return layout


def _check_state(state: Mapping[str, torch.Tensor], layout: Mapping[str, tuple[int, ...]], what: str) -> None:
    """Refuse (one line) a state dict whose keys or shapes differ from ``layout``."""
    missing = [key for key in layout if key not in state]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise CheckpointError(f"BigGAN state dict is missing {missing[0]}{more}, which the {LAYOUT} of {what} has")
    unexpected = [key for key in state if key not in layout]
    if unexpected:
        more = f" (and {len(unexpected) - 1} more)" if len(unexpected) > 1 else ""
        raise CheckpointError(f"BigGAN state dict has unexpected key {unexpected[0]}{more}, which the {LAYOUT} of "
                              f"{what} does not have")
    for key, shape in layout.items():
        value = state[key]
        if not isinstance(value, torch.Tensor) or not value.is_floating_point():
            raise CheckpointError(f"BigGAN state dict entry {key} is not a floating-point tensor ({LAYOUT})")
        if tuple(value.shape) != shape:
            raise CheckpointError(f"BigGAN state dict entry {key} has shape {tuple(value.shape)}; the {LAYOUT} of "
                                  f"{what} has {shape}")


def _spectral_normalized(state: Mapping[str, torch.Tensor], key: str, dtype: torch.dtype) -> torch.Tensor:
    """``weight_orig / sigma`` with sigma = u · (W_mat v), as ``torch.nn.utils.spectral_norm`` computes in eval."""
    weight = state[f"{key}.weight_orig"].to(dtype)
    u, v = state[f"{key}.weight_u"].to(dtype), state[f"{key}.weight_v"].to(dtype)
    sigma = torch.dot(u, torch.mv(weight.reshape(weight.shape[0], -1), v))
    if not torch.isfinite(sigma) or sigma == 0:
        raise CheckpointError(f"BigGAN state dict entry {key}: its spectral norm estimate u·(W v) is {sigma.item()} "
                              "(weight_u / weight_v unusable)")
    return weight / sigma


@torch.no_grad()
def _load(net: BigGANNetwork, state: Mapping[str, torch.Tensor]) -> None:
    normalized = _spectral_norm_modules(net)
    for name, tensor in net.state_dict(keep_vars=True).items():
        module, _, leaf = name.rpartition(".")
        if module in normalized and leaf == "weight":
            value = _spectral_normalized(state, _file_key(module), tensor.dtype)
        else:
            value = state[_file_key(name)]
        tensor.copy_(value)


def from_huggingface(config: Mapping, state: Mapping[str, torch.Tensor]) -> BigGANNetwork:
    """A ``BigGANNetwork`` in eval mode from huggingface pytorch-pretrained-BigGAN's ``config.json`` (parsed) and
    ``pytorch_model.bin`` (its state dict, as ``BigGAN.state_dict()`` gives it).

    Loading is strict: a missing or unexpected key, a shape that is not the config's, or a non-float entry raises
    ``CheckpointError`` (one line naming the key). Spectral norm is resolved here (see the module docstring).
    """
    arch = parse_config(config)
    if not isinstance(state, Mapping):
        raise CheckpointError(f"BigGAN weights must be a state dict; got a {type(state).__name__}")
    with torch.device("meta"):
        net = BigGANNetwork(**arch)
    _check_state(state, file_layout(net), f"config.json's {net.describe()}")
    net = net.to_empty(device="cpu")
    _load(net, state)
    return net.eval()
