"""Safe checkpoint loading and the per-family weight layouts SeFa factorizes.

Checkpoints load with ``torch.load(weights_only=True, map_location="cpu")``: tensors and plain containers only.
One that needs arbitrary unpickling (a pickled network, a custom class) is refused unless the caller passes
``trust=True`` (the CLI's ``--trust-checkpoint``): unpickling runs code from the file.

No network is built: each family's reader picks, by key name, the weights that take the latent code in and
returns them as ``[(layer_name, weight (out_features, latent_dim))]`` in layer order:

* ``stylegan2``: rosinality's ``g_ema`` layout (``conv1.conv.modulation.weight`` = layer 0,
  ``convs.{i}.conv.modulation.weight`` = layer i+1; ToRGB ``to_rgb1`` / ``to_rgbs.{i}`` only with
  ``include_torgb``), NVlabs' stylegan2-ada layout (``synthesis.b{res}.conv{0,1}.affine.weight``,
  ``synthesis.b{res}.torgb.affine.weight``) and genforce's (``synthesis.layer{i}.style.weight``);
* ``stylegan``: the per-layer style affines (genforce ``synthesis.layer{i}.style.weight``, or
  ``...epilogue.style_mod.dense.weight``);
* ``pggan``: the first layer, which takes z (``layer0.weight``; a 4-D conv kernel (out, z_dim, kh, kw)
  becomes out·kh·kw rows);
* ``biggan``: the first linear layer (``generator.gen_z.weight`` / ``gen_z.weight``), keeping only the columns
  that act on the latent half of its input [z, class embedding], as the SeFa paper says.
"""
from __future__ import annotations

import os
import pickle
import re
import zipfile
from collections.abc import Mapping

import torch

FAMILIES = ("stylegan2", "stylegan", "pggan", "biggan")
WRAPPER_KEYS = ("g_ema", "G_ema", "state_dict", "generator", "model", "params")


class CheckpointError(ValueError):
    """A checkpoint that cannot be read safely, is not a state dict, or lacks the weights asked for."""


def load_checkpoint(path: str | os.PathLike, *, trust: bool = False) -> object:
    """``torch.load`` of ``path`` on CPU; weights only unless ``trust``."""
    path = str(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no checkpoint file {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=not trust)
    except pickle.UnpicklingError as exc:
        # The weights-only unpickler names a class it will not build as "Unsupported global"; anything else
        # it rejects (a bad opcode) is a file that is not a checkpoint at all.
        if trust or "unsupported global" not in str(exc).lower():
            raise CheckpointError(f"{path} is not a readable torch checkpoint ({_first_line(exc)})") from None
        raise CheckpointError(f"{path} needs arbitrary unpickling to load (it holds more than tensors); refused "
                              "for safety: pass --trust-checkpoint only if you trust its source") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError, AttributeError, ImportError) as exc:
        raise CheckpointError(f"{path} is not a readable torch checkpoint ({_first_line(exc)})") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__


def state_dict_of(obj: object, path: str = "checkpoint") -> dict[str, torch.Tensor]:
    """The generator's flat {name: tensor} dict: unwraps ``g_ema`` and kin, strips ``module.`` prefixes."""
    if isinstance(obj, torch.nn.Module):
        obj = obj.state_dict()
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path} is not a state dict (it holds a {type(obj).__name__})")
    for key in WRAPPER_KEYS:
        inner = obj.get(key)
        if isinstance(inner, torch.nn.Module):
            inner = inner.state_dict()
        if isinstance(inner, Mapping):
            obj = inner
            break
    tensors = {str(k).removeprefix("module."): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise CheckpointError(f"{path} is not a state dict: it holds no tensors (keys: {_keys(obj)})")
    return tensors


def _keys(obj: Mapping, most: int = 6) -> str:
    keys = list(obj)[:most]
    return ", ".join(map(str, keys)) + (", ..." if len(obj) > most else "")


def _as_matrix(name: str, weight: torch.Tensor, path: str) -> torch.Tensor:
    if weight.ndim != 2:
        raise CheckpointError(f"{path}: {name} has shape {tuple(weight.shape)}; expected (out, latent_dim)")
    return weight.detach().float()


def _numbered(state: Mapping[str, torch.Tensor], pattern: str) -> list[tuple[int, str]]:
    regex = re.compile(pattern)
    found = [(int(m.group(1)), k) for k in state if (m := regex.fullmatch(k))]
    return sorted(found)


def _stylegan2(state: Mapping[str, torch.Tensor], include_torgb: bool, path: str) -> list[tuple[str, torch.Tensor]]:
    layers: list[tuple[str, torch.Tensor]] = []
    if "conv1.conv.modulation.weight" in state:                               # rosinality g_ema
        layers.append(("conv1", state["conv1.conv.modulation.weight"]))
        layers += [(f"convs.{i}", state[k]) for i, k in _numbered(state, r"convs\.(\d+)\.conv\.modulation\.weight")]
        if include_torgb:
            if "to_rgb1.conv.modulation.weight" in state:
                layers.append(("to_rgb1", state["to_rgb1.conv.modulation.weight"]))
            layers += [(f"to_rgbs.{i}", state[k])
                       for i, k in _numbered(state, r"to_rgbs\.(\d+)\.conv\.modulation\.weight")]
        return layers
    nv = re.compile(r"synthesis\.b(\d+)\.(conv0|conv1|torgb)\.affine\.weight")  # NVlabs stylegan2-ada / 3
    blocks = sorted(((int(m.group(1)), m.group(2), k) for k in state if (m := nv.fullmatch(k))),
                    key=lambda t: (t[0], ("conv0", "conv1", "torgb").index(t[1])))
    if blocks:
        convs = [(f"b{r}.{kind}", state[k]) for r, kind, k in blocks if kind != "torgb"]
        rgbs = [(f"b{r}.torgb", state[k]) for r, kind, k in blocks if kind == "torgb"]
        return convs + (rgbs if include_torgb else [])
    genforce = _numbered(state, r"synthesis\.layer(\d+)\.style\.weight")
    layers = [(f"layer{i}", state[k]) for i, k in genforce]
    if include_torgb:
        layers += [(f"output{i}", state[k]) for i, k in _numbered(state, r"synthesis\.output(\d+)\.style\.weight")]
    if not layers:
        raise CheckpointError(f"{path} has none of the StyleGAN2 style-modulation weights SeFa needs "
                              "(conv1.conv.modulation.weight, convs.N.conv.modulation.weight, or "
                              f"synthesis.bRES.convK.affine.weight); its keys begin {_keys(state)}")
    return layers


def _stylegan(state: Mapping[str, torch.Tensor], path: str) -> list[tuple[str, torch.Tensor]]:
    for pattern in (r"synthesis\.layer(\d+)\.style\.weight",
                    r"synthesis\.layer(\d+)\.epilogue\.style_mod\.dense\.weight",
                    r"synthesis\.layer(\d+)\.epilogue\.style_mod\.dense\.fc\.weight"):
        found = _numbered(state, pattern)
        if found:
            return [(f"layer{i}", state[k]) for i, k in found]
    raise CheckpointError(f"{path} has none of the StyleGAN style-affine weights SeFa needs "
                          f"(synthesis.layerN.style.weight); its keys begin {_keys(state)}")


def _pggan(state: Mapping[str, torch.Tensor], path: str) -> list[tuple[str, torch.Tensor]]:
    for key in ("layer0.weight", "layer0.conv.weight", "layer0.fc.weight", "fc.weight"):
        if key in state:
            weight = state[key]
            if weight.ndim == 4:                                              # (out, z_dim, kh, kw)
                weight = weight.permute(0, 2, 3, 1).reshape(-1, weight.shape[1])
            return [(key.rsplit(".", 1)[0], weight)]
    raise CheckpointError(f"{path} has no PGGAN first layer (layer0.weight); its keys begin {_keys(state)}")


def _biggan(state: Mapping[str, torch.Tensor], path: str) -> list[tuple[str, torch.Tensor]]:
    for key in ("generator.gen_z.weight", "gen_z.weight", "generator.gen_z.weight_orig", "gen_z.weight_orig"):
        if key in state:
            weight = state[key]
            if weight.ndim != 2 or weight.shape[1] % 2:
                raise CheckpointError(f"{path}: {key} has shape {tuple(weight.shape)}; expected (out, 2·z_dim) "
                                      "taking [z, class embedding]")
            return [("gen_z", weight[:, : weight.shape[1] // 2])]
    raise CheckpointError(f"{path} has no BigGAN first linear layer (generator.gen_z.weight); its keys begin "
                          f"{_keys(state)}")


def latent_weights(state: Mapping[str, torch.Tensor], family: str, *, include_torgb: bool = False,
                   path: str = "checkpoint") -> list[tuple[str, torch.Tensor]]:
    """The weights of ``family`` that act on the latent code: [(layer name, (out, latent_dim) float32)]."""
    if family not in FAMILIES:
        raise ValueError(f"--family must be one of {', '.join(FAMILIES)}; got {family!r}")
    if family == "stylegan2":
        layers = _stylegan2(state, include_torgb, path)
    elif family == "stylegan":
        layers = _stylegan(state, path)
    elif family == "pggan":
        layers = _pggan(state, path)
    else:
        layers = _biggan(state, path)
    layers = [(name, _as_matrix(name, w, path)) for name, w in layers]
    widths = {w.shape[1] for _, w in layers}
    if len(widths) != 1:
        raise CheckpointError(f"{path}: the latent weights disagree on the code size ({sorted(widths)})")
    return layers


def read_latent_weights(path: str | os.PathLike, family: str, *, include_torgb: bool = False,
                        trust: bool = False) -> list[tuple[str, torch.Tensor]]:
    """Load ``path`` safely and return ``family``'s latent weights (see ``latent_weights``)."""
    if family not in FAMILIES:
        raise ValueError(f"--family must be one of {', '.join(FAMILIES)}; got {family!r}")
    state = state_dict_of(load_checkpoint(path, trust=trust), str(path))
    return latent_weights(state, family, include_torgb=include_torgb, path=str(path))
