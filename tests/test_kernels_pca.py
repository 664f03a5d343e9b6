"""kernels.PCA (exact streaming covariance PCA) against sklearn.decomposition.PCA(svd_solver='full')."""

import pickle

import numpy as np
import pytest
import torch
from sklearn.decomposition import PCA as SkPCA

import kernels


@pytest.fixture(scope="module")
def data():
    """Rows with a separated spectrum on top of a flat tail, and a large offset (tests the stable merge)."""
    rng = np.random.default_rng(1)
    scales = np.r_[np.linspace(6.0, 2.0, 8), np.full(24, 0.5)]
    basis, _ = np.linalg.qr(rng.standard_normal((32, 32)))
    X = (rng.standard_normal((6000, 32)) * scales) @ basis.T + 100.0
    return X.astype(np.float32)


def test_matches_full_svd_pca(data):
    ours = kernels.PCA(8).fit(data)
    ref = SkPCA(8, svd_solver="full").fit(data)
    cos = np.abs(np.sum(ours.components_ * ref.components_, axis=1))
    assert cos.min() >= 0.999
    np.testing.assert_allclose(ours.explained_variance_, ref.explained_variance_, rtol=1e-4)
    np.testing.assert_allclose(ours.explained_variance_ratio_, ref.explained_variance_ratio_, rtol=1e-4)
    np.testing.assert_allclose(ours.mean_, data.astype(np.float64).mean(0), rtol=1e-7)  # sklearn's is float32
    signs = np.sign(np.sum(ours.components_ * ref.components_, axis=1))
    np.testing.assert_allclose(ours.transform(data), ref.transform(data) * signs, atol=2e-3)


def test_components_are_orthonormal_sorted_and_sign_fixed(data):
    pca = kernels.PCA().fit(data)
    comps = pca.components_.astype(np.float64)
    assert comps.shape == (32, 32) and pca.n_samples_seen_ == 6000
    np.testing.assert_allclose(comps @ comps.T, np.eye(32), atol=1e-5)
    assert (np.diff(pca.explained_variance_) <= 0).all()
    rows = np.arange(32)
    assert (comps[rows, np.abs(comps).argmax(axis=1)] > 0).all()


def test_streaming_and_merging_equal_one_pass(data):
    one_pass = kernels.PCA(8).fit(data)
    streamed = kernels.PCA(8)
    for start in range(0, len(data), 777):
        streamed.partial_fit(data[start:start + 777])
    from_iterable = kernels.PCA(8).fit(iter(np.array_split(data, 5)))
    left, right = kernels.PCA(8).fit(data[:1000]), kernels.PCA(8).fit(data[1000:])
    merged = pickle.loads(pickle.dumps(left)).merge(pickle.loads(pickle.dumps(right)))  # as workers ship them
    for other in (streamed, from_iterable, merged):
        assert other.n_samples_seen_ == len(data)
        np.testing.assert_allclose(other.components_, one_pass.components_, atol=1e-5)
        np.testing.assert_allclose(other.explained_variance_, one_pass.explained_variance_, rtol=1e-6)
        np.testing.assert_allclose(other.mean_, one_pass.mean_, rtol=1e-7)


def test_refitting_forgets_and_new_chunks_refresh_results(data):
    pca = kernels.PCA(4).fit(data[:3000])
    first = pca.components_
    pca.partial_fit(data[3000:])
    assert pca.n_samples_seen_ == 6000
    np.testing.assert_allclose(pca.components_, kernels.PCA(4).fit(data).components_, atol=1e-5)
    pca.fit(data[:3000])
    np.testing.assert_allclose(pca.components_, first)


def test_torch_input_gives_torch_output(data):
    t = torch.from_numpy(data)
    pca = kernels.PCA(3).fit(t)
    assert isinstance(pca.components_, torch.Tensor) and pca.components_.dtype == torch.float32
    assert isinstance(pca.transform(t), torch.Tensor)
    np.testing.assert_allclose(pca.components_.numpy(), kernels.PCA(3).fit(data).components_)


def test_bad_input(data):
    with pytest.raises(ValueError, match=r"'n_components' parameter of PCA must be an int in \[1, 32\].*Got 33"):
        kernels.PCA(33).fit(data)
    with pytest.raises(ValueError, match=r"'n_components' parameter of PCA must be an int in \[1, inf\).*Got 0"):
        kernels.PCA(0).fit(data)
    with pytest.raises(ValueError, match=r"'n_components' parameter of PCA .* Got 2.5 instead"):
        kernels.PCA(2.5).fit(data)
    with pytest.raises(ValueError, match="'X' parameter of PCA.fit must hold at least one row. Got an empty chunk"):
        kernels.PCA(2).fit(iter([]))
    with pytest.raises(ValueError, match=r"'X' parameter of PCA must have at least one row .* Got shape \(0, 32\)"):
        kernels.PCA(2).partial_fit(data[:0])
    with pytest.raises(ValueError, match=r"'X' parameter of PCA must be a 2-D array. Got shape \(6000, 4, 8\)"):
        kernels.PCA(2).fit(data.reshape(6000, 4, 8))
    with pytest.raises(ValueError, match="'X' parameter of PCA has 16 columns but earlier chunks had 32"):
        kernels.PCA(2).fit(data).partial_fit(data[:, :16])
    bad = data.copy()
    bad[5, 5] = np.nan
    with pytest.raises(ValueError, match="'X' parameter of PCA contains NaN or infinity"):
        kernels.PCA(2).fit(bad)
    with pytest.raises(kernels.NotFittedError, match="This PCA instance is not fitted yet"):
        kernels.PCA(2).components_
    with pytest.raises(ValueError, match=r"'X' parameter of PCA.transform must have shape \(n, 32\)"):
        kernels.PCA(2).fit(data).transform(data[:, :3])
