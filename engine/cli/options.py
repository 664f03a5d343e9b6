"""Options and printing helpers shared by the commands."""
from __future__ import annotations

import json
import math
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import PurePath
from typing import Any

import click
import numpy as np

json_option = click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON instead of a table.")
workers_option = click.option("--workers", type=int, default=None,
                              help="Reduce the chunks on a local Dask cluster of this many processes.")
scheduler_option = click.option("--scheduler", default=None, help="Address of an existing Dask scheduler.")
cluster_option = click.option("--cluster", "cluster", default=None, metavar="FILE",
                              help="A cluster described in a YAML file: kind local (workers, threads_per_worker, "
                                   "memory_limit, gpus), scheduler (address) or slurm/pbs (cores, memory, jobs, "
                                   "walltime, queue, ...: the [cluster] extra). See README, \"Clusters\".")


reduce_gpus_option = click.option("--gpus", default=None, metavar="LIST",
                                  help="Reduce on one Dask worker per GPU (comma-separated indices, the [gpu] "
                                       "extra); each worker's blocks run on its GPU.")


def reduction_device(gpus: str | None, device: str) -> str:
    """The device a reduction's blocks run on: ``device``, or each worker's own GPU ("cuda") with ``--gpus``."""
    if gpus is None:
        return device
    if str(device).startswith("cpu"):
        raise click.UsageError("--gpus reduces on GPU workers; it does not combine with --device cpu")
    return "cuda"          # a dask-cuda worker sees only its own GPU, as cuda:0


@contextmanager
def reduction_scheduler(cluster: str | None, workers: int | None = None, scheduler: str | None = None,
                        gpus: str | None = None) -> Iterator[str | None]:
    """For commands that reduce on Dask through ``workers``/``scheduler`` (pca, correlate): with ``--cluster
    FILE`` or ``--gpus LIST``, start that cluster and yield its scheduler's address (closed on exit), else yield
    ``scheduler`` as given. Two ways to get a cluster at once are refused before anything starts."""
    if cluster is None and gpus is None:
        yield scheduler
        return
    from engine.distributed import cluster_client, started_cluster, validate_cluster_flags

    request = validate_cluster_flags(workers, scheduler, gpus, cluster)
    if gpus is not None:
        with cluster_client(gpus=gpus) as handle:
            yield handle.client.scheduler.address
        return
    with started_cluster(request.config) as address:
        yield address


def echo_json(payload: Any) -> None:
    """Print ``payload`` as JSON: numpy arrays and scalars as JSON numbers in full, NaN/±inf as null.

    Only JSON's own types, numpy arrays/scalars and paths are accepted; anything else raises TypeError
    (a payload the command did not mean to print is a bug, not a string).
    """
    click.echo(json.dumps(to_json(payload), indent=2, allow_nan=False))


def to_json(value: Any, where: str = "payload") -> Any:
    """``value`` as plain JSON types (dict, list, str, int, float, bool, None); ``where`` names it in errors."""
    if value is None or isinstance(value, (str, bool)):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, dict):
        return {_key(k, where): to_json(v, f"{where}[{k!r}]") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, np.ndarray):
        if value.dtype.kind not in "biuf":
            raise TypeError(f"{where}: cannot print a numpy array of dtype {value.dtype} as JSON")
        return to_json(value.tolist(), where)
    if isinstance(value, np.generic) and value.dtype.kind in "biuf":
        return to_json(value.item(), where)
    if isinstance(value, PurePath):
        return str(value)
    raise TypeError(f"{where}: cannot print {type(value).__name__} as JSON")


def _key(key: Any, where: str) -> str | int | float | bool | None:
    if isinstance(key, np.generic):
        key = key.item()
    if isinstance(key, (str, int, float, bool)) or key is None:
        return key
    raise TypeError(f"{where}: cannot use a {type(key).__name__} key in JSON")


def echo_table(rows: list[list[Any]], headers: list[str]) -> None:
    """A plain aligned text table (no dependency, copy-pastable)."""
    cells = [[str(c) for c in headers]] + [[_fmt(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    for k, row in enumerate(cells):
        click.echo("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
        if k == 0:
            click.echo("  ".join("-" * w for w in widths))


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
