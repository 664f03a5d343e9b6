"""kernels.backend: array types in and out, zero-copy moves, device checks, implementation choice."""

import numpy as np
import pytest
import torch

import kernels
from kernels import backend
from kernels._validation import check_interval


def test_numpy_round_trip_is_zero_copy_and_types_are_kept():
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    (t,), origin = backend.as_tensors(a)
    assert origin.kind == "numpy" and origin.device.type == "cpu"
    assert t.data_ptr() == a.__array_interface__["data"][0]
    out = backend.to_origin(t, origin)
    assert isinstance(out, np.ndarray) and np.shares_memory(out, a)
    (ints,), _ = backend.as_tensors(np.arange(3))
    assert ints.dtype == torch.float32
    (t2,), origin2 = backend.as_tensors(torch.ones(2, dtype=torch.float64))
    assert origin2.kind == "torch" and backend.to_origin(t2, origin2) is t2


def test_read_only_reversed_and_big_endian_arrays_are_accepted():
    a = np.random.default_rng(0).standard_normal((50, 4)).astype(np.float32)
    ref = kernels.pearson(a)
    read_only = a.copy()
    read_only.setflags(write=False)
    (t,), _ = backend.as_tensors(read_only)
    assert t.data_ptr() == read_only.__array_interface__["data"][0]  # no copy of read-only data
    np.testing.assert_allclose(kernels.pearson(read_only), ref)
    np.testing.assert_allclose(kernels.pearson(a[::-1]), ref, atol=1e-6)
    np.testing.assert_allclose(kernels.pearson(a.astype(">f4")), ref)


def test_mixed_devices_are_one_clear_error():
    with pytest.raises(ValueError, match="All arrays must be on one device; got X on cpu, y on meta"):
        backend.as_tensors(np.ones(3), torch.empty(3, device="meta"), names=("X", "y"))


def test_implementation_choice():
    cpu = torch.device("cpu")
    assert backend.resolve_impl("auto", cpu, "LinearSVM") == "torch"
    assert backend.resolve_impl("torch", cpu, "LinearSVM") == "torch"
    with pytest.raises(ValueError, match=r"'impl' parameter of LinearSVM must be one of \{'auto', 'torch', 'cupy'\}"):
        backend.resolve_impl("cuda", cpu, "LinearSVM")
    with pytest.raises(ValueError, match="'impl' parameter of LinearSVM is 'cupy' but the cupy path cannot run"):
        backend.resolve_impl("cupy", cpu, "LinearSVM")


def test_message_format_follows_scikit_learn():
    with pytest.raises(ValueError) as info:
        check_interval(-1, "C", "LinearSVM", float, 0.0)
    assert str(info.value) == "The 'C' parameter of LinearSVM must be a float in (0, inf). Got -1 instead."
    with pytest.raises(ValueError, match=r"must be an int in \[1, 5\]. Got True instead"):
        check_interval(True, "k", "X", int, 1, 5, closed="both")
    assert check_interval(5, "k", "X", int, 1, 5, closed="both") == 5


def test_public_names():
    for name in ("LinearSVM", "PCA", "eigh", "pearson", "PearsonState", "cosine_matrix", "best_match"):
        assert callable(getattr(kernels, name))
    assert issubclass(kernels.NotFittedError, ValueError) and issubclass(kernels.NotFittedError, AttributeError)


@pytest.mark.skipif(not backend.cupy_available(), reason="needs cupy and a CUDA GPU")
def test_cupy_round_trip_is_zero_copy():
    cupy = pytest.importorskip("cupy")
    a = cupy.arange(6, dtype=cupy.float32)
    (t,), origin = backend.as_tensors(a)
    assert origin.kind == "cupy" and t.device.type == "cuda" and t.data_ptr() == a.data.ptr
    assert isinstance(backend.to_origin(t, origin), cupy.ndarray)
