"""Feature taps (engine.taps) and ``latent-engine layers``: a layer's output per code, the pass stopped after it."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import engine
from engine.cli import cli
from engine.taps import check_layer, features, layer_shapes


@pytest.fixture(scope="module")
def digits():
    return engine.load_generator("digits")


def test_layer_shapes_lists_every_module_with_its_output_per_code(digits):
    shapes = dict(layer_shapes(digits))
    assert shapes["fc"] == (1024,) and shapes["up1"] == (32, 8, 8) and shapes["to_image"] == (1, 16, 16)
    names = [name for name, _ in layer_shapes(digits)]
    assert names.index("fc") < names.index("up1") < names.index("to_image")


def test_features_are_the_layers_output_flattened_and_the_pass_stops_after_it(digits):
    z = torch.randn(5, digits.z_dim, generator=torch.Generator().manual_seed(0))
    seen, later = [], []
    handles = [dict(digits.named_modules())["up1"].register_forward_hook(lambda m, a, out: seen.append(out)),
               dict(digits.named_modules())["to_image"].register_forward_hook(lambda m, a, out: later.append(1))]
    try:
        with torch.no_grad():
            digits.synthesis(digits.mapping(z))           # the whole pass, for the reference output
            assert later == [1]
            tapped = features(digits, z, "up1")
    finally:
        for handle in handles:
            handle.remove()
    torch.testing.assert_close(tapped, seen[0].reshape(5, -1))
    assert later == [1]                                    # to_image did not run for the tapped pass
    assert tapped.shape == (5, 32 * 8 * 8)


def test_an_unknown_layer_names_the_closest_ones(digits):
    with pytest.raises(ValueError, match=r"has no layer 'up_1'; did you mean up1.*latent-engine layers"):
        check_layer(digits, "up_1")


def test_a_class_conditional_generator_is_tapped_with_its_labels(tmp_path):
    from tests.biggan_checkpoints import write_biggan_folder

    folder = write_biggan_folder(tmp_path / "biggan", seed=2)
    G = engine.load_generator(f"biggan:{folder},class=1")
    shapes = dict(layer_shapes(G))
    assert shapes, "no layers found"
    name = next(n for n, s in shapes.items() if len(s) == 3)
    z = torch.from_numpy(np.random.default_rng(0).standard_normal((2, G.z_dim)).astype(np.float32))
    with torch.no_grad():
        one = features(G, z, name, torch.tensor([1, 1]))
        other = features(G, z, name, torch.tensor([3, 3]))
    assert one.shape == (2, int(np.prod(shapes[name])))
    assert not torch.equal(one, other)                     # the class reaches the tapped layer


def test_layers_command_prints_and_gives_json(digits):
    runner = CliRunner()
    table = runner.invoke(cli, ["layers", "-g", "digits", "--contains", "up"])
    assert table.exit_code == 0 and "up1" in table.output and "fc" not in table.output
    payload = json.loads(runner.invoke(cli, ["layers", "-g", "digits", "--json"]).output)
    assert {"name": "up1", "shape": [32, 8, 8], "size": 2048} in payload["layers"]
    bad = runner.invoke(cli, ["layers", "-g", "nosuch"])
    assert bad.exit_code == 1 and len(bad.output.strip().splitlines()) == 1
