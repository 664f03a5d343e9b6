"""The planted models carry the ground truth the methods are tested against: check it holds."""
from __future__ import annotations

import numpy as np
import torch

from engine.models import load_generator, load_predictor
from engine.models.planted import ATTRIBUTE_GRAM
from tests.conftest import PLANTED_SMALL


def _sample(n=20_000, seed=0):
    G = load_generator(PLANTED_SMALL)
    P = load_predictor("planted", G)
    z = torch.randn(n, G.z_dim, generator=torch.Generator().manual_seed(seed))
    with torch.inference_mode():
        ws = G.mapping(z)
        return G, z.double().numpy(), ws[:, 0].double().numpy(), P(G.synthesis(ws)).double().numpy()


def test_scores_are_noisy_linear_functions_along_planted_directions():
    G, z, _, scores = _sample()
    truth = G.truth
    np.testing.assert_allclose(truth.attribute_directions_z @ truth.attribute_directions_z.T, ATTRIBUTE_GRAM, atol=1e-12)
    linear = z @ truth.attribute_directions_z.T
    expected = 1 / np.sqrt(1 + truth.noise ** 2)           # corr(nᵀz, nᵀz + σ·noise)
    for a in range(len(truth.attributes)):
        assert abs(np.corrcoef(linear[:, a], scores[:, a])[0, 1] - expected) < 0.02
    # Noise is a quadratic form: uncorrelated with every linear function, so z explains only the planted part.
    coef, *_ = np.linalg.lstsq(np.c_[z, np.ones(len(z))], scores, rcond=None)
    fitted = coef[:-1].T / np.linalg.norm(coef[:-1].T, axis=1, keepdims=True)
    assert np.all(np.sum(fitted * truth.attribute_directions_z, axis=1) > 0.97)
    np.testing.assert_allclose(np.corrcoef(scores.T), truth.score_correlation(), atol=0.03)


def test_mapping_has_the_planted_decaying_spectrum():
    G, _, w, _ = _sample()
    truth = G.truth
    cov = np.cov(w.T)
    top = truth.pca_directions_w[:3]
    variances = np.einsum("ij,jk,ik->i", top, cov, top)
    np.testing.assert_allclose(variances, truth.pca_variances_w[:3], rtol=0.05)
    assert np.all(np.diff(truth.pca_variances_w) < 0)


def test_first_layer_plants_the_sefa_directions_in_order():
    G = load_generator(PLANTED_SMALL)
    A = torch.cat([weight for _, weight in G.latent_weights()]).double().numpy()
    A /= np.linalg.norm(A, axis=1, keepdims=True)
    values, vectors = np.linalg.eigh(A.T @ A)
    vectors = vectors[:, ::-1]
    k = len(G.truth.sefa_directions_w)
    cos = np.abs(np.sum(vectors[:, :k].T * G.truth.sefa_directions_w, axis=1))
    assert np.all(cos > 0.97), cos


def test_predictor_reads_edited_images():
    G, z, _, _ = _sample(n=256)
    P = load_predictor("planted", G)
    n = torch.as_tensor(G.truth.attribute_directions_z[3], dtype=torch.float32)
    z = torch.as_tensor(z, dtype=torch.float32)
    with torch.inference_mode():
        before = P(G(z))[:, 3]
        after = P(G(z + 2.0 * n))[:, 3]
    np.testing.assert_allclose((after - before).numpy(), 2.0, atol=0.05)
