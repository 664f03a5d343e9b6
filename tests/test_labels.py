"""Class labels: drawn per chunk with the codes, stored as ``labels``, and the per-class filters of
``boundaries``, ``pca`` and ``correlate``; BigGAN's truncated-normal draw of z."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

import engine
from engine.sampler import draw_codes, draw_labels
from engine.store import Store

SPEC = "tests.models_for_tests:class_conditional_generator"


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    """400 codes of classes 1 and 3, scored by brightness (tanh of the code along the class's direction)."""
    path = str(tmp_path_factory.mktemp("labels") / "cond.zarr")
    return engine.sample(path, f"{SPEC}:classes=1;3", ["imagestats"], n=4000, chunk=1000, progress=False)


def test_labels_are_stored_per_row_from_the_chosen_classes_and_drawn_per_chunk(labelled):
    labels = labelled.array("labels")[:]
    assert labels.dtype == np.int32 and labels.shape == (4000,)
    assert set(np.unique(labels)) == {1, 3}
    assert labelled.num_classes == 5 and labelled.meta["labels"]["choice"] == [1, 3]
    for index in range(4):
        rows = labelled.chunk_rows(index)
        np.testing.assert_array_equal(labels[rows], draw_labels(0, index, 1000, 1000, (1, 3), 5))
    # the images were made with each row's own class: the score is tanh of the code along that class's direction
    G = engine.load_generator(f"{SPEC}:classes=1;3")
    z = labelled.array("latents/z")[:]
    along = np.einsum("nd,nd->n", z, G.directions.numpy()[labels])
    brightness = labelled.array("scores")[:, labelled.attributes.index("brightness")]
    np.testing.assert_allclose(brightness, (np.tanh(along) + 1) / 2, atol=1e-5)   # imagestats: mean in [0, 1]


def test_one_class_for_the_whole_run_and_resume_refuses_another_class_choice(tmp_path):
    path = str(tmp_path / "one.zarr")
    one = engine.sample(path, f"{SPEC}:classes=2", [], n=300, chunk=100, progress=False)
    assert (one.array("labels")[:] == 2).all()
    # another class choice is another run: refused, whether the SPEC or only the generator's choice differs
    with pytest.raises(Exception, match="cannot resume"):
        engine.sample(path, f"{SPEC}:classes=1;2", [], n=300, chunk=100, resume=True, progress=False)
    other = engine.load_generator(f"{SPEC}:classes=2")
    other.label_choice = (1, 2)
    with pytest.raises(Exception, match="cannot resume .* labels="):
        engine.sample(path, other, [], n=300, chunk=100, resume=True, progress=False)


def test_a_conditional_generator_needs_labels_in_every_call():
    from engine.models.base import map_codes

    G = engine.load_generator(SPEC)
    with pytest.raises(ValueError, match="class-conditional: its codes need class labels"):
        map_codes(G, torch.zeros(2, 6))


def test_boundaries_per_class_find_that_classs_direction(labelled):
    from engine.methods.interfacegan import boundaries

    G = engine.load_generator(SPEC)
    fitted = boundaries(labelled, attributes=["brightness"], ratio=0.2, class_label=1, overwrite=True)
    assert set(fitted) == {"brightness_class1"} and fitted["brightness_class1"]["class"] == 1
    boundaries(labelled, attributes=["brightness"], ratio=0.2, class_label=3, overwrite=True)
    for k in (1, 3):
        normal = labelled.read_direction(f"interfacegan/brightness_class{k}")[0][0]
        assert abs(normal @ G.directions[k].numpy()) > 0.95
    mixed = boundaries(labelled, attributes=["brightness"], ratio=0.2, overwrite=True)
    normal = labelled.read_direction("interfacegan/brightness")[0][0]
    assert abs(normal @ G.directions[1].numpy()) < 0.95          # both classes' rows blur the direction
    assert mixed["brightness"]["valid_rows"] == 4000 and fitted["brightness_class1"]["valid_rows"] < 4000


def test_pca_per_class_is_the_pca_of_that_classs_rows(labelled):
    from engine.methods.ganspace import pca

    result = pca(labelled, array="latents/z", class_label=3, overwrite=True)
    rows = labelled.array("labels")[:] == 3
    z = labelled.array("latents/z")[:][rows].astype(np.float64)
    assert result["n_rows"] == rows.sum()
    np.testing.assert_allclose(result["mean"], z.mean(0), atol=1e-7)
    np.testing.assert_allclose(result["explained_variance"], np.sort(np.linalg.eigvalsh(np.cov(z.T)))[::-1],
                               rtol=1e-6)
    components = labelled.read_direction("ganspace/z_class3")[0]
    assert components.shape == (6, 6)


def test_correlate_per_class_is_pearson_over_that_classs_rows(labelled):
    from engine.methods.correlate import correlate

    tables = correlate(labelled, class_label=1, overwrite=True)
    assert "attribute_pearson_class1" in tables and "attribute_pearson" not in tables
    scores = labelled.array("scores")[:][labelled.array("labels")[:] == 1].astype(np.float64)
    keep = np.isfinite(scores).all(1)
    with np.errstate(invalid="ignore", divide="ignore"):      # constant columns (flat images' centre) are NaN
        expected = np.corrcoef(scores[keep].T)
    np.testing.assert_allclose(tables["attribute_pearson_class1"]["values"], expected, atol=1e-6)


@pytest.mark.parametrize("call, message", [
    ("boundaries", r"has no committed rows of class 4"),
    ("pca", r"has no rows of class 4"),
    ("bad", r"class must be an integer from 0 to 4; got 7"),
])
def test_per_class_filters_say_what_is_wrong(labelled, call, message):
    from engine.methods.ganspace import pca
    from engine.methods.interfacegan import boundaries

    with pytest.raises(ValueError, match=message):
        if call == "boundaries":
            boundaries(labelled, attributes=["brightness"], class_label=4, overwrite=True)
        elif call == "pca":
            pca(labelled, class_label=4, overwrite=True)
        else:
            pca(labelled, class_label=7, overwrite=True)


def test_a_store_without_labels_refuses_class(tmp_path):
    from engine.methods.ganspace import pca

    plain = engine.sample(str(tmp_path / "p.zarr"), "planted", ["planted"], n=64, chunk=32, progress=False)
    with pytest.raises(ValueError, match="has no class labels"):
        pca(plain, class_label=0)


def test_pca_per_class_on_dask_tasks_equals_in_process(labelled):
    from engine.distributed import map_reduce_chunks
    from engine.methods.ganspace import pca_merge, pca_partial

    state = map_reduce_chunks(labelled.path, "latents/z", pca_partial, pca_merge, where_class=1)
    rows = labelled.array("labels")[:] == 1
    assert state.n_samples_seen_ == rows.sum()
    np.testing.assert_allclose(state.mean_, labelled.array("latents/z")[:][rows].mean(0), atol=1e-6)


def test_edit_of_stored_codes_uses_their_stored_classes(labelled):
    from engine.methods.editing import edit
    from engine.methods.interfacegan import boundaries

    boundaries(labelled, attributes=["brightness"], ratio=0.2, overwrite=True)       # all classes' rows
    result = edit(labelled, "interfacegan/brightness", alphas="0,0,1", units="raw", samples=4, stored=True)
    G = engine.load_generator(SPEC)
    z = torch.from_numpy(labelled.array("latents/z")[:4])
    labels = torch.from_numpy(labelled.array("labels")[:4].astype(np.int64))
    expected = G.synthesis(G.mapping(z, labels), labels)
    torch.testing.assert_close(result["images"][:, 0], expected)


def test_truncated_normal_codes_follow_bigggans_distribution_and_keep_the_prefix_property():
    distribution = {"kind": "truncated_normal", "bound": 2.0, "scale": 0.5}
    z = draw_codes(3, 0, 4000, 16, distribution=distribution)
    assert np.abs(z).max() <= 1.0 + 1e-6
    result = stats.kstest(z.ravel() / 0.5, stats.truncnorm(-2, 2).cdf)
    assert result.pvalue > 1e-3
    np.testing.assert_array_equal(draw_codes(3, 0, 4000, 16, rows=10, distribution=distribution), z[:10])
    assert not np.array_equal(draw_codes(3, 1, 4000, 16, distribution=distribution), z)


def test_a_generator_with_truncated_codes_records_and_reuses_its_draw(tmp_path):
    store = engine.sample(str(tmp_path / "t.zarr"), f"{SPEC}:truncation=0.4", [], n=200, chunk=100, progress=False)
    assert store.meta["distribution"] == {"kind": "truncated_normal", "bound": 2.0, "scale": 0.4}
    assert "ndtri" in store.meta["draw"]
    z = store.array("latents/z")[:]
    assert np.abs(z).max() <= 0.8 + 1e-6
    np.testing.assert_array_equal(z[100:], draw_codes(0, 1, 100, 6, distribution=store.meta["distribution"]))
    reopened = Store.open(store.path)
    assert reopened.latent_source("z")["distribution"]["scale"] == 0.4


def test_info_counts_the_rows_of_each_class(labelled):
    from click.testing import CliRunner

    from engine.cli import cli
    from engine.summary import summarize

    summary = summarize(labelled)
    labels = labelled.array("labels")[:]
    assert summary["labels"] == {"num_classes": 5, "counts": {"1": int((labels == 1).sum()),
                                                              "3": int((labels == 3).sum())}}
    out = CliRunner().invoke(cli, ["info", labelled.path]).output
    assert "2 of 5 classes drawn" in out


def test_edit_of_a_per_class_direction_edits_codes_of_that_class(labelled):
    from engine.methods.editing import edit
    from engine.methods.interfacegan import boundaries

    boundaries(labelled, attributes=["brightness"], ratio=0.2, class_label=3, overwrite=True)
    G = engine.load_generator(SPEC)
    result = edit(labelled, "interfacegan/brightness_class3", alphas="0,0,1", units="raw", samples=3, stored=True)
    rows = np.flatnonzero(labelled.array("labels")[:] == 3)[:3]
    z = torch.from_numpy(labelled.array("latents/z")[:][rows])
    three = torch.full((3,), 3)
    torch.testing.assert_close(result["images"][:, 0], G.synthesis(G.mapping(z, three), three))
    drawn = edit(labelled, "interfacegan/brightness_class3", alphas="0,0,1", units="raw", samples=2, class_label=1)
    z2, _ = engine.methods.editing.starting_codes(G, 0, 2)
    one = torch.full((2,), 1)
    torch.testing.assert_close(drawn["images"][:, 0], G.synthesis(G.mapping(torch.from_numpy(z2), one), one))
    with pytest.raises(ValueError, match="class must be an integer from 0 to 4; got 9"):
        edit(labelled, "interfacegan/brightness_class3", samples=2, class_label=9)
