"""The engine's StyleGAN (v1) network and its converter from genforce's checkpoint layout.

Parity with genforce's own StyleGANGenerator is checked outside the project (the reference code may not be copied
in); these tests hold the layout, the shapes, the math of the mapping and of one synthesis layer against numpy,
the noise modes, and the converter's refusals.
"""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from engine.models.checkpoints import CheckpointError, load_checkpoint, unwrap
from engine.models.stylegan import StyleGANNetwork, default_channels, from_genforce, to_genforce
from tests.stylegan_checkpoints import genforce_channels, genforce_state, save_genforce_checkpoint


@pytest.fixture(scope="module")
def net16() -> StyleGANNetwork:
    return from_genforce(genforce_state(16))


def _ws(net: StyleGANNetwork, batch: int = 3, seed: int = 0) -> torch.Tensor:
    z = torch.randn(batch, net.z_dim, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return net.mapping_w(z)[:, None].repeat(1, net.num_ws, 1)


def _single_line(exc: pytest.ExceptionInfo) -> str:
    text = str(exc.value)
    assert "\n" not in text
    return text


@pytest.mark.parametrize("resolution", [8, 16, 32])
def test_architecture_is_read_from_the_keys(resolution):
    state = genforce_state(resolution, z_dim=24, w_dim=20, mapping_layers=3, fmaps_base=128, fmaps_max=16)
    net = from_genforce(state)
    levels = int(np.log2(resolution)) - 1
    assert (net.z_dim, net.w_dim, net.c_dim, net.img_channels) == (24, 20, 0, 3)
    assert net.img_resolution == resolution and net.num_ws == 2 * levels == len(net.layers)
    assert len(net.to_rgb) == levels and len(net.mapping_fc) == 3
    assert [layer.bias.shape[0] for layer in net.layers[1::2]] == genforce_channels(resolution, 128, 16)
    assert not net.training and net.w_avg.dtype == torch.float32
    with torch.no_grad():
        w = net.mapping_w(torch.randn(2, 24))
        image = net.synthesis(w[:, None].repeat(1, net.num_ws, 1))
    assert w.shape == (2, 20) and image.shape == (2, 3, resolution, resolution)
    assert torch.isfinite(image).all() and image.std() > 0


def test_options_visible_in_the_keys_are_read():
    net = from_genforce(genforce_state(8, label_size=5, image_channels=1, mapping_layers=1, const_input=False))
    assert (net.c_dim, net.img_channels, len(net.mapping_fc)) == (5, 1, 1)
    assert net.layers[0].op == "from_w" and not hasattr(net.layers[0], "const")
    c = torch.eye(5)[[0, 3]]
    with torch.no_grad():
        w = net.mapping_w(torch.randn(2, net.z_dim), c)
        assert net.synthesis(w[:, None].repeat(1, net.num_ws, 1)).shape == (2, 1, 8, 8)


def test_default_channels_are_genforces():
    assert default_channels(1024) == [512, 512, 512, 512, 256, 128, 64, 32, 16]
    assert StyleGANNetwork(32, channels=[8, 8, 4, 2]).num_ws == 8
    with pytest.raises(ValueError, match="resolution must be a power of two >= 4; got 48"):
        StyleGANNetwork(48)
    with pytest.raises(ValueError, match="fused_scale must be True, False or 'auto'"):
        StyleGANNetwork(8, fused_scale="yes")


def test_layout_round_trip_keeps_every_tensor():
    state = genforce_state(16, label_size=3)
    back = to_genforce(from_genforce(state))
    assert set(back) == set(state)
    assert all(torch.equal(back[k], state[k]) for k in state)


def test_a_saved_genforce_file_loads_its_averaged_generator(tmp_path):
    smooth = save_genforce_checkpoint(tmp_path / "stylegan8.pth", 8, label_size=2)
    state, key = unwrap(load_checkpoint(tmp_path / "stylegan8.pth"))
    assert key == "generator_smooth"
    net = from_genforce(state)
    assert net.c_dim == 2 and torch.equal(net.layers[3].weight, smooth["synthesis.layer3.weight"])


def _mapping_reference(state, z, c=None):
    """genforce's mapping in numpy float64: [z, c·label_weight] -> pixel norm -> dense (gain √2, lr_mul 0.01,
    leaky ReLU 0.2) per layer."""
    x = z.double().numpy()
    if c is not None:
        x = np.concatenate([x, c.double().numpy() @ state["mapping.label_weight"].double().numpy()], axis=1)
    x = x / np.sqrt(np.mean(x ** 2, axis=1, keepdims=True) + 1e-8)
    i = 0
    while f"mapping.dense{i}.weight" in state:
        weight = state[f"mapping.dense{i}.weight"].double().numpy()
        x = x @ (weight * np.sqrt(2.0) / np.sqrt(weight.shape[1]) * 0.01).T
        x = x + state[f"mapping.dense{i}.bias"].double().numpy() * 0.01
        x = np.where(x >= 0, x, 0.2 * x)
        i += 1
    return x


@pytest.mark.parametrize("label_size", [0, 4])
def test_mapping_is_genforces(label_size):
    state = genforce_state(8, label_size=label_size, mapping_layers=3)
    net = from_genforce(state)
    z = torch.randn(5, net.z_dim)
    c = torch.eye(label_size)[torch.arange(5) % label_size] if label_size else None
    with torch.no_grad():
        w = net.mapping_w(z, c).double().numpy()
    expected = _mapping_reference(state, z, c)
    assert np.abs(w - expected).max() <= 1e-5 * max(1.0, np.abs(expected).max())


def test_first_layer_is_genforces(net16):
    """Layer 0 by hand: const + noise · strength + bias -> leaky ReLU -> instance norm -> x · (1 + s0) + s1."""
    state = genforce_state(16)
    w = torch.randn(2, net16.w_dim)
    with torch.no_grad():
        ours = net16.layers[0](None, w, net16.layers[0].noise_const).double().numpy()
    p = {k.removeprefix("synthesis.layer0."): v.double().numpy() for k, v in state.items()
         if k.startswith("synthesis.layer0.")}
    x = p["const"] + p["apply_noise.noise"] * p["apply_noise.weight"][None, :, None, None]
    x = x + p["bias"][None, :, None, None]
    x = np.where(x >= 0, x, 0.2 * x)
    x = x - x.mean(axis=(2, 3), keepdims=True)
    x = x / np.sqrt((x ** 2).mean(axis=(2, 3), keepdims=True) + 1e-8)
    style = w.double().numpy() @ (p["style.weight"] / np.sqrt(net16.w_dim)).T + p["style.bias"]
    style = style.reshape(2, 2, -1, 1, 1)
    expected = x * (style[:, 0] + 1) + style[:, 1]
    assert np.abs(ours - expected).max() < 1e-4


def _blur(x):
    kernel = torch.tensor([1.0, 2.0, 1.0], dtype=x.dtype)
    kernel = (torch.outer(kernel, kernel) / 16).expand(x.shape[1], 1, 3, 3)
    return torch.nn.functional.conv2d(x, kernel, padding=1, groups=x.shape[1])


def test_up_convs_are_upsample_conv_blur_and_genforces_fused_kernel(net16):
    """"up": nearest 2x upsample, 3x3 conv (pad 1), blur; "up_fused": the transposed conv (stride 2, pad 1) whose
    4x4 kernel sums the 3x3 kernel's four one-pixel shifts, written out as a scatter in numpy."""
    layer = copy.deepcopy(net16.layers[2]).double()
    x = torch.randn(2, layer.weight.shape[1], 4, 4, dtype=torch.float64)
    weight = layer.weight * layer.weight_gain
    expected = torch.nn.functional.conv2d(torch.nn.functional.interpolate(x, scale_factor=2.0), weight, padding=1)
    with torch.no_grad():
        assert layer.op == "up" and torch.allclose(layer._input(x, 2), _blur(expected), atol=1e-10)
        layer.op = "up_fused"
        fused = layer._input(x, 2)
    w = np.pad(weight.detach().numpy(), ((0, 0), (0, 0), (1, 1), (1, 1)))
    k4 = w[:, :, 1:, 1:] + w[:, :, :-1, 1:] + w[:, :, 1:, :-1] + w[:, :, :-1, :-1]          # (out, in, 4, 4)
    full = np.zeros((2, k4.shape[0], 10, 10))
    for i in range(4):
        for j in range(4):
            full[:, :, 2 * i:2 * i + 4, 2 * j:2 * j + 4] += np.einsum("bc,ocuv->bouv", x[:, :, i, j].numpy(), k4)
    expected = torch.from_numpy(full[:, :, 1:-1, 1:-1])                     # padding 1 crops one pixel each side
    assert torch.allclose(fused, _blur(expected), atol=1e-10)


def test_fused_up_convs_from_128_px_as_genforces_auto():
    state = genforce_state(128, z_dim=8, w_dim=8, mapping_fmaps=8, fmaps_base=256, fmaps_max=4)
    auto = from_genforce(state)
    assert [layer.op for layer in auto.layers[::2]] == ["const", "up", "up", "up", "up", "up_fused"]
    unfused = from_genforce(state, fused_scale=False)
    assert all(layer.op != "up_fused" for layer in unfused.layers)
    ws = _ws(auto, 2)
    with torch.no_grad():
        assert not torch.allclose(auto.synthesis(ws), unfused.synthesis(ws), atol=1e-3)
    small = genforce_state(64, z_dim=8, w_dim=8, mapping_fmaps=8, fmaps_base=256, fmaps_max=4)
    ws = _ws(from_genforce(small), 2)
    with torch.no_grad():
        assert torch.equal(from_genforce(small).synthesis(ws), from_genforce(small, fused_scale=False).synthesis(ws))
        assert not torch.allclose(from_genforce(small, fused_scale=True).synthesis(ws),
                                  from_genforce(small).synthesis(ws), atol=1e-3)


def test_const_noise_makes_images_a_function_of_ws(net16):
    ws = _ws(net16, 4)
    with torch.no_grad():
        batch = net16.synthesis(ws)
        assert torch.equal(batch, net16.synthesis(ws))
        alone = torch.cat([net16.synthesis(ws[i:i + 1]) for i in range(4)])
        assert torch.allclose(batch, alone, atol=1e-5)
        assert not torch.allclose(batch, net16.synthesis(ws, noise="none"), atol=1e-3)


def test_random_noise_follows_the_generator(net16):
    ws = _ws(net16, 3)
    with torch.no_grad():
        first = net16.synthesis(ws, noise="random", generator=torch.Generator().manual_seed(5))
        again = net16.synthesis(ws, noise="random", generator=torch.Generator().manual_seed(5))
        other = net16.synthesis(ws, noise="random", generator=torch.Generator().manual_seed(6))
        const = net16.synthesis(ws)
    assert torch.equal(first, again)
    assert not torch.allclose(first, other, atol=1e-3) and not torch.allclose(first, const, atol=1e-3)
    assert not torch.allclose(first[0], first[1], atol=1e-3)


def test_noise_modes_agree_without_noise_strength():
    state = genforce_state(16)
    for key in state:
        if key.endswith("apply_noise.weight"):
            state[key] = torch.zeros_like(state[key])
    net = from_genforce(state)
    ws = _ws(net, 2)
    with torch.no_grad():
        const = net.synthesis(ws)
        assert torch.allclose(const, net.synthesis(ws, noise="none"), atol=1e-6)
        assert torch.allclose(const, net.synthesis(ws, noise="random", generator=torch.Generator()), atol=1e-6)


def test_the_network_never_truncates():
    state = genforce_state(8)
    net = from_genforce(state)
    assert torch.equal(net.w_avg, state["truncation.w_avg"]) and net.has_w_avg
    state["truncation.w_avg"] = torch.zeros_like(state["truncation.w_avg"])
    untrained = from_genforce(state)
    assert not untrained.has_w_avg
    z = torch.randn(3, net.z_dim)
    with torch.no_grad():
        assert torch.equal(net.mapping_w(z), untrained.mapping_w(z))
        ws = _ws(net)
        assert torch.equal(net.synthesis(ws), untrained.synthesis(ws))


@pytest.mark.parametrize("edit, message", [
    (lambda s: s.pop("synthesis.layer3.style.bias"), "missing key 'synthesis.layer3.style.bias'"),
    (lambda s: s.pop("synthesis.layer2.blur.kernel"), "missing key 'synthesis.layer2.blur.kernel'"),
    (lambda s: s.pop("synthesis.lod"), "missing key 'synthesis.lod'"),
    (lambda s: s.pop("mapping.dense0.weight"), "missing key 'mapping.dense0.weight'"),
    (lambda s: s.update({"synthesis.layer5.weight": torch.zeros(16, 16, 1, 1)}),
     r"synthesis.layer5.weight has shape \(16, 16, 1, 1\); expected \(16, 16, 3, 3\)"),
    (lambda s: s.update({"synthesis.layer0.apply_noise.noise": torch.zeros(1, 1, 8, 8)}),
     r"synthesis.layer0.apply_noise.noise has shape \(1, 1, 8, 8\); expected \(1, 1, 4, 4\)"),
    (lambda s: s.update({"mapping.dense0.weight": torch.zeros(48)}), r"mapping.dense0.weight has shape \(48,\)"),
    (lambda s: s.update({"synthesis.layer9.style.weight": torch.zeros(64, 32)}),
     r"missing key 'synthesis.layer[678]\."),
    (lambda s: s.update({"discriminator.fc.weight": torch.zeros(1)}), "unexpected key 'discriminator.fc.weight'"),
    (lambda s: s.update({"synthesis.lod": torch.tensor(1.0)}), "synthesis.lod is 1, .*progressive growing"),
    (lambda s: [s.pop(k) for k in list(s) if k.startswith("synthesis.")],
     "no synthesis.layerN.style.weight keys; its keys begin mapping.dense0.weight"),
])
def test_converter_refuses_in_one_line(edit, message):
    state = genforce_state(16)
    edit(state)
    with pytest.raises(CheckpointError, match=message) as exc:
        from_genforce(state)
    assert _single_line(exc).startswith("genforce StyleGAN layout: ")


def test_per_layer_mapping_output_is_refused():
    state = genforce_state(8, mapping_layers=2)
    state["mapping.dense1.weight"] = torch.randn(32 * 4, 48)     # repeat_w=False: one w per layer
    state["mapping.dense1.bias"] = torch.randn(32 * 4)
    state["truncation.w_avg"] = torch.randn(32 * 4)
    with pytest.raises(CheckpointError, match="repeat_w=False") as exc:
        from_genforce(state)
    _single_line(exc)


def test_bad_inputs_name_the_argument(net16):
    with pytest.raises(ValueError, match=r"z must have shape \(batch, 32\); got \(2, 31\)"):
        net16.mapping_w(torch.randn(2, 31))
    with pytest.raises(ValueError, match=r"c must be None .*got shape \(2, 3\)"):
        net16.mapping_w(torch.randn(2, 32), torch.eye(3)[:2])
    with pytest.raises(ValueError, match=r"ws must have shape \(batch, 6, 32\); got \(2, 5, 32\)"):
        net16.synthesis(torch.randn(2, 5, 32))
    with pytest.raises(ValueError, match="noise must be one of const, random, none; got 'fixed'"):
        net16.synthesis(torch.randn(2, 6, 32), noise="fixed")
    conditional = from_genforce(genforce_state(8, label_size=2))
    with pytest.raises(ValueError, match=r"c must be one-hot labels of shape \(2, 2\).*got none"):
        conditional.mapping_w(torch.randn(2, 32))


def test_runs_under_bf16_autocast_and_in_bf16(net16):
    ws = _ws(net16, 2)
    with torch.no_grad():
        full = net16.synthesis(ws)
        with torch.autocast("cpu", torch.bfloat16):
            w = net16.mapping_w(torch.randn(2, 32))
            low = net16.synthesis(ws, noise="random", generator=torch.Generator().manual_seed(0))
            low_const = net16.synthesis(ws)
    assert w.shape == (2, 32) and torch.isfinite(low).all()
    assert (low_const.float() - full).abs().max() < 0.1 * full.abs().max()
    half = copy.deepcopy(net16).to(torch.bfloat16)
    with torch.no_grad():
        image = half.synthesis(ws.bfloat16(), noise="random", generator=torch.Generator().manual_seed(0))
    assert image.dtype == torch.bfloat16 and torch.isfinite(image).all()


def test_channels_last_gives_the_same_images():
    net = from_genforce(genforce_state(16))
    ws = _ws(net, 2)
    with torch.no_grad():
        expected = net.synthesis(ws)
        image = net.to(memory_format=torch.channels_last).synthesis(ws)
    assert torch.allclose(image, expected, atol=1e-5 * expected.abs().max())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu(net16):
    ws = _ws(net16, 2)
    gpu = from_genforce(genforce_state(16)).cuda()
    with torch.no_grad():
        cpu_image = net16.synthesis(ws)
        gpu_image = gpu.synthesis(ws.cuda()).cpu()
        cpu_random = net16.synthesis(ws, noise="random", generator=torch.Generator().manual_seed(1))
        gpu_random = gpu.synthesis(ws.cuda(), noise="random", generator=torch.Generator().manual_seed(1)).cpu()
        gpu.synthesis(ws.cuda(), noise="random", generator=torch.Generator("cuda").manual_seed(1))
    scale = cpu_image.abs().max()
    assert (gpu_image - cpu_image).abs().max() < 1e-2 * scale
    assert (gpu_random - cpu_random).abs().max() < 1e-2 * scale


def test_per_image_noise_maps_replace_the_stored_noise_row_by_row(net16):
    ws = _ws(net16, 3)
    stored = [net16.get_submodule(name).noise_const.expand(3, 1, r, r) for name, r in net16.noise_layers]
    assert [r for _, r in net16.noise_layers] == [4, 4, 8, 8, 16, 16]
    drawn = [torch.randn(3, 1, r, r, generator=torch.Generator().manual_seed(i)) for i, (_, r) in
             enumerate(net16.noise_layers)]
    changed = [m.clone() for m in drawn]
    changed[-1][1] += 1.0
    with torch.no_grad():
        const, replayed = net16.synthesis(ws), net16.synthesis(ws, noise_maps=stored)
        a, b = net16.synthesis(ws, noise_maps=drawn), net16.synthesis(ws, noise_maps=changed)
    assert torch.allclose(const, replayed, atol=1e-6)
    assert (a - const).abs().max() > 1e-3
    assert torch.equal(a[[0, 2]], b[[0, 2]]) and (a[1] - b[1]).abs().max() > 1e-3
    with pytest.raises(ValueError, match="one map per noise layer"):
        net16.synthesis(ws, noise_maps=drawn[:-1])
