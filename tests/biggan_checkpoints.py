"""Random-weight BigGAN-deep checkpoints in huggingface pytorch-pretrained-BigGAN's exact layout, for tests.

The layout is written out here from the file format's names and shapes (``BigGAN.state_dict()`` of that package,
saved as ``pytorch_model.bin`` beside a ``config.json`` of ``BigGANConfig`` fields), not derived from the engine's
network, so tests of the converter check it against an independent description:

* ``embeddings.weight`` (z_dim, num_classes): the class embedding, a bias-free linear map, not spectral-normalised;
* every other linear or conv is spectral-normalised by ``torch.nn.utils.spectral_norm`` and stored as
  ``<name>.weight_orig``, ``<name>.weight_u`` (out,), ``<name>.weight_v`` (in * kh * kw,) (+ ``<name>.bias``);
* ``generator.gen_z`` (4 * 4 * 16 * ch, 2 * z_dim) with bias; ``generator.layers.N`` the blocks, with the
  self-attention inserted as its own entry before block ``attention_layer_position`` (later blocks shift by one);
* block: ``bn_0..bn_3`` (``running_means``/``running_vars`` (n_stats, C), ``scale``/``offset`` linears (C, 2 * z_dim)
  without bias) and ``conv_0`` (1x1, in -> in/4), ``conv_1``/``conv_2`` (3x3), ``conv_3`` (1x1, in/4 -> out);
* attention: ``gamma`` (1,), ``snconv1x1_theta``/``_phi`` (C/8, C, 1, 1), ``_g`` (C/2, C, 1, 1), ``_o_conv``
  (C, C/2, 1, 1), all without bias;
* ``generator.bn`` (``running_means``, ``running_vars``, ``weight``, ``bias``) and ``generator.conv_to_rgb``
  (ch, ch, 3, 3) with bias, of whose outputs the first three channels are the image.
"""
from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

# 4x4 -> 32x32 in three upsampling blocks, channels 16 -> 1 x channel_width; attention before layers[4] (16x16).
TINY_LAYERS = [[False, 16, 16], [True, 16, 8], [False, 8, 4], [True, 4, 2], [False, 2, 1], [True, 1, 1]]
# BigGANConfig's default: BigGAN-deep-128 (attention before layers[8], at 64x64).
DEEP_128_LAYERS = [[False, 16, 16], [True, 16, 16], [False, 16, 16], [True, 16, 8], [False, 8, 8], [True, 8, 4],
                   [False, 4, 4], [True, 4, 2], [False, 2, 2], [True, 2, 1]]


def biggan_config(*, layers: Sequence[Sequence] = TINY_LAYERS, channel_width: int = 4, z_dim: int = 8,
                  num_classes: int = 5, attention_layer_position: int = 4, n_stats: int = 51,
                  eps: float = 1e-4) -> dict:
    """A config.json dict (all ``BigGANConfig`` fields; ``output_dim`` follows from ``layers``).

    The defaults build a 32x32 network small enough for unit tests; ``biggan_config(layers=DEEP_128_LAYERS,
    channel_width=128, z_dim=128, num_classes=1000, attention_layer_position=8)`` is BigGAN-deep-128's.
    """
    ups = sum(bool(layer[0]) for layer in layers)
    return {"output_dim": 4 * 2 ** ups, "z_dim": z_dim, "class_embed_dim": z_dim, "channel_width": channel_width,
            "num_classes": num_classes, "layers": [[bool(u), int(a), int(b)] for u, a, b in layers],
            "attention_layer_position": attention_layer_position, "eps": eps, "n_stats": n_stats}


def _normalized(prefix: str, shape: tuple[int, ...], bias: bool) -> dict[str, tuple[int, ...]]:
    fan_in = 1
    for size in shape[1:]:
        fan_in *= size
    out = {f"{prefix}.bias": (shape[0],)} if bias else {}
    out.update({f"{prefix}.weight_orig": shape, f"{prefix}.weight_u": (shape[0],), f"{prefix}.weight_v": (fan_in,)})
    return out


def _batch_norm(prefix: str, channels: int, condition_dim: int, n_stats: int) -> dict[str, tuple[int, ...]]:
    out = {f"{prefix}.running_means": (n_stats, channels), f"{prefix}.running_vars": (n_stats, channels)}
    for name in ("scale", "offset"):
        out.update(_normalized(f"{prefix}.{name}", (channels, condition_dim), bias=False))
    return out


def _block(prefix: str, c_in: int, c_out: int, condition_dim: int, n_stats: int) -> dict[str, tuple[int, ...]]:
    middle = c_in // 4
    convs = [(c_in, middle, 1), (middle, middle, 3), (middle, middle, 3), (middle, c_out, 1)]
    out: dict[str, tuple[int, ...]] = {}
    for k, (cin, cout, kernel) in enumerate(convs):
        out.update(_batch_norm(f"{prefix}.bn_{k}", cin, condition_dim, n_stats))
        out.update(_normalized(f"{prefix}.conv_{k}", (cout, cin, kernel, kernel), bias=True))
    return out


def _attention(prefix: str, channels: int) -> dict[str, tuple[int, ...]]:
    out: dict[str, tuple[int, ...]] = {f"{prefix}.gamma": (1,)}
    for name, (cout, cin) in (("theta", (channels // 8, channels)), ("phi", (channels // 8, channels)),
                              ("g", (channels // 2, channels)), ("o_conv", (channels, channels // 2))):
        out.update(_normalized(f"{prefix}.snconv1x1_{name}", (cout, cin, 1, 1), bias=False))
    return out


def biggan_layout(config: Mapping) -> dict[str, tuple[int, ...]]:
    """{key: shape} of ``pytorch_model.bin`` for ``config`` (a full config dict, as ``biggan_config`` gives)."""
    ch, z_dim, n_stats = config["channel_width"], config["z_dim"], config["n_stats"]
    condition_dim = 2 * z_dim
    layout: dict[str, tuple[int, ...]] = {"embeddings.weight": (z_dim, config["num_classes"])}
    layout.update(_normalized("generator.gen_z", (4 * 4 * 16 * ch, condition_dim), bias=True))
    index = 0
    for i, (_, c_in, c_out) in enumerate(config["layers"]):
        if i == config["attention_layer_position"]:
            layout.update(_attention(f"generator.layers.{index}", ch * c_in))
            index += 1
        layout.update(_block(f"generator.layers.{index}", ch * c_in, ch * c_out, condition_dim, n_stats))
        index += 1
    layout.update({"generator.bn.weight": (ch,), "generator.bn.bias": (ch,),
                   "generator.bn.running_means": (n_stats, ch), "generator.bn.running_vars": (n_stats, ch)})
    layout.update(_normalized("generator.conv_to_rgb", (ch, ch, 3, 3), bias=True))
    return layout


def _singular_pair(weight: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(u, v) after a few power iterations from random vectors, as a trained model's spectral norm holds them."""
    matrix = weight.reshape(weight.shape[0], -1)
    u = torch.nn.functional.normalize(torch.randn(matrix.shape[0], generator=generator), dim=0)
    for _ in range(3):
        v = torch.nn.functional.normalize(matrix.t() @ u, dim=0)
        u = torch.nn.functional.normalize(matrix @ v, dim=0)
    return u, v


def biggan_state(config: Mapping, seed: int = 0) -> dict[str, torch.Tensor]:
    """A random-weight state dict in the exact layout of ``config`` (float32, CPU), deterministic in ``seed``.

    Every tensor is away from a fresh model's init (statistics vary per ψ row, attention ``gamma`` is non-zero, the
    final batch norm has non-trivial gain), so a converter that ignores one of them produces different images.
    """
    generator = torch.Generator().manual_seed(seed)
    layout = biggan_layout(config)
    state: dict[str, torch.Tensor] = {}
    for key, shape in layout.items():
        if key.endswith(("weight_u", "weight_v")):
            continue
        if key.endswith("running_means"):
            value = 0.2 * torch.randn(shape, generator=generator)
        elif key.endswith("running_vars"):
            value = 0.5 + torch.rand(shape, generator=generator)
        elif key.endswith("gamma"):
            value = torch.full(shape, 0.5)
        elif key == "generator.bn.weight":
            value = 1 + 0.2 * torch.randn(shape, generator=generator)
        elif key.endswith("bias"):
            value = 0.1 * torch.randn(shape, generator=generator)
        else:
            value = torch.randn(shape, generator=generator)
        state[key] = value
        if key.endswith("weight_orig"):
            prefix = key.removesuffix("_orig")
            state[f"{prefix}_u"], state[f"{prefix}_v"] = _singular_pair(value, generator)
    return {key: state[key] for key in layout}


def write_biggan_folder(folder: str | Path, config: Mapping | None = None, seed: int = 0) -> Path:
    """Write ``config.json`` and ``pytorch_model.bin`` (``torch.save`` of ``biggan_state``) into ``folder``, as the
    huggingface package stores a model; returns the folder. ``config`` defaults to ``biggan_config()``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = dict(config or biggan_config())
    (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    torch.save(biggan_state(config, seed), folder / "pytorch_model.bin")
    return folder
