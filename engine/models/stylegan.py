"""StyleGAN (v1), the engine's own network, and the converter from genforce's checkpoint layout.

genforce's checkpoints (InterFaceGAN's and SeFa's ``stylegan_ffhq1024``, ``stylegan_celebahq1024``,
``stylegan_bedroom256``, ``stylegan_car512``, ...) hold the state dict of genforce's ``StyleGANGenerator``
(``models/stylegan_generator.py``); ``from_genforce`` builds a ``StyleGANNetwork`` with the same math from it:

* mapping: pixel norm of z (of [z, c·label_weight] for conditional models), then ``mapping_layers`` equalized
  dense layers (gain √2, learning-rate multiplier 0.01), each followed by leaky ReLU(0.2);
* synthesis, per layer: [nearest 2× upsample, 3×3 conv, [1, 2, 1]² blur] on the first layer of each resolution
  above 4 px (a fused transposed conv in place of upsample + conv where ``fused_scale`` says so), a 3×3 conv on
  the second; then + noise · strength, + bias, leaky ReLU(0.2), instance norm, and the style modulation
  x · (1 + s₀) + s₁ with s = affine(w); the first layer starts from a learned 4×4 constant;
* the image is the last resolution's 1×1 ToRGB (the lower resolutions' ToRGBs are loaded but only used by
  progressive training), with no final activation: it is not clamped to [-1, 1].

The network never truncates: ``w_avg`` (the file's ``truncation.w_avg``) is for the caller to apply.
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

LAYOUT = "genforce StyleGAN"
NOISE_MODES = ("const", "random", "none")
_FUSED_SCALE_MIN_RES = 128          # genforce's fused_scale="auto": fused up-convs from 128 px upwards
_LRELU_SLOPE = 0.2
_EPS = 1e-8


def default_channels(resolution: int, fmaps_base: int = 16 << 10, fmaps_max: int = 512) -> list[int]:
    """genforce's feature maps per resolution 4, 8, ..., ``resolution``: min(fmaps_base // res, fmaps_max)."""
    return [min(fmaps_base // (4 << i), fmaps_max) for i in range(_levels(resolution))]


def _levels(resolution: int) -> int:
    if not isinstance(resolution, int) or resolution < 4 or resolution & (resolution - 1):
        raise ValueError(f"resolution must be a power of two >= 4; got {resolution!r}")
    return int(math.log2(resolution)) - 1


class _EqualizedLinear(nn.Module):
    """y = x · (weight · gain/√in · lr_mul)ᵀ + bias · lr_mul (the stored weight is the unscaled one)."""

    def __init__(self, in_features: int, out_features: int, gain: float, lr_mul: float = 1.0):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_mul)
        self.bias = nn.Parameter(torch.zeros(out_features))
        self.weight_gain = gain / math.sqrt(in_features) * lr_mul
        self.lr_mul = lr_mul

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = self.bias if self.lr_mul == 1 else self.bias * self.lr_mul
        return F.linear(x, self.weight * self.weight_gain, bias)


class _StyledLayer(nn.Module):
    """One synthesis layer: input op -> + noise · strength -> + bias -> lrelu -> instance norm -> style mod.

    ``op`` is the input op: "const" (a learned constant), "from_w" (a 4×4 conv of w seen as a 1×1 image:
    genforce's ``const_input=False``), "conv" (3×3 conv), "up" (nearest 2× upsample, 3×3 conv, blur) or
    "up_fused" (a stride-2 transposed conv whose 4×4 kernel sums the 3×3 kernel's four shifts, then blur).
    """

    def __init__(self, op: str, in_channels: int, out_channels: int, resolution: int, w_dim: int):
        super().__init__()
        self.op = op
        if op == "const":
            self.const = nn.Parameter(torch.ones(1, out_channels, resolution, resolution))
        else:
            kernel = resolution if op == "from_w" else 3
            self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel, kernel))
            self.weight_gain = math.sqrt(2.0) / math.sqrt(in_channels * kernel * kernel)
        if op in ("up", "up_fused"):
            blur = torch.tensor([1.0, 2.0, 1.0])
            blur = torch.outer(blur, blur) / 16
            self.register_buffer("blur_kernel", blur.expand(out_channels, 1, 3, 3).clone())
        self.register_buffer("noise_const", torch.randn(1, 1, resolution, resolution))
        self.noise_strength = nn.Parameter(torch.zeros(out_channels))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.style = _EqualizedLinear(w_dim, 2 * out_channels, gain=1.0)
        self.resolution = resolution

    def forward(self, x: torch.Tensor | None, w: torch.Tensor, noise: torch.Tensor | None) -> torch.Tensor:
        """x (B, in, r, r) (None for "const"; (B, w_dim, 1, 1) for "from_w"), w (B, w_dim), noise None or
        broadcastable to (B, 1, res, res) -> (B, out, res, res)."""
        x = self._input(x, w.shape[0])
        shift = self.bias.view(1, -1, 1, 1)
        if noise is not None:
            shift = shift + noise * self.noise_strength.view(1, -1, 1, 1)
        x = F.leaky_relu(x + shift, _LRELU_SLOPE)
        x = F.instance_norm(x, eps=_EPS)
        scale, offset = self.style(w).view(-1, 2, x.shape[1], 1, 1).unbind(1)
        return torch.addcmul(offset, x, scale + 1)

    def _input(self, x: torch.Tensor | None, batch: int) -> torch.Tensor:
        if self.op == "const":
            return self.const.expand(batch, -1, -1, -1)
        weight = self.weight * self.weight_gain
        if self.op == "from_w":
            return F.conv2d(x, weight, padding=self.resolution - 1)
        if self.op == "conv":
            return F.conv2d(x, weight, padding=1)
        # "up" (nearest 2x upsample, then the 3x3 conv) is the same map, borders included, as a stride-2
        # transposed conv with the flipped kernel's shift sum: 4/9 of the multiply-adds, no upsampled copy.
        kernel = _up_kernel(weight.flip(2, 3) if self.op == "up" else weight)
        x = F.conv_transpose2d(x, kernel, stride=2, padding=1)
        return F.conv2d(x, self.blur_kernel.to(x.dtype), padding=1, groups=x.shape[1])


def _up_kernel(weight: torch.Tensor) -> torch.Tensor:
    """(out, in, 3, 3) -> the (in, out, 4, 4) stride-2 transposed-conv kernel that sums the 3×3 kernel's four
    one-pixel shifts: genforce's fused up-conv kernel (StyleGAN's upscale2d_conv2d)."""
    w = F.pad(weight, (1, 1, 1, 1))
    w = w[:, :, 1:] + w[:, :, :-1]                  # rows, then columns: two strided adds instead of three
    return (w[..., 1:] + w[..., :-1]).transpose(0, 1)


class _ToRGB(nn.Module):
    """1×1 equalized conv (gain 1) with bias, no activation."""

    def __init__(self, in_channels: int, img_channels: int):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(img_channels, in_channels, 1, 1))
        self.bias = nn.Parameter(torch.zeros(img_channels))
        self.weight_gain = 1.0 / math.sqrt(in_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight * self.weight_gain, self.bias)


class StyleGANNetwork(nn.Module):
    """StyleGAN v1 as genforce implements it (see the module docstring), untruncated.

    Built with random weights from its options (``channels`` per resolution 4, 8, ..., ``resolution``; genforce's
    default min(16384 // res, 512) when None); ``from_genforce`` builds one from a checkpoint.
    ``fused_scale``: True, False or "auto" (fused transposed up-convs from 128 px upwards), as genforce's option.
    """

    def __init__(self, resolution: int, *, z_dim: int = 512, w_dim: int = 512, c_dim: int = 0,
                 mapping_layers: int = 8, mapping_dim: int = 512, channels: Sequence[int] | None = None,
                 img_channels: int = 3, const_input: bool = True, fused_scale: bool | str = "auto",
                 final_tanh: bool = False, mapping_lr_mul: float = 0.01):
        super().__init__()
        levels = _levels(resolution)
        channels = list(channels) if channels is not None else default_channels(resolution)
        if len(channels) != levels:
            raise ValueError(f"channels must give one count per resolution 4..{resolution} ({levels}); "
                             f"got {len(channels)}")
        if fused_scale not in (True, False, "auto"):
            raise ValueError(f"fused_scale must be True, False or 'auto'; got {fused_scale!r}")
        if mapping_layers < 1:
            raise ValueError(f"mapping_layers must be >= 1; got {mapping_layers}")
        self.z_dim, self.w_dim, self.c_dim = int(z_dim), int(w_dim), int(c_dim)
        self.num_ws = 2 * levels
        self.img_resolution, self.img_channels = resolution, int(img_channels)
        self.fused_scale, self.final_tanh = fused_scale, bool(final_tanh)
        self.has_w_avg = False
        self.register_buffer("w_avg", torch.zeros(self.w_dim))

        if self.c_dim:
            self.label_embedding = nn.Parameter(torch.randn(self.c_dim, self.z_dim))
        widths = [self.z_dim * (2 if self.c_dim else 1)] + [mapping_dim] * (mapping_layers - 1) + [self.w_dim]
        self.mapping_fc = nn.ModuleList(_EqualizedLinear(a, b, gain=math.sqrt(2.0), lr_mul=mapping_lr_mul)
                                        for a, b in zip(widths[:-1], widths[1:]))

        layers = []
        for level, out in enumerate(channels):
            res = 4 << level
            if level == 0:
                first = ("const", out) if const_input else ("from_w", self.w_dim)
            else:
                fused = res >= _FUSED_SCALE_MIN_RES if fused_scale == "auto" else fused_scale
                first = ("up_fused" if fused else "up", channels[level - 1])
            layers.append(_StyledLayer(first[0], first[1], out, res, self.w_dim))
            layers.append(_StyledLayer("conv", out, out, res, self.w_dim))
        self.layers = nn.ModuleList(layers)
        self.noise_layers = tuple((f"layers.{i}", layer.resolution) for i, layer in enumerate(layers))
        self.to_rgb = nn.ModuleList(_ToRGB(c, self.img_channels) for c in channels)

    def mapping_w(self, z: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        """(B, z_dim) [+ one-hot c (B, c_dim) for conditional models] -> w (B, w_dim), before truncation."""
        if z.ndim != 2 or z.shape[1] != self.z_dim:
            raise ValueError(f"z must have shape (batch, {self.z_dim}); got {tuple(z.shape)}")
        x = z
        if self.c_dim:
            if c is None or c.shape != (z.shape[0], self.c_dim):
                got = "none" if c is None else tuple(c.shape)
                raise ValueError(f"c must be one-hot labels of shape ({z.shape[0]}, {self.c_dim}) for this "
                                 f"conditional StyleGAN; got {got}")
            x = torch.cat([z, c.to(self.label_embedding.dtype) @ self.label_embedding], dim=1)
        elif c is not None and c.numel():
            raise ValueError(f"c must be None for this unconditional StyleGAN; got shape {tuple(c.shape)}")
        x = x * torch.rsqrt(x.square().mean(dim=1, keepdim=True) + _EPS)
        for fc in self.mapping_fc:
            x = F.leaky_relu(fc(x), _LRELU_SLOPE)
        return x

    def synthesis(self, ws: torch.Tensor, noise: str = "const", generator: torch.Generator | None = None,
                  noise_maps: Sequence[torch.Tensor] | None = None) -> torch.Tensor:
        """ws (B, num_ws, w_dim) -> raw images (B, img_channels, R, R), not clamped.

        noise: "const" uses the file's stored per-layer noise (images are a function of ws alone), "random"
        draws fresh N(0, 1) noise (B, 1, res, res) per layer, in layer order, from ``generator`` (in float32 on the
        generator's device; the same generator state gives the same images), "none" adds no noise.
        ``noise_maps``, one (B, 1, r, r) map per entry of ``noise_layers`` in that order, replaces the stored
        noise (per-image noise, as an inversion optimises it); ``noise`` is then ignored.
        """
        from engine.models.stylegan2 import check_noise_maps

        if ws.ndim != 3 or ws.shape[1:] != (self.num_ws, self.w_dim):
            raise ValueError(f"ws must have shape (batch, {self.num_ws}, {self.w_dim}); got {tuple(ws.shape)}")
        if noise not in NOISE_MODES:
            raise ValueError(f"noise must be one of {', '.join(NOISE_MODES)}; got {noise!r}")
        maps = None if noise_maps is None else check_noise_maps(self.noise_layers, noise_maps, ws.shape[0])
        x = ws[:, 0, :, None, None]         # only read by the "from_w" first layer
        for i, layer in enumerate(self.layers):
            layer_noise = self._noise(layer, ws.shape[0], noise, generator, x) if maps is None else maps[i].to(x)
            x = layer(x, ws[:, i], layer_noise)
        image = self.to_rgb[-1](x)
        return torch.tanh(image) if self.final_tanh else image

    @staticmethod
    def _noise(layer: _StyledLayer, batch: int, mode: str, generator: torch.Generator | None,
               like: torch.Tensor) -> torch.Tensor | None:
        if mode == "const":
            return layer.noise_const
        if mode == "none":
            return None
        device = generator.device if generator is not None else like.device
        shape = (batch, 1, layer.resolution, layer.resolution)
        return torch.randn(shape, generator=generator, device=device).to(like)


# --- genforce's layout ------------------------------------------------------------------------------------------

_LEAF_NAMES = {"noise_const": "apply_noise.noise", "noise_strength": "apply_noise.weight",
               "blur_kernel": "blur.kernel"}
_LOD_KEY = "synthesis.lod"


def genforce_key(name: str) -> str:
    """The genforce state-dict key of the ``StyleGANNetwork`` tensor ``name`` (e.g. "layers.3.noise_strength"
    -> "synthesis.layer3.apply_noise.weight")."""
    head, _, rest = name.partition(".")
    if head == "label_embedding":
        return "mapping.label_weight"
    if head == "w_avg":
        return "truncation.w_avg"
    if head == "mapping_fc":
        return f"mapping.dense{rest}"
    if head == "to_rgb":
        return f"synthesis.output{rest}"
    if head == "layers":
        index, _, leaf = rest.partition(".")
        return f"synthesis.layer{index}.{_LEAF_NAMES.get(leaf, leaf)}"
    raise KeyError(name)


def to_genforce(net: StyleGANNetwork) -> dict[str, torch.Tensor]:
    """``net``'s tensors under genforce's key names (``synthesis.lod`` = 0): what ``from_genforce`` reads."""
    state = {genforce_key(name): tensor for name, tensor in net.state_dict().items()}
    state[_LOD_KEY] = torch.zeros(())
    return state


def from_genforce(state: Mapping[str, torch.Tensor], *, fused_scale: bool | str = "auto",
                  final_tanh: bool = False) -> StyleGANNetwork:
    """A ``StyleGANNetwork`` (eval mode) holding every tensor of genforce's ``StyleGANGenerator.state_dict()``.

    Read from the key names and shapes: resolution (the number of ``synthesis.layerN``), z_dim, w_dim, c_dim
    (``mapping.label_weight``), the mapping's depth and width, the channels per resolution, the image channels
    and ``const_input``; ``w_avg`` from ``truncation.w_avg`` (``has_w_avg`` is False when it is all zeros, the
    value of a generator that never trained). Not visible in the weights, so taken as genforce's defaults unless
    given: ``fused_scale`` ("auto": up-convs at 128 px and above are fused transposed convs; the kernel has the
    same shape either way, but the images differ), ``final_tanh`` (False), ``use_wscale`` (True) and the
    mapping's learning-rate multiplier (0.01). Refused with a ``CheckpointError`` (one line naming the key): a
    missing or unexpected key, a shape that disagrees with the rest, ``synthesis.lod`` other than 0 (saved during
    progressive growing) and per-layer mapping outputs (``repeat_w=False``).
    """
    net = StyleGANNetwork(**_architecture(state), fused_scale=fused_scale, final_tanh=final_tanh)
    _check_keys(net, state)
    lod = float(state[_LOD_KEY])
    if lod != 0:
        raise CheckpointError(f"{LAYOUT} layout: {_LOD_KEY} is {lod:g}, a generator saved during progressive "
                              "growing; only finished generators (lod 0) are supported")
    net.load_state_dict({name: state[genforce_key(name)] for name in net.state_dict()})
    net.has_w_avg = bool(net.w_avg.abs().sum() > 0)
    return net.eval()


def _architecture(state: Mapping[str, torch.Tensor]) -> dict:
    """StyleGANNetwork's constructor options, read from genforce key names and shapes."""
    layers = _indices(state, r"synthesis\.layer(\d+)\.style\.weight")
    if not layers:
        raise CheckpointError(f"{LAYOUT} layout: no synthesis.layerN.style.weight keys; its keys begin "
                              f"{', '.join(list(state)[:4])}")
    num_layers = layers[-1] + 2 - layers[-1] % 2     # two layers per resolution; any gap is a missing key below
    mapping_layers = len(_indices(state, r"mapping\.dense(\d+)\.weight"))
    if not mapping_layers:
        raise CheckpointError(f"{LAYOUT} layout: missing key 'mapping.dense0.weight'")
    labels = "mapping.label_weight" in state
    w_dim = _size(state, "synthesis.layer0.style.weight", 1)
    last = f"mapping.dense{mapping_layers - 1}.weight"
    if _size(state, last, 0) == w_dim * num_layers:
        raise CheckpointError(f"{LAYOUT} layout: {last} outputs one w per layer (repeat_w=False), which has no "
                              "single w; not supported")
    return dict(resolution=4 << (num_layers // 2 - 1), w_dim=w_dim,
                z_dim=_size(state, "mapping.label_weight", 1) if labels else _size(state, "mapping.dense0.weight", 1),
                c_dim=_size(state, "mapping.label_weight", 0) if labels else 0,
                mapping_layers=mapping_layers, mapping_dim=_size(state, "mapping.dense0.weight", 0),
                channels=[_size(state, f"synthesis.layer{2 * k + 1}.bias", 0) for k in range(num_layers // 2)],
                img_channels=_size(state, "synthesis.output0.weight", 0),
                const_input="synthesis.layer0.const" in state)


def _indices(state: Mapping[str, torch.Tensor], pattern: str) -> list[int]:
    regex = re.compile(pattern)
    return sorted(int(m.group(1)) for key in state if (m := regex.fullmatch(key)))


def _size(state: Mapping[str, torch.Tensor], key: str, axis: int) -> int:
    return state_size(state, key, axis, LAYOUT)


def _check_keys(net: StyleGANNetwork, state: Mapping[str, torch.Tensor]) -> None:
    """Every key ``net`` needs is in ``state`` with its shape, and ``state`` has no other key."""
    expected = {genforce_key(name): tuple(t.shape) for name, t in net.state_dict().items()}
    expected[_LOD_KEY] = ()
    for key, shape in expected.items():
        if key not in state:
            raise CheckpointError(f"{LAYOUT} layout: missing key {key!r}")
        if tuple(state[key].shape) != shape:
            raise CheckpointError(f"{LAYOUT} layout: {key} has shape {tuple(state[key].shape)}; expected {shape} "
                                  "from the other keys")
    unexpected = sorted(set(state) - set(expected))
    if unexpected:
        raise CheckpointError(f"{LAYOUT} layout: unexpected key {unexpected[0]!r}"
                              + (f" (and {len(unexpected) - 1} more)" if len(unexpected) > 1 else ""))
