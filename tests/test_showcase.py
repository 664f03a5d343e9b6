"""The demo and the report: the newcomer's first command, and the page a person looks at."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import zarr

import engine
from engine.reporting import report
from tests.conftest import run_cli


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    proc = run_cli("demo", str(out), "-n", "8000", "--json", check=True)
    return out, json.loads(proc.stdout)


def test_demo_puts_every_method_in_the_store(demo_run):
    out, result = demo_run
    methods = {key.split("/")[0] for key in result["directions"]}
    assert methods == {"interfacegan", "sefa", "ganspace"}
    group = zarr.open_group(result["store"], mode="r")
    assert len(group["directions/interfacegan"]) == 18                  # 10 digits + 8 imagestats
    assert {"boundary_cosine", "attribute_pearson"} <= set(group["tables"].array_keys())
    assert any(name.startswith("rescore_") for name in group["tables"].array_keys())
    # Boundaries are in the papers' usable regime even at this small n.
    assert result["mean_val_accuracy"] > 0.85
    assert set(result["timings"]) >= {"HTML report"} and all(v >= 0 for v in result["timings"].values())


def test_demo_report_is_a_page_whose_images_exist(demo_run):
    out, result = demo_run
    page = Path(result["report"])
    html = page.read_text()
    for section in ("Run", "Attributes", "Directions", "Edits", "Tables"):
        assert f"<h2>{section}</h2>" in html
    images = re.findall(r'src="([^"]+)"', html)
    assert len(images) >= 12 and all((page.parent / src).is_file() for src in images)
    assert "sefa/layers_all eigenvector 0" in html and "attribute_pearson" in html


def test_report_says_why_when_the_generator_cannot_be_built(tmp_path):
    store = engine.sample(str(tmp_path / "s.zarr"), "planted:z_dim=128,w_dim=128", ["planted"], n=2000,
                          chunk=1000, progress=False)
    engine.pca(str(tmp_path / "s.zarr"), k=3)
    meta = dict(store.meta, generator="missing_pkg.models:make_gan")
    zarr.open_group(store.path, mode="r+").attrs["latent_engine"] = meta
    html = report(str(tmp_path / "s.zarr"), tmp_path / "out", progress=False).read_text()
    assert "Edit grids skipped: cannot build the generator missing_pkg.models:make_gan" in html
    assert "ganspace/w" in html


def test_report_on_a_missing_store_is_one_line(tmp_path):
    proc = run_cli("report", str(tmp_path / "nothing.zarr"))
    assert proc.returncode == 1 and proc.stderr.strip() == f"Error: no store at {tmp_path / 'nothing.zarr'}"


def test_engine_report_and_demo_stay_the_functions_after_their_modules_load():
    import engine
    import engine.demonstration  # noqa: F401  (a submodule import must not rebind engine.demo)
    import engine.reporting  # noqa: F401

    assert engine.report is report and callable(engine.demo)
    assert engine.demo.__module__ == "engine.demonstration"
