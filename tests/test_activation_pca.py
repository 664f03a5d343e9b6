"""GANSpace on a layer's activations: components of the tapped layer, regressed back to latent directions."""
from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

import engine
from engine.cli import cli
from engine.methods.activation_pca import activation_pca
from engine.methods.ganspace import pca

SPEC = "tests.models_for_tests:linear_layer_generator"


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return engine.sample(str(tmp_path_factory.mktemp("act") / "lin.zarr"), SPEC, [], n=30000, chunk=5000,
                         progress=False)


def test_regressed_directions_are_the_analytic_ones_for_a_linear_layer(store):
    result = pca(store, layer="features", k=3)
    directions = store.read_direction("ganspace/features")[0].astype(np.float64)
    G = engine.load_generator(SPEC)
    A = G.features.weight.detach().double().numpy()
    right = np.linalg.svd(A)[2][:3]                       # A's top right singular vectors, in order
    cosines = np.abs(np.sum(directions * right, axis=1))
    assert (cosines >= 0.999).all(), cosines
    ratio = np.asarray(result["explained_variance_ratio"])
    np.testing.assert_allclose(ratio, np.array([25, 9, 4]) / (25 + 9 + 4 + 1 + 0.25 + 0.0625), rtol=0.1)
    assert result["tapped_layer"] == "features" and result["space"] == "z" and result["n_rows"] == 30000


def test_a_wide_layer_is_projected_and_says_so(store):
    directions, attrs = activation_pca(store, "features", k=2, max_features=4)
    assert directions.shape == (2, 6) and attrs["projection"] == {"kind": "gaussian", "seed": 0, "features": 4}
    np.testing.assert_allclose(np.linalg.norm(directions, axis=1), 1, atol=1e-6)


def test_layer_pca_through_the_cli_and_its_refusals(store):
    runner = CliRunner()
    out = runner.invoke(cli, ["pca", store.path, "--layer", "features", "-k", "2", "--overwrite", "--json"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.output)["array"] == "layer features"
    bad = runner.invoke(cli, ["pca", store.path, "--layer", "featurs", "--overwrite"])
    assert bad.exit_code == 1 and "did you mean features" in bad.output
    mixed = runner.invoke(cli, ["pca", store.path, "--layer", "features", "--array", "latents/z", "--overwrite"])
    assert mixed.exit_code == 1 and "does not combine with --array" in mixed.output


def test_layer_pca_refuses_a_cluster_file_before_starting_it(store, tmp_path, monkeypatch):
    from engine import cluster_config

    started = []
    monkeypatch.setattr(cluster_config, "build_cluster", lambda config: started.append(config))
    (tmp_path / "local.yaml").write_text("kind: local\nworkers: 1\n")
    out = CliRunner().invoke(cli, ["pca", store.path, "--layer", "features", "--cluster", str(tmp_path / "local.yaml"),
                                   "--overwrite"])
    assert out.exit_code == 1 and "does not combine with --cluster" in out.output
    assert started == []


def test_export_to_ganspace_leaves_layer_results_out_with_a_warning(store, tmp_path):
    pca(store, layer="features", k=2, overwrite=True)
    only_layers = CliRunner().invoke(cli, ["export", store.path, "--format", "ganspace", str(tmp_path / "a")])
    assert only_layers.exit_code == 1 and "holds only layer GANSpace results (ganspace/features)" \
        in only_layers.output
    pca(store, k=3, overwrite=True)                                     # GANSpace on the stored codes too
    with pytest.warns(UserWarning, match="leaves out ganspace/features"):
        written = engine.export(store.path, tmp_path / "b", format="ganspace")
    assert [p.rsplit("/", 1)[-1] for p in written] == ["z_ganspace.npz"]
