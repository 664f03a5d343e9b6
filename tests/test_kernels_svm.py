"""kernels.LinearSVM against scikit-learn (LinearSVC, SVC) on InterFaceGAN-shaped noisy problems."""

import numpy as np
import pytest
import torch
from sklearn.svm import SVC, LinearSVC

import kernels
from kernels.backend import cupy_available


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """Small solves on a shared 2-core box run faster without OpenMP barriers; restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def noisy_problems(b: int, n: int, d: int, sigma: float = 1.5, seed: int = 0):
    """InterFaceGAN's recipe in miniature: top/bottom n/2 of 10n rows ranked by a noisy linear score.

    Returns train X (b, 0.7n, d) float32, y (b, 0.7n) in {0, 1}, and the validation rest.
    """
    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for _ in range(b):
        z = rng.standard_normal((10 * n, d)).astype(np.float32)
        normal = rng.standard_normal(d)
        score = z @ (normal / np.linalg.norm(normal)) + sigma * rng.standard_normal(10 * n)
        order = np.argsort(score)
        rows = rng.permutation(np.r_[order[: n // 2], order[-n // 2:]])
        xs.append(z[rows])
        ys.append((score[rows] > np.median(score)).astype(np.int64))
    X, y = np.stack(xs), np.stack(ys)
    cut = int(0.7 * n)
    return X[:, :cut], y[:, :cut], X[:, cut:], y[:, cut:]


@pytest.fixture(scope="module")
def problems():
    return noisy_problems(b=3, n=2000, d=48)


def unit(v):
    v = np.asarray(v, dtype=np.float64)
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def test_problems_are_in_the_papers_noisy_regime(problems):
    X, y, Xv, yv = problems
    accuracy = np.asarray(kernels.LinearSVM().fit(X, y).score(Xv, yv))
    assert ((accuracy > 0.82) & (accuracy < 0.96)).all(), accuracy


def test_squared_hinge_matches_linearsvc_on_every_problem(problems):
    X, y, _, _ = problems
    svm = kernels.LinearSVM(loss="squared_hinge").fit(X, y)
    assert svm.converged_.all()
    for i in range(X.shape[0]):
        ref = LinearSVC(C=1.0, tol=1e-8, max_iter=100_000).fit(X[i], y[i])
        assert unit(svm.coef_[i]) @ unit(ref.coef_[0]) >= 0.9999
        np.testing.assert_allclose(svm.coef_[i], ref.coef_[0], rtol=0, atol=1e-3 * np.abs(ref.coef_).max())
        assert svm.intercept_[i] == pytest.approx(ref.intercept_[0], abs=1e-3)


def test_hinge_matches_svc_with_its_free_intercept(problems):
    X, y, Xv, yv = problems
    svm = kernels.LinearSVM(loss="hinge").fit(X[0], y[0])
    ref = SVC(kernel="linear", C=1.0).fit(X[0], y[0])
    assert svm.converged_
    assert unit(svm.coef_[0]) @ unit(ref.coef_[0]) >= 0.999
    assert abs(svm.score(Xv[0], yv[0]) - ref.score(Xv[0], yv[0])) <= 0.01


def test_hinge_without_intercept_matches_liblinear_dual(problems):
    X, y, _, _ = problems
    svm = kernels.LinearSVM(loss="hinge", fit_intercept=False).fit(X[1], y[1])
    ref = LinearSVC(loss="hinge", fit_intercept=False, dual=True, tol=1e-8, max_iter=200_000).fit(X[1], y[1])
    assert unit(svm.coef_[0]) @ unit(ref.coef_[0]) >= 0.999
    assert float(np.abs(svm.intercept_).max()) == 0.0


@pytest.mark.parametrize("loss", ["squared_hinge", "hinge"])
def test_batched_fit_equals_separate_fits(problems, loss):
    X, y, _, _ = problems
    batched = kernels.LinearSVM(loss=loss).fit(X, y)
    for i in range(X.shape[0]):
        single = kernels.LinearSVM(loss=loss).fit(X[i], y[i])
        np.testing.assert_allclose(batched.coef_[i], single.coef_[0], atol=1e-5)
        assert batched.n_iter_[i] == single.n_iter_


def test_shapes_labels_and_predictions_follow_scikit_learn(problems):
    X, y, Xv, yv = problems
    single = kernels.LinearSVM().fit(X[0], y[0])
    assert single.coef_.shape == (1, X.shape[-1]) and single.intercept_.shape == (1,)
    assert isinstance(single.n_iter_, int) and isinstance(single.converged_, bool)
    assert single.decision_function(Xv[0]).shape == (Xv.shape[1],)
    assert set(np.unique(single.predict(Xv[0]))) <= {0, 1}
    signed = kernels.LinearSVM().fit(X[0], 2 * y[0] - 1)
    np.testing.assert_allclose(signed.coef_, single.coef_)
    np.testing.assert_array_equal(signed.predict(Xv[0]), 2 * single.predict(Xv[0]) - 1)
    ref = LinearSVC(C=1.0, tol=1e-8).fit(X[0], y[0])
    assert single.score(Xv[0], yv[0]) == pytest.approx(ref.score(Xv[0], yv[0]), abs=0.002)

    batched = kernels.LinearSVM().fit(X, y)
    assert batched.coef_.shape == (3, X.shape[-1]) and batched.intercept_.shape == (3,)
    assert batched.n_iter_.shape == (3,) and batched.converged_.dtype == bool
    assert batched.decision_function(Xv).shape == yv.shape
    assert batched.decision_function(Xv[0]).shape == (3, Xv.shape[1])  # shared rows, every boundary
    np.testing.assert_allclose(batched.score(Xv, yv), [batched.predict(Xv)[i].__eq__(yv[i]).mean() for i in range(3)])


def test_torch_and_float64_inputs_keep_their_type(problems):
    X, y, _, _ = problems
    ref = kernels.LinearSVM().fit(X[0], y[0]).coef_
    svm = kernels.LinearSVM().fit(torch.from_numpy(X[0]), torch.from_numpy(y[0]))
    assert isinstance(svm.coef_, torch.Tensor) and svm.coef_.dtype == torch.float32
    assert isinstance(svm.predict(torch.from_numpy(X[0])), torch.Tensor)
    np.testing.assert_allclose(svm.coef_.numpy(), ref, atol=1e-6)
    wide = kernels.LinearSVM().fit(X[0].astype(np.float64), y[0])
    assert wide.coef_.dtype == np.float64
    np.testing.assert_allclose(wide.coef_, ref, atol=1e-4)


def test_unfitted_and_unconverged_are_reported(problems):
    X, y, _, _ = problems
    with pytest.raises(kernels.NotFittedError, match="not fitted yet"):
        kernels.LinearSVM().predict(X[0])
    assert not hasattr(kernels.LinearSVM(), "coef_")
    with pytest.warns(kernels.ConvergenceWarning, match="did not converge"):
        svm = kernels.LinearSVM(loss="hinge", max_iter=1).fit(X, y)
    assert not svm.converged_.any() and (svm.n_iter_ == 1).all()


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"C": -1}, r"The 'C' parameter of LinearSVM must be a float in \(0, inf\). Got -1 instead."),
        ({"C": 0.0}, r"'C' parameter of LinearSVM .* Got 0.0 instead"),
        ({"loss": "log"}, r"'loss' parameter of LinearSVM must be one of \{'squared_hinge', 'hinge'\}. Got 'log'"),
        ({"tol": 0}, r"'tol' parameter of LinearSVM .* Got 0 instead"),
        ({"max_iter": 0}, r"'max_iter' parameter of LinearSVM must be an int in \[1, inf\). Got 0 instead"),
        ({"impl": "numba"}, r"'impl' parameter of LinearSVM must be one of"),
    ],
)
def test_bad_parameters(problems, params, message):
    X, y, _, _ = problems
    with pytest.raises(ValueError, match=message):
        kernels.LinearSVM(**params).fit(X[0], y[0])


def test_bad_data(problems):
    X, y, _, _ = problems
    X0, y0 = X[0].copy(), y[0].copy()
    with pytest.raises(ValueError, match=r"'X' and 'y' parameters of LinearSVM must have shapes .* Got \(1400, 48\) "
                                         r"and \(1399,\)"):
        kernels.LinearSVM().fit(X0, y0[:-1])
    with pytest.raises(ValueError, match=r"'y' parameter of LinearSVM must contain both classes .* problem\(s\) \[1\]"):
        y1 = y.copy()
        y1[1] = 1
        kernels.LinearSVM().fit(X, y1)
    with pytest.raises(ValueError, match=r"'y' parameter of LinearSVM must hold labels \{0, 1\} or \{-1, \+1\}"):
        kernels.LinearSVM().fit(X0, y0 + 1)
    for bad in (np.nan, np.inf):
        X1 = X0.copy()
        X1[3, 4] = bad
        with pytest.raises(ValueError, match="'X' parameter of LinearSVM contains NaN or infinity"):
            kernels.LinearSVM().fit(X1, y0)
    svm = kernels.LinearSVM().fit(X0, y0)
    with pytest.raises(ValueError, match=r"'X' parameter of LinearSVM must have shape \(n, 48\)"):
        svm.decision_function(X0[:, :5])


@pytest.mark.skipif(cupy_available(), reason="checks the error raised where cupy is absent")
def test_cupy_requested_without_cupy_is_an_error(problems):
    X, y, _, _ = problems
    with pytest.raises(ValueError, match="'impl' parameter of LinearSVM is 'cupy' but the cupy path cannot run"):
        kernels.LinearSVM(impl="cupy").fit(X[0], y[0])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("loss", ["squared_hinge", "hinge"])
def test_cuda_matches_cpu(problems, loss):
    X, y, _, _ = problems
    cpu = kernels.LinearSVM(loss=loss, impl="torch").fit(X, y)
    gpu = kernels.LinearSVM(loss=loss, impl="torch").fit(torch.from_numpy(X).cuda(), torch.from_numpy(y).cuda())
    assert gpu.coef_.device.type == "cuda"
    assert (np.sum(unit(gpu.coef_.cpu().numpy()) * unit(cpu.coef_), -1) >= 0.99999).all()


@pytest.mark.skipif(not cupy_available(), reason="needs cupy and a CUDA GPU")
@pytest.mark.parametrize("loss", ["squared_hinge", "hinge"])
def test_cupy_path_matches_torch_path(problems, loss):
    cupy = pytest.importorskip("cupy")
    X, y, _, _ = problems
    ref = kernels.LinearSVM(loss=loss, impl="torch").fit(torch.from_numpy(X).cuda(), torch.from_numpy(y).cuda())
    svm = kernels.LinearSVM(loss=loss, impl="cupy").fit(cupy.asarray(X), cupy.asarray(y))
    assert isinstance(svm.coef_, cupy.ndarray)
    np.testing.assert_allclose(cupy.asnumpy(svm.coef_), ref.coef_.cpu().numpy(), atol=1e-5)


def test_hinge_converges_on_nearly_separable_data_with_an_offset():
    """Few support vectors leave the Hessian nearly singular along the free intercept (seen on the digits
    demo: 200 stalled Newton steps); the damped solver must still converge to SVC's boundary."""
    rng = np.random.default_rng(3)
    normal = rng.standard_normal(64)
    normal /= np.linalg.norm(normal)
    y = np.r_[np.zeros(1000), np.ones(1000)]
    X = (rng.standard_normal((2000, 64)) + 10.0 + np.where(y[:, None] > 0, 4.0, -4.0) * normal).astype(np.float32)
    svm = kernels.LinearSVM(loss="hinge", C=1.0).fit(X, y)
    assert svm.converged_ and svm.n_iter_ < 60
    reference = SVC(kernel="linear", C=1.0).fit(X, y)
    ours, theirs = np.asarray(svm.coef_)[0], reference.coef_[0]
    assert ours @ theirs / np.linalg.norm(ours) / np.linalg.norm(theirs) > 0.99


def hinge_objective(X, y, w, b, C=1.0):
    margins = (2.0 * y - 1.0) * (X.astype(np.float64) @ w + b)
    return 0.5 * float(w @ w) + C * float(np.maximum(0.0, 1.0 - margins).sum())


def test_hinge_objective_matches_svc_when_most_rows_sit_on_the_margin():
    """Fewer rows than dimensions: nearly every row is a support vector on the margin, where the softplus
    smoothing is largest; μ keeps shrinking until it no longer distorts the objective (at a fixed μ = 0.01
    this problem's objective sat 10 % above SVC's, cosine 0.99995)."""
    rng = np.random.default_rng(5)
    X = rng.standard_normal((300, 400)).astype(np.float32)
    y = (X @ rng.standard_normal(400) + 3.0 * rng.standard_normal(300) > 0).astype(np.float64)
    svm = kernels.LinearSVM(loss="hinge", C=1.0).fit(X, y)
    reference = SVC(kernel="linear", C=1.0, tol=1e-6).fit(X, y)
    ours = hinge_objective(X, y, np.asarray(svm.coef_, np.float64)[0], float(np.asarray(svm.intercept_)[0]))
    theirs = hinge_objective(X, y, reference.coef_[0].astype(np.float64), float(reference.intercept_[0]))
    assert svm.converged_
    assert ours <= theirs * 1.02
    w = np.asarray(svm.coef_, np.float64)[0]
    assert w @ reference.coef_[0] / np.linalg.norm(w) / np.linalg.norm(reference.coef_[0]) > 0.99999


@pytest.mark.parametrize("loss", ["squared_hinge", "hinge"])
def test_cpu_fits_split_over_single_threaded_workers_and_match_the_one_thread_fit(problems, loss, monkeypatch):
    """With two or more torch threads a CPU batch is solved by workers with one intra-op thread each (no OpenMP
    barrier, which stalled fits 10-30x on a loaded machine); the answer is the one-thread fit's."""
    import threading

    from kernels import svm
    from kernels._threads import CPU_POOL as _CPU_POOL

    X, y, _, _ = problems                                       # b = 3
    reference = kernels.LinearSVM(loss=loss).fit(X, y)          # one torch thread (module fixture): no split
    seen = []
    original = svm._newton

    def spy(x, *args):
        seen.append((threading.current_thread().name, torch.get_num_threads(), x.shape[0]))
        return original(x, *args)

    monkeypatch.setattr(svm, "_newton", spy)
    torch.set_num_threads(2)
    try:
        split = kernels.LinearSVM(loss=loss).fit(X, y)
        single = kernels.LinearSVM(loss=loss).fit(X[1], y[1])
        found = _CPU_POOL.executor()
    finally:
        torch.set_num_threads(1)
    if found is not None:                                       # this build allows single-threaded workers
        assert [b for _, _, b in seen] == [2, 1, 1]             # two workers share the batch; one for 2-D X
        assert {threads for _, threads, _ in seen} == {1}
        assert all(name.startswith("kernels-cpu") for name, _, _ in seen)
    np.testing.assert_allclose(unit(split.coef_), unit(reference.coef_), atol=1e-6)
    np.testing.assert_allclose(split.intercept_, reference.intercept_, atol=1e-5)
    np.testing.assert_array_equal(split.n_iter_, reference.n_iter_)
    np.testing.assert_allclose(unit(single.coef_[0]), unit(reference.coef_[1]), atol=1e-6)
