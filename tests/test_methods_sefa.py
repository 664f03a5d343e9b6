"""SeFa: planted directions found in order, the paper's invariants, batched selections, checkpoint layouts."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import engine
from engine.methods.sefa import parse_layers, sefa
from engine.store import Store
from tests.conftest import PLANTED_SMALL, run_cli


@pytest.fixture(scope="module")
def planted():
    return engine.load_generator(PLANTED_SMALL)


def _normalised_stack(G, layers):
    A = np.concatenate([G.latent_weights()[i][1].double().numpy() for i in layers])
    return A / np.linalg.norm(A, axis=1, keepdims=True)


def test_sefa_finds_the_planted_directions_in_order(planted):
    result = sefa(generator=planted, k=5)["layers_all"]
    truth = planted.truth.sefa_directions_w
    cos = np.abs(result["directions"].astype(np.float64) @ truth.T)
    assert np.all(np.diag(cos) > 0.97), np.round(cos, 3)
    assert np.all(np.argmax(cos, axis=1) == np.arange(len(truth)))
    assert result["space"] == "w" and result["layers"] == [0, 1, 2, 3]
    assert np.all(np.diff(result["eigenvalues"]) < 0)


def test_sefa_matches_the_sorted_reference_and_the_papers_invariants(planted):
    result = sefa(generator=planted, layers="1-2", k=8)["layers_1-2"]
    A = _normalised_stack(planted, [1, 2])
    values, vectors = np.linalg.eigh(A.T @ A)
    order = np.argsort(values)[::-1]                      # the reference code's eig, sorted as it should be
    ref_vals, ref_vecs = values[order][:8], vectors[:, order][:, :8].T
    np.testing.assert_allclose(result["eigenvalues"], ref_vals, rtol=1e-6)
    np.testing.assert_allclose(np.abs(np.sum(result["directions"] * ref_vecs, axis=1)), 1.0, atol=1e-5)
    V = result["directions"].astype(np.float64)
    np.testing.assert_allclose(V @ V.T, np.eye(8), atol=1e-5)                # mutually orthogonal
    images = A @ V.T                                                            # Eq. 9: A n_i ⟂ A n_j
    gram = images.T @ images
    assert np.max(np.abs(gram - np.diag(np.diag(gram)))) < 1e-3 * gram.max()


def test_many_selections_in_one_batch_equal_separate_runs(planted):
    together = sefa(generator=planted, layers=["all", "0-1", "2,3"], k=4)
    assert list(together) == ["layers_all", "layers_0-1", "layers_2_3"]
    for spec, name in (("0-1", "layers_0-1"), ("2,3", "layers_2_3")):
        alone = sefa(generator=planted, layers=spec, k=4)[name]
        np.testing.assert_allclose(together[name]["directions"], alone["directions"], atol=1e-5)
        assert together[name]["layers"] == parse_layers(spec, 4)


def test_parse_layers():
    assert parse_layers("all", 3) == [0, 1, 2]
    assert parse_layers("0-3", 8) == [0, 1, 2, 3]
    assert parse_layers("0,2,5", 8) == [0, 2, 5]
    assert parse_layers("0-1,4", 8) == [0, 1, 4]
    for bad in ("3-1", "x", "9"):
        with pytest.raises(ValueError):
            parse_layers(bad, 8)


def _stylegan2_state(d=512, layers=4, seed=0, torgb=True):
    """A StyleGAN2 g_ema state dict (rosinality's key names and shapes) with planted top directions."""
    g = torch.Generator().manual_seed(seed)
    basis = torch.linalg.qr(torch.randn(d, 3, generator=g, dtype=torch.float64))[0].T      # (3, d)
    weights = torch.tensor([6.0, 4.0, 2.5], dtype=torch.float64)
    state = {}

    def modulation(out):
        rows = (torch.randn(out, 3, generator=g, dtype=torch.float64) * weights) @ basis
        return (rows + torch.randn(out, d, generator=g, dtype=torch.float64) / d ** 0.5).float()

    state["conv1.conv.modulation.weight"] = modulation(512)
    state["conv1.conv.modulation.bias"] = torch.ones(512)
    state["conv1.conv.weight"] = torch.zeros(1, 8, 8, 3, 3)              # other tensors: never read
    for i in range(layers - 1):
        state[f"convs.{i}.conv.modulation.weight"] = modulation(256)
    if torgb:
        state["to_rgb1.conv.modulation.weight"] = torch.randn(512, d, generator=g)
        state["to_rgbs.0.conv.modulation.weight"] = torch.randn(256, d, generator=g)
    state["style.1.weight"] = torch.randn(d, d, generator=g)           # the mapping network: never read
    return state, basis.float()


def test_sefa_reads_a_stylegan2_g_ema_checkpoint(tmp_path):
    state, basis = _stylegan2_state()
    torch.save({"g_ema": state, "latent_avg": torch.zeros(512)}, tmp_path / "wrapped.pt")
    torch.save(state, tmp_path / "bare.pt")
    only = {k: v for k, v in state.items() if k.endswith("modulation.weight")}
    torch.save(only, tmp_path / "only.pt")
    store = tmp_path / "sefa.zarr"
    wrapped = sefa(checkpoint=tmp_path / "wrapped.pt", family="stylegan2", k=3, store=store)["layers_all"]
    bare = sefa(checkpoint=tmp_path / "bare.pt", family="stylegan2", k=3)["layers_all"]
    just = sefa(checkpoint=tmp_path / "only.pt", family="stylegan2", k=3)["layers_all"]
    np.testing.assert_allclose(wrapped["directions"], bare["directions"])
    np.testing.assert_allclose(wrapped["directions"], just["directions"])
    assert wrapped["layer_names"] == ["conv1", "convs.0", "convs.1", "convs.2"]
    assert np.all(np.abs(np.sum(wrapped["directions"] * basis.numpy(), axis=1)) > 0.99)
    directions, attrs = Store.open(str(store)).read_direction("sefa/layers_all")
    assert directions.shape == (3, 512)
    assert attrs["family"] == "stylegan2" and attrs["layers"] == [0, 1, 2, 3] and len(attrs["eigenvalues"]) == 3
    with_rgb = sefa(checkpoint=tmp_path / "bare.pt", family="stylegan2", include_torgb=True, k=3)["layers_all"]
    assert with_rgb["layer_names"][-2:] == ["to_rgb1", "to_rgbs.0"]


def test_other_layouts(tmp_path):
    from engine.models.checkpoints import latent_weights

    g = torch.Generator().manual_seed(1)
    nv = {"synthesis.b4.conv1.affine.weight": torch.randn(512, 64, generator=g),
          "synthesis.b8.conv0.affine.weight": torch.randn(512, 64, generator=g),
          "synthesis.b8.conv1.affine.weight": torch.randn(256, 64, generator=g),
          "synthesis.b4.torgb.affine.weight": torch.randn(512, 64, generator=g)}
    assert [n for n, _ in latent_weights(nv, "stylegan2")] == ["b4.conv1", "b8.conv0", "b8.conv1"]
    assert len(latent_weights(nv, "stylegan2", include_torgb=True)) == 4
    sg = {f"synthesis.layer{i}.style.weight": torch.randn(2 * 32, 64, generator=g) for i in range(3)}
    assert [w.shape for _, w in latent_weights(sg, "stylegan")] == [(64, 64)] * 3
    pg = {"layer0.weight": torch.randn(32, 64, 4, 4, generator=g), "layer1.weight": torch.randn(32, 32, 3, 3)}
    ((name, w),) = latent_weights(pg, "pggan")
    assert name == "layer0" and w.shape == (32 * 16, 64)
    big = {"generator.gen_z.weight": torch.randn(1024, 2 * 64, generator=g)}
    ((_, w),) = latent_weights(big, "biggan")
    np.testing.assert_array_equal(w.numpy(), big["generator.gen_z.weight"][:, :64].numpy())
    torch.save(pg, tmp_path / "pggan.pth")
    result = sefa(checkpoint=tmp_path / "pggan.pth", family="pggan", k=2)["layers_all"]
    assert result["space"] == "z" and result["directions"].shape == (2, 64)


def test_cli_sefa_writes_a_store_and_prints_a_table(tmp_path):
    state, _ = _stylegan2_state(d=64, layers=3)
    torch.save({"g_ema": state}, tmp_path / "g.pt")
    store = str(tmp_path / "s.zarr")
    proc = run_cli("sefa", "--checkpoint", str(tmp_path / "g.pt"), "--family", "stylegan2", "--layers", "all",
                   "--layers", "0-1", "-k", "4", "--store", store, check=True)
    assert "eigenvalue" in proc.stdout and "layers_0-1" in proc.stdout
    assert Store.open(store).directions() == ["sefa/layers_0-1", "sefa/layers_all"]


@pytest.mark.parametrize("args, message", [
    (["--layers", "0-9"], "3 latent layers"),
    (["-k", "100"], "-k"),
    (["--family", "stylegan"], "style-affine"),
])
def test_cli_sefa_bad_input(tmp_path, args, message):
    state, _ = _stylegan2_state(d=64, layers=3)
    torch.save(state, tmp_path / "g.pt")
    store = tmp_path / "s.zarr"
    base = ["sefa", "--checkpoint", str(tmp_path / "g.pt"), "--store", str(store)]
    if "--family" not in args:
        base += ["--family", "stylegan2"]
    proc = run_cli(*base, *args)
    lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
    assert proc.returncode == 1 and len(lines) == 1 and lines[0].startswith("Error: ") and message in lines[0]
    assert not store.exists()
