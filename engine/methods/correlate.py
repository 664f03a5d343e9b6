"""Compare what is stored: boundary cosines, attribute correlations, and method-vs-method matching tables.

* ``tables/boundary_cosine``: signed cosine of every pair of InterFaceGAN directions (paper 001's table;
  with the planted model it reproduces the planted Gram matrix);
* ``tables/attribute_pearson``: Pearson correlation of every pair of score columns over all rows, streamed
  (``kernels.PearsonState``; rows with a NaN score are skipped); the per-chunk ``partial`` and ``merge`` are
  module-level so ``engine.distributed.map_reduce_chunks`` can run them on Dask workers;
* ``tables/match_<ref>_vs_<method>_<name>``: for every reference direction (all stored directions of the earlier
  method, in the order interfacegan, then the others alphabetically), the 0-based index of the best-matching row
  of each candidate array and the cosine distance 1 − |cos| (the SeFa paper's Table 1); only directions of the
  same space and size are compared.
"""
from __future__ import annotations

import os
import warnings
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from engine.methods._common import open_for_reading, stream_rows, writing
from engine.store import Store


def pearson_partial(block: np.ndarray):
    """The Pearson state of one chunk of scores (rows with any NaN skipped)."""
    from kernels import PearsonState
    block = np.asarray(block, np.float64)
    block = block[np.isfinite(block).all(axis=1)]
    return PearsonState().update(block) if block.shape[0] else PearsonState()


def pearson_merge(a, b):
    """Fold one Pearson state into another (in place)."""
    return a.merge(b)


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


def correlate(store: str | os.PathLike | Store, *, heatmaps: bool = False, workers: int | None = None,
              scheduler: str | None = None) -> dict[str, dict[str, Any]]:
    """Write the comparison tables; returns {table name: {"values", "rows", "cols"}}.

    ``heatmaps`` also saves each table as ``<store>_<table>.png`` beside the store.
    """
    import kernels

    reader = open_for_reading(store)
    tables: dict[str, dict[str, Any]] = {}
    sets = _direction_sets(reader)

    boundaries = [(n, v, a) for n, v, a in sets.get("interfacegan", []) if v.shape[0] == 1]
    if boundaries:
        groups: dict[tuple, list] = defaultdict(list)
        for item in boundaries:
            groups[_signature(item[1], item[2])].append(item)
        sig, chosen = max(groups.items(), key=lambda kv: len(kv[1]))
        skipped = [n for s, items in groups.items() if s != sig for n, _, _ in items]
        if skipped:
            warnings.warn(f"boundary_cosine compares the {sig[0]}-space boundaries; skipped {skipped} "
                          "(another space or size)", stacklevel=2)
        labels = [n for n, _, _ in chosen]
        stacked = np.concatenate([v for _, v, _ in chosen])
        tables["boundary_cosine"] = {"values": np.asarray(kernels.cosine_matrix(stacked, stacked)),
                                     "rows": labels, "cols": labels, "attrs": {"space": sig[0]}}

    if reader.attributes:
        if workers is not None or scheduler is not None:
            from engine.distributed import map_reduce_chunks
            state = map_reduce_chunks(reader.path, "scores", pearson_partial, pearson_merge, workers=workers,
                                      scheduler=scheduler)
        else:
            state = None
            for _, block in stream_rows(reader, "scores"):
                part = pearson_partial(block)
                state = part if state is None else pearson_merge(state, part)
        if state.n_samples_seen_ >= 2:
            tables["attribute_pearson"] = {"values": np.asarray(state.result()), "rows": reader.attributes,
                                           "cols": reader.attributes,
                                           "attrs": {"n_rows": int(state.n_samples_seen_)}}

    methods = _method_order(list(sets))
    for i, ref_method in enumerate(methods):
        for cand_method in methods[i + 1:]:
            for cand_name, cand, cand_attrs in sets[cand_method]:
                sig = _signature(cand, cand_attrs)
                refs = [(n, v) for n, v, a in sets[ref_method] if _signature(v, a) == sig]
                if not refs:
                    continue
                labels = [n if v.shape[0] == 1 else f"{n}[{r}]" for n, v in refs for r in range(v.shape[0])]
                stacked = np.concatenate([v for _, v in refs])
                index, distance = kernels.best_match(stacked, cand)
                values = np.stack([np.asarray(index, np.float64), np.asarray(distance, np.float64)], axis=1)
                tables[f"match_{ref_method}_vs_{cand_method}_{cand_name}"] = {
                    "values": values, "rows": labels, "cols": ["index", "cosine_distance"],
                    "attrs": {"reference": ref_method, "candidates": f"{cand_method}/{cand_name}",
                              "space": sig[0]}}

    if not tables:
        raise ValueError(f"{reader.path} has nothing to correlate: no scores and no directions")
    with writing(store, purpose="correlate") as target:
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
