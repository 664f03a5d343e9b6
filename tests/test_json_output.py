"""``--json`` output: JSON numbers in full (never numpy's abbreviated text), NaN as null, for every command."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import engine
from engine.cli import cli
from engine.cli.options import to_json
from engine.interop import import_interfacegan
from tests.conftest import PLANTED_SMALL

# Commands whose --json output another test file parses (they take too long to run twice).
COVERED_ELSEWHERE = {"bench": "tests/test_bench.py", "demo": "tests/test_showcase.py"}


def _json(args: list[str]) -> object:
    result = CliRunner().invoke(cli, [*args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def _numbers(value: object) -> list[float]:
    if isinstance(value, dict):
        return [x for v in value.values() for x in _numbers(v)]
    if isinstance(value, list):
        return [x for v in value for x in _numbers(v)]
    return [value] if isinstance(value, (int, float)) and not isinstance(value, bool) else []


def test_pca_json_prints_all_1200_ratios_as_numbers(tmp_path):
    rng = np.random.default_rng(0)
    codes = (rng.standard_normal((1300, 1200)) * np.linspace(3, 0.5, 1200)).astype(np.float32)
    np.save(tmp_path / "z.npy", codes)
    np.save(tmp_path / "a_scores.npy", rng.standard_normal(1300).astype(np.float32))
    store = import_interfacegan(tmp_path / "z.npy", tmp_path / "a_scores.npy", tmp_path / "wide.zarr", chunk=1300)
    ratio = _json(["pca", store.path])["explained_variance_ratio"]
    assert isinstance(ratio, list) and len(ratio) == 1200 and all(type(r) is float for r in ratio)
    centred = codes.astype(np.float64) - codes.mean(0)
    reference = np.linalg.eigvalsh(centred.T @ centred)[::-1]
    np.testing.assert_allclose(ratio, reference / reference.sum(), rtol=1e-3, atol=1e-9)


@pytest.fixture(scope="module")
def small_store(tmp_path_factory):
    path = tmp_path_factory.mktemp("json") / "small.zarr"
    engine.sample(str(path), PLANTED_SMALL, ["planted"], n=2000, seed=1, chunk=500, batch=500, progress=False)
    return str(path)


def _sweep_file(folder: Path) -> str:
    path = folder / "sweep.yaml"
    path.write_text(f"runs:\n  - generator: '{PLANTED_SMALL}'\n    predictors: [planted]\n    n: 500\n")
    return str(path)


def _digit_images(folder: Path) -> str:
    path = folder / "digits.npy"
    np.save(path, np.random.default_rng(0).integers(0, 256, (3, 8, 8), dtype=np.uint8))
    return str(path)


def _digits_store(folder: Path) -> str:
    """A tiny digits store: latentclr needs a generator with layers to tap (planted has none)."""
    path = folder / "clr.zarr"
    engine.sample(str(path), "digits", [], n=64, seed=0, chunk=64, progress=False)
    return str(path)


# In order: later commands read what earlier ones wrote.
CASES = {
    "info": lambda store, tmp: ["info", store],
    "boundaries": lambda store, tmp: ["boundaries", store, "--attribute", "age", "--attribute", "gender",
                                      "--num", "200"],
    "condition": lambda store, tmp: ["condition", store, "--primary", "age", "--condition", "gender"],
    "meandiff": lambda store, tmp: ["meandiff", store, "--attribute", "age", "--num", "200"],
    "edit": lambda store, tmp: ["edit", store, "--direction", "interfacegan/age", "--samples", "2", "--rescore"],
    "sefa": lambda store, tmp: ["sefa", "--generator", PLANTED_SMALL, "-k", "3"],
    "pca": lambda store, tmp: ["pca", store],
    "correlate": lambda store, tmp: ["correlate", store],
    "index": lambda store, tmp: ["index", store],
    "query": lambda store, tmp: ["query", store, "--row", "3", "-k", "4"],
    "sample": lambda store, tmp: ["sample", str(tmp / "s.zarr"), "-g", PLANTED_SMALL, "-p", "planted", "-n", "300",
                                  "--chunk", "100", "-q"],
    "sweep": lambda store, tmp: ["sweep", _sweep_file(tmp), "--dry-run"],
    "layers": lambda store, tmp: ["layers", "-g", "digits"],
    "invert": lambda store, tmp: ["invert", _digit_images(tmp), str(tmp / "inv.zarr"), "-g", "digits", "--steps", "3",
                                  "--device", "cpu"],
    "latentclr": lambda store, tmp: ["latentclr", _digits_store(tmp), "--layer", "fc", "-k", "2", "--batch", "4",
                                     "--steps", "2"],
}


def test_every_command_with_json_is_checked_here_or_elsewhere():
    with_json = {name for name, command in cli.commands.items()
                 if any("--json" in param.opts for param in command.params)}
    assert with_json == set(CASES) | set(COVERED_ELSEWHERE)


@pytest.mark.parametrize("command", list(CASES))
def test_command_json_parses_and_holds_numbers(command, small_store, tmp_path):
    payload = _json(CASES[command](small_store, tmp_path))
    assert isinstance(payload, (dict, list)) and payload
    if command not in ("sweep", "index"):
        assert _numbers(payload), "a result without a single number"
    assert all(math.isfinite(x) for x in _numbers(payload))


def test_query_json_rows_are_the_nearest_stored_codes(small_store):
    payload = _json(["query", small_store, "--row", "3", "-k", "4"])
    assert payload["rows"][0][0] == 3 and payload["distances"][0][0] == 0.0
    assert payload["metric"] == "l2"


def test_to_json_turns_numpy_into_plain_numbers_and_non_finite_into_null():
    payload = {"a": np.arange(1500, dtype=np.float32), "b": np.float64("nan"), "c": np.int64(3),
               "d": [np.inf, -np.inf, 1.5], "e": np.bool_(True), np.int32(2): (Path("x"), None)}
    out = to_json(payload)
    text = json.dumps(out, allow_nan=False)
    back = json.loads(text)
    assert back["a"] == list(range(1500)) and back["b"] is None and back["c"] == 3
    assert back["d"] == [None, None, 1.5] and back["e"] is True and back["2"] == ["x", None]


@pytest.mark.parametrize("value", [object(), {"k": {1, 2}}, np.array(["a"]), {(1, 2): 3}])
def test_to_json_refuses_types_it_does_not_know(value):
    with pytest.raises(TypeError, match="as JSON|key in JSON"):
        to_json(value)
