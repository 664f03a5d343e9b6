"""invert: images back to codes (known ground truth and real digits), edits of inverted codes, resumption, errors."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import engine
from engine.cli import cli
from engine.methods.inversion import InversionSettings, Inverter, invert, learning_rate, noise_scale
from engine.models.base import synthesize
from engine.models.registry import load_generator
from engine.spaces import LatentSpace, synthesis_input
from engine.store import Store, StoreError
from tests.conftest import PLANTED_SMALL

STEPS = 150          # enough for the digits GAN to reach well under 1 % of the images' variance


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    """24 images the digits GAN made from stored w codes: (npy path, images, the codes)."""
    folder = tmp_path_factory.mktemp("inversion")
    source = engine.sample(str(folder / "source.zarr"), "digits", [], n=24, seed=5, chunk=24, batch=24,
                           spaces=["w"], progress=False)
    w = source.latent_array("w")[:]
    G = load_generator("digits")
    with torch.no_grad():
        images = synthesize(G, synthesis_input(G, torch.from_numpy(w), LatentSpace("w"))).numpy()
    np.save(folder / "generated.npy", images)
    return str(folder / "generated.npy"), images, w


def _rendered(store: Store, space: str) -> np.ndarray:
    G = load_generator(store.meta["generator"])
    codes = torch.from_numpy(store.latent_array(space)[:])
    with torch.no_grad():
        return synthesize(G, synthesis_input(G, codes.reshape(codes.shape[0], -1), LatentSpace(space))).numpy()


def _failing_on_chunk_1(real_call):
    """Inverter.__call__ that raises on chunk 1 (an injected crash) and inverts every other chunk."""
    def failing(self, targets, index, chunk):
        if index == 1:
            raise RuntimeError("injected failure in chunk 1")
        return real_call(self, targets, index, chunk)
    return failing


@pytest.mark.parametrize("space", ["w", "wp"])
def test_generated_images_invert_to_codes_that_regenerate_them(generated, tmp_path, space):
    path, images, _ = generated
    store = invert(path, tmp_path / "inv.zarr", "digits", space=space, steps=STEPS, chunk=12, batch=12,
                   keep_images=True, device="cpu", progress=False)
    again = _rendered(store, space)
    mse = ((again - images) ** 2).mean(axis=(1, 2, 3))
    assert mse.mean() <= 0.01 * images.var()                         # the bound: 1 % of the variance
    np.testing.assert_allclose(store.array("inversion/error")[:], mse, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(store.array("inversion/targets")[:], images, atol=1e-6)
    assert list(store.array("inversion/files")[:3]) == ["generated.npy[0]", "generated.npy[1]", "generated.npy[2]"]
    source = store.latent_source(space)
    assert source["kind"] == "inverted" and source["source"] == "inverted" and store.spaces == [space]
    assert store.complete and store.meta["inversion"]["settings"]["steps"] == STEPS
    assert store.meta["inversion"]["w_avg"]["source"] == "estimated" and store.meta["inversion"]["w_avg"]["seed"] == 0


def test_more_restarts_find_lower_errors(generated):
    _, images, _ = generated
    G = load_generator("digits")
    one = Inverter(G, InversionSettings(steps=40, restarts=1), "cpu", 24)(images, 0, 24)["error"]
    four = Inverter(G, InversionSettings(steps=40, restarts=4), "cpu", 24)(images, 0, 24)["error"]
    assert four.mean() < one.mean() and np.median(four) <= np.median(one)


def test_the_feature_loss_adds_the_weighted_mse_of_the_predictors_features(generated, tmp_path):
    from engine.models.digits import digits_predictor

    _, images, _ = generated
    G, P = load_generator("digits"), digits_predictor()
    inverter = Inverter(G, InversionSettings(feature_loss="digits", feature_weight=0.5), "cpu", 8, P)
    x, t = torch.from_numpy(images[:4]), torch.from_numpy(images[4:8])
    objective, pixel = inverter.losses(x, t, P.features(t))
    expected_pixel = ((images[:4] - images[4:8]) ** 2).mean(axis=(1, 2, 3))
    with torch.no_grad():
        expected_features = ((P.features(x) - P.features(t)) ** 2).mean(dim=1).numpy()
    np.testing.assert_allclose(pixel.detach().numpy(), expected_pixel, rtol=1e-5)
    np.testing.assert_allclose(objective.detach().numpy(), expected_pixel + 0.5 * expected_features, rtol=1e-5)
    store = invert(generated[0], tmp_path / "f.zarr", "digits", steps=STEPS, feature_loss="digits", chunk=24,
                   batch=24, device="cpu", progress=False)
    assert store.array("inversion/error")[:].mean() <= 0.01 * images.var()
    assert store.latent_source("w")["feature_loss"] == "digits"


def test_the_learning_rate_warms_up_then_decays_along_a_cosine_as_the_projector_does():
    steps, lr = 1000, 0.1
    rates = np.array([learning_rate(s, steps, lr) for s in range(steps)])
    assert rates[0] == 0 and rates[25] == pytest.approx(lr / 2) and rates[50:750].min() == pytest.approx(lr)
    assert np.all(np.diff(rates[750:]) <= 0) and rates[-1] < 1e-4 * lr
    assert learning_rate(875, steps, lr) == pytest.approx(lr / 2)            # halfway down the cosine
    assert noise_scale(0, steps, 2.0) == pytest.approx(0.1) and noise_scale(750, steps, 2.0) == 0.0
    assert noise_scale(375, steps, 2.0) == pytest.approx(0.1 * 0.25)


def test_default_batch_and_chunk_keep_memory_flat_for_large_images():
    from engine.methods.inversion import default_sizes

    assert default_sizes((1, 16, 16), "cpu", None, None) == (64, 1024)
    assert default_sizes((3, 1024, 1024), "cuda", None, None) == (16, 21)     # 21 targets of 12 MiB ≤ 256 MiB
    assert default_sizes((3, 1024, 1024), "cpu", None, None) == (4, 21)
    assert default_sizes((3, 1024, 1024), "cpu", 8, 5) == (8, 5)
    stylegan2_1024 = [("blocks.0.conv", 4)] + [(f"blocks.{i}.{part}", 4 << i) for i in range(1, 9)
                                               for part in ("up_conv", "conv")]
    # targets (12 MiB) + noise maps (10.7 MiB) a row: 11 rows ≤ 256 MiB, and the default batch shrinks to fit
    assert default_sizes((3, 1024, 1024), "cuda", None, None, stylegan2_1024) == (11, 11)
    assert default_sizes((3, 1024, 1024), "cpu", None, None, stylegan2_1024) == (4, 11)


def test_an_interrupted_inversion_resumes_to_the_same_store(generated, tmp_path, monkeypatch):
    path, _, _ = generated
    options = dict(space="w", steps=20, chunk=8, batch=8, device="cpu", progress=False, restarts=2)
    whole = invert(path, tmp_path / "whole.zarr", "digits", **options)
    real_call = Inverter.__call__
    failing = _failing_on_chunk_1(real_call)
    monkeypatch.setattr(Inverter, "__call__", failing)
    with pytest.raises(RuntimeError, match="injected"):
        invert(path, tmp_path / "cut.zarr", "digits", **options)
    assert Store.open(tmp_path / "cut.zarr").pending_chunks() == [1, 2]
    monkeypatch.setattr(Inverter, "__call__", real_call)
    with pytest.raises(StoreError, match="already exists"):
        invert(path, tmp_path / "cut.zarr", "digits", **options)
    with pytest.raises(StoreError, match=r"steps=20 \(--steps\), this run asks for 21"):
        invert(path, tmp_path / "cut.zarr", "digits", **{**options, "steps": 21}, resume=True)
    np.save(tmp_path / "other.npy", np.load(path))
    with pytest.raises(StoreError, match=r"inverted from .*generated.npy \(24 images\), this run gives .*other.npy"):
        invert(tmp_path / "other.npy", tmp_path / "cut.zarr", "digits", **options, resume=True)
    np.save(tmp_path / "same_path.npy", ((np.load(path) + 1) * 127.5).round().astype(np.uint8))   # same images
    with pytest.raises(StoreError, match=r"\(path .*generated.npy' -> .*same_path.npy'; values 'unit' -> 'uint8'\)"):
        invert(tmp_path / "same_path.npy", tmp_path / "cut.zarr", "digits", **options, resume=True)
    with pytest.raises(StoreError, match=r"keep_images=False \(--keep-images\), this run asks for True"):
        invert(path, tmp_path / "cut.zarr", "digits", **options, keep_images=True, resume=True)
    resumed = invert(path, tmp_path / "cut.zarr", "digits", **options, resume=True)
    assert resumed.complete
    for name in ("latents/w", "inversion/error", "inversion/files"):
        np.testing.assert_array_equal(resumed.array(name)[:], whole.array(name)[:])


def test_a_resume_starts_from_the_recorded_average_w_and_warns_when_numerics_differ(generated, tmp_path,
                                                                                      monkeypatch):
    from engine.methods import inversion

    path, _, _ = generated
    options = dict(space="w", steps=20, chunk=8, batch=8, device="cpu", progress=False)
    whole = invert(path, tmp_path / "whole.zarr", "digits", **options)
    real_call = Inverter.__call__
    monkeypatch.setattr(Inverter, "__call__", lambda self, targets, index, chunk: real_call(self, targets, index, chunk)
                        if index == 0 else (_ for _ in ()).throw(RuntimeError("injected")))
    with pytest.raises(RuntimeError, match="injected"):
        invert(path, tmp_path / "cut.zarr", "digits", **options)
    monkeypatch.setattr(Inverter, "__call__", real_call)
    cut = Store.open(tmp_path / "cut.zarr", mode="r+")
    with pytest.raises(StoreError, match=r"finish it with `latent-engine invert IMAGES .*cut.zarr --resume`"):
        cut.require_complete()
    recorded = cut.meta["inversion"]["w_avg"]
    w_avg, w_std = inversion.latent_stats(load_generator("digits"), 0, "cpu")
    np.testing.assert_array_equal(np.asarray(recorded["value"], np.float32), w_avg)
    assert recorded["w_std"] == w_std
    # Another device estimates another w_avg in the last bits; the resume must not start from it.
    monkeypatch.setattr(inversion, "latent_stats", lambda *a, **k: (w_avg + 1e-3, w_std * 1.01))
    cut.update_meta(numerics={**cut.meta["numerics"], "device_type": "cuda", "torch_threads": 99})
    with pytest.warns(UserWarning, match=r"device_type 'cuda' -> 'cpu'; torch_threads 99 -> 1"):
        resumed = invert(path, tmp_path / "cut.zarr", "digits", **options, resume=True)
    np.testing.assert_array_equal(resumed.array("latents/w")[:], whole.array("latents/w")[:])


def test_a_store_that_does_not_record_its_average_w_warns_that_the_resume_estimates_it_again(generated, tmp_path,
                                                                                              monkeypatch):
    path, _, _ = generated
    options = dict(space="w", steps=2, chunk=8, batch=8, device="cpu", progress=False)
    monkeypatch.setattr(Inverter, "__call__", lambda *a: (_ for _ in ()).throw(RuntimeError("stop")))
    with pytest.raises(RuntimeError):
        invert(path, tmp_path / "old.zarr", "digits", **options)
    monkeypatch.undo()
    old = Store.open(tmp_path / "old.zarr", mode="r+")
    inversion = old.meta["inversion"]
    del inversion["w_avg"]["value"]                   # as stores written before the value was recorded
    old.update_meta(inversion=inversion)
    with pytest.warns(UserWarning, match="does not record the average w its starts used: it is estimated again"):
        assert invert(path, tmp_path / "old.zarr", "digits", **options, resume=True).complete


def test_a_cluster_run_records_the_workers_device_not_the_clients(generated, tmp_path, monkeypatch):
    import dataclasses
    from contextlib import contextmanager

    import engine.distributed
    import engine.runtime
    from engine.distributed import ClusterHandle, ClusterRequest
    from engine.runtime import RunStats, run_chunk

    path, _, _ = generated
    shipped = []

    @contextmanager
    def fake_cluster(workers=None, scheduler=None, gpus=None, config=None):
        yield ClusterHandle(client=None, request=ClusterRequest("cuda", gpus=(0,)), startup_s=0.0, threads={},
                            default_threads=1)

    def fake_run_on_dask(job, store_path, chunks, handle, on_chunk=None):
        shipped.append(job.models)
        job = dataclasses.replace(job, models=dataclasses.replace(job.models, device="cpu"))   # no GPU here
        stats = RunStats(seconds=1.0)
        for index in chunks:
            stats.add(*run_chunk(job, store_path, index))
        return stats

    monkeypatch.setattr(engine.distributed, "validate_cluster_flags", lambda *a: ClusterRequest("cuda", gpus=(0,)))
    monkeypatch.setattr(engine.distributed, "cluster_client", fake_cluster)
    monkeypatch.setattr(engine.runtime, "run_on_dask", fake_run_on_dask)
    store = invert(path, tmp_path / "gpus.zarr", "digits", space="w", steps=5, chunk=24, batch=24, gpus="0",
                   progress=False)
    assert [specs.device for specs in shipped] == ["cuda"]
    assert store.meta["device"] == "cuda" and store.meta["numerics"]["device_type"] == "cuda"


def test_a_chunk_shipped_as_a_dask_task_writes_what_the_in_process_run_wrote(generated, tmp_path, monkeypatch):
    import pickle

    from engine.images import open_images
    from engine.methods.inversion import InversionJob, InverterSpecs
    from engine.runtime import run_chunk

    path, _, _ = generated
    options = dict(space="wp", steps=10, chunk=8, batch=8, device="cpu", progress=False)
    whole = invert(path, tmp_path / "whole.zarr", "digits", **options)
    monkeypatch.setattr(Inverter, "__call__", lambda *a: (_ for _ in ()).throw(RuntimeError("stop")))
    with pytest.raises(RuntimeError):
        invert(path, tmp_path / "task.zarr", "digits", **options)
    settings = InversionSettings(space="wp", steps=10)
    job = InversionJob(open_images(path), "wp", 16, 1, models=InverterSpecs("digits", settings, "cpu", 8))
    monkeypatch.undo()
    shipped = pickle.loads(pickle.dumps(job))        # what Dask sends: SPECs, paths and names, no models
    for index in (2, 0, 1):
        run_chunk(shipped, str(tmp_path / "task.zarr"), index)
    task = Store.open(tmp_path / "task.zarr")
    assert task.complete
    np.testing.assert_array_equal(task.array("latents/wp")[:], whole.array("latents/wp")[:])
    np.testing.assert_array_equal(task.array("inversion/error")[:], whole.array("inversion/error")[:])


def test_a_stylegan2_file_inverts_in_w_plus_and_records_its_hash(tmp_path):
    from tests.stylegan2_checkpoints import rosinality_state

    torch.save({"g_ema": rosinality_state(size=16, seed=2), "latent_avg": torch.full((32,), 0.01)}, tmp_path / "g.pt")
    spec = f"stylegan2:{tmp_path / 'g.pt'}"
    G = load_generator(spec)
    assert G.num_ws > 1                                   # W+ really is one code per layer here
    z = torch.randn(6, G.z_dim, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        images = synthesize(G, G.mapping(z)).numpy()
    np.save(tmp_path / "targets.npy", images)
    store = invert(tmp_path / "targets.npy", tmp_path / "inv.zarr", spec, space="wp", steps=60, device="cpu",
                   progress=False)
    assert store.meta["inversion"]["w_avg"]["source"] == "the generator's file"
    assert store.meta["generator_file"]["sha256"] == G.sha256 and store.latent_array("wp").shape == (6, G.num_ws,
                                                                                                    G.w_dim)
    # A randomly initialised network (its images clamped at ±1) is no digits GAN: the check here is that the
    # optimisation moves well away from its start (one step: the learning rate is 0 at step 0, the average w).
    start = invert(tmp_path / "targets.npy", tmp_path / "start.zarr", spec, space="wp", steps=1, device="cpu",
                   progress=False)
    assert store.array("inversion/error")[:].mean() < 0.3 * start.array("inversion/error")[:].mean()
    with pytest.raises(ValueError, match="random noise"):
        invert(tmp_path / "targets.npy", tmp_path / "r.zarr", spec + ",noise=random", device="cpu", progress=False,
               optimize_noise=False)
    # optimised maps replace every noise input, so a noise=random generator's inversion replays exactly
    random = invert(tmp_path / "targets.npy", tmp_path / "r.zarr", spec + ",noise=random", space="wp", steps=5,
                    device="cpu", progress=False, optimize_noise=True)
    G_random = load_generator(random.meta["generator"])
    with torch.no_grad():
        replayed = synthesize(G_random, torch.from_numpy(random.latent_array("wp")[:]),
                              noise_maps=[torch.from_numpy(m) for m in random.read_noise_maps(slice(0, 6))]).numpy()
    np.testing.assert_allclose(((replayed - images) ** 2).mean(axis=(1, 2, 3)), random.array("inversion/error")[:],
                               rtol=1e-5, atol=1e-7)
    torch.save({"g_ema": rosinality_state(size=16, seed=3)}, tmp_path / "other.pt")
    other = engine.sample(str(tmp_path / "other.zarr"), f"stylegan2:{tmp_path / 'other.pt'}", [], n=8, chunk=8,
                          spaces=["w"], progress=False)
    other_store = Store.open(other.path, mode="r+")
    other_store.write_direction("custom", "d", np.eye(1, G.w_dim, dtype=np.float32), {"space": "w"})
    with pytest.raises(ValueError, match="another generator file"):
        engine.edit(store.path, "custom/d", direction_from=other.path, stored=True)


@pytest.mark.parametrize("make, message", [
    (lambda d: str(d), "holds no PNG or JPEG files"),
    (lambda d: ((d / "x.png").write_bytes(b"\x89PNG broken"), str(d))[1], "cannot read"),
    (lambda d: (np.save(d / "a.npy", np.zeros((3, 2, 16, 16), np.float32)), str(d / "a.npy"))[1], "(3, 2, 16, 16)"),
])
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, make, message):
    folder = tmp_path / "in"
    folder.mkdir()
    result = CliRunner().invoke(cli, ["invert", make(folder), str(tmp_path / "out.zarr"), "-g", "digits"])
    assert result.exit_code == 1 and message in result.output
    assert result.output.startswith("Error: ") and result.output.count("\n") == 1
    assert not (tmp_path / "out.zarr").exists()


def test_bad_settings_name_the_flag(generated, tmp_path):
    path, _, _ = generated
    for args, message in ((["--steps", "0"], "--steps must be a positive integer"),
                          (["--lr", "-1"], "--lr must be a finite positive number"),
                          (["--space", "z", "--restarts", "0"], "--restarts"),
                          (["--noise-weight", "-1"], "--noise-weight must be a finite non-negative number"),
                          (["--noise-weight", "inf"], "--noise-weight must be a finite non-negative number"),
                          (["--noise-weight", "nan"], "--noise-weight must be a finite non-negative number")):
        result = CliRunner().invoke(cli, ["invert", path, str(tmp_path / "x.zarr"), "-g", "digits", *args])
        assert result.exit_code == 1 and message in result.output, result.output
    assert not (tmp_path / "x.zarr").exists()


@pytest.fixture(scope="module")
def digits_demo(tmp_path_factory):
    """A sampled digits store with InterFaceGAN boundaries in w for three digits (the edit's directions)."""
    path = tmp_path_factory.mktemp("demo") / "demo.zarr"
    engine.sample(str(path), "digits", ["digits"], n=4000, seed=0, chunk=2000, batch=500, spaces=["w"],
                  progress=False)
    engine.boundaries(str(path), space="w", attributes=["digit_2", "digit_3", "digit_7"], ratio=0.1)
    return str(path)


def test_real_digits_invert_and_edits_along_a_digit_boundary_make_that_digit(digits_demo, tmp_path):
    from engine.models.digits import digits_predictor
    from engine.models.train_digits import heldout_split, load_digit_images

    images, labels = load_digit_images()
    _, held = heldout_split(len(images), 0)
    held = held[:32]
    np.save(tmp_path / "real.npy", images[held].numpy())
    store = invert(tmp_path / "real.npy", tmp_path / "real.zarr", "digits", space="w", steps=STEPS, chunk=32,
                   batch=32, device="cpu", progress=False)
    targets, truth = images[held].numpy(), labels[held].numpy()
    error = store.array("inversion/error")[:]
    assert error.mean() <= 0.02 * targets.var()           # measured (benchmarks/bench_inversion.py): about 0.5 %
    P = digits_predictor()
    with torch.no_grad():
        assert (P.logits(torch.from_numpy(_rendered(store, "w"))).argmax(1).numpy() == truth).mean() >= 0.9
    rates = []
    for digit in (2, 3, 7):
        result = engine.edit(store.path, f"interfacegan/digit_{digit}@w", direction_from=digits_demo, stored=True,
                             samples=32, alphas="0,20,11", distance=True)
        edited = result["images"]
        with torch.no_grad():
            top = P.logits(edited.reshape(-1, *edited.shape[2:])).argmax(1).reshape(edited.shape[:2]).numpy()
        others = truth != digit
        rates.append((top[others] == digit).any(axis=1).mean())
    assert np.mean(rates) >= 0.75, rates


def test_edit_refuses_directions_of_another_generator(generated, digits_demo, tmp_path):
    planted = engine.sample(str(tmp_path / "planted.zarr"), PLANTED_SMALL, ["planted"], n=200, chunk=200,
                            progress=False)
    engine.boundaries(planted.path, attributes=["age"], num=40)
    inverted = invert(generated[0], tmp_path / "inv.zarr", "digits", steps=2, device="cpu", progress=False)
    with pytest.raises(ValueError, match="was made with generator 'planted"):
        engine.edit(inverted.path, "interfacegan/age", direction_from=planted.path, stored=True)
    sampled = engine.sample(str(tmp_path / "z.zarr"), "digits", [], n=50, chunk=50, spaces=["z"], progress=False)
    Store.open(sampled.path, mode="r+").write_direction("custom", "in_z", np.eye(1, 64, dtype=np.float32),
                                                        {"space": "z"})
    with pytest.raises(ValueError, match="stores w codes, no z codes"):
        engine.edit(inverted.path, "custom/in_z", direction_from=sampled.path, stored=True)


def test_invert_json_reports_the_error_summary(generated, tmp_path):
    result = CliRunner().invoke(cli, ["invert", generated[0], str(tmp_path / "j.zarr"), "-g", "digits", "--steps",
                                      "3", "--device", "cpu", "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["n"] == 24 and payload["error"]["rows"] == 24 and math.isfinite(payload["error"]["mean"])
    assert payload["noise_maps"] == []                      # the digits GAN has no noise inputs


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_inversion_matches_the_cpu_reference(generated, tmp_path):
    path, images, _ = generated
    options = dict(space="w", steps=STEPS, chunk=24, batch=24, progress=False)
    cpu = invert(path, tmp_path / "cpu.zarr", "digits", device="cpu", **options)
    gpu = invert(path, tmp_path / "gpu.zarr", "digits", device="cuda", **options)
    assert gpu.meta["device"].startswith("cuda")
    # Different streams of step noise and float order: the same optimum within the bound, not the same bits.
    assert gpu.array("inversion/error")[:].mean() <= 0.01 * images.var()
    np.testing.assert_allclose(gpu.array("inversion/error")[:].mean(), cpu.array("inversion/error")[:].mean(),
                               rtol=0.5)


def test_report_of_an_inverted_store_shows_targets_reconstructions_errors_and_edits(generated, digits_demo,
                                                                                     tmp_path):
    from engine.reporting import report

    store = invert(generated[0], tmp_path / "inv.zarr", "digits", steps=30, keep_images=True, device="cpu",
                   progress=False)
    edited = engine.edit(store.path, "interfacegan/digit_3@w", direction_from=digits_demo, stored=True, samples=3,
                         rescore=True)
    assert edited["attributes"][3] == "digit_3" and edited["rescore"][-1, 3] > edited["rescore"][0, 3]
    page = report(store.path, tmp_path / "site", samples=3, progress=False).read_text()
    assert "<h2>Inversion</h2>" in page and "generated.npy[" in page and "target" not in page.split("<h2>")[0]
    assert (tmp_path / "site/images/inversion_reconstructions.png").is_file()
    assert (tmp_path / "site/images/inversion_interfacegan_digit_3_w_edit.png").is_file()
    with_other = report(store.path, tmp_path / "site2", samples=2, per_method=1, direction_from=digits_demo,
                        progress=False).read_text()
    assert with_other.count("(from ") >= 2          # the recorded edit and the demo's strongest direction
    result = CliRunner().invoke(cli, ["report", store.path, "--out", str(tmp_path / "site3"), "--samples", "2",
                                      "--per-method", "1", "--direction-from", digits_demo, "-q"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "site3/index.html").read_text().count("(from ") == with_other.count("(from ")


def test_info_of_an_inverted_store_shows_its_source_speed_and_errors(generated, tmp_path):
    path, _, _ = generated
    store = invert(path, str(tmp_path / "inv.zarr"), "digits", space="w", steps=5, chunk=12, progress=False)
    errors = store.array("inversion/error")[:].astype(np.float64)
    result = CliRunner().invoke(cli, ["info", store.path, "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["inversion"]["rows"] == 24
    assert summary["inversion"]["mean"] == pytest.approx(errors.mean())
    assert summary["inversion"]["max"] == pytest.approx(errors.max())
    assert summary["images_per_s"] > 0
    text = CliRunner().invoke(cli, ["info", store.path]).output
    assert f"inverted from {path}, 5 steps, 1 restart(s)" in text
    assert f"mean {errors.mean():.4g}" in text and "images/s" in text


def test_an_edit_records_its_direction_store_absolutely_and_the_report_notes_one_it_cannot_open(generated, tmp_path,
                                                                                                 monkeypatch):
    import shutil

    from engine.reporting import report

    inverted = invert(generated[0], tmp_path / "inv.zarr", "digits", steps=5, chunk=24, batch=24, device="cpu",
                      progress=False)
    (tmp_path / "dirs").mkdir()
    other = engine.sample(str(tmp_path / "dirs" / "other.zarr"), "digits", ["digits"], n=32, chunk=32,
                          spaces=["w"], progress=False)
    w_dim = load_generator("digits").w_dim
    Store.open(other.path, mode="r+").write_direction("custom", "d", np.eye(1, w_dim, dtype=np.float32),
                                                      {"space": "w"})
    monkeypatch.chdir(tmp_path / "dirs")
    engine.edit(inverted.path, "custom/d", direction_from="other.zarr", stored=True, samples=2, rescore=True)
    recorded = [Store.open(inverted.path).read_table(t)[1].get("direction_from") for t in Store.open(inverted.path)
                .tables()]
    assert recorded == [str(tmp_path / "dirs" / "other.zarr")]
    monkeypatch.chdir(tmp_path)                       # the report runs from another folder
    page = report(inverted.path, tmp_path / "site", samples=2, progress=False).read_text()
    assert f"custom/d (from {tmp_path / 'dirs' / 'other.zarr'})" in page
    shutil.move(tmp_path / "dirs" / "other.zarr", tmp_path / "moved.zarr")
    page = report(inverted.path, tmp_path / "site2", samples=2, progress=False).read_text()
    assert "The edit along custom/d is skipped: its directions' store" in page and "cannot be opened" in page
    assert "<h2>Inversion</h2>" in page and "custom/d (from" not in page


# ---------------------------------------------------------------------------------------------- noise maps
def _projector_regularization(noise: np.ndarray) -> float:
    """StyleGAN2's projector regulariser of ONE map (r, r), written out with explicit shifts and 2×2 means."""
    total = 0.0
    while True:
        total += np.mean(noise * np.roll(noise, 1, axis=1)) ** 2 + np.mean(noise * np.roll(noise, 1, axis=0)) ** 2
        if noise.shape[0] <= 8:
            return total
        r = noise.shape[0] // 2
        noise = noise.reshape(r, 2, r, 2).mean(axis=(1, 3))


def test_the_noise_regulariser_is_the_projectors_per_image_and_normalising_gives_mean_0_variance_1():
    from engine.methods.inversion import noise_regularization, normalize_noise_

    rng = np.random.default_rng(0)
    maps = [rng.standard_normal((3, 1, r, r)) for r in (4, 16, 32)]
    maps[1][1, 0] += np.linspace(0, 3, 16)            # image 1 has structure at 16² (and so at 8² after pooling)
    got = noise_regularization([torch.from_numpy(m) for m in maps]).numpy()
    expected = [sum(_projector_regularization(m[i, 0]) for m in maps) for i in range(3)]
    np.testing.assert_allclose(got, expected, rtol=1e-10)
    assert got[1] > 10 * max(got[0], got[2])         # coherent structure is what it penalises
    tensors = [torch.from_numpy(m.copy()) for m in maps]
    normalize_noise_(tensors)
    for t in tensors:
        np.testing.assert_allclose(t.mean(dim=(1, 2, 3)).numpy(), 0, atol=1e-12)
        np.testing.assert_allclose(t.square().mean(dim=(1, 2, 3)).numpy(), 1, rtol=1e-12)


@pytest.fixture(scope="module")
def noisy_stylegan2(tmp_path_factory):
    """A random-weight StyleGAN2 file (noise inputs at 4², 8², 16²) and 4 real digits as 16×16 RGB targets."""
    from sklearn.datasets import load_digits

    from tests.stylegan2_checkpoints import rosinality_state

    folder = tmp_path_factory.mktemp("noisy")
    torch.save({"g_ema": rosinality_state(size=16, seed=2), "latent_avg": torch.full((32,), 0.01)}, folder / "g.pt")
    digits = load_digits().images[:4] / 16 * 2 - 1
    targets = np.kron(digits, np.ones((2, 2)))[:, None].repeat(3, axis=1).astype(np.float32)
    np.save(folder / "digits.npy", targets)
    return f"stylegan2:{folder / 'g.pt'}", str(folder / "digits.npy"), targets


def test_noise_maps_are_optimised_stored_normalised_and_replay_the_stored_error(noisy_stylegan2, tmp_path):
    from engine.models.base import noise_inputs

    spec, path, targets = noisy_stylegan2
    G = load_generator(spec)
    # 3 restarts in batches of 3 rows: each image keeps the maps of its best restart, not of restart 0
    store = invert(path, tmp_path / "inv.zarr", spec, space="w", steps=30, restarts=3, batch=3, device="cpu",
                   progress=False, optimize_noise=True)
    assert [tuple(layer) for layer in store.noise_layers()] == list(noise_inputs(G)) and len(store.noise_layers()) == 5
    record = store.meta["inversion"]["noise_inputs"]
    assert record["optimised"] and record["weight"] == 1e5 and record["layers"][0] == ["blocks.0.conv", 4]
    maps = store.read_noise_maps(slice(0, 4))
    for values, (name, r) in zip(maps, noise_inputs(G)):
        assert values.shape == (4, 1, r, r)
        # one shard per store chunk, one row per inner chunk: explore reads the rows it shows, not their chunks
        array = store.array(f"inversion/noise/{name}")
        assert array.shards == (store.chunk, 1, r, r) and array.chunks == (1, 1, r, r)
        np.testing.assert_allclose(values.mean(axis=(1, 2, 3)), 0, atol=1e-5)
        np.testing.assert_allclose(values.std(axis=(1, 2, 3)), 1, rtol=1e-4)
    ws = G.truncate(torch.from_numpy(store.latent_array("w")[:]))
    with torch.no_grad():
        with_maps = synthesize(G, ws, noise_maps=[torch.from_numpy(m) for m in maps]).numpy()
        own_noise = synthesize(G, ws).numpy()
    error = store.array("inversion/error")[:]
    np.testing.assert_allclose(((with_maps - targets) ** 2).mean(axis=(1, 2, 3)), error, rtol=1e-5, atol=1e-7)
    assert np.abs(((own_noise - targets) ** 2).mean(axis=(1, 2, 3)) - error).min() > 1e-3   # the maps matter

    fixed = invert(path, tmp_path / "fixed.zarr", spec, space="w", steps=30, device="cpu", progress=False)
    assert fixed.noise_layers() == [] and "inversion/noise" not in [k for k, _ in fixed.group.members(max_depth=None)]
    assert fixed.meta["inversion"]["noise_inputs"] == "the generator's own (held fixed)"
    with pytest.warns(UserWarning, match="without optimize_noise .--optimize-noise. it changes nothing"):
        result = CliRunner().invoke(cli, ["invert", path, str(tmp_path / "cli.zarr"), "-g", spec, "--steps", "2",
                                          "--noise-weight", "10", "--device", "cpu", "-q"])
    assert result.exit_code == 0, result.output
    assert Store.open(tmp_path / "cli.zarr").noise_layers() == []
    result = CliRunner().invoke(cli, ["invert", path, str(tmp_path / "cli2.zarr"), "-g", spec, "--steps", "2",
                                      "--optimize-noise", "--noise-weight", "10", "--device", "cpu", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["noise_maps"] == [name for name, _ in noise_inputs(G)]
    assert Store.open(tmp_path / "cli2.zarr").meta["inversion"]["settings"]["noise_weight"] == 10
    with pytest.warns(UserWarning, match="no noise inputs"):
        digits = invert(path, tmp_path / "digits.zarr", "digits", steps=2, device="cpu", progress=False,
                        optimize_noise=True)
    assert digits.noise_layers() == [] and "no noise inputs" in digits.meta["inversion"]["noise_inputs"]


def test_the_regulariser_keeps_the_noise_maps_from_painting_the_target(noisy_stylegan2, tmp_path):
    """A random network cannot draw digits; unregularised 16² noise maps would (StyleGAN2 paper, appendix D)."""
    spec, path, targets = noisy_stylegan2
    grey = targets.mean(axis=1).ravel()

    def correlation(weight: float) -> float:
        store = invert(path, tmp_path / f"{weight}.zarr", spec, space="w", steps=60, device="cpu", progress=False,
                       optimize_noise=True, noise_weight=weight)
        finest = store.read_noise_maps(slice(0, 4))[-2:]            # the two 16² maps
        return max(abs(np.corrcoef(m[:, 0].ravel(), grey)[0, 1]) for m in finest)

    assert correlation(1e5) < 0.1
    assert correlation(1e-3) > 0.3


def test_an_interrupted_inversion_with_noise_maps_resumes_to_the_same_store(noisy_stylegan2, tmp_path, monkeypatch):
    spec, path, _ = noisy_stylegan2
    options = dict(space="wp", steps=8, chunk=2, batch=2, device="cpu", progress=False, optimize_noise=True)
    whole = invert(path, tmp_path / "whole.zarr", spec, **options)
    real_call = Inverter.__call__
    failing = _failing_on_chunk_1(real_call)
    monkeypatch.setattr(Inverter, "__call__", failing)
    with pytest.raises(RuntimeError, match="injected"):
        invert(path, tmp_path / "cut.zarr", spec, **options)
    monkeypatch.setattr(Inverter, "__call__", real_call)
    with pytest.raises(StoreError, match=r"optimize_noise=True \(--optimize-noise\), this run asks for False"):
        invert(path, tmp_path / "cut.zarr", spec, **{**options, "optimize_noise": False}, resume=True)
    with pytest.raises(StoreError, match=r"noise_weight=100000.0 \(--noise-weight\)"):
        invert(path, tmp_path / "cut.zarr", spec, **options, noise_weight=10.0, resume=True)
    resumed = invert(path, tmp_path / "cut.zarr", spec, **options, resume=True)
    assert resumed.complete
    for name, _ in whole.noise_layers():
        np.testing.assert_array_equal(resumed.array(f"inversion/noise/{name}")[:],
                                      whole.array(f"inversion/noise/{name}")[:])
    np.testing.assert_array_equal(resumed.array("inversion/error")[:], whole.array("inversion/error")[:])


@pytest.mark.filterwarnings("ignore:.*changes nothing")          # the point of this test
def test_settings_that_change_nothing_do_not_block_a_resume(noisy_stylegan2, generated, tmp_path, monkeypatch):
    """The noise weight of a run without noise maps, and the noise settings of a generator without noise inputs."""
    spec, path, _ = noisy_stylegan2
    real_call = Inverter.__call__
    failing = _failing_on_chunk_1(real_call)
    for generator, images, options in ((spec, path, dict(optimize_noise=False)), ("digits", generated[0],
                                                                                   dict(optimize_noise=True))):
        store = tmp_path / f"{generator.split(':')[0]}.zarr"
        common = dict(space="w", steps=3, chunk=2, batch=2, device="cpu", progress=False, **options)
        monkeypatch.setattr(Inverter, "__call__", failing)
        with pytest.raises(RuntimeError, match="injected"):
            invert(images, store, generator, **common)
        monkeypatch.setattr(Inverter, "__call__", real_call)
        changed = {"noise_weight": 3.0} if generator == spec else {"optimize_noise": False, "noise_weight": 3.0}
        assert invert(images, store, generator, **{**common, **changed}, resume=True).complete


def test_a_dask_task_of_a_stylegan2_file_writes_the_noise_maps_the_in_process_run_wrote(noisy_stylegan2, tmp_path,
                                                                                      monkeypatch):
    import pickle

    from engine.images import open_images
    from engine.methods.inversion import InversionJob, InverterSpecs
    from engine.models.base import noise_inputs
    from engine.runtime import run_chunk

    spec, path, _ = noisy_stylegan2
    options = dict(space="w", steps=6, chunk=2, batch=2, device="cpu", progress=False, optimize_noise=True)
    whole = invert(path, tmp_path / "whole.zarr", spec, **options)
    monkeypatch.setattr(Inverter, "__call__", lambda *a: (_ for _ in ()).throw(RuntimeError("stop")))
    with pytest.raises(RuntimeError):
        invert(path, tmp_path / "task.zarr", spec, **options)
    monkeypatch.undo()
    layers = noise_inputs(load_generator(spec))
    job = InversionJob(open_images(path), "w", 16, 3, noise_layers=layers,
                       models=InverterSpecs(spec, InversionSettings(space="w", steps=6, optimize_noise=True), "cpu", 2))
    shipped = pickle.loads(pickle.dumps(job))
    for index in (1, 0):
        run_chunk(shipped, str(tmp_path / "task.zarr"), index)
    task = Store.open(tmp_path / "task.zarr")
    assert task.complete and task.noise_layers() == whole.noise_layers()
    for name in ["inversion/error", *(f"inversion/noise/{layer}" for layer, _ in layers)]:
        np.testing.assert_array_equal(task.array(name)[:], whole.array(name)[:])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_noise_map_inversion_replays_on_the_cpu_reference(noisy_stylegan2, tmp_path):
    from engine.methods.inversion import noise_regularization, normalize_noise_

    maps = [torch.randn(3, 1, r, r, generator=torch.Generator().manual_seed(r)) for r in (4, 16, 32)]
    on_gpu = [m.cuda() for m in maps]
    torch.testing.assert_close(noise_regularization(on_gpu).cpu(), noise_regularization(maps), rtol=1e-4, atol=1e-9)
    normalize_noise_(maps)
    normalize_noise_(on_gpu)
    for a, b in zip(maps, on_gpu):
        torch.testing.assert_close(b.cpu(), a, rtol=1e-5, atol=1e-5)
    spec, path, targets = noisy_stylegan2
    gpu = invert(path, tmp_path / "gpu.zarr", spec, space="w", steps=30, device="cuda", progress=False,
                 optimize_noise=True)
    G = load_generator(spec)                                         # the CPU reference renders what cuda stored
    with torch.no_grad():
        images = synthesize(G, G.truncate(torch.from_numpy(gpu.latent_array("w")[:])),
                            noise_maps=[torch.from_numpy(m) for m in gpu.read_noise_maps(slice(0, 4))]).numpy()
    np.testing.assert_allclose(((images - targets) ** 2).mean(axis=(1, 2, 3)), gpu.array("inversion/error")[:],
                               rtol=1e-3, atol=1e-5)


def test_a_stylegan_v1_file_inverts_with_a_noise_map_per_layer_that_replays_its_error(noisy_stylegan2, tmp_path):
    from engine.models.base import noise_inputs
    from tests.stylegan_checkpoints import save_genforce_checkpoint

    _, path, targets = noisy_stylegan2
    save_genforce_checkpoint(tmp_path / "v1.pth", 16, seed=4)
    spec = f"stylegan:{tmp_path / 'v1.pth'}"
    G = load_generator(spec)
    store = invert(path, tmp_path / "v1.zarr", spec, space="wp", steps=10, device="cpu", progress=False,
                   optimize_noise=True)
    assert store.noise_layers() == [(f"layers.{i}", 4 << (i // 2)) for i in range(6)] == list(noise_inputs(G))
    with torch.no_grad():
        images = synthesize(G, torch.from_numpy(store.latent_array("wp")[:]),
                            noise_maps=[torch.from_numpy(m) for m in store.read_noise_maps(slice(0, 4))]).numpy()
    np.testing.assert_allclose(((images - targets) ** 2).mean(axis=(1, 2, 3)), store.array("inversion/error")[:],
                               rtol=1e-5, atol=1e-7)


def test_the_generators_own_images_invert_back_and_noise_maps_start_at_its_own_noise(noisy_stylegan2, tmp_path):
    """The projector starts at fresh N(0, 1) maps; starting at the file's noise is what keeps an image the
    generator made (with that noise) within reach of --optimize-noise."""
    spec, _, _ = noisy_stylegan2
    G = load_generator(spec)
    inverter = Inverter(G, InversionSettings(space="w", optimize_noise=True), "cpu", 4,
                        stats=(np.zeros(G.w_dim, np.float32), 1.0))
    z = torch.randn(4, G.z_dim, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ws = G.mapping(z)
        own = synthesize(G, ws)
        np.testing.assert_array_equal(synthesize(G, ws, noise_maps=[m.expand(4, -1, -1, -1) for m in
                                                                    inverter.start_noise()]).numpy(), own.numpy())
    np.save(tmp_path / "own.npy", own.numpy())
    errors = {maps: invert(tmp_path / "own.npy", tmp_path / f"{maps}.zarr", spec, space="w", steps=200,
                           device="cpu", progress=False, optimize_noise=maps).array("inversion/error")[:].mean()
              for maps in (False, True)}
    variance = own.numpy().var()
    # The default (the generator's own noise) is the known ground truth: its images invert back.
    assert errors[False] < 0.01 * variance, errors
    # Maps held white by the regulariser cannot keep the file's noise exactly, but stay close to it
    # (fresh N(0, 1) maps, as the projector starts, left 33 % of the variance).
    assert errors[True] < 0.15 * variance, errors


def test_ctrl_c_keeps_the_committed_chunks_and_says_how_to_resume(generated, tmp_path, monkeypatch):
    path, _, _ = generated
    real_call = Inverter.__call__

    def interrupted(self, targets, index, chunk):
        if index == 1:
            raise KeyboardInterrupt
        return real_call(self, targets, index, chunk)

    monkeypatch.setattr(Inverter, "__call__", interrupted)
    args = ["invert", path, str(tmp_path / "cut.zarr"), "-g", "digits", "--steps", "3", "--chunk", "8", "--device",
            "cpu", "-q"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 130 and "chunks committed so far are kept" in result.output, result.output
    assert "--resume" in result.output and result.output.count("\n") == 1
    assert Store.open(tmp_path / "cut.zarr").pending_chunks() == [1, 2]
    monkeypatch.setattr(Inverter, "__call__", real_call)
    assert CliRunner().invoke(cli, [*args, "--resume"]).exit_code == 0
    assert Store.open(tmp_path / "cut.zarr").complete


def test_the_progress_bar_follows_the_steps_of_each_batch(generated):
    path, images, _ = generated
    G = load_generator("digits")
    inverter = Inverter(G, InversionSettings(space="w", steps=40), "cpu", 4)
    seen = []
    inverter.on_step = seen.append
    inverter(images[:8], 0, 8)
    assert seen[0] == "chunk 0, batch 1/2, step 0/40" and seen[-1] == "chunk 0, batch 2/2, step 38/40"
    assert len(seen) == 2 * 20                    # a postfix twenty times a batch, whatever the steps
