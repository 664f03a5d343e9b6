"""``report``: one self-contained HTML page a person can look at."""
from __future__ import annotations

import click

from engine.methods._common import device_option


@click.command(epilog="""\b
Examples:
  latent-engine report run.zarr                 # writes run.report/index.html beside the store
  latent-engine report run.zarr --out site/ --samples 8
  latent-engine report inverted.zarr --direction-from run.zarr   # edits of inverted codes along run.zarr's directions
""")
@click.argument("store", type=str)
@click.option("--out", type=click.Path(file_okay=False), default=None, help="Folder for index.html and images (default <store>.report).")
@click.option("--per-method", type=click.IntRange(min=0), default=4, help="Directions per method to show as edit grids.")
@click.option("--samples", type=click.IntRange(min=1), default=5, help="Rows (samples) per edit grid.")
@click.option("--alphas", default="-3,3,7", show_default=True, help="START,STOP,STEPS of the edit grids' columns, in --units.")
@click.option("--units", type=click.Choice(["sigma", "raw"]), default="sigma", show_default=True,
              help="Unit of α, as in edit: sigma = std of the store's codes along the direction; raw = step length.")
@click.option("--direction-from", default=None,
              help="Also edit an inverted store's rows along the strongest directions of this sampled store of the "
                   "same generator (beside those it was edited with: edit --rescore --direction-from).")
@device_option()
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def report(store: str, out: str | None, per_method: int, samples: int, alphas: str, units: str,
           direction_from: str | None, device: str, quiet: bool) -> None:
    """Write a self-contained HTML report: edit grids, re-scoring curves, heatmaps, spectra, run metadata."""
    from engine.devices import resolve_device
    from engine.reporting import report as write_report

    device = str(resolve_device(device))  # a bad choice is a one-line ValueError naming it

    click.echo(write_report(store, out, per_method=per_method, samples=samples, alphas=alphas, units=units,
                            device=device, progress=not quiet, direction_from=direction_from))


COMMANDS = [report]
