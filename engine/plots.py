"""Figures shared by the commands and the report: image grids, line plots, labelled heatmaps.

Every function returns a ``PIL.Image`` (save it, or embed it in HTML) and never touches a display:
matplotlib runs on its Agg backend, in a figure that is closed before returning.
"""
from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
from PIL import Image


def image_grid(images, pad: int = 2, scale: int = 1, background: float = 1.0,
               col_labels: Sequence[str] | None = None) -> Image.Image:
    """images (rows, cols, C, H, W) with values in [-1, 1] (numpy or torch; C = 1 or 3) -> one RGB image.

    ``pad`` pixels of ``background`` (in [-1, 1]) separate the cells; ``scale`` enlarges by pixel repetition
    (small generators' 16×16 images stay crisp). ``col_labels`` (one per column, e.g. the α of an edit) are
    written in a band above the cells.
    """
    array = np.asarray(images.detach().cpu() if hasattr(images, "detach") else images, dtype=np.float32)
    if array.ndim != 5 or array.shape[2] not in (1, 3):
        raise ValueError(f"image_grid needs images shaped (rows, cols, C, H, W) with C = 1 or 3; got {array.shape}")
    rows, cols, channels, h, w = array.shape
    if col_labels is not None and len(col_labels) != cols:
        raise ValueError(f"image_grid got {len(col_labels)} column labels for {cols} columns")
    if channels == 1:
        array = np.repeat(array, 3, axis=2)
    if scale > 1:
        array = array.repeat(scale, axis=3).repeat(scale, axis=4)
        h, w = h * scale, w * scale
    canvas = np.full((3, rows * (h + pad) + pad, cols * (w + pad) + pad), background, np.float32)
    for r in range(rows):
        for c in range(cols):
            top, left = pad + r * (h + pad), pad + c * (w + pad)
            canvas[:, top:top + h, left:left + w] = array[r, c]
    pixels = np.clip((canvas + 1.0) * 127.5 + 0.5, 0, 255).astype(np.uint8).transpose(1, 2, 0)
    grid = Image.fromarray(pixels, mode="RGB")
    return grid if col_labels is None else _label_columns(grid, [str(t) for t in col_labels], w, pad)


def _label_columns(grid: Image.Image, labels: list[str], cell: int, pad: int) -> Image.Image:
    """``grid`` under a white band with one centred label per column of ``cell``-pixel cells."""
    from PIL import ImageDraw

    font = _font(max(10, min(14, cell // 4)))
    boxes = [font.getbbox(t) for t in labels]
    band = max(b[3] for b in boxes) + 6
    labelled = Image.new("RGB", (grid.width, grid.height + band), "white")
    labelled.paste(grid, (0, band))
    draw = ImageDraw.Draw(labelled)
    for c, (text, box) in enumerate(zip(labels, boxes)):
        centre = pad + c * (cell + pad) + cell / 2
        draw.text((centre - (box[2] - box[0]) / 2 - box[0], 3), text, fill=(40, 40, 40), font=font)
    return labelled


def _font(size: int):
    """matplotlib's DejaVu Sans (it has σ, α, −; PIL's built-in font does not) at ``size`` pixels."""
    from pathlib import Path

    import matplotlib
    from PIL import ImageFont

    return ImageFont.truetype(str(Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"), size)


def _figure(width: float, height: float):
    import matplotlib
    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure
    return Figure(figsize=(width, height), dpi=100)


def _to_image(fig) -> Image.Image:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", bbox_inches="tight")
    buffer.seek(0)
    image = Image.open(buffer)
    image.load()
    return image.convert("RGB")


def line_plot(x: Sequence[float], series: dict[str, Sequence[float]], *, xlabel: str = "", ylabel: str = "",
              title: str = "") -> Image.Image:
    """One line per entry of ``series`` over ``x``, with a legend."""
    fig = _figure(6.0, 4.0)
    ax = fig.add_subplot(1, 1, 1)
    for label, values in series.items():
        ax.plot(list(x), list(values), marker="o", markersize=3, label=str(label))
    ax.axhline(0.0, color="0.7", linewidth=0.8)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    if series:
        ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _to_image(fig)


def heatmap(values, rows: Sequence[str], cols: Sequence[str], *, title: str = "", vmin: float = -1.0,
            vmax: float = 1.0, cmap: str = "RdBu_r", annotate: bool = True) -> Image.Image:
    """A labelled (r, c) heatmap with a colour bar; cells annotated with their values when small enough."""
    data = np.asarray(values, dtype=np.float64)
    if data.shape != (len(rows), len(cols)):
        raise ValueError(f"heatmap values {data.shape} do not match {len(rows)} rows × {len(cols)} cols")
    fig = _figure(1.2 + 0.6 * max(4, len(cols)), 1.0 + 0.5 * max(4, len(rows)))
    ax = fig.add_subplot(1, 1, 1)
    im = ax.imshow(data, vmin=vmin, vmax=vmax, cmap=cmap)
    ax.set_xticks(range(len(cols)), [str(c) for c in cols], rotation=45, ha="right")
    ax.set_yticks(range(len(rows)), [str(r) for r in rows])
    if annotate and data.size <= 400:
        for (i, j), v in np.ndenumerate(data):
            if np.isfinite(v):
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7,
                        color="white" if abs(v) > 0.6 * max(abs(vmin), abs(vmax)) else "black")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    if title:
        ax.set_title(title)
    return _to_image(fig)
