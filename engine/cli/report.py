"""``report``: one self-contained HTML page a person can look at."""
from __future__ import annotations

import click


@click.command(epilog="""\b
Examples:
  latent-engine report run.zarr                 # writes run.report/index.html beside the store
  latent-engine report run.zarr --out site/ --samples 8
""")
@click.argument("store", type=str)
@click.option("--out", type=click.Path(file_okay=False), default=None, help="Folder for index.html and images (default <store>.report).")
@click.option("--per-method", type=click.IntRange(min=0), default=4, help="Directions per method to show as edit grids.")
@click.option("--samples", type=click.IntRange(min=1), default=5, help="Rows (samples) per edit grid.")
@click.option("--alphas", default="-3,3,7", show_default=True, help="START,STOP,STEPS of the edit grids' columns, in --units.")
@click.option("--units", type=click.Choice(["sigma", "raw"]), default="sigma", show_default=True,
              help="Unit of α, as in edit: sigma = std of the store's codes along the direction; raw = step length.")
@click.option("--device", default="cpu", help="Device that renders the edit grids.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def report(store: str, out: str | None, per_method: int, samples: int, alphas: str, units: str, device: str,
           quiet: bool) -> None:
    """Write a self-contained HTML report: edit grids, re-scoring curves, heatmaps, spectra, run metadata."""
    from engine.reporting import report as write_report

    click.echo(write_report(store, out, per_method=per_method, samples=samples, alphas=alphas, units=units,
                            device=device, progress=not quiet))


COMMANDS = [report]
