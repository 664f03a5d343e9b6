"""A store's summary for ``latent-engine info``: layout, progress, per-attribute statistics, results."""
from __future__ import annotations

from typing import Any

import numpy as np

from engine.store import Store


def summarize(store: Store) -> dict[str, Any]:
    """Everything ``info`` prints; the score statistics stream over committed chunks (memory O(chunk·m))."""
    meta = store.meta
    progress = store.progress()
    summary: dict[str, Any] = {
        "path": store.path, "schema": meta["schema"], "engine_version": meta.get("engine_version"),
        "n": store.n, "chunk": store.chunk, "chunks_done": int(progress.sum()), "n_chunks": store.n_chunks,
        "complete": bool(progress.all()), "seed": meta.get("seed"), "generator": meta.get("generator"),
        "predictors": meta.get("predictors", []), "device": meta.get("device"),
        "samples_per_s": meta.get("samples_per_s"), "created": meta.get("created"),
        "arrays": {f"latents/{s}": list(store.latent_array(s).shape) for s in store.spaces},
        "sources": {f"latents/{s}": store.latent_source(s) for s in store.spaces},
        "attributes": attribute_stats(store, progress),
        "directions": {key: _direction_summary(store, key) for key in store.directions()},
        "tables": store.tables(),
    }
    if store.num_classes:
        summary["arrays"]["labels"] = [store.n]
        summary["labels"] = label_counts(store, progress)
    if "inversion" in store.group:
        summary["images_per_s"] = meta.get("images_per_s")
        summary["inversion"] = inversion_error_stats(store, progress)
        summary["inversion_settings"] = inversion_settings(store)
        noise = noise_map_stats(store)
        if noise:
            summary["noise_maps"] = noise
    return summary


def inversion_settings(store: Store) -> dict[str, Any]:
    """How an inverted store's codes were found (``meta["inversion"]``): space, steps, restarts, lr, seed, the
    feature loss (None without one) and its weight, whether noise maps were optimised and their weight (None when
    not), and whether the target images were kept. A store inverted before noise maps could be optimised
    records no such setting: it optimised none."""
    record = store.meta.get("inversion") or {}
    settings = record.get("settings") or {}
    feature_loss = settings.get("feature_loss")
    optimize_noise = bool(settings.get("optimize_noise", False))
    keep_images = record.get("keep_images")
    if keep_images is None:
        keep_images = "inversion" in store.group and "targets" in store.group["inversion"]
    return {"space": settings.get("space"), "steps": settings.get("steps"), "restarts": settings.get("restarts"),
            "lr": settings.get("lr"), "seed": settings.get("seed"), "feature_loss": feature_loss,
            "feature_weight": settings.get("feature_weight") if feature_loss else None,
            "optimize_noise": optimize_noise, "noise_weight": settings.get("noise_weight") if optimize_noise else None,
            "keep_images": bool(keep_images)}


def noise_map_stats(store: Store) -> dict[str, Any] | None:
    """The per-image noise maps an inverted store holds (``inversion/noise``): number of noise layers, their
    names and resolutions, their size in bytes (uncompressed float32, every row) and a one-line description;
    None when it holds none."""
    layers = store.noise_layers()
    if not layers:
        return None
    size = sum(int(store.array(f"inversion/noise/{name}").nbytes) for name, _ in layers)
    resolutions = [res for _, res in layers]
    span = f"{min(resolutions)}²" if min(resolutions) == max(resolutions) else \
        f"{min(resolutions)}² to {max(resolutions)}²"
    return {"layers": len(layers), "names": [name for name, _ in layers], "resolutions": resolutions,
            "bytes": size, "description": f"per-image noise maps of {len(layers)} layers ({span}), {_size(size)}; "
                                          "rendered with their rows' codes"}


def _size(count: int) -> str:
    """Bytes as '512 B', '3.1 KiB', '2.4 MiB', '1.2 GiB'."""
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            break
        value /= 1024
    return f"{int(value)} B" if unit == "B" else f"{value:.3g} {unit}"


def inversion_error_stats(store: Store, progress: np.ndarray | None = None) -> dict[str, Any]:
    """Statistics of an inverted store's ``inversion/error`` over its committed rows: rows, mean, median, max,
    and the PSNR (dB) of the mean error for images in [-1, 1] (peak-to-peak 2)."""
    if progress is None:
        progress = store.progress()
    errors = [store.array("inversion/error")[store.chunk_rows(int(i))] for i in np.flatnonzero(progress)]
    values = np.concatenate(errors).astype(np.float64) if errors else np.empty(0)
    if not values.size:
        return {"rows": 0}
    mean = float(values.mean())
    return {"rows": int(values.size), "mean": mean, "median": float(np.median(values)), "max": float(values.max()),
            "psnr_db": float(10 * np.log10(4.0 / mean)) if mean > 0 else None}


def label_counts(store: Store, progress: np.ndarray | None = None) -> dict[str, Any]:
    """{"num_classes", "counts": {class: rows}} over the committed chunks, streamed chunk by chunk."""
    if progress is None:
        progress = store.progress()
    counts = np.zeros(int(store.num_classes), np.int64)
    for index in np.flatnonzero(progress):
        counts += np.bincount(store.array("labels")[store.chunk_rows(int(index))], minlength=counts.size)
    return {"num_classes": int(store.num_classes),
            "counts": {str(k): int(c) for k, c in enumerate(counts) if c}}


def attribute_stats(store: Store, progress: np.ndarray | None = None) -> dict[str, dict[str, float | int]]:
    """{attribute: {"mean", "std", "nan"}} over the committed chunks (all chunks marked in ``progress``)."""
    if progress is None:
        progress = store.progress()
    if not store.attributes:
        return {}
    m = len(store.attributes)
    count = np.zeros(m, np.int64)
    nans = np.zeros(m, np.int64)
    total = np.zeros(m)
    total_sq = np.zeros(m)
    for index in np.flatnonzero(progress):
        values = store.array("scores")[store.chunk_rows(int(index))].astype(np.float64)
        finite = np.isfinite(values)
        nans += np.isnan(values).sum(axis=0)
        count += finite.sum(axis=0)
        clean = np.where(finite, values, 0.0)
        total += clean.sum(axis=0)
        total_sq += (clean ** 2).sum(axis=0)
    mean = np.divide(total, count, out=np.full(m, np.nan), where=count > 0)
    var = np.divide(total_sq, count, out=np.full(m, np.nan), where=count > 0) - mean ** 2
    return {name: {"mean": float(mean[i]), "std": float(np.sqrt(max(var[i], 0.0))), "nan": int(nans[i])}
            for i, name in enumerate(store.attributes)}


def _direction_summary(store: Store, key: str) -> dict[str, Any]:
    array = store.array(f"directions/{key}")
    attrs = dict(array.attrs)
    return {"shape": list(array.shape), "space": attrs.get("space"),
            **{k: attrs[k] for k in ("val_accuracy", "train_accuracy") if k in attrs}}
