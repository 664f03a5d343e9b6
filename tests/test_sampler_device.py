"""The sampler on a device: host copies through pinned buffers on a side stream (their bookkeeping checked on CPU
with deferred copies), CPU results bitwise as before, channels-last, and a distributed run's client that builds
no model on a GPU. CUDA comparisons skip without a GPU."""
from __future__ import annotations

import threading
from contextlib import contextmanager

import numpy as np
import pytest
import torch

import engine
from engine import sampler
from engine.distributed import ClusterHandle, ClusterRequest
from engine.models.base import map_codes, mapped_w, synthesize
from engine.models.registry import load_generator, load_predictor
from engine.runtime.host_copies import HostCopies
from engine.runtime.job import RunStats
from engine.sampler import ChunkComputer, ModelSpecs, SamplingJob, draw_codes
from tests.conftest import PLANTED_SMALL

CONV = "convstack:z_dim=32,channels=16,resolution=16"
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _computer(spec: str, predictors: list[str], batch: int, device: str = "cpu", **kwargs) -> ChunkComputer:
    dev = torch.device(device)
    G = load_generator(spec, dev)
    Ps = [load_predictor(p, G, dev) for p in predictors]
    spaces = ["z", "w", "wp"] if G.has_mapping else ["z"]
    return ChunkComputer(G, Ps, spaces, batch, dev, **kwargs)


def _inline_copies(c: ChunkComputer, z: np.ndarray) -> dict[str, np.ndarray]:
    """The sampler's chunk loop as it was before host copies: every batch copied back in line."""
    G, out = c.generator, {}
    if "w" in c.spaces:
        out["latents/w"] = np.empty((len(z), G.w_dim), np.float32)
    if "wp" in c.spaces:
        out["latents/wp"] = np.empty((len(z), G.num_ws, G.w_dim), np.float32)
    out["scores"] = np.empty((len(z), len(c.attributes)), np.float32)
    with torch.inference_mode():
        for start in range(0, len(z), c.batch):
            stop = min(start + c.batch, len(z))
            zb = torch.from_numpy(z[start:stop]).to(c.device, copy=True)
            ws = map_codes(G, zb)
            if "w" in c.spaces:
                out["latents/w"][start:stop] = mapped_w(G, zb, ws).float().cpu().numpy()
            if "wp" in c.spaces:
                out["latents/wp"][start:stop] = ws.float().cpu().numpy()
            out["scores"][start:stop] = c._score(synthesize(G, ws)).cpu().numpy()
    return out


@pytest.mark.parametrize("spec, predictors", [(PLANTED_SMALL, ["planted", "imagestats"]), (CONV, ["imagestats"])])
def test_on_cpu_a_chunk_is_bitwise_what_the_inline_loop_gave(spec, predictors):
    c = _computer(spec, predictors, batch=48)
    z = draw_codes(5, 0, 200, c.generator.z_dim)      # 200 rows: four full batches and a short one
    got = c(z)
    for name, expected in _inline_copies(c, z).items():
        assert np.array_equal(got[name], expected), name


# ------------------------------------------------------------------------------------- the copy bookkeeping
class DeferredCopies:
    """A stand-in for CUDA: a copy happens only when its event is waited for, as a side stream may run late.
    It checks that no pinned buffer is handed out again while a copy into it is still pending."""

    def __init__(self) -> None:
        self.pending: list[list] = []
        self.in_flight: set[int] = set()
        self.allocated = 0
        self.most_in_flight = 0

    def pinned(self, shape, dtype):
        self.allocated += 1
        return torch.full(shape, float("nan"), dtype=dtype)

    def launch(self, pairs):
        for pinned, _ in pairs:
            assert id(pinned) not in self.in_flight, "a pinned buffer was reused before its copy was done"
            self.in_flight.add(id(pinned))
        sources = list(pairs)          # read when the event is waited for, as a late side stream reads them
        ops = self

        class Event:
            def synchronize(self) -> None:
                with torch.inference_mode():               # the buffers were made in the sampler's
                    for pinned, tensor in sources:
                        if id(pinned) in ops.in_flight:
                            pinned.copy_(tensor)
                            ops.in_flight.discard(id(pinned))

        self.most_in_flight = max(self.most_in_flight, len(self.in_flight))
        return Event()


def test_deferred_copies_land_in_their_rows_only_after_their_event_and_buffers_are_reused():
    ops = DeferredCopies()
    copies = HostCopies(torch.device("cpu"), depth=2, ops=ops)
    out = np.zeros((10, 3), np.float32)
    expected = np.arange(30, dtype=np.float32).reshape(10, 3)
    for start in range(0, 10, 2):
        copies.put([(out, slice(start, start + 2), torch.from_numpy(expected[start:start + 2]).clone())])
        landed = (start // 2 + 1) - 2                      # batches beyond the depth have landed
        assert np.array_equal(out[:2 * max(landed, 0)], expected[:2 * max(landed, 0)])
        assert not out[2 * max(landed, 0):].any()          # nothing read from a buffer whose copy is pending
    copies.finish()
    assert np.array_equal(out, expected)
    assert ops.allocated == 3 and ops.most_in_flight <= 3   # a ring of depth + 1 buffers, reused


def test_a_chunk_computed_through_deferred_copies_equals_the_inline_one(monkeypatch):
    c = _computer(PLANTED_SMALL, ["planted", "imagestats"], batch=32)
    c._per_thread.copies = HostCopies(torch.device("cpu"), depth=2, ops=DeferredCopies())
    z = draw_codes(1, 3, 150, c.generator.z_dim)
    got = c(z)
    for name, expected in _inline_copies(c, z).items():
        assert np.array_equal(got[name], expected), name
    assert not c._host_copies()._flight          # everything landed before the chunk was returned


def test_a_synthesis_that_changes_the_codes_in_place_does_not_change_the_stored_codes(monkeypatch):
    """The codes' copies land after the synthesis has run: what is stored must be the codes as mapped."""
    c = _computer(PLANTED_SMALL, ["planted"], batch=32)
    z = draw_codes(1, 3, 96, c.generator.z_dim)
    expected = _inline_copies(c, z)
    real = sampler.synthesize

    def scribbling(G, ws, labels=None):
        images = real(G, ws, labels)
        ws.untyped_storage().fill_(0)   # a synthesis free to reuse its input's memory
        return images

    monkeypatch.setattr(sampler, "synthesize", scribbling)
    c._per_thread.copies = HostCopies(torch.device("cpu"), depth=2, ops=DeferredCopies())
    got = c(z)
    for name in ("latents/w", "latents/wp"):
        assert np.array_equal(got[name], expected[name]), name


def test_threads_sharing_one_computer_each_get_their_own_copier():
    """A Dask worker with several threads runs chunks at once through one cached ChunkComputer: copies in
    flight (and their pinned buffers) must not be shared between them."""
    c = _computer(PLANTED_SMALL, ["planted"], batch=16)
    seen = []
    threads = [threading.Thread(target=lambda: seen.append(c._host_copies())) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len({id(copies) for copies in seen + [c._host_copies()]}) == 3


def test_an_error_mid_chunk_leaves_no_copy_in_flight_for_the_next_chunk(monkeypatch):
    c = _computer(PLANTED_SMALL, ["planted"], batch=16)
    c._per_thread.copies = HostCopies(torch.device("cpu"), depth=2, ops=DeferredCopies())
    calls = {"n": 0}
    real = c._score

    def failing(images):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("predictor failed")
        return real(images)

    monkeypatch.setattr(c, "_score", failing)
    with pytest.raises(RuntimeError, match="predictor failed"):
        c(draw_codes(0, 0, 80, c.generator.z_dim))
    assert not c._host_copies()._flight
    monkeypatch.setattr(c, "_score", real)
    z = draw_codes(0, 1, 80, c.generator.z_dim)
    assert np.array_equal(c(z)["scores"], _inline_copies(c, z)["scores"])


# ------------------------------------------------------------------------------------- channels-last
def test_channels_last_gives_the_same_scores_and_is_recorded(tmp_path):
    plain = _computer(CONV, ["imagestats"], batch=64)
    last = _computer(CONV, ["imagestats"], batch=64, channels_last=True)
    convs = [m for m in last.generator.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(m.weight.is_contiguous(memory_format=torch.channels_last) for m in convs)
    z = draw_codes(2, 0, 128, plain.generator.z_dim)
    np.testing.assert_allclose(last(z)["scores"], plain(z)["scores"], rtol=1e-4, atol=1e-5)
    store = engine.sample(str(tmp_path / "cl.zarr"), CONV, ["imagestats"], n=64, chunk=64, device="cpu",
                          channels_last=True, progress=False)
    assert store.meta["numerics"]["memory_format"] == "channels_last"


# ------------------------------------------------------------------------------------- the client
def test_a_distributed_runs_client_builds_no_model_on_a_gpu(tmp_path, monkeypatch):
    """Even when the run's device resolves to CUDA here, this process loads the models on the CPU only and
    ships SPECs: the models are built on the workers."""
    loaded: list[str] = []
    real_generator, real_predictor = sampler.load_generator, sampler.load_predictor

    def generator_on(spec, device):
        loaded.append(str(device))
        return real_generator(spec, "cpu")

    def predictor_on(spec, G, device):
        loaded.append(str(device))
        return real_predictor(spec, G, "cpu")

    shipped: list[SamplingJob] = []

    @contextmanager
    def fake_cluster(workers=None, scheduler=None, gpus=None, cluster=None):
        yield ClusterHandle(client=None, request=ClusterRequest("local", workers=2), startup_s=0.0, threads={},
                            default_threads=1)

    def fake_run_on_dask(job, store_path, chunks, handle, on_chunk=None):
        shipped.append(job)
        return RunStats()

    monkeypatch.setattr(sampler, "resolve_device", lambda device: torch.device("cuda"))
    monkeypatch.setattr(sampler, "load_generator", generator_on)
    monkeypatch.setattr(sampler, "load_predictor", predictor_on)
    monkeypatch.setattr(sampler, "cluster_client", fake_cluster)
    monkeypatch.setattr(sampler, "run_on_dask", fake_run_on_dask)
    engine.sample(str(tmp_path / "d.zarr"), PLANTED_SMALL, ["planted"], n=100, chunk=50, device="auto",
                  workers=2, progress=False)
    assert loaded == ["cpu", "cpu"]
    (job,) = shipped
    assert job.computer is None and isinstance(job.models, ModelSpecs)
    assert job.models.generator == PLANTED_SMALL and job.models.device == "auto"


# ------------------------------------------------------------------------------------- CUDA (skipped without)
@needs_cuda
def test_cuda_host_copies_match_inline_copies():
    dev = torch.device("cuda")
    copies = HostCopies(dev)
    out = np.zeros((1000, 64), np.float32)
    source = torch.randn(1000, 64, device=dev)
    for start in range(0, 1000, 96):
        copies.put([(out, slice(start, start + 96), source[start:start + 96] * 2)])
    copies.finish()
    assert np.array_equal(out, (source * 2).cpu().numpy())


@needs_cuda
@pytest.mark.parametrize("spec, predictors", [(PLANTED_SMALL, ["planted"]), (CONV, ["imagestats"])])
def test_cuda_chunks_match_cpu_chunks(spec, predictors):
    cpu = _computer(spec, predictors, batch=64)
    gpu = _computer(spec, predictors, batch=64, device="cuda")
    z = draw_codes(9, 0, 300, cpu.generator.z_dim)
    a, b = cpu(z), gpu(z)
    for name in a:
        np.testing.assert_allclose(b[name], a[name], rtol=1e-3, atol=1e-4, err_msg=name)


@needs_cuda
def test_cuda_channels_last_bf16_matches_fp32_scores_loosely():
    fp32 = _computer(CONV, ["imagestats"], batch=128, device="cuda")
    fast = _computer(CONV, ["imagestats"], batch=128, device="cuda", precision="bf16", channels_last=True)
    z = draw_codes(9, 0, 256, fp32.generator.z_dim)
    np.testing.assert_allclose(fast(z)["scores"], fp32(z)["scores"], rtol=0.05, atol=0.02)
