"""edit: z + αn, InterFaceGAN's distance form, image grids, and re-scoring against the planted Gram matrix."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

import engine
from engine.methods._common import ResultExistsError
from engine.methods.editing import alpha_label, edit, parse_alphas, strongest_changes
from engine.models.planted import ATTRIBUTE_GRAM
from engine.plots import heatmap, image_grid, line_plot
from engine.store import Store
from tests.conftest import run_cli
from tests.test_methods_ganspace import copy_of


@pytest.fixture(scope="module")
def planted_copy(planted_store, tmp_path_factory):
    """The shared planted store, copied, with the planted smile normal stored as a direction."""
    path = copy_of(planted_store, tmp_path_factory, "edit").path
    truth = engine.load_generator(planted_store.meta["generator"]).truth
    store = Store.open(path, mode="r+")
    smile = truth.attribute_directions("z")[truth.attributes.index("smile")]
    store.write_direction("interfacegan", "smile", smile[None], {"space": "z"})
    store.write_direction("interfacegan", "smile_w", truth.attribute_directions("w")[3][None], {"space": "w"})
    return Store.open(path), truth


def test_rescoring_along_the_planted_normal_reproduces_the_gram_row(planted_copy, tmp_path):
    store, truth = planted_copy
    out = tmp_path / "grid.png"
    result = edit(store.path, "interfacegan/smile", alphas="-2,2,5", units="raw", samples=16, rescore=True, out=out)
    # The planted scores are nᵀz + quadratic noise in directions orthogonal to every n, so moving z by αn_smile
    # changes attribute a by exactly α·(n_aᵀn_smile): SeFa's re-scoring table is the Gram row, times α.
    smile = truth.attributes.index("smile")
    expected = np.outer(result["alphas"], ATTRIBUTE_GRAM[smile])
    np.testing.assert_allclose(result["rescore"][:, :5], expected, atol=0.02)
    table, attrs = Store.open(store.path).read_table("rescore_interfacegan_smile")
    assert attrs["rows"] == ["-2", "-1", "0", "1", "2"] and attrs["cols"][:5] == truth.attributes
    assert attrs["units"] == "raw" and attrs["label"] == "interfacegan/smile"
    image = Image.open(out)
    assert image.size[1] > image.size[0]                              # 16 rows of samples, 5 columns of α
    assert Image.open(result["plot"]).size[0] > 100


def test_distance_form_and_w_space(planted_copy):
    store, _ = planted_copy
    result = edit(store.path, "interfacegan/smile", alphas="-3,3,3", units="raw", samples=4, distance=True,
                  stored=True)
    n = Store.open(store.path).read_direction("interfacegan/smile")[0][0]
    np.testing.assert_allclose(result["codes"] @ n, np.tile([-3.0, 0.0, 3.0], (4, 1)), atol=1e-4)
    z = Store.open(store.path).array("latents/z")[:4]
    plain = edit(store.path, "interfacegan/smile", alphas="1,1,1", units="raw", samples=4, stored=True)
    np.testing.assert_allclose(plain["codes"][:, 0], z + n, atol=1e-5)
    w = edit(store.path, "interfacegan/smile_w", alphas="0,1,2", samples=2)
    assert w["space"] == "w" and w["images"].shape == (2, 2, 3, 16, 16)


def test_plots_are_general():
    grid = image_grid(np.zeros((2, 3, 1, 8, 8)), pad=1)
    assert grid.size == (3 * 9 + 1, 2 * 9 + 1) and grid.mode == "RGB"
    assert heatmap(np.eye(2), ["a", "b"], ["a", "b"], title="t").size[0] > 50
    assert line_plot([0, 1], {"x": [0, 1]}).size[0] > 50
    with pytest.raises(ValueError):
        image_grid(np.zeros((2, 3, 8, 8)))


def test_parse_alphas():
    np.testing.assert_allclose(parse_alphas("-3,3,7"), np.linspace(-3, 3, 7))
    # linspace(-7.01944, 7.01944, 7) has -8.9e-16 where α is 0: the grid holds an exact 0, printed as one.
    grid = parse_alphas("-7.01944,7.01944,7")
    assert grid[3] == 0.0 and alpha_label(grid[3], "raw") == "0" and alpha_label(-0.0, "sigma") == "0σ"
    for bad in ("1,2", "a,b,c", "0,1,0"):
        with pytest.raises(ValueError):
            parse_alphas(bad)


def test_cli_edit(planted_copy, tmp_path):
    store, _ = planted_copy
    out = tmp_path / "e.png"
    proc = run_cli("edit", store.path, "--direction", "interfacegan/smile", "--alphas", "-1,1,3", "--samples", "2",
                   "--rescore", "--overwrite", "--out", str(out), check=True)
    assert out.exists() and (tmp_path / "e_rescore.png").exists() and "smile" in proc.stdout
    # The unit is printed with the α, and the planted images are said not to be pictures.
    assert "α (in σ = " in proc.stdout and "-1σ, 0σ, 1σ" in proc.stdout and "α=-1σ" in proc.stdout
    assert "not pictures" in proc.stderr
    for args, message in ((["--direction", "interfacegan/nope"], "unknown direction"),
                          (["--direction", "interfacegan/smile", "--alphas", "1,2"], "--alphas")):
        bad = run_cli("edit", store.path, *args)
        lines = [line for line in bad.stderr.strip().splitlines() if line.strip()]
        assert bad.returncode == 1 and len(lines) == 1 and message in lines[0]


def test_sigma_units_step_in_the_std_of_the_stored_codes(planted_copy):
    store, _ = planted_copy
    result = edit(store.path, "interfacegan/smile_w", alphas="-2,2,5", samples=3, stored=True)
    reader = Store.open(store.path)
    n = reader.read_direction("interfacegan/smile_w")[0][0].astype(np.float64)
    n /= np.linalg.norm(n)
    # σ: numpy's std of the store's first chunk of w codes projected on n (the chunk is 4096 rows here).
    sigma = np.std(np.asarray(reader.array("latents/w")[:4096], np.float64) @ n)
    assert result["units"] == "sigma" and result["sigma"] == pytest.approx(sigma, rel=1e-6)
    np.testing.assert_allclose(result["alphas"], [-2, -1, 0, 1, 2])
    np.testing.assert_allclose(result["alphas_raw"], np.array([-2, -1, 0, 1, 2]) * sigma, rtol=1e-6)
    w = np.asarray(reader.array("latents/w")[:3], np.float64)
    np.testing.assert_allclose((result["codes"] - w[:, None, :]) @ n, np.tile(result["alphas_raw"], (3, 1)),
                               atol=1e-4)
    # The w codes are far wider than z along this direction, so σ and raw units really differ.
    assert abs(sigma - 1.0) > 0.1
    with pytest.raises(ValueError, match="units must be sigma or raw"):
        edit(store.path, "interfacegan/smile_w", units="std")


def test_rescore_refuses_to_replace_its_table_without_overwrite(planted_copy):
    store, _ = planted_copy
    first = edit(store.path, "interfacegan/smile_w", alphas="-1,1,3", samples=2, rescore=True)
    before = Store.open(store.path).read_table(first["table"])[0]
    with pytest.raises(ResultExistsError, match=f"already has tables/{first['table']}; pass overwrite=True"):
        edit(store.path, "interfacegan/smile_w", alphas="-3,3,3", samples=2, rescore=True)
    np.testing.assert_array_equal(Store.open(store.path).read_table(first["table"])[0], before)
    again = edit(store.path, "interfacegan/smile_w", alphas="-3,3,3", samples=2, rescore=True, overwrite=True)
    values, attrs = Store.open(store.path).read_table(first["table"])
    np.testing.assert_allclose(values, again["rescore"], rtol=1e-6)
    assert attrs["rows"] == ["-3", "0", "3"] and attrs["units"] == "sigma"
    bad = run_cli("edit", store.path, "--direction", "interfacegan/smile_w", "--samples", "2", "--rescore")
    assert bad.returncode == 1 and "--overwrite" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1


def test_rescoring_ranks_attributes_by_their_own_spread(planted_copy):
    store, truth = planted_copy
    result = edit(store.path, "interfacegan/smile", alphas="-2,2,3", samples=4, rescore=True, overwrite=True)
    reader = Store.open(store.path)
    scores = np.asarray(reader.array("scores")[:], np.float64)
    np.testing.assert_allclose(result["attribute_std"], np.nanstd(scores, axis=0), rtol=1e-5)
    _, attrs = reader.read_table(result["table"])
    np.testing.assert_allclose(attrs["attribute_std"], np.nanstd(scores, axis=0), rtol=1e-5)
    # A logit that moves 3 raw units out of a std of 15 ranks below a slant that moves 0.29 out of 0.115.
    change = np.array([[-3.0, -0.29], [0.0, 0.0], [3.0, 0.29]])
    assert strongest_changes(change, np.array([15.0, 0.115])).tolist() == [1, 0]
    # Without a usable spread an attribute ranks last, whatever its raw change.
    assert strongest_changes(change, np.array([np.nan, 0.115])).tolist() == [1, 0]


def test_grid_columns_carry_their_alpha():
    images = np.full((2, 3, 1, 16, 16), -1.0)                      # black cells
    labelled = image_grid(images, scale=4, col_labels=["-1σ", "0σ", "1σ"])
    plain = image_grid(images, scale=4)
    assert labelled.size[0] == plain.size[0] and labelled.size[1] > plain.size[1]
    band = np.asarray(labelled.convert("L"))[: labelled.size[1] - plain.size[1]]
    for c in range(3):                                              # ink above every column
        left = 2 + c * 66
        assert (band[:, left:left + 64] < 128).any()
    with pytest.raises(ValueError, match="2 column labels for 3 columns"):
        image_grid(images, col_labels=["a", "b"])


@pytest.fixture(scope="module")
def generator_stores(tmp_path_factory):
    """Tiny w stores of three generators (the built-in digits GAN and two StyleGAN2 files with different
    weights), each with one w direction, and an inverted digits store: {name: path}."""
    import torch

    from tests.stylegan2_checkpoints import rosinality_state

    folder = tmp_path_factory.mktemp("generators")
    specs = {"digits": "digits"}
    for seed in (1, 2):
        torch.save({"g_ema": rosinality_state(size=8, seed=seed)}, folder / f"g{seed}.pt")
        specs[f"file{seed}"] = f"stylegan2:{folder / f'g{seed}.pt'}"
    paths = {}
    for name, spec in specs.items():
        store = engine.sample(str(folder / f"{name}.zarr"), spec, [], n=8, chunk=8, spaces=["w"], progress=False)
        w_dim = engine.load_generator(spec).w_dim
        Store.open(store.path, mode="r+").write_direction("custom", "d", np.eye(1, w_dim, dtype=np.float32),
                                                          {"space": "w"})
        paths[name] = store.path
    np.save(folder / "targets.npy", np.zeros((2, 16, 16), np.uint8))
    paths["inverted"] = engine.invert(folder / "targets.npy", folder / "inv.zarr", "digits", steps=1, device="cpu",
                                      progress=False).path
    return paths


def test_directions_of_another_generator_are_refused_naming_both_generators(generator_stores):
    inverted, file1, file2 = generator_stores["inverted"], generator_stores["file1"], generator_stores["file2"]
    with pytest.raises(ValueError) as builtin_vs_file:
        edit(inverted, "custom/d", direction_from=file1, stored=True, samples=1)
    message = str(builtin_vs_file.value)
    assert f"made with generator 'stylegan2:{file1[:-len('file1.zarr')]}g1.pt', {inverted} with 'digits'" in message
    assert "None" not in message and "SHA-256" not in message                  # a built-in has no file to hash
    with pytest.raises(ValueError) as two_files:
        edit(file2, "custom/d", direction_from=file1, samples=1)
    hashes = [Store.open(p).meta["generator_file"]["sha256"][:12] for p in (file1, file2)]
    assert (f"g1.pt' (SHA-256 {hashes[0]}…) vs 'stylegan2:" in str(two_files.value)
            and f"g2.pt' (SHA-256 {hashes[1]}…)" in str(two_files.value))
    assert edit(generator_stores["digits"], "custom/d", direction_from=generator_stores["digits"], samples=1,
                alphas="0,1,2")["images"].shape[:2] == (1, 2)


def test_an_inverted_store_without_direction_from_says_where_its_directions_come_from(generator_stores):
    inverted = generator_stores["inverted"]
    result = run_cli("edit", inverted, "--stored", "--direction", "custom/d", "--samples", "1", "--device", "cpu")
    assert result.returncode == 1 and result.stderr.count("\n") == 1
    assert "unknown direction 'custom/d'" in result.stderr and "--direction-from OTHER.zarr" in result.stderr
    assert "sampled store of the same generator" in result.stderr
    result = edit(inverted, "custom/d", direction_from=generator_stores["digits"], stored=True, samples=1,
                  alphas="0,0,1")
    assert result["images"].shape[:2] == (1, 1)
    with pytest.raises(engine.StoreError) as sampled:                                  # no hint for a sampled store
        edit(generator_stores["digits"], "custom/nope", samples=1)
    assert "direction-from" not in str(sampled.value)
