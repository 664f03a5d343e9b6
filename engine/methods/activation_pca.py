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
    """(unit directions (k, D) in the store's w or z, attrs) of GANSpace's PCA on ``layer``'s activations.

    The activations stay on ``device``: the projection, the streaming PCA and the regression's sums run there;
    only the (k, k) and (k, D) sums and the PCA's results come back to the host.
    """
    import torch

    from kernels import PCA
    from engine.device_io import to_device, to_host
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
                zt = to_device(np.ascontiguousarray(z[start:start + batch], np.float32), dev)
                lt = None if labels is None else to_device(
                    np.asarray(labels[rows][start:start + batch], np.int64), dev)
                with torch.inference_mode():
                    feats = features(G, zt, layer, lt).double()
                yield feats, to_device(target[start:start + batch], dev)

    width = None
    projection = None
    state, code_sum, count = None, None, 0
    for feats, target in blocks():
        if width is None:
            width = feats.shape[1]
            if width > max_features:
                rng = np.random.default_rng(PROJECTION_SEED)
                projection = to_device(rng.standard_normal((width, max_features)) / np.sqrt(max_features), dev)
        if projection is not None:
            feats = feats @ projection
        part = PCA(k).partial_fit(feats.float())
        state = part if state is None else state.merge(part)
        code_sum = target.sum(0) if code_sum is None else code_sum + target.sum(0)
        count += target.shape[0]
    components = state.components_.to(dev, torch.float64)              # (k, F')
    feature_mean = state.mean_.to(dev, torch.float64)
    code_mean = code_sum / count
    gram = torch.zeros((components.shape[0],) * 2, dtype=torch.float64, device=dev)
    cross = torch.zeros((components.shape[0], code_mean.numel()), dtype=torch.float64, device=dev)
    for feats, target in blocks():
        if projection is not None:
            feats = feats @ projection
        coords = (feats - feature_mean) @ components.T
        gram += coords.T @ coords
        cross += coords.T @ (target - code_mean)
    directions = np.linalg.lstsq(to_host(gram), to_host(cross), rcond=None)[0]
    norms = np.linalg.norm(directions, axis=1, keepdims=True)
    if not (norms > 0).all():
        raise ValueError(f"layer {layer!r}: a component has no latent direction (its coordinates do not depend "
                         "on the codes)")
    attrs = {"space": space, "method": "ganspace", "tapped_layer": layer, "n_rows": int(count),
             "feature_width": int(width), "explained_variance_ratio": to_host(state.explained_variance_ratio_),
             "explained_variance": to_host(state.explained_variance_), "regression": "least squares",
             "projection": None if projection is None else
             {"kind": "gaussian", "seed": PROJECTION_SEED, "features": int(max_features)},
             "regression_norms": norms[:, 0]}
    return (directions / norms).astype(np.float32), attrs


def stored_name(layer: str) -> str:
    """``directions/ganspace/<name>`` of a tapped layer: its module name (slashes are not allowed in a node)."""
    name = layer.replace("/", "_")
    return name if not name.startswith(".") else "_" + name.lstrip(".")


