"""GANSpace (paper 002): principal directions of sampled codes, by exact streaming PCA (``kernels.PCA``).

One pass over the stored codes (wp flattened to L·d), never the whole array in memory: the per-chunk
``partial`` and the ``merge`` below are module-level so ``engine.distributed.map_reduce_chunks`` can ship them
to Dask workers; without ``workers``/``scheduler`` the same two functions run in-process over
``Store.iter_rows``. On z ~ N(0, I) the spectrum is flat (the SeFa paper's Table 1: PCA on z finds nothing);
on W it recovers the mapping's principal axes.
"""
from __future__ import annotations

import functools
import os
from typing import Any

import click
import numpy as np

from engine.cli.options import echo_json, echo_table, json_option, scheduler_option, workers_option
from engine.cli.options import cluster_option, reduce_gpus_option, reduction_device, reduction_scheduler
from engine.methods import Method, ReportSection, Spectrum
from engine.methods._common import (check_positive_int, device_option, open_for_reading, reduce_rows, require_new,
                                    writing)
from engine.spaces import resolve_array
from engine.store import Store

METHOD = "ganspace"


def pca_partial(block: np.ndarray, n_components: int | None = None, device: str = "cpu"):
    """The PCA state of one chunk of codes (rows first; wp rows are flattened), accumulated on ``device``."""
    from kernels import PCA
    from engine.device_io import as_device, to_device
    rows = to_device(np.asarray(block, np.float32), as_device(device))
    return PCA(n_components).partial_fit(rows.reshape(rows.shape[0], -1))


def pca_merge(a, b):
    """Fold one chunk state into another (in place)."""
    return a.merge(b)


def pca(store: str | os.PathLike | Store, *, array: str | None = None, k: int | None = None,
        workers: int | None = None, scheduler: str | None = None, overwrite: bool = False,
        class_label: int | None = None, layer: str | None = None, generator: Any = None,
        device: str = "cpu") -> dict[str, Any]:
    """Streaming PCA of ``array`` (default latents/w if stored, else latents/z) -> ``directions/ganspace/<space>``.

    ``k`` components are kept (default all). Attrs: ``explained_variance_ratio``, ``explained_variance``,
    ``mean``, ``stdev`` (√variance, GANSpace's ``lat_stdev``), ``n_rows``. Returns the attrs written.
    A stored ``directions/ganspace/<space>`` is refused, before any work, unless ``overwrite``.
    ``class_label`` takes the rows of that class only (``directions/ganspace/<space>_class<K>``). ``layer``
    does GANSpace on that layer of the generator instead (``engine.methods.activation_pca``): its activations'
    components regressed to latent directions, in ``directions/ganspace/<layer>``. ``device`` (cpu, cuda,
    cuda:<i>, auto) is where the chunks are read to and the PCA state is accumulated (with ``layer``: where
    the generator runs); the results come back to the host once.
    """
    from engine.device_io import as_device, to_host

    device = str(as_device(device))
    reader = open_for_reading(store)
    if layer is not None:
        return _layer_pca(store, reader, layer, k, overwrite, generator, device,
                          incompatible={"array": array, "class_label": class_label, "workers": workers,
                                        "scheduler": scheduler})
    path, space = resolve_array(reader, array)
    shape = reader.array(path).shape
    dim = int(np.prod(shape[1:]))
    if k is not None:
        k = check_positive_int("-k", k)
        if k > dim:
            raise ValueError(f"-k must be at most the code size {dim} of {path}; got {k}")
    name = space if class_label is None else f"{space}_class{class_label}"
    if class_label is not None:
        reader.class_rows(class_label)                      # a store without labels, or a bad class, says so
    target_path = f"directions/{METHOD}/{name}"
    require_new(reader, [target_path], overwrite)
    partial = functools.partial(pca_partial, n_components=k, device=device)
    state = reduce_rows(reader, path, partial, pca_merge, workers=workers, scheduler=scheduler,
                        class_label=class_label)
    components = to_host(state.components_, np.float32)
    variance = to_host(state.explained_variance_, np.float64)
    attrs = {"space": space, "method": METHOD, "array": path, "n_rows": int(state.n_samples_seen_),
             **({} if class_label is None else {"class": int(class_label)}),
             "explained_variance_ratio": to_host(state.explained_variance_ratio_, np.float64),
             "explained_variance": variance, "stdev": np.sqrt(variance),
             "mean": to_host(state.mean_, np.float64)}
    with writing(store, purpose="pca") as target:
        require_new(target, [target_path], overwrite)
        target.write_direction(METHOD, name, components, attrs)
    return attrs


def _layer_pca(store: Any, reader: Store, layer: str, k: int | None, overwrite: bool, generator: Any,
               device: str, incompatible: dict[str, Any]) -> dict[str, Any]:
    from engine.methods.activation_pca import activation_pca, stored_name

    given = [name for name, value in incompatible.items() if value is not None]
    if given:
        raise ValueError(f"--layer runs the generator on the store's codes; it does not combine with "
                         f"{', '.join('--' + g.replace('_label', '').replace('_', '-') for g in given)}")
    if k is not None:
        k = check_positive_int("-k", k)
    target_path = f"directions/{METHOD}/{stored_name(layer)}"
    require_new(reader, [target_path], overwrite)
    directions, attrs = activation_pca(reader, layer, k=k, generator=generator, device=device)
    with writing(store, purpose="pca") as target:
        require_new(target, [target_path], overwrite)
        target.write_direction(METHOD, stored_name(layer), directions, attrs)
    return {**attrs, "array": f"layer {layer}"}


# ---------------------------------------------------------------------------------------------- command line
@click.command("pca", epilog="""\b
Examples:
  latent-engine pca run.zarr
  latent-engine pca run.zarr --array latents/z -k 20
  latent-engine pca big.zarr --array latents/wp --workers 4
  latent-engine pca /shared/big.zarr --cluster slurm.yaml      # a cluster file: README, "Clusters"
  latent-engine pca run.zarr -k 10 --overwrite
  latent-engine pca imagenet.zarr --array latents/z --class 207       # rows of one class: ganspace/z_class207
  latent-engine pca celebahq.zarr --layer network.blocks.1 -k 20       # GANSpace on a layer's activations
  latent-engine pca big.zarr -k 64 --gpus 0,1                          # blocks reduced on two GPUs' workers
""")
@click.argument("store")
@click.option("--array", default=None, help="latents/z, latents/w or latents/wp (default w if stored, else z).")
@click.option("-k", "k", type=int, default=None, help="Components kept (default all).")
@click.option("--class", "class_label", type=int, default=None, help="Rows of this class only (stores of class-conditional generators).")
@click.option("--layer", default=None, help="GANSpace on this layer's activations (a name from `latent-engine layers`), regressed to the store's w (or z).")
@device_option()
@click.option("--overwrite", is_flag=True, help="Replace directions/ganspace/<space> if already stored.")
@workers_option
@scheduler_option
@reduce_gpus_option
@cluster_option
@json_option
def pca_command(store: str, array: str | None, k: int | None, class_label: int | None, layer: str | None,
                device: str, overwrite: bool, workers: int | None, scheduler: str | None, gpus: str | None,
                cluster: str | None, as_json: bool) -> None:
    """GANSpace: streaming PCA of stored codes into directions/ganspace/<space>.

    Prints the first 10 components' variance ratios; --json gives all of them.
    """
    for flag, value in (("--cluster", cluster), ("--gpus", gpus)):
        if layer is not None and value is not None:     # refused before a cluster's jobs are submitted
            raise ValueError(f"--layer runs the generator on the store's codes; it does not combine with {flag}")
    device = reduction_device(gpus, device)
    if any(flag is not None for flag in (workers, scheduler, gpus, cluster)):
        from engine.distributed import validate_cluster_flags

        validate_cluster_flags(workers, scheduler, gpus, cluster)     # then the store, before a cluster starts
    open_for_reading(store)
    with reduction_scheduler(cluster, workers, scheduler, gpus) as scheduler:
        result = pca(store, array=array, k=k, workers=workers, scheduler=scheduler, overwrite=overwrite,
                     class_label=class_label, layer=layer, device=device)
    if as_json:
        echo_json({key: result[key] for key in ("space", "array", "n_rows", "explained_variance_ratio")})
        return
    ratio = result["explained_variance_ratio"]
    where = result.get("tapped_layer") or result["space"] + (f"_class{result['class']}" if "class" in result else "")
    click.echo(f"wrote directions/ganspace/{where} ({len(ratio)} components of {result['array']}, "
               f"{result['n_rows']} rows)")
    shown = 10
    echo_table([[i, float(r), float(sum(ratio[: i + 1]))] for i, r in enumerate(ratio[:shown])],
               ["component", "variance ratio", "cumulative"])
    if len(ratio) > shown:
        click.echo(f"… {len(ratio) - shown} more rows; --json for all")


# ---------------------------------------------------------------------------------------------- registration
def _variance_metric(store: Store, key: str, attrs: dict[str, Any]) -> str:
    if "explained_variance_ratio" not in attrs:
        return ""
    ratio = np.asarray(attrs["explained_variance_ratio"], float)
    return f"top-{ratio.size} explain {ratio.sum():.1%} of the variance"


def _variance_curve(attrs: dict[str, Any]) -> Spectrum | None:
    if "explained_variance_ratio" not in attrs:
        return None
    return Spectrum(np.asarray(attrs["explained_variance_ratio"], float), "component", "explained variance ratio",
                    "GANSpace", "explained variance per component")


METHODS = (Method(METHOD, twins=(pca,), commands=(pca_command,), analyses={"pca": pca},
                  report=ReportSection(metric=_variance_metric, spectrum=_variance_curve, row_label="component")),)
