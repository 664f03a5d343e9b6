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
from pathlib import Path
from typing import Any

import numpy as np

from engine.store import Store
from engine.summary import summarize

_STYLE = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222;padding:0 1em}
h1{margin-bottom:.2em} h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:.5em 0;font-size:.9em} td,th{border:1px solid #ddd;padding:.25em .6em}
th{background:#f4f4f4;text-align:left} td.num{text-align:right;font-variant-numeric:tabular-nums}
figure{display:inline-block;margin:.5em 1em .5em 0;vertical-align:top} figcaption{font-size:.85em;color:#555}
img{image-rendering:pixelated;max-width:100%} img.plot{max-width:460px;image-rendering:auto} img.wide{max-width:820px;image-rendering:auto} .note{background:#fff4e5;border-left:4px solid #f0a030;padding:.5em}
.muted{color:#777;font-size:.9em}
"""


def default_out(store_path: str) -> Path:
    """``run.zarr`` -> ``run.report/`` beside it."""
    base = Path(store_path.rstrip("/"))
    return base.with_name(base.stem + ".report")


def _table(rows: list[list[Any]], headers: list[str]) -> str:
    def cell(v: Any) -> str:
        if isinstance(v, (float, np.floating)):
            return f'<td class="num">{v:.4g}</td>'
        if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
            return f'<td class="num">{v}</td>'
        return f"<td>{html.escape(str(v))}</td>"
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(cell(v) for v in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


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


def _edit_targets(store: Store, per_method: int) -> list[tuple[str, str]]:
    """(direction key with row, caption) for the strongest directions of each method."""
    targets: list[tuple[str, str]] = []
    boundaries = []
    for key in store.directions():
        method, name = key.split("/", 1)
        array = store.array(f"directions/{key}")
        attrs = dict(array.attrs)
        if method == "interfacegan":
            boundaries.append((attrs.get("val_accuracy") or attrs.get("train_accuracy") or 0.0, key))
        else:
            label = {"sefa": "eigenvector", "ganspace": "component"}.get(method, "row")
            for row in range(min(per_method, array.shape[0])):
                targets.append((f"{key}:{row}", f"{key} {label} {row}"))
    for accuracy, key in sorted(boundaries, reverse=True)[:per_method]:
        targets.append((key, f"{key} (val acc {accuracy:.3f})"))
    return targets


def report(store: str | os.PathLike | Store, out: str | os.PathLike | None = None, *, per_method: int = 4,
           samples: int = 5, alphas: str = "-3,3,7", device: str = "cpu", progress: bool = True) -> Path:
    """Write the HTML report of ``store`` into ``out`` (default ``<store>.report/``); returns index.html."""
    from engine.plots import heatmap, image_grid, line_plot
    from engine.progress import progress_bar

    reader = store if isinstance(store, Store) else Store.open(store)
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
                ["sampling speed", f"{summary['samples_per_s']} samples/s on {summary['device']}"]]
    page.add("<h2>Run</h2>" + _table(run_rows, ["run", "value"]))
    timings = meta.get("timings") or {}
    if timings:
        page.add("<h3>Timings</h3>" + _table([[k, float(v)] for k, v in timings.items()], ["stage", "seconds"]))
    if summary["attributes"]:
        page.add("<h2>Attributes</h2>" + _table(
            [[a, s["mean"], s["std"], s["nan"]] for a, s in summary["attributes"].items()],
            ["attribute", "mean", "std", "NaN scores"]))

    _directions_section(page, reader, line_plot)
    _edits_section(page, reader, image_grid, progress_bar, per_method=per_method, samples=samples,
                   alphas=alphas, device=device, progress=progress)
    _tables_section(page, reader, heatmap, line_plot)
    return page.write(f"latent-engine report: {Path(reader.path).name}")


def _directions_section(page: _Page, store: Store, line_plot: Any) -> None:
    keys = store.directions()
    page.add("<h2>Directions</h2>")
    if not keys:
        page.add("<p class='note'>No directions yet: run <code>boundaries</code>, <code>sefa</code> or "
                 "<code>pca</code> on this store.</p>")
        return
    rows = []
    figures = []
    for key in keys:
        array = store.array(f"directions/{key}")
        attrs = dict(array.attrs)
        metric = ""
        if "val_accuracy" in attrs and attrs["val_accuracy"] is not None:
            metric = f"val acc {attrs['val_accuracy']:.3f}, train acc {attrs.get('train_accuracy', float('nan')):.3f}"
        elif "explained_variance_ratio" in attrs:
            ratio = np.asarray(attrs["explained_variance_ratio"], float)
            metric = f"top-{ratio.size} explain {ratio.sum():.1%} of the variance"
            figures.append(_spectrum(page, line_plot, key, ratio, "component", "explained variance ratio",
                                     "GANSpace", "explained variance per component"))
        elif "eigenvalues" in attrs:
            values = np.asarray(attrs["eigenvalues"], float)
            metric = f"eigenvalues {', '.join(f'{v:.3g}' for v in values[:4])}…"
            figures.append(_spectrum(page, line_plot, key, values, "eigenvector", "eigenvalue of AᵀA", "SeFa",
                                     "eigenvalue spectrum (descending)"))
        elif "parents" in attrs:
            metric = f"conditioned on {attrs['parents']}"
        rows.append([key, "×".join(map(str, array.shape)), attrs.get("space", ""), metric])
    page.add(_table(rows, ["direction", "shape", "space", "metrics"]) + "".join(figures))


def _spectrum(page: _Page, line_plot: Any, key: str, values: np.ndarray, xlabel: str, ylabel: str, method: str,
              what: str) -> str:
    """A per-direction curve (eigenvalues, explained variance) as a figure of the page."""
    plot = line_plot(np.arange(values.size), {key: values}, xlabel=xlabel, ylabel=ylabel, title=f"{method} {key}")
    return page.figure(plot, f"{_slug(key)}_spectrum", f"{key}: {what}", plot=True)


def _edits_section(page: _Page, store: Store, image_grid: Any, progress_bar: Any, *, per_method: int,
                   samples: int, alphas: str, device: str, progress: bool) -> None:
    from engine.methods.editing import edit, parse_alphas

    targets = _edit_targets(store, per_method)
    if not targets:
        return
    page.add(f"<h2>Edits</h2><p>Rows are samples, columns move along the direction by α = "
             f"{', '.join(f'{a:g}' for a in parse_alphas(alphas))} times σ, the standard deviation of the "
             f"stored codes along that direction (so a step means the same in z, w and W+).</p>")
    from engine.models.registry import load_generator
    try:
        generator = load_generator(store.meta["generator"], device)
    except (ValueError, ImportError) as exc:
        page.add(f"<p class='note'>Edit grids skipped: cannot build the generator "
                 f"{html.escape(str(store.meta.get('generator')))} ({html.escape(str(exc))}).</p>")
        return
    figures = []
    with progress_bar(total=len(targets), desc="report edits", unit="grids", enabled=progress) as bar:
        for key, caption in targets:
            sigma = direction_spread(store, key)
            scaled = ",".join(f"{v:.6g}" for v in _scaled(alphas, sigma))
            result = edit(store, key, alphas=scaled, samples=samples, seed=0, generator=generator, device=device)
            caption = f"{caption}; σ = {sigma:.3g}"
            images = result["images"]
            grid = image_grid(images, scale=max(1, 64 // images.shape[-1]))
            figures.append(page.figure(grid, _slug(key) + "_edit", caption))
            bar.update(1)
    page.add("".join(figures))


def _tables_section(page: _Page, store: Store, heatmap: Any, line_plot: Any) -> None:
    names = store.tables()
    if not names:
        return
    page.add("<h2>Tables</h2>")
    for name in names:
        values, attrs = store.read_table(name)
        rows, cols = attrs["rows"], attrs["cols"]
        if name.startswith("rescore_"):
            alphas = [float(r) for r in rows]
            strongest = np.argsort(-np.nanmax(np.abs(values), axis=0))[:6]
            plot = line_plot(alphas, {cols[j]: values[:, j] for j in strongest}, xlabel="α",
                             ylabel="mean score change", title=f"re-scoring: {attrs.get('direction', name)}")
            page.add(f"<h3>{html.escape(name)}</h3>" + page.figure(plot, name, "the six attributes that change most", plot=True)
                     + _table([[r, *map(float, v)] for r, v in zip(rows, values)], ["α", *cols]))
        elif name.startswith("match_"):
            page.add(f"<h3>{html.escape(name)}</h3><p class='muted'>For each reference direction: index of the "
                     f"best-matching candidate and its cosine distance (SeFa Table 1).</p>"
                     + _table([[r, int(v[0]), float(v[1])] for r, v in zip(rows, values)],
                              ["reference", "best index", "cosine distance"]))
        else:
            page.add(f"<h3>{html.escape(name)}</h3>" + page.figure(
                heatmap(values, rows, cols, title=name.replace("_", " ")), name, name.replace("_", " "), wide=True))


def direction_spread(store: Store, key: str) -> float:
    """σ of the stored codes projected on direction ``key`` ('METHOD/NAME[:ROW]'), from the first chunk.

    Edit steps in units of σ read the same in every space: W is often far narrower or wider than z.
    """
    from engine.methods.editing import split_direction_key

    name, row = split_direction_key(key)
    values, attrs = store.read_direction(name)
    n = values[row].astype(np.float64)
    codes = np.asarray(store.latent_array(attrs["space"])[: store.chunk], np.float64)
    if attrs["space"] == "wp":
        codes = codes[:, int(attrs["layer"])] if attrs.get("layer") is not None else codes.reshape(len(codes), -1)
    return float(np.std(codes @ (n / np.linalg.norm(n))))


def _scaled(alphas: str, sigma: float) -> tuple[float, float, int]:
    from engine.methods.editing import parse_alphas

    grid = parse_alphas(alphas)
    return grid[0] * sigma, grid[-1] * sigma, grid.size


def _slug(key: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in key)
