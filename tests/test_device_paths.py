"""Where the analyses run: --device on every analysis command, rows to the device, kernels on their data's device.

On CPU these tests check the code that picks the device (a fake cupy module and a recording torch.cuda.device
stand in for the GPU) and that the CPU path gives the results it gave before. The ``gpu`` tests compare each
command's CUDA path with its CPU path and skip cleanly without a GPU (benchmarks/gpu_check.sh runs them).
"""
from __future__ import annotations

import contextlib
import importlib
import json
import shutil
import types
import warnings

import numpy as np
import pytest
import torch

import kernels
from engine.device_io import HostToDevice, as_device, to_device, to_host
from engine.store import Store
from kernels import backend

CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")
needs_two = pytest.mark.skipif(not CUDA or torch.cuda.device_count() < 2, reason="needs two CUDA GPUs")


# ------------------------------------------------------------------------- choosing the device (CPU-checkable)
class _Recorder:
    """Stands in for torch.cuda.device and cupy.cuda.Device: records which index each scope makes current."""

    def __init__(self, log: list, who: str) -> None:
        self.log, self.who = log, who
        self.current: int | None = None

    def __call__(self, index: int) -> contextlib.AbstractContextManager:
        @contextlib.contextmanager
        def scope():
            before, self.current = self.current, index
            self.log.append((self.who, index))
            try:
                yield
            finally:
                self.current = before
        return scope()


@pytest.fixture
def fake_gpu(monkeypatch):
    """A fake cupy module and torch.cuda.device/current_device that record the device each scope selects."""
    log: list = []
    torch_device, cupy_device = _Recorder(log, "torch"), _Recorder(log, "cupy")
    cupy = types.SimpleNamespace(cuda=types.SimpleNamespace(Device=cupy_device), log=log,
                                 torch_device=torch_device, cupy_device=cupy_device)
    monkeypatch.setattr(torch.cuda, "device", torch_device)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 2)
    monkeypatch.setattr(backend, "import_cupy", lambda: cupy)
    return cupy


def test_data_on_cuda_1_makes_device_1_current_for_torch_and_cupy(fake_gpu):
    with backend.device_scope(torch.device("cuda:1"), cupy=True):
        assert fake_gpu.torch_device.current == 1 and fake_gpu.cupy_device.current == 1
    assert fake_gpu.log == [("torch", 1), ("cupy", 1)]
    assert fake_gpu.torch_device.current is None and fake_gpu.cupy_device.current is None


def test_bare_cuda_means_torchs_current_device_and_cupy_is_left_alone_unless_used(fake_gpu):
    with backend.device_scope(torch.device("cuda")):
        pass
    assert fake_gpu.log == [("torch", 2)]


def test_cpu_data_selects_no_device_and_never_imports_cupy(fake_gpu, monkeypatch):
    monkeypatch.setattr(backend, "import_cupy", lambda: pytest.fail("cupy imported for CPU data"))
    with backend.device_scope(torch.device("cpu"), cupy=True):
        pass
    assert fake_gpu.log == []


def _scope_spy(monkeypatch, module) -> list:
    """Replace ``module.device_scope`` by one that records (device, cupy) and marks the scope as open."""
    seen: list = []
    real = backend.device_scope

    @contextlib.contextmanager
    def spy(device, cupy=False):
        seen.append((device, cupy))
        with real(torch.device("cpu")):
            seen.append("open")
            yield
            seen.append("closed")
    monkeypatch.setattr(module, "device_scope", spy)
    return seen


def test_eigh_cupy_path_runs_inside_its_data_devices_scope_and_matches_torch(monkeypatch):
    """The cupy solver is called only while the scope of its input's device is open; its results, flipped to
    descending order with the sign convention, equal the torch path's."""
    eigh_module = importlib.import_module("kernels.eigh")  # ``kernels.eigh`` the attribute is the function
    seen = _scope_spy(monkeypatch, eigh_module)

    def fake_eigh(a):
        assert seen[-1] == "open", "cupy's eigh ran outside the device scope"
        return torch.linalg.eigh(a)
    cupy = types.SimpleNamespace(from_dlpack=lambda t: t, linalg=types.SimpleNamespace(eigh=fake_eigh))
    monkeypatch.setattr(eigh_module, "import_cupy", lambda: cupy)
    monkeypatch.setattr(backend, "import_cupy", lambda: cupy)
    rng = np.random.default_rng(0)
    a = rng.standard_normal((3, 20, 20))
    a = torch.from_numpy(a @ a.transpose(0, 2, 1))
    w_cupy, v_cupy = eigh_module.eigh_tensor(a, impl="cupy")
    assert seen[0] == (torch.device("cpu"), True) and seen[-1] == "closed"
    w_torch, v_torch = eigh_module.eigh_tensor(a, impl="torch")
    np.testing.assert_allclose(w_cupy, w_torch, rtol=1e-10)
    np.testing.assert_allclose(v_cupy, v_torch, atol=1e-8)


def test_svm_solver_runs_inside_its_data_devices_scope(monkeypatch):
    import kernels.svm as svm_module

    seen = _scope_spy(monkeypatch, svm_module)
    real = svm_module._solve_batch

    def solve(x, *args):
        assert seen[-1] == "open", "the Newton solver ran outside the device scope"
        return real(x, *args)
    monkeypatch.setattr(svm_module, "_solve_batch", solve)
    rng = np.random.default_rng(1)
    X = rng.standard_normal((200, 5)).astype(np.float32)
    y = (X[:, 0] > 0).astype(np.float32)
    kernels.LinearSVM(impl="torch").fit(torch.from_numpy(X), torch.from_numpy(y))
    assert seen[0] == (torch.device("cpu"), False) and seen[-1] == "closed"


# ------------------------------------------------------------------------- rows to the device, results back
def test_cpu_blocks_become_zero_copy_tensors_and_odd_layouts_are_normalised():
    block = np.arange(12, dtype=np.float32).reshape(4, 3)
    t = to_device(block, torch.device("cpu"))
    assert t.data_ptr() == block.ctypes.data                     # no copy on CPU
    readonly = block.copy()
    readonly.setflags(write=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")                             # no "not writable" warning from torch
        np.testing.assert_array_equal(to_device(readonly, torch.device("cpu")).numpy(), block)
    swapped = block.astype(">f4")[::-1]
    np.testing.assert_array_equal(to_device(swapped, torch.device("cpu")).numpy(), block[::-1])


def test_to_host_brings_every_kind_of_result_back_as_numpy():
    assert to_host(torch.ones(2, dtype=torch.float64), np.float32).dtype == np.float32
    np.testing.assert_array_equal(to_host([1.0, 2.0]), [1.0, 2.0])
    assert to_host(np.float64(3.0)) == 3.0


def test_device_choices_are_validated_in_library_terms():
    assert as_device(None) == torch.device("cpu") and as_device("cpu") == torch.device("cpu")
    assert as_device("auto") == torch.device("cuda" if CUDA else "cpu")
    with pytest.raises(ValueError, match="device must be auto, cpu, cuda or cuda:<index>; got 'gpu'"):
        as_device("gpu")


@pytest.mark.skipif(CUDA, reason="checks the message on a machine without GPUs")
def test_asking_for_cuda_without_one_refuses_before_any_work(planted_store, tmp_path):
    from engine.methods.correlate import correlate
    from engine.methods.ganspace import pca
    from engine.methods.interfacegan import boundaries

    path = tmp_path / "p.zarr"
    shutil.copytree(planted_store.path, path)
    for run in (lambda: pca(str(path), device="cuda"), lambda: correlate(str(path), device="cuda:1"),
                lambda: boundaries(str(path), device="cuda")):
        with pytest.raises(ValueError, match="no CUDA GPU is available"):
            run()
    assert Store.open(str(path)).directions() == [] and Store.open(str(path)).tables() == []


def test_project_onto_span_in_torch_equals_numpy():
    from engine.methods.interfacegan import project_onto_span

    rng = np.random.default_rng(2)
    rows = rng.standard_normal((3, 16))
    rows = np.vstack([rows, rows[0] + rows[1]])                  # a dependent row adds nothing
    v = rng.standard_normal(16)
    np.testing.assert_allclose(project_onto_span(v, rows, torch.device("cpu")), project_onto_span(v, rows),
                               atol=1e-12)


ANALYSES = ("boundaries", "condition", "meandiff", "pca", "correlate", "sefa", "edit", "report")


def test_every_analysis_command_takes_device_with_one_help_text():
    from engine.cli import cli

    helps = {}
    for name in ANALYSES:
        command = cli.commands[name]
        option = next((p for p in command.params if p.name == "device"), None)
        assert option is not None, f"{name} has no --device"
        helps[name] = (option.help, option.default)
    assert len(set(helps.values())) == 1, helps
    assert helps["pca"] == (helps["pca"][0], "auto") and "auto, cpu, cuda or cuda:<index>" in helps["pca"][0]


# ------------------------------------------------------------------------- CUDA vs CPU (skipped without a GPU)
@pytest.fixture(scope="module")
def planted_copy(planted_store, tmp_path_factory):
    path = tmp_path_factory.mktemp("device") / "planted.zarr"
    shutil.copytree(planted_store.path, path)
    return str(path)


def _abs_cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=-1, keepdims=True)
    b = b / np.linalg.norm(b, axis=-1, keepdims=True)
    return np.abs((a * b).sum(-1))


@pytest.mark.gpu
@needs_cuda
def test_pinned_staging_never_overwrites_a_block_in_flight():
    feed = HostToDevice(torch.device("cuda"))
    blocks = [np.full((4096, 512), i, np.float32) for i in range(6)]
    outs = [feed(b) for b in blocks]                              # more blocks than staging slots
    torch.cuda.synchronize()
    for i, out in enumerate(outs):
        assert out.device.type == "cuda" and bool((out == i).all())


@pytest.mark.gpu
@needs_cuda
def test_pca_correlate_boundaries_meandiff_on_cuda_match_cpu(planted_copy):
    from engine.methods.correlate import correlate
    from engine.methods.ganspace import pca
    from engine.methods.interfacegan import boundaries, condition
    from engine.methods.meandiff import meandiff

    for device in ("cpu", "cuda"):
        pca(planted_copy, array="latents/w", k=8, device=device, overwrite=True)
        cpu_or_gpu = Store.open(planted_copy).read_direction("ganspace/w")[0]
        if device == "cpu":
            pca_cpu = cpu_or_gpu
    assert _abs_cos(cpu_or_gpu[:4], pca_cpu[:4]).min() > 0.9999

    found = {}
    for device in ("cpu", "cuda"):
        boundaries(planted_copy, attributes=["age", "gender"], device=device, overwrite=True)
        meandiff(planted_copy, attributes=["age"], device=device, overwrite=True)
        condition(planted_copy, "age", ["gender"], device=device, overwrite=True)
        tables = correlate(planted_copy, device=device, overwrite=True)
        store = Store.open(planted_copy)
        found[device] = ({k: store.read_direction(k)[0] for k in store.directions()}, tables)
    for key, cpu_value in found["cpu"][0].items():
        assert _abs_cos(found["cuda"][0][key], cpu_value).min() > 0.9999, key
    for name, table in found["cpu"][1].items():
        np.testing.assert_allclose(found["cuda"][1][name]["values"], table["values"], atol=1e-5, err_msg=name)


@pytest.mark.gpu
@needs_cuda
def test_sefa_on_cuda_matches_cpu():
    from engine.methods.sefa import sefa

    cpu = sefa(generator="planted", k=5, device="cpu")
    gpu = sefa(generator="planted", k=5, device="cuda")
    for name, result in cpu.items():
        assert _abs_cos(gpu[name]["directions"], result["directions"]).min() > 0.9999
        np.testing.assert_allclose(gpu[name]["eigenvalues"], result["eigenvalues"], rtol=1e-6)


@pytest.mark.gpu
@needs_two
def test_kernels_on_cuda_1_compute_there_and_return_there():
    rng = np.random.default_rng(3)
    a = rng.standard_normal((4, 64, 64)).astype(np.float32)
    a = torch.from_numpy(a @ a.transpose(0, 2, 1)).to("cuda:1")
    X = torch.from_numpy(rng.standard_normal((500, 16)).astype(np.float32)).to("cuda:1")
    y = (X[:, 0] > 0).float()
    torch.cuda.set_device(0)
    w, v = kernels.eigh(a)
    assert w.device == v.device == torch.device("cuda:1")
    svm = kernels.LinearSVM(loss="hinge").fit(X, y)
    assert svm.coef_.device == torch.device("cuda:1")
    if backend.cupy_available():
        w_cupy, _ = kernels.eigh(a, impl="cupy")
        assert w_cupy.device == torch.device("cuda:1")
        torch.testing.assert_close(w_cupy, w, rtol=1e-4, atol=1e-3)
        svm_cupy = kernels.LinearSVM(loss="hinge", impl="cupy").fit(X, y)
        assert float(_abs_cos(svm_cupy.coef_.cpu().numpy(), svm.coef_.cpu().numpy()).min()) > 0.9999
    assert kernels.PCA(4).fit(X).components_.device == torch.device("cuda:1")


# ------------------------------------------------------------------------- the GPU check's driver
def _bench_gpu():
    import sys
    from tests.conftest import ROOT

    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        return importlib.import_module("bench_gpu")
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))


def test_bench_gpu_dry_run_on_cpu_prints_every_analysis_row_with_parity(tmp_path, capsys):
    bench = _bench_gpu()
    out = tmp_path / "gpu.json"
    assert bench.main(["--quick", "--device", "cpu", "--skip-sampler", "--repeats", "1", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    tasks = [r["task"].split(" ")[0] for r in result["analyses"]]
    assert tasks == ["SVM", "streaming", "batched", "Pearson", "cosine"]
    for row in result["analyses"]:                    # CPU against CPU: the same engine path, the same answer
        assert row["gpu_s"] > 0 and row["cpu_s"] > 0
        assert row["min_abs_cos"] is None or row["min_abs_cos"] > 0.999999
        assert row["max_error"] < 1e-6
    printed = capsys.readouterr().out
    assert "speed-up" in printed and "min |cos|" in printed and "Pearson 6000 x 6" in printed


@pytest.mark.skipif(CUDA, reason="checks the message on a machine without GPUs")
def test_bench_gpu_and_gpu_check_fail_fast_without_cuda(capsys):
    import subprocess
    from tests.conftest import ROOT

    assert _bench_gpu().main(["--quick"]) == 2
    assert "no CUDA device" in capsys.readouterr().err
    proc = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh")], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        "gpu_check: no CUDA device: torch sees no GPU on this machine; nothing was run"]


def test_sampler_rows_use_a_resnet50_sized_predictor():
    bench = _bench_gpu()
    net = bench.resnet50()
    # torchvision's resnet50 has 25,557,032 parameters with a 1000-way head; with 40 outputs 23,589,992.
    assert sum(p.numel() for p in net.parameters()) == 23_589_992
    assert tuple(bench.resnet50(width=4)(torch.zeros(2, 3, 32, 32)).shape) == (2, 40)


@pytest.mark.slow
def test_bench_gpu_dry_run_includes_the_sampler_rows(tmp_path):
    bench = _bench_gpu()
    out = tmp_path / "gpu.json"
    assert bench.main(["--quick", "--device", "cpu", "--repeats", "1", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["sampler"]
    assert [r["task"].split(", ")[1] for r in rows] == ["fp32", "bf16"]
    assert all(r["engine_per_s"] > 0 and r["bare_per_s"] > 0 for r in rows)


def test_pearson_partial_gives_one_state_from_numpy_and_from_tensors():
    """The CPU path filters in numpy, the device path in torch: the same rows are kept either way."""
    from engine.methods.correlate import pearson_counted_partial, pearson_partial

    rng = np.random.default_rng(4)
    scores = rng.standard_normal((500, 4)).astype(np.float32)
    scores[::7, 1] = np.nan
    scores[3, 2] = np.inf
    for columns in (None, [0, 2, 3]):
        from_numpy = pearson_partial(scores, columns=columns)
        from_tensor = pearson_partial(torch.from_numpy(scores), columns=columns)
        assert from_numpy.n_samples_seen_ == from_tensor.n_samples_seen_ < 500
        np.testing.assert_allclose(to_host(from_tensor.result()), to_host(from_numpy.result()), atol=1e-12)
    counts, _ = pearson_counted_partial(torch.from_numpy(scores))
    np.testing.assert_array_equal(counts, np.isfinite(scores).sum(axis=0))


@pytest.mark.gpu
@needs_cuda
def test_a_gpu_partial_state_pickles_to_the_host_and_merges_into_a_gpu_state():
    """What a Dask worker with a GPU sends back: its state arrives in host memory and still merges."""
    import pickle

    from engine.methods.ganspace import pca_merge, pca_partial

    rng = np.random.default_rng(5)
    a, b = rng.standard_normal((2, 3000, 16)).astype(np.float32)
    shipped = pickle.loads(pickle.dumps(pca_partial(b, device="cuda")))
    assert shipped._state.m2.device.type == "cpu"
    merged = pca_merge(pca_partial(a, device="cuda"), shipped)
    reference = pca_merge(pca_partial(a), pca_partial(b))
    assert _abs_cos(to_host(merged.components_), to_host(reference.components_))[:4].min() > 0.9999


@pytest.mark.gpu
@needs_cuda
def test_activation_pca_on_cuda_matches_cpu(tmp_path):
    """pca --layer: the generator, the projection, the PCA and the regression sums on the GPU."""
    import engine
    from engine.methods.activation_pca import activation_pca

    store = engine.sample(str(tmp_path / "lin.zarr"), "tests.models_for_tests:linear_layer_generator", [], n=6000,
                          chunk=2000, progress=False)
    for max_features in (4096, 4):                                # as is, and through the random projection
        cpu, _ = activation_pca(store, "features", k=2, device="cpu", max_features=max_features)
        gpu, _ = activation_pca(store, "features", k=2, device="cuda", max_features=max_features)
        assert _abs_cos(gpu, cpu).min() > 0.9999
