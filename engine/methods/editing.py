"""Editing along a stored direction, and re-scoring (the SeFa paper's Table 2).

Codes move as ``x + α n`` (paper 001's single-attribute manipulation) or, with ``distance=True``, to signed
distance α from the boundary nᵀx = 0, as InterFaceGAN's ``linear_interpolate`` does: x + (α − nᵀx) n.
The code lives in the direction's space (``engine.spaces``): z codes go through the mapping; w codes are moved
on every layer (or on a range of ``layers``); a flattened wp direction moves every layer by its own slice; a
wp direction of one ``layer`` moves that layer.

α has a unit, ``units``: ``"sigma"`` (the default) counts in σ, the standard deviation of the store's codes
along the direction, so α = 3 is a large edit in z, w and W+ alike; ``"raw"`` is the length of the step in
the space itself. Every result, table and plot names the unit.

Re-scoring runs the store's predictors on the edited images and reports, per α, the mean change of every
attribute from the unedited images: ``tables/rescore_<method>_<name>[_<row>]`` (rows α, columns attributes).
Attributes are compared in units of their own spread (the std of their stored scores), so a slant that moves
by 2.5 of its σ ranks above a logit that moves by more raw units but less of its own range.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import click
import numpy as np

from engine.cli.options import echo_json, echo_table, json_option
from engine.methods import Method
from engine.methods._common import check_positive_int, open_for_reading, require_new, writing
from engine.spaces import LatentSpace, LatentView, codes_from_z, parse_layers, synthesis_input
from engine.store import Store, StoreError

UNITS = ("sigma", "raw")
SPREAD_ROWS = 4096      # codes whose spread along a direction defines σ: the store's first committed rows


def parse_alphas(text: str | tuple | list) -> np.ndarray:
    """'START,STOP,STEPS' (or a 3-sequence) -> np.linspace(START, STOP, STEPS), with an exact 0 where 0 falls."""
    parts = text.split(",") if isinstance(text, str) else list(text)
    try:
        start, stop, steps = float(parts[0]), float(parts[1]), parts[2]
        steps = int(steps) if isinstance(steps, (int, np.integer)) else int(str(steps).strip())
    except (ValueError, IndexError, TypeError):
        raise ValueError(f"alphas must be START,STOP,STEPS (e.g. -3,3,7); got {text!r}") from None
    if len(parts) != 3 or steps < 1 or not (np.isfinite(start) and np.isfinite(stop)):
        raise ValueError(f"alphas must be START,STOP,STEPS with STEPS ≥ 1; got {text!r}")
    return exact_zero(np.linspace(start, stop, steps))


def exact_zero(alphas: Any) -> np.ndarray:
    """``alphas`` with 0 where linspace left rounding noise (-8.9e-16 for the α = 0 of ±7.02): prints as 0."""
    grid = np.array(alphas, np.float64)
    if grid.size:
        grid[np.abs(grid) <= 1e-9 * np.abs(grid).max()] = 0.0
    return grid


def check_units(units: str) -> str:
    """``units`` must be 'sigma' or 'raw'."""
    if units not in UNITS:
        raise ValueError(f"units must be sigma or raw; got {units!r}")
    return units


def alpha_label(alpha: float, units: str) -> str:
    """α as printed in tables and plots: '-3σ', '0σ', '2.5' (raw)."""
    value = f"{float(alpha) + 0.0:g}"                                      # + 0.0 turns -0.0 into 0
    return f"{value}σ" if units == "sigma" else value


def units_label(units: str, sigma: float | None = None, space: str | None = None) -> str:
    """The axis / header text of α: 'α (σ = 2.52 in w)' or 'α (raw units of w)'."""
    where = f" in {space}" if space else ""
    if units == "sigma":
        return f"α (in σ{f' = {sigma:.3g}' if sigma is not None else ''}{where})"
    return f"α (raw units{' of ' + space if space else ''})"


def split_direction_key(key: str) -> tuple[str, int]:
    """'METHOD/NAME' or 'METHOD/NAME:ROW' -> ('METHOD/NAME', row)."""
    match = re.fullmatch(r"(.+?)(?::(\d+))?", key)
    return match.group(1), int(match.group(2) or 0)


def rescore_table_name(key: str, row: int = 0) -> str:
    """The table ``edit --rescore`` writes for direction ``key`` ('METHOD/NAME') row ``row``."""
    return f"rescore_{key.replace('/', '_')}" + (f"_{row}" if row else "")


def strongest_changes(change: np.ndarray, spread: np.ndarray) -> np.ndarray:
    """Attribute order, most changed first: by max |mean change| over α in units of each attribute's spread.

    ``change`` is (A, m) (α × attributes), ``spread`` (m,) the std of each attribute's stored scores; an
    attribute without a usable spread (not in the store, constant) ranks after every one that has one.
    """
    spread = np.asarray(spread, np.float64)
    usable = np.isfinite(spread) & (spread > 0)
    size = np.nanmax(np.abs(np.asarray(change, np.float64)), axis=0, initial=0.0)
    relative = np.where(usable, size / np.where(usable, spread, 1.0), -np.inf)
    return np.lexsort((-size, -relative))


def score_spread(store: Store, attributes: list[str]) -> np.ndarray:
    """Std of each of ``attributes``' stored scores (NaN for one the store does not hold)."""
    from engine.summary import attribute_stats

    stats = attribute_stats(store)
    return np.array([stats[a]["std"] if a in stats else np.nan for a in attributes], np.float64)


def _reference_codes(store: Store, space: LatentSpace, G: Any, device: str) -> np.ndarray:
    """The codes σ is measured on: the store's first committed rows of ``space``, else the same draws mapped."""
    committed = np.flatnonzero(store.progress())
    if space.name in store.spaces and committed.size:
        rows = store.chunk_rows(int(committed[0]))
        return LatentView(store, space).read(slice(rows.start, min(rows.stop, rows.start + SPREAD_ROWS))
                                             ).astype(np.float64)
    z, labels = starting_codes(G, int(store.meta.get("seed") or 0), min(store.chunk, SPREAD_ROWS))
    return codes_from_z(G, z, space, device, labels)[0]


def starting_codes(G: Any, seed: int, samples: int) -> tuple[np.ndarray, np.ndarray | None]:
    """``samples`` codes drawn as the sampler draws chunk 0 with ``seed`` (the generator's own distribution of
    z, and its class choice for a class-conditional generator): (z, labels or None)."""
    from engine.models.base import conditional
    from engine.sampler import draw_codes, draw_labels

    z = draw_codes(seed, 0, samples, G.z_dim, distribution=getattr(G, "latent_distribution", None))
    labels = draw_labels(seed, 0, samples, samples, getattr(G, "label_choice", None), int(G.num_classes)) \
        if conditional(G) else None
    return z, labels


def direction_spread(codes: np.ndarray, n: np.ndarray) -> float:
    """σ: the standard deviation of (S, D) ``codes`` projected on the unit direction ``n``."""
    return float(np.std(np.asarray(codes, np.float64) @ np.asarray(n, np.float64)))


def _is_planted(G: Any) -> bool:
    from engine.models.planted import PlantedGenerator

    return isinstance(G, PlantedGenerator)


PLANTED_NOTE = ("the planted generator's images are tanh(A·w) patterns, not pictures: its grids look like noise "
                "by design; read the re-scoring numbers instead")


def _moved(x: np.ndarray, n: np.ndarray, alphas: np.ndarray, distance: bool) -> np.ndarray:
    """(S, D) codes and unit n, (D,) or one per code (S, D), -> (S, A, D) edited codes."""
    if distance:
        along = x @ n if n.ndim == 1 else np.einsum("sd,sd->s", x, n)
        shift = alphas[None, :] - along[:, None]                      # to signed distance α from nᵀx = 0
    else:
        shift = np.broadcast_to(alphas[None, :], (x.shape[0], alphas.size))
    return x[:, None, :] + shift[..., None] * (n if n.ndim == 1 else n[:, None, :])


def edit(store: str | os.PathLike | Store, direction: str, *, alphas: Any = "-3,3,7", units: str = "sigma",
         samples: int = 4, seed: int = 0, stored: bool = False, distance: bool = False, rescore: bool = False,
         out: str | os.PathLike | None = None, generator: Any = None, predictors: Any = None,
         batch: int = 256, device: str = "cpu", layers: Any = None, overwrite: bool = False,
         class_label: int | None = None, direction_from: str | os.PathLike | Store | None = None) -> dict[str, Any]:
    """Edit ``samples`` codes along ``direction`` ('METHOD/NAME[:ROW]') at each α; returns the results.

    ``alphas`` count in ``units``: 'sigma' (σ of the store's codes along the direction, see the module
    docstring) or 'raw'. Codes are drawn with ``seed`` (or, with ``stored``, the store's first rows). ``out``
    saves the image grid (rows samples, columns α, labelled); with ``rescore`` the predictors re-score every
    edited image, the mean change per α is written to ``tables/rescore_<method>_<name>[_<row>]`` (refused if
    it exists, unless ``overwrite``) and plotted beside ``out``. ``generator`` and ``predictors`` default to
    the models the store was sampled with. ``layers`` ('A-B', 0-based inclusive) applies a w-sized direction
    (w, or one wp layer) to those layers only, as GANSpace's layer-wise edits do. ``class_label`` (a
    class-conditional generator) edits codes of that class only: the first stored rows of the class, or drawn
    codes given that class; it defaults to the class a per-class direction was fitted on (its ``class`` attr).
    ``direction_from`` (another store of the same generator, e.g. a sampled one when ``store`` is inverted)
    supplies the direction and its σ; ``stored`` rows of a store without z codes are taken from its codes of the
    direction's space (``stored_codes``). ``stored`` rows of an inverted store that holds noise maps
    (``inversion/noise``) are rendered with them, every edit of a row with that row's maps, so α = 0 re-generates
    the stored reconstruction; drawn codes use the generator's own noise. A z-dependent direction (LatentCLR
    linear / nonlinear: ``engine.direction_models``) moves each code x along its own d(x); σ is then measured
    along the direction's stored summary row. The result holds ``alphas`` (in ``units``), ``alphas_raw``,
    ``sigma``, ``units``, ``codes`` (S, A, D) and ``images`` (S, A, C, H, W); a ``note`` when the images are
    not pictures (the planted generator).
    """
    import torch

    from engine.direction_models import load_direction_model
    from engine.models.base import conditional, synthesize
    from engine.models.registry import load_generator, load_predictor
    from engine.noise_maps import check_noise_layers, select_maps, stored_noise_maps

    samples = check_positive_int("samples", samples)
    batch = check_positive_int("batch", batch)
    units = check_units(units)
    grid = parse_alphas(alphas)
    reader = open_for_reading(store, complete=stored)
    key, row = split_direction_key(direction)
    if "/" not in key:
        raise ValueError(f"direction must be METHOD/NAME (e.g. interfacegan/smile); got {direction!r}")
    source = reader if direction_from is None else open_for_reading(direction_from)
    check_same_generator(reader, source)
    values, attrs = _read_direction(source, key, hint=direction_from is None and "inversion" in reader.group)
    if row >= values.shape[0]:
        raise ValueError(f"direction {direction!r}: {key} has {values.shape[0]} rows (0-{values.shape[0] - 1})")
    n = values[row].astype(np.float64)
    n /= np.linalg.norm(n)
    try:
        space = LatentSpace.from_attrs(attrs)
    except ValueError:
        raise ValueError(f"direction {key} lives in space {attrs.get('space')!r}; edit moves z, w or wp "
                         "codes") from None
    if stored and samples > reader.n:
        raise ValueError(f"samples {samples} is more than the {reader.n} stored rows")
    table = rescore_table_name(key, row)
    if rescore:
        require_new(reader, [f"tables/{table}"], overwrite)

    G = generator if generator is not None and not isinstance(generator, str) else \
        load_generator(generator or reader.meta.get("generator"), device)
    if space.name != "z" and not getattr(G, "has_mapping", False):
        raise ValueError(f"the generator has no mapping network, so it cannot take {space.name} codes")
    expected = space.dim(G.z_dim, G.w_dim, G.num_ws)
    if n.size != expected:
        raise ValueError(f"direction {key} has {n.size} dims; the generator's {space.label} codes have {expected}")
    if space.name == "wp":
        space.check_layers(G.num_ws)
    if stored:
        check_noise_layers(reader, G)
    layer_range = parse_layers(layers, G.num_ws) if layers is not None else None
    if layer_range is not None and not space.w_sized:
        raise ValueError(f"layers applies to w-sized directions (w or one wp layer); {key} lives in "
                         f"{space.label}")
    if rescore:
        specs = predictors if predictors is not None else (reader.meta.get("predictors") or
                                                            source.meta.get("predictors", []))
        if not specs:
            raise ValueError("rescore needs predictors: the store was sampled without any")
        Ps = [load_predictor(p, G, device) if isinstance(p, str) else p for p in specs]
    if out is not None and Path(out).suffix.lower() != ".png":
        raise ValueError(f"out must name a .png file; got {out}")

    sigma = direction_spread(_reference_codes(source, space, G, device), n)
    if units == "sigma" and not sigma > 0:
        raise ValueError(f"the store's codes do not vary along {direction} (σ = {sigma:g}); use units='raw' "
                         "(--units raw)")
    raw = grid * sigma if units == "sigma" else grid

    # Starting codes in the direction's space, as (S, D) rows.
    if class_label is None and attrs.get("class") is not None and conditional(G):
        class_label = int(attrs["class"])                # a per-class direction edits codes of its class
    if class_label is not None and not conditional(G):
        raise ValueError(f"the generator is not class-conditional: drop --class {class_label}")
    x = ws = None
    rows: slice | np.ndarray = slice(0, samples)                # the stored rows edited, with ``stored``
    if stored and "z" not in reader.spaces:
        x, ws = stored_codes(reader, space, G, samples, device)
        labels = None
    elif stored and class_label is not None:
        rows = reader.class_rows(class_label)[:samples]
        if rows.size < samples:
            raise ValueError(f"samples {samples} is more than the {rows.size} stored rows of class {class_label}")
        z = np.asarray(reader.latent_array("z").get_orthogonal_selection((rows, slice(None))), np.float32)
        labels = np.full(samples, class_label, np.int32)
    elif stored:
        z = np.asarray(reader.latent_array("z")[:samples], np.float32)
        labels = np.asarray(reader.array("labels")[:samples]) if conditional(G) else None
    else:
        z, labels = starting_codes(G, seed, samples)
        if class_label is not None:
            if not 0 <= class_label < int(G.num_classes):
                raise ValueError(f"class must be an integer from 0 to {int(G.num_classes) - 1}; got {class_label}")
            labels = np.full(samples, class_label, np.int32)
    if x is None:
        x, ws = codes_from_z(G, z, space, device, labels)
    model = load_direction_model(source, key)          # a z-dependent direction (LatentCLR): d(x) at each code
    along = n if model is None else model.at(x, row).astype(np.float64)
    moved = _moved(x, along, raw, distance).astype(np.float32)                       # (S, A, D)
    codes = np.concatenate([x[:, None, :].astype(np.float32), moved], axis=1)        # column 0: unedited
    # An inverted row re-generates its image only with the noise maps optimised beside its code: every edit of
    # the row keeps them (flat image i is an edit of row i // A). Drawn codes use the generator's own noise.
    maps = stored_noise_maps(reader, G, rows) if stored else None                 # on the CPU; a batch's go over

    flat = codes.reshape(-1, codes.shape[-1])
    images, scores = [], []
    with torch.inference_mode():
        for start in range(0, flat.shape[0], batch):
            part = torch.from_numpy(flat[start:start + batch]).to(device)
            base = None if ws is None else torch.from_numpy(
                np.repeat(ws, codes.shape[1], axis=0)[start:start + batch]).to(device)
            lb = None if labels is None else torch.from_numpy(
                np.repeat(labels, codes.shape[1])[start:start + batch].astype(np.int64)).to(device)
            of_row = torch.arange(start, start + part.shape[0]) // codes.shape[1]
            img = synthesize(G, synthesis_input(G, part, space, base, layer_range, lb), lb,
                             select_maps(maps, of_row, device))
            images.append(img.float().cpu())
            if rescore:
                scores.append(torch.cat([P(img).float() for P in Ps], dim=1).cpu().numpy())
    images = torch.cat(images).reshape(samples, codes.shape[1], *images[0].shape[1:])
    result: dict[str, Any] = {"alphas": grid, "alphas_raw": raw, "units": units, "sigma": sigma, "codes": moved,
                              "images": images[:, 1:], "space": space.name, "direction": key, "row": row,
                              "layers": None if layer_range is None else list(layer_range)}
    if _is_planted(G):
        result["note"] = PLANTED_NOTE
    if out is not None:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        edit_grid(result).save(out)
        result["png"] = str(out)
    if rescore:
        attributes = [a for P in Ps for a in P.attributes]
        s = np.concatenate(scores).reshape(samples, codes.shape[1], -1).astype(np.float64)
        change = np.nanmean(s[:, 1:] - s[:, :1], axis=0)                              # (A, m)
        spread = score_spread(reader if reader.attributes else source, attributes)
        table_attrs = {"direction": key, "row": row, "label": key if values.shape[0] == 1 else f"{key}:{row}",
                       "samples": samples, "seed": seed, "distance": bool(distance),
                       "space": space.name, "layer": space.layer, "layers": None if layer_range is None else
                       list(layer_range), "units": units, "sigma": sigma, "alphas": grid, "alphas_raw": raw,
                       "attribute_std": [float(v) if np.isfinite(v) else None for v in spread],
                       **({"direction_from": _where(source.path)} if direction_from is not None else {})}
        with writing(store, purpose="edit --rescore") as target:
            require_new(target, [f"tables/{table}"], overwrite)
            target.write_table(table, change, [f"{a:g}" for a in grid], attributes, table_attrs)
        result.update(table=table, rescore=change, attributes=attributes, attribute_std=spread,
                      order=strongest_changes(change, spread))
        if out is not None:
            plot = Path(out).with_name(Path(out).stem + "_rescore.png")
            rescore_plot(change, table_attrs, attributes).save(plot)
            result["plot"] = str(plot)
    return result


def _read_direction(store: Store, key: str, hint: bool) -> tuple[np.ndarray, dict[str, Any]]:
    """``store.read_direction(key)``; with ``hint`` (an inverted store, no ``direction_from``) an unknown
    direction's refusal says where an inverted store's directions come from."""
    try:
        return store.read_direction(key)
    except StoreError as exc:
        if not hint:
            raise
        raise StoreError(f"{exc}; an inverted store takes its directions from a sampled store of the same "
                         "generator: direction_from='OTHER.zarr' (--direction-from OTHER.zarr)") from None


def _where(path: str) -> str:
    """A store's path as a table records it: absolute for a local store (a report reads it from any folder),
    a URL (remote, or file://) as it is."""
    return path if "://" in path else os.path.abspath(path)


def check_same_generator(store: Store, other: Store) -> None:
    """Refuse directions from ``other`` unless it was made with ``store``'s generator: the same file (SHA-256)
    where either records one, else the same SPEC. The refusal names both generators by SPEC, and by hash where
    the SPECs alone do not tell them apart (both files, or the same SPEC)."""
    if other is store:
        return
    mine, theirs = (_file_hash(s) for s in (store, other))
    specs_alike = store.meta.get("generator") == other.meta.get("generator")
    if (mine == theirs) if (mine or theirs) else specs_alike:
        return
    with_hash = bool(mine and theirs) or specs_alike
    if mine and theirs:
        raise ValueError(f"direction_from {other.path} was made with another generator file than {store.path}: "
                         f"{_generator_name(other, True)} vs {_generator_name(store, True)}")
    raise ValueError(f"direction_from {other.path} was made with generator {_generator_name(other, with_hash)}, "
                     f"{store.path} with {_generator_name(store, with_hash)}: directions do not carry over")


def _file_hash(store: Store) -> str | None:
    """The SHA-256 of the generator file ``store`` was made with; None for a built-in generator."""
    return (store.meta.get("generator_file") or {}).get("sha256") or None


def _generator_name(store: Store, with_hash: bool) -> str:
    """A store's generator as a refusal names it: its SPEC, and with ``with_hash`` its file's SHA-256."""
    name = repr(store.meta.get("generator"))
    if not with_hash:
        return name
    sha = _file_hash(store)
    return f"{name} (SHA-256 {sha[:12]}…)" if sha else f"{name} (no file hash recorded)"


def stored_codes(store: Store, space: LatentSpace, G: Any, samples: int, device: str) -> tuple[np.ndarray, Any]:
    """The first ``samples`` rows of a store without z codes (an inverted or imported one) in ``space``:
    ((S, D) float64 codes, (S, num_ws, w_dim) per-layer codes). w rows serve wp directions through the
    generator's truncation; wp rows (one w per layer) cannot serve a w direction."""
    import torch

    if space.name == "z" or space.name not in store.spaces and space.name != "wp":
        raise ValueError(f"{store.path} stores {', '.join(store.spaces)} codes, no {space.name} codes: edit it "
                         f"along a direction in {' or '.join(store.spaces)}")
    if space.name in store.spaces and space.name == "wp":
        ws = np.asarray(store.latent_array("wp")[:samples], np.float32)
    else:
        w = np.asarray(store.latent_array("w")[:samples], np.float32)
        with torch.inference_mode():
            ws = synthesis_input(G, torch.from_numpy(w).to(device), LatentSpace("w")).float().cpu().numpy()
        if space.name == "w":
            return w.astype(np.float64), ws
    return space.from_ws(ws).astype(np.float64), ws


def edit_grid(result: dict[str, Any]) -> Any:
    """The image grid of an ``edit`` result: rows samples, columns α, each column labelled with its α."""
    from engine.plots import image_grid

    images = result["images"]
    return image_grid(images, scale=max(1, 64 // images.shape[-1]),
                      col_labels=[alpha_label(a, result["units"]) for a in result["alphas"]])


def rescore_plot(change: np.ndarray, attrs: dict[str, Any], attributes: list[str], top: int = 6) -> Any:
    """The line plot of a re-scoring table: the ``top`` attributes that change most, in their own std.

    ``attrs`` are the table's attrs (as ``edit`` writes them); tables written before α had units read as raw.
    """
    from engine.plots import line_plot

    spread = attribute_spread(attrs)
    order = strongest_changes(change, spread)[:top]
    alphas = exact_zero(attrs.get("alphas"))
    units = attrs.get("units", "raw")
    usable = np.isfinite(spread) & (spread > 0)
    if usable[order].all():
        series = {f"{attributes[j]} (std {spread[j]:.3g})": change[:, j] / spread[j] for j in order}
        ylabel = "mean score change / the attribute's std"
    else:
        series = {attributes[j]: change[:, j] for j in order}
        ylabel = "mean score change"
    return line_plot(alphas, series, xlabel=units_label(units, attrs.get("sigma"), attrs.get("space")),
                     ylabel=ylabel, title=f"re-scoring along {rescore_label(attrs)}")


def attribute_spread(attrs: dict[str, Any]) -> np.ndarray:
    """The per-attribute std a re-scoring table records (NaN where unknown, or for tables written before)."""
    recorded = attrs.get("attribute_std") or [None] * len(attrs["cols"])
    return np.array([np.nan if v is None else v for v in recorded], np.float64)


def rescore_label(attrs: dict[str, Any]) -> str:
    """The edited direction of a re-scoring table, as ``--direction`` takes it ('ganspace/w:1')."""
    return attrs.get("label") or f"{attrs['direction']}:{int(attrs.get('row') or 0)}"


__all__ = ["edit", "edit_grid", "parse_alphas", "rescore_label", "rescore_plot", "rescore_table_name",
           "strongest_changes"]


# ---------------------------------------------------------------------------------------------- command line
@click.command("edit", epilog="""\b
Examples:
  latent-engine edit run.zarr --direction interfacegan/smile --out smile.png
  latent-engine edit run.zarr --direction interfacegan/age --alphas -5,5,11 --samples 8 --rescore --out age.png
  latent-engine edit run.zarr --direction sefa/layers_0-3:2 --stored --distance --out sefa2.png
  latent-engine edit run.zarr --direction ganspace/w:0 --alphas -10,10,5 --units raw --out pc0.png
  latent-engine edit run.zarr --direction ganspace/w:1 --layers 0-3 --out pc1_coarse.png
  latent-engine edit imagenet.zarr --direction interfacegan/brightness_class207 --stored --out b207.png   # rows of class 207
  latent-engine edit inverted.zarr --direction-from run.zarr --direction interfacegan/smile@w --stored --out smile.png
\b
α counts in σ by default: the standard deviation of the store's codes along the direction, so
--alphas -3,3,7 is a large edit in z, w and W+ alike; --units raw takes α as the step length itself.
""")
@click.argument("store")
@click.option("--direction", required=True, help="METHOD/NAME, or METHOD/NAME:ROW for a multi-row direction.")
@click.option("--alphas", default="-3,3,7", show_default=True, help="START,STOP,STEPS of the edit strengths, in --units.")
@click.option("--units", type=click.Choice(["sigma", "raw"]), default="sigma", show_default=True,
              help="Unit of α: sigma = std of the store's codes along the direction; raw = step length in the space.")
@click.option("--samples", type=int, default=4, help="Codes to edit (grid rows).")
@click.option("--seed", type=int, default=0, help="Seed of the drawn codes.")
@click.option("--stored", is_flag=True, help="Edit the store's first codes instead of drawing new ones.")
@click.option("--distance", is_flag=True, help="InterFaceGAN's form: move each code to signed distance α from the boundary.")
@click.option("--rescore", is_flag=True, help="Re-score edited images: writes tables/rescore_<method>_<name>[_<row>] and a line plot.")
@click.option("--overwrite", is_flag=True, help="With --rescore: replace an existing re-scoring table of this direction.")
@click.option("--out", default=None, help="PNG of the image grid (rows samples, columns α).")
@click.option("--layers", default=None, help="A-B (0-based, inclusive): move a w-sized direction (w, or one wp layer) on these layers only, as GANSpace's layer-wise edits do.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:<index>: where the rows are read to and the math runs (auto: CUDA if present).")
@click.option("--class", "class_label", type=int, default=None, help="Class-conditional generators: edit codes of this class (default: the class a per-class direction was fitted on).")
@click.option("--direction-from", default=None, help="Another store of the same generator (e.g. a sampled one) to take the direction and its σ from; for an inverted STORE.")
@json_option
def edit_command(store: str, direction: str, alphas: str, units: str, samples: int, seed: int, stored: bool,
                 distance: bool, rescore: bool, overwrite: bool, out: str | None, layers: str | None, device: str,
                 class_label: int | None, direction_from: str | None, as_json: bool) -> None:
    """Edit codes along a stored direction (x + α·n) and synthesize the image grid; optionally re-score.

    With --rescore the attributes are listed most changed first, measured in each attribute's std in the
    store (so an image statistic that moves by 2σ ranks above a logit that moves more raw units but less of
    its range).
    """
    from engine.devices import resolve_device

    result = edit(store, direction, alphas=alphas, units=units, samples=samples, seed=seed, stored=stored,
                  distance=distance, rescore=rescore, out=out, device=str(resolve_device(device)), layers=layers,
                  class_label=class_label, direction_from=direction_from,
                  overwrite=overwrite)
    summary = {k: result[k] for k in ("direction", "row", "space", "layers", "units", "sigma", "png", "plot", "table",
                                      "note") if k in result}
    summary["alphas"] = [float(a) for a in result["alphas"]]
    summary["alphas_raw"] = [float(a) for a in result["alphas_raw"]]
    if rescore:
        order = result["order"]
        summary["rescore"] = {result["attributes"][j]: [float(v) for v in result["rescore"][:, j]] for j in order}
        summary["attribute_std"] = {result["attributes"][j]: float(result["attribute_std"][j]) for j in order}
    if as_json:
        echo_json(summary)
        return
    if "note" in summary:
        click.echo(f"note: {summary['note']}", err=True)
    for key in ("png", "plot", "table"):
        if key in summary:
            click.echo(f"wrote {summary[key] if key != 'table' else 'tables/' + summary[key]}")
    click.echo(f"{units_label(result['units'], result['sigma'], result['space'])}: "
               f"{', '.join(alpha_label(a, result['units']) for a in result['alphas'])}")
    if rescore:
        rows = []
        for attribute, changes in summary["rescore"].items():
            std = summary["attribute_std"][attribute]
            relative = max(abs(v) for v in changes) / std if std > 0 else float("nan")
            rows.append([attribute, std, *changes, relative])
        echo_table(rows, ["attribute", "std", *[f"α={alpha_label(a, result['units'])}" for a in result["alphas"]],
                          "max|Δ|/std"])


METHODS = (Method("editing", twins=(edit,), commands=(edit_command,)),)
