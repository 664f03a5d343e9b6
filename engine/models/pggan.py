"""PGGAN, the engine's own network, and the converter from genforce's checkpoint layout.

genforce's checkpoints (InterFaceGAN's and SeFa's ``pggan_celebahq1024``, the LSUN ``pggan_bedroom256``,
``pggan_church256``, ... models) hold the state dict of genforce's ``PGGANGenerator``
(``models/pggan_generator.py``); ``from_genforce`` builds a ``PGGANNetwork`` with the same math from it:

* z is pixel-normalised (x / √(mean(x²) + 1e-8) over the channels), as genforce does before the first layer;
* every layer pixel-normalises its input, then applies a weight-scaled ("equalized") convolution, weight ·
  gain/√fan_in with gain √2 (1 for the ToRGB layers), plus bias, then leaky ReLU(0.2) (none for ToRGB);
* the first layer maps z to a 4×4 map: a 4×4 convolution of the 1×1 code with padding 3 (computed here as the
  equivalent dense layer); each later resolution doubles the size with a nearest 2× upsample followed by a 3×3
  convolution (computed here as one stride-2 transposed convolution with the equivalent 4×4 kernel), then a
  second 3×3 convolution;
* the image is the last resolution's 1×1 ToRGB, with no final activation unless ``final_tanh``: the network
  does not clamp and its values can leave [-1, 1] (genforce clips only when it converts images to pixels).

The stored level of detail (``lod``, a progressive-training buffer; 0 in every released model) is honoured as
genforce's forward honours it: at an integer lod k the image is the ToRGB of the resolution k steps below the
last, upsampled (nearest) to full size; between two integers it is the linear blend of the two neighbouring
resolutions.
"""
from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from engine.models.checkpoint_errors import state_size
from engine.models.checkpoints import CheckpointError

LAYOUT = "genforce PGGAN"
_LOD_KEY = "lod"
_INIT_RES = 4
_GAIN = math.sqrt(2.0)
_LRELU_SLOPE = 0.2
_EPS = 1e-8


def pixel_norm(x: torch.Tensor) -> torch.Tensor:
    """x / √(mean over the channels (dim 1) of x² + 1e-8): PGGAN's pixel-wise feature normalisation."""
    return x / torch.sqrt(x.square().mean(dim=1, keepdim=True) + _EPS)


def up_conv_kernel(weight: torch.Tensor) -> torch.Tensor:
    """(out, in, 3, 3) -> the (in, out, 4, 4) kernel K for which ``conv_transpose2d(x, K, stride=2, padding=1)``
    equals ``conv2d(nearest 2× upsample of x, weight, padding=1)``: the sum of the flipped kernel's four one-pixel
    shifts (PGGAN's fused upscale2d_conv2d). The two agree to rounding; the transposed form does 4/9 of the
    multiplications."""
    w = F.pad(weight.flip(2, 3).transpose(0, 1), (1, 1, 1, 1))
    return w[:, :, 1:, 1:] + w[:, :, :-1, 1:] + w[:, :, 1:, :-1] + w[:, :, :-1, :-1]


class _FirstLayer(nn.Module):
    """z (B, z_dim) -> (B, out, 4, 4): pixel norm, then genforce's 4×4 convolution of the 1×1 code with padding
    3, which is a dense layer whose output (o, i, j) reads the kernel at (o, :, 3 - i, 3 - j); leaky ReLU.

    ``weight`` keeps genforce's (out, z_dim, 4, 4) conv layout.
    """

    def __init__(self, z_dim: int, out_channels: int):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_channels, z_dim, _INIT_RES, _INIT_RES))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.weight_gain = _GAIN / math.sqrt(z_dim * _INIT_RES * _INIT_RES)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        out_channels, z_dim = self.weight.shape[:2]
        matrix = (self.weight * self.weight_gain).flip(2, 3).permute(0, 2, 3, 1).reshape(-1, z_dim)
        x = F.linear(pixel_norm(z), matrix).view(-1, out_channels, _INIT_RES, _INIT_RES)
        return F.leaky_relu(x + self.bias[:, None, None].to(x.dtype), _LRELU_SLOPE)


class _Conv(nn.Module):
    """Pixel norm of the input, [nearest 2× upsample], weight-scaled k×k convolution (padding k // 2) + bias,
    [leaky ReLU 0.2]. ``weight`` is (out, in, k, k), the layout of an unfused genforce layer."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, *, up: bool = False,
                 gain: float = _GAIN, activate: bool = True):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel, kernel))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.weight_gain = gain / math.sqrt(in_channels * kernel * kernel)
        self.up, self.activate = up, activate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = pixel_norm(x)
        weight = self.weight * self.weight_gain
        if self.up:
            x = F.conv_transpose2d(x, up_conv_kernel(weight), self.bias, stride=2, padding=1)
        else:
            x = F.conv2d(x, weight, self.bias, padding=weight.shape[-1] // 2)
        return F.leaky_relu(x, _LRELU_SLOPE) if self.activate else x


def _upsample(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, scale_factor=2.0, mode="nearest")


def lod_problem(lod: float, levels: int) -> str | None:
    """Why ``lod`` is not a level of detail of a network with ``levels`` resolutions (None if it is one)."""
    if not math.isfinite(lod) or not 0 <= lod <= levels - 1:
        return f"lod must be in [0, {levels - 1}] for {levels} resolutions; got {lod:g}"
    return None


class PGGANNetwork(nn.Module):
    """PGGAN's generator: z (B, z_dim) -> raw images (B, img_channels, R, R), R = 4 · 2^(len(channels) - 1).

    ``channels`` are the feature maps at 4, 8, ..., R px. Layers ``layers[i]`` and ``to_rgbs[k]`` hold genforce's
    ``layer{i}`` and ``output{k}``: ``layers[0]`` maps z to 4×4 and ``layers[1]`` is the 4 px 3×3 convolution;
    ``layers[2k]`` and ``layers[2k + 1]`` are the upsampling and the plain 3×3 convolution of resolution
    4 · 2^k (k ≥ 1); ``to_rgbs[k]`` is resolution 4 · 2^k's ToRGB. Weights are N(0, 1) at construction (weight
    scaling happens at run time), biases 0. The dtype and device are those of the parameters; it runs under
    ``torch.autocast``.
    """

    def __init__(self, channels: Sequence[int], *, z_dim: int = 512, img_channels: int = 3, lod: float = 0.0,
                 final_tanh: bool = False):
        super().__init__()
        channels = [int(c) for c in channels]
        if not channels or min(channels) < 1:
            raise ValueError(f"channels must be one or more positive feature-map counts; got {channels}")
        if z_dim < 1 or img_channels < 1:
            raise ValueError(f"z_dim and img_channels must be positive; got {z_dim} and {img_channels}")
        problem = lod_problem(float(lod), len(channels))
        if problem:
            raise ValueError(problem)
        self.z_dim, self.img_channels = int(z_dim), int(img_channels)
        self.img_resolution = _INIT_RES << (len(channels) - 1)
        self.channels, self.lod, self.final_tanh = channels, float(lod), bool(final_tanh)
        layers: list[nn.Module] = [_FirstLayer(z_dim, channels[0]), _Conv(channels[0], channels[0], 3)]
        for before, after in zip(channels, channels[1:]):
            layers += [_Conv(before, after, 3, up=True), _Conv(after, after, 3)]
        self.layers = nn.ModuleList(layers)
        self.to_rgbs = nn.ModuleList(_Conv(c, img_channels, 1, gain=1.0, activate=False) for c in channels)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """z (B, z_dim) -> images (B, img_channels, R, R), not clamped."""
        if z.ndim != 2 or z.shape[1] != self.z_dim:
            raise ValueError(f"z must have shape (batch, {self.z_dim}); got {tuple(z.shape)}")
        steps = math.floor(self.lod)                   # whole resolutions below the last at which the image forms
        top = len(self.channels) - 1 - steps
        x = pixel_norm(z)                              # genforce normalises z, then its first layer does again
        before = x
        for level in range(top + 1):
            before = x
            x = self.layers[2 * level + 1](self.layers[2 * level](x))
        image = self.to_rgbs[top](x)
        if self.lod > steps:                           # between two resolutions: blend with the one below
            alpha = math.ceil(self.lod) - self.lod
            image = image * alpha + _upsample(self.to_rgbs[top - 1](before)) * (1 - alpha)
        for _ in range(steps):
            image = _upsample(image)
        return torch.tanh(image) if self.final_tanh else image

    def latent_weights(self) -> list[tuple[str, torch.Tensor]]:
        """[("layer0", (channels[0]·4·4, z_dim))]: the first layer's stored weight, which acts on (the pixel-
        normalised) z, one row per output unit, as ``engine.models.checkpoints.latent_weights`` reads it."""
        weight = self.layers[0].weight
        return [("layer0", weight.permute(0, 2, 3, 1).reshape(-1, self.z_dim))]


def genforce_key(name: str) -> str:
    """The genforce state-dict key of the ``PGGANNetwork`` tensor ``name`` ("layers.3.bias" -> "layer3.bias",
    "to_rgbs.2.weight" -> "output2.weight")."""
    head, _, rest = name.partition(".")
    if head == "layers":
        return f"layer{rest}"
    if head == "to_rgbs":
        return f"output{rest}"
    raise KeyError(name)


def _is_up(key: str) -> bool:
    """Whether genforce's ``key`` is the weight of an upsampling layer (layer2, layer4, ...)."""
    match = re.fullmatch(r"layer(\d+)\.weight", key)
    return bool(match) and int(match.group(1)) >= 2 and int(match.group(1)) % 2 == 0


def to_genforce(net: PGGANNetwork) -> dict[str, torch.Tensor]:
    """``net``'s tensors under genforce's key names, unfused (``fused_scale=False``), with its ``lod``: what
    ``from_genforce`` reads."""
    state = {genforce_key(name): tensor for name, tensor in net.state_dict().items()}
    state[_LOD_KEY] = torch.tensor(net.lod)
    return state


def from_genforce(state: Mapping[str, torch.Tensor], *, fused_scale: bool = False,
                  final_tanh: bool = False) -> PGGANNetwork:
    """A ``PGGANNetwork`` (eval mode) holding every tensor of genforce's ``PGGANGenerator.state_dict()``.

    Read from the key names and shapes: the resolution (the number of ``output{k}`` ToRGB layers), z_dim
    (``layer0.weight``'s input channels), the feature maps per resolution and the image channels; the level of
    detail from the ``lod`` buffer. Not visible in the weights, so taken as genforce's defaults (those of every
    model in its model zoo) unless given: ``fused_scale`` (False: upsample, then 3×3 conv; True: the up layers'
    weights are (in, out, 3, 3) transposed-conv kernels; the images differ where the shapes do not), ``final_tanh``
    (False), ``use_wscale`` (True) and ``label_size`` (0: unconditional; a conditional model's label channels
    would be counted into z_dim). Refused with a ``CheckpointError`` (one line naming the key and the layout):
    a missing or unexpected key, a shape that disagrees with the rest, a ``lod`` outside [0, resolutions - 1].
    """
    net = PGGANNetwork(**_architecture(state), final_tanh=final_tanh)
    _check_keys(net, state, fused_scale)
    lod = float(state[_LOD_KEY])
    problem = lod_problem(lod, len(net.channels))
    if problem:
        raise CheckpointError(f"{LAYOUT} layout: {problem} (key {_LOD_KEY!r})")
    net.lod = lod
    net.load_state_dict({name: _unfused(genforce_key(name), state[genforce_key(name)], fused_scale)
                         for name in net.state_dict()})
    return net.eval()


def _unfused(key: str, tensor: torch.Tensor, fused_scale: bool) -> torch.Tensor:
    """genforce's tensor in the network's layout: a fused up layer's (in, out, 3, 3) transposed-conv weight
    becomes the (out, in, 3, 3) kernel of the equivalent upsample-then-conv."""
    return tensor.transpose(0, 1).flip(2, 3) if fused_scale and _is_up(key) else tensor


def _architecture(state: Mapping[str, torch.Tensor]) -> dict:
    """PGGANNetwork's constructor options, read from genforce key names and shapes."""
    regex = re.compile(r"output(\d+)\.weight")
    levels = len([key for key in state if regex.fullmatch(key)])
    if not levels:
        raise CheckpointError(f"{LAYOUT} layout: missing key 'output0.weight'")
    return dict(channels=[_size(state, f"layer{2 * k + 1}.weight", 0) for k in range(levels)],
                z_dim=_size(state, "layer0.weight", 1), img_channels=_size(state, "output0.weight", 0))


def _size(state: Mapping[str, torch.Tensor], key: str, axis: int) -> int:
    return state_size(state, key, axis, LAYOUT)


def _check_keys(net: PGGANNetwork, state: Mapping[str, torch.Tensor], fused_scale: bool) -> None:
    """Every key ``net`` needs is in ``state`` with its shape, and ``state`` has no other key."""
    expected = {}
    for name, tensor in net.state_dict().items():
        key, shape = genforce_key(name), tuple(tensor.shape)
        expected[key] = (shape[1], shape[0], *shape[2:]) if fused_scale and _is_up(key) else shape
    expected[_LOD_KEY] = ()
    for key, shape in expected.items():
        if key not in state:
            raise CheckpointError(f"{LAYOUT} layout: missing key {key!r}")
        found = tuple(state[key].shape)
        if found != shape:
            raise CheckpointError(f"{LAYOUT} layout: {key} has shape {found}; expected {shape} from the other keys"
                                  + _fused_hint(key, found, shape, fused_scale))
    unexpected = sorted(set(state) - set(expected))
    if unexpected:
        raise CheckpointError(f"{LAYOUT} layout: unexpected key {unexpected[0]!r}"
                              + (f" (and {len(unexpected) - 1} more)" if len(unexpected) > 1 else ""))


def _fused_hint(key: str, found: tuple, expected: tuple, fused_scale: bool) -> str:
    """A hint when ``found`` is ``expected`` with its first two axes swapped: the other ``fused_scale``."""
    if _is_up(key) and found == (expected[1], expected[0], *expected[2:]):
        return f" (the layout of fused_scale={not fused_scale})"
    return ""
