"""The sampler's contracts: determinism, resumption after SIGKILL, flat memory, NaN handling, refusals."""
from __future__ import annotations

import json
import os
import signal
import warnings
import subprocess
import sys

import numpy as np
import pytest
import zarr

import engine
from engine.sampler import draw_codes
from engine.store import Store, StoreError
from tests.conftest import PLANTED_SMALL, ROOT, run_cli, wait_for_commits


def _arrays(path):
    group = zarr.open_group(str(path), mode="r")
    return {name: group[name][...] for name in ("latents/z", "latents/w", "scores")}


def test_draw_depends_only_on_seed_chunk_index_and_shape():
    a = draw_codes(3, 5, 256, 16)
    np.testing.assert_array_equal(a, draw_codes(3, 5, 256, 16))
    np.testing.assert_array_equal(draw_codes(3, 5, 256, 16, rows=10), a[:10])   # short last chunk = prefix
    assert not np.array_equal(a, draw_codes(3, 6, 256, 16)) and not np.array_equal(a, draw_codes(4, 5, 256, 16))
    assert a.dtype == np.float32


def test_batch_size_does_not_change_the_store(tmp_path):
    kwargs = dict(n=3000, seed=11, chunk=1024, progress=False)
    engine.sample(str(tmp_path / "a.zarr"), PLANTED_SMALL, ["planted"], batch=1024, **kwargs)
    engine.sample(str(tmp_path / "b.zarr"), PLANTED_SMALL, ["planted"], batch=100, **kwargs)
    a, b = _arrays(tmp_path / "a.zarr"), _arrays(tmp_path / "b.zarr")
    np.testing.assert_array_equal(a["latents/z"], b["latents/z"])
    np.testing.assert_allclose(a["latents/w"], b["latents/w"], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(a["scores"], b["scores"], rtol=1e-4, atol=1e-4)
    # The stored codes are exactly the contract's draw, chunk by chunk.
    np.testing.assert_array_equal(a["latents/z"][2048:], draw_codes(11, 2, 1024, 128, rows=3000 - 2048))


def test_sigkilled_run_resumes_to_the_uninterrupted_store(tmp_path):
    args = ["sample", "--generator", PLANTED_SMALL, "--predictor", "planted", "-n", "60000", "--chunk", "2048",
            "--seed", "5", "-q"]
    run_cli("sample", str(tmp_path / "full.zarr"), *args[1:], "--batch", "512", check=True)
    killed = tmp_path / "killed.zarr"
    proc = subprocess.Popen([sys.executable, "-m", "engine", "sample", str(killed), *args[1:], "--batch", "512"],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_commits(killed, proc, at_least=3)
    assert proc.poll() is None, "the run finished before it could be killed; raise n"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    store = Store.open(killed)
    assert 0 < len(store.pending_chunks()) < store.n_chunks
    # The dead run's lock is stale (its pid is gone): taken over with a warning, not refused. The resume
    # computes in the batches the run began with (recorded in the store), so every array is bit-identical.
    resumed = run_cli("sample", str(killed), *args[1:], "--resume", check=True)
    assert "stale lock" in resumed.stderr and "differs from the run" not in resumed.stderr
    a, b = _arrays(tmp_path / "full.zarr"), _arrays(killed)
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    assert Store.open(killed).complete


def test_a_resume_in_other_batches_says_which_bits_may_differ(tmp_path):
    kwargs = dict(n=2060, chunk=1030, seed=2, progress=False)
    reference = _arrays(engine.sample(str(tmp_path / "ref.zarr"), "digits", ["digits"], batch=256, **kwargs).path)
    path = tmp_path / "s.zarr"
    engine.sample(str(path), "digits", ["digits"], batch=256, **kwargs)

    def forget_chunk_1():
        group = zarr.open_group(str(path), mode="r+")
        group["progress"][1] = 0
        for name in ("latents/z", "latents/w", "scores"):
            group[name][1030:] = np.nan

    forget_chunk_1()
    with warnings.catch_warnings():
        warnings.simplefilter("error")                       # same batch, threads, CPU: nothing to warn about
        engine.sample(str(path), "digits", ["digits"], resume=True, **kwargs)
    for name, values in _arrays(path).items():
        np.testing.assert_array_equal(values, reference[name], err_msg=name)
    forget_chunk_1()
    with pytest.warns(UserWarning, match=r"batch 256 -> 100.*latents/z stays identical"):
        engine.sample(str(path), "digits", ["digits"], resume=True, batch=100, **kwargs)
    resumed = _arrays(path)
    np.testing.assert_array_equal(resumed["latents/z"], reference["latents/z"])
    np.testing.assert_allclose(resumed["scores"], reference["scores"], atol=1e-4)


def test_second_sample_on_a_complete_store_is_refused_and_harmless(tmp_path):
    path = tmp_path / "s.zarr"
    engine.sample(str(path), PLANTED_SMALL, ["planted"], n=500, chunk=250, progress=False)
    before = _arrays(path)
    proc = run_cli("sample", str(path), "--generator", PLANTED_SMALL, "-n", "500", "--seed", "9")
    assert proc.returncode == 1 and proc.stderr.strip().splitlines()[-1].startswith("Error: ")
    assert "already exists" in proc.stderr and "Traceback" not in proc.stderr
    after = _arrays(path)
    for name in before:
        np.testing.assert_array_equal(before[name], after[name])


def test_resume_refuses_a_different_run(tmp_path):
    path = tmp_path / "s.zarr"
    engine.sample(str(path), PLANTED_SMALL, ["planted"], n=500, chunk=250, progress=False)
    with pytest.raises(StoreError, match="sampled with seed=0"):
        engine.sample(str(path), PLANTED_SMALL, ["planted"], n=500, chunk=250, seed=1, resume=True, progress=False)


def test_overwrite_never_replaces_a_folder_that_is_not_a_store(tmp_path):
    (tmp_path / "precious").mkdir()
    (tmp_path / "precious" / "thesis.tex").write_text("years of work")
    with pytest.raises(StoreError, match="not a latent-engine store"):
        engine.sample(str(tmp_path / "precious"), PLANTED_SMALL, n=10, overwrite=True, progress=False)
    assert (tmp_path / "precious" / "thesis.tex").read_text() == "years of work"


def test_live_second_writer_is_refused(tmp_path):
    from engine.lock import LockError, StoreLock

    path = str(tmp_path / "s.zarr")
    with StoreLock(path):
        with pytest.raises(LockError, match="being written by another process"):
            engine.sample(path, PLANTED_SMALL, n=10, progress=False)
        # Readers are never blocked: nothing here needs the lock to read.
    engine.sample(path, PLANTED_SMALL, n=10, progress=False)


def test_nan_scores_are_recorded_and_counted(tmp_path):
    path = tmp_path / "s.zarr"
    with pytest.warns(UserWarning, match="NaN scores"):
        engine.sample(str(path), PLANTED_SMALL, ["tests.models_for_tests:half_nan"], n=100, chunk=50,
                      progress=False)
    scores = zarr.open_group(str(path), mode="r")["scores"][:, 0]
    assert np.isnan(scores[::2]).all() and np.isfinite(scores[1::2]).all()
    info = json.loads(run_cli("info", str(path), "--json", check=True).stdout)
    assert info["attributes"]["broken"]["nan"] == 50


@pytest.mark.parametrize("args, message", [
    (["-n", "0"], "n must be a positive integer; got 0"),
    (["-n", "-5"], "n must be a positive integer; got -5"),
    (["-n", "10", "--chunk", "0"], "chunk must be a positive integer; got 0"),
    (["-n", "10", "--device", "cuda"], "no CUDA GPU"),
    (["-n", "10", "--predictor", "nonexistent"], "unknown predictor 'nonexistent'"),
    (["-n", "10", "--predictor", "tests.models_for_tests:wrong_shape"], "returned shape (10, 3); expected (10, 2)"),
    (["-n", "10", "--space", "w", "--generator", "convstack:channels=16,resolution=8"], "no mapping network"),
])
def test_bad_input_is_one_line_and_nonzero(tmp_path, args, message):
    if "--device" in args and __import__("torch").cuda.is_available():
        pytest.skip("this machine has a GPU")
    generator = [] if "--generator" in args else ["--generator", PLANTED_SMALL]
    proc = run_cli("sample", str(tmp_path / "s.zarr"), *generator, *args)
    assert proc.returncode == 1, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("Error: ")]
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in proc.stderr


def test_unknown_generator_is_one_line(tmp_path):
    proc = run_cli("sample", str(tmp_path / "s.zarr"), "--generator", "stylegan9", "-n", "10")
    assert proc.returncode == 1 and "unknown generator 'stylegan9'" in proc.stderr


def test_info_on_a_path_that_is_not_a_store(tmp_path):
    proc = run_cli("info", str(tmp_path))
    assert proc.returncode == 1 and "not a zarr v3 store" in proc.stderr and "Traceback" not in proc.stderr


def _peak_rss_mb(tmp_path, n: int) -> float:
    code = ("import resource, engine; engine.sample({path!r}, {gen!r}, ['planted'], n={n}, chunk=2048, "
            "batch=1024, progress=False); print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)")
    out = subprocess.run([sys.executable, "-c", code.format(path=str(tmp_path / f"m{n}.zarr"), gen=PLANTED_SMALL, n=n)],
                         capture_output=True, text=True, cwd=ROOT, check=True).stdout
    return float(out.strip().splitlines()[-1])


def test_peak_memory_does_not_grow_with_n(tmp_path):
    small, large = _peak_rss_mb(tmp_path, 20_000), _peak_rss_mb(tmp_path, 160_000)
    # 8x the rows (80 MB more of codes and scores) must not show up in the peak.
    assert large <= 1.15 * small, (small, large)
