"""Sharded sampling on Dask: same store as one process, worker and client deaths, the single writer, reductions.

One 2-process LocalCluster is shared by the module (start-up costs seconds on 2 cores); one test starts its
own through ``sample --workers 2`` to cover that path end to end.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import warnings
from functools import partial

import numpy as np
import pytest
import torch
import zarr

import engine
from engine.distributed import (TRIM_VARIABLE, ClusterError, ClusterHandle, ClusterRequest, cluster_client,
                                map_reduce_chunks, validate_cluster_flags)
from engine.lock import LockError
from engine.models.registry import load_generator, load_predictor
from engine.sampler import draw_codes, prepare_store, run_distributed, sample_chunk
from engine.store import Store
from kernels.correlation import PearsonState, pearson
from kernels.pca import PCA
from tests.conftest import PLANTED_SMALL, ROOT, wait_for_commits

# The module's cluster is a plain Dask one, as a user's would be: its workers carry the nannies' malloc setting,
# which the engine warns about once per run (checked on its own below).
pytestmark = pytest.mark.filterwarnings(r"ignore:.*Dask workers run with MALLOC_TRIM_THRESHOLD_:UserWarning")

# Heavy enough per chunk (~0.2 s on one thread) that a kill lands mid-run; small enough to keep tests quick.
SLOW = "convstack:z_dim=64,channels=64,resolution=16"
SLOW_RUN = dict(n=256 * 16, chunk=256, seed=3)


def _arrays(path) -> dict[str, np.ndarray]:
    group = zarr.open_group(str(path), mode="r")
    return {name: group[name][...] for name in ("latents/z", "scores") if name in group}


def _assert_same_store(path, reference) -> None:
    got = _arrays(path)
    np.testing.assert_array_equal(got["latents/z"], reference["latents/z"])   # codes: bit-identical
    np.testing.assert_allclose(got["scores"], reference["scores"], rtol=1e-4, atol=1e-5)
    assert Store.open(path).complete


@pytest.fixture(scope="module")
def cluster():
    import dask
    from distributed import Client, LocalCluster

    with dask.config.set({"distributed.scheduler.allowed-failures": 3}):
        local = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                             silence_logs=40)
        client = Client(local)
        yield local.scheduler_address, client
        client.close()
        local.close()


@pytest.fixture(scope="module")
def slow_reference(tmp_path_factory):
    """The single-process store of the SLOW run: what every distributed run must reproduce."""
    path = tmp_path_factory.mktemp("ref") / "slow.zarr"
    engine.sample(str(path), SLOW, ["imagestats"], batch=128, progress=False, **SLOW_RUN)
    return _arrays(path)


def _prepare(path, generator=SLOW, predictors=("imagestats",), **run):
    G = load_generator(generator)
    Ps = [load_predictor(p, G) for p in predictors]
    run = {**SLOW_RUN, **run}
    return prepare_store(str(path), G, Ps, n=run["n"], seed=run["seed"], chunk=run["chunk"], spaces=["z"],
                         resume=False, overwrite=False)


def test_two_workers_write_the_single_process_store_and_redo_a_partly_written_chunk(tmp_path, cluster,
                                                                                     slow_reference):
    address, _ = cluster
    store = _prepare(tmp_path / "d.zarr")
    # A client that died mid-chunk leaves garbage rows without a commit: the chunk is simply redone.
    store.array("latents/z")[256:300] = 7.0
    seen: list[int] = []
    stats = run_distributed(store, SLOW, ["imagestats"], store.pending_chunks(), batch=128, device="cpu",
                            scheduler=address, on_chunk=lambda index, rows: seen.append(rows))
    assert stats.rows == SLOW_RUN["n"] == sum(seen) and sorted(stats.chunks) == list(range(16))
    _assert_same_store(tmp_path / "d.zarr", slow_reference)


def test_a_worker_killed_mid_run_is_replaced_and_nothing_is_lost(tmp_path, cluster, slow_reference):
    address, client = cluster
    pids = client.run(os.getpid)
    store = _prepare(tmp_path / "k.zarr")
    killed: list[tuple[str, list]] = []

    def kill_a_busy_worker(index: int, rows: int) -> None:
        if killed:
            return
        processing = client.processing()
        busy = [addr for addr, keys in processing.items() if keys and addr in pids] or list(pids)
        os.kill(pids[busy[0]], signal.SIGKILL)
        killed.append((busy[0], list(processing.get(busy[0], []))))

    stats = run_distributed(store, SLOW, ["imagestats"], store.pending_chunks(), batch=128, device="cpu",
                            scheduler=address, on_chunk=kill_a_busy_worker)
    assert killed and killed[0][1], "the killed worker had no chunk in hand; the test proved nothing"
    assert stats.rows == SLOW_RUN["n"] and sorted(stats.chunks) == list(range(16))   # nothing duplicated
    _assert_same_store(tmp_path / "k.zarr", slow_reference)
    client.wait_for_workers(2, timeout=60)   # the nanny restarts the dead worker for the next tests


def test_a_killed_client_resumes_from_the_committed_chunks(tmp_path, cluster, slow_reference):
    address, client = cluster
    path = tmp_path / "c.zarr"
    proc = subprocess.Popen([sys.executable, "-m", "engine", "sample", str(path), "--generator", SLOW,
                             "--predictor", "imagestats", "-n", str(SLOW_RUN["n"]), "--chunk", "256", "--seed", "3",
                             "--batch", "128", "--device", "cpu", "--space", "z", "--scheduler", address, "-q"],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    done = wait_for_commits(path, proc, at_least=2)
    assert proc.poll() is None, f"the run ended before it could be killed ({done} chunks)"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert 0 < len(Store.open(path).pending_chunks()) < 16
    with pytest.warns(UserWarning, match="stale lock"):
        engine.sample(str(path), SLOW, ["imagestats"], batch=128, device="cpu", spaces=["z"], resume=True,
                      progress=False, scheduler=address, **SLOW_RUN)
    _assert_same_store(path, slow_reference)


def test_second_writer_is_refused_while_a_two_worker_run_finishes_unharmed(tmp_path):
    path = tmp_path / "live.zarr"
    n, chunk = 256 * 24, 256
    proc = subprocess.Popen([sys.executable, "-m", "engine", "sample", str(path), "--generator", SLOW,
                             "--predictor", "imagestats", "-n", str(n), "--chunk", str(chunk), "--seed", "3",
                             "--batch", "128", "--device", "cpu", "--space", "z", "--workers", "2", "-q"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for_commits(path, proc, at_least=1, timeout=180)
    assert proc.poll() is None, "the first run ended before the second writer came"
    with pytest.raises(LockError, match="being written by another process"):
        engine.sample(str(path), SLOW, ["imagestats"], n=n, chunk=chunk, seed=3, spaces=["z"], resume=True,
                      progress=False)
    assert proc.poll() is None
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    store = Store.open(path)
    assert store.complete
    z = store.array("latents/z")[...]
    for index in (0, 11, 23):
        np.testing.assert_array_equal(z[index * chunk:(index + 1) * chunk], draw_codes(3, index, chunk, 64))


def test_clusters_started_here_leave_out_dasks_malloc_trim_threshold(monkeypatch):
    # The module's cluster, started with Dask's defaults, put the variable into this process's environment.
    monkeypatch.delenv(TRIM_VARIABLE, raising=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with cluster_client(workers=1) as handle:
            assert set(handle.client.run(os.environ.get, TRIM_VARIABLE).values()) == {None}
            assert list(handle.threads.values()) == [len(os.sched_getaffinity(0))]  # one worker: every core
    assert not [w for w in caught if TRIM_VARIABLE in str(w.message)]


def test_workers_started_with_dasks_malloc_trim_threshold_get_a_warning(cluster):
    address, _ = cluster  # a plain LocalCluster: its nannies set the variable
    with pytest.warns(UserWarning, match=rf"2 of 2 Dask workers run with {TRIM_VARIABLE}=65536 .* set to null"):
        with cluster_client(scheduler=address) as handle:
            assert len(handle.threads) == 2


def test_a_failing_chunk_surfaces_its_own_error_on_a_cluster_opened_by_the_caller(tmp_path, cluster):
    address, client = cluster
    G = load_generator(PLANTED_SMALL)
    store = prepare_store(str(tmp_path / "e.zarr"), G, [], n=1000, seed=0, chunk=500, spaces=["z"],
                          resume=False, overwrite=False)
    handle = ClusterHandle(client, ClusterRequest("address", address=address), 0.0, {}, 1)
    with pytest.raises(ValueError, match="returned shape"):
        run_distributed(store, PLANTED_SMALL, ["tests.models_for_tests:wrong_shape"], [0, 1], batch=100,
                        device="cpu", cluster=handle)
    assert store.pending_chunks() == [0, 1]


def test_the_dask_executor_runs_any_chunked_job_like_the_in_process_one(tmp_path, cluster):
    from engine.runtime import run_in_process, run_on_dask
    from tests.test_runtime import NormJob, _store

    address, client = cluster
    here, there = _store(tmp_path / "here.zarr"), _store(tmp_path / "there.zarr")
    local = run_in_process(NormJob(), here, range(10))
    handle = ClusterHandle(client, ClusterRequest("address", address=address), 0.0, {}, 1)
    remote = run_on_dask(NormJob(), there.path, range(10), handle)
    np.testing.assert_array_equal(there.array("scores")[:], here.array("scores")[:])
    assert remote.counters == local.counters and sorted(remote.chunks) == list(range(10)) and there.complete
    with pytest.raises(RuntimeError, match="chunk 3 fails"):
        run_on_dask(NormJob(fail_at=3), _store(tmp_path / "failing.zarr").path, range(10), handle)


def test_sample_chunk_is_a_pure_function_of_its_arguments(tmp_path, slow_reference):
    store = _prepare(tmp_path / "p.zarr")
    for _ in range(2):   # a redone chunk writes the same values
        assert sample_chunk(store.path, 5, SLOW, ("imagestats",), batch=128, device="cpu") == \
            (5, {"rows": 256, "nan_scores": 0})
    got = _arrays(tmp_path / "p.zarr")
    rows = slice(5 * 256, 6 * 256)
    np.testing.assert_array_equal(got["latents/z"][rows], slow_reference["latents/z"][rows])
    np.testing.assert_allclose(got["scores"][rows], slow_reference["scores"][rows], rtol=1e-4, atol=1e-5)
    assert Store.open(store.path).pending_chunks() == [i for i in range(16) if i != 5]


# ------------------------------------------------------------------------------------------- reductions
def _pca_partial(k, X):
    return PCA(k).partial_fit(X)


def _merge(a, b):
    return a.merge(b)


def _pearson_partial(X):
    return PearsonState().update(X)


@pytest.mark.parametrize("where", ["in-process", "cluster"])
def test_map_reduce_chunks_matches_the_one_pass_pca_and_pearson(planted_store, cluster, where):
    options = {"scheduler": cluster[0]} if where == "cluster" else {}
    path = planted_store.path
    w = planted_store.array("latents/w")[...]
    pca = map_reduce_chunks(path, "latents/w", partial(_pca_partial, 8), _merge, **options)
    exact = PCA(8).fit(w)
    assert pca.n_samples_seen_ == w.shape[0] == 40_000
    np.testing.assert_allclose(pca.explained_variance_, exact.explained_variance_, rtol=1e-5)
    np.testing.assert_allclose(np.abs(np.sum(pca.components_ * exact.components_, axis=1)), 1.0, atol=1e-5)
    np.testing.assert_allclose(pca.mean_, exact.mean_, atol=1e-6)
    scores = planted_store.array("scores")[...]
    corr = map_reduce_chunks(path, "scores", _pearson_partial, _merge, **options).result()
    np.testing.assert_allclose(corr, pearson(scores), atol=1e-6)
    np.testing.assert_allclose(corr, np.corrcoef(scores, rowvar=False), atol=1e-5)


def test_map_reduce_chunks_names_a_missing_array(planted_store):
    with pytest.raises(ValueError, match="no array 'latents/wp'"):
        map_reduce_chunks(planted_store.path, "latents/wp", _pearson_partial, _merge)


# ------------------------------------------------------------------------------------------- bad input
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("flags, message", [
    (dict(workers=0), "workers must be a positive integer; got 0"),
    (dict(workers=2, scheduler="tcp://x:1"), "--workers and --scheduler exclude each other"),
    (dict(gpus="a,b"), "gpus must be comma-separated GPU indices"),
    (dict(scheduler=" "), "scheduler needs an address"),
])
def test_bad_cluster_flags_are_one_line_errors(flags, message):
    with pytest.raises(ClusterError, match=message):
        validate_cluster_flags(**flags)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without GPUs")
def test_gpus_without_a_gpu_says_so():
    with pytest.raises(ClusterError, match="no CUDA GPU"):
        validate_cluster_flags(gpus="0,1")


def test_unreachable_scheduler_fails_within_seconds_naming_the_address(tmp_path):
    from click.testing import CliRunner

    from engine.cli import cli

    address = f"tcp://127.0.0.1:{_free_port()}"
    start = time.perf_counter()
    result = CliRunner().invoke(cli, ["sample", str(tmp_path / "u.zarr"), "--generator", PLANTED_SMALL,
                                      "-n", "100", "--scheduler", address, "-q"])
    assert time.perf_counter() - start < 30
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: cannot reach the Dask scheduler at " + address)
    assert not (tmp_path / "u.zarr").exists(), "a failed connection must not leave an empty store behind"


def test_workers_zero_is_a_one_line_error(tmp_path):
    from click.testing import CliRunner

    from engine.cli import cli

    result = CliRunner().invoke(cli, ["sample", str(tmp_path / "w.zarr"), "--generator", PLANTED_SMALL,
                                      "-n", "100", "--workers", "0", "-q"])
    assert result.exit_code == 1
    assert result.output.strip() == "Error: --workers must be a positive integer; got 0"
    assert not (tmp_path / "w.zarr").exists()


@pytest.mark.parametrize("command", ["pca", "correlate"])
def test_reductions_on_gpu_workers_refuse_cpu_devices_and_machines_without_gpus(command, tmp_path):
    from click.testing import CliRunner

    from engine.cli import cli

    store = engine.sample(str(tmp_path / "r.zarr"), PLANTED_SMALL, ["planted"], n=200, chunk=100, progress=False)
    before = sorted(p.name for p in (tmp_path / "r.zarr").rglob("*"))
    mixed = CliRunner().invoke(cli, [command, store.path, "--gpus", "0", "--device", "cpu"])
    assert mixed.exit_code != 0 and "--gpus reduces on GPU workers; it does not combine with --device cpu" \
        in mixed.output
    both = CliRunner().invoke(cli, [command, store.path, "--gpus", "0", "--workers", "2"])
    assert both.exit_code == 1 and both.output.count("\n") == 1 and "--workers" in both.output
    if not torch.cuda.is_available():
        none = CliRunner().invoke(cli, [command, store.path, "--gpus", "0"])
        assert none.exit_code == 1 and "no CUDA GPU" in none.output and none.output.count("\n") == 1
    assert sorted(p.name for p in (tmp_path / "r.zarr").rglob("*")) == before


def test_a_reduction_on_gpu_workers_runs_its_blocks_on_each_workers_gpu():
    from engine.cli.options import reduction_device

    assert reduction_device(None, "cpu") == "cpu" and reduction_device(None, "auto") == "auto"
    assert reduction_device("0,1", "auto") == "cuda" and reduction_device("0", "cuda:1") == "cuda"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_pca_on_gpu_workers_matches_the_cpu_reduction(tmp_path):
    pytest.importorskip("dask_cuda", reason="needs dask-cuda (the [gpu] extra)")
    from click.testing import CliRunner

    from engine.cli import cli

    store = engine.sample(str(tmp_path / "g.zarr"), PLANTED_SMALL, ["planted"], n=4000, chunk=500, progress=False)
    result = CliRunner().invoke(cli, ["pca", store.path, "-k", "5", "--gpus", "0", "--json"])
    assert result.exit_code == 0, result.output
    gpu = Store.open(store.path).array("directions/ganspace/w")[:]
    engine.pca(store.path, k=5, overwrite=True, device="cpu")
    cpu = Store.open(store.path).array("directions/ganspace/w")[:]
    assert np.abs(np.sum(gpu * cpu, axis=1)).min() > 0.9999
