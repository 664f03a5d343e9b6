"""Sweeps: many sampling runs and their analyses from one YAML file, resumable, with a summary table.

The file (validated in full before anything starts; unknown keys and bad values are one-line errors that
name the place, e.g. ``runs[1].seed: ...``)::

    out: runs                     # optional: folder of the runs, relative to this file
                                  #   (default: <file stem>-runs beside it; `sweep --out DIR` overrides)
    cluster: cluster.yaml         # optional: a cluster file (engine.cluster_config), relative to this file;
                                  #   started once and used by every run's sampling and by the analyses
                                  #   that reduce on Dask (pca, correlate); `sweep --cluster FILE` overrides
    defaults:                     # optional: any run key below, used where a block does not set it
      n: 20000
      analyses: [boundaries]
    runs:                         # required: blocks; each expands to the cartesian product of its swept keys
      - name: planted             # optional prefix of the run folders (letters, digits, . _ -)
        generator: [planted, "planted:seed=3"]   # swept: a SPEC or a list of SPECs
        predictors: [planted, imagestats]        # one set of predictor SPECs; a list of lists sweeps sets
        seed: [0, 1]                             # swept: an int >= 0 or a list
        n: [10000, 50000]                        # swept: an int > 0 or a list
        spaces: [z, w]                           # one set of z|w|wp; a list of lists sweeps sets
        chunk: 4096                              # fixed: chunk, batch, device as for `sample`
        batch: 64                                # optional: default 64 on CPU, 256 on CUDA
        device: auto
        workers: 2                               # optional, one of workers | scheduler | gpus, as for `sample`
        analyses:                                # run in order on each run's store
          - boundaries                           #   a name: boundaries, sefa, pca, correlate, report, ...
          - pca: {k: 10}                         #   or a one-key mapping: name -> keyword options

Each run gets a folder under ``out`` named from its parameters (``planted__planted+imagestats__seed0__n10000``)
holding ``store.zarr`` and ``run.json`` (its parameters, the stages done, its summary, the error of a failed
attempt). A re-run skips finished runs and stages, resumes an interrupted store (``sample --resume``) and
retries what failed; a failed run is reported and the others continue. The run's store belongs to the sweep:
an analysis that takes ``overwrite`` gets ``overwrite=True`` unless its options set it, so that a stage retried
after a failure or an interruption replaces what its earlier attempt wrote instead of being refused. ``summary.md`` and ``summary.json`` in
``out`` list per run: status, rows, samples/s and the InterFaceGAN boundaries' validation accuracies.

The analyses are those the registered methods declare (``engine.methods``) and the report, looked up at run
time in ``ANALYSES``, so a sweep that names one this installation lacks fails that run with a clear message and
carries on.
"""
from __future__ import annotations

import contextlib
import dataclasses
import difflib
import hashlib
import importlib
import inspect
import itertools
import json
import os
import re
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from engine.methods import analyses as method_analyses

#: analysis name -> "module:function" of its Python twin, looked up at run time (tests point these elsewhere):
#: the registered methods' analyses (``engine.methods``), then the report.
ANALYSES: dict[str, tuple[str, ...]] = {
    **{name: (f"{function.__module__}:{function.__name__}",) for name, function in method_analyses().items()},
    "report": ("engine.reporting:report",)}
TOP_KEYS = ("out", "defaults", "runs", "cluster")
RUN_KEYS = ("name", "generator", "predictors", "seed", "n", "spaces", "chunk", "batch", "device", "workers",
            "scheduler", "gpus", "analyses")
SWEPT = ("generator", "predictors", "seed", "n", "spaces")
FIXED_DEFAULTS = {"predictors": [], "seed": 0, "chunk": 4096, "batch": None, "device": "auto", "spaces": None,
                  "workers": None, "scheduler": None, "gpus": None, "analyses": []}
MARKER = "run.json"
STORE = "store.zarr"
_NAME = re.compile(r"^[A-Za-z0-9._-]+$")


class SweepError(ValueError):
    """A sweep file that cannot run; the message names the key and what is wrong."""


class AnalysisUnavailable(LookupError):
    """An analysis named in the sweep that this installation does not have."""


@dataclasses.dataclass
class Run:
    """One resolved run: its folder name, sampling parameters and analyses."""

    name: str
    generator: str
    predictors: list[str]
    seed: int
    n: int
    spaces: list[str] | None
    chunk: int
    batch: int | None
    device: str
    workers: int | None
    scheduler: str | None
    gpus: str | None
    analyses: list[tuple[str, dict[str, Any]]]
    source: str = ""

    def sampling(self) -> dict[str, Any]:
        """The parameters that define the store (what a finished run is compared on)."""
        return {"generator": self.generator, "predictors": self.predictors, "seed": self.seed, "n": self.n,
                "spaces": self.spaces, "chunk": self.chunk}

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, **self.sampling(), "batch": self.batch, "device": self.device,
                "workers": self.workers, "scheduler": self.scheduler, "gpus": self.gpus,
                "analyses": [[a, o] for a, o in self.analyses]}


@dataclasses.dataclass
class Sweep:
    path: Path
    out: Path
    runs: list[Run]
    cluster: Any = None          # the sweep's ClusterConfig (engine.cluster_config), shared by all its runs


# ------------------------------------------------------------------------------------------------ loading
def load_sweep(path: str | os.PathLike, out: str | os.PathLike | None = None,
               cluster: str | os.PathLike | None = None) -> Sweep:
    """Read and validate a sweep file; every error is a SweepError naming where it is.

    ``cluster`` (a cluster file) replaces the file's own ``cluster`` key; a bad cluster file is a ClusterError."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise SweepError(f"no sweep file at {path}")
    try:
        doc = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise SweepError(f"{path} is not valid YAML: {' '.join(str(exc).split())}") from None
    if not isinstance(doc, dict):
        raise SweepError(f"{path}: the sweep must be a mapping with a 'runs' list; got {type(doc).__name__}")
    _check_keys(doc, TOP_KEYS, "the sweep")
    defaults = doc.get("defaults") or {}
    if not isinstance(defaults, dict):
        raise SweepError("defaults: must be a mapping of run keys")
    _check_keys(defaults, RUN_KEYS, "defaults")
    blocks = doc.get("runs")
    if not isinstance(blocks, list) or not blocks:
        raise SweepError("runs: must be a non-empty list of run blocks")
    runs: list[Run] = []
    for i, block in enumerate(blocks):
        where = f"runs[{i}]"
        if not isinstance(block, dict):
            raise SweepError(f"{where}: must be a mapping of run keys; got {block!r}")
        _check_keys(block, RUN_KEYS, where)
        runs += _expand({**FIXED_DEFAULTS, **defaults, **block}, where, explicit=set(block) | set(defaults))
    _name_folders(runs)
    if out is None:
        out = doc.get("out")
        if out is not None and not isinstance(out, str):
            raise SweepError(f"out: must be a folder path; got {out!r}")
        out = path.parent / out if out else path.with_name(path.stem + "-runs")
    return Sweep(path, Path(out), runs, _sweep_cluster(doc, path, cluster, runs))


def _sweep_cluster(doc: dict, path: Path, cluster: str | os.PathLike | None, runs: list[Run]) -> Any:
    """The checked cluster file of the sweep (``--cluster`` or the file's ``cluster`` key), or None."""
    if cluster is None:
        cluster = doc.get("cluster")
        if cluster is None:
            return None
        if not isinstance(cluster, str) or not cluster:
            raise SweepError(f"cluster: must be the path of a cluster file; got {cluster!r}")
        cluster = path.parent / cluster
    for run in runs:
        flags = [k for k in ("workers", "scheduler", "gpus") if getattr(run, k) is not None]
        if flags:
            raise SweepError(f"{run.source}: {flags[0]} and the sweep's cluster exclude each other: every run "
                             "uses the sweep's cluster")
    from engine.cluster_config import load_cluster_config

    return load_cluster_config(cluster)


def _check_keys(mapping: dict, known: tuple[str, ...], where: str) -> None:
    for key in mapping:
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise SweepError(f"{where}: unknown key {key!r}{hint}; known keys: {', '.join(known)}")


def _expand(block: dict[str, Any], where: str, explicit: set[str]) -> list[Run]:
    if "generator" not in explicit:
        raise SweepError(f"{where}: 'generator' is required (a SPEC or a list of SPECs)")
    values = {
        "generator": _swept(block["generator"], where + ".generator", _spec, scalar=lambda v: isinstance(v, str)),
        "predictors": _swept(block["predictors"], where + ".predictors", _spec_list, scalar=_flat),
        "seed": _swept(block["seed"], where + ".seed", _seed, scalar=lambda v: not isinstance(v, list)),
        "n": _swept(block["n"] if "n" in explicit else None, where + ".n", _positive,
                    scalar=lambda v: not isinstance(v, list)),
        "spaces": _swept(block["spaces"], where + ".spaces", _spaces, scalar=lambda v: v is None or _flat(v)),
    }
    fixed = {
        "chunk": _positive(block["chunk"], where + ".chunk"),
        "batch": None if block["batch"] is None else _positive(block["batch"], where + ".batch"),
        "device": _string(block["device"], where + ".device"),
        "analyses": _analyses(block["analyses"], where + ".analyses"),
    }
    from engine.distributed import validate_cluster_flags

    workers, scheduler, gpus = block["workers"], block["scheduler"], block["gpus"]
    gpus = None if gpus is None else str(gpus)
    try:
        validate_cluster_flags(workers, scheduler, gpus)   # --gpus is checked against this machine too
    except ValueError as exc:
        raise SweepError(f"{where}: {str(exc).replace('--', '')}") from None
    name = block.get("name")
    if name is not None and not (isinstance(name, str) and _NAME.match(name)):
        raise SweepError(f"{where}.name: must be letters, digits, '.', '_' or '-'; got {name!r}")
    runs = []
    for combo in itertools.product(*(values[k] for k in SWEPT)):
        params = dict(zip(SWEPT, combo))
        runs.append(Run(name=name or "", workers=workers, scheduler=scheduler, gpus=gpus, source=where,
                        **params, **fixed))
    return runs


def _flat(value: Any) -> bool:
    return isinstance(value, str) or (isinstance(value, list) and all(isinstance(v, str) for v in value))


def _swept(value: Any, where: str, check: Callable[[Any, str], Any], scalar: Callable[[Any], bool]) -> list:
    if scalar(value):
        return [check(value, where)]
    if not isinstance(value, list) or not value:
        raise SweepError(f"{where}: must be a value or a non-empty list of values; got {value!r}")
    return [check(v, f"{where}[{i}]") for i, v in enumerate(value)]


def _spec(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise SweepError(f"{where}: must be a model SPEC string such as 'planted'; got {value!r}")
    return value.strip()


def _spec_list(value: Any, where: str) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        raise SweepError(f"{where}: must be a list of predictor SPECs; got {value!r}")
    return [_spec(v, f"{where}[{i}]") for i, v in enumerate(value)]


def _seed(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise SweepError(f"{where}: must be an integer >= 0; got {value!r}")
    return value


def _positive(value: Any, where: str) -> int:
    if value is None:
        raise SweepError(f"{where.rsplit('.', 1)[0]}: '{where.rsplit('.', 1)[1]}' is required (a positive "
                         "integer or a list of them)")
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise SweepError(f"{where}: must be a positive integer; got {value!r}")
    return value


def _string(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise SweepError(f"{where}: must be a string; got {value!r}")
    return value


def _spaces(value: Any, where: str) -> list[str] | None:
    if value is None:
        return None
    value = [value] if isinstance(value, str) else value
    if not isinstance(value, list) or any(v not in ("z", "w", "wp") for v in value):
        raise SweepError(f"{where}: must be a list of z, w, wp; got {value!r}")
    return list(value)


def _analyses(value: Any, where: str) -> list[tuple[str, dict[str, Any]]]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise SweepError(f"{where}: must be a list of analysis names or {{name: {{options}}}} mappings")
    out = []
    for i, item in enumerate(value):
        here = f"{where}[{i}]"
        if isinstance(item, str):
            name, options = item, {}
        elif isinstance(item, dict) and len(item) == 1:
            name, options = next(iter(item.items()))
            options = {} if options is None else options
            if not isinstance(options, dict):
                raise SweepError(f"{here}.{name}: options must be a mapping of keyword arguments; got {options!r}")
        else:
            raise SweepError(f"{here}: must be an analysis name or a one-key mapping name -> options; got {item!r}")
        if name not in ANALYSES:
            close = difflib.get_close_matches(str(name), list(ANALYSES), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise SweepError(f"{here}: unknown analysis {name!r}{hint}; known: {', '.join(ANALYSES)}")
        _check_options(name, options, here)
        out.append((name, dict(options)))
    return out


def _check_options(name: str, options: dict[str, Any], where: str) -> None:
    """Options are checked against the analysis' signature when this installation has it."""
    try:
        function = analysis_function(name)
    except AnalysisUnavailable:
        return   # reported per run when it is reached
    params = inspect.signature(function).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    accepted = [p for p, v in params.items() if v.kind is not inspect.Parameter.VAR_POSITIONAL and p != "store"]
    for key in options:
        if key not in accepted:
            raise SweepError(f"{where}.{name}: unknown option {key!r}; {name} accepts {', '.join(accepted)}")


def _slug(text: str) -> str:
    text = re.sub(r"[/\\:]+", "-", text)
    return re.sub(r"[^A-Za-z0-9._=+-]+", "_", text).strip("_-") or "x"


def _folder_name(run: Run) -> str:
    parts = [run.name] if run.name else []
    parts += [_slug(run.generator), "+".join(_slug(p) for p in run.predictors) or "nopred", f"seed{run.seed}",
              f"n{run.n}"]
    if run.spaces:
        parts.append("-".join(run.spaces))
    name = "__".join(parts)
    return name if len(name) <= 120 else name[:110] + "-" + _digest(run)


def _digest(run: Run) -> str:
    return hashlib.sha1(json.dumps(run.sampling(), sort_keys=True).encode()).hexdigest()[:8]


def _name_folders(runs: list[Run]) -> None:
    seen: dict[str, Run] = {}
    for run in runs:
        run.name = _folder_name(run)
        if run.name in seen:
            other = seen[run.name]
            if other.sampling() == run.sampling():
                raise SweepError(f"{run.source} repeats a run of {other.source} ({run.name}); give one block a "
                                 "different 'name' or drop the repeat")
            run.name = f"{run.name}-{_digest(run)}"
        seen[run.name] = run


# ------------------------------------------------------------------------------------------------ analyses
def analysis_function(name: str) -> Callable[..., Any]:
    """The function behind analysis ``name``, looked up now (AnalysisUnavailable if none exists)."""
    for target in ANALYSES[name]:
        module_name, _, attr = target.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name and (module_name == exc.name or module_name.startswith(exc.name + ".")):
                continue
            raise
        function = getattr(module, attr, None)
        if callable(function):
            return function
    looked = ", ".join(t.replace(":", ".") for t in ANALYSES[name])
    raise AnalysisUnavailable(f"analysis {name!r} is not available in this latent-engine (looked for {looked})")


def _call_analysis(name: str, options: dict[str, Any], run: Run, folder: Path, progress: bool,
                   cluster: SharedCluster | None = None) -> Any:
    function = analysis_function(name)
    params = inspect.signature(function).parameters
    kwargs = dict(options)
    store = str(folder / STORE)
    defaults = {"generator": run.generator, "out": str(folder / name), "progress": progress, "overwrite": True}
    if cluster is not None and not {"workers", "scheduler", "cluster", "layer"} & set(options):
        # The sweep's running cluster: by its file where the analysis takes one, else by its address (pca on a
        # layer's activations runs the generator here, not on a cluster).
        defaults.update({"cluster": cluster.config} if "cluster" in params else {"scheduler": cluster.address})
    for key, value in defaults.items():
        if key in params and key not in kwargs:
            kwargs[key] = value
    first = next(iter(params.values()), None)
    if first is not None and first.name == "store" and first.kind in (inspect.Parameter.POSITIONAL_ONLY,
                                                                       inspect.Parameter.POSITIONAL_OR_KEYWORD):
        return function(store, **kwargs)
    if "store" in params:
        kwargs.setdefault("store", store)
    return function(**kwargs)


# ------------------------------------------------------------------------------------------------ running
def _read_marker(folder: Path) -> dict[str, Any]:
    try:
        return json.loads((folder / MARKER).read_text())
    except (OSError, ValueError):
        return {}


def _write_marker(folder: Path, record: dict[str, Any]) -> None:
    tmp = folder / (MARKER + ".tmp")
    tmp.write_text(json.dumps(record, indent=2, default=str))
    os.replace(tmp, folder / MARKER)


def _stage_key(name: str, options: dict[str, Any]) -> str:
    return name + json.dumps(options, sort_keys=True, default=str) if options else name


def state_of(run: Run, out: Path) -> str:
    """'done', 'partial' (started or failed before) or 'new'."""
    marker = _read_marker(out / run.name)
    if not marker:
        return "new"
    finished = marker.get("params") == run.sampling() and marker.get("status") == "done" and \
        all(_stage_key(a, o) in marker.get("done", []) for a, o in run.analyses)
    return "done" if finished else "partial"


def run_sweep(sweep: Sweep, *, progress: bool = True, echo: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Run every run of ``sweep`` (skipping finished ones); returns the summary rows and writes the summary.

    A sweep with a cluster starts it once, before the first run, and closes it after the last."""
    sweep.out.mkdir(parents=True, exist_ok=True)
    rows = []
    with _cluster_of(sweep, echo) as cluster:
        for k, run in enumerate(sweep.runs, 1):
            echo(f"[{k}/{len(sweep.runs)}] {run.name}")
            rows.append(run_one(run, sweep.out, progress=progress, echo=echo, cluster=cluster))
            write_summary(sweep, rows)
    return rows


@contextlib.contextmanager
def _cluster_of(sweep: Sweep, echo: Callable[[str], None]) -> Iterator[SharedCluster | None]:
    if sweep.cluster is None or all(state_of(run, sweep.out) == "done" for run in sweep.runs):
        yield None
        return
    from engine.distributed import started_cluster

    echo(f"cluster: {sweep.cluster.describe()}")
    with started_cluster(sweep.cluster) as address:
        yield SharedCluster(sweep.cluster, address)


@dataclasses.dataclass(frozen=True)
class SharedCluster:
    """The sweep's running cluster: its file's config (for sampling) and its scheduler's address (analyses)."""

    config: Any
    address: str


def run_one(run: Run, out: Path, *, progress: bool = True, echo: Callable[[str], None] = print,
            cluster: SharedCluster | None = None) -> dict[str, Any]:
    """Sample and analyse one run; failures are recorded in its run.json and returned, never raised.

    ``cluster`` (the sweep's, already running) samples the run and reduces its pca/correlate analyses."""
    import engine

    folder = out / run.name
    folder.mkdir(parents=True, exist_ok=True)
    marker = _read_marker(folder)
    if state_of(run, out) == "done":
        echo("  done earlier: skipped")
        return {**marker.get("summary", {}), "status": "skipped"}
    done = list(marker.get("done", [])) if marker.get("params") == run.sampling() else []
    record = {"params": run.sampling(), "run": run.describe(), "status": "running", "done": done, "error": None,
              "summary": marker.get("summary", {})}
    _write_marker(folder, record)
    start = time.perf_counter()
    stage = "sample"
    try:
        store_path = folder / STORE
        resume = store_path.exists()
        engine.sample(str(store_path), run.generator, run.predictors, n=run.n, seed=run.seed, chunk=run.chunk,
                      batch=run.batch, device=run.device, spaces=run.spaces, resume=resume, progress=progress,
                      workers=run.workers, scheduler=run.scheduler, gpus=run.gpus,
                      **({"cluster": cluster.config} if cluster is not None else {}))
        for name, options in run.analyses:
            stage = _stage_key(name, options)
            if stage in record["done"]:
                continue
            echo(f"  {name}")
            _call_analysis(name, options, run, folder, progress, cluster)
            record["done"].append(stage)
            _write_marker(folder, record)
        record["status"] = "done"
    except Exception as exc:  # noqa: BLE001 - a failed run is reported and the sweep goes on
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        record.update(status="failed", error=f"{stage}: {message}", traceback=traceback.format_exc())
        echo(f"  FAILED at {stage}: {message}")
    record["summary"] = _summary_row(run, folder, record, time.perf_counter() - start)
    _write_marker(folder, record)
    return record["summary"]


def _summary_row(run: Run, folder: Path, record: dict[str, Any], seconds: float) -> dict[str, Any]:
    from engine.store import Store, StoreError

    row: dict[str, Any] = {"run": run.name, "status": record["status"], "error": record.get("error"),
                           "rows": 0, "samples_per_s": None, "seconds": round(seconds, 2),
                           "analyses": [a for a, _ in run.analyses], "boundary_accuracy": {}}
    try:
        store = Store.open(str(folder / STORE))
    except StoreError:
        return row
    progress = store.progress()
    row["rows"] = int(sum(store.chunk_rows(int(i)).stop - store.chunk_rows(int(i)).start
                          for i in progress.nonzero()[0]))
    row["samples_per_s"] = store.meta.get("samples_per_s")
    for key in store.directions():
        method, _, attribute = key.partition("/")
        attrs = store.array(f"directions/{key}").attrs
        if method == "interfacegan" and attrs.get("method", "interfacegan") == "interfacegan":   # not conditioned
            accuracy = attrs.get("val_accuracy")
            row["boundary_accuracy"][attribute] = None if accuracy is None else round(float(accuracy), 4)
    return row


def write_summary(sweep: Sweep, rows: list[dict[str, Any]]) -> tuple[Path, Path]:
    """``summary.json`` and ``summary.md`` in the sweep's folder."""
    payload = {"sweep": str(sweep.path), "out": str(sweep.out), "runs": rows}
    json_path, md_path = sweep.out / "summary.json", sweep.out / "summary.md"
    json_path.write_text(json.dumps(payload, indent=2, default=str))
    md_path.write_text(summary_markdown(rows))
    return json_path, md_path


def summary_markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["| run | status | rows | samples/s | boundary val. accuracy | note |",
             "| --- | --- | ---: | ---: | --- | --- |"]
    for row in rows:
        accuracy = ", ".join(f"{a} {v:.3f}" if v is not None else f"{a} -"
                             for a, v in row.get("boundary_accuracy", {}).items()) or "-"
        rate = row.get("samples_per_s")
        lines.append(f"| {row['run']} | {row['status']} | {row.get('rows', 0)} | "
                     f"{'-' if rate is None else f'{rate:.1f}'} | {accuracy} | {row.get('error') or ''} |")
    return "\n".join(lines) + "\n"
