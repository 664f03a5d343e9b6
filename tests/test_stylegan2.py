"""The engine's StyleGAN2 network and its converters, on small random-weight state dicts in each key layout.

Parity with the reference implementations (rosinality, NVlabs, genforce) is checked outside the project, against
their code; here: shapes and layer counts, agreement between layouts, determinism of each noise mode, the
mapping's formula, conditional inputs, conv_clamp, precision and devices, and one-line refusals of bad files.
"""
from __future__ import annotations

import math

import pytest
import torch

from engine.models.checkpoints import CheckpointError
from engine.models.stylegan2 import StyleGAN2Network, from_genforce, from_nvlabs, from_rosinality
from tests.stylegan2_checkpoints import (genforce_as_nvlabs, genforce_state, nvlabs_state, rosinality_as_nvlabs,
                                         rosinality_state)


def _build(layout: str, size: int = 16, **kwargs) -> StyleGAN2Network:
    if layout == "rosinality":
        return from_rosinality(rosinality_state(size=size, **kwargs))
    if layout == "nvlabs":
        return from_nvlabs(*nvlabs_state(img_resolution=size, **kwargs))
    return from_genforce(genforce_state(resolution=size, **kwargs))


def _ws(net: StyleGAN2Network, batch: int = 3, seed: int = 0, c: torch.Tensor | None = None) -> torch.Tensor:
    z = torch.randn(batch, net.z_dim, generator=torch.Generator().manual_seed(seed))
    return net.mapping_w(z, c)[:, None].expand(-1, net.num_ws, -1)


LAYOUTS = ("rosinality", "nvlabs", "genforce")


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("size", [8, 16, 32])
def test_shapes_and_layer_counts_per_resolution(layout, size):
    net = _build(layout, size)
    n_res = int(math.log2(size)) - 1                      # 4, 8, ..., size
    assert net.num_ws == 2 * int(math.log2(size)) - 2
    assert (net.img_resolution, net.img_channels, net.z_dim, net.w_dim) == (size, 3, 32, 32)
    assert len(net.blocks) == n_res
    assert sum(b.up_conv is not None for b in net.blocks) == n_res - 1
    assert len(net.layer_names) == (2 * n_res - 1) + n_res          # modulated convs + one ToRGB per block
    modules = dict(net.named_modules())
    indices = [modules[name].ws_index for name in net.layer_names]
    assert indices == sorted(indices) and max(indices) == net.num_ws - 1
    assert not net.training and not any(p.requires_grad for p in net.parameters())
    with torch.no_grad():
        w = _ws(net, batch=2)[:, 0]
        img = net.synthesis(w[:, None].expand(-1, net.num_ws, -1))
    assert w.shape == (2, 32) and img.shape == (2, 3, size, size)
    assert torch.isfinite(img).all() and img.std() > 0


@pytest.mark.parametrize("translate", ["rosinality", "genforce"])
def test_the_same_weights_in_two_layouts_give_the_same_generator(translate):
    """rosinality's and genforce's files renamed into NVlabs' layout (genforce: style bias + 1, flipped up-conv
    kernels) load as the same generator: the converters apply each layout's conventions."""
    if translate == "rosinality":
        state = rosinality_state(size=16, max_channels=16, seed=3)
        ours, theirs = from_rosinality(state), from_nvlabs(*rosinality_as_nvlabs(state))
    else:
        state = genforce_state(resolution=16, fmaps_base=256, fmaps_max=16, mapping_fmaps=24, seed=3)
        ours, theirs = from_genforce(state), from_nvlabs(*genforce_as_nvlabs(state))
    z = torch.randn(4, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        w, w2 = ours.mapping_w(z), theirs.mapping_w(z)
        ws = w[:, None].expand(-1, ours.num_ws, -1)
        img, img2 = ours.synthesis(ws), theirs.synthesis(ws)
    assert torch.allclose(w, w2, rtol=1e-5, atol=1e-6 * w.abs().max())
    assert torch.allclose(img, img2, rtol=1e-4, atol=1e-5 * img.abs().max()), (img - img2).abs().max()
    assert img.abs().max() > 0.1


def test_mapping_is_nvlabs_formula():
    """w = MLP(normalize(z)) with equalized-lr gains lr/sqrt(fan_in) and leaky ReLU(0.2)·sqrt(2), in float64."""
    kwargs, state = nvlabs_state(mapping_layers=3)
    kwargs["mapping_kwargs"]["lr_multiplier"] = 0.05
    net = from_nvlabs(kwargs, state)
    z = torch.randn(5, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    x = z / (z.square().mean(1, keepdim=True) + 1e-8).sqrt()
    for i in range(3):
        weight, bias = state[f"mapping.fc{i}.weight"].double(), state[f"mapping.fc{i}.bias"].double()
        x = torch.nn.functional.leaky_relu(x @ (weight * 0.05 / math.sqrt(weight.shape[1])).T + bias * 0.05, 0.2)
        x = x * math.sqrt(2)
    assert torch.allclose(net.mapping_w(z.float()).double(), x, rtol=1e-5, atol=1e-5 * x.abs().max())


@pytest.mark.parametrize("layout", LAYOUTS)
def test_const_noise_images_are_a_function_of_ws_alone(layout):
    net = _build(layout)
    ws = _ws(net, batch=4)
    with torch.no_grad():
        first, second = net.synthesis(ws), net.synthesis(ws)
        alone = torch.cat([net.synthesis(ws[i:i + 1]) for i in range(4)])
    assert torch.equal(first, second)
    assert torch.allclose(first, alone, atol=1e-5)           # no row depends on the others in its batch


@pytest.mark.parametrize("layout", LAYOUTS)
def test_random_noise_follows_the_generator(layout):
    net = _build(layout)
    ws = _ws(net)
    with torch.no_grad():
        def draw(seed):
            return net.synthesis(ws, noise="random", generator=torch.Generator().manual_seed(seed))
        const, none = net.synthesis(ws, noise="const"), net.synthesis(ws, noise="none")
        a, b, c = draw(1), draw(1), draw(2)
    assert torch.equal(a, b)
    assert (a - c).abs().max() > 1e-3
    assert (a - const).abs().max() > 1e-3 and (none - const).abs().max() > 1e-3
    with torch.no_grad():                                     # without noise strength the modes agree
        for name, module in net.named_modules():
            if hasattr(module, "noise_strength"):
                module.noise_strength.zero_()
        assert torch.allclose(net.synthesis(ws), draw(5), atol=1e-6)
        assert torch.allclose(net.synthesis(ws), net.synthesis(ws, noise="none"), atol=1e-6)


def test_w_avg_comes_from_the_file():
    state = rosinality_state()
    assert not from_rosinality(state).has_w_avg and not from_rosinality(state).w_avg.any()
    avg = torch.arange(32.0)
    net = from_rosinality(state, latent_avg=avg[None])       # converted checkpoints store it as (1, style_dim)
    assert net.has_w_avg and torch.equal(net.w_avg, avg)
    with pytest.raises(CheckpointError, match="latent_avg must hold 32 values"):
        from_rosinality(state, latent_avg=torch.zeros(7))
    kwargs, state = nvlabs_state()
    assert torch.equal(from_nvlabs(kwargs, state).w_avg, state["mapping.w_avg"])
    assert not from_nvlabs(*nvlabs_state(w_avg_beta=None)).has_w_avg
    gf = genforce_state()
    net = from_genforce(gf)
    assert net.has_w_avg and torch.equal(net.w_avg, gf["truncation.w_avg"])


@pytest.mark.parametrize("layout", ["nvlabs", "genforce"])
def test_conditional_models_map_the_label(layout):
    net = _build(layout, c_dim=3) if layout == "nvlabs" else _build(layout, label_size=3)
    assert net.c_dim == 3
    z = torch.randn(2, 32, generator=torch.Generator().manual_seed(2)).repeat(3, 1)
    c = torch.eye(3).repeat_interleave(2, 0)
    with torch.no_grad():
        w = net.mapping_w(z, c)
        img = net.synthesis(w[:, None].expand(-1, net.num_ws, -1))
    assert (w[0] - w[2]).abs().max() > 0.05 * w.abs().max() and img.shape == (6, 3, 16, 16)
    with pytest.raises(ValueError, match=r"conditional: c of shape \(batch, 3\) is required"):
        net.mapping_w(z)
    with pytest.raises(ValueError, match=r"c must have shape \(6, 3\)"):
        net.mapping_w(z, c[:, :2])


@pytest.mark.parametrize("architecture", ["orig", "resnet"])
def test_nvlabs_architectures_and_conv_clamp(architecture):
    net = _build("nvlabs", 32, architecture=architecture)
    assert sum(b.to_rgb is not None for b in net.blocks) == 1 and net.num_ws == 8
    assert (sum(b.skip is not None for b in net.blocks) == 3) == (architecture == "resnet")
    ws = _ws(net)
    with torch.no_grad():
        img = net.synthesis(ws)
        clamped = _build("nvlabs", 32, architecture=architecture, conv_clamp=0.05).synthesis(ws)
    assert torch.isfinite(img).all() and img.abs().max() > 0.05
    assert clamped.abs().max() <= 0.05 + 1e-7                # one clamped ToRGB makes the image


def test_nvlabs_kwargs_defaults_and_refusals():
    kwargs, state = nvlabs_state()
    assert from_nvlabs(kwargs, state).arch.conv_clamp is None                   # stylegan2-ada's default
    flat_kwargs, flat_state = nvlabs_state(flat=True)
    del flat_kwargs["conv_clamp"]
    assert from_nvlabs(flat_kwargs, flat_state).arch.conv_clamp == 256          # stylegan3's networks_stylegan2
    assert from_nvlabs(flat_kwargs, flat_state, module="training.networks").arch.conv_clamp is None
    bad = dict(kwargs, synthesis_kwargs=dict(kwargs["synthesis_kwargs"], magnitude_ema_beta=0.99))
    with pytest.raises(CheckpointError, match="unknown synthesis setting 'magnitude_ema_beta'"):
        from_nvlabs(bad, state)
    bad = dict(kwargs, mapping_kwargs=dict(kwargs["mapping_kwargs"], activation="relu"))
    with pytest.raises(CheckpointError, match="mapping activation 'relu' is not supported"):
        from_nvlabs(bad, state)
    with pytest.raises(CheckpointError, match="init_kwargs lack 'w_dim'"):
        from_nvlabs({k: v for k, v in kwargs.items() if k != "w_dim"}, state)


def _mutations(layout):
    if layout == "rosinality":
        return rosinality_state(), "convs.1.conv.modulation.weight", "noises.noise_2"
    if layout == "nvlabs":
        return nvlabs_state()[1], "synthesis.b8.conv0.affine.weight", "synthesis.b16.conv1.noise_const"
    return genforce_state(), "synthesis.layer3.style.weight", "synthesis.layer2.noise"


def _convert(layout, state):
    if layout == "nvlabs":
        return from_nvlabs(nvlabs_state()[0], state)
    return from_rosinality(state) if layout == "rosinality" else from_genforce(state)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_bad_files_are_refused_in_one_line_naming_the_key(layout):
    state, key, other = _mutations(layout)
    name = {"nvlabs": "NVlabs"}.get(layout, layout)
    cases = [({k: v for k, v in state.items() if k != key}, f"missing key '{key}' in the {name} layout"),
             ({k: v for k, v in state.items() if k != other}, f"missing key '{other}' in the {name} layout"),
             (dict(state, **{"extra.weight": torch.zeros(2)}), f"unexpected key 'extra.weight' in the {name} layout"),
             (dict(state, **{key: state[key][:, :5]}), f"key '{key}' in the {name} layout has shape")]
    for bad, message in cases:
        with pytest.raises(CheckpointError) as info:
            _convert(layout, bad)
        assert message in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(CheckpointError, match="must be a .name: tensor. dict"):
        _convert(layout, [1, 2])


def test_a_different_resampling_filter_is_refused():
    state = rosinality_state()
    state["to_rgbs.1.upsample.kernel"] = torch.ones(4, 4) / 4
    with pytest.raises(CheckpointError, match="'to_rgbs.1.upsample.kernel' in the rosinality layout is not the "
                                              "resampling filter"):
        from_rosinality(state)


def test_bad_inputs_are_value_errors():
    net = _build("nvlabs")
    with pytest.raises(ValueError, match=r"ws must have shape \(batch, 6, 32\); got \(2, 5, 32\)"):
        net.synthesis(torch.zeros(2, 5, 32))
    with pytest.raises(ValueError, match="noise must be one of const, random, none; got 'fixed'"):
        net.synthesis(torch.zeros(2, 6, 32), noise="fixed")
    with pytest.raises(ValueError, match=r"z must have shape \(batch, 32\)"):
        net.mapping_w(torch.zeros(2, 31))


def test_precision_and_gradients():
    """bf16 autocast and bf16 weights run close to fp32, float64 weights work (nothing hard-codes a dtype), and
    gradients reach ws, also after an inference-mode pass (as inversion after sampling does)."""
    net = _build("rosinality", max_channels=16)
    ws = _ws(net)
    with torch.inference_mode():
        ref = net.synthesis(ws)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = net.synthesis(ws)
    assert torch.isfinite(low).all() and (low.float() - ref).abs().max() < 0.1 * ref.abs().max()
    double = _build("rosinality", max_channels=16).to(torch.float64)
    half = _build("rosinality", max_channels=16).to(torch.bfloat16)
    with torch.no_grad():
        assert torch.allclose(double.synthesis(ws.double()).float(), ref, atol=1e-4)
        low = half.synthesis(ws)                             # float32 codes into a bfloat16 network
        assert low.dtype == torch.bfloat16 and (low.float() - ref).abs().max() < 0.1 * ref.abs().max()
        assert half.mapping_w(torch.zeros(1, 32)).dtype == torch.bfloat16
    target = ws.clone().requires_grad_(True)
    net.synthesis(target).square().mean().backward()
    assert target.grad is not None and target.grad.abs().max() > 0


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_matches_cpu():
    net = _build("nvlabs", 32, conv_clamp=256)
    ws = _ws(net)
    with torch.no_grad():
        cpu = net.synthesis(ws, noise="const")
        gpu = net.to("cuda").synthesis(ws.cuda(), noise="const").cpu()
        drawn = net.synthesis(ws.cuda(), noise="random", generator=torch.Generator("cuda").manual_seed(0))
    assert torch.allclose(cpu, gpu, atol=1e-3) and drawn.device.type == "cuda"


@pytest.mark.parametrize("layout", LAYOUTS)
def test_latent_weights_are_the_files_style_weights(layout):
    """What SeFa factorizes from the network equals what it reads from the file (engine convention)."""
    from engine.models.checkpoints import latent_weights

    state = {"rosinality": rosinality_state, "nvlabs": lambda: nvlabs_state()[1], "genforce": genforce_state}[layout]()
    net = _convert(layout, state)
    for include_torgb in (False, True):
        ours = net.latent_weights(include_torgb=include_torgb)
        theirs = latent_weights(state, "stylegan2", include_torgb=include_torgb)
        assert len(ours) == len(theirs) == (5 if not include_torgb else 8)
        for (_, a), (_, b) in zip(ours, theirs):
            assert torch.allclose(a, b, atol=1e-5)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_per_image_noise_maps_replace_the_stored_noise_row_by_row(layout):
    """What an inversion optimises: one (B, 1, r, r) map per noise layer, in place of the stored noise."""
    net = _build(layout)
    ws = _ws(net, batch=3)
    stored = [net.get_submodule(name).noise_const.expand(3, 1, r, r) for name, r in net.noise_layers]
    assert [r for _, r in net.noise_layers] == [4, 8, 8, 16, 16]
    drawn = [torch.randn(3, 1, r, r, generator=torch.Generator().manual_seed(i)) for i, (_, r) in
             enumerate(net.noise_layers)]
    changed = [m.clone() for m in drawn]
    changed[-1][1] += 1.0                                     # only row 1's finest map differs
    with torch.no_grad():
        const, replayed = net.synthesis(ws), net.synthesis(ws, noise_maps=stored)
        a, b = net.synthesis(ws, noise_maps=drawn), net.synthesis(ws, noise_maps=changed)
    assert torch.allclose(const, replayed, atol=1e-6)
    assert (a - const).abs().max() > 1e-3
    assert torch.equal(a[[0, 2]], b[[0, 2]]) and (a[1] - b[1]).abs().max() > 1e-3
    with pytest.raises(ValueError, match="one map per noise layer"):
        net.synthesis(ws, noise_maps=drawn[:-1])
    with pytest.raises(ValueError, match=r"blocks.0.conv must have shape \(3, 1, 4, 4\)"):
        net.synthesis(ws, noise_maps=[drawn[1], *drawn[1:]])
