"""InterFaceGAN boundaries and conditional directions, against the planted truth and the paper's formulas."""
from __future__ import annotations

import numpy as np
import pytest

import engine
from engine.methods.interfacegan import boundaries, condition, select_extremes
from engine.models.planted import ATTRIBUTE_GRAM
from engine.store import Store, StoreError
from tests.conftest import run_cli

# The accuracy regime of the papers (validation accuracy 0.85-0.95) with enough training rows per dimension
# for the statistical error to stay under 0.02 in cosine: z_dim 128, noise 1.2, 40K rows, top/bottom 15%
# (6K per side, 8.4K training rows). Measured: cosine to the planted normals 0.985-0.99, val accuracy ≈ 0.87.
BOUNDARY_MODEL = "planted:z_dim=128,w_dim=128,noise=1.2"
BOUNDARY_RATIO = 0.15


@pytest.fixture(scope="module")
def boundary_store(tmp_path_factory):
    path = tmp_path_factory.mktemp("ifg") / "b.zarr"
    engine.sample(str(path), BOUNDARY_MODEL, ["planted"], n=40_000, seed=3, chunk=4096, batch=2048,
                  spaces=["z", "w"], progress=False)
    results = boundaries(str(path), ratio=BOUNDARY_RATIO)
    return str(path), results


@pytest.fixture(scope="module")
def truth():
    return engine.load_generator(BOUNDARY_MODEL).truth


@pytest.fixture()
def toy_store(tmp_path):
    """A tiny imported store: 2000 codes in 16 dims, one clean attribute, a few NaN and invalid scores."""
    from engine.interop import import_interfacegan

    rng = np.random.default_rng(0)
    z = rng.standard_normal((2000, 16)).astype(np.float32)
    n = np.zeros(16)
    n[0] = 1.0
    scores = (z @ n + 1.0 * rng.standard_normal(2000)).astype(np.float32)
    scores[[5, 17, 400]] = np.nan
    scores[[6, 7]] = -99.0
    np.save(tmp_path / "z.npy", z)
    np.save(tmp_path / "smile_scores.npy", scores[:, None])
    import_interfacegan(tmp_path / "z.npy", tmp_path / "smile_scores.npy", tmp_path / "toy.zarr", chunk=256)
    return str(tmp_path / "toy.zarr"), z, scores


def test_recovered_directions_match_the_planted_ones(boundary_store, truth):
    path, results = boundary_store
    store = Store.open(path)
    planted = truth.attribute_directions("z")
    for a, name in enumerate(truth.attributes):
        direction, attrs = store.read_direction(f"interfacegan/{name}")
        assert direction.shape == (1, 128)
        assert abs(np.linalg.norm(direction) - 1) < 1e-5
        assert float(direction[0] @ planted[a]) >= 0.98, name
        assert 0.85 <= attrs["val_accuracy"] <= 0.95, (name, attrs["val_accuracy"])
        for key in ("space", "num", "split", "C", "loss", "seed", "train_accuracy", "val_accuracy",
                    "remaining_accuracy"):
            assert key in attrs
        assert attrs["num"] == int(40_000 * BOUNDARY_RATIO)
        assert attrs["loss"] == "hinge" and attrs["C"] == 1.0 and attrs["split"] == 0.7
        assert attrs["train_accuracy"] >= attrs["val_accuracy"] - 0.02
        assert 0.5 < attrs["remaining_accuracy"] < attrs["val_accuracy"]
        assert results[name]["n_train"] == 2 * int(attrs["num"] * 0.7)


def test_boundary_cosine_table_reproduces_planted_correlations(boundary_store, truth):
    from engine.methods.correlate import correlate

    path, _ = boundary_store
    tables = correlate(path)
    table = tables["boundary_cosine"]
    order = [truth.attributes.index(r) for r in table["rows"]]
    np.testing.assert_allclose(table["values"], ATTRIBUTE_GRAM[np.ix_(order, order)], atol=0.05)
    stored, attrs = Store.open(path).read_table("boundary_cosine")
    assert attrs["rows"] == table["rows"] == attrs["cols"]


def test_w_space_boundaries_live_beside_the_z_ones_and_match_the_planted_w_normals(boundary_store, truth):
    path, _ = boundary_store
    z_before, z_attrs_before = Store.open(path).read_direction("interfacegan/smile")
    results = boundaries(path, space="w", attributes=["smile"], ratio=BOUNDARY_RATIO)
    assert list(results) == ["smile@w"] and results["smile@w"]["attribute"] == "smile"
    store = Store.open(path)
    direction, attrs = store.read_direction("interfacegan/smile@w")
    assert attrs["space"] == "w" and attrs["attribute"] == "smile" and attrs["layer"] is None
    assert float(direction[0] @ truth.attribute_directions("w")[truth.attributes.index("smile")]) > 0.97
    z_after, z_attrs_after = store.read_direction("interfacegan/smile")       # the z boundary is untouched
    np.testing.assert_array_equal(z_after, z_before)
    assert z_attrs_after == z_attrs_before and z_attrs_after["space"] == "z"
    # The '@' in the node name reads back through dask and xarray as through zarr.
    import dask.array as da
    import xarray as xr
    np.testing.assert_array_equal(da.from_zarr(path, component="directions/interfacegan/smile@w").compute(),
                                  direction)
    group = xr.open_zarr(path, group="directions/interfacegan", consolidated=False)
    np.testing.assert_array_equal(group["smile@w"].values, direction)
    np.testing.assert_array_equal(group["smile"].values, z_before)


def test_nothing_stored_is_replaced_without_overwrite_and_the_check_comes_first(boundary_store, monkeypatch):
    from engine.methods import interfacegan
    from engine.methods._common import ResultExistsError

    path, _ = boundary_store
    before = {key: Store.open(path).read_direction(key)[0] for key in Store.open(path).directions()}

    def no_work(*args, **kwargs):
        raise AssertionError("work started before the overwrite check")

    with monkeypatch.context() as patched:
        patched.setattr(interfacegan, "select_extremes", no_work)
        with pytest.raises(ResultExistsError, match=r"already has directions/interfacegan/age.*overwrite=True"):
            boundaries(path, ratio=BOUNDARY_RATIO)
        condition(path, "age", ["gender"], name="age_once")
        with pytest.raises(ResultExistsError, match="directions/interfacegan/age_once"):
            condition(path, "age", ["eyeglasses"], name="age_once")
    store = Store.open(path)
    for key, values in before.items():
        np.testing.assert_array_equal(store.read_direction(key)[0], values)
    first = store.read_direction("interfacegan/age_once")
    again = condition(path, "age", ["eyeglasses"], name="age_once", overwrite=True)
    replaced = Store.open(path).read_direction("interfacegan/age_once")
    assert again["conditions"] == ["interfacegan/eyeglasses"] and replaced[1]["conditions"] == again["conditions"]
    assert not np.array_equal(replaced[0], first[0])


def test_conditioned_directions_are_orthogonal_to_their_conditions(boundary_store):
    path, _ = boundary_store
    store = Store.open(path)
    n1, n2, n3 = (store.read_direction(f"interfacegan/{a}")[0][0].astype(np.float64)
                  for a in ("age", "eyeglasses", "gender"))
    one = condition(path, "age", ["eyeglasses"])
    two = condition(path, "interfacegan/age", ["eyeglasses", "gender"], name="age_pure")
    store = Store.open(path)
    v1, attrs1 = store.read_direction(one["key"])
    v2, attrs2 = store.read_direction("interfacegan/age_pure")
    expected = n1 - (n1 @ n2) * n2                                   # paper 001, one condition
    np.testing.assert_allclose(v1[0], expected / np.linalg.norm(expected), atol=1e-6)
    assert abs(v2[0] @ n2) < 1e-6 and abs(v2[0] @ n3) < 1e-6
    assert abs(np.linalg.norm(v2[0]) - 1) < 1e-6
    assert attrs2["primary"] == "interfacegan/age"
    assert attrs2["conditions"] == ["interfacegan/eyeglasses", "interfacegan/gender"]
    # The paper's two-condition closed form gives the same direction.
    c12 = n2 @ n3
    alpha = (n1 @ n2 - (n1 @ n3) * c12) / (1 - c12 ** 2)
    beta = (n1 @ n3 - (n1 @ n2) * c12) / (1 - c12 ** 2)
    closed = n1 - alpha * n2 - beta * n3
    np.testing.assert_allclose(v2[0], closed / np.linalg.norm(closed), atol=1e-5)


def test_condition_warns_when_the_primary_is_nearly_inside_the_span(boundary_store):
    path, _ = boundary_store
    store = Store.open(path, mode="r+")
    age = store.read_direction("interfacegan/age")[0][0].astype(np.float64)
    rng = np.random.default_rng(1)
    near = age + 0.02 * rng.standard_normal(age.size) / np.sqrt(age.size)
    store.write_direction("interfacegan", "age_copy", (near / np.linalg.norm(near))[None], {"space": "z"})
    with pytest.warns(UserWarning, match="nearly inside"):
        condition(path, "age", ["age_copy"], name="age_vs_copy")
    with pytest.raises(ValueError, match="itself"):
        condition(path, "age", ["age"])


@pytest.mark.parametrize("d", [8, 64])
def test_condition_on_dependent_conditions_is_orthogonal_to_every_one(tmp_path, d):
    """The same condition twice, and one that is a combination of others (stored in float32 as every direction
    is): the result is orthogonal to each of them and equals the projection off the independent ones' span."""
    rng = np.random.default_rng(d)
    store = Store.create(str(tmp_path / "c.zarr"), n=8, chunk=8, z_dim=d)

    def unit(v):
        return v / np.linalg.norm(v)

    primary, a, b = (unit(rng.standard_normal(d)) for _ in range(3))
    stored = {"primary": primary, "a": a, "b": b, "mix": unit(0.8 * a - 1.7 * b)}
    for name, v in stored.items():
        store.write_direction("interfacegan", name, v[None], {"space": "z"})
    read = {name: Store.open(store.path).read_direction(f"interfacegan/{name}")[0][0].astype(np.float64)
            for name in stored}
    basis, _ = np.linalg.qr(np.stack([read["a"], read["b"]]).T)
    expected = unit(read["primary"] - basis @ (basis.T @ read["primary"]))
    for conditions in (["a", "a"], ["a", "a", "b"], ["mix", "a", "b"], ["a", "mix", "b"], ["a", "b", "mix", "a"]):
        result = condition(store.path, "primary", conditions, name="out", overwrite=True)
        out = Store.open(store.path).read_direction("interfacegan/out")[0][0].astype(np.float64)
        span = [read[c] for c in conditions]
        assert max(abs(float(c @ out)) for c in span) < 1e-6, conditions
        if "b" in conditions:
            np.testing.assert_allclose(out, expected, atol=1e-6)
        else:
            np.testing.assert_allclose(out, unit(read["primary"] - (read["primary"] @ read["a"]) * read["a"]),
                                       atol=1e-6)
        assert result["conditions"] == [f"interfacegan/{c}" for c in conditions]


def test_default_conditioned_name_keeps_the_space_suffix_last(tmp_path):
    store = Store.create(str(tmp_path / "c.zarr"), n=8, chunk=8, z_dim=4, w_dim=4)
    eye = np.eye(4, dtype=np.float32)
    for name, row in (("age@w", 0), ("gender@w", 1), ("pose@w", 2)):
        store.write_direction("interfacegan", name, (eye[row] + eye[3])[None] / np.sqrt(2), {"space": "w"})
    assert condition(store.path, "age@w", ["gender@w", "pose@w"])["key"] == "interfacegan/age__cond_gender_pose@w"


def _scores_with_a_broken_column(tmp_path):
    from engine.interop import import_interfacegan

    rng = np.random.default_rng(0)
    z = rng.standard_normal((2000, 8)).astype(np.float32)
    scores = (z[:, :3] + 0.5 * rng.standard_normal((2000, 3))).astype(np.float32)
    scores[:, 1] = np.nan                                       # a predictor that failed on every row
    np.save(tmp_path / "z.npy", z)
    np.save(tmp_path / "s.npy", scores)
    path = str(tmp_path / "nan.zarr")
    import_interfacegan(tmp_path / "z.npy", tmp_path / "s.npy", path, attributes=["a", "broken", "c"])
    return path


def test_an_all_nan_attribute_is_skipped_by_name_and_an_error_when_asked_for(tmp_path):
    path = _scores_with_a_broken_column(tmp_path)
    with pytest.warns(UserWarning, match=r"attribute 'broken' cannot be fitted: every score is NaN.*skipped it"):
        result = boundaries(path, ratio=0.1)
    assert list(result) == ["a", "c"]
    store = Store.open(path)
    assert store.directions() == ["interfacegan/a", "interfacegan/c"]
    assert store.read_direction("interfacegan/a")[0][0, 0] > 0.9 and store.read_direction("interfacegan/c")[0][0, 2] > 0.9
    with pytest.raises(ValueError, match=r"^attribute 'broken' cannot be fitted: every score is NaN or infinite$"):
        boundaries(path, attributes=["broken"], ratio=0.1)
    error = _one_line_error(run_cli("boundaries", path, "--attribute", "c", "--attribute", "broken",
                                    "--ratio", "0.1", "--overwrite", "-q"))
    assert "'broken' cannot be fitted: every score is NaN" in error and "--ratio" not in error


def test_streaming_selection_equals_a_full_sort(planted_store):
    store = Store.open(planted_store.path)
    scores = store.array("scores")[:]
    k = 500
    found = select_extremes(store, [0, 3], k, None)
    for extremes, column in zip(found, [0, 3]):
        order = np.argsort(-scores[:, column], kind="stable")
        assert set(extremes.top_index) == set(order[:k])
        assert set(extremes.bottom_index) == set(order[-k:])
        assert extremes.valid == store.n
        assert extremes.low == pytest.approx(scores[:, column].min())


def test_nan_and_invalid_scores_are_dropped_and_split_one_has_no_validation(toy_store):
    path, z, scores = toy_store
    result = boundaries(path, num=300, split=1.0, invalid_value=-99.0, seed=5)["smile"]
    valid = np.isfinite(scores) & (scores != -99.0)
    assert result["valid_rows"] == int(valid.sum()) == 1995
    assert result["val_accuracy"] is None and result["n_train"] == 600 and result["n_val"] == 0
    assert result["n_remaining"] == 1995 - 600
    direction, attrs = Store.open(path).read_direction("interfacegan/smile")
    assert direction[0, 0] > 0.95 and attrs["seed"] == 5
    # The remaining rows are labelled by the midpoint of the valid score range, as InterFaceGAN does.
    assert attrs["decision_value"] == pytest.approx((scores[valid].max() + scores[valid].min()) / 2, rel=1e-5)


def test_the_split_is_reproducible_from_the_recorded_seed(toy_store):
    path, _, _ = toy_store
    first = boundaries(path, num=200, seed=11)["smile"]
    d1 = Store.open(path).read_direction("interfacegan/smile")[0]
    second = boundaries(path, num=200, seed=11, overwrite=True)["smile"]
    d2 = Store.open(path).read_direction("interfacegan/smile")[0]
    np.testing.assert_array_equal(d1, d2)
    assert first == second


def test_property_2_holds_on_stored_z(tmp_path):
    """Paper 001, Property 2: for d = 512 and unit n, P(|nᵀz| > 5) < 1e-6 for z ~ N(0, I)."""
    from scipy.stats import norm

    path = tmp_path / "z512.zarr"
    engine.sample(str(path), "planted", [], n=32_768, seed=0, chunk=8192, spaces=["z"], progress=False)
    store = Store.open(str(path))
    rng = np.random.default_rng(0)
    normals = rng.standard_normal((8, 512))
    normals /= np.linalg.norm(normals, axis=1, keepdims=True)
    beyond, total, moments = 0, 0, np.zeros(3)
    for _, z in store.iter_rows("latents/z"):
        d = z.astype(np.float64) @ normals.T
        beyond += int((np.abs(d) > 5.0).sum())
        total += d.size
        moments += [d.size, d.sum(), (d ** 2).sum()]
    assert store.array("latents/z").shape[1] == 512
    assert beyond / total < 1e-6
    assert abs(moments[1] / moments[0]) < 0.01 and abs(moments[2] / moments[0] - 1) < 0.02
    assert 2 * norm.sf(5.0) < 1e-6


# ------------------------------------------------------------------------------------------------ CLI
def _one_line_error(proc) -> str:
    assert proc.returncode != 0
    lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), proc.stderr
    return lines[0]


def test_cli_boundaries_and_condition(toy_store):
    path, _, _ = toy_store
    proc = run_cli("boundaries", path, "--num", "250", "--invalid-value", "-99", "-q", check=True)
    assert "interfacegan/smile" in proc.stdout and "val acc" in proc.stdout
    assert "interfacegan/smile" in Store.open(path).directions()
    stored = Store.open(path).read_direction("interfacegan/smile")[0]
    error = _one_line_error(run_cli("boundaries", path, "--num", "100", "-q"))
    assert "already has directions/interfacegan/smile" in error and "--overwrite" in error
    np.testing.assert_array_equal(Store.open(path).read_direction("interfacegan/smile")[0], stored)
    proc = run_cli("boundaries", path, "--num", "100", "-q", "--overwrite", "--json", check=True)
    import json
    assert json.loads(proc.stdout)["smile"]["num"] == 100


@pytest.mark.parametrize("args, message", [
    (["--attribute", "nope"], "unknown attribute"),
    (["--ratio", "0.7"], "--ratio"),
    (["--ratio", "0"], "--ratio"),
    (["--num", "1500"], "--num"),
    (["--space", "w"], "no 'w' codes"),
])
def test_cli_boundaries_bad_input_is_one_line_and_writes_nothing(toy_store, args, message):
    path, _, _ = toy_store
    error = _one_line_error(run_cli("boundaries", path, *args, "-q"))
    assert message in error
    assert Store.open(path).directions() == []


def test_cli_condition_unknown_direction(toy_store):
    path, _, _ = toy_store
    boundaries(path, num=200)
    error = _one_line_error(run_cli("condition", path, "--primary", "smile", "--condition", "age"))
    assert "unknown direction 'age'" in error
    assert Store.open(path).directions() == ["interfacegan/smile"]


def test_incomplete_store_is_refused(tmp_path):
    store = Store.create(str(tmp_path / "x.zarr"), n=10, chunk=5, z_dim=4, attributes=["a"])
    with pytest.raises(StoreError, match="incomplete"):
        boundaries(store.path)


@pytest.mark.parametrize("command", ["boundaries", "condition", "edit", "sefa", "pca", "correlate", "export",
                                     "import-interfacegan", "index", "query"])
def test_every_method_command_has_help_with_examples(command):
    from click.testing import CliRunner

    from engine.cli import cli

    result = CliRunner().invoke(cli, [command, "--help"])
    assert result.exit_code == 0 and "Examples:" in result.output and f"latent-engine {command}" in result.output


def test_attributes_with_different_nan_counts_fit_in_their_own_batches(tmp_path):
    from engine.interop import import_interfacegan

    rng = np.random.default_rng(0)
    z = rng.standard_normal((3000, 16)).astype(np.float32)
    scores = (z[:, :3] + rng.standard_normal((3000, 3))).astype(np.float32)
    scores[:500, 1] = np.nan
    np.save(tmp_path / "z.npy", z)
    np.save(tmp_path / "s.npy", scores)
    import_interfacegan(tmp_path / "z.npy", tmp_path / "s.npy", tmp_path / "g.zarr", attributes=["a", "b", "c"])
    result = boundaries(str(tmp_path / "g.zarr"), ratio=0.1)
    assert [result[a]["num"] for a in "abc"] == [300, 250, 300]
    assert result["b"]["valid_rows"] == 2500 and result["b"]["n_remaining"] == 2000
    store = Store.open(str(tmp_path / "g.zarr"))
    for j, a in enumerate("abc"):
        assert store.read_direction(f"interfacegan/{a}")[0][0, j] > 0.9


def test_wp_space_flattened_and_per_layer(tmp_path):
    path = str(tmp_path / "wp.zarr")
    engine.sample(path, "planted:z_dim=128,w_dim=128,num_ws=2", ["planted"], n=4096, seed=1, chunk=2048,
                  batch=2048, spaces=["z", "w", "wp"], progress=False)
    boundaries(path, space="w", attributes=["smile"], ratio=0.1)
    w_normal = Store.open(path).read_direction("interfacegan/smile@w")[0][0]
    flat = boundaries(path, space="wp", attributes=["smile"], ratio=0.1)["smile@wp"]
    flat_normal = Store.open(path).read_direction("interfacegan/smile@wp")[0][0]
    assert flat_normal.shape == (256,) and flat["layer"] is None
    # The planted W+ holds the same w on every layer: the minimum-norm normal splits evenly over the two copies,
    # and each half is the w normal (up to the effective C, which doubles).
    half = flat_normal[:128]
    np.testing.assert_allclose(half, flat_normal[128:], atol=1e-3)
    assert float(half @ w_normal) / np.linalg.norm(half) > 0.98
    one = boundaries(path, space="wp", layer=1, attributes=["smile"], ratio=0.1)["smile@wp1"]
    normal, attrs = Store.open(path).read_direction("interfacegan/smile@wp1")
    assert normal.shape == (1, 128) and attrs["layer"] == 1 and one["space"] == "wp"
    assert float(normal[0] @ w_normal) > 0.999
    assert Store.open(path).directions() == ["interfacegan/smile@w", "interfacegan/smile@wp",
                                             "interfacegan/smile@wp1"]
    with pytest.raises(ValueError, match=r"layer must be in \[0, 2\)"):
        boundaries(path, space="wp", layer=2)
    from engine.methods.editing import edit
    assert edit(path, "interfacegan/smile@wp1", alphas="0,1,2", samples=2)["images"].shape == (2, 2, 3, 16, 16)


def test_gather_many_reads_rows_in_any_order_with_repeats_as_numpy_indexing_does(planted_store):
    from engine.spaces import LatentView

    store = Store.open(planted_store.path)
    view = LatentView(store, "w")
    everything = store.array("latents/w")[:]  # 40K x 128: small enough to hold in a test
    batched = np.random.default_rng(0).integers(0, store.n, size=(3, 50))  # (b, n) as boundaries asks for
    scattered = np.r_[store.n - 1, 0, 4095, 4096, 4096, 17]             # chunk edges, a repeat, descending
    got_batched, got_scattered, got_empty = view.gather_many([batched, scattered, np.empty(0, np.int64)])
    np.testing.assert_array_equal(got_batched, everything[batched])
    np.testing.assert_array_equal(got_scattered, everything[scattered])
    assert got_empty.shape == (0, view.dim)
    with pytest.raises(IndexError, match=r"row index out of range \[0, 40000\)"):
        view.gather(np.r_[0, store.n])


def test_a_store_where_no_attribute_can_be_fitted_says_so_briefly(planted_store):
    from click.testing import CliRunner

    from engine.cli import cli

    result = CliRunner().invoke(cli, ["boundaries", planted_store.path, "--num", str(10 * planted_store.n)])
    error = result.output.splitlines()[-1]                 # after the progress bar's line
    assert result.exit_code == 1 and result.output.count("Error") == 1
    assert error.startswith("Error: no attribute can be fitted: ")
    others = len(planted_store.attributes) - 2
    assert error.count("is larger than half the valid rows") == 2
    assert error.endswith(f"; and {others} more attributes likewise")
