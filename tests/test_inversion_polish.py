"""What a new user meets after `invert`: the report of an inverted store and `info`'s inversion settings."""
from __future__ import annotations

import numpy as np
import pytest

import engine
from engine.reporting import report
from engine.store import Store


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    """An inverted digits store (targets not kept) and a sampled digits store with one good w direction and one
    that cannot edit it (7 dims for the generator's 64): {"inverted": path, "sampled": path}."""
    folder = tmp_path_factory.mktemp("polish")
    np.save(folder / "targets.npy", np.random.default_rng(0).integers(0, 256, (3, 8, 8), dtype=np.uint8))
    inverted = engine.invert(folder / "targets.npy", folder / "inv.zarr", "digits", steps=2, device="cpu",
                             progress=False)
    sampled = engine.sample(str(folder / "sampled.zarr"), "digits", [], n=16, chunk=16, spaces=["w"],
                            progress=False)
    w_dim = engine.load_generator("digits").w_dim
    writer = Store.open(sampled.path, mode="r+")
    writer.write_direction("custom", "bad", np.eye(1, 7, dtype=np.float32), {"space": "w"})
    writer.write_direction("custom", "good", np.eye(1, w_dim, dtype=np.float32), {"space": "w"})
    return {"inverted": inverted.path, "sampled": sampled.path}


def test_the_report_of_an_inverted_store_says_where_directions_and_targets_come_from(stores, tmp_path):
    page = report(stores["inverted"], tmp_path / "alone", samples=2, progress=False).read_text()
    directions = page.split("<h2>Directions</h2>")[1]
    assert f"report {stores['inverted']} --direction-from OTHER.zarr" in directions
    assert "--rescore --direction-from OTHER.zarr" in directions and "run <code>boundaries" not in directions
    assert "Targets not kept: invert with <code>--keep-images</code>" in page.split("<h2>Directions</h2>")[0]


def test_one_direction_that_cannot_edit_is_a_note_and_the_edits_have_a_progress_bar(stores, tmp_path, capsys):
    page = report(stores["inverted"], tmp_path / "site", samples=2, per_method=1, direction_from=stores["sampled"],
                  progress=True).read_text()
    assert "The edit along custom/bad:0 is skipped: direction custom/bad has 7 dims" in page
    assert f"custom/good:0 (from {stores['sampled']})" in page
    assert (tmp_path / "site/images/inversion_custom_good_0_edit.png").is_file()
    assert "The edits in the Inversion section above take theirs" in page.split("<h2>Directions</h2>")[1]
    bar = capsys.readouterr().err
    assert "report inversion edits: 100%" in bar and "2.00/2.00" in bar
