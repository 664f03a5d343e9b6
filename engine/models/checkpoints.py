"""Safe checkpoint loading and the per-family weight layouts SeFa factorizes.

Checkpoints load with ``torch.load(weights_only=True, map_location="cpu")``: tensors and plain containers only.
Plain pickles (NVlabs' ``.pkl`` networks) are rebuilt as data by ``engine.models.nvlabs_pickle``'s restricted
reader, which executes nothing from the file.
One that needs arbitrary unpickling (a pickled network, a custom class) is refused unless the caller passes
``trust=True`` (the CLI's ``--trust-checkpoint``): unpickling runs code from the file. A file that cannot be read
at all (random bytes, a truncated or damaged zip) is a ``CheckpointError`` naming the file, whatever
``torch.load`` raised inside.

The generator's weights are found inside the usual wrappers (``GENERATOR_KEYS``, first present wins): rosinality's
``g_ema``, genforce's ``generator_smooth`` (the averaged weights, which SeFa's own loader prefers) before its raw
``generator``, then ``state_dict``/``model``/``params``; ``module.`` prefixes are stripped.

No network is built: each family's reader picks, by key name, the weights that take the latent code in and
returns them as ``[(layer_name, weight (out_features, latent_dim))]`` in layer order:

* ``stylegan2``, three layouts, numbered alike: layer i is the i-th modulated conv, ToRGBs after them.
  rosinality's ``g_ema`` (``conv1.conv.modulation.weight`` = layer 0, ``convs.{i}.conv.modulation.weight`` =
  layer i+1; ToRGB ``to_rgb1``, ``to_rgbs.{i}``), NVlabs' stylegan2-ada-pytorch
  (``synthesis.b{res}.conv0/conv1.affine.weight`` by resolution; ToRGB ``synthesis.b{res}.torgb.affine.weight``)
  and genforce's (``synthesis.layer{i}.style.weight``; ToRGB ``synthesis.output{i}.style.weight``). 
* ``stylegan3``: NVlabs' affines numbered as W+ is: the input's (``synthesis.input.affine.weight``) as layer 0,
  then ``synthesis.L{i}_{res}_{channels}.affine.weight`` in layer order, the last one (the ToRGB) only with
  ``include_torgb``;
* ``stylegan``: the per-layer style affines (genforce ``synthesis.layer{i}.style.weight``, or
  ``...epilogue.style_mod.dense.weight``);
* ``pggan``: the first layer, which takes z (``layer0.weight``; a 4-D conv kernel (out, z_dim, kh, kw)
  becomes out·kh·kw rows);
* ``biggan``: the first linear layer (``generator.gen_z.weight`` / ``gen_z.weight``), keeping only the columns
  that act on the latent half of its input [z, class embedding], as the SeFa paper says.

Which StyleGAN2 layers come back depends on ``like`` (see ``LIKE``): the engine's own convention (the convs,
ToRGBs only with ``include_torgb``), genforce/sefa's (the convs, then the last ToRGB) or rosinality's
``closed_form_factorization.py`` (the convs and the first ToRGB).
"""
from __future__ import annotations

import os
import pickle
import re
import warnings
from collections.abc import Mapping

import torch

from engine.models.checkpoint_errors import CheckpointError, first_line

__all__ = ["CheckpointError", "FAMILIES", "LIKE", "GENERATOR_KEYS", "is_plain_pickle", "latent_weights",
           "load_checkpoint", "read_checkpoint_weights", "read_latent_weights", "state_dict_of", "unwrap"]

FAMILIES = ("stylegan2", "stylegan3", "stylegan", "pggan", "biggan")
LIKE = ("engine", "sefa", "rosinality")
GENERATOR_KEYS = ("g_ema", "G_ema", "generator_smooth", "generator", "state_dict", "model", "params")


def load_checkpoint(path: str | os.PathLike, *, trust: bool = False) -> object:
    """``torch.load`` of ``path`` on CPU; weights only unless ``trust``.

    Raises ``FileNotFoundError`` for a missing file and ``CheckpointError`` (one line naming the file) for every
    file ``torch.load`` cannot read, including the refusal of one that needs arbitrary unpickling.
    """
    path = str(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no checkpoint file {path}")
    if is_plain_pickle(path):
        # NVlabs' network pickles (and other plain pickles): rebuilt as data by the restricted reader, which
        # refuses anything but containers, tensors and NVlabs' persistent networks; nothing is executed.
        from engine.models.nvlabs_pickle import PersistentObject, UnsafePickleError, read_network_pickle

        try:
            contents = read_network_pickle(path)
        except UnsafePickleError:
            raise
        except Exception as exc:  # noqa: BLE001 - as above: a damaged pickle fails in many ways
            raise _unreadable(path, exc) from None
        if isinstance(contents, Mapping):
            return {key: value.state_dict() if isinstance(value, PersistentObject) else value
                    for key, value in contents.items()}
        return contents
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")     # torch warns about odd pickle protocols of garbage files
            return torch.load(path, map_location="cpu", weights_only=not trust)
    except pickle.UnpicklingError as exc:
        # The weights-only unpickler names a class it will not build as "Unsupported global"; anything else
        # it rejects (a bad opcode) is a file that is not a checkpoint at all.
        if trust or "unsupported global" not in str(exc).lower():
            raise _unreadable(path, exc) from None
        raise CheckpointError(f"{path} needs arbitrary unpickling to load (it holds more than tensors); refused "
                              "for safety: pass --trust-checkpoint only if you trust its source") from None
    except Exception as exc:  # noqa: BLE001 - a damaged file makes the unpickler raise almost anything
        raise _unreadable(path, exc) from None


#: How ``torch.save``'s legacy (pre-zip) format begins: a pickled magic number.
_TORCH_LEGACY_HEAD = b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19"


def is_plain_pickle(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a plain pickle stream (NVlabs' ``.pkl``), not ``torch.save``'s zip archive nor its
    legacy format; told from the content, whatever the file is called."""
    with open(path, "rb") as handle:
        head = handle.read(len(_TORCH_LEGACY_HEAD))
    return head[:1] == b"\x80" and not head.startswith(_TORCH_LEGACY_HEAD)


def _unreadable(path: str, exc: BaseException) -> CheckpointError:
    return CheckpointError(f"{path} is not a readable checkpoint ({type(exc).__name__}: {first_line(exc)})")


def unwrap(obj: object, path: str = "checkpoint") -> tuple[dict[str, torch.Tensor], str | None]:
    """The generator's flat {name: tensor} dict and the wrapper key it came from (None: the top level).

    The first of ``GENERATOR_KEYS`` that holds a mapping (or a module) is read; ``module.`` prefixes are stripped.
    """
    if isinstance(obj, torch.nn.Module):
        obj = obj.state_dict()
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path} is not a state dict (it holds a {type(obj).__name__})")
    source = None
    for key in GENERATOR_KEYS:
        inner = obj.get(key)
        if isinstance(inner, torch.nn.Module):
            inner = inner.state_dict()
        if isinstance(inner, Mapping):
            obj, source = inner, key
            break
    tensors = {str(k).removeprefix("module."): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        where = f"its {source!r} entry" if source else "it"
        raise CheckpointError(f"{path} is not a state dict: {where} holds no tensors (keys: {_keys(obj)})")
    return tensors, source


def state_dict_of(obj: object, path: str = "checkpoint") -> dict[str, torch.Tensor]:
    """The generator's flat {name: tensor} dict (``unwrap`` without the key)."""
    return unwrap(obj, path)[0]


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


Layers = list[tuple[str, torch.Tensor]]


def _stylegan2_parts(state: Mapping[str, torch.Tensor], path: str) -> tuple[Layers, Layers]:
    """(modulated convs, ToRGBs), each in synthesis order, from whichever StyleGAN2 layout ``state`` has."""
    if "conv1.conv.modulation.weight" in state:                               # rosinality g_ema
        convs = [("conv1", state["conv1.conv.modulation.weight"])]
        convs += [(f"convs.{i}", state[k]) for i, k in _numbered(state, r"convs\.(\d+)\.conv\.modulation\.weight")]
        rgbs = [("to_rgb1", state["to_rgb1.conv.modulation.weight"])] if "to_rgb1.conv.modulation.weight" in state \
            else []
        rgbs += [(f"to_rgbs.{i}", state[k]) for i, k in _numbered(state, r"to_rgbs\.(\d+)\.conv\.modulation\.weight")]
        return convs, rgbs
    nv = re.compile(r"synthesis\.b(\d+)\.(conv0|conv1|torgb)\.affine\.weight")  # NVlabs stylegan2-ada-pytorch
    blocks = sorted(((int(m.group(1)), m.group(2), k) for k in state if (m := nv.fullmatch(k))),
                    key=lambda t: (t[0], ("conv0", "conv1", "torgb").index(t[1])))
    if blocks:
        return ([(f"b{r}.{kind}", state[k]) for r, kind, k in blocks if kind != "torgb"],
                [(f"b{r}.torgb", state[k]) for r, kind, k in blocks if kind == "torgb"])
    convs = [(f"layer{i}", state[k]) for i, k in _numbered(state, r"synthesis\.layer(\d+)\.style\.weight")]
    rgbs = [(f"output{i}", state[k]) for i, k in _numbered(state, r"synthesis\.output(\d+)\.style\.weight")]
    if not convs:
        raise CheckpointError(f"{path} has none of the StyleGAN2 style-modulation weights SeFa needs "
                              "(conv1.conv.modulation.weight, convs.N.conv.modulation.weight, "
                              "synthesis.bRES.convK.affine.weight or synthesis.layerN.style.weight); its keys begin "
                              f"{_keys(state)}")
    return convs, rgbs


def _stylegan2(state: Mapping[str, torch.Tensor], include_torgb: bool, like: str, path: str) -> Layers:
    convs, rgbs = _stylegan2_parts(state, path)
    if like == "engine":
        return convs + (rgbs if include_torgb else [])
    if not rgbs:
        raise CheckpointError(f"{path} has no ToRGB modulation weights, which like={like!r} factorizes")
    # genforce/sefa's last layer index is the final ToRGB; rosinality's script keeps to_rgb1 and drops to_rgbs.*
    return convs + [rgbs[-1] if like == "sefa" else rgbs[0]]


def _stylegan3(state: Mapping[str, torch.Tensor], include_torgb: bool, path: str) -> Layers:
    """The affines that take w in, numbered as W+ is: ``synthesis.input.affine.weight`` (ws[0]: the input's
    rotation and translation) as layer 0, then ``synthesis.L{i}_{res}_{channels}.affine.weight`` (ws[i+1]) in
    layer order, so that ``sefa --layers A-B`` and ``edit --layers A-B`` name the same codes; the last L layer
    (the ToRGB) only with ``include_torgb``."""
    found = _numbered(state, r"synthesis\.L(\d+)_\d+_\d+\.affine\.weight")
    if not found or "synthesis.input.affine.weight" not in state:
        raise CheckpointError(f"{path} has none of the StyleGAN3 affine weights SeFa needs "
                              f"(synthesis.input.affine.weight, synthesis.L<i>_<size>_<channels>.affine.weight); "
                              f"its keys begin {_keys(state)}")
    layers = [(key.split(".")[1], state[key]) for _, key in found]
    return [("input", state["synthesis.input.affine.weight"])] + (layers if include_torgb else layers[:-1])


def _stylegan(state: Mapping[str, torch.Tensor], path: str) -> Layers:
    for pattern in (r"synthesis\.layer(\d+)\.style\.weight",
                    r"synthesis\.layer(\d+)\.epilogue\.style_mod\.dense\.weight",
                    r"synthesis\.layer(\d+)\.epilogue\.style_mod\.dense\.fc\.weight"):
        found = _numbered(state, pattern)
        if found:
            return [(f"layer{i}", state[k]) for i, k in found]
    raise CheckpointError(f"{path} has none of the StyleGAN style-affine weights SeFa needs "
                          f"(synthesis.layerN.style.weight); its keys begin {_keys(state)}")


def _pggan(state: Mapping[str, torch.Tensor], path: str) -> Layers:
    for key in ("layer0.weight", "layer0.conv.weight", "layer0.fc.weight", "fc.weight"):
        if key in state:
            weight = state[key]
            if weight.ndim == 4:                                              # (out, z_dim, kh, kw)
                weight = weight.permute(0, 2, 3, 1).reshape(-1, weight.shape[1])
            return [(key.rsplit(".", 1)[0], weight)]
    raise CheckpointError(f"{path} has no PGGAN first layer (layer0.weight); its keys begin {_keys(state)}")


def _biggan(state: Mapping[str, torch.Tensor], path: str) -> Layers:
    for key in ("generator.gen_z.weight", "gen_z.weight", "generator.gen_z.weight_orig", "gen_z.weight_orig"):
        if key in state:
            weight = state[key]
            if weight.ndim != 2 or weight.shape[1] % 2:
                raise CheckpointError(f"{path}: {key} has shape {tuple(weight.shape)}; expected (out, 2·z_dim) "
                                      "taking [z, class embedding]")
            return [("gen_z", weight[:, : weight.shape[1] // 2])]
    raise CheckpointError(f"{path} has no BigGAN first linear layer (generator.gen_z.weight); its keys begin "
                          f"{_keys(state)}")


def check_like(family: str, like: str, include_torgb: bool = False) -> None:
    """Refuse a ``like`` the reference tool does not define for ``family``, or one combined with ToRGB choice."""
    if like not in LIKE:
        raise ValueError(f"like must be one of {', '.join(LIKE)}; got {like!r}")
    if like == "engine":
        return
    if include_torgb:
        raise ValueError(f"like {like} fixes which ToRGB layers are factorized; drop --include-torgb")
    if like == "sefa" and family == "stylegan3":
        raise ValueError("like sefa reproduces genforce/sefa's factorize_weight, which has no StyleGAN3; use the "
                         "engine's convention (the default) for stylegan3")
    if like == "rosinality" and family != "stylegan2":
        raise ValueError(f"like rosinality reproduces closed_form_factorization.py, which reads StyleGAN2 only; "
                         f"got --family {family}")
    if like == "sefa" and family == "biggan":
        raise ValueError("like sefa reproduces genforce/sefa's factorize_weight, which reads pggan, stylegan and "
                         "stylegan2 only; use the engine's convention (the default) for biggan")


def latent_weights(state: Mapping[str, torch.Tensor], family: str, *, include_torgb: bool = False,
                   like: str = "engine", path: str = "checkpoint") -> Layers:
    """The weights of ``family`` that act on the latent code: [(layer name, (out, latent_dim) float32)].

    ``like`` picks the StyleGAN2 layer set: "engine" (the convs; the ToRGBs after them with ``include_torgb``),
    "sefa" (the convs, then the final ToRGB: genforce/sefa's numbering) or "rosinality" (the convs, then
    ``to_rgb1``). For the other families "sefa" reads what "engine" reads.
    """
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {', '.join(FAMILIES)}; got {family!r}")
    check_like(family, like, include_torgb)
    if family == "stylegan2":
        layers = _stylegan2(state, include_torgb, like, path)
    elif family == "stylegan3":
        layers = _stylegan3(state, include_torgb, path)
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


def read_checkpoint_weights(path: str | os.PathLike, family: str, *, include_torgb: bool = False,
                            like: str = "engine", trust: bool = False) -> tuple[Layers, str | None]:
    """Load ``path`` safely: ``family``'s latent weights (see ``latent_weights``) and the wrapper key read."""
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {', '.join(FAMILIES)}; got {family!r}")
    check_like(family, like, include_torgb)
    state, source = unwrap(load_checkpoint(path, trust=trust), str(path))
    return latent_weights(state, family, include_torgb=include_torgb, like=like, path=str(path)), source


def read_latent_weights(path: str | os.PathLike, family: str, *, include_torgb: bool = False, like: str = "engine",
                        trust: bool = False) -> Layers:
    """Load ``path`` safely and return ``family``'s latent weights (see ``latent_weights``)."""
    return read_checkpoint_weights(path, family, include_torgb=include_torgb, like=like, trust=trust)[0]
