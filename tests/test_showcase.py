"""The demo and the report: the newcomer's first command, and the page a person looks at."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import zarr

import engine
from engine.reporting import _attribute_names, _attribute_order, report, strongest_directions
from engine.store import Store
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
    assert "sefa/layer_fc:0 (eigenvector 0)" in html and "attribute_pearson" in html


def test_demo_and_report_show_the_same_strongest_directions(demo_run):
    out, result = demo_run
    store = Store.open(result["store"])
    chosen = [key for key, _ in strongest_directions(store, 3)]
    boundaries = [key for key in chosen if key.startswith("interfacegan/")]
    rescored = {store.read_table(t)[1]["label"] for t in store.tables() if t.startswith("rescore_")}
    assert rescored == set(chosen) and len(boundaries) == 3
    # Ties in validation accuracy are broken by the remaining rows' accuracy, then the name: a total order.
    metrics = [(-store.read_direction(k)[1]["val_accuracy"], -store.read_direction(k)[1]["remaining_accuracy"], k)
               for k in store.directions() if k.startswith("interfacegan/")]
    assert boundaries == [k for *_, k in sorted(metrics)[:3]]
    html = Path(result["report"]).read_text()
    shown = re.findall(r"<h3>(interfacegan/[^ <]+)", html)
    assert shown == boundaries                                   # one heading per grid, each beside its re-scoring
    for key in boundaries:
        section = html.split(f"<h3>{key} ")[1].split("<h3>")[0]
        assert "_edit.png" in section and f"re-scoring along {key}" in section


def test_report_names_units_and_fits_its_tables(demo_run):
    out, result = demo_run
    html = Path(result["report"]).read_text()
    assert "e-16" not in html and "e-15" not in html
    assert "α = -3σ" in html and "α = 0σ" in html and "in σ, the standard deviation" in html
    # Every table fits the 1100 px page: the re-scoring tables list attributes down, α across.
    assert max(len(re.findall(r"<th>", t)) for t in re.findall(r"<table>.*?</tr>", html)) <= 10
    # GANSpace and SeFa re-scoring plots name their row; match tables name directions as edit takes them.
    for key in ("ganspace/w:1", "ganspace/w:2", "sefa/layer_fc:1"):
        assert f"re-scoring along {key}" in html
    assert "<td>ganspace/w:0</td>" in html and "w[0]" not in html
    # Attributes come in the store's order on both heatmaps and in the match tables (not alphabetically).
    store = Store.open(result["store"])
    section = html.split("<h3>match_interfacegan_vs_ganspace_w</h3>")[1].split("<h3>")[0]
    assert re.findall(r"<td>interfacegan/(\w+)@w</td>", section) == store.attributes     # the demo fits in w
    labels = store.read_table("boundary_cosine")[1]["rows"]
    ordered = [labels[i].split("@")[0] for i in _attribute_order(store, labels, _attribute_names(store, labels))]
    assert [label.split("@")[0] for label in labels] != store.attributes and ordered == store.attributes
    # Timings: the demo's stages, this report, and their total.
    timings = re.search(r"<h3>Timings</h3>(.*?)</table>", html).group(1)
    seconds = [float(v) for v in re.findall(r'<td class="num">([\d.]+)</td>', timings)]
    assert "HTML report (this page)" in timings and "<td>total</td>" in timings
    assert seconds[-1] == pytest.approx(sum(seconds[:-1]), rel=1e-3)


def test_report_on_planted_says_its_images_are_not_pictures(tmp_path):
    store = engine.sample(str(tmp_path / "p.zarr"), "planted:z_dim=128,w_dim=128", ["planted"], n=1000, chunk=1000,
                          progress=False)
    writer = Store.open(store.path, mode="r+")
    writer.write_direction("ganspace", "w", np.eye(2, 128), {"space": "w"})
    # A re-scoring table as edit wrote it before α had units: raw α with linspace's rounding noise at 0.
    alphas = [-7.01944, -2.3398133333333337, -8.881784197001252e-16, 2.339813333333333, 7.01944]
    writer.write_table("rescore_ganspace_w_1", np.outer(np.round(alphas, 6), [1.0, 2.0]), [f"{a:g}" for a in alphas],
                       ["a", "b"], {"direction": "ganspace/w", "row": 1, "space": "w", "alphas": alphas})
    html = report(str(tmp_path / "p.zarr"), tmp_path / "out", per_method=1, samples=2, progress=False).read_text()
    assert "not pictures" in html and "ganspace/w:0 (component 0)" in html
    assert "re-scoring along ganspace/w:1" in html and "<th>α = 0</th>" in html and "e-16" not in html


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
