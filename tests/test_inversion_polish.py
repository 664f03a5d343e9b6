"""What a new user meets after `invert`: the report of an inverted store and `info`'s inversion settings."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import engine
from engine.reporting import report
from engine.store import Store
from tests.conftest import PLANTED_SMALL, run_cli
from tests.stylegan2_checkpoints import rosinality_state


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


def test_info_prints_and_returns_the_inversion_settings(stores, tmp_path):
    targets = tmp_path / "targets.npy"
    np.save(targets, np.random.default_rng(1).integers(0, 256, (2, 8, 8, 3), dtype=np.uint8))
    featured = engine.invert(targets, tmp_path / "featured.zarr", "digits", space="wp", steps=3, restarts=2, lr=0.05,
                             feature_loss="digits", feature_weight=0.5, keep_images=True, device="cpu",
                             progress=False)
    torch.save({"g_ema": rosinality_state(size=8, seed=5)}, tmp_path / "g.pt")
    noisy = engine.invert(targets, tmp_path / "noisy.zarr", f"stylegan2:{tmp_path / 'g.pt'}", steps=1,
                          optimize_noise=True, noise_weight=1000.0, device="cpu", progress=False)
    expected = {
        stores["inverted"]: ("space w, 2 steps, 1 restart(s), lr 0.1, no feature loss, noise maps not optimised, "
                             "targets not kept",
                             {"space": "w", "steps": 2, "restarts": 1, "lr": 0.1, "seed": 0, "feature_loss": None,
                              "feature_weight": None, "optimize_noise": False, "noise_weight": None,
                              "keep_images": False}),
        featured.path: ("space wp, 3 steps, 2 restart(s), lr 0.05, feature loss digits (weight 0.5), noise maps not "
                        "optimised, targets kept",
                        {"space": "wp", "steps": 3, "restarts": 2, "lr": 0.05, "feature_loss": "digits",
                         "feature_weight": 0.5, "optimize_noise": False, "keep_images": True}),
        noisy.path: ("space w, 1 steps, 1 restart(s), lr 0.1, no feature loss, noise maps optimised (weight 1000), "
                     "targets not kept", {"optimize_noise": True, "noise_weight": 1000.0}),
    }
    for path, (line, settings) in expected.items():
        text = run_cli("info", path, check=True).stdout
        assert f"  inversion settings: {line}\n" in text
        recorded = json.loads(run_cli("info", path, "--json", check=True).stdout)["inversion_settings"]
        assert {key: recorded[key] for key in settings} == settings
    assert "inversion settings" not in run_cli("info", stores["sampled"], check=True).stdout


def test_a_report_with_directions_of_another_generator_is_refused_before_writing(stores, tmp_path):
    planted = engine.sample(str(tmp_path / "planted.zarr"), PLANTED_SMALL, [], n=8, chunk=8, progress=False)
    with pytest.raises(ValueError, match=r"was made with generator 'planted.*, .*inv.zarr with 'digits'"):
        report(stores["inverted"], tmp_path / "site", direction_from=planted.path, progress=False)
    assert not (tmp_path / "site").exists()
    result = run_cli("report", stores["inverted"], "--out", str(tmp_path / "site"), "--direction-from", planted.path)
    assert result.returncode == 1 and result.stderr.startswith("Error: ") and result.stderr.count("\n") == 1
    # --direction-from only feeds an inverted store's edits: a sampled store's report does not check it
    assert report(planted.path, tmp_path / "sampled_site", direction_from=stores["sampled"], samples=2,
                  progress=False).is_file()


def test_a_report_whose_direction_store_has_nothing_to_show_says_so_instead_of_asking_for_it(stores, tmp_path):
    only_z = engine.sample(str(tmp_path / "z.zarr"), "digits", [], n=8, chunk=8, spaces=["z"], progress=False)
    writer = Store.open(only_z.path, mode="r+")
    writer.write_direction("custom", "zdir", np.eye(1, engine.load_generator("digits").z_dim, dtype=np.float32),
                           {"space": "z"})                     # the inverted store holds w codes only
    page = report(stores["inverted"], tmp_path / "site", direction_from=only_z.path, progress=False).read_text()
    directions = page.split("<h2>Directions</h2>")[1]
    assert f"None of {only_z.path}'s directions could be shown here" in directions
    assert "--direction-from OTHER.zarr" not in directions
