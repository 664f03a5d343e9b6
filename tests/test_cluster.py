"""Clusters from a YAML file (``--cluster FILE``): SLURM/PBS job scripts rendered without a batch system, the
local kind run for real (sample, pca, a whole sweep on one cluster), bad files as one-line errors."""
from __future__ import annotations

import functools
import json
import sys
import time

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

import engine
from engine import cluster_config
from engine.cli import cli
from engine.cluster_config import job_script, load_cluster_config, parse_cluster_config
from engine.distributed import ClusterError, started_cluster, validate_cluster_flags
from engine.store import Store
from tests.conftest import PLANTED_SMALL

pytestmark = pytest.mark.filterwarnings(r"ignore:.*Dask workers run with MALLOC_TRIM_THRESHOLD_:UserWarning")

SLURM = {"kind": "slurm", "jobs": 3, "cores": 8, "memory": "32GiB", "processes": 1, "walltime": "02:00:00",
         "queue": "gpu", "account": "proj42", "job_extra_directives": ["--gres=gpu:1"],
         "job_script_prologue": ["source /opt/venv/bin/activate"], "local_directory": "/scratch/me",
         "python": "/opt/venv/bin/python"}
PBS = {"kind": "pbs", "cores": 12, "memory": "48GB", "processes": 2, "walltime": "04:30:00", "queue": "workq",
       "account": "proj42", "resource_spec": "select=1:ncpus=12:mem=48GB:ngpus=1",
       "job_extra_directives": ["-j oe"]}
LOCAL = {"kind": "local", "workers": 1, "threads_per_worker": 1, "memory_limit": "2GiB"}


def _file(tmp_path, doc, name="cluster.yaml"):
    path = tmp_path / name
    path.write_text(doc if isinstance(doc, str) else yaml.safe_dump(doc))
    return path


# ------------------------------------------------------------------------------------------ job scripts
def test_slurm_job_script_carries_every_resource_of_the_file(tmp_path):
    script = job_script(load_cluster_config(_file(tmp_path, SLURM)))
    lines = script.splitlines()
    assert lines[0] == "#!/usr/bin/env bash"
    for directive in ("#SBATCH -p gpu", "#SBATCH -A proj42", "#SBATCH --cpus-per-task=8", "#SBATCH --mem=32G",
                      "#SBATCH -t 02:00:00", "#SBATCH --gres=gpu:1"):
        assert directive in lines, directive
    assert "source /opt/venv/bin/activate" in lines
    worker = next(line for line in lines if "dask_worker" in line)
    assert worker.startswith("/opt/venv/bin/python -m distributed.cli.dask_worker")
    assert "--nthreads 8" in worker and "--memory-limit 32.00GiB" in worker
    assert "--local-directory /scratch/me" in worker and "--nanny" in worker


def test_pbs_job_script_carries_every_resource_of_the_file(tmp_path):
    script = job_script(load_cluster_config(_file(tmp_path, PBS)))
    lines = script.splitlines()
    for directive in ("#PBS -q workq", "#PBS -A proj42", "#PBS -l select=1:ncpus=12:mem=48GB:ngpus=1",
                      "#PBS -l walltime=04:30:00", "#PBS -j oe"):
        assert directive in lines, directive
    worker = next(line for line in lines if "dask_worker" in line)
    # Two worker processes share the job's 12 cores and 48 GB.
    assert "--nworkers 2" in worker and "--nthreads 6" in worker


def test_dry_run_prints_the_script_alone_on_stdout_and_writes_nothing(tmp_path):
    store = tmp_path / "never.zarr"
    result = CliRunner().invoke(cli, ["sample", str(store), "-g", "planted", "-n", "100", "--cluster",
                                      str(_file(tmp_path, SLURM)), "--dry-run"])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("#!/usr/bin/env bash") and "#SBATCH --cpus-per-task=8" in result.stdout
    assert "would submit 3 job(s)" in result.stderr
    assert not store.exists()


def test_sweep_dry_run_shows_the_sweeps_cluster_script(tmp_path):
    _file(tmp_path, SLURM, "slurm.yaml")
    sweep = _file(tmp_path, {"cluster": "slurm.yaml", "runs": [{"generator": "planted", "n": 10}]}, "sweep.yaml")
    result = CliRunner().invoke(cli, ["sweep", str(sweep), "--dry-run", "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output)
    assert "#SBATCH --mem=32G" in payload["cluster"]["job_script"] and len(payload["runs"]) == 1


# ------------------------------------------------------------------------------------------ bad files
BAD = [
    ("kind: lsf\ncores: 2\n", "kind must be one of local, scheduler, slurm, pbs; got 'lsf'"),
    ("- kind: local\n", "a cluster file is a mapping with a 'kind'"),
    ("kind: slurm\ncores: 4\nmemory: 8GiB\ncoers: 4\n", "unknown key 'coers' for a slurm cluster (did you mean 'cores'?)"),
    ("kind: slurm\ncores: eight\nmemory: 8GiB\n", "cores must be a positive integer; got 'eight'"),
    ("kind: slurm\ncores: 4\nmemory: lots\n", "memory must be a size such as 8GiB; got 'lots'"),
    ("kind: slurm\ncores: 4\nmemory: 8GiB\nwalltime: 7200\n", "walltime must be a time such as"),
    ("kind: pbs\ncores: 4\nmemory: 8GiB\njob_extra_directives: -l foo\n", "job_extra_directives must be a list of strings"),
    ("kind: slurm\nmemory: 8GiB\n", "a slurm cluster needs 'cores'"),
    ("kind: local\nworkers: 0\n", "workers must be a positive integer; got 0"),
    ("kind: local\nresource_spec: x\n", "unknown key 'resource_spec' for a local cluster"),
    ("kind: local\ngpus: [0, 1]\nworkers: 2\n", "gpus starts one single-threaded worker per GPU"),
    ("kind: scheduler\n", "a scheduler cluster needs 'address'"),
    ("kind: [local\n", "is not valid YAML"),
]


@pytest.mark.parametrize("text, message", BAD)
def test_a_bad_cluster_file_is_one_line_naming_the_key_and_the_file(tmp_path, text, message):
    path = _file(tmp_path, text)
    with pytest.raises(ClusterError) as info:
        load_cluster_config(path)
    assert message in str(info.value) and str(path) in str(info.value)
    assert "\n" not in str(info.value)


def test_the_command_line_shows_a_bad_file_in_one_line_before_writing(tmp_path):
    store = tmp_path / "never.zarr"
    result = CliRunner().invoke(cli, ["sample", str(store), "-g", "planted", "-n", "100", "--cluster",
                                      str(_file(tmp_path, "kind: local\nworkers: -1\n"))])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [f"Error: {tmp_path / 'cluster.yaml'}: workers must be a positive "
                                                  "integer; got -1"]
    assert not store.exists()
    missing = CliRunner().invoke(cli, ["pca", str(store), "--cluster", str(tmp_path / "nope.yaml")])
    assert missing.exit_code == 1 and f"no cluster file at {tmp_path / 'nope.yaml'}" in missing.output


def test_a_cluster_file_and_another_cluster_flag_exclude_each_other(tmp_path):
    with pytest.raises(ClusterError, match="--workers and --cluster exclude each other"):
        validate_cluster_flags(workers=2, cluster=str(_file(tmp_path, LOCAL)))


def test_slurm_without_dask_jobqueue_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "dask_jobqueue", None)     # import dask_jobqueue -> ImportError
    with pytest.raises(ClusterError, match=r"needs dask-jobqueue, which is not installed: pip install "
                                           r"dask-jobqueue \(the \[cluster\] extra\)"):
        load_cluster_config(_file(tmp_path, SLURM))


def test_an_unreachable_scheduler_file_fails_within_seconds_naming_the_address(tmp_path):
    path = _file(tmp_path, {"kind": "scheduler", "address": "tcp://127.0.0.1:9"})
    start = time.perf_counter()
    with pytest.raises(ClusterError, match="cannot reach the Dask scheduler at tcp://127.0.0.1:9"):
        engine.sample(str(tmp_path / "s.zarr"), "planted", ["planted"], n=100, progress=False, cluster=str(path))
    assert time.perf_counter() - start < 30
    assert not (tmp_path / "s.zarr").exists()


# ------------------------------------------------------------------------------------------ the local kind
@pytest.fixture(scope="module")
def local_file(tmp_path_factory):
    return _file(tmp_path_factory.mktemp("cluster"), LOCAL)


@pytest.fixture
def count_starts(monkeypatch):
    started: list[str] = []
    real = cluster_config.build_cluster

    def counting(config):
        started.append(config.kind)
        return real(config)

    monkeypatch.setattr(cluster_config, "build_cluster", counting)
    return started


def test_the_local_kind_samples_the_single_process_store_and_reduces_pca(tmp_path, local_file, count_starts):
    run = dict(n=2000, chunk=500, seed=4, progress=False)
    reference = engine.sample(str(tmp_path / "one.zarr"), PLANTED_SMALL, ["planted"], **run)
    got = engine.sample(str(tmp_path / "c.zarr"), PLANTED_SMALL, ["planted"], cluster=str(local_file), **run)
    assert count_starts == ["local"] and got.complete
    np.testing.assert_array_equal(got.array("latents/z")[:], reference.array("latents/z")[:])
    np.testing.assert_allclose(got.array("scores")[:], reference.array("scores")[:], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got.array("latents/w")[:], reference.array("latents/w")[:], rtol=1e-5, atol=1e-6)

    result = CliRunner().invoke(cli, ["pca", str(tmp_path / "c.zarr"), "-k", "5", "--cluster", str(local_file)])
    assert result.exit_code == 0, result.output
    assert count_starts == ["local", "local"]
    engine.pca(str(tmp_path / "one.zarr"), k=5)
    ours = Store.open(str(tmp_path / "c.zarr")).array("directions/ganspace/w")[:]
    theirs = Store.open(str(tmp_path / "one.zarr")).array("directions/ganspace/w")[:]
    assert np.abs(np.sum(ours * theirs, axis=1)).min() > 0.9999


def test_a_sweep_starts_its_cluster_once_for_all_its_runs(tmp_path, local_file, count_starts, monkeypatch):
    from engine.methods import correlate as correlate_module

    schedulers: list[str | None] = []
    real_correlate = correlate_module.correlate

    @functools.wraps(real_correlate)          # the sweep reads the signature to know what to pass
    def spying(store, **kwargs):
        schedulers.append(kwargs.get("scheduler"))
        return real_correlate(store, **kwargs)

    monkeypatch.setattr(correlate_module, "correlate", spying)
    sweep = _file(tmp_path, {"cluster": str(local_file), "defaults": {"n": 600, "chunk": 300},
                             "runs": [{"generator": PLANTED_SMALL, "predictors": ["planted"], "seed": [0, 1, 2],
                                       "analyses": ["correlate"]}]}, "sweep.yaml")
    rows = engine.run_sweep(engine.load_sweep(sweep), progress=False, echo=lambda line: None)
    assert [r["status"] for r in rows] == ["done"] * 3 and all(r["rows"] == 600 for r in rows)
    assert count_starts == ["local"]                     # one cluster, three runs
    assert len(schedulers) == 3 and len(set(schedulers)) == 1 and schedulers[0].startswith("tcp://")
    # A second pass finds everything done and starts nothing.
    engine.run_sweep(engine.load_sweep(sweep), progress=False, echo=lambda line: None)
    assert count_starts == ["local"]


def test_a_sweep_cluster_and_a_runs_workers_exclude_each_other(tmp_path, local_file):
    sweep = _file(tmp_path, {"cluster": str(local_file),
                             "runs": [{"generator": "planted", "n": 10, "workers": 2}]}, "sweep.yaml")
    with pytest.raises(ValueError, match=r"runs\[0\]: workers and the sweep's cluster exclude each other"):
        engine.load_sweep(sweep)


def test_map_reduce_chunks_on_a_cluster_file_reuses_the_running_cluster(planted_store, local_file, count_starts):
    from engine.distributed import map_reduce_chunks

    def column_sums(values):
        return values.sum(axis=0, dtype=np.float64)

    config = load_cluster_config(local_file)
    with started_cluster(config) as outer:
        with started_cluster(parse_cluster_config(dict(LOCAL), str(local_file))) as inner:
            assert inner == outer
        got = map_reduce_chunks(planted_store.path, "scores", column_sums, np.add, cluster=str(local_file))
    assert count_starts == ["local"]                       # the inner uses found the outer cluster running
    np.testing.assert_allclose(got, planted_store.array("scores")[:].sum(axis=0, dtype=np.float64), rtol=1e-9)


def test_sample_dry_run_json_describes_the_cluster(tmp_path):
    result = CliRunner().invoke(cli, ["sample", str(tmp_path / "s.zarr"), "-g", "planted", "-n", "10", "--cluster",
                                      str(_file(tmp_path, PBS)), "--dry-run", "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["kind"] == "pbs" and "#PBS -q workq" in payload["job_script"]


def test_invert_on_a_local_cluster_file_writes_what_the_in_process_run_writes(tmp_path, local_file, count_starts):
    images = np.random.default_rng(0).uniform(-1, 1, (6, 1, 8, 8)).astype(np.float32)
    np.save(tmp_path / "targets.npy", images)
    run = dict(space="w", steps=5, chunk=3, batch=3, seed=2, progress=False)
    reference = engine.invert(str(tmp_path / "targets.npy"), str(tmp_path / "one.zarr"), "digits", device="cpu", **run)
    result = CliRunner().invoke(cli, ["invert", str(tmp_path / "targets.npy"), str(tmp_path / "c.zarr"), "-g", "digits",
                                      "--space", "w", "--steps", "5", "--chunk", "3", "--batch", "3", "--seed", "2",
                                      "--device", "cpu", "--cluster", str(local_file), "-q"])
    assert result.exit_code == 0, result.output
    assert count_starts == ["local"]
    got = Store.open(str(tmp_path / "c.zarr"))
    assert got.complete
    np.testing.assert_allclose(got.array("latents/w")[:], reference.array("latents/w")[:], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got.array("inversion/error")[:], reference.array("inversion/error")[:], rtol=1e-4)


def test_a_batch_system_kind_without_its_submit_command_is_one_line_not_a_hang(tmp_path, monkeypatch):
    import shutil

    real = shutil.which
    monkeypatch.setattr(shutil, "which", lambda name, *a, **k: None if name in ("sbatch", "qsub") else real(name))
    for doc, submit in ((SLURM, "sbatch"), (PBS, "qsub")):
        path = _file(tmp_path, doc, f"{doc['kind']}.yaml")
        start = time.perf_counter()
        with pytest.raises(ClusterError, match=f"submits its jobs with {submit}, which is not on this machine's PATH"):
            engine.sample(str(tmp_path / "s.zarr"), "planted", ["planted"], n=100, progress=False, cluster=str(path))
        assert time.perf_counter() - start < 30 and not (tmp_path / "s.zarr").exists()
