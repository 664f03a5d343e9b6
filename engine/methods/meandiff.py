"""Mean difference: the classical baseline to InterFaceGAN's SVM.

For each attribute, the unit vector of mean(top-K codes) − mean(bottom-K codes), over the same selection
``boundaries`` uses: one streamed pass over ``scores`` (``interfacegan.select_extremes``) keeps each attribute's
K highest and K lowest valid scores (K = ratio × valid rows, or ``num``; NaN scores and ``invalid_value``
dropped; an attribute that cannot be split is skipped with a warning, or refused when named), then one streamed
pass over the codes adds each chunk's selected rows into per-attribute sums with one (2m, b) @ (b, d) product,
so memory is one chunk plus the (2m, d) sums whatever n is. No training, no validation split: on codes whose
distribution is isotropic (z) it estimates the same normal as the SVM; where the codes are correlated (w) the
SVM corrects for the correlation and the mean difference does not, which the report's cosine shows.

Stored like the boundaries, by space: ``directions/meandiff/<attr>`` (z), ``<attr>@w``, ``<attr>@wp`` and
``<attr>@wp<L>``, as (1, d), with attrs attribute, space, layer, num, ratio, invalid_value, valid_rows,
``mean_distance`` (‖mean(top) − mean(bottom)‖) and ``offset`` (n·x + offset is 0 halfway between the means).
A direction already stored under one of the names is refused, before any work, unless ``overwrite``.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import click
import numpy as np

from engine.cli.options import echo_json, echo_table, json_option
from engine.methods import Method, ReportSection
from engine.methods._common import device_option, require_new, writing
from engine.methods.interfacegan import check_selection, select_rows
from engine.store import Store

METHOD = "meandiff"


def meandiff(store: str | os.PathLike | Store, *, space: str = "z", attributes: Sequence[str] | None = None,
             ratio: float | None = 0.02, num: int | None = None, invalid_value: float | None = None,
             layer: int | None = None, overwrite: bool = False, progress: bool = False,
             device: str = "cpu") -> dict[str, dict[str, Any]]:
    """Write the mean-difference direction of each of ``attributes`` (default all) to ``directions/meandiff``.

    The rows are those ``boundaries`` selects with the same ``ratio`` / ``num`` / ``invalid_value``: all K rows
    of each side (there is no split). Names follow ``direction_name(attr, space, layer)``. Returns {stored
    name: the attrs written beside it}. ``device`` (cpu, cuda, cuda:<i>, auto) is where the code chunks are
    read to and summed; the sums come back to the host once.
    """
    from engine.device_io import as_device

    dev = as_device(device)
    if num is not None:
        ratio = None
    check_selection(ratio, num)
    reader, view, stored_as, plans, _ = select_rows(
        store, METHOD, "take mean differences", space=space, layer=layer, attributes=attributes, ratio=ratio,
        num=num, split=1.0, seed=0, invalid_value=invalid_value, overwrite=overwrite, progress=progress)
    sides = [np.sort(p.train_pos) for p in plans] + [np.sort(p.train_neg) for p in plans]
    sums = _side_sums(view, sides, dev, progress)

    m = len(plans)
    results: dict[str, dict[str, Any]] = {}
    vectors: dict[str, np.ndarray] = {}
    for j, p in enumerate(plans):
        top, bottom = sums[j] / p.num, sums[m + j] / p.num
        difference = top - bottom
        distance = float(np.linalg.norm(difference))
        if not distance > 0:
            raise ValueError(f"attribute {p.name!r}: its top and bottom rows have the same mean code; its scores "
                             "may not depend on the codes")
        vectors[p.name] = difference / distance
        results[p.name] = {"space": space, "layer": view.layer, "method": METHOD, "attribute": p.name,
                           "num": p.num, "ratio": ratio, "invalid_value": invalid_value, "valid_rows": p.valid,
                           "mean_distance": distance, "offset": float(-vectors[p.name] @ (top + bottom) / 2)}
    with writing(store, purpose="meandiff") as target:
        require_new(target, [f"directions/{METHOD}/{stored_as[name]}" for name in results], overwrite)
        for name, attrs in results.items():
            target.write_direction(METHOD, stored_as[name], vectors[name][None, :].astype(np.float32), attrs)
    return {stored_as[name]: attrs for name, attrs in results.items()}


def _side_sums(view: Any, sides: Sequence[np.ndarray], device: Any, progress: bool) -> np.ndarray:
    """(len(sides), d) float64 sums of the codes of each side's rows: one streamed pass, summed on ``device``."""
    from engine.progress import progress_bar

    if device.type == "cpu":
        sums = np.zeros((len(sides), view.dim), np.float64)
    else:
        import torch

        from engine.device_io import to_device, to_host
        sums_t = torch.zeros((len(sides), view.dim), dtype=torch.float64, device=device)
    with progress_bar(total=view.n, desc="summing selected rows", unit="rows", enabled=progress) as bar:
        for rows, block in view.blocks():
            if device.type == "cpu":
                sums += _selection_weights(sides, rows) @ block.astype(np.float64)
            else:
                sums_t += to_device(_selection_weights(sides, rows), device) @ to_device(block, device).double()
            bar.update(rows.stop - rows.start)
    return sums if device.type == "cpu" else to_host(sums_t)


def _selection_weights(sides: Sequence[np.ndarray], rows: slice) -> np.ndarray:
    """(len(sides), rows) indicator of which of ``rows`` each sorted row-index array in ``sides`` holds."""
    weights = np.zeros((len(sides), rows.stop - rows.start), np.float64)
    for j, chosen in enumerate(sides):
        lo, hi = np.searchsorted(chosen, [rows.start, rows.stop])
        weights[j, chosen[lo:hi] - rows.start] = 1.0
    return weights


# ---------------------------------------------------------------------------------------------- command line
@click.command("meandiff", epilog="""\b
Examples:
  latent-engine meandiff run.zarr
  latent-engine meandiff run.zarr --space w --attribute smile --ratio 0.05
  latent-engine meandiff run.zarr --space wp --layer 4 --num 5000 --overwrite

\b
Stored as directions/meandiff/<attr> for --space z, <attr>@w, <attr>@wp and <attr>@wp<L>, beside the
InterFaceGAN boundaries of the same names; the report shows the cosine between the two.
""")
@click.argument("store")
@click.option("--space", type=click.Choice(["z", "w", "wp"]), default="z", help="Latent space of the codes (wp: flattened layers, or one with --layer).")
@click.option("--layer", type=int, default=None, help="With --space wp: this layer's w only.")
@click.option("--attribute", "attributes", multiple=True, help="Attribute to use (repeatable; default all).")
@click.option("--ratio", type=float, default=0.02, help="Top and bottom fraction of valid rows used, as for boundaries.")
@click.option("--num", type=int, default=None, help="Use exactly this many rows per side instead of --ratio.")
@click.option("--invalid-value", type=float, default=None, help="Score value to drop like NaN (e.g. a predictor's failure code).")
@click.option("--overwrite", is_flag=True, help="Replace directions already stored under the same names.")
@device_option()
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@json_option
def meandiff_command(store: str, space: str, layer: int | None, attributes: tuple[str, ...], ratio: float,
                     num: int | None, invalid_value: float | None, overwrite: bool, device: str, quiet: bool,
                     as_json: bool) -> None:
    """Mean difference: per attribute, the unit vector from the bottom rows' mean code to the top rows'.

    The baseline to `boundaries`: the same top/bottom rows, no SVM. Existing directions are kept unless
    --overwrite.
    """
    result = meandiff(store, space=space, attributes=list(attributes) or None, ratio=ratio, num=num,
                      invalid_value=invalid_value, layer=layer, overwrite=overwrite,
                      progress=not quiet and not as_json, device=device)
    if as_json:
        echo_json(result)
        return
    echo_table([[f"{METHOD}/{name}", r["attribute"],
                 r["space"] if r["layer"] is None else f"{r['space']}[{r['layer']}]", r["num"], r["mean_distance"]]
                for name, r in result.items()],
               ["direction", "attribute", "space", "num/side", "mean distance"])


# ---------------------------------------------------------------------------------------------- registration
def _cosine_to_boundary(store: Store, key: str, attrs: dict[str, Any]) -> str:
    """The cosine to the InterFaceGAN boundary of the same name, when one is stored."""
    text = f"mean distance {attrs.get('mean_distance', float('nan')):.3g}"
    boundary = f"interfacegan/{key.split('/', 1)[1]}"
    if boundary in store.directions():
        cosine = float(store.read_direction(boundary)[0][0] @ store.read_direction(key)[0][0])
        text += f", cosine to {boundary} {cosine:.3f}"
    return text


def _rank(key: str, attrs: dict[str, Any]) -> tuple[tuple, str]:
    """Farthest apart top and bottom means first."""
    distance = attrs.get("mean_distance")
    distance = float(distance) if distance is not None else -1.0
    return (-distance, key), f"{key} (mean distance {distance:.3g})"


METHODS = (Method(METHOD, twins=(meandiff,), commands=(meandiff_command,), analyses={"meandiff": meandiff},
                  report=ReportSection(metric=_cosine_to_boundary, rank=_rank)),)
