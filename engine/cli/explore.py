"""``explore``: a local web page with sliders along every stored direction."""
from __future__ import annotations

import click


@click.command(epilog="""\b
Examples:
  latent-engine explore run.zarr                         # then open http://127.0.0.1:8765/
  latent-engine explore run.zarr --port 9000 --device cuda
  latent-engine explore inverted.zarr --direction-from run.zarr   # an inverted store, run.zarr's directions
  latent-engine explore run.zarr --host 0.0.0.0 --allow-remote   # reachable from other machines
""")
@click.argument("store")
@click.option("--generator", "-g", default=None, help="Generator SPEC (default: the one the store was sampled with).")
@click.option("--port", type=click.IntRange(0, 65535), default=8765, help="Port to listen on (0: any free port).")
@click.option("--host", default="127.0.0.1", help="Address to bind; anything but this machine needs --allow-remote.")
@click.option("--allow-remote", is_flag=True, help="Allow a --host other machines can reach (no authentication).")
@click.option("--direction-from", default=None, metavar="OTHER.zarr",
              help="Take the directions, their σ and the predictors from another store of the same generator "
                   "(e.g. a sampled one, to explore an inverted store).")
@click.option("--device", default="auto", help="auto, cpu, cuda or cuda:<index> for the generator.")
def explore(store: str, generator: str | None, port: int, host: str, allow_remote: bool, direction_from: str | None,
            device: str) -> None:
    """Serve a local web page with sliders along every stored direction (read-only on the store).

    The page lists the directions grouped by method with their metrics; pick up to four, move their sliders
    (in σ units, with a layer range for w-sized directions) and the grid of the store's samples re-renders,
    with the predictors' re-scored attributes beside it. An inverted store holds no directions: give
    --direction-from a sampled store of the same generator. Stop with Ctrl-C.
    """
    from engine.devices import resolve_device
    from engine.explore import check_host, serve

    check_host(host, allow_remote)
    resolved = str(resolve_device(device))

    def ready(url: str) -> None:
        click.echo(f"explore {store} at {url}  (generator on {resolved}; Ctrl-C stops)", color=False)

    try:
        serve(store, generator=generator, host=host, port=port, device=resolved, allow_remote=allow_remote,
              on_ready=ready, direction_from=direction_from)
    except KeyboardInterrupt:
        click.echo("stopped")


COMMANDS = [explore]
