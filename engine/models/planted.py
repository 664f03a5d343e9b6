"""The ``planted`` generator and predictor: a model whose answers are known in closed form.

Everything the methods should find is planted from one seed and exposed in ``PlantedTruth``:

- mapping  w = M z + b with M = U diag(s) Vᵀ and a decaying spectrum s, so the covariance of W is
  U diag(s²) Uᵀ and GANSpace's PCA has a unique answer (U's columns);
- synthesis: a first fully-connected layer A (split into ``num_ws`` layers, one per copy of w) whose rows are
  drawn around a few orthonormal directions p_k with decreasing weights, so the eigenvectors of AᵀA that SeFa
  finds are p_k in order; images are tanh of A·ws reshaped to (3, 16, 16);
- predictor: attribute a scores n_aᵀz + noise_a, where the n_a have a chosen Gram matrix (correlated
  attributes, like age / eyeglasses in InterFaceGAN) and noise_a = σ/√k Σ_j (v_jᵀz)(v'_jᵀz) over directions
  orthogonal to every n: a quadratic form is uncorrelated with every linear function of z ~ N(0, I), so to a
  linear classifier it is noise, yet it is a deterministic function of the image. The predictor reads z back
  from the image (atanh, then the pseudo-inverse of the synthesis), so it scores edited images correctly too.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

ATTRIBUTES = ["age", "gender", "eyeglasses", "smile", "pose"]
# Planted cosines between attribute directions in z (the InterFaceGAN boundary-cosine table's truth).
ATTRIBUTE_GRAM = np.array([
    [1.00, 0.20, 0.50, 0.00, 0.00],
    [0.20, 1.00, 0.30, 0.25, 0.00],
    [0.50, 0.30, 1.00, 0.00, 0.00],
    [0.00, 0.25, 0.00, 1.00, 0.00],
    [0.00, 0.00, 0.00, 0.00, 1.00],
])
SEFA_WEIGHTS = np.array([4.0, 3.2, 2.6, 2.1, 1.7])   # weights of the planted SeFa directions, descending
NOISE_PAIRS = 8                                    # products per attribute in the quadratic noise
IMAGE_SHAPE = (3, 16, 16)
PRE_ACTIVATION_STD = 0.5                           # keeps tanh near-linear so images invert stably


@dataclass(frozen=True)
class PlantedTruth:
    """Ground truth of a planted model (float64 numpy arrays; rows are unit vectors unless noted)."""

    attributes: list[str]
    attribute_directions_z: np.ndarray   # (m, z_dim), Gram matrix = ATTRIBUTE_GRAM
    noise: float                         # σ: standard deviation of each attribute's noise
    mapping_matrix: np.ndarray           # M, (w_dim, z_dim)
    mapping_bias: np.ndarray             # b, (w_dim,)
    pca_directions_w: np.ndarray         # U's columns as rows, ordered by variance, (w_dim, w_dim)
    pca_variances_w: np.ndarray          # s², descending
    sefa_directions_w: np.ndarray        # planted p_k, (len(SEFA_WEIGHTS), w_dim), in eigenvalue order

    def attribute_directions(self, space: str) -> np.ndarray:
        """Unit normals of the ideal linear boundaries in ``space`` ('z' or 'w')."""
        if space == "z":
            return self.attribute_directions_z.copy()
        if space == "w":
            # nᵀz = nᵀM⁻¹(w - b): the w-space normal is M⁻ᵀn.
            d = np.linalg.solve(self.mapping_matrix.T, self.attribute_directions_z.T).T
            return d / np.linalg.norm(d, axis=1, keepdims=True)
        raise ValueError(f"planted truth has spaces 'z' and 'w', not {space!r}")

    def score_correlation(self) -> np.ndarray:
        """Pearson correlation of the scores: the Gram matrix shrunk by the noise, G / (1 + σ²) off-diagonal."""
        corr = ATTRIBUTE_GRAM / (1.0 + self.noise ** 2)
        np.fill_diagonal(corr, 1.0)
        return corr


def _orthonormal(rng: np.random.Generator, d: int, k: int) -> np.ndarray:
    q, r = np.linalg.qr(rng.standard_normal((d, k)))
    return (q * np.sign(np.diag(r))).T  # (k, d)


def build_truth(seed: int, z_dim: int, w_dim: int, noise: float, num_ws: int) -> tuple[PlantedTruth, dict]:
    """Draw every planted quantity from ``seed``; returns the truth and the raw parameters of the networks."""
    m = len(ATTRIBUTES)
    need = m + 2 * NOISE_PAIRS * m
    if z_dim < need:
        raise ValueError(f"planted z_dim must be at least {need}; got {z_dim}")
    if w_dim < 2 * len(SEFA_WEIGHTS):
        raise ValueError(f"planted w_dim must be at least {2 * len(SEFA_WEIGHTS)}; got {w_dim}")
    rng = np.random.default_rng(seed)
    basis = _orthonormal(rng, z_dim, need)
    directions = np.linalg.cholesky(ATTRIBUTE_GRAM) @ basis[:m]           # Gram = L Lᵀ = ATTRIBUTE_GRAM
    noise_dirs = basis[m:].reshape(m, NOISE_PAIRS, 2, z_dim)

    U = _orthonormal(rng, w_dim, w_dim).T                                   # columns
    V = _orthonormal(rng, z_dim, min(z_dim, w_dim)).T
    s = 0.3 + 2.7 * 0.93 ** np.arange(min(z_dim, w_dim))
    M = (U[:, : s.size] * s) @ V.T                                          # (w_dim, z_dim)
    b = 0.1 * rng.standard_normal(w_dim)

    out = int(np.prod(IMAGE_SHAPE))
    p = _orthonormal(rng, w_dim, len(SEFA_WEIGHTS))
    rows = (rng.standard_normal((out, p.shape[0])) * SEFA_WEIGHTS) @ p
    rows += rng.standard_normal((out, w_dim)) / np.sqrt(w_dim)
    A = rows / np.linalg.norm(rows, axis=1, keepdims=True)
    # Scale so pre-activations have the chosen spread under the W distribution.
    cov_w = M @ M.T
    gain = PRE_ACTIVATION_STD / np.sqrt(np.mean(np.einsum("ij,jk,ik->i", A, cov_w, A)))
    bias = 0.05 * rng.standard_normal(out)

    truth = PlantedTruth(
        attributes=list(ATTRIBUTES), attribute_directions_z=directions, noise=float(noise),
        mapping_matrix=M, mapping_bias=b, pca_directions_w=U[:, : s.size].T, pca_variances_w=s ** 2,
        sefa_directions_w=p,
    )
    params = dict(M=M, b=b, A=A, gain=gain, bias=bias, noise_dirs=noise_dirs)
    return truth, params


class PlantedGenerator(nn.Module):
    """Linear-Gaussian generator with planted PCA and SeFa structure (see the module docstring)."""

    has_mapping = True

    def __init__(self, seed: int = 0, z_dim: int = 512, w_dim: int = 512, num_ws: int = 4, noise: float = 1.5):
        super().__init__()
        if num_ws < 1 or int(np.prod(IMAGE_SHAPE)) % num_ws:
            raise ValueError(f"planted num_ws must divide {int(np.prod(IMAGE_SHAPE))}; got {num_ws}")
        self.z_dim, self.w_dim, self.num_ws = int(z_dim), int(w_dim), int(num_ws)
        self.truth, params = build_truth(seed, self.z_dim, self.w_dim, noise, self.num_ws)
        self._params = params
        f32 = lambda a: torch.as_tensor(a, dtype=torch.float32)  # noqa: E731
        self.register_buffer("map_weight", f32(params["M"]))
        self.register_buffer("map_bias", f32(params["b"]))
        # A split by layer: layer i produces its share of pixels from its own copy of w.
        self.register_buffer("fc_weight", f32(params["A"]).reshape(self.num_ws, -1, self.w_dim))
        self.register_buffer("fc_bias", f32(params["bias"]).reshape(self.num_ws, -1))
        self.gain = float(params["gain"])

    def mapping(self, z: torch.Tensor) -> torch.Tensor:
        w = z @ self.map_weight.T + self.map_bias
        return w[:, None, :].expand(-1, self.num_ws, -1)

    def synthesis(self, ws: torch.Tensor) -> torch.Tensor:
        h = torch.einsum("bld,lod->blo", ws, self.fc_weight) + self.fc_bias
        return torch.tanh(self.gain * h).reshape(ws.shape[0], *IMAGE_SHAPE)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.synthesis(self.mapping(z))

    def latent_weights(self) -> list[tuple[str, torch.Tensor]]:
        return [(f"fc{i}", self.fc_weight[i]) for i in range(self.num_ws)]


class PlantedPredictor(nn.Module):
    """Scores planted images: noisy linear attributes of the z that made them (see the module docstring)."""

    def __init__(self, generator: PlantedGenerator):
        super().__init__()
        truth, params = generator.truth, generator._params
        self.attributes = list(truth.attributes)
        m = len(self.attributes)
        # Read z back: h = A (M z + b) + bias  =>  z = (A M)⁺ (h - A b - bias).
        AM = params["A"] @ params["M"]
        inverse = np.linalg.pinv(AM)
        offset = params["A"] @ params["b"] + params["bias"]
        readout_dirs = np.concatenate([truth.attribute_directions_z, params["noise_dirs"].reshape(-1, AM.shape[1])])
        readout = readout_dirs @ inverse                                # (m + 2·pairs·m, pixels)
        f32 = lambda a: torch.as_tensor(a, dtype=torch.float32)  # noqa: E731
        self.register_buffer("readout", f32(readout))
        self.register_buffer("readout_offset", f32(readout @ offset))
        self.gain = generator.gain
        self.m = m
        self.noise_scale = truth.noise / np.sqrt(NOISE_PAIRS)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.reshape(images.shape[0], -1).clamp(-1 + 1e-6, 1 - 1e-6)
        h = torch.atanh(x) / self.gain
        proj = h @ self.readout.T - self.readout_offset
        linear = proj[:, : self.m]
        pairs = proj[:, self.m:].reshape(-1, self.m, NOISE_PAIRS, 2)
        noise = (pairs[..., 0] * pairs[..., 1]).sum(-1) * self.noise_scale
        return linear + noise


def planted_generator(seed: int = 0, z_dim: int = 512, w_dim: int = 512, num_ws: int = 4,
                      noise: float = 1.5) -> PlantedGenerator:
    """Factory for ``--generator planted[:seed=..,z_dim=..,w_dim=..,num_ws=..,noise=..]``."""
    return PlantedGenerator(seed=seed, z_dim=z_dim, w_dim=w_dim, num_ws=num_ws, noise=noise)


def planted_predictor(generator: object = None) -> PlantedPredictor:
    """Factory for ``--predictor planted``: reads the planted generator it is sampled with."""
    if not isinstance(generator, PlantedGenerator):
        raise ValueError("the 'planted' predictor only scores images of the 'planted' generator")
    return PlantedPredictor(generator)
