"""kernels.pearson / PearsonState against numpy.corrcoef; cosine_matrix and best_match against numpy."""

import numpy as np
import pytest
import torch

import kernels


@pytest.fixture(scope="module")
def scores():
    """Correlated columns with a large common offset and very different scales (numerically unkind)."""
    rng = np.random.default_rng(2)
    latent = rng.standard_normal((20000, 3))
    mix = rng.standard_normal((3, 9))
    X = latent @ mix + 0.3 * rng.standard_normal((20000, 9))
    return (X * np.logspace(-2, 2, 9) + 1e3).astype(np.float32)


def test_pearson_matches_corrcoef(scores):
    ref = np.corrcoef(scores.astype(np.float64), rowvar=False)
    np.testing.assert_allclose(kernels.pearson(scores), ref, atol=1e-6)
    assert kernels.pearson(torch.from_numpy(scores)).dtype == torch.float64


def test_streaming_and_merged_states_equal_one_pass(scores):
    one_pass = kernels.pearson(scores)
    state = kernels.PearsonState()
    for chunk in np.array_split(scores, 7):
        state.update(chunk)
    left = kernels.PearsonState().update(scores[:123])
    right = kernels.PearsonState().update(scores[123:])
    merged = kernels.PearsonState().merge(left).merge(right)
    assert state.n_samples_seen_ == merged.n_samples_seen_ == len(scores)
    np.testing.assert_allclose(state.result(), one_pass, atol=1e-6)  # float32 GEMMs of other centrings
    np.testing.assert_allclose(merged.result(), one_pass, atol=1e-6)


def test_constant_column_is_nan_like_numpy(scores):
    X = scores[:1000].copy()
    X[:, 2] = 7.0
    corr = kernels.pearson(X)
    assert np.isnan(corr[2]).all() and np.isnan(corr[:, 2]).all()
    keep = [0, 1, 3]
    np.testing.assert_allclose(corr[np.ix_(keep, keep)], np.corrcoef(X[:, keep].astype(np.float64), rowvar=False),
                               atol=1e-6)


def test_cosine_matrix_and_best_match_ignore_sign_as_documented():
    rng = np.random.default_rng(4)
    B = rng.standard_normal((6, 32))
    A = np.stack([-B[4] + 0.1 * rng.standard_normal(32), B[1], rng.standard_normal(32)])
    unit = lambda m: m / np.linalg.norm(m, axis=1, keepdims=True)  # noqa: E731
    cos = unit(A) @ unit(B).T
    np.testing.assert_allclose(kernels.cosine_matrix(A, B), cos, atol=1e-12)
    index, distance = kernels.best_match(A, B)
    np.testing.assert_array_equal(index, np.abs(cos).argmax(1))
    assert index[0] == 4 and index[1] == 1
    np.testing.assert_allclose(distance, 1 - np.abs(cos).max(1), atol=1e-12)
    assert distance[1] == pytest.approx(0.0, abs=1e-12)
    t_index, t_distance = kernels.best_match(torch.from_numpy(A), torch.from_numpy(B))
    assert isinstance(t_index, torch.Tensor) and t_index.dtype == torch.int64


def test_bad_input(scores):
    with pytest.raises(ValueError, match="'chunk' parameter of PearsonState.update was never given a row"):
        kernels.PearsonState().result()
    with pytest.raises(ValueError, match=r"'chunk' parameter of PearsonState must have at least one row"):
        kernels.PearsonState().update(scores[:0])
    with pytest.raises(ValueError, match=r"'X' parameter of pearson must be a 2-D array"):
        kernels.pearson(scores[:, 0])
    with pytest.raises(ValueError, match=r"'X' parameter of pearson must have at least one row"):
        kernels.pearson(scores[:0])
    bad = scores[:10].copy()
    bad[1, 1] = np.nan
    with pytest.raises(ValueError, match="'X' parameter of pearson contains NaN or infinity"):
        kernels.pearson(bad)
    with pytest.raises(ValueError, match="'chunk' parameter of PearsonState contains NaN or infinity"):
        kernels.PearsonState().update(scores[:5]).update(bad)
    with pytest.raises(ValueError, match="'A' parameter of cosine_matrix must have nonzero rows. Got a zero row at index 1"):
        kernels.cosine_matrix(np.array([[1.0, 0.0], [0.0, 0.0]]), np.eye(2))
    with pytest.raises(ValueError, match=r"'B' parameter of best_match must have as many columns as 'A' \(2\)"):
        kernels.best_match(np.eye(2), np.eye(3))
