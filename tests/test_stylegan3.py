"""The engine's StyleGAN3 network and its NVlabs converter, on random-weight checkpoints in NVlabs' layout.

Parity with NVlabs' own code is checked outside the project (the reference cannot be vendored); here: the layer
geometry against figures NVlabs' Generator reports, the mapping and the filtered leaky ReLU against their
definitions computed independently with NumPy/SciPy, that every tensor of a file is used, determinism, the
strict refusals and bfloat16 autocast.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from engine.models.checkpoints import CheckpointError
from engine.models.stylegan3 import StyleGAN3Architecture, filtered_lrelu, from_nvlabs, geometry
from tests.stylegan3_checkpoints import nvlabs_init_kwargs, nvlabs_state

scipy_signal = pytest.importorskip("scipy.signal")


@pytest.fixture(scope="module")
def t16():
    return nvlabs_state("T", seed=1)


@pytest.fixture(scope="module")
def r16():
    return nvlabs_state("R", seed=2)


def _ws(net, batch: int = 2, seed: int = 0) -> torch.Tensor:
    z = torch.randn(batch, net.z_dim, generator=torch.Generator().manual_seed(seed))
    return net.mapping_w(z).unsqueeze(1).repeat(1, net.num_ws, 1)


def test_geometry_is_nvlabs_at_32px_config_t():
    # NVlabs' Generator(z_dim=8, w_dim=8, img_resolution=32, img_channels=3, channel_base=256, channel_max=8)
    # reports these layer names, resampling factors and paddings.
    source, layers = geometry(StyleGAN3Architecture.from_init_kwargs(
        nvlabs_init_kwargs("T", img_resolution=32, channel_base=256)))
    assert (source.channels, source.size, source.sampling_rate, source.bandwidth) == (8, 36, 16.0, 2.0)
    assert [g.name for g in layers] == [f"L{i}_36_8" for i in range(5)] + [f"L{i}_52_8" for i in range(5, 13)] \
        + ["L13_32_8", "L14_32_3"]
    assert [(g.up, g.down) for g in layers] == [(2, 2)] * 5 + [(4, 2)] + [(2, 2)] * 8 + [(1, 1)]
    assert [g.padding for g in layers] == [(9, 8, 9, 8)] * 5 + [(-6, -9, -6, -9)] + [(9, 8, 9, 8)] * 7 \
        + [(-11, -12, -11, -12), (0, 0, 0, 0)]
    assert [(g.up_taps, g.down_taps) for g in layers] == [(12, 12)] * 5 + [(24, 12)] + [(12, 12)] * 8 + [(1, 1)]
    assert [g.conv_kernel for g in layers] == [3] * 14 + [1]


def test_geometry_is_nvlabs_at_16px_config_r():
    # NVlabs' config R (conv_kernel=1, radial filters) at 16 px, channel_base=512, channel_max=16.
    _, layers = geometry(StyleGAN3Architecture.from_init_kwargs(nvlabs_init_kwargs("R")))
    assert [g.name for g in layers] == [f"L{i}_36_16" for i in range(13)] + ["L13_16_16", "L14_16_3"]
    assert [g.padding for g in layers] == [(11, 10, 11, 10)] * 13 + [(-9, -10, -9, -10), (0, 0, 0, 0)]
    assert [g.down_radial for g in layers] == [True] * 12 + [False] * 3     # not in the critically sampled ones
    assert [g.conv_kernel for g in layers] == [1] * 15


@pytest.mark.parametrize("config, resolution, num_layers", [("T", 16, 14), ("R", 16, 14), ("T", 32, 6)])
def test_shapes_and_layer_counts(config, resolution, num_layers):
    init_kwargs, state = nvlabs_state(config, img_resolution=resolution, num_layers=num_layers, w_dim=12)
    net = from_nvlabs(init_kwargs, state)
    assert not net.training
    assert (net.z_dim, net.c_dim, net.w_dim, net.img_resolution, net.img_channels) == (8, 0, 12, resolution, 3)
    assert net.num_ws == num_layers + 2 and len(net.layers) == num_layers + 1
    assert net.has_w_avg and torch.equal(net.w_avg, state["mapping.w_avg"])
    w = net.mapping_w(torch.randn(3, 8))
    assert w.shape == (3, 12)
    with torch.no_grad():
        images = net.synthesis(w.unsqueeze(1).repeat(1, net.num_ws, 1))
    assert images.shape == (3, 3, resolution, resolution) and images.dtype == torch.float32
    assert torch.isfinite(images).all() and images.std() > 1e-3


def _mapping_by_definition(state: dict, z: np.ndarray, c: np.ndarray | None, layers: int) -> np.ndarray:
    def normalize(x):
        return x / np.sqrt(np.mean(x ** 2, axis=1, keepdims=True) + 1e-8)

    x = normalize(z.astype(np.float64))
    if c is not None:
        weight, bias = (state[f"mapping.embed.{k}"].double().numpy() for k in ("weight", "bias"))
        x = np.concatenate([x, normalize(c @ (weight / math.sqrt(weight.shape[1])).T + bias)], axis=1)
    for i in range(layers):
        weight, bias = (state[f"mapping.fc{i}.{k}"].double().numpy() for k in ("weight", "bias"))
        x = x @ (weight * 0.01 / math.sqrt(weight.shape[1])).T + bias * 0.01     # lr multiplier 0.01
        x = np.where(x >= 0, x, 0.2 * x) * math.sqrt(2)
    return x


@pytest.mark.parametrize("c_dim", [0, 4])
def test_mapping_w_is_the_equalized_lr_mapping(c_dim):
    init_kwargs, state = nvlabs_state("T", c_dim=c_dim, mapping_layers=3, seed=3)
    net = from_nvlabs(init_kwargs, state)
    z = torch.randn(5, 8, generator=torch.Generator().manual_seed(4))
    c = torch.nn.functional.one_hot(torch.arange(5) % 4, 4).float() if c_dim else None
    expected = _mapping_by_definition(state, z.numpy(), None if c is None else c.numpy(), layers=3)
    np.testing.assert_allclose(net.mapping_w(z, c).detach().numpy(), expected, atol=1e-5, rtol=1e-5)


def test_conditional_mapping_needs_its_class():
    net = from_nvlabs(*nvlabs_state("T", c_dim=3))
    z = torch.randn(2, 8)
    one_hot = torch.eye(3)
    assert not torch.allclose(net.mapping_w(z, one_hot[[0, 0]]), net.mapping_w(z, one_hot[[1, 1]]))
    with pytest.raises(ValueError, match=r"c must have shape \(2, 3\).*got none"):
        net.mapping_w(z)
    unconditional = from_nvlabs(*nvlabs_state("T"))
    with pytest.raises(ValueError, match="unconditional"):
        unconditional.mapping_w(z, one_hot[:2])


def _filtered_lrelu_by_definition(x, bias, fu, fd, up, down, padding, gain, slope, clamp):
    """NVlabs' documented steps, per channel, in float64 NumPy / SciPy."""
    px0, px1, py0, py1 = padding
    fu2 = np.outer(fu, fu) * up ** 2
    fd2 = fd if fd.ndim == 2 else np.outer(fd, fd)
    out = []
    for image in x.astype(np.float64):
        channels = []
        for plane, b in zip(image, bias):
            u = np.zeros((plane.shape[0] * up, plane.shape[1] * up))
            u[::up, ::up] = plane + b
            u = np.pad(u, ((max(py0, 0), max(py1, 0)), (max(px0, 0), max(px1, 0))))
            u = u[max(-py0, 0): u.shape[0] - max(-py1, 0), max(-px0, 0): u.shape[1] - max(-px1, 0)]
            u = scipy_signal.convolve2d(u, fu2, mode="valid")
            u = np.clip(np.where(u >= 0, u, slope * u) * gain, -clamp, clamp)
            channels.append(scipy_signal.convolve2d(u, fd2, mode="valid")[::down, ::down])
        out.append(channels)
    return np.array(out)


@pytest.mark.parametrize("up, padding, radial", [(2, (9, 8, 9, 8), False), (4, (-6, -9, -6, -9), False),
                                                 (2, (11, 10, 7, 12), True), (2, (-11, -12, -11, -12), False)])
def test_filtered_lrelu_is_its_definition(up, padding, radial):
    g = torch.Generator().manual_seed(5)
    x = torch.randn(2, 3, 30, 30, generator=g)
    bias = torch.randn(3, generator=g)
    fu = torch.randn(6 * up, generator=g)
    fd = torch.randn(12, 12, generator=g) if radial else torch.randn(12, generator=g)
    got = filtered_lrelu(x, bias, fu, fd, up=up, down=2, padding=padding, gain=math.sqrt(2), slope=0.2, clamp=3.0)
    expected = _filtered_lrelu_by_definition(x.numpy(), bias.numpy(), fu.numpy(), fd.numpy(), up, 2, padding,
                                             math.sqrt(2), 0.2, 3.0)
    unclamped = _filtered_lrelu_by_definition(x.numpy(), bias.numpy(), fu.numpy(), fd.numpy(), up, 2, padding,
                                              math.sqrt(2), 0.2, np.inf)
    assert not np.allclose(expected, unclamped)                     # the clamp is exercised
    assert got.shape == expected.shape
    np.testing.assert_allclose(got.numpy(), expected, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("config", ["T", "R"])
def test_every_tensor_of_the_file_changes_the_output(config):
    # Few layers, still of every kind (sampling-rate change, radial and separable filters, ToRGB), and a class
    # embedding.
    init_kwargs, state = nvlabs_state(config, num_layers=4, num_critical=1, c_dim=2, seed=7)
    z = torch.randn(1, 8, generator=torch.Generator().manual_seed(6))
    c = torch.tensor([[0.0, 1.0]])

    def run(st):
        net = from_nvlabs(init_kwargs, st)
        with torch.no_grad():
            w = net.mapping_w(z, c)
            return w, net.synthesis(w.unsqueeze(1).repeat(1, net.num_ws, 1))

    base_w, base_image = run(state)
    unused = []
    for key, tensor in state.items():
        if key == "mapping.w_avg":                  # only truncation reads it: checked by value elsewhere
            continue
        w, image = run({**state, key: tensor * 0.8 + 0.05})
        if torch.allclose(w, base_w, atol=1e-6) and torch.allclose(image, base_image, atol=1e-6):
            unused.append(key)
    assert unused == []


def test_images_are_a_function_of_ws_alone(t16, r16):
    for init_kwargs, state in (t16, r16):
        net = from_nvlabs(init_kwargs, state)
        with torch.no_grad():
            ws = _ws(net, batch=3)
            images = net.synthesis(ws)
            assert torch.equal(images, net.synthesis(ws))
            # per sample: the same image alone as in a batch
            torch.testing.assert_close(net.synthesis(ws[1:2]), images[1:2], atol=1e-5, rtol=1e-5)
            # no noise inputs: every noise mode, any generator state, gives the same image
            for noise, seed in (("random", 0), ("random", 1), ("none", 0)):
                torch.testing.assert_close(net.synthesis(ws, noise=noise,
                                                         generator=torch.Generator().manual_seed(seed)), images)
            assert not torch.allclose(net.synthesis(_ws(net, batch=3, seed=1)), images)


def test_synthesis_refuses_bad_arguments(t16):
    net = from_nvlabs(*t16)
    ws = _ws(net)
    with pytest.raises(ValueError, match="noise must be one of const, random, none; got 'fixed'"):
        net.synthesis(ws, noise="fixed")
    with pytest.raises(ValueError, match=r"ws must have shape \(batch, 16, 8\); got \(2, 15, 8\)"):
        net.synthesis(ws[:, 1:])
    with pytest.raises(ValueError, match=r"z must have shape \(batch, 8\)"):
        net.mapping_w(torch.randn(2, 9))


def _refusal(init_kwargs, state) -> str:
    with pytest.raises(CheckpointError) as info:
        from_nvlabs(init_kwargs, state)
    message = str(info.value)
    assert "\n" not in message and "NVlabs StyleGAN3" in message
    return message


def test_converter_refuses_a_layout_that_is_not_the_architectures(t16, r16):
    init_kwargs, state = t16
    missing = {k: v for k, v in state.items() if k != "synthesis.L3_36_8.up_filter"}
    assert "lacks 'synthesis.L3_36_8.up_filter'" in _refusal(init_kwargs, missing)
    extra = {**state, "synthesis.L3_36_8.noise_const": torch.zeros(36, 36)}
    assert "unexpected key 'synthesis.L3_36_8.noise_const'" in _refusal(init_kwargs, extra)
    wrong = {**state, "synthesis.L0_36_8.weight": torch.zeros(8, 8, 1, 1)}
    message = _refusal(init_kwargs, wrong)
    assert "'synthesis.L0_36_8.weight' has shape (8, 8, 1, 1)" in message and "expects (8, 8, 3, 3)" in message
    # config R's radial (2-D) downsampling filters in a file whose init_kwargs say separable
    r_kwargs, r_state = r16
    message = _refusal({**r_kwargs, "use_radial_filters": False}, r_state)
    assert "'synthesis.L0_36_16.down_filter' has shape (12, 12)" in message
    # a file for another resolution: the layer names differ
    assert "unexpected key" in _refusal({**init_kwargs, "img_resolution": 32}, state)


def test_converter_refuses_init_kwargs_it_does_not_know(t16):
    init_kwargs, state = t16
    assert "'fused_modconv_default'" in _refusal({**init_kwargs, "fused_modconv_default": True}, state)
    assert "'mapping_kwargs.embed_features'" in _refusal(
        {**init_kwargs, "mapping_kwargs": {"num_layers": 2, "embed_features": 8}}, state)
    assert "lacks 'w_dim'" in _refusal({k: v for k, v in init_kwargs.items() if k != "w_dim"}, state)
    assert "z_dim must be a positive integer; got 0" in _refusal({**init_kwargs, "z_dim": 0}, state)
    assert "conv_clamp must be None or a number >= 0; got 'x'" in _refusal({**init_kwargs, "conv_clamp": "x"}, state)


def test_runs_under_bfloat16_autocast(r16):
    net = from_nvlabs(*r16)
    ws = _ws(net)
    with torch.no_grad():
        reference = net.synthesis(ws)
        with torch.autocast("cpu", torch.bfloat16):
            images = net.synthesis(ws)
    assert images.shape == reference.shape and torch.isfinite(images).all()
    error = (images.float() - reference).abs().max() / reference.abs().max()
    assert error < 0.1


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_matches_cpu(t16, r16):
    for init_kwargs, state in (t16, r16):
        net = from_nvlabs(init_kwargs, state)
        ws = _ws(net, batch=3)
        with torch.no_grad():
            expected = net.synthesis(ws)
            net = net.cuda()
            torch.testing.assert_close(net.synthesis(ws.cuda()).cpu(), expected, atol=1e-3, rtol=1e-3)
            for dtype in (torch.float16, torch.bfloat16):
                with torch.autocast("cuda", dtype):
                    images = net.synthesis(ws.cuda()).float().cpu()
                assert (images - expected).abs().max() / expected.abs().max() < 0.1
