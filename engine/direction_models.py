"""LatentCLR's direction models and projectors as torch modules, stored as plain arrays + attrs (no pickles).

A direction model maps codes x (B, D) to K unit directions per code, (K, B, D) (Yüksel et al., paper 002, and
its public code catlab-team/latentclr):

* ``global``: K learned vectors, the same at every code (d_k(x) = d_k);
* ``linear``: d_k(x) = W_k x, one (D, D) matrix per direction, no bias;
* ``nonlinear``: d_k(x) = MLP_k(x), per direction ``depth`` linear layers of width D with batch norm and ReLU
  between them (bias on every layer but the last), as the public code's ``create_mlp``.

Every direction is normalised to unit length at each code; an edit is x + α d_k(x). The K per-direction
networks are held as stacked parameters (K, ...) and run as one batched product; batch norm of the K networks
is one ``batch_norm`` over K·width channels, which is each network's own batch norm over the batch.

A projector h maps a tapped layer's flattened features (N, F) to unit rows: ``identity`` (normalising only),
``linear`` (Linear(F, 128, no bias) + BatchNorm) or ``nonlinear`` (Linear(F, 256) BN ReLU Linear(256, 256) BN
ReLU Linear(256, 128, no bias)), the sizes of the public code's configs.

Store layout (``models/latentclr/<name>``, a zarr group): one float32 array per entry of the module's
``state_dict`` (``num_batches_tracked`` int64), named as ``state_dict`` names it, and group attrs
``{"format": FORMAT, "kind", "k", "size", "depth", ...}`` from which ``build_model`` rebuilds the module.
Stacked arrays keep the direction first: ``weight`` (K, D, D) of ``linear``; ``layers.i.weight`` (K, out, in),
``layers.i.bias`` (K, out), ``norms.i.weight|bias|running_mean|running_var`` (K·width,) of ``nonlinear``, where
layer i computes h ← h W_iᵀ + b_i, followed (but for the last) by batch norm i (eps 1e-5) and ReLU.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import zarr
from torch import nn
from torch.nn import functional as F

from engine.store import Store, StoreError

KINDS = ("global", "linear", "nonlinear")
PROJECTORS = ("identity", "linear", "nonlinear")
FORMAT = "latentclr-direction-model/1"
NONLINEAR_DEPTH = 3                 # the public code's configs (model/nonlinear.yaml, projector/nonlinear.yaml)
PROJECTOR_WIDTH = 256
PROJECTOR_OUT = 128
BN_EPS = 1e-5
BN_MOMENTUM = 0.1


def _uniform(shape: tuple[int, ...], fan_in: int, generator: torch.Generator) -> torch.Tensor:
    """torch.nn.Linear's default initialisation, U(-1/√fan_in, 1/√fan_in), drawn from ``generator``."""
    bound = 1.0 / math.sqrt(fan_in)
    return (torch.rand(shape, generator=generator) * 2 - 1) * bound


def unit_rows(x: torch.Tensor) -> torch.Tensor:
    """``x`` with its last axis scaled to unit length (a zero row stays zero: no direction, no move)."""
    return x / torch.linalg.vector_norm(x, dim=-1, keepdim=True).clamp_min(1e-12)


class DirectionModel(nn.Module):
    """K directions in a D-dimensional latent space, global or depending on the code (module docstring)."""

    def __init__(self, kind: str, k: int, size: int, *, depth: int = NONLINEAR_DEPTH,
                 generator: torch.Generator | None = None) -> None:
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"model must be one of {', '.join(KINDS)}; got {kind!r}")
        self.kind, self.k, self.size, self.depth = kind, int(k), int(size), int(depth)
        g = generator if generator is not None else torch.Generator().manual_seed(0)
        if kind == "global":
            self.directions = nn.Parameter(torch.randn(k, size, generator=g))
        elif kind == "linear":
            self.weight = nn.Parameter(_uniform((k, size, size), size, g))
        else:
            if depth < 2:
                raise ValueError(f"a nonlinear model needs depth ≥ 2; got {depth}")
            self.layers = nn.ModuleList()
            for i in range(depth):
                layer = nn.Module()
                layer.weight = nn.Parameter(_uniform((k, size, size), size, g))
                if i < depth - 1:
                    layer.bias = nn.Parameter(_uniform((k, size), size, g))
                self.layers.append(layer)
            self.norms = nn.ModuleList(nn.BatchNorm1d(k * size, eps=BN_EPS, momentum=BN_MOMENTUM)
                                       for _ in range(depth - 1))

    @property
    def z_dependent(self) -> bool:
        """Whether a direction depends on the code it is applied at (linear, nonlinear)."""
        return self.kind != "global"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Codes (B, D) -> unit directions (K, B, D)."""
        if self.kind == "global":
            return unit_rows(self.directions)[:, None, :].expand(-1, x.shape[0], -1)
        if self.kind == "linear":
            return unit_rows(torch.einsum("kde,be->kbd", self.weight, x))
        h = x.unsqueeze(0).expand(self.k, -1, -1)
        for i, layer in enumerate(self.layers):
            h = torch.einsum("kde,kbe->kbd", layer.weight, h)
            if i < self.depth - 1:
                h = h + layer.bias[:, None, :]
                batch = h.shape[1]
                flat = h.permute(1, 0, 2).reshape(batch, -1)           # (B, K·D): channel k·D + j
                h = F.relu(self.norms[i](flat)).reshape(batch, self.k, -1).permute(1, 0, 2)
        return unit_rows(h)

    def at(self, x: np.ndarray, row: int) -> np.ndarray:
        """Unit direction ``row`` at each of the codes ``x`` (S, D): (S, D) float32, batch norm in eval mode."""
        if not 0 <= row < self.k:
            raise ValueError(f"row must be in [0, {self.k}); got {row}")
        x = np.asarray(x, np.float32)
        if x.ndim != 2 or x.shape[1] != self.size:
            raise ValueError(f"codes must be (S, {self.size}); got {x.shape}")
        device = next(self.parameters()).device
        was_training = self.training
        self.eval()
        try:
            with torch.no_grad():
                out = self(torch.from_numpy(x).to(device))[row]
        finally:
            self.train(was_training)
        return out.float().cpu().numpy()

    def architecture(self) -> dict[str, Any]:
        """The attrs ``build_model`` rebuilds this module from."""
        return {"format": FORMAT, "kind": self.kind, "k": self.k, "size": self.size,
                "depth": self.depth if self.kind == "nonlinear" else None,
                "edit": "x + alpha * d_k(x) / |d_k(x)|"}


class Projector(nn.Module):
    """Flattened features (N, F) -> unit rows (N, out): ``identity``, ``linear`` or ``nonlinear`` (module docstring)."""

    def __init__(self, kind: str, in_features: int, *, out_features: int = PROJECTOR_OUT,
                 width: int = PROJECTOR_WIDTH, depth: int = NONLINEAR_DEPTH,
                 generator: torch.Generator | None = None) -> None:
        super().__init__()
        if kind not in PROJECTORS:
            raise ValueError(f"projector must be one of {', '.join(PROJECTORS)}; got {kind!r}")
        self.kind, self.in_features = kind, int(in_features)
        g = generator if generator is not None else torch.Generator().manual_seed(0)
        layers: list[nn.Module] = []
        if kind == "linear":
            layers = [_linear(in_features, out_features, False, g), nn.BatchNorm1d(out_features)]
        elif kind == "nonlinear":
            sizes = [in_features] + [width] * (depth - 1) + [out_features]
            for i in range(depth):
                layers.append(_linear(sizes[i], sizes[i + 1], i < depth - 1, g))
                if i < depth - 1:
                    layers += [nn.BatchNorm1d(sizes[i + 1]), nn.ReLU()]
        self.net = nn.Sequential(*layers)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return unit_rows(self.net(features.reshape(features.shape[0], -1)))


def _linear(fan_in: int, fan_out: int, bias: bool, g: torch.Generator) -> nn.Linear:
    layer = nn.Linear(fan_in, fan_out, bias=bias)
    with torch.no_grad():
        layer.weight.copy_(_uniform((fan_out, fan_in), fan_in, g))
        if bias:
            layer.bias.copy_(_uniform((fan_out,), fan_in, g))
    return layer


# ------------------------------------------------------------------------------------------------ storage
def module_arrays(module: nn.Module) -> dict[str, np.ndarray]:
    """A module's ``state_dict`` as numpy arrays (float32; integer buffers keep their type)."""
    return {name: value.detach().cpu().numpy().astype(np.float32) if value.is_floating_point()
            else value.detach().cpu().numpy() for name, value in module.state_dict().items()}


def load_arrays(module: nn.Module, arrays: dict[str, np.ndarray]) -> None:
    """Put ``arrays`` (as ``module_arrays`` returns them) into ``module``; a StoreError names what is missing."""
    expected = module.state_dict()
    missing = sorted(set(expected) - set(arrays))
    if missing:
        raise StoreError(f"the stored model lacks {', '.join(missing[:3])}")
    state = {}
    for name, target in expected.items():
        value = torch.from_numpy(np.asarray(arrays[name]))
        if tuple(value.shape) != tuple(target.shape):
            raise StoreError(f"the stored model's {name} has shape {tuple(value.shape)}; expected "
                             f"{tuple(target.shape)}")
        state[name] = value.to(target.dtype)
    module.load_state_dict(state)


def write_group(store: Store, key: str, arrays: dict[str, np.ndarray], attrs: dict[str, Any]) -> None:
    """Write the group ``key`` (e.g. ``models/latentclr/walk``) holding ``arrays`` and ``attrs``, all or nothing,
    replacing what is there: built in the store's staging folder and put in place in one step, as
    ``Store.write_direction`` does for an array (``engine.atomic``). The caller holds the store's lock."""
    from engine.store import jsonable

    def build(parent: zarr.Group, leaf: str) -> None:
        group = parent.create_group(leaf, attributes=jsonable(attrs))
        for name, value in arrays.items():
            value = np.array(value, order="C")          # (ascontiguousarray would make a 0-d array 1-d)
            array = group.create_array(name, shape=value.shape, dtype=value.dtype,
                                       chunks=value.shape if value.ndim else ())
            array[...] = value

    store.replace_node(key, build)


def read_group(store: Store, key: str) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """(arrays, attrs) of the group ``key``; a StoreError when the store has none."""
    try:
        group = store.group[key]
    except KeyError:
        raise StoreError(f"{store.path} has no {key}") from None
    if not isinstance(group, zarr.Group):
        raise StoreError(f"{store.path}: {key} is an array, not a model group")
    return {name: np.asarray(array[...]) for name, array in group.arrays()}, dict(group.attrs)


def has_group(store: Store, key: str) -> bool:
    try:
        return isinstance(store.group[key], zarr.Group)
    except KeyError:
        return False


def build_model(attrs: dict[str, Any]) -> DirectionModel:
    """An untrained ``DirectionModel`` of the architecture ``attrs`` describe (``DirectionModel.architecture``)."""
    if attrs.get("format") != FORMAT:
        raise StoreError(f"not a LatentCLR direction model (format {attrs.get('format')!r}, expected {FORMAT!r})")
    return DirectionModel(attrs["kind"], int(attrs["k"]), int(attrs["size"]),
                          depth=int(attrs.get("depth") or NONLINEAR_DEPTH))


def read_model(store: Store, key: str) -> DirectionModel:
    """The direction model stored in the group ``key``, in eval mode on the CPU."""
    arrays, attrs = read_group(store, key)
    model = build_model(attrs)
    load_arrays(model, arrays)
    return model.eval()


def load_direction_model(store: Store, key: str) -> DirectionModel | None:
    """The model of the direction ``key`` ('METHOD/NAME') when it depends on the code (its attrs say
    ``z_dependent`` and name the ``model`` group), else None: an ordinary fixed direction."""
    _, attrs = store.read_direction(key)
    if not attrs.get("z_dependent"):
        return None
    if not attrs.get("model"):
        raise StoreError(f"directions/{key} depends on the code but names no model group")
    return read_model(store, attrs["model"])


__all__ = ["DirectionModel", "KINDS", "PROJECTORS", "Projector", "build_model", "load_direction_model",
           "module_arrays", "load_arrays", "read_group", "read_model", "write_group"]
