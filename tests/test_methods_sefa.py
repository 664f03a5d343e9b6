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
    result = sefa(generator=planted, k=5)["layers_0-3"]
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
    assert list(together) == ["layers_0-3", "layers_0-1", "layers_2-3"]
    for spec, name in (("0-1", "layers_0-1"), ("2,3", "layers_2-3")):
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
    state, basis = _stylegan2_state(d=128)
    torch.save({"g_ema": state, "latent_avg": torch.zeros(128)}, tmp_path / "wrapped.pt")
    torch.save(state, tmp_path / "bare.pt")
    only = {k: v for k, v in state.items() if k.endswith("modulation.weight")}
    torch.save(only, tmp_path / "only.pt")
    store = tmp_path / "sefa.zarr"
    wrapped = sefa(checkpoint=tmp_path / "wrapped.pt", family="stylegan2", k=3, store=store)["layers_0-3"]
    bare = sefa(checkpoint=tmp_path / "bare.pt", family="stylegan2", k=3)["layers_0-3"]
    just = sefa(checkpoint=tmp_path / "only.pt", family="stylegan2", k=3)["layers_0-3"]
    np.testing.assert_allclose(wrapped["directions"], bare["directions"])
    np.testing.assert_allclose(wrapped["directions"], just["directions"])
    assert wrapped["layer_names"] == ["conv1", "convs.0", "convs.1", "convs.2"]
    assert np.all(np.abs(np.sum(wrapped["directions"] * basis.numpy(), axis=1)) > 0.99)
    directions, attrs = Store.open(str(store)).read_direction("sefa/layers_0-3")
    assert directions.shape == (3, 128)
    assert attrs["family"] == "stylegan2" and attrs["layers"] == [0, 1, 2, 3] and len(attrs["eigenvalues"]) == 3
    assert attrs["checkpoint_entry"] == "g_ema" and attrs["like"] == "engine" and attrs["rows_normalised"]
    assert bare["checkpoint_entry"] is None
    with_rgb = sefa(checkpoint=tmp_path / "bare.pt", family="stylegan2", include_torgb=True, k=3)["layers_0-5"]
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
    result = sefa(checkpoint=tmp_path / "pggan.pth", family="pggan", k=2)["layer_layer0"]
    assert result["space"] == "z" and result["directions"].shape == (2, 64)


def test_cli_sefa_writes_a_store_prints_a_table_and_refuses_to_overwrite(tmp_path):
    state, _ = _stylegan2_state(d=64, layers=3)
    torch.save({"g_ema": state}, tmp_path / "g.pt")
    store = str(tmp_path / "s.zarr")
    base = ["sefa", "--checkpoint", str(tmp_path / "g.pt"), "--family", "stylegan2", "--store", store]
    proc = run_cli(*base, "--layers", "all", "--layers", "0-1", "-k", "12", check=True)
    assert "eigenvalue" in proc.stdout and "layers_0-1" in proc.stdout
    assert proc.stdout.count("(2 more rows not shown: 10 of 12; --json prints all)") == 2
    assert "conv1, convs.0, convs.1" in proc.stdout and "'g_ema' entry" in proc.stdout
    assert Store.open(store).directions() == ["sefa/layers_0-1", "sefa/layers_0-2"]
    again = run_cli(*base, "--layers", "1-2", "--layers", "all", "-k", "4")
    lines = [line for line in again.stderr.strip().splitlines() if line.strip()]
    assert again.returncode == 1 and len(lines) == 1 and "directions/sefa/layers_0-2" in lines[0]
    assert "--overwrite" in lines[0]
    assert Store.open(store).directions() == ["sefa/layers_0-1", "sefa/layers_0-2"]     # nothing written
    assert Store.open(store).read_direction("sefa/layers_0-2")[0].shape == (12, 64)


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


class OneLayer:
    """A generator whose only layer taking w is ``fc`` (as the digits GAN)."""

    has_mapping = True
    spec = "one-layer"

    def __init__(self, d=16):
        self.weight = torch.randn(48, d, generator=torch.Generator().manual_seed(3))

    def latent_weights(self):
        return [("fc", self.weight)]


def test_default_names_say_the_layers_held(planted, tmp_path):
    (name, result), = sefa(generator=OneLayer(), k=2, store=tmp_path / "s.zarr").items()
    assert name == "layer_fc" and result["layer_names"] == ["fc"]
    assert Store.open(str(tmp_path / "s.zarr")).directions() == ["sefa/layer_fc"]
    assert list(sefa(generator=planted, layers=["all", "1", "0,2-3"], k=2)) == ["layers_0-3", "layer_fc1",
                                                                             "layers_0_2-3"]
    with pytest.raises(ValueError, match="repeat.*layers_0-3"):
        sefa(generator=planted, layers=["all", "0-3"], k=2)


def test_a_stored_result_is_replaced_only_with_overwrite(planted, tmp_path):
    store = tmp_path / "s.zarr"
    first = sefa(generator=planted, layers="0-1", k=2, store=store)["layers_0-1"]["directions"]
    from engine.methods._common import ResultExistsError
    with pytest.raises(ResultExistsError, match="directions/sefa/layers_0-1.*overwrite"):
        sefa(generator=planted, layers=["2-3", "0-1"], k=3, store=store)
    kept, attrs = Store.open(str(store)).read_direction("sefa/layers_0-1")
    np.testing.assert_array_equal(kept, first)
    assert Store.open(str(store)).directions() == ["sefa/layers_0-1"]        # nothing of the refused run
    sefa(generator=planted, layers="0-1", k=3, store=store, overwrite=True)
    assert Store.open(str(store)).read_direction("sefa/layers_0-1")[0].shape == (3, planted.w_dim)


def _genforce_state(state):
    """The same StyleGAN2 weights under genforce's key names (synthesis.layerN / outputN .style.weight)."""
    convs = [state["conv1.conv.modulation.weight"]] + [state[f"convs.{i}.conv.modulation.weight"]
                                                       for i in range(sum(k.startswith("convs.") for k in state))]
    rgbs = [state["to_rgb1.conv.modulation.weight"], state["to_rgbs.0.conv.modulation.weight"]]
    out = {f"synthesis.layer{i}.style.weight": w for i, w in enumerate(convs)}
    out.update({f"synthesis.output{i}.style.weight": w for i, w in enumerate(rgbs)})
    return out


def test_genforce_checkpoints_read_generator_smooth_as_sefa_does(tmp_path):
    smooth, basis = _stylegan2_state(d=64, seed=1)
    raw, _ = _stylegan2_state(d=64, seed=2)
    torch.save({"generator": _genforce_state(raw), "discriminator": {"d.weight": torch.zeros(2, 2)},
                "generator_smooth": _genforce_state(smooth)}, tmp_path / "both.pth")
    torch.save({"generator_smooth": _genforce_state(smooth)}, tmp_path / "smooth.pth")
    torch.save({"generator": _genforce_state(raw)}, tmp_path / "raw.pth")
    store = tmp_path / "s.zarr"
    both = sefa(checkpoint=tmp_path / "both.pth", family="stylegan2", k=3, store=store)["layers_0-3"]
    alone = sefa(checkpoint=tmp_path / "smooth.pth", family="stylegan2", k=3)["layers_0-3"]
    rawres = sefa(checkpoint=tmp_path / "raw.pth", family="stylegan2", k=3)["layers_0-3"]
    np.testing.assert_allclose(both["directions"], alone["directions"])
    assert np.all(np.abs(np.sum(both["directions"] * basis.numpy(), axis=1)) > 0.99)
    assert np.all(np.abs(np.sum(rawres["directions"] * both["directions"], axis=1)) < 0.9)
    assert both["layer_names"] == ["layer0", "layer1", "layer2", "layer3"]
    assert Store.open(str(store)).read_direction("sefa/layers_0-3")[1]["checkpoint_entry"] == "generator_smooth"
    assert rawres["checkpoint_entry"] == "generator"


def _unit_rows(A):
    return A / np.linalg.norm(A, axis=1, keepdims=True)


def _top_eig(M, k):
    """The k largest eigenpairs of a symmetric M, eigenvectors as rows."""
    values, vectors = np.linalg.eigh(M)
    order = np.argsort(values)[::-1][:k]
    return values[order], vectors[:, order].T


def _assert_same(result, values, vectors):
    np.testing.assert_allclose(result["eigenvalues"], values, rtol=1e-6)
    cos = np.abs(np.sum(result["directions"].astype(np.float64) * vectors, axis=1))
    np.testing.assert_allclose(cos, 1.0, atol=1e-6)


def test_like_sefa_numbers_the_final_torgb_last_in_every_layout(tmp_path):
    """genforce/sefa: index L-1 of L is the final ToRGB; `all` = the convs + the final ToRGB; unit rows."""
    state, _ = _stylegan2_state(d=64, layers=4, seed=4)
    gf = _genforce_state(state)
    nv = {"synthesis.b4.conv1.affine.weight": state["conv1.conv.modulation.weight"],
          "synthesis.b8.conv0.affine.weight": state["convs.0.conv.modulation.weight"],
          "synthesis.b8.conv1.affine.weight": state["convs.1.conv.modulation.weight"],
          "synthesis.b16.conv0.affine.weight": state["convs.2.conv.modulation.weight"],
          "synthesis.b4.torgb.affine.weight": state["to_rgb1.conv.modulation.weight"],
          "synthesis.b8.torgb.affine.weight": state["to_rgbs.0.conv.modulation.weight"]}
    convs = [state["conv1.conv.modulation.weight"]] + [state[f"convs.{i}.conv.modulation.weight"] for i in range(3)]
    final_rgb = state["to_rgbs.0.conv.modulation.weight"]
    for layout, saved, last in (("rosinality", {"g_ema": state}, "to_rgbs_0"),
                                ("genforce", {"generator_smooth": gf}, "output1"), ("nvlabs", nv, "b8_torgb")):
        torch.save(saved, tmp_path / f"{layout}.pt")
        results = sefa(checkpoint=tmp_path / f"{layout}.pt", family="stylegan2", like="sefa",
                       layers=["all", "1-2", "4"], k=5)
        assert list(results) == ["like_sefa_layers_0-4", "like_sefa_layers_1-2", f"like_sefa_layer_{last}"]
        for (name, result), chosen in zip(results.items(), ([*convs, final_rgb], convs[1:3], [final_rgb])):
            A = _unit_rows(np.concatenate([w.double().numpy() for w in chosen]))
            _assert_same(result, *_top_eig(A.T @ A, 5))
            assert result["like"] == "sefa" and result["rows_normalised"]
    engine_all = sefa(checkpoint=tmp_path / "rosinality.pt", family="stylegan2", k=5)["layers_0-3"]
    A = _unit_rows(np.concatenate([w.double().numpy() for w in convs]))
    _assert_same(engine_all, *_top_eig(A.T @ A, 5))                 # the engine's own `all`: the convs only


def test_like_rosinality_is_the_svd_of_conv1_convs_and_to_rgb1_unnormalised(tmp_path):
    state, _ = _stylegan2_state(d=64, layers=4, seed=5)
    torch.save({"g_ema": state}, tmp_path / "g.pt")
    (name, result), = sefa(checkpoint=tmp_path / "g.pt", family="stylegan2", like="rosinality", k=6).items()
    assert name == "like_rosinality_layers_0-4"
    assert result["layer_names"] == ["conv1", "convs.0", "convs.1", "convs.2", "to_rgb1"]
    W = np.concatenate([state[key].double().numpy() for key in state
                        if key.endswith("modulation.weight") and not key.startswith("to_rgbs.")])
    _, s, vt = np.linalg.svd(W, full_matrices=False)                 # right singular vectors, descending s
    _assert_same(result, s[:6] ** 2, vt[:6])
    assert not result["rows_normalised"]
    normalised = sefa(checkpoint=tmp_path / "g.pt", family="stylegan2", like="sefa", k=6)["like_sefa_layers_0-4"]
    assert not np.allclose(normalised["eigenvalues"], result["eigenvalues"])


@pytest.mark.parametrize("kwargs, message", [
    ({"like": "rosinality", "layers": "0-1"}, "--layers must be all"),
    ({"like": "rosinality", "family": "pggan"}, "StyleGAN2 only"),
    ({"like": "sefa", "include_torgb": True}, "drop --include-torgb"),
    ({"like": "sefa", "family": "biggan"}, "pggan, stylegan and stylegan2 only"),
    ({"like": "tf"}, "like must be one of"),
])
def test_like_refusals(tmp_path, kwargs, message):
    state, _ = _stylegan2_state(d=64, layers=3)
    torch.save(state, tmp_path / "g.pt")
    with pytest.raises(ValueError, match=message):
        sefa(**{"checkpoint": tmp_path / "g.pt", "family": "stylegan2", **kwargs})


def test_like_needs_a_checkpoint(planted):
    with pytest.raises(ValueError, match="needs --checkpoint"):
        sefa(generator=planted, like="sefa")
