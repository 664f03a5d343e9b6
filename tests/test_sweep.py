"""Sweeps: validation before anything starts, cartesian runs, skip/resume on re-run, failures reported."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from engine import sweep as sweep_module
from engine.cli import cli
from engine.store import Store
from engine.sweep import SweepError, load_sweep, run_sweep
from tests.conftest import PLANTED_SMALL

CALLS: list[tuple[str, dict]] = []


def fake_analysis(store, *, strength: int = 1, progress: bool = False):
    """Stands in for an analysis: records that it ran on a complete store."""
    assert Store.open(store).complete
    CALLS.append((store, {"strength": strength}))
    return {}


def failing_analysis(store):
    raise RuntimeError("the analysis broke")


@pytest.fixture
def fake_analyses(monkeypatch):
    CALLS.clear()
    monkeypatch.setitem(sweep_module.ANALYSES, "pca", ("tests.test_sweep:fake_analysis",))
    monkeypatch.setitem(sweep_module.ANALYSES, "report", ("tests.no_such_module:report",))
    monkeypatch.setitem(sweep_module.ANALYSES, "sefa", ("tests.test_sweep:failing_analysis",))


def _write(tmp_path: Path, doc: dict) -> Path:
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def _doc(**runs_extra) -> dict:
    return {"out": "runs", "defaults": {"n": 1200, "chunk": 400, "batch": 400},
            "runs": [{"generator": PLANTED_SMALL, "predictors": ["planted"], "seed": [0, 1], **runs_extra}]}


# ------------------------------------------------------------------------------------------------ validation
@pytest.mark.parametrize("doc, message", [
    ({"runs": [{"generator": "planted", "n": 10}], "outt": "x"}, "the sweep: unknown key 'outt' (did you mean 'out'?)"),
    ({"runs": [{"generator": "planted", "n": 10, "seeds": [1]}]}, "runs[0]: unknown key 'seeds' (did you mean 'seed'?)"),
    ({"runs": [{"generator": "planted", "n": 10, "seed": [0, -1]}]}, "runs[0].seed[1]: must be an integer >= 0"),
    ({"runs": [{"generator": "planted", "n": 0}]}, "runs[0].n: must be a positive integer; got 0"),
    ({"runs": [{"generator": "planted"}]}, "runs[0]: 'n' is required"),
    ({"runs": [{"n": 10}]}, "runs[0]: 'generator' is required"),
    ({"runs": [{"generator": "planted", "n": 10, "spaces": ["q"]}]}, "runs[0].spaces: must be a list of z, w, wp"),
    ({"runs": [{"generator": "planted", "n": 10, "analyses": ["boundary"]}]},
     "runs[0].analyses[0]: unknown analysis 'boundary' (did you mean 'boundaries'?)"),
    ({"runs": [{"generator": "planted", "n": 10, "workers": 0}]}, "runs[0]: workers must be a positive integer"),
    ({"runs": []}, "runs: must be a non-empty list"),
    ({"defaults": {"chunk": "big"}, "runs": [{"generator": "planted", "n": 10}]}, "runs[0].chunk: must be a positive"),
])
def test_bad_sweep_files_are_refused_with_the_place_named(tmp_path, doc, message):
    with pytest.raises(SweepError) as info:
        load_sweep(_write(tmp_path, doc))
    assert str(info.value).startswith(message)


def test_unknown_analysis_options_are_refused_when_the_analysis_exists(tmp_path, fake_analyses):
    doc = {"runs": [{"generator": "planted", "n": 10, "analyses": [{"pca": {"strenght": 2}}]}]}
    with pytest.raises(SweepError, match=r"runs\[0\].analyses\[0\].pca: unknown option 'strenght'"):
        load_sweep(_write(tmp_path, doc))


def test_cli_refuses_a_bad_file_in_one_line_and_starts_nothing(tmp_path):
    path = _write(tmp_path, {"out": "runs", "runs": [{"generator": "planted", "n": 10, "sed": 1}]})
    result = CliRunner().invoke(cli, ["sweep", str(path)])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        "Error: runs[0]: unknown key 'sed' (did you mean 'seed'?); known keys: name, generator, predictors, seed, n, "
        "spaces, chunk, batch, device, workers, scheduler, gpus, analyses"]
    assert not (tmp_path / "runs").exists()


def test_dry_run_prints_the_cartesian_product_and_runs_nothing(tmp_path):
    doc = _doc(n=[600, 1200], analyses=["boundaries"])
    result = CliRunner().invoke(cli, ["sweep", str(_write(tmp_path, doc)), "--dry-run", "--json"])
    assert result.exit_code == 0, result.output
    runs = json.loads(result.output)["runs"]
    assert [(r["seed"], r["n"]) for r in runs] == [(0, 600), (0, 1200), (1, 600), (1, 1200)]
    assert len({r["folder"] for r in runs}) == 4 and all(r["state"] == "new" for r in runs)
    assert not (tmp_path / "runs").exists()


# ------------------------------------------------------------------------------------------------ running
def test_sweep_runs_skips_finished_runs_reports_failures_and_resumes(tmp_path, fake_analyses):
    doc = _doc(analyses=["boundaries", {"pca": {"strength": 3}}])
    doc["runs"].append({"name": "broken", "generator": PLANTED_SMALL, "predictors": ["planted"], "n": 800,
                        "analyses": ["report"]})
    plan = load_sweep(_write(tmp_path, doc))
    assert len(plan.runs) == 3
    rows = run_sweep(plan, progress=False, echo=lambda line: None)
    assert [r["status"] for r in rows] == ["done", "done", "failed"]
    assert "analysis 'report' is not available" in rows[2]["error"] and rows[2]["rows"] == 800
    assert [c[1] for c in CALLS] == [{"strength": 3}] * 2
    for row in rows[:2]:
        assert row["rows"] == 1200 and row["samples_per_s"] > 0
        assert set(row["boundary_accuracy"]) == {"age", "gender", "eyeglasses", "smile", "pose"}
    summary = json.loads((plan.out / "summary.json").read_text())
    assert [r["status"] for r in summary["runs"]] == ["done", "done", "failed"]
    assert "| broken__" in (plan.out / "summary.md").read_text()

    # Interrupt one finished run's store (a chunk uncommitted, its stage record gone) and fix the broken run.
    first = plan.out / plan.runs[0].name
    Store.open(first / "store.zarr", mode="r+").group["progress"][1] = 0
    marker = json.loads((first / "run.json").read_text())
    marker.update(status="running", done=["boundaries"])
    (first / "run.json").write_text(json.dumps(marker))
    sweep_module.ANALYSES["report"] = ("tests.test_sweep:fake_analysis",)
    CALLS.clear()
    rows = run_sweep(load_sweep(plan.path), progress=False, echo=lambda line: None)
    assert [r["status"] for r in rows] == ["done", "skipped", "done"]
    assert Store.open(first / "store.zarr").complete
    assert len(CALLS) == 2   # the resumed run's pca and the fixed run's report; boundaries were not redone


def test_a_failing_analysis_fails_its_run_only(tmp_path, fake_analyses):
    doc = _doc(analyses=["sefa"])
    doc["runs"][0]["seed"] = 0
    doc["runs"].append({"generator": PLANTED_SMALL, "predictors": ["planted"], "seed": 5, "analyses": ["pca"]})
    result = CliRunner().invoke(cli, ["sweep", str(_write(tmp_path, doc)), "-q"])
    assert result.exit_code == 1
    assert "FAILED at sefa: the analysis broke" in result.output
    assert result.output.strip().splitlines()[-1].startswith("Error: 1 of 2 runs failed")
    summary = json.loads((tmp_path / "runs" / "summary.json").read_text())
    assert [r["status"] for r in summary["runs"]] == ["failed", "done"]


def test_a_retried_stage_replaces_what_its_interrupted_attempt_wrote(tmp_path):
    """The real analyses refuse to replace stored results unless asked; the sweep asks (its store is its own),
    unless the analysis' options say otherwise."""
    doc = {"out": "runs", "runs": [{"generator": PLANTED_SMALL, "predictors": ["planted"], "n": 1200, "chunk": 400,
                                    "batch": 400, "analyses": ["boundaries", "correlate"]}]}
    plan = load_sweep(_write(tmp_path, doc))
    assert [r["status"] for r in run_sweep(plan, progress=False, echo=lambda line: None)] == ["done"]
    folder = plan.out / plan.runs[0].name
    before = Store.open(folder / "store.zarr").read_direction("interfacegan/age")[0]

    def interrupt() -> None:   # both stages wrote their results, then the process died before recording them
        marker = json.loads((folder / "run.json").read_text())
        marker.update(status="running", done=[])
        (folder / "run.json").write_text(json.dumps(marker))

    interrupt()
    rows = run_sweep(load_sweep(plan.path), progress=False, echo=lambda line: None)
    assert [r["status"] for r in rows] == ["done"] and rows[0]["error"] is None
    assert set(rows[0]["boundary_accuracy"]) == {"age", "gender", "eyeglasses", "smile", "pose"}
    np.testing.assert_array_equal(Store.open(folder / "store.zarr").read_direction("interfacegan/age")[0], before)

    doc["runs"][0]["analyses"] = ["boundaries", {"correlate": {"overwrite": False}}]
    plan = load_sweep(_write(tmp_path, doc))
    interrupt()
    rows = run_sweep(plan, progress=False, echo=lambda line: None)
    assert rows[0]["status"] == "failed" and "already has tables/" in rows[0]["error"]
