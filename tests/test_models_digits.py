"""The shipped digits models: protocols, weight loading, and that they are trained (not noise)."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from engine.models.base import Factorizable, Generator, Predictor
from engine.models.digits import (CONFIG_FILE, GENERATOR_FILE, PREDICTOR_FILE, WEIGHTS_DIR, digits_generator,
                                  digits_predictor, load_config, log_odds)
from engine.models.registry import load_generator, load_predictor
from engine.models.train_digits import accuracy, heldout_split, load_digit_images, sample_check


@pytest.fixture(scope="module")
def G():
    return digits_generator()


@pytest.fixture(scope="module")
def P():
    return digits_predictor()


def test_generator_protocol(G):
    assert isinstance(G, Generator) and isinstance(G, Factorizable)
    assert G.has_mapping and G.num_ws == 1
    z = torch.randn(32, G.z_dim, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ws = G.mapping(z)
        images = G.synthesis(ws)
    assert ws.shape == (32, G.num_ws, G.w_dim)
    assert images.shape == (32, 1, 16, 16) and images.dtype == torch.float32
    assert images.min() >= -1.0 and images.max() <= 1.0
    [(name, weight)] = G.latent_weights()
    assert name == "fc" and weight.shape[1] == G.w_dim and weight.shape[0] > G.w_dim


def test_predictor_protocol_scores_are_log_odds(P, G):
    assert isinstance(P, Predictor)
    assert P.attributes == [f"digit_{k}" for k in range(10)]
    with torch.no_grad():
        images = G(torch.randn(16, G.z_dim, generator=torch.Generator().manual_seed(1)))
        scores, logits = P(images), P.logits(images)
    assert scores.shape == (16, 10)
    torch.testing.assert_close(torch.sigmoid(scores), logits.softmax(dim=1), atol=1e-5, rtol=1e-4)


def test_log_odds_does_not_saturate():
    logits = torch.tensor([[60.0, 0.0, -60.0]])
    torch.testing.assert_close(log_odds(logits), torch.tensor([[60.0, -60.0, -120.0]]))


def test_predictor_rejects_other_image_shapes(P):
    with pytest.raises(ValueError, match=r"\(B, 1, 16, 16\)"):
        P(torch.zeros(2, 3, 16, 16))


def test_generated_samples_are_confident_digits_of_every_class(G, P):
    check = sample_check(G, P, n=512, seed=0)
    assert check["confident_fraction"] >= 0.8
    assert all(count > 0 for count in check["class_histogram"])


def test_classifier_heldout_accuracy(P):
    images, labels = load_digit_images()
    _, heldout = heldout_split(len(images), load_config()["seed"])
    assert accuracy(P, images[heldout], labels[heldout]) >= 0.95


@pytest.mark.parametrize("name", [GENERATOR_FILE, PREDICTOR_FILE])
def test_weights_are_plain_state_dicts(name):
    state = torch.load(WEIGHTS_DIR / name, weights_only=True, map_location="cpu")
    assert isinstance(state, dict) and all(isinstance(value, torch.Tensor) for value in state.values())


@pytest.mark.parametrize("factory, name", [(digits_generator, GENERATOR_FILE), (digits_predictor, PREDICTOR_FILE)])
def test_missing_or_corrupt_weights_name_the_file(tmp_path: Path, factory, name):
    shutil.copy(WEIGHTS_DIR / CONFIG_FILE, tmp_path / CONFIG_FILE)
    with pytest.raises(ValueError, match=name):
        factory(tmp_path)
    (tmp_path / name).write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match=name):
        factory(tmp_path)


def test_missing_config_names_the_file(tmp_path: Path):
    with pytest.raises(ValueError, match=CONFIG_FILE):
        digits_generator(tmp_path)


def test_registry_builds_the_builtins():
    G = load_generator("digits")
    P = load_predictor("digits", generator=G)
    with torch.no_grad():
        scores = P(G.synthesis(G.mapping(torch.zeros(2, G.z_dim))))
    assert scores.shape == (2, 10) and torch.isfinite(scores).all()
