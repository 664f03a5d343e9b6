"""Clusters described once in a YAML file (``--cluster FILE``): what to start, validated before anything starts.

One file describes one cluster, by ``kind``::

    kind: local                   # processes on this machine (distributed.LocalCluster)
    workers: 4                    #   worker processes (default 1)
    threads_per_worker: 1         #   default 1
    memory_limit: 8GiB            #   per worker: a size, 0 (no limit) or auto (default auto)
    gpus: "0,1"                   #   instead of workers: one worker per GPU (dask-cuda, the [gpu] extra)

    kind: scheduler               # a running Dask deployment
    address: tcp://host:8786

    kind: slurm                   # or pbs: batch jobs through dask-jobqueue (the [cluster] extra)
    jobs: 4                       #   batch jobs to submit (default 1)
    cores: 8                      #   per job (required)
    memory: 32GiB                 #   per job (required)
    processes: 1                  #   Dask worker processes per job (default: jobqueue's choice)
    walltime: "02:00:00"
    queue: gpu
    account: myproject
    job_extra_directives: ["--gres=gpu:1"]
    job_script_prologue: ["module load cuda", "source ~/venv/bin/activate"]
    local_directory: /scratch/$USER
    log_directory: logs
    python: /home/me/venv/bin/python
    interface: ib0                #   network interface of the scheduler and workers
    resource_spec: select=1:ncpus=8:mem=32GB   # pbs only

``load_cluster_config`` checks the file (unknown kinds and keys, wrong types: a ``ClusterError`` naming the
key and the file); ``job_script`` renders the batch script dask-jobqueue would submit, without a batch system;
``build_cluster`` makes the cluster object (``engine.distributed.started_cluster`` runs it: no module here
imports the rest of the engine).
"""
from __future__ import annotations

import difflib
import logging
import os
import re
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any



class ClusterError(ValueError):
    """A cluster that cannot be had or a distributed run that cannot finish; the message says what to do."""

KINDS = ("local", "scheduler", "slurm", "pbs")
#: Shown in a dry run where the script would name the scheduler started for the run.
SCHEDULER_PLACEHOLDER = "tcp://<scheduler-address>:8786"
EXTRA_HINT = "pip install dask-jobqueue (the [cluster] extra)"
_WALLTIME = re.compile(r"^(\d+-)?\d+(:\d{1,2}){0,2}$")


def _positive_int(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        return "must be a positive integer"
    return None


def _text(value: Any) -> str | None:
    if not isinstance(value, str) or not value.strip():
        return "must be a non-empty string"
    return None


def _size(value: Any) -> str | None:
    from dask.utils import parse_bytes

    if isinstance(value, bool) or not isinstance(value, (int, str)):
        return "must be a size such as 8GiB"
    try:
        parse_bytes(value)
    except (ValueError, TypeError):
        return "must be a size such as 8GiB"
    return None


def _memory_limit(value: Any) -> str | None:
    if value == "auto" or (isinstance(value, int) and not isinstance(value, bool) and value >= 0):
        return None
    return None if _size(value) is None else "must be a size such as 8GiB, 0 (no limit) or auto"


def _walltime(value: Any) -> str | None:
    if not isinstance(value, str) or not _WALLTIME.match(value.strip()):
        return "must be a time such as \"02:00:00\" (quoted) or \"1-00:00:00\""
    return None


def _strings(value: Any) -> str | None:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        return "must be a list of strings"
    return None


def _gpus(value: Any) -> str | None:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return None
    if isinstance(value, list) and value and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0
                                                 for v in value):
        return None
    if isinstance(value, str) and re.fullmatch(r"\s*\d+\s*(,\s*\d+\s*)*", value):
        return None
    return "must be GPU indices such as \"0,1\" or [0, 1]"


_Check = Callable[[Any], "str | None"]
_JOBQUEUE: dict[str, _Check] = {
    "jobs": _positive_int, "cores": _positive_int, "memory": _size, "processes": _positive_int,
    "walltime": _walltime, "queue": _text, "account": _text, "job_extra_directives": _strings,
    "job_script_prologue": _strings, "local_directory": _text, "log_directory": _text, "python": _text,
    "interface": _text, "death_timeout": _positive_int, "worker_extra_args": _strings}
#: key -> check, per kind ("kind" itself is checked first).
KEYS: dict[str, dict[str, _Check]] = {
    "local": {"workers": _positive_int, "threads_per_worker": _positive_int, "memory_limit": _memory_limit,
              "gpus": _gpus},
    "scheduler": {"address": _text},
    "slurm": dict(_JOBQUEUE),
    "pbs": {**_JOBQUEUE, "resource_spec": _text},
}
REQUIRED = {"scheduler": ("address",), "slurm": ("cores", "memory"), "pbs": ("cores", "memory")}


@dataclass(frozen=True)
class ClusterConfig:
    """A validated cluster file: its ``kind`` and the keys it set (``options``), and where it came from."""

    kind: str
    options: Mapping[str, Any] = field(default_factory=dict)
    path: str = "<cluster>"

    def describe(self) -> str:
        o = self.options
        if self.kind == "local":
            if "gpus" in o:
                return f"a local CUDA cluster on GPU(s) {gpu_list(o['gpus'])} ({self.path})"
            return (f"a local cluster of {o.get('workers', 1)} worker process(es) x "
                    f"{o.get('threads_per_worker', 1)} thread(s) ({self.path})")
        if self.kind == "scheduler":
            return f"the Dask scheduler at {o['address']} ({self.path})"
        return (f"{o.get('jobs', 1)} {self.kind.upper()} job(s) of {o['cores']} cores and {o['memory']} "
                f"({self.path})")


def gpu_list(value: Any) -> str:
    """GPU indices as the comma-separated text ``--gpus`` takes."""
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    return ",".join(part.strip() for part in str(value).split(","))


def load_cluster_config(path: str | os.PathLike) -> ClusterConfig:
    """Read and check the cluster file at ``path``; a ClusterError (one line, naming the key and file) if bad.

    A slurm/pbs file also needs dask-jobqueue installed (the ``cluster`` extra): checked here, before any work.
    """
    import yaml

    where = str(path)
    if not os.path.isfile(where):
        raise ClusterError(f"no cluster file at {where}")
    try:
        with open(where) as file:
            doc = yaml.safe_load(file)
    except yaml.YAMLError as exc:
        raise ClusterError(f"{where} is not valid YAML: {' '.join(str(exc).split())}") from None
    return parse_cluster_config(doc, where)


def parse_cluster_config(doc: Any, where: str = "<cluster>") -> ClusterConfig:
    """Check an already parsed cluster description (the mapping a cluster file holds); see the module doc."""
    if not isinstance(doc, dict):
        raise ClusterError(f"{where}: a cluster file is a mapping with a 'kind' ({', '.join(KINDS)}); "
                           f"got {type(doc).__name__}")
    kind = doc.get("kind")
    if kind not in KINDS:
        raise ClusterError(f"{where}: kind must be one of {', '.join(KINDS)}; got {kind!r}")
    checks = KEYS[kind]
    options = {key: value for key, value in doc.items() if key != "kind"}
    for key, value in options.items():
        if key not in checks:
            close = difflib.get_close_matches(str(key), list(checks), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ClusterError(f"{where}: unknown key {key!r} for a {kind} cluster{hint}; known: "
                               f"{', '.join(checks)}")
        problem = checks[key](value)
        if problem:
            raise ClusterError(f"{where}: {key} {problem}; got {value!r}")
    for key in REQUIRED.get(kind, ()):
        if key not in options:
            raise ClusterError(f"{where}: a {kind} cluster needs '{key}'")
    if kind == "local" and "gpus" in options and ("workers" in options or "threads_per_worker" in options):
        raise ClusterError(f"{where}: gpus starts one single-threaded worker per GPU; drop workers and "
                           "threads_per_worker")
    if kind in ("slurm", "pbs"):
        jobqueue_class(kind, where)
    return ClusterConfig(kind, options, where)


def jobqueue_class(kind: str, where: str = "<cluster>") -> Any:
    """dask-jobqueue's cluster class for ``kind`` (slurm, pbs); a one-line error naming the extra if missing."""
    try:
        import dask_jobqueue
    except ImportError:
        raise ClusterError(f"{where}: a {kind} cluster needs dask-jobqueue, which is not installed: "
                           f"{EXTRA_HINT}") from None
    return {"slurm": dask_jobqueue.SLURMCluster, "pbs": dask_jobqueue.PBSCluster}[kind]


def jobqueue_options(config: ClusterConfig) -> dict[str, Any]:
    """The keyword arguments of the dask-jobqueue cluster (every key but ``jobs``, which is its scale)."""
    return {key: value for key, value in config.options.items() if key != "jobs"}


def job_script(config: ClusterConfig, scheduler: str = SCHEDULER_PLACEHOLDER) -> str:
    """The batch script dask-jobqueue would submit for each job of a slurm/pbs ``config`` (what
    ``cluster.job_script()`` prints), rendered without a batch system and without starting a scheduler."""
    if config.kind not in ("slurm", "pbs"):
        raise ClusterError(f"{config.path}: a {config.kind} cluster submits no batch jobs, so it has no job script")
    job_class = jobqueue_class(config.kind, config.path).job_cls
    try:
        return job_class(scheduler=scheduler, name="dask-worker", **jobqueue_options(config)).job_script()
    except ValueError as exc:
        raise ClusterError(f"{config.path}: {exc}") from None


def dry_run_text(config: ClusterConfig) -> tuple[str, str]:
    """What ``--cluster FILE --dry-run`` prints: (a one-line note, the job script for slurm/pbs or "")."""
    if config.kind in ("slurm", "pbs"):
        jobs = config.options.get("jobs", 1)
        return f"# {config.describe()}: dask-jobqueue would submit {jobs} job(s) of this script", job_script(config)
    return f"# would use {config.describe()}; no batch jobs are submitted", ""


#: The batch system command each jobqueue kind submits its jobs with.
SUBMIT_COMMANDS = {"slurm": "sbatch", "pbs": "qsub"}


def build_cluster(config: ClusterConfig) -> Any:
    """The started cluster object ``config`` describes (LocalCluster, LocalCUDACluster, or a dask-jobqueue
    cluster scaled to its ``jobs``); not for the ``scheduler`` kind. ``engine.distributed.started_cluster``
    calls this with the engine's Dask settings."""
    o = config.options
    if config.kind == "local":
        common = dict(dashboard_address=None, silence_logs=logging.ERROR)
        if "memory_limit" in o:
            common["memory_limit"] = o["memory_limit"]
        if "gpus" in o:
            try:
                from dask_cuda import LocalCUDACluster
            except ImportError:
                raise ClusterError(f"{config.path}: gpus needs dask-cuda, which is not installed: "
                                   "pip install dask-cuda (the [gpu] extra)") from None
            return LocalCUDACluster(CUDA_VISIBLE_DEVICES=gpu_list(o["gpus"]), threads_per_worker=1, **common)
        from distributed import LocalCluster

        return LocalCluster(n_workers=o.get("workers", 1), threads_per_worker=o.get("threads_per_worker", 1),
                            processes=True, **common)
    submit = SUBMIT_COMMANDS[config.kind]
    if shutil.which(submit) is None:    # dask-jobqueue would only log the failed submission and wait for ever
        raise ClusterError(f"{config.path}: kind {config.kind} submits its jobs with {submit}, which is not on "
                           f"this machine's PATH; run from the cluster's login node (--dry-run prints the job "
                           "script)")
    cluster = jobqueue_class(config.kind, config.path)(**jobqueue_options(config))
    cluster.scale(jobs=o.get("jobs", 1))
    return cluster
