"""LatentCLR: the loss against the paper's formula, recovery of a planted span, digits, resume, refusals."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch import nn

import engine
from engine.cli import cli
from engine.direction_models import load_direction_model, read_group
from engine.lock import LockError, StoreLock
from engine.methods import latentclr as module
from engine.methods.latentclr import contrastive_loss, latentclr
from engine.store import Store, StoreError

SPAN_SPEC = "tests.test_latentclr:span_generator"
FAST = dict(k=8, batch=8, steps=40, save_every=20, progress=False)


class _SpanFeatures(nn.Module):
    def __init__(self, span: torch.Tensor, rest: torch.Tensor):
        super().__init__()
        self.register_buffer("span", span)
        self.register_buffer("rest", rest)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        constant = torch.full((z.shape[0], 4), 20.0, device=z.device)
        return torch.cat([constant, 4 * z @ self.span.T, torch.sin(3 * z @ self.rest.T),
                          torch.sin(3 * z @ self.rest.T + 1)], dim=1)


class SpanGenerator(nn.Module):
    """Planted ground truth for LatentCLR: its layer ``features`` moves the same way at every code only along a
    known 3-dimensional span of z (a linear block); along the other 5 directions of z it moves by sines whose
    change depends on the code. A constant block keeps the features' norm near constant, so normalising them
    (the identity projector) does not blur that. Directions that change the features consistently, each in its
    own way, are the span's."""

    z_dim, w_dim, num_ws, has_mapping = 8, 8, 1, False

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(5)
        basis = torch.linalg.qr(torch.randn(8, 8, generator=g))[0].T
        self.features = _SpanFeatures(basis[:3].clone(), basis[3:].clone())

    def mapping(self, z: torch.Tensor) -> torch.Tensor:
        return z[:, None, :]

    def synthesis(self, ws: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.features(ws[:, 0])[:, :16]).reshape(-1, 1, 4, 4)


def span_generator() -> SpanGenerator:
    return SpanGenerator()


def subspace_cosines(found: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Cosines of the principal angles between the row spans of ``found`` and of orthonormal ``truth``."""
    basis = np.linalg.qr(np.asarray(found, np.float64).T)[0]
    return np.linalg.svd(truth @ basis, compute_uv=False)


@pytest.fixture(scope="module")
def span_store(tmp_path_factory):
    return engine.sample(str(tmp_path_factory.mktemp("clr") / "span.zarr"), SPAN_SPEC, [], n=2048, chunk=1024,
                         progress=False)


@pytest.fixture(scope="module")
def digits_store(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("clr") / "digits.zarr")
    return engine.sample(path, "digits", ["digits", "imagestats"], n=2048, seed=0, chunk=1024, batch=1024,
                         spaces=["z", "w"], progress=False)


@pytest.fixture(scope="module")
def digits_run(digits_store):
    """K = 8 global directions on the digits GAN's first convolution, 100 steps."""
    return latentclr(digits_store, layer="up1", k=8, batch=8, steps=100, save_every=100, lr=1e-2, alpha=1.0,
                     progress=False)


# ---------------------------------------------------------------------------------------------- the loss
def test_loss_is_the_papers_formula_on_a_tiny_batch():
    K, B, F, tau = 3, 4, 5, 2.0
    h = torch.randn(K, B, F, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    h = h / h.norm(dim=-1, keepdim=True)
    loss, accuracy = contrastive_loss(h, tau)
    H = h.numpy()
    terms, wins = [], []
    for k in range(K):
        for i in range(B):
            pos = [np.exp(abs(H[k, i] @ H[k, j]) / tau) for j in range(B) if j != i]
            neg = [np.exp(abs(H[k, i] @ H[l, j]) / tau) for l in range(K) if l != k for j in range(B)]
            terms.append(-np.log(sum(pos) / sum(neg)))                      # the paper's sums
            wins.append(np.mean(pos) > np.mean(neg))
    # The public code's means differ from the paper's sums by a constant (module docstring).
    np.testing.assert_allclose(float(loss), np.mean(terms) - np.log((K - 1) * B / (B - 1)), rtol=1e-12)
    assert float(accuracy) == pytest.approx(np.mean(wins)) and 0 < np.mean(wins) < 1


def test_the_public_codes_temperature_is_a_factor_half():
    h = torch.nn.functional.normalize(torch.randn(4, 3, 6, dtype=torch.float64), dim=-1)
    flat = h.reshape(12, 6)
    sim = torch.exp((flat @ flat.T).abs() * 0.5)                      # colat/loss.py with temp 0.5, reduce mean
    mask = torch.block_diag(*[torch.ones(3, 3)] * 4).bool()
    eye = torch.eye(12).bool()
    pos = sim.masked_select(mask & ~eye).view(12, -1).mean(-1)
    neg = sim.masked_select(~mask).view(12, -1).mean(-1)
    torch.testing.assert_close(contrastive_loss(h, module.TEMPERATURE)[0], -torch.log(pos / neg).mean())


# ---------------------------------------------------------------------------------------------- ground truth
def test_global_directions_recover_a_planted_span(span_store):
    truth = SpanGenerator().features.span.double().numpy()
    result = latentclr(span_store, layer="features", k=3, batch=16, steps=150, save_every=150, lr=1e-2, alpha=0.5,
                       progress=False)
    assert result["space"] == "z" and result["directions"].shape == (3, 8)
    cosines = subspace_cosines(result["directions"], truth)
    assert cosines.min() >= 0.95, cosines
    start = latentclr(span_store, layer="features", k=3, batch=16, steps=1, lr=1e-2, alpha=0.5, name="start",
                      progress=False)                              # the same seed's initial directions do not
    assert subspace_cosines(start["directions"], truth).min() < 0.9


# ---------------------------------------------------------------------------------------------- digits
def test_digits_directions_are_distinct_and_the_loss_falls(digits_store, digits_run):
    directions, attrs = Store.open(digits_store.path).read_direction("latentclr/up1")
    assert directions.shape == (8, 64)
    np.testing.assert_allclose(np.linalg.norm(directions, axis=1), 1, atol=1e-6)
    cosines = np.abs(directions @ directions.T)[~np.eye(8, dtype=bool)]
    assert cosines.max() < 0.6, cosines.max()
    assert digits_run["loss"][-20:].mean() < digits_run["loss"][:20].mean() - 0.02
    assert attrs["space"] == "w" and attrs["method"] == "latentclr" and attrs["tapped_layer"] == "up1"
    assert attrs["seed"] == 0 and attrs["k"] == 8 and attrs["z_dependent"] is False and attrs["model"] is None
    assert attrs["loss_last"] < attrs["loss_first"] and len(attrs["loss_curve"]) <= module.CURVE_POINTS


def test_digits_directions_change_digit_attributes_under_rescoring(digits_store, digits_run):
    moved = []
    for row in range(8):          # raw α = ±3 as the paper edits (the directions' σ in w is small: see README)
        result = engine.edit(digits_store, f"latentclr/up1:{row}", alphas="-3,3,3", units="raw", samples=16,
                             rescore=True, overwrite=True)
        moved.append(np.nanmax(np.abs(result["rescore"]) / result["attribute_std"]))
    assert sum(m > 0.3 for m in moved) >= 3, moved          # an attribute moves by > 0.3 of its std in the store


def test_the_report_shows_latentclr_directions_edit_grids_and_rescoring(digits_store, digits_run, tmp_path):
    engine.edit(digits_store, "latentclr/up1:0", alphas="-3,3,3", units="raw", samples=4, rescore=True,
                overwrite=True)
    page = engine.report(digits_store, tmp_path / "report", per_method=1, samples=2, progress=False)
    text = page.read_text()
    assert "pair accuracy" in text and "latentclr/up1: training loss" in text          # directions table, curve
    assert "latentclr/up1:0 (direction 0)" in text                                      # its edit grid
    assert "tables/rescore_latentclr_up1: re-scoring along latentclr/up1:0" in text    # and its re-scoring


def test_correlate_matches_latentclr_against_interfacegan_sefa_and_ganspace(digits_store, digits_run):
    engine.boundaries(digits_store, space="w", ratio=0.1)
    engine.sefa(generator="digits", store=digits_store.path, k=8)
    engine.pca(digits_store, array="latents/w", k=8)
    engine.correlate(digits_store, overwrite=True)
    tables = Store.open(digits_store.path).tables()
    for table in ("match_interfacegan_vs_latentclr_up1", "match_ganspace_vs_latentclr_up1",
                  "match_latentclr_vs_sefa_layer_fc"):
        assert table in tables, tables
    reader = Store.open(digits_store.path)
    values, attrs = reader.read_table("match_interfacegan_vs_latentclr_up1")
    boundaries = [key for key in reader.directions() if key.startswith("interfacegan/")]
    assert values.shape[0] == len(boundaries) and ((values[:, 1] >= 0) & (values[:, 1] <= 1)).all()


# ---------------------------------------------------------------------------------------------- z-dependent
@pytest.mark.parametrize("kind", ["linear", "nonlinear"])
def test_z_dependent_models_are_stored_edited_per_code_and_exported(span_store, kind, tmp_path):
    result = latentclr(span_store, layer="features", model=kind, projector="linear", **FAST)
    name = f"features_{kind}"
    reader = Store.open(span_store.path)
    summary, attrs = reader.read_direction(f"latentclr/{name}")
    assert attrs["z_dependent"] is True and attrs["model"] == f"models/latentclr/{name}"
    _, model_attrs = read_group(reader, attrs["model"])
    assert model_attrs["kind"] == kind and model_attrs["k"] == 8 and model_attrs["size"] == 8
    model = load_direction_model(reader, f"latentclr/{name}")
    pool = np.asarray(reader.latent_array("z")[:module.SUMMARY_ROWS], np.float32)
    mean = model.at(pool, 2).mean(axis=0)
    np.testing.assert_allclose(summary[2], mean / np.linalg.norm(mean), atol=1e-5)
    edited = engine.edit(span_store, f"latentclr/{name}:2", alphas="1,1,1", units="raw", samples=5, stored=True)
    z = np.asarray(reader.latent_array("z")[:5], np.float64)
    steps = edited["codes"][:, 0].astype(np.float64) - z
    np.testing.assert_allclose(steps, model.at(z, 2), atol=1e-5)            # x + 1·d(x), d at each code
    assert np.abs(steps @ steps.T - np.eye(5)).max() > 1e-3                 # and the codes' d differ
    assert result["directions"].shape == (8, 8)
    exported_by = CliRunner().invoke(cli, ["export", span_store.path, "--format", "latentclr", str(tmp_path)])
    assert exported_by.exit_code == 0, exported_by.output
    written = exported_by.output.splitlines()
    exported = np.load(tmp_path / f"{name}_latentclr.npz")
    np.testing.assert_array_equal(exported["directions"], summary)
    for param, value in read_group(reader, attrs["model"])[0].items():
        np.testing.assert_array_equal(exported[f"model.{param}"], value)
    record = json.loads((tmp_path / f"{name}_latentclr.json").read_text())
    assert record["model"]["kind"] == kind and record["tapped_layer"] == "features" and record["space"] == "z"
    assert str(tmp_path / f"{name}_latentclr.npz") in written


# ---------------------------------------------------------------------------------------------- resume
def _stop_after(monkeypatch, calls: int) -> None:
    real = module._train_step
    count = {"n": 0}

    def failing(trainer):
        if count["n"] == calls:
            raise KeyboardInterrupt("stopped by the test")
        count["n"] += 1
        return real(trainer)
    monkeypatch.setattr(module, "_train_step", failing)


def test_a_stopped_and_resumed_run_ends_as_an_uninterrupted_one(span_store, monkeypatch):
    settings = dict(layer="features", model="linear", projector="linear", k=4, batch=8, steps=30, save_every=10,
                    alpha="0.5,2", progress=False)
    whole = latentclr(span_store, name="whole", **settings)
    _stop_after(monkeypatch, 17)                              # dies 7 steps after the save at step 10
    with pytest.raises(KeyboardInterrupt):
        latentclr(span_store, name="parts", **settings)
    reader = Store.open(span_store.path)
    assert "latentclr/parts" not in reader.directions()
    assert read_group(reader, "models/latentclr/parts.training")[1]["step"] == 10
    monkeypatch.undo()
    with pytest.raises(StoreError, match="pass resume=True"):
        latentclr(span_store, name="parts", **settings)
    resumed = latentclr(span_store, name="parts", resume=True, **settings)
    np.testing.assert_array_equal(resumed["directions"], whole["directions"])
    np.testing.assert_array_equal(resumed["loss"], whole["loss"])
    for name, value in read_group(reader, "models/latentclr/whole")[0].items():
        np.testing.assert_array_equal(read_group(reader, "models/latentclr/parts")[0][name], value)


def test_resume_refuses_other_settings_and_missing_runs(span_store):
    latentclr(span_store, layer="features", name="settled", **FAST)
    with pytest.raises(ValueError, match=r"^cannot resume latentclr run 'settled' with other settings: .*k 8 "
                                         r"\(asked 4\)"):
        latentclr(span_store, layer="features", name="settled", resume=True, **{**FAST, "k": 4})
    with pytest.raises(StoreError, match="has no latentclr run 'nothing' to resume"):
        latentclr(span_store, layer="features", name="nothing", resume=True, **FAST)
    more = latentclr(span_store, layer="features", name="settled", resume=True, **{**FAST, "steps": 50})
    assert more["loss"].size == 50                                  # more steps continue the same run


# ---------------------------------------------------------------------------------------------- refusals
@pytest.mark.parametrize("args, message", [
    (["--layer", "fcc"], "has no layer 'fcc'; did you mean fc"),
    (["--layer", "fc", "-k", "1"], "-k must be at least 2"),
    (["--layer", "fc", "-k", "0"], "-k must be a positive integer"),
    (["--layer", "fc", "--batch", "1"], "--batch must be at least 2"),
    (["--layer", "fc", "--alpha", "x"], "--alpha must be a number or LO,HI"),
    (["--layer", "fc", "--temperature", "0"], "--temperature must be a positive number"),
    (["--layer", "map.0"], "not run by the synthesis of w codes"),
])
def test_bad_input_is_one_line(digits_store, args, message):
    out = CliRunner().invoke(cli, ["latentclr", digits_store.path, *args, "--steps", "2"])
    assert out.exit_code == 1, out.output
    assert message in out.output and len(out.output.strip().splitlines()) == 1, out.output


def test_nan_codes_and_a_second_writer_are_refused_in_one_line(span_store, tmp_path):
    import shutil

    import zarr

    copy = str(tmp_path / "nan.zarr")
    shutil.copytree(span_store.path, copy)
    zarr.open_group(copy, mode="r+")["latents/z"][5, 2] = np.nan
    with pytest.raises(ValueError, match=r"latents/z row 5 is not finite"):
        latentclr(copy, layer="features", k=2, batch=2, steps=1, name="nan", progress=False)
    with StoreLock(span_store.path, purpose="a test"):
        out = CliRunner().invoke(cli, ["latentclr", span_store.path, "--layer", "features", "-k", "2",
                                       "--steps", "1", "--name", "locked"])
    assert out.exit_code == 1 and len(out.output.strip().splitlines()) == 1, out.output
    assert "a test" in out.output
    with StoreLock(span_store.path, purpose="a test"):
        with pytest.raises(LockError):
            latentclr(span_store, layer="features", k=2, batch=2, steps=1, name="locked", progress=False)


def test_the_command_prints_json_and_its_help_has_examples(span_store):
    out = CliRunner().invoke(cli, ["latentclr", span_store.path, "--layer", "features", "-k", "2", "--batch", "4",
                                   "--steps", "3", "--name", "cli", "--json"])
    assert out.exit_code == 0, out.output
    summary = json.loads(out.output)
    assert summary["direction"] == "latentclr/cli" and summary["space"] == "z" and summary["steps"] == 3
    again = CliRunner().invoke(cli, ["latentclr", span_store.path, "--layer", "features", "-k", "2", "--steps",
                                     "3", "--name", "cli"])
    assert again.exit_code == 1 and "--overwrite" in again.output
    assert "Examples:" in CliRunner().invoke(cli, ["latentclr", "--help"]).output


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_the_step_on_cuda_matches_the_cpu(span_store):
    settings = dict(layer="features", k=3, batch=16, steps=20, save_every=20, lr=1e-2, alpha=0.5, progress=False,
                    overwrite=True)
    cpu = latentclr(span_store, name="on_cpu", device="cpu", **settings)
    gpu = latentclr(span_store, name="on_cuda", device="cuda", **settings)
    np.testing.assert_allclose(gpu["loss"], cpu["loss"], rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(gpu["directions"], cpu["directions"], atol=1e-3)
