"""``layers``: the generator's modules and their output shapes, to pick a ``--layer`` to tap."""
from __future__ import annotations

import click

from engine.cli.options import echo_json, echo_table, json_option


@click.command(epilog="""\b
Examples:
  latent-engine layers --generator digits
  latent-engine layers --generator stylegan2:stylegan2-ffhq-config-f.pt --contains conv
  latent-engine layers --generator biggan:biggan-deep-256,class=207 --json
""")
@click.option("--generator", "-g", required=True, help="Generator SPEC (as for sample).")
@click.option("--contains", default=None, help="Only the layers whose name contains this text.")
@click.option("--device", default="cpu", help="cpu, cuda or cuda:<index>.")
@json_option
def layers(generator: str, contains: str | None, device: str, as_json: bool) -> None:
    """List every module of a generator with the shape it outputs for one code, in the order they finish.

    The names are torch's named_modules() names: what a feature tap (engine.taps) takes as a layer.
    """
    from engine.devices import resolve_device
    from engine.models.registry import load_generator
    from engine.taps import layer_shapes

    G = load_generator(generator, resolve_device(device))
    found = [(name, shape) for name, shape in layer_shapes(G) if contains is None or contains in name]
    if as_json:
        echo_json({"generator": getattr(G, "spec", generator),
                   "layers": [{"name": name, "shape": list(shape), "size": int(_size(shape))}
                              for name, shape in found]})
        return
    echo_table([[name, "x".join(map(str, shape)) or "scalar", _size(shape)] for name, shape in found],
               ["layer", "output shape (per code)", "features"])


def _size(shape: tuple[int, ...]) -> int:
    size = 1
    for dim in shape:
        size *= int(dim)
    return size


COMMANDS = [layers]
