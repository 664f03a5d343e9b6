"""The two model protocols every part of latent-engine speaks.

The vocabulary is StyleGAN's (``z_dim``, ``w_dim``, ``num_ws``, ``mapping``, ``synthesis``) because that is
what researchers in this field already know. Any ``torch.nn.Module`` with these members works: built-ins,
loaded checkpoints and the user's own ``package.module:factory`` models alike.
"""
from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch


@runtime_checkable
class Generator(Protocol):
    """A pretrained generator: latent code in, images in [-1, 1] out.

    Attributes:
        z_dim: size of the input code z ~ N(0, I).
        w_dim: size of the mapped code w (equal to ``z_dim`` when there is no mapping network).
        num_ws: how many layer-wise copies of w the synthesis network takes (W+ has shape (num_ws, w_dim)).
        has_mapping: whether ``mapping`` is a real network; if not, w is z and only the z space exists.
    """

    z_dim: int
    w_dim: int
    num_ws: int
    has_mapping: bool

    def mapping(self, z: torch.Tensor) -> torch.Tensor:
        """(B, z_dim) -> ws (B, num_ws, w_dim): the per-layer codes the synthesis takes, after any truncation
        (StyleGAN's convention). A generator whose mapping truncates also defines ``mapping_w`` (below)."""
        ...

    def synthesis(self, ws: torch.Tensor) -> torch.Tensor:
        """ws (B, num_ws, w_dim) -> images (B, C, H, W) with values in [-1, 1]."""
        ...


@runtime_checkable
class Factorizable(Protocol):
    """A generator that exposes the weights SeFa factorizes (optional beside ``Generator``).

    ``latent_weights()`` returns, in layer order, ``(layer_name, weight)`` pairs where ``weight`` has shape
    (out_features, w_dim) and acts directly on the latent code: the code is z for generators without a
    mapping network (PGGAN's first layer) and w otherwise (StyleGAN's per-layer style affines).
    """

    def latent_weights(self) -> list[tuple[str, torch.Tensor]]:
        ...


@runtime_checkable
class Predictor(Protocol):
    """Scores images: one column per attribute, larger means more of the attribute.

    Scores should be unbounded (logits, log-odds, raw measurements), not saturating probabilities:
    InterFaceGAN ranks rows by score, and ties at 0 or 1 break that ranking.
    """

    attributes: list[str]

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """images (B, C, H, W) in [-1, 1] -> scores (B, len(attributes))."""
        ...


# A generator whose mapping truncates (StyleGAN's ψ) also defines, beside the protocol:
#   mapping_w(z) -> (B, w_dim)           the mapping network's output before truncation (stored as latents/w)
#   truncate(w)  -> (B, num_ws, w_dim)   the per-layer codes the synthesis takes for that w (what mapping does)
# so that w-space edits are truncated as the sampled codes were (engine.spaces.synthesis_input).


# A generator with per-layer noise inputs (StyleGAN, StyleGAN2) may also expose them, for inversion:
#   noise_inputs: tuple of (layer name, resolution r), in synthesis order
#   synthesis(ws, ..., noise_maps=[(B, 1, r, r) per noise input])   the maps replace the generator's own noise
# (``noise_inputs`` / ``synthesize`` below).


# A class-conditional generator (BigGAN, a conditional StyleGAN2-ADA) also has:
#   num_classes: int                         how many classes its labels index (> 0)
#   label_choice: tuple[int, ...] | None     the classes a sampling run draws from (None: all), from its options
#   mapping(z, labels), synthesis(ws, labels) and mapping_w(z, labels), labels (B,) int64
# and a generator whose z is not N(0, I) says how it is drawn:
#   latent_distribution = {"kind": "truncated_normal", "bound": 2.0, "scale": ψ}   (BigGAN's truncation trick)
# Callers go through ``map_codes`` / ``synthesize`` / ``mapped_w``, which pass labels only to such generators.


def conditional(G: object) -> bool:
    """Whether ``G`` takes class labels beside its codes."""
    return int(getattr(G, "num_classes", 0) or 0) > 0


def _labels_for(G: object, labels: torch.Tensor | None, batch: int) -> tuple:
    if not conditional(G):
        return ()
    if labels is None:
        raise ValueError(f"generator {getattr(G, 'spec', G)!r} is class-conditional: its codes need class labels")
    if labels.shape != (batch,):
        raise ValueError(f"labels must have shape ({batch},), one per code; got {tuple(labels.shape)}")
    return (labels,)


def map_codes(G: Generator, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
    """``G.mapping(z)``, with each code's class label where ``G`` is class-conditional."""
    return G.mapping(z, *_labels_for(G, labels, z.shape[0]))


def synthesize(G: Generator, ws: torch.Tensor, labels: torch.Tensor | None = None,
               noise_maps: list[torch.Tensor] | None = None) -> torch.Tensor:
    """``G.synthesis(ws)``, with each code's class label where ``G`` is class-conditional, and per-image
    ``noise_maps`` (one per ``noise_inputs(G)`` entry) where given."""
    if noise_maps is None:
        return G.synthesis(ws, *_labels_for(G, labels, ws.shape[0]))
    if not noise_inputs(G):
        raise ValueError(f"generator {getattr(G, 'spec', G)!r} has no noise inputs to take noise maps")
    return G.synthesis(ws, *_labels_for(G, labels, ws.shape[0]), noise_maps=noise_maps)


def noise_inputs(G: object) -> tuple[tuple[str, int], ...]:
    """(layer name, resolution r) of each per-image noise input ``G.synthesis(..., noise_maps=)`` takes as a
    (B, 1, r, r) map; empty for a generator without them."""
    return tuple((str(name), int(res)) for name, res in getattr(G, "noise_inputs", ()) or ())


def mapped_w(G: Generator, z: torch.Tensor, ws: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
    """w, the mapping network's output before truncation: ``G.mapping_w(z)`` where the generator defines it
    (generators that truncate must), else the first layer's copy in ``ws`` (which is w when nothing truncates)."""
    mapping_w = getattr(G, "mapping_w", None)
    return mapping_w(z, *_labels_for(G, labels, z.shape[0])) if callable(mapping_w) else ws[:, 0]


class IdentityMapping:
    """Mixin for generators without a mapping network: w is z, broadcast to ``num_ws`` layers."""

    has_mapping = False

    def mapping(self, z: torch.Tensor) -> torch.Tensor:
        return z[:, None, :].expand(-1, self.num_ws, -1)


def check_generator(G: object, spec: str) -> None:
    """Raise ValueError naming ``spec`` if ``G`` lacks a member of the Generator protocol."""
    missing = [name for name in ("z_dim", "w_dim", "num_ws", "has_mapping", "mapping", "synthesis")
               if not hasattr(G, name)]
    if missing:
        raise ValueError(f"generator {spec!r} is missing {', '.join(missing)} (see engine.models.Generator)")


def check_predictor(P: object, spec: str) -> None:
    """Raise ValueError naming ``spec`` if ``P`` is not a Predictor."""
    if not callable(P) or not isinstance(getattr(P, "attributes", None), (list, tuple)) or not P.attributes:
        raise ValueError(f"predictor {spec!r} must be callable and have a non-empty list `attributes`")
