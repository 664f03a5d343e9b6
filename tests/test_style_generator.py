"""The StyleGAN-family wrapper (truncation, noise, class, provenance, w_avg) and what the sampler does with it.

The networks here are small stand-ins with the family networks' interface, so these tests pin the wrapper's own
contract; tests/test_stylegan_files.py runs the real networks from files.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

import engine
from engine.models.stylegan_files import StyleGenerator, estimate_w_avg
from engine.store import StoreError


class TinyStyleNetwork(torch.nn.Module):
    """mapping_w: a fixed nonlinear map (+ class embedding); synthesis: a linear image of ws plus noise."""

    def __init__(self, z_dim=6, w_dim=5, num_ws=4, c_dim=0, has_w_avg=True, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.z_dim, self.w_dim, self.num_ws, self.c_dim = z_dim, w_dim, num_ws, c_dim
        self.img_resolution, self.img_channels = 4, 1
        self.map = torch.nn.Parameter(torch.randn(z_dim, w_dim, generator=g))
        self.embed = torch.nn.Parameter(torch.randn(max(c_dim, 1), w_dim, generator=g))
        self.out = torch.nn.Parameter(torch.randn(num_ws * w_dim, 16, generator=g) * 0.1)
        self.register_buffer("w_avg", torch.randn(w_dim, generator=g) if has_w_avg else torch.zeros(w_dim))
        self.register_buffer("noise_const", torch.randn(16, generator=g))
        self.has_w_avg = has_w_avg

    def mapping_w(self, z, c=None):
        w = torch.tanh(z @ self.map) + 0.5
        return w if c is None else w + c @ self.embed

    def synthesis(self, ws, noise="const", generator=None):
        x = ws.flatten(1) @ self.out
        if noise == "const":
            x = x + self.noise_const
        elif noise == "random":
            x = x + torch.randn(x.shape, generator=generator, device=x.device)
        return (x * 3).reshape(-1, 1, 4, 4)          # beyond [-1, 1] somewhere: the wrapper clamps


def wrap(network=None, **options):
    network = network or TinyStyleNetwork()
    state = {"synthesis.b4.conv1.affine.weight": torch.randn(3, network.w_dim)}
    return StyleGenerator(network.eval(), family="stylegan2", file_format="test", path="/x/g.pkl",
                          sha256="ab" * 32, state_affines=state, **options)


def test_truncation_is_a_lerp_towards_w_avg_on_the_first_cutoff_layers():
    G = wrap(truncation=0.5, truncation_cutoff=2)
    z = torch.randn(3, 6)
    w = G.mapping_w(z)
    ws = G.mapping(z)
    avg = G.network.w_avg
    torch.testing.assert_close(ws[:, :2], avg + 0.5 * (w[:, None] - avg).expand(-1, 2, -1))
    torch.testing.assert_close(ws[:, 2:], w[:, None].expand(-1, 2, -1))
    untruncated = wrap()
    torch.testing.assert_close(untruncated.mapping(z), w[:, None].expand(-1, 4, -1))


def test_synthesis_is_clamped_and_const_noise_makes_images_a_function_of_the_codes():
    G = wrap()
    ws = G.mapping(torch.randn(2, 6))
    images = G.synthesis(ws)
    assert images.min() >= -1 and images.max() <= 1
    assert torch.equal(images, G.synthesis(ws))


def test_random_noise_repeats_after_reseeding_and_differs_between_seeds():
    G = wrap(noise="random")
    ws = G.mapping(torch.randn(2, 6))
    G.reseed_noise(7)
    first = G.synthesis(ws)
    G.reseed_noise(7)
    assert torch.equal(first, G.synthesis(ws))
    G.reseed_noise(8)
    assert not torch.equal(first, G.synthesis(ws))


def test_a_conditional_model_maps_each_code_with_its_label_and_refuses_a_missing_or_bad_class():
    network = TinyStyleNetwork(c_dim=3)
    G = wrap(network, classes=(0, 2))
    assert G.num_classes == 3 and G.label_choice == (0, 2)
    z = torch.randn(2, 6)
    labels = torch.tensor([2, 0])
    expected = network.mapping_w(z) + network.embed[labels]
    torch.testing.assert_close(G.mapping_w(z, labels), expected)
    with pytest.raises(ValueError, match="its codes need class labels"):
        G.mapping_w(z)
    with pytest.raises(ValueError, match=r"conditional model with 3 classes: pass class=K"):
        wrap(network)
    with pytest.raises(ValueError, match=r"classes must be integers from 0 to 2"):
        wrap(network, classes=(3,))
    with pytest.raises(ValueError, match=r"not a conditional model"):
        wrap(classes=(1,))


def test_a_conditional_model_samples_labels_from_its_classes(tmp_path):
    G = wrap(TinyStyleNetwork(c_dim=3), classes=(0, 2))
    store = engine.sample(str(tmp_path / "c.zarr"), G, [], n=40, chunk=20, progress=False)
    labels = store.array("labels")[:]
    assert set(np.unique(labels)) == {0, 2} and store.num_classes == 3
    z = torch.from_numpy(store.array("latents/z")[:])
    torch.testing.assert_close(torch.from_numpy(store.array("latents/w")[:]),
                               G.mapping_w(z, torch.from_numpy(labels.astype(np.int64))))


@pytest.mark.parametrize("options, message", [
    ({"truncation": "x"}, "truncation must be a number"),
    ({"truncation_cutoff": 9}, "truncation_cutoff must be a layer count from 1 to 4"),
    ({"noise": "loud"}, "noise must be one of const, random, none"),
])
def test_bad_options_are_one_line_errors(options, message):
    with pytest.raises(ValueError, match=message):
        wrap(**options)


def test_estimated_w_avg_is_deterministic_and_within_its_tolerance_of_the_true_mean():
    network = TinyStyleNetwork(has_w_avg=False)
    first = estimate_w_avg(network, tolerance=2e-3)
    assert torch.equal(first, estimate_w_avg(network, tolerance=2e-3))
    z = torch.from_numpy(np.random.default_rng(99).standard_normal((400_000, 6), dtype=np.float32))
    with torch.no_grad():
        reference = network.mapping_w(z).double().mean(0).float()
    assert float((first - reference).abs().max()) < 4 * 2e-3       # two estimates, each within ~tolerance


def test_sampling_records_the_file_and_seeds_random_noise_per_chunk(tmp_path):
    from engine.models.imagestats import imagestats_predictor

    G = wrap(noise="random")
    P = imagestats_predictor()
    one = engine.sample(str(tmp_path / "a.zarr"), G, [P], n=12, chunk=4, batch=2, progress=False)
    record = one.meta["generator_file"]
    assert record["sha256"] == "ab" * 32 and record["noise"] == "random" and record["truncation"] == 1.0
    assert "SeedSequence(seed, spawn_key=(1, chunk_index))" in one.meta["noise"]
    # a chunk's noise depends on (seed, chunk) only: computing the chunks in another order gives the same scores
    from engine.runtime import run_in_process
    from engine.sampler import ChunkComputer, SamplingJob, prepare_store

    G2 = wrap(noise="random")
    store = prepare_store(str(tmp_path / "b.zarr"), G2, [P], n=12, seed=0, chunk=4, spaces=["z", "w"],
                          resume=False, overwrite=False)
    job = SamplingJob(0, 4, G2.z_dim, computer=ChunkComputer(G2, [P], ["z", "w"], 2, torch.device("cpu")))
    run_in_process(job, store, [2, 0, 1])
    scores = one.array("scores")[:]
    np.testing.assert_array_equal(scores, store.array("scores")[:])
    assert not np.array_equal(scores[:4], scores[4:8])


def test_resume_refuses_a_different_generator_file(tmp_path):
    path = str(tmp_path / "r.zarr")
    engine.sample(path, wrap(), [], n=8, chunk=4, progress=False)
    other = wrap()
    other.sha256 = "cd" * 32
    with pytest.raises(StoreError, match=r"not the one it was sampled with"):
        engine.sample(path, other, [], n=8, chunk=4, resume=True, progress=False)


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_reduced_precision_stores_float32_scores_close_to_fp32(tmp_path, precision):
    from engine.models.imagestats import imagestats_predictor

    P = imagestats_predictor()
    full = engine.sample(str(tmp_path / "f.zarr"), wrap(), [P], n=8, chunk=8, progress=False)
    low = engine.sample(str(tmp_path / "l.zarr"), wrap(), [P], n=8, chunk=8, progress=False, precision=precision)
    assert low.array("scores").dtype == np.float32
    assert low.meta["numerics"]["precision"] == precision
    np.testing.assert_allclose(low.array("scores")[:], full.array("scores")[:], atol=0.1)
    with pytest.raises(ValueError, match="precision must be one of fp32, bf16, fp16"):
        engine.sample(str(tmp_path / "x.zarr"), wrap(), [P], n=8, progress=False, precision="int8")


def test_threads_computing_chunks_at_once_keep_their_own_noise_streams():
    import threading

    from engine.sampler import ChunkComputer, draw_codes, noise_seed

    G = wrap(noise="random")
    computer = ChunkComputer(G, [], ["z", "w"], 2, torch.device("cpu"))
    images = {}

    def render(index):
        z = draw_codes(0, index, 4, G.z_dim)
        G.reseed_noise(noise_seed(0, index))
        with torch.no_grad():
            for _ in range(20):                        # long enough for the threads to interleave
                images[index] = G.synthesis(G.mapping(torch.from_numpy(z)))
                G.reseed_noise(noise_seed(0, index))

    alone = {}
    for index in range(4):
        render(index)
        alone[index] = images[index]
    threads = [threading.Thread(target=render, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for index in range(4):
        assert torch.equal(images[index], alone[index])
    assert computer.batch == 2


def test_a_resume_keeps_the_runs_precision_and_refuses_another(tmp_path):
    path = str(tmp_path / "p.zarr")
    engine.sample(path, wrap(), [], n=8, chunk=4, progress=False, precision="bf16")
    resumed = engine.sample(path, wrap(), [], n=8, chunk=4, progress=False, resume=True)
    assert resumed.meta["numerics"]["precision"] == "bf16"
    with pytest.raises(StoreError, match="sampled with --precision bf16, this run asks for fp32"):
        engine.sample(path, wrap(), [], n=8, chunk=4, progress=False, resume=True, precision="fp32")


def test_a_resume_of_random_noise_refuses_another_batch(tmp_path):
    path = str(tmp_path / "n.zarr")
    engine.sample(path, wrap(noise="random"), [], n=8, chunk=4, batch=2, progress=False)
    with pytest.raises(StoreError, match="draws random noise batch after batch, and it was sampled with --batch 2"):
        engine.sample(path, wrap(noise="random"), [], n=8, chunk=4, batch=4, progress=False, resume=True)
    engine.sample(path, wrap(noise="random"), [], n=8, chunk=4, progress=False, resume=True)


def test_noise_inputs_are_the_networks_noise_layers_unless_noise_is_off():
    from engine.models.base import noise_inputs, synthesize

    network = TinyStyleNetwork()
    assert noise_inputs(wrap(network)) == ()                   # a network without noise layers (StyleGAN3)
    with pytest.raises(ValueError, match="takes no noise maps"):
        wrap(network).synthesis(wrap(network).mapping(torch.randn(2, 6)), noise_maps=[torch.zeros(2, 1, 4, 4)])
    network.noise_layers = (("layers.0", 4),)
    assert noise_inputs(wrap(network)) == (("layers.0", 4),)
    assert noise_inputs(wrap(network, noise="none")) == ()
    with pytest.raises(ValueError, match="no noise inputs"):
        synthesize(wrap(network, noise="none"), torch.zeros(1, 4, 5), noise_maps=[torch.zeros(1, 1, 4, 4)])
