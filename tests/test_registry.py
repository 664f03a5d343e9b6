"""The method registry: one registration per method reaches engine.<twin>, the CLI, sweeps and the report."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import engine
import engine.methods as registry
from engine.cli import cli
from engine.store import Store
from tests.conftest import PLANTED_SMALL, ROOT


def _run_python(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=120, check=True, cwd=ROOT)


def test_help_does_not_import_torch():
    # `python -m engine --help` as a user runs it; -X importtime lists the modules imported by import statements.
    top = _run_python("-X", "importtime", "-m", "engine", "--help")
    imported = {line.rsplit("|", 1)[-1].strip() for line in top.stderr.splitlines() if "|" in line}
    assert "Commands:" in top.stdout and "boundaries" in top.stdout and "sefa" in top.stdout
    assert "click" in imported and "torch" not in imported
    # The same run, checked in sys.modules (which also sees the modules the registry imports by name).
    code = ("import atexit, runpy, sys; atexit.register(lambda: print('torch' in sys.modules, "
            "'engine.methods.sefa' in sys.modules)); sys.argv = ['latent-engine', '--help']; "
            "runpy.run_module('engine', run_name='__main__')")
    assert _run_python("-c", code).stdout.split()[-2:] == ["False", "True"]
    # Every command's --help, and the twins' lookup, in one process.
    code = ("import sys; from click.testing import CliRunner; import engine; from engine.cli import cli; "
            "names = sorted(cli.commands); "
            "codes = [CliRunner().invoke(cli, [n, '--help']).exit_code for n in names]; "
            "twins = callable(engine.boundaries) and callable(engine.sefa) and 'edit' in engine.__all__; "
            "print(len(names), set(codes), twins, 'torch' in sys.modules)")
    assert _run_python("-c", code).stdout.split()[1:] == ["{0}", "True", "False"]


def test_each_registration_reaches_engine_the_cli_and_sweeps():
    from engine.sweep import ANALYSES, analysis_function

    methods = registry.registered()
    assert {"interfacegan", "condition", "editing", "sefa", "ganspace", "correlate"} <= {m.name for m in methods}
    for method in methods:
        for twin in method.twins:
            assert getattr(engine, twin.__name__) is twin and twin.__name__ in engine.__all__
        for command in method.commands:
            assert cli.commands[command.name] is command
        for name, function in method.analyses.items():
            assert name in ANALYSES and analysis_function(name) is function
    assert {"boundaries", "sefa", "pca", "correlate", "report"} <= set(ANALYSES)


def test_duplicate_names_are_refused():
    first = registry.Method("one", analyses={"fit": np.mean})
    with pytest.raises(registry.RegistryError, match="sweep analysis name 'fit'"):
        registry._check_unique([first, registry.Method("two", analyses={"fit": np.std})])


def test_report_section_follows_the_method_the_direction_records():
    boundary = registry.report_section("interfacegan/age", {"method": "interfacegan"})
    conditioned = registry.report_section("interfacegan/age__cond_gender", {"method": "condition"})
    assert boundary is registry.method_named("interfacegan").report
    assert conditioned is registry.method_named("condition").report
    assert registry.report_section("ganspace/w", {}) is registry.method_named("ganspace").report
    assert registry.report_section("unknown/x", {}) is None


def test_report_shows_a_conditioned_direction_and_ranks_boundaries(tmp_path):
    from engine.reporting import report, strongest_directions

    store = engine.sample(str(tmp_path / "p.zarr"), PLANTED_SMALL, ["planted"], n=2000, chunk=1000, progress=False)
    engine.boundaries(store.path, ratio=0.1)
    first, second = store.attributes[:2]
    engine.condition(store.path, first, [second])
    html = report(store.path, tmp_path / "out", per_method=2, samples=1, progress=False).read_text()
    assert f"conditioned on interfacegan/{second}" in html
    chosen = [key for key, _ in strongest_directions(Store.open(store.path), per_method=2)]
    # The conditioned direction is shown under its own (condition's) section, not ranked among the boundaries.
    assert f"interfacegan/{first}__cond_{second}:0" in chosen
    boundaries = [key for key in chosen if "__cond_" not in key]
    accuracies = [dict(Store.open(store.path).array(f"directions/{key}").attrs)["val_accuracy"] for key in boundaries]
    assert len(boundaries) == 2 and accuracies == sorted(accuracies, reverse=True)


def test_a_factory_failing_inside_is_not_blamed_on_the_specs_options():
    import pytest

    from engine.models.registry import SpecError, load_generator

    with pytest.raises(SpecError, match=r"bad options \(.*unexpected keyword argument 'size'"):
        load_generator("tests.models_for_tests:truncating_generator:size=3")
    with pytest.raises(SpecError, match=r"its factory raised TypeError"):
        load_generator("tests.models_for_tests:failing_inside")
