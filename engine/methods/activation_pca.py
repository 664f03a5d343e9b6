"""GANSpace on a layer's activations: PCA of what one layer of the generator outputs, regressed back to codes.

For generators without a W space (PGGAN, BigGAN) GANSpace takes the principal components of an early layer's
activations and maps them back to the latent space by least squares (Härkönen et al., paper 002). Two streamed
passes over the store's codes, each running the generator up to the tapped layer only (``engine.taps``):

1. exact streaming PCA of the flattened activations (or, for layers wider than ``max_features``, of a seeded
   Gaussian random projection of them, said in the attrs), and the mean of the codes;
2. the regression: each row's coordinates c on the k components, and Cᵀc / Cᵀx accumulated, so that
   Z = (Σ c cᵀ)⁻¹ Σ c (x - x̄)ᵀ; each row of Z, normalised, is the latent direction of one component.

The codes run through the generator are ``latents/z`` (with each row's class label); the directions live in
the store's w when it has it (the space GANSpace regresses to for StyleGAN), else z.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from engine.store import Store

PROJECTION_SEED = 0


def activation_pca(reader: Store, layer: str, *, k: int | None, generator: Any = None, device: str = "cpu",
                   batch: int = 256, max_features: int = 4096) -> tuple[np.ndarray, dict[str, Any]]:
    """(unit directions (k, D) in the store's w or z, attrs) of GANSpace's PCA on ``layer``'s activations."""
    import torch

    from kernels import PCA
    from engine.models.base import conditional
    from engine.models.registry import load_generator
    from engine.spaces import default_space
    from engine.taps import check_layer, features

    G = generator if generator is not None and not isinstance(generator, str) else \
        load_generator(generator or reader.meta.get("generator"), device)
    check_layer(G, layer)
    space = default_space(reader)
    labels = reader.array("labels") if conditional(G) else None
    dev = torch.device(device)

    def blocks():
        for rows, z in reader.iter_rows("latents/z"):
            target = np.asarray(reader.array(f"latents/{space}")[rows], np.float64) if space != "z" else \
                z.astype(np.float64)
            for start in range(0, z.shape[0], batch):
                zt = torch.from_numpy(np.ascontiguousarray(z[start:start + batch], np.float32)).to(dev)
                lt = None if labels is None else torch.from_numpy(
                    np.asarray(labels[rows][start:start + batch], np.int64)).to(dev)
                with torch.inference_mode():
                    feats = features(G, zt, layer, lt).double().cpu().numpy()
                yield feats, target[start:start + batch]

    width = None
    projection = None
    state, code_sum, count = None, None, 0
    for feats, target in blocks():
        if width is None:
            width = feats.shape[1]
            if width > max_features:
                rng = np.random.default_rng(PROJECTION_SEED)
                projection = rng.standard_normal((width, max_features)) / np.sqrt(max_features)
        if projection is not None:
            feats = feats @ projection
        part = PCA(k).partial_fit(feats.astype(np.float32))
        state = part if state is None else state.merge(part)
        code_sum = target.sum(0) if code_sum is None else code_sum + target.sum(0)
        count += target.shape[0]
    components = np.asarray(state.components_, np.float64)             # (k, F')
    feature_mean = np.asarray(state.mean_, np.float64)
    code_mean = code_sum / count
    gram = np.zeros((components.shape[0],) * 2)
    cross = np.zeros((components.shape[0], code_mean.size))
    for feats, target in blocks():
        if projection is not None:
            feats = feats @ projection
        coords = (feats - feature_mean) @ components.T
        gram += coords.T @ coords
        cross += coords.T @ (target - code_mean)
    directions = np.linalg.lstsq(gram, cross, rcond=None)[0]
    norms = np.linalg.norm(directions, axis=1, keepdims=True)
    if not (norms > 0).all():
        raise ValueError(f"layer {layer!r}: a component has no latent direction (its coordinates do not depend "
                         "on the codes)")
    attrs = {"space": space, "method": "ganspace", "tapped_layer": layer, "n_rows": int(count),
             "feature_width": int(width), "explained_variance_ratio": np.asarray(state.explained_variance_ratio_),
             "explained_variance": np.asarray(state.explained_variance_), "regression": "least squares",
             "projection": None if projection is None else
             {"kind": "gaussian", "seed": PROJECTION_SEED, "features": int(max_features)},
             "regression_norms": norms[:, 0]}
    return (directions / norms).astype(np.float32), attrs


def stored_name(layer: str) -> str:
    """``directions/ganspace/<name>`` of a tapped layer: its module name (slashes are not allowed in a node)."""
    name = layer.replace("/", "_")
    return name if not name.startswith(".") else "_" + name.lstrip(".")


