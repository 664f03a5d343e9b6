"""Throughput measurement: each variant's figures, the ratio table, the CLI, kernel benchmarks lookup."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from engine import bench
from engine.cli import cli
from tests.conftest import PLANTED_SMALL

TINY = bench.BenchConfig(generator=PLANTED_SMALL, predictors=("planted",), n=600, batch=128, chunk=256,
                         device="cpu")


@pytest.mark.parametrize("variant", bench.VARIANTS)
def test_each_variant_measures_the_same_work(variant):
    result = bench.measure(variant, TINY)
    assert result["variant"] == variant and result["n"] == 600 and result["device"] == "cpu"
    assert result["samples_per_s"] > 0 and result["peak_rss_mb"] >= result["base_rss_mb"] > 0
    assert result["gpu_peak_mb"] is None


def test_bench_command_compares_variants_in_their_own_processes(tmp_path, monkeypatch):
    """--json prints the results (stdout holds JSON only) like every other command; --out writes the file."""
    path = tmp_path / "bench.json"
    args = ["bench", "--generator", PLANTED_SMALL, "--predictor", "planted", "-n", "300", "--batch", "100",
            "--chunk", "100", "--device", "cpu"]
    result = CliRunner().invoke(cli, [*args, "--json", "--out", str(path)])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)      # each variant ran in its own process (bench.compare)
    assert payload == json.loads(path.read_text()) and result.stderr.strip() == f"wrote {path}"
    results = {r["variant"]: r for r in payload["results"]}
    assert list(results) == ["bare", "engine"] and results["bare"]["ratio_to_bare"] == 1.0
    assert all(type(r["samples_per_s"]) is float and r["samples_per_s"] > 0 for r in results.values())
    assert results["engine"]["ratio_to_bare"] == pytest.approx(
        results["engine"]["samples_per_s"] / results["bare"]["samples_per_s"], rel=1e-2, abs=1e-3)  # 3 decimals
    assert payload["openblas_coretype"]
    monkeypatch.setattr(bench, "compare", lambda *a, **k: payload)        # the table of the same figures
    table = CliRunner().invoke(cli, args)
    assert table.exit_code == 0, table.output
    engine_row = next(line for line in table.stdout.splitlines() if line.startswith("engine"))
    assert "vs bare" in table.stdout and f"{results['engine']['ratio_to_bare']:.4g}" in engine_row.split()
    old_form = CliRunner().invoke(cli, [*args, "--json", str(path)])   # --json no longer takes a file
    assert old_form.exit_code == 2 and "unexpected extra argument" in old_form.stderr


@pytest.mark.parametrize("args, message", [
    (["--workers", "0"], "Error: --workers must be a positive integer; got 0"),
    (["--device", "tpu"], "Error: --device must be auto, cpu, cuda or cuda:<index>; got 'tpu'"),
    (["--workers", "2", "--gpus", "0"], "Error: --workers and --gpus exclude each other"),
])
def test_bench_bad_input_is_one_line(args, message):
    result = CliRunner().invoke(cli, ["bench", *args])
    assert result.exit_code != 0
    assert result.output.strip().splitlines()[-1].startswith(message)


def test_kernel_benchmarks_are_found_beside_the_package_or_named_missing(tmp_path, monkeypatch):
    monkeypatch.setattr(bench, "kernel_benchmarks_path", lambda: tmp_path / "benchmarks" / "bench_kernels.py")
    result = CliRunner().invoke(cli, ["bench", "--kernels", "--quick"])
    assert result.exit_code == 1
    assert result.output.startswith("Error: the kernel benchmarks live in the source checkout")
    (tmp_path / "benchmarks").mkdir()
    (tmp_path / "benchmarks" / "bench_kernels.py").write_text(
        "def run(quick):\n    return [{'kernel': 'pca', 'quick': quick, 'ratio': 2.0}]\n")
    out = tmp_path / "k.json"
    result = CliRunner().invoke(cli, ["bench", "--kernels", "--quick", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "pca" in result.output
    assert json.loads(out.read_text()) == {"kernels": [{"kernel": "pca", "quick": True, "ratio": 2.0}]}

