"""``latent-engine report``: one self-contained HTML page a person can look at.

The page shows what the store holds: run metadata and timings, score statistics, every method's directions
with their metrics, edit grids along the strongest directions of each method, re-scoring curves, the
correlation heatmaps and method-matching tables, the SeFa eigenvalue spectrum and GANSpace's explained
variance. Images are PNG files in ``images/`` beside ``index.html``. Edit grids need the generator the store
was sampled with; when it cannot be built the page says so instead of silently leaving the grids out.
"""
from __future__ import annotations

import html
import os
import re
import time
from pathlib import Path
from typing import Any

import numpy as np

from engine.store import Store, StoreError
from engine.summary import summarize

REPORT_STAGE = "HTML report"      # the report's own row in the Timings table (the demo records it too)

_STYLE = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222;padding:0 1em}
h1{margin-bottom:.2em} h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:2em}
h3{margin:1.5em 0 .3em} .scroll{max-width:100%;overflow-x:auto}
table{border-collapse:collapse;margin:.5em 0;font-size:.9em} td,th{border:1px solid #ddd;padding:.25em .6em}
th{background:#f4f4f4;text-align:left} td.num{text-align:right;font-variant-numeric:tabular-nums}
tr.total td{font-weight:600;border-top:2px solid #bbb}
figure{display:inline-block;margin:.5em 1em .5em 0;vertical-align:top} figcaption{font-size:.85em;color:#555}
.row{display:flex;flex-wrap:wrap;align-items:flex-start;gap:0 1em} .row figure{margin-right:0}
img{image-rendering:pixelated;max-width:100%} img.plot{max-width:460px;image-rendering:auto}
img.wide{max-width:820px;image-rendering:auto} .note{background:#fff4e5;border-left:4px solid #f0a030;padding:.5em}
.muted{color:#777;font-size:.9em} details{margin:.3em 0 1em} summary{cursor:pointer;color:#444;font-size:.9em}
"""


def default_out(store_path: str) -> Path:
    """``run.zarr`` -> ``run.report/`` beside it."""
    base = Path(store_path.rstrip("/"))
    return base.with_name(base.stem + ".report")


def _cell(v: Any) -> str:
    if isinstance(v, (float, np.floating)):
        return f'<td class="num">{v:.4g}</td>' if np.isfinite(v) else '<td class="num">-</td>'
    if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
        return f'<td class="num">{v}</td>'
    return f"<td>{html.escape(str(v))}</td>"


def _table(rows: list[list[Any]], headers: list[str], total: list[Any] | None = None) -> str:
    """An HTML table (numbers right-aligned, 4 significant digits) that scrolls rather than overflow the page."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(_cell(v) for v in row) + "</tr>" for row in rows)
    if total is not None:
        body += '<tr class="total">' + "".join(_cell(v) for v in total) + "</tr>"
    return f"<div class='scroll'><table><tr>{head}</tr>{body}</table></div>"


class _Page:
    """Collects sections and the images they reference."""

    def __init__(self, out: Path):
        self.out = out
        (out / "images").mkdir(parents=True, exist_ok=True)
        self.parts: list[str] = []

    def add(self, markup: str) -> None:
        self.parts.append(markup)

    def figure(self, image: Any, name: str, caption: str, plot: bool = False, wide: bool = False) -> str:
        """Save ``image`` under images/ and return its <figure>; line plots are shown smaller than grids."""
        filename = f"images/{name}.png"
        image.save(self.out / filename)
        css = ' class="wide"' if wide else ' class="plot"' if plot else ""
        return (f'<figure><img{css} src="{html.escape(filename)}" alt="{html.escape(caption)}">'
                f"<figcaption>{html.escape(caption)}</figcaption></figure>")

    def write(self, title: str) -> Path:
        page = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
                f"<style>{_STYLE}</style></head><body>{''.join(self.parts)}</body></html>")
        path = self.out / "index.html"
        path.write_text(page, encoding="utf-8")
        return path


def strongest_directions(store: Store, per_method: int) -> list[tuple[str, str]]:
    """The directions the demo edits and the report shows: [(key as ``edit`` takes it, caption)].

    Each folder of ``directions/`` is shown as its method's report section says (``engine.methods``): a method
    with a ``rank`` (InterFaceGAN: validation accuracy, then the accuracy on the remaining rows) shows its best
    ``per_method`` directions; the others (SeFa eigenvectors, GANSpace components) the first ``per_method`` rows
    of each direction array. The ranked ones come last, in folder order. The demo and the report both call
    this, so the grids and the re-scoring curves are always about the same directions.
    """
    from engine.methods import report_section

    targets: list[tuple[str, str]] = []
    ranked: dict[str, list[tuple[tuple, str, str]]] = {}
    for key in store.directions():
        array = store.array(f"directions/{key}")
        attrs = dict(array.attrs)
        section = report_section(key, attrs)        # the method its attrs record (condition), else its folder's
        if section is not None and section.rank is not None:
            order, caption = section.rank(key, attrs)
            ranked.setdefault(id(section), []).append((order, key, caption))
        else:
            label = section.row_label if section is not None else "row"
            for row in range(min(per_method, array.shape[0])):
                targets.append((f"{key}:{row}", f"{key}:{row} ({label} {row})"))
    for candidates in ranked.values():
        targets += [(key, caption) for _, key, caption in sorted(candidates)[:per_method]]
    return targets


def report(store: str | os.PathLike | Store, out: str | os.PathLike | None = None, *, per_method: int = 4,
           samples: int = 5, alphas: str = "-3,3,7", units: str = "sigma", device: str = "cpu",
           progress: bool = True, direction_from: str | os.PathLike | None = None) -> Path:
    """Write the HTML report of ``store`` into ``out`` (default ``<store>.report/``); returns index.html.

    The edit grids show ``strongest_directions(store, per_method)`` at ``alphas`` in ``units`` ('sigma' or
    'raw', as ``edit`` takes them), each beside its re-scoring table when ``edit --rescore`` wrote one.
    An inverted store (``latent-engine invert``) also shows its targets (when kept), reconstructions and errors
    side by side, and edits of its rows along the directions it was edited with (``edit --rescore
    --direction-from``) or, with ``direction_from``, along that store's strongest directions (a store of
    another generator is refused, as ``edit`` refuses it).
    """
    from engine.methods.editing import check_same_generator, check_units, parse_alphas

    started = time.perf_counter()
    check_units(units)
    parse_alphas(alphas)
    reader = store if isinstance(store, Store) else Store.open(store)
    if direction_from is not None and "inversion" in reader.group:    # refused before anything is written
        check_same_generator(reader, Store.open(str(direction_from)))
    out_dir = Path(out) if out is not None else default_out(reader.path)
    page = _Page(out_dir)
    summary = summarize(reader)
    meta = reader.meta

    page.add(f"<h1>latent-engine report</h1><p class='muted'>{html.escape(reader.path)} · "
             f"schema {summary['schema']} · latent-engine {html.escape(str(summary['engine_version']))}</p>")
    run_rows = [["generator", summary["generator"]], ["predictors", ", ".join(summary["predictors"]) or "-"],
                ["rows (n)", summary["n"]], ["chunk", summary["chunk"]], ["seed", summary["seed"]],
                ["complete", f"{summary['chunks_done']}/{summary['n_chunks']} chunks"],
                ["spaces", ", ".join(reader.spaces)], ["created", summary["created"]],
                *([["sampling speed", f"{summary['samples_per_s']} samples/s on {summary['device']}"]]
                  if summary.get("samples_per_s") else []),
                *([["inversion speed", f"{summary['images_per_s']} images/s on {summary['device']}"]]
                  if summary.get("images_per_s") else [])]
    page.add("<h2>Run</h2>" + _table(run_rows, ["run", "value"]))
    timings_at = len(page.parts)
    if summary["attributes"]:
        page.add("<h2>Attributes</h2>" + _table(
            [[a, s["mean"], s["std"], s["nan"]] for a, s in summary["attributes"].items()],
            ["attribute", "mean", "std", "NaN scores"]))

    inverted = "inversion" in reader.group
    borrowed = _inversion_section(page, reader, samples=samples, alphas=alphas, units=units, device=device,
                                  direction_from=direction_from, per_method=per_method,
                                  progress=progress) if inverted else 0
    _directions_section(page, reader, inverted=inverted, borrowed=borrowed, direction_from=direction_from)
    shown = _edits_section(page, reader, per_method=per_method, samples=samples, alphas=alphas,
                           units=units, device=device, progress=progress)
    _tables_section(page, reader, shown)
    page.parts.insert(timings_at, _timings(meta.get("timings") or {}, time.perf_counter() - started))
    return page.write(f"latent-engine report: {Path(reader.path).name}")


def _timings(recorded: dict[str, Any], this_report: float) -> str:
    """The stages recorded in the store (the demo's, a sweep's), this report, and their total."""
    rows = [[stage, float(seconds)] for stage, seconds in recorded.items() if stage != REPORT_STAGE]
    rows.append([f"{REPORT_STAGE} (this page)", round(this_report, 2)])
    return "<h3>Timings</h3>" + _table(rows, ["stage", "seconds"], total=["total", sum(r[1] for r in rows)])


def _directions_section(page: _Page, store: Store, inverted: bool = False, borrowed: int = 0,
                        direction_from: str | os.PathLike | None = None) -> None:
    """The directions table (each row's metrics as its method's report section says) and their curves.

    A store without directions gets a note on how to find some: an ``inverted`` one takes them from a sampled
    store of the same generator (``borrowed``: the edit grids its Inversion section showed from one)."""
    from engine.methods import report_section

    keys = store.directions()
    page.add("<h2>Directions</h2>")
    if not keys:
        page.add(f"<p class='note'>{_no_directions(store, inverted, borrowed, direction_from)}</p>")
        return
    rows = []
    figures = []
    for key in keys:
        array = store.array(f"directions/{key}")
        attrs = dict(array.attrs)
        section = report_section(key, attrs)
        metric = section.metric(store, key, attrs) if section is not None and section.metric is not None else ""
        curve = section.spectrum(attrs) if section is not None and section.spectrum is not None else None
        if curve is not None:
            figures.append(_spectrum(page, key, curve))
        rows.append([key, "×".join(map(str, array.shape)), attrs.get("space", ""), metric])
    page.add(_table(rows, ["direction", "shape", "space", "metrics"]) + "".join(figures))


def _no_directions(store: Store, inverted: bool, borrowed: int,
                   direction_from: str | os.PathLike | None = None) -> str:
    """The note of a store without directions: what to run to get some (HTML)."""
    if not inverted:
        return ("No directions yet: run <code>boundaries</code>, <code>sefa</code> or <code>pca</code> on this "
                "store.")
    text = ("An inverted store has no directions of its own: it takes them from a sampled store of the same "
            "generator. ")
    if borrowed:
        return text + "The edits in the Inversion section above take theirs from such a store."
    if direction_from is not None:
        return text + (f"None of {html.escape(str(direction_from))}'s directions could be shown here: none lives "
                       f"in a space this store's codes ({', '.join(store.spaces)}) can move along, or its edits "
                       "were skipped (see the notes in the Inversion section above).")
    path = html.escape(store.path)
    return text + (f"To see edits of its rows here, run <code>report {path} --direction-from OTHER.zarr</code> "
                   f"(or <code>edit {path} --rescore --direction-from OTHER.zarr</code>, which the report then "
                   "shows).")


def _generator(store: Store, device: str) -> tuple[Any, str | None]:
    """(the generator ``store`` was made with, None), or (None, why it cannot be built, as HTML)."""
    from engine.models.registry import load_generator

    try:
        return load_generator(store.meta["generator"], device), None
    except (ValueError, ImportError) as exc:
        return None, (f"cannot build the generator {html.escape(str(store.meta.get('generator')))} "
                      f"({html.escape(str(exc))})")


def _spectrum(page: _Page, key: str, curve: Any) -> str:
    """A per-direction curve (``engine.methods.Spectrum``: eigenvalues, explained variance) as a figure."""
    from engine.plots import line_plot

    plot = line_plot(np.arange(curve.values.size), {key: curve.values}, xlabel=curve.xlabel, ylabel=curve.ylabel,
                     title=f"{curve.title} {key}")
    return page.figure(plot, f"{_slug(key)}_spectrum", f"{key}: {curve.what}", plot=True)


def _edits_section(page: _Page, store: Store, *, per_method: int, samples: int,
                   alphas: str, units: str, device: str, progress: bool) -> set[str]:
    """Edit grids of the strongest directions, each with its re-scoring; returns the tables shown here."""
    from engine.methods.editing import edit, edit_grid, parse_alphas, rescore_table_name, split_direction_key
    from engine.progress import progress_bar

    targets = strongest_directions(store, per_method)
    if not targets:
        return set()
    steps = ", ".join(f"{a:g}" for a in parse_alphas(alphas))
    unit_text = ("σ, the standard deviation of the stored codes along that direction (so a step means the same "
                 "in z, w and W+)" if units == "sigma" else "raw units of the direction's space")
    page.add(f"<h2>Edits</h2><p>The {len(targets)} strongest directions (InterFaceGAN: best validation "
             f"accuracy; SeFa, GANSpace, LatentCLR: first {per_method} rows). Rows are samples; columns move along the "
             f"direction by α = {steps} in {unit_text}. Beside each grid, when <code>edit --rescore</code> "
             f"was run on it, the mean change of the attributes that change most, in units of each "
             f"attribute's std in the store.</p>")
    generator, failure = _generator(store, device)
    if failure:
        page.add(f"<p class='note'>Edit grids skipped: {failure}.</p>")
    tables = set(store.tables())
    shown: set[str] = set()
    note = None
    with progress_bar(total=len(targets), desc="report edits", unit="grids", enabled=progress) as bar:
        for key, caption in targets:
            parts = []
            if generator is not None:
                result = edit(store, key, alphas=alphas, units=units, samples=samples, seed=0,
                              generator=generator, device=device)
                note = result.get("note", note)
                parts.append(page.figure(edit_grid(result), _slug(key) + "_edit",
                                         f"σ = {result['sigma']:.3g} in {result['space']}"))
            table = rescore_table_name(*split_direction_key(key))
            if table in tables:
                parts.append(_rescore_figure(page, store, table))
                shown.add(table)
            page.add(f"<h3>{html.escape(caption)}</h3><div class='row'>{''.join(parts)}</div>")
            if table in shown:
                page.add(_rescore_table(store, table))
            bar.update(1)
    if note:
        page.add(f"<p class='note'>{html.escape(note[0].upper() + note[1:])}.</p>")
    return shown


def _inversion_section(page: _Page, store: Store, *, samples: int, alphas: str, units: str, device: str,
                       direction_from: str | os.PathLike | None, per_method: int, progress: bool) -> int:
    """An inverted store's rows: error statistics, then targets | reconstructions (best, median and worst rows
    first), then edits of the first rows along the directions they were, or are to be, edited with. Returns the
    number of edit grids shown."""
    from engine.methods.inversion import error_summary

    record = store.meta.get("inversion") or {}
    settings = record.get("settings") or {}
    summary = error_summary(store)
    page.add(f"<h2>Inversion</h2><p>{store.n} images ({html.escape(str((record.get('images') or {}).get('kind')))}) "
             f"inverted into {html.escape(str(settings.get('space')))} with {settings.get('steps')} Adam steps and "
             f"{settings.get('restarts')} restart(s) per image"
             f"{', feature loss ' + html.escape(str(settings['feature_loss'])) if settings.get('feature_loss') else ''}"
             f"{_noise_sentence(store)}. The error is the pixel MSE of the reconstruction (images in [-1, 1]).</p>")
    if summary.get("rows"):
        page.add(_table([[summary["rows"], summary["mean"], summary["median"], summary["max"], summary["psnr_db"]]],
                        ["rows", "mean MSE", "median MSE", "max MSE", "PSNR of the mean (dB)"]))
    G, failure = _generator(store, device)
    if failure:
        page.add(f"<p class='note'>Reconstructions and edits skipped: {failure}.</p>")
        return 0
    rows = _shown_rows(store, samples)
    if rows.size:
        page.add(_reconstruction_figure(page, store, rows, G, device))
    keys = _inversion_edits(store, direction_from, per_method)
    return _inversion_edit_grids(page, store, G, keys, samples=samples, alphas=alphas, units=units, device=device,
                                 progress=progress)


def _inversion_edit_grids(page: _Page, store: Store, G: Any, keys: list[tuple[str, str]], *, samples: int,
                          alphas: str, units: str, device: str, progress: bool) -> int:
    """One grid per (direction, store it comes from) in ``keys``, editing the first stored rows, under a
    progress bar as the report's other edits. Returns the number of grids shown."""
    from engine.progress import progress_bar

    shown = 0
    with progress_bar(total=len(keys), desc="report inversion edits", unit="grids",
                      enabled=progress and bool(keys)) as bar:
        for key, other in keys:
            shown += _inversion_edit_grid(page, store, G, key, other, samples=min(samples, store.n), alphas=alphas,
                                          units=units, device=device)
            bar.update(1)
    return shown


def _inversion_edit_grid(page: _Page, store: Store, G: Any, key: str, other: str, *, samples: int, alphas: str,
                         units: str, device: str) -> bool:
    """The grid of the first ``samples`` stored rows edited along ``key`` from store ``other``; a direction that
    cannot be edited (its store gone, a bad direction, maps that do not fit) is a note instead, not the end of
    the report. Returns whether the grid was shown."""
    from engine.methods.editing import edit, edit_grid

    unreadable = _unopenable(other)
    if unreadable:
        page.add(f"<p class='note'>The edit along {html.escape(key)} is skipped: its directions' store "
                 f"{html.escape(other)} cannot be opened ({html.escape(unreadable)}).</p>")
        return False
    try:
        result = edit(store, key, alphas=alphas, units=units, samples=samples, stored=True, direction_from=other,
                      generator=G, device=device)
    except ValueError as exc:                     # StoreError too: e.g. noise maps that do not fit the generator
        page.add(f"<p class='note'>The edit along {html.escape(key)} is skipped: {html.escape(str(exc))}.</p>")
        return False
    page.add(f"<h3>{html.escape(key)} (from {html.escape(str(other))})</h3>" + page.figure(
        edit_grid(result), "inversion_" + _slug(key) + "_edit",
        f"the first {samples} inverted rows; σ = {result['sigma']:.3g} in {result['space']}"))
    return True


def _noise_sentence(store: Store) -> str:
    """The inversion paragraph's words on the per-image noise maps, for a store that holds them (else '')."""
    layers = store.noise_layers()
    if not layers:
        return ""
    return (f", optimising a noise map per image on {len(layers)} noise layers too (every image below is rendered "
            "with its row's maps)")


def _unopenable(path: str) -> str | None:
    """Why the store at ``path`` cannot be opened (moved, deleted, unreachable), else None."""
    try:
        Store.open(path)
    except (StoreError, OSError) as exc:
        return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return None


def _shown_rows(store: Store, samples: int) -> np.ndarray:
    """Committed rows to show: the best, the median and the worst by error, then the first ones, up to ``samples``."""
    committed = store.progress()
    errors = np.asarray(store.array("inversion/error")[:], np.float64)   # (n,) floats: small beside the images
    done = np.flatnonzero(committed[np.arange(store.n) // store.chunk])
    if not done.size:
        return done
    order = done[np.argsort(errors[done], kind="stable")]
    picks = [order[0], order[len(order) // 2], order[-1], *done]
    return np.array(list(dict.fromkeys(int(p) for p in picks))[:samples])


def reconstructions(store: Store, rows: np.ndarray, G: Any, device: str = "cpu") -> Any:
    """The images (len(rows), C, H, W) an inverted store's ``rows`` re-generate: their codes through ``G``, with
    the rows' stored noise maps where the store holds them (``engine.noise_maps``), so that their pixel MSE to the
    targets is the stored ``inversion/error``. StoreError when the maps do not fit ``G``'s noise inputs."""
    import torch

    from engine.models.base import synthesize
    from engine.noise_maps import stored_noise_maps
    from engine.spaces import LatentSpace, synthesis_input

    space = store.spaces[0]
    maps = stored_noise_maps(store, G, rows, device)
    codes = np.asarray(store.latent_array(space).get_orthogonal_selection((rows,)), np.float32)
    with torch.inference_mode():
        x = torch.from_numpy(codes.reshape(len(rows), -1)).to(device)
        return synthesize(G, synthesis_input(G, x, LatentSpace(space)), noise_maps=maps).float().cpu()


def _reconstruction_figure(page: _Page, store: Store, rows: np.ndarray, G: Any, device: str) -> str:
    """Targets | reconstructions | differences of ``rows`` (reconstructions alone, with a note, when the targets
    were not kept), as HTML."""
    import torch

    from engine.plots import image_grid

    try:
        images = reconstructions(store, rows, G, device)
    except StoreError as exc:
        return f"<p class='note'>Reconstructions skipped: {html.escape(str(exc))}.</p>"
    columns, labels = [images], ["inverted"]
    if "targets" in store.group["inversion"]:
        targets = torch.from_numpy(np.asarray(store.array("inversion/targets").get_orthogonal_selection((rows,))))
        columns, labels = [targets, images, (images - targets).abs() * 2 - 1], ["target", "inverted", "|diff|"]
    grid = image_grid(torch.stack(columns, dim=1), scale=max(1, 64 // images.shape[-1]), col_labels=labels)
    names = store.array("inversion/files").get_orthogonal_selection((rows,))
    errors = store.array("inversion/error").get_orthogonal_selection((rows,))
    caption = "; ".join(f"{name}: MSE {error:.3g}" for name, error in zip(names, errors))
    figure = page.figure(grid, "inversion_reconstructions", f"rows (best, median, worst, first): {caption}")
    if len(columns) == 1:
        figure += ("<p class='muted'>Targets not kept: invert with <code>--keep-images</code> to see them beside "
                   "the reconstructions.</p>")
    return figure


def _inversion_edits(store: Store, direction_from: str | os.PathLike | None,
                     per_method: int) -> list[tuple[str, str]]:
    """(direction key, store it comes from): those ``edit --rescore --direction-from`` recorded, else the
    strongest of ``direction_from``."""
    found = []
    for table in store.tables():
        attrs = store.read_table(table)[1]
        if attrs.get("direction_from"):
            found.append((rescore_key(attrs), str(attrs["direction_from"])))
    if direction_from is not None:
        other = Store.open(str(direction_from))
        found += [(key, other.path) for key, _ in strongest_directions(other, per_method)
                  if _editable(store, other.read_direction(key.split(":")[0])[1].get("space"))]
    return list(dict.fromkeys(found))


def _editable(store: Store, space: str | None) -> bool:
    """Whether ``edit --stored`` can move this store's rows along a direction in ``space``: any space when it
    has z codes, else its own spaces (and wp from w codes)."""
    return "z" in store.spaces or space in store.spaces or (space == "wp" and "w" in store.spaces)


def rescore_key(attrs: dict[str, Any]) -> str:
    """The direction of a re-scoring table as ``edit`` takes it ('METHOD/NAME' or 'METHOD/NAME:ROW')."""
    row = int(attrs.get("row") or 0)
    return attrs["direction"] + (f":{row}" if row else "")


def _rescore_figure(page: _Page, store: Store, table: str) -> str:
    from engine.methods.editing import rescore_label, rescore_plot

    values, attrs = store.read_table(table)
    caption = f"tables/{table}: re-scoring along {rescore_label(attrs)} ({attrs.get('samples', '?')} samples)"
    return page.figure(rescore_plot(values, attrs, list(attrs["cols"])), table, caption, plot=True)


def _rescore_table(store: Store, table: str) -> str:
    """One row per attribute (most changed first), one column per α: fits the page whatever the attribute count."""
    from engine.methods.editing import alpha_label, attribute_spread, exact_zero, strongest_changes

    values, attrs = store.read_table(table)
    units = attrs.get("units", "raw")
    spread = attribute_spread(attrs)
    order = strongest_changes(values, spread)
    size = np.nanmax(np.abs(values), axis=0, initial=0.0) / np.where(spread > 0, spread, np.nan)
    rows = [[attrs["cols"][j], float(spread[j]), *map(float, values[:, j]), float(size[j])] for j in order]
    alphas = [f"α = {alpha_label(a, units)}" for a in exact_zero(attrs["alphas"])]
    headers = ["attribute", "std in store", *alphas, "max |Δ| / std"]
    return (f"<details><summary>tables/{html.escape(table)}: mean score change per α, all {len(rows)} "
            f"attributes, most changed first</summary>{_table(rows, headers)}</details>")


def _attribute_order(store: Store, labels: list[str], names: list[str] | None = None) -> list[int]:
    """Positions of ``labels`` in the store's attribute order (by ``names``, the attribute each label stands
    for); labels that are no attribute keep their order after the rest."""
    names = names or labels
    rank = {a: i for i, a in enumerate(store.attributes)}
    return sorted(range(len(labels)), key=lambda i: (rank.get(names[i], len(rank)), i))


def _tables_section(page: _Page, store: Store, shown: set[str]) -> None:
    from engine.plots import heatmap

    names = [n for n in store.tables() if n not in shown]
    if not names:
        return
    page.add("<h2>Tables</h2>")
    for name in names:
        values, attrs = store.read_table(name)
        rows, cols = list(attrs["rows"]), list(attrs["cols"])
        if name.startswith("rescore_"):
            page.add(f"<h3>{html.escape(name)}</h3>" + _rescore_figure(page, store, name)
                     + _rescore_table(store, name))
        elif name.startswith("match_"):
            page.add(f"<h3>{html.escape(name)}</h3>" + _match_table(store, values, attrs))
        else:
            if rows == cols:                       # square tables of attributes: one order on every heatmap
                order = _attribute_order(store, rows, _attribute_names(store, rows))
                values, rows = values[np.ix_(order, order)], [rows[i] for i in order]
                cols = rows
            title = name.replace("_", " ")
            page.add(f"<h3>{html.escape(name)}</h3>" + page.figure(heatmap(values, rows, cols, title=title), name,
                                                                   _HEATMAP_CAPTIONS.get(name, title), wide=True))


_HEATMAP_CAPTIONS = {
    "boundary_cosine": "cosine between the InterFaceGAN boundaries' normals (attributes in the store's order)",
    "attribute_pearson": "Pearson correlation of the stored scores (attributes in the store's order)",
}


def _attribute_names(store: Store, labels: list[str]) -> list[str]:
    """The attribute each row label stands for: the attribute a boundary of that name records, else the label."""
    boundaries = set(store.directions())
    return [dict(store.array(f"directions/interfacegan/{label}").attrs).get("attribute") or label
            if f"interfacegan/{label}" in boundaries else label for label in labels]


def _match_table(store: Store, values: np.ndarray, attrs: dict[str, Any]) -> str:
    """Method matching (SeFa Table 1) with both sides named as ``edit --direction`` takes them; boundaries in
    the store's attribute order, as on the heatmaps."""
    reference, candidates = attrs.get("reference", "?"), attrs.get("candidates", "?")
    labels = list(attrs["rows"])
    if reference == "interfacegan":
        order = _attribute_order(store, labels, _attribute_names(store, labels))
        labels, values = [labels[i] for i in order], values[order]

    def named(label: str) -> str:
        match = re.fullmatch(r"(.+)\[(\d+)\]", label)
        return f"{reference}/{match.group(1)}:{match.group(2)}" if match else f"{reference}/{label}"

    rows = [[named(r), f"{candidates}:{int(v[0])}", float(v[1])] for r, v in zip(labels, values)]
    return (f"<p class='muted'>For each {html.escape(reference)} direction, the closest of "
            f"{html.escape(candidates)}'s rows and its cosine distance (SeFa Table 1).</p>"
            + _table(rows, [f"{reference} direction", f"closest {candidates} row", "cosine distance"]))


def _slug(key: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in key)
