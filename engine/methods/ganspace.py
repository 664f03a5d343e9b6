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
from engine.methods import Method, ReportSection, Spectrum
from engine.methods._common import check_positive_int, open_for_reading, require_new, writing
from engine.spaces import resolve_array
from engine.store import Store

METHOD = "ganspace"


def pca_partial(block: np.ndarray, n_components: int | None = None):
    """The PCA state of one chunk of codes (rows first; wp rows are flattened)."""
    from kernels import PCA
    return PCA(n_components).partial_fit(np.asarray(block, np.float32).reshape(block.shape[0], -1))


def pca_merge(a, b):
    """Fold one chunk state into another (in place)."""
    return a.merge(b)


def pca(store: str | os.PathLike | Store, *, array: str | None = None, k: int | None = None,
        workers: int | None = None, scheduler: str | None = None, overwrite: bool = False) -> dict[str, Any]:
    """Streaming PCA of ``array`` (default latents/w if stored, else latents/z) -> ``directions/ganspace/<space>``.

    ``k`` components are kept (default all). Attrs: ``explained_variance_ratio``, ``explained_variance``,
    ``mean``, ``stdev`` (√variance, GANSpace's ``lat_stdev``), ``n_rows``. Returns the attrs written.
    A stored ``directions/ganspace/<space>`` is refused, before any work, unless ``overwrite``.
    """
    reader = open_for_reading(store)
    path, space = resolve_array(reader, array)
    shape = reader.array(path).shape
    dim = int(np.prod(shape[1:]))
    if k is not None:
        k = check_positive_int("-k", k)
        if k > dim:
            raise ValueError(f"-k must be at most the code size {dim} of {path}; got {k}")
    target_path = f"directions/{METHOD}/{space}"
    require_new(reader, [target_path], overwrite)
    partial = functools.partial(pca_partial, n_components=k)
    if workers is not None or scheduler is not None:
        from engine.distributed import map_reduce_chunks
        state = map_reduce_chunks(reader.path, path, partial, pca_merge, workers=workers, scheduler=scheduler)
    else:
        state = None
        for _, block in reader.iter_rows(path):
            part = partial(block)
            state = part if state is None else pca_merge(state, part)
    components = np.asarray(state.components_, np.float32)
    variance = np.asarray(state.explained_variance_, np.float64)
    attrs = {"space": space, "method": METHOD, "array": path, "n_rows": int(state.n_samples_seen_),
             "explained_variance_ratio": np.asarray(state.explained_variance_ratio_, np.float64),
             "explained_variance": variance, "stdev": np.sqrt(variance),
             "mean": np.asarray(state.mean_, np.float64)}
    with writing(store, purpose="pca") as target:
        require_new(target, [target_path], overwrite)
        target.write_direction(METHOD, space, components, attrs)
    return attrs


# ---------------------------------------------------------------------------------------------- command line
@click.command("pca", epilog="""\b
Examples:
  latent-engine pca run.zarr
  latent-engine pca run.zarr --array latents/z -k 20
  latent-engine pca big.zarr --array latents/wp --workers 4
  latent-engine pca run.zarr -k 10 --overwrite
""")
@click.argument("store")
@click.option("--array", default=None, help="latents/z, latents/w or latents/wp (default w if stored, else z).")
@click.option("-k", "k", type=int, default=None, help="Components kept (default all).")
@click.option("--overwrite", is_flag=True, help="Replace directions/ganspace/<space> if already stored.")
@workers_option
@scheduler_option
@json_option
def pca_command(store: str, array: str | None, k: int | None, overwrite: bool, workers: int | None,
        scheduler: str | None, as_json: bool) -> None:
    """GANSpace: streaming PCA of stored codes into directions/ganspace/<space>.

    Prints the first 10 components' variance ratios; --json gives all of them.
    """
    result = pca(store, array=array, k=k, workers=workers, scheduler=scheduler, overwrite=overwrite)
    if as_json:
        echo_json({key: result[key] for key in ("space", "array", "n_rows", "explained_variance_ratio")})
        return
    ratio = result["explained_variance_ratio"]
    click.echo(f"wrote directions/ganspace/{result['space']} ({len(ratio)} components of {result['array']}, "
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
