"""The engine's BigGAN-deep network: strict loading of huggingface pytorch-pretrained-BigGAN state dicts, spectral
norm resolved as torch does in eval, per-ψ statistics, the upsampling shortcuts, and image invariants."""
from __future__ import annotations

import json

import pytest
import torch
from torch.nn import functional as F

from engine.models.biggan import (BigGANNetwork, add_upsampled, file_layout, from_huggingface, parse_config,
                                  stats_at, upsample_conv3x3)
from engine.models.checkpoints import CheckpointError
from tests.biggan_checkpoints import (DEEP_128_LAYERS, biggan_config, biggan_layout, biggan_state,
                                      write_biggan_folder)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tiny():
    """(config, state, network) of the 32x32 test architecture."""
    config = biggan_config()
    state = biggan_state(config, seed=1)
    return config, state, from_huggingface(config, state)


def _inputs(config, batch=4, seed=0):
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(batch, config["z_dim"], generator=gen).clamp(-2, 2)
    classes = F.one_hot(torch.arange(batch) % config["num_classes"], config["num_classes"]).float()
    return z, classes


def test_images_shape_range_and_determinism(tiny):
    config, state, net = tiny
    z, classes = _inputs(config)
    assert (net.z_dim, net.num_classes, net.img_resolution, net.img_channels) == (8, 5, 32, 3)
    assert not net.training
    with torch.no_grad():
        images = net(z, classes, 0.5)
        again = from_huggingface(config, state)(z, classes, 0.5)
    assert images.shape == (4, 3, 32, 32) and images.dtype == torch.float32
    assert torch.isfinite(images).all() and images.abs().max() <= 1           # tanh, not clamped
    assert images.std() > 0.05                                                   # real images, not a constant
    assert torch.equal(images, net(z, classes, 0.5).detach())
    assert torch.equal(images, again)


def test_rows_are_independent_of_the_batch(tiny):
    """Batch norm uses stored statistics: a row's image does not depend on the other rows."""
    config, _, net = tiny
    z, classes = _inputs(config, batch=5)
    with torch.no_grad():
        together = net(z, classes, 0.7)
        alone = torch.cat([net(z[i:i + 1], classes[i:i + 1], 0.7) for i in range(5)])
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=0)


def test_class_and_truncation_change_the_image(tiny):
    config, _, net = tiny
    z, _ = _inputs(config, batch=1)
    one_hot = torch.eye(config["num_classes"])
    with torch.no_grad():
        by_class = net(z.expand(config["num_classes"], -1), one_hot, 0.5)
        by_psi = torch.cat([net(z, one_hot[:1], psi) for psi in (0.2, 0.5, 1.0)])
    for images in (by_class, by_psi):
        diffs = (images[:, None] - images[None]).abs().flatten(2).amax(-1)
        assert (diffs + torch.eye(len(images)) > 1e-3).all()


def test_spectral_norm_is_resolved_as_torch_does_in_eval(tiny):
    """The loaded weight equals what ``torch.nn.utils.spectral_norm`` computes in eval from weight_orig/u/v."""
    _, state, net = tiny
    for ours, key, module in ((net.gen_z, "generator.gen_z", torch.nn.Linear(16, 1024)),
                              (net.layers[1].conv_1, "generator.layers.1.conv_1", torch.nn.Conv2d(16, 16, 3)),
                              (net.layers[4].snconv1x1_g, "generator.layers.4.snconv1x1_g",
                               torch.nn.Conv2d(8, 4, 1, bias=False))):
        normalized = torch.nn.utils.spectral_norm(module).eval()
        normalized.load_state_dict({k.removeprefix(key + "."): v for k, v in state.items()
                                    if k.startswith(key + ".")})
        probe = torch.zeros(1, 16) if isinstance(module, torch.nn.Linear) else torch.zeros(1, module.in_channels, 4, 4)
        with torch.no_grad():
            normalized(probe)                                                  # eval: weight = weight_orig / sigma
        torch.testing.assert_close(ours.weight, normalized.weight, atol=1e-6, rtol=1e-6)
    assert torch.equal(net.embeddings.weight, state["embeddings.weight"])      # the embedding is not normalised


def test_truncation_statistics_follow_the_reference_blend():
    """On the grid a row is returned as is; between rows i and i+1 at fraction f the reference weights row i by f."""
    means = torch.arange(51.0)[:, None].expand(51, 2)
    variances = means + 100
    mean, var = stats_at(means, variances, 0.4)                                 # 0.4 * 50 = 20
    assert mean.tolist() == [20.0, 20.0] and var.tolist() == [120.0, 120.0]
    mean, _ = stats_at(means, variances, 0.506)                                 # 25.3: 25 * 0.3 + 26 * 0.7
    torch.testing.assert_close(mean, torch.full((2,), 25.7))
    assert stats_at(means, variances, 1.0)[0].tolist() == [50.0, 50.0]
    assert stats_at(means[:4], variances[:4], 1.0)[0].tolist() == [3.0, 3.0]    # 1 / (1/3) overshoots the grid


def test_equal_statistics_rows_make_truncation_irrelevant():
    config = biggan_config()
    state = biggan_state(config, seed=2)
    for key in [k for k in state if k.endswith(("running_means", "running_vars"))]:
        state[key] = state[key][:1].expand_as(state[key]).clone()
    net = from_huggingface(config, state)
    z, classes = _inputs(config, batch=2)
    with torch.no_grad():
        torch.testing.assert_close(net(z, classes, 0.13), net(z, classes, 0.9), atol=1e-6, rtol=0)


@pytest.mark.parametrize("height,width", [(4, 4), (3, 5)])
def test_upsampling_shortcuts_equal_interpolate_then_conv(height, width):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 6, height, width, generator=gen)
    weight, bias = torch.randn(5, 6, 3, 3, generator=gen), torch.randn(5, generator=gen)
    up = F.interpolate(x, scale_factor=2, mode="nearest")
    torch.testing.assert_close(upsample_conv3x3(x, weight, bias), F.conv2d(up, weight, bias, padding=1), atol=1e-5,
                               rtol=1e-5)
    h = torch.randn(2, 6, 2 * height, 2 * width, generator=gen)
    torch.testing.assert_close(add_upsampled(h, x), h + up, atol=0, rtol=0)


def test_a_changed_conv_weight_is_used(tiny):
    """The upsampling blocks fold conv_1's kernel into phase kernels: an in-place change of the weight is used."""
    config, state, _ = tiny
    net = from_huggingface(config, state)
    z, classes = _inputs(config, batch=2)
    with torch.no_grad():
        before = net(z, classes, 0.5)
        net.layers[1].conv_1.weight.mul_(1.5)
        after = net(z, classes, 0.5)
        fresh = from_huggingface(config, state)
        fresh.layers[1].conv_1.weight.mul_(1.5)
        expected = fresh(z, classes, 0.5)
    assert (before - after).abs().max() > 1e-3
    torch.testing.assert_close(after, expected, atol=1e-6, rtol=0)


def _one_line_error(config, state, match):
    with pytest.raises(CheckpointError, match=match) as info:
        from_huggingface(config, state)
    assert "\n" not in str(info.value)


def test_strict_loading_names_the_key(tiny):
    config, state, _ = tiny
    missing = {k: v for k, v in state.items() if k != "generator.layers.2.bn_1.scale.weight_v"}
    _one_line_error(config, missing, r"missing generator\.layers\.2\.bn_1\.scale\.weight_v, which the huggingface")
    _one_line_error(config, {k: v for k, v in state.items() if "conv_to_rgb" not in k},
                    r"missing generator\.conv_to_rgb\.\w+ \(and 3 more\)")
    _one_line_error(config, {**state, "generator.extra.weight": torch.zeros(1)}, r"unexpected key generator\.extra")
    wrong = {**state, "generator.gen_z.weight_orig": torch.zeros(1024, 15)}
    _one_line_error(config, wrong, r"generator\.gen_z\.weight_orig has shape \(1024, 15\); .* has \(1024, 16\)")
    # the legacy spectral-norm layout (weight + weight_orig + weight_u, no weight_v) is not this format
    legacy = {**missing, "generator.layers.2.bn_1.scale.weight": torch.zeros(8, 16)}
    _one_line_error(config, legacy, r"missing generator\.layers\.2\.bn_1\.scale\.weight_v")
    # a state dict of another architecture: the config decides
    _one_line_error(biggan_config(channel_width=8), state, r"has shape")
    zero_u = {**state, "generator.gen_z.weight_u": torch.zeros(1024)}
    _one_line_error(config, zero_u, r"generator\.gen_z: its spectral norm estimate")


@pytest.mark.parametrize("change,match", [
    ({"output_dim": 64}, r"output_dim 64 disagrees with its layers, which upsample 4x4 to 32x32"),
    ({"layers": [[False, 16, 4], [True, 4, 1]]}, r"layers\[0\] = \[False, 16, 4\] must keep or halve"),
    ({"layers": [[True, 16, 8]]}, r"last layer must give 1 x channel_width"),
    ({"layers": [[True, 8, 8]]}, r"layers\[0\] takes 8 x channel_width channels but receives 16"),
    ({"layers": [[True, "16", 8]]}, r"layers\[0\] must be \[upsample"),
    ({"z_dim": 0}, r"z_dim must be an integer >= 1; got 0"),
    ({"n_stats": 1}, r"n_stats must be an integer >= 2"),
    ({"eps": -1}, r"eps must be a positive number"),
])
def test_bad_config_is_one_line(change, match):
    config = {**biggan_config(), **change}
    with pytest.raises(CheckpointError, match=match) as info:
        parse_config(config)
    assert "\n" not in str(info.value)


def test_missing_config_fields_take_the_reference_defaults():
    """As BigGANConfig.from_dict: an empty config is BigGAN-deep-128, whose file layout the helper writes."""
    arch = parse_config({})
    with torch.device("meta"):
        net = BigGANNetwork(**arch)
    assert (net.img_resolution, net.z_dim, net.num_classes, len(net.layers)) == (128, 128, 1000, 11)
    deep128 = biggan_config(layers=DEEP_128_LAYERS, channel_width=128, z_dim=128, num_classes=1000,
                            attention_layer_position=8)
    assert file_layout(net) == biggan_layout(deep128)
    assert len(file_layout(net)) == 506


def test_saved_folder_loads_with_weights_only(tmp_path, tiny):
    config, _, net = tiny
    folder = write_biggan_folder(tmp_path / "biggan", config, seed=1)
    loaded = from_huggingface(json.loads((folder / "config.json").read_text()),
                              torch.load(folder / "pytorch_model.bin", weights_only=True))
    z, classes = _inputs(config)
    with torch.no_grad():
        assert torch.equal(loaded(z, classes, 0.3), net(z, classes, 0.3))


def test_bad_inputs_name_the_parameter(tiny):
    config, _, net = tiny
    z, classes = _inputs(config, batch=2)
    with pytest.raises(ValueError, match=r"z must have shape \(batch, 8\); got \(2, 7\)"):
        net(z[:, :7], classes, 0.5)
    with pytest.raises(ValueError, match=r"class_vector must have shape \(2, 5\)"):
        net(z, classes[:1], 0.5)
    for psi in (0, 1.5, float("nan")):
        with pytest.raises(ValueError, match="truncation must be a number in \\(0, 1\\]"):
            net(z, classes, psi)


def test_mixed_and_integer_class_vectors(tiny):
    """The class embedding is linear: a mixture of classes is a valid input, and an integer one-hot equals a float one."""
    config, _, net = tiny
    z, classes = _inputs(config, batch=2)
    with torch.no_grad():
        torch.testing.assert_close(net(z, classes.long(), 0.5), net(z, classes, 0.5), atol=0, rtol=0)
        mixed = net(z, torch.full((2, 5), 0.2), 0.5)
    assert torch.isfinite(mixed).all()


def test_bfloat16_autocast_and_cast_module(tiny):
    config, state, net = tiny
    z, classes = _inputs(config)
    with torch.no_grad():
        exact = net(z, classes, 0.5)
        with torch.autocast("cpu", torch.bfloat16):
            autocast = net(z, classes, 0.5)
        cast = from_huggingface(config, state).to(torch.bfloat16)(z, classes, 0.5)
    for images in (autocast, cast):
        assert images.dtype == torch.bfloat16 and torch.isfinite(images).all()
        error = (images.float() - exact).abs()
        assert error.mean() < 0.05 * exact.std() and error.max() < 0.25


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu(tiny):
    config, state, net = tiny
    z, classes = _inputs(config)
    with torch.no_grad():
        gpu = from_huggingface(config, state).to("cuda")(z.cuda(), classes.cuda(), 0.5)
        assert gpu.device.type == "cuda"
        torch.testing.assert_close(gpu.cpu(), net(z, classes, 0.5), atol=1e-3, rtol=0)
