"""Compare what is stored: boundary cosines, attribute correlations, and method-vs-method matching tables.

* ``tables/boundary_cosine``: signed cosine of every pair of InterFaceGAN directions (paper 001's table;
  with the planted model it reproduces the planted Gram matrix);
* ``tables/attribute_pearson``: Pearson correlation of every pair of score columns over all rows, streamed
  (``kernels.PearsonState``; rows with a NaN score are skipped); the per-chunk ``partial`` and ``merge`` are
  module-level so ``engine.distributed.map_reduce_chunks`` can run them on Dask workers. An attribute with
  fewer than two finite scores (e.g. a predictor that failed on every row) would leave no row to correlate:
  it is left out of the table, with a warning naming it, and the others are kept;
* ``tables/match_<ref>_vs_<method>_<name>``: for every reference direction (all stored directions of the earlier
  method, in the order interfacegan, then the others alphabetically), the 0-based index of the best-matching row
  of each candidate array and the cosine distance 1 − |cos| (the SeFa paper's Table 1); only directions of the
  same space and size are compared, and only candidates of more than one row (a best match among one row is
  just a cosine, which the report shows beside per-attribute directions such as ``meandiff``'s).

Every run writes all the tables it can; a table already stored is refused, before any work, unless
``overwrite``.
"""
from __future__ import annotations

import functools
import os
import warnings
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click
import numpy as np

from engine.cli.options import echo_json, echo_table, json_option, scheduler_option, workers_option
from engine.cli.options import cluster_option, reduce_gpus_option, reduction_device, reduction_scheduler
from engine.methods import Method
from engine.methods._common import device_option, open_for_reading, reduce_rows, require_new, writing
from engine.store import Store


def _finite_scores(block: Any, columns: Sequence[int] | None, device: str) -> Any:
    """The rows of a chunk of scores with every (selected) score finite, as float64 on ``device``.

    On the CPU in numpy (torch's small elementwise ops stall when other jobs load the cores); elsewhere in
    torch on the device, after one copy there.
    """
    from engine.device_io import as_device, to_device

    dev = as_device(device)
    if dev.type == "cpu" and not _is_tensor(block):
        scores = np.asarray(block, np.float64)
        scores = scores if columns is None else scores[:, list(columns)]
        return scores[np.isfinite(scores).all(axis=1)]
    import torch
    scores = to_device(block, dev).to(torch.float64)
    scores = scores if columns is None else scores[:, list(columns)]
    return scores[torch.isfinite(scores).all(dim=1)]


def _is_tensor(value: Any) -> bool:
    return type(value).__module__.split(".")[0] == "torch"


def pearson_partial(block: Any, columns: Sequence[int] | None = None, device: str = "cpu"):
    """The Pearson state of one chunk of scores (rows with any NaN skipped), of ``columns`` only if given,
    accumulated on ``device``."""
    from kernels import PearsonState
    scores = _finite_scores(block, columns, device)
    return PearsonState().update(scores) if scores.shape[0] else PearsonState()


def pearson_merge(a, b):
    """Fold one Pearson state into another (in place)."""
    return a.merge(b)


def pearson_counted_partial(block: Any, device: str = "cpu") -> tuple[np.ndarray, Any]:
    """(finite scores per column, ``pearson_partial``) of one chunk: one pass finds the unusable columns too."""
    from engine.device_io import as_device, to_device, to_host

    dev = as_device(device)
    if dev.type == "cpu" and not _is_tensor(block):
        return np.isfinite(np.asarray(block, np.float64)).sum(axis=0), pearson_partial(block)
    import torch
    scores = to_device(block, dev)
    return to_host(torch.isfinite(scores).sum(dim=0)), pearson_partial(scores, device=device)


def pearson_counted_merge(a: tuple[np.ndarray, Any], b: tuple[np.ndarray, Any]) -> tuple[np.ndarray, Any]:
    return a[0] + b[0], pearson_merge(a[1], b[1])


def _direction_sets(store: Store) -> dict[str, list[tuple[str, np.ndarray, dict[str, Any]]]]:
    found: dict[str, list] = defaultdict(list)
    for key in store.directions():
        method, name = key.split("/", 1)
        values, attrs = store.read_direction(key)
        found[method].append((name, values.astype(np.float64), attrs))
    return dict(found)


def _signature(values: np.ndarray, attrs: dict[str, Any]) -> tuple:
    return attrs.get("space"), attrs.get("layer"), values.shape[1]


def _method_order(methods: list[str]) -> list[str]:
    return sorted(methods, key=lambda m: (m != "interfacegan", m))


def _boundary_group(sets: dict[str, list]) -> list[tuple[str, np.ndarray, dict[str, Any]]]:
    """The InterFaceGAN boundaries that boundary_cosine compares: the largest group of one space and size."""
    boundaries = [(n, v, a) for n, v, a in sets.get("interfacegan", []) if v.shape[0] == 1]
    if not boundaries:
        return []
    groups: dict[tuple, list] = defaultdict(list)
    for item in boundaries:
        groups[_signature(item[1], item[2])].append(item)
    sig, chosen = max(groups.items(), key=lambda kv: len(kv[1]))
    skipped = [n for s, items in groups.items() if s != sig for n, _, _ in items]
    if skipped:
        warnings.warn(f"boundary_cosine compares the {sig[0]}-space boundaries; skipped {skipped} "
                      "(another space or size)", stacklevel=3)
    return chosen


def _match_pairs(sets: dict[str, list]) -> list[tuple[str, list, tuple[str, np.ndarray, dict[str, Any]], str]]:
    """(table name, reference directions, candidate, reference method) of every method-vs-method table."""
    pairs = []
    methods = _method_order(list(sets))
    for i, ref_method in enumerate(methods):
        for cand_method in methods[i + 1:]:
            for cand in sets[cand_method]:
                if cand[1].shape[0] < 2:
                    continue
                sig = _signature(cand[1], cand[2])
                refs = [(n, v) for n, v, a in sets[ref_method] if _signature(v, a) == sig]
                if refs:
                    pairs.append((f"match_{ref_method}_vs_{cand_method}_{cand[0]}", refs,
                                  (f"{cand_method}/{cand[0]}", cand[1], cand[2]), ref_method))
    return pairs


def _attribute_pearson(reader: Store, workers: int | None, scheduler: str | None,
                       class_label: int | None = None, device: str = "cpu") -> dict[str, Any] | None:
    """The attribute_pearson table over the usable score columns, or None when no row can be correlated.

    One pass computes the table and counts each column's finite scores; only when a column has fewer than two
    (which would leave no complete row) is it dropped, with a warning, and the table recomputed without it.
    """
    def reduce(partial: Any, merge: Any) -> Any:
        return reduce_rows(reader, "scores", partial, merge, workers=workers, scheduler=scheduler,
                           class_label=class_label)

    names = list(reader.attributes)
    counts, state = reduce(functools.partial(pearson_counted_partial, device=device), pearson_counted_merge)
    unusable = [j for j, c in enumerate(counts) if c < 2]
    if unusable:
        warnings.warn("attribute_pearson leaves out " + ", ".join(
            f"{names[j]!r} ({int(counts[j])} finite scores)" for j in unusable) + ": too few to correlate; the "
            "other attributes are kept", stacklevel=3)
        keep = [j for j in range(len(names)) if j not in unusable]
        if len(keep) < 1:
            return None
        state = reduce(functools.partial(pearson_partial, columns=keep, device=device), pearson_merge)
        names = [names[j] for j in keep]
    if state.n_samples_seen_ < 2:
        warnings.warn(f"attribute_pearson not written: {state.n_samples_seen_} row(s) of {reader.path} have every "
                      "score finite, too few to correlate", stacklevel=3)
        return None
    from engine.device_io import to_host

    return {"values": to_host(state.result()), "rows": names, "cols": names,
            "attrs": {"n_rows": int(state.n_samples_seen_)}}


def correlate(store: str | os.PathLike | Store, *, heatmaps: bool = False, workers: int | None = None,
              scheduler: str | None = None, overwrite: bool = False, class_label: int | None = None,
              device: str = "cpu") -> dict[str, dict[str, Any]]:
    """Write the comparison tables; returns {table name: {"values", "rows", "cols"}}.

    ``heatmaps`` also saves each table as ``<store>_<table>.png`` beside the store. Tables already stored under
    the names this run writes are refused, before any work, unless ``overwrite``. ``class_label`` computes
    the per-class tables instead: ``attribute_pearson_class<K>`` over that class's rows and
    ``boundary_cosine_class<K>`` between the boundaries fitted on them (``boundaries --class K``).
    ``device`` (cpu, cuda, cuda:<i>, auto) is where the scores are read to and the tables computed; each
    table comes back to the host once.
    """
    import kernels
    from engine.device_io import as_device, to_device, to_host

    dev = as_device(device)
    reader = open_for_reading(store)
    sets = _direction_sets(reader)
    suffix = ""
    if class_label is not None:
        reader.class_rows(class_label)                    # a store without labels, or a bad class, says so
        suffix = f"_class{class_label}"
        sets = {"interfacegan": [item for item in sets.get("interfacegan", []) if item[2].get("class") == class_label]}
    chosen = _boundary_group(sets)
    pairs = _match_pairs(sets) if class_label is None else []
    planned = ([f"boundary_cosine{suffix}"] if chosen else []) + \
        ([f"attribute_pearson{suffix}"] if reader.attributes else []) + [table for table, *_ in pairs]
    if not planned:
        raise ValueError(f"{reader.path} has nothing to correlate: no scores and no directions")
    require_new(reader, [f"tables/{t}" for t in planned], overwrite)

    tables: dict[str, dict[str, Any]] = {}
    if chosen:
        labels = [n for n, _, _ in chosen]
        stacked = to_device(np.concatenate([v for _, v, _ in chosen]), dev)
        tables[f"boundary_cosine{suffix}"] = {
            "values": to_host(kernels.cosine_matrix(stacked, stacked)), "rows": labels, "cols": labels,
            "attrs": {"space": chosen[0][2].get("space"), **({"class": class_label} if suffix else {})}}
    if reader.attributes:
        pearson = _attribute_pearson(reader, workers, scheduler, class_label, str(dev))
        if pearson is not None:
            if suffix:
                pearson["attrs"]["class"] = class_label
            tables[f"attribute_pearson{suffix}"] = pearson
    for table, refs, (cand_key, cand, cand_attrs), ref_method in pairs:
        labels = [n if v.shape[0] == 1 else f"{n}[{r}]" for n, v in refs for r in range(v.shape[0])]
        index, distance = kernels.best_match(to_device(np.concatenate([v for _, v in refs]), dev),
                                             to_device(cand, dev))
        values = np.stack([to_host(index, np.float64), to_host(distance, np.float64)], axis=1)
        tables[table] = {"values": values, "rows": labels, "cols": ["index", "cosine_distance"],
                         "attrs": {"reference": ref_method, "candidates": cand_key, "space": cand_attrs.get("space")}}

    if not tables:
        raise ValueError(f"{reader.path} has nothing to correlate: no table could be computed")
    with writing(store, purpose="correlate") as target:
        require_new(target, [f"tables/{t}" for t in tables], overwrite)
        for table, t in tables.items():
            target.write_table(table, t["values"], t["rows"], t["cols"], t["attrs"])
    if heatmaps:
        from engine.plots import heatmap
        base = Path(reader.path.rstrip("/"))
        for table, t in tables.items():
            if not table.startswith("match_"):
                out = base.with_name(f"{base.stem}_{table}.png")
                heatmap(t["values"], t["rows"], t["cols"], title=table.replace("_", " ")).save(out)
                t["png"] = str(out)
    return tables


# ---------------------------------------------------------------------------------------------- command line
@click.command("correlate", epilog="""\b
Examples:
  latent-engine correlate run.zarr
  latent-engine correlate run.zarr --heatmaps
  latent-engine correlate big.zarr --workers 4 --json
  latent-engine correlate /shared/big.zarr --cluster local.yaml   # a cluster file: README, "Clusters"
  latent-engine correlate run.zarr --overwrite     # after new boundaries: recompute the stored tables
  latent-engine correlate imagenet.zarr --class 207   # attribute_pearson_class207, boundary_cosine_class207
""")
@click.argument("store")
@click.option("--heatmaps", is_flag=True, help="Also save each square table as <store>_<table>.png beside the store.")
@click.option("--class", "class_label", type=int, default=None, help="Per-class tables: the rows of this class and the boundaries fitted on them.")
@click.option("--overwrite", is_flag=True, help="Replace tables already stored under the same names.")
@device_option()
@workers_option
@scheduler_option
@reduce_gpus_option
@cluster_option
@json_option
def correlate_command(store: str, heatmaps: bool, class_label: int | None, overwrite: bool, device: str,
                      workers: int | None, scheduler: str | None, gpus: str | None, cluster: str | None,
                      as_json: bool) -> None:
    """Boundary cosines, attribute Pearson correlations and method-vs-method matching tables.

    An attribute with no usable scores (e.g. all NaN) is left out of attribute_pearson with a warning.
    """
    device = reduction_device(gpus, device)
    if any(flag is not None for flag in (workers, scheduler, gpus, cluster)):
        from engine.distributed import validate_cluster_flags

        validate_cluster_flags(workers, scheduler, gpus, cluster)     # then the store, before a cluster starts
    open_for_reading(store)
    with reduction_scheduler(cluster, workers, scheduler, gpus) as scheduler:
        tables = correlate(store, heatmaps=heatmaps, workers=workers, scheduler=scheduler, overwrite=overwrite,
                           class_label=class_label, device=device)
    if as_json:
        echo_json({name: {"rows": t["rows"], "cols": t["cols"], "values": t["values"].tolist()}
                   for name, t in tables.items()})
        return
    for name, t in tables.items():
        click.echo(f"\ntables/{name}" + (f"  ({t['png']})" if "png" in t else ""))
        echo_table([[r, *[float(v) for v in row]] for r, row in zip(t["rows"], t["values"])], ["", *t["cols"]])


METHODS = (Method("correlate", twins=(correlate,), commands=(correlate_command,), analyses={"correlate": correlate}),)
