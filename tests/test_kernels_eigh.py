"""kernels.eigh (batched, descending, sign-fixed) against numpy.linalg.eigh."""

import numpy as np
import pytest
import torch

import kernels
from kernels.backend import cupy_available


def spd_stack(shape, d, seed=0, dtype=np.float64):
    """Symmetric matrices with well separated eigenvalues 1..d (random orthogonal bases)."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((*shape, d, d)))
    return ((q * np.arange(1.0, d + 1.0)[..., None, :]) @ np.swapaxes(q, -1, -2)).astype(dtype)


def assert_matches_numpy(a, w, v, rtol):
    w_ref, v_ref = np.linalg.eigh(a.astype(np.float64))
    w_ref, v_ref = w_ref[..., ::-1], v_ref[..., ::-1]
    np.testing.assert_allclose(w, w_ref, rtol=rtol, atol=rtol * np.abs(w_ref).max())
    overlap = np.abs(np.sum(v * v_ref, axis=-2))  # |cos| per eigenvector pair
    np.testing.assert_allclose(overlap, 1.0, atol=10 * rtol)


@pytest.mark.parametrize("dtype, rtol", [(np.float64, 1e-10), (np.float32, 1e-4)])
def test_batched_stack_matches_numpy_in_descending_order(dtype, rtol):
    a = spd_stack((3, 2), 24, dtype=dtype)
    w, v = kernels.eigh(a)
    assert w.shape == (3, 2, 24) and v.shape == (3, 2, 24, 24) and w.dtype == dtype
    assert (np.diff(w, axis=-1) <= 0).all()
    assert_matches_numpy(a, w, v, rtol)
    np.testing.assert_allclose(v @ (w[..., :, None] * np.swapaxes(v, -1, -2)), a, atol=100 * rtol * 24)


def test_sign_rule_is_deterministic_and_shared_with_pca():
    a = spd_stack((4,), 16, seed=3)
    _, v = kernels.eigh(a)
    _, v_again = kernels.eigh(a.copy())
    np.testing.assert_array_equal(v, v_again)
    columns = np.swapaxes(v, -1, -2)
    top = np.take_along_axis(columns, np.abs(columns).argmax(-1)[..., None], -1)
    assert (top > 0).all()


@pytest.mark.parametrize("shape", [(), (3,)])
def test_zero_eigenvalues_of_a_rank_deficient_matrix_are_plain_zeros(shape):
    a = np.broadcast_to(np.diag([2.0, 0.0, 0.0, 1.0]), (*shape, 4, 4)).copy()
    w, v = kernels.eigh(a)
    np.testing.assert_array_equal(w, np.broadcast_to([2.0, 1.0, 0.0, 0.0], (*shape, 4)))
    assert not np.signbit(w).any()  # no -0.0 printed in a spectrum or an explained variance
    np.testing.assert_allclose(np.abs(v[..., :, :2]), np.broadcast_to(np.eye(4)[:, [0, 3]], (*shape, 4, 2)))


def test_float64_compute_for_float32_input_and_torch_in_torch_out():
    a = spd_stack((2,), 32, seed=5, dtype=np.float32)
    w, v = kernels.eigh(torch.from_numpy(a), compute_dtype="float64")
    assert isinstance(w, torch.Tensor) and w.dtype == torch.float32 and v.dtype == torch.float32
    assert_matches_numpy(a, w.numpy(), v.numpy(), 1e-6)


def test_bad_input():
    with pytest.raises(ValueError, match=r"'a' parameter of eigh must be a stack of square matrices. Got shape \(3, 4\)"):
        kernels.eigh(np.zeros((3, 4)))
    with pytest.raises(ValueError, match=r"stack of square matrices. Got shape \(3,\)"):
        kernels.eigh(np.zeros(3))
    bad = spd_stack((), 4)
    bad[0, 1] = np.inf
    with pytest.raises(ValueError, match="'a' parameter of eigh contains NaN or infinity"):
        kernels.eigh(bad)
    with pytest.raises(ValueError, match="'compute_dtype' parameter of eigh must be one of"):
        kernels.eigh(spd_stack((), 4), compute_dtype="float16")
    if not cupy_available():
        with pytest.raises(ValueError, match="'impl' parameter of eigh is 'cupy' but the cupy path cannot run"):
            kernels.eigh(spd_stack((), 4), impl="cupy")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_matches_cpu():
    a = torch.from_numpy(spd_stack((5,), 64, dtype=np.float32))
    w_cpu, v_cpu = kernels.eigh(a)
    w_gpu, v_gpu = kernels.eigh(a.cuda())
    assert w_gpu.device.type == "cuda"
    torch.testing.assert_close(w_gpu.cpu(), w_cpu, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(v_gpu.cpu(), v_cpu, rtol=0, atol=1e-3)  # same sign rule on both devices


@pytest.mark.skipif(not cupy_available(), reason="needs cupy and a CUDA GPU")
def test_cupy_path_matches_numpy():
    cupy = pytest.importorskip("cupy")
    a = spd_stack((3,), 48)
    w, v = kernels.eigh(cupy.asarray(a), impl="cupy")
    assert isinstance(w, cupy.ndarray)
    assert_matches_numpy(a, cupy.asnumpy(w), cupy.asnumpy(v), 1e-8)


def test_cpu_stack_split_over_workers_matches_one_matrix_at_a_time_and_keeps_caller_threads():
    from kernels._threads import CPU_POOL as _CPU_POOL, _fresh_thread_default

    a = spd_stack((7,), 40, seed=11)
    threads, default = torch.get_num_threads(), _fresh_thread_default()
    w, v = kernels.eigh(a)
    if threads >= 2 and _CPU_POOL._supported():  # CI's 2 cores: the split path is the one under test
        pool, workers = _CPU_POOL.executor()
        assert workers == threads
        assert {pool.submit(torch.get_num_threads).result() for _ in range(4)} == {1}  # LAPACK single-threaded
    assert torch.get_num_threads() == threads and _fresh_thread_default() == default
    for i in range(len(a)):
        w_i, v_i = kernels.eigh(a[i])
        np.testing.assert_allclose(w[i], w_i, rtol=1e-12)
        np.testing.assert_allclose(v[i], v_i, atol=1e-10)


def test_split_stack_honours_the_callers_grad_and_inference_modes():
    a = torch.from_numpy(spd_stack((3,), 12, seed=2))
    with torch.inference_mode():
        w, _ = kernels.eigh(a)
    assert w.is_inference()
    x = a.clone().requires_grad_()
    with torch.no_grad():
        w, v = kernels.eigh(x)
    assert not w.requires_grad and not v.requires_grad
    w, _ = kernels.eigh(x)
    w[..., 0].sum().backward()  # d(top eigenvalue)/dA = v vᵀ: autograd flows through the batched path
    _, v_ref = np.linalg.eigh(a.numpy())
    top = v_ref[..., :, -1]
    np.testing.assert_allclose(x.grad.numpy(), top[..., :, None] * top[..., None, :], atol=1e-8)


def _eigh_in_child(queue) -> None:
    w, _ = kernels.eigh(spd_stack((3,), 8, seed=4))
    queue.put(w.tolist())


def test_a_forked_child_can_still_split_stacks():
    import multiprocessing

    kernels.eigh(spd_stack((3,), 8, seed=4))  # the parent's pool exists before the fork
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_eigh_in_child, args=(queue,))
    child.start()
    child.join(timeout=60)
    assert child.exitcode == 0, "the forked child hung or failed"
    np.testing.assert_allclose(queue.get(timeout=5), kernels.eigh(spd_stack((3,), 8, seed=4))[0], rtol=1e-12)


def test_sign_rule_breaks_exact_magnitude_ties_by_the_first_entry():
    from kernels.eigh import fix_signs
    vectors = torch.tensor([[3.0, -3.0, 0.0], [-3.0, 3.0, 0.0], [-1.0, 2.0, 0.0], [1.0, -2.0, 0.0]]).T
    fixed = fix_signs(vectors, dim=-2).T
    expected = torch.tensor([[3.0, -3.0, 0.0], [3.0, -3.0, 0.0], [-1.0, 2.0, 0.0], [-1.0, 2.0, 0.0]])
    torch.testing.assert_close(fixed, expected)
    torch.testing.assert_close(fix_signs(torch.zeros(3, 2)), torch.zeros(3, 2))
