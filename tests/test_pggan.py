"""The engine's PGGAN network and its reader of genforce's state dicts (engine.models.pggan).

Values are checked against PGGAN's math written out in NumPy (float64), independent of the torch code; parity
with genforce's own PGGANGenerator is checked outside the project (see the issue).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.models.checkpoints import CheckpointError, latent_weights, load_checkpoint, unwrap
from engine.models.pggan import PGGANNetwork, from_genforce, to_genforce
from tests.pggan_checkpoints import pggan_state, save_pggan_checkpoint


def _z(n: int, z_dim: int = 32, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, z_dim, generator=torch.Generator().manual_seed(seed))


# --- PGGAN in NumPy, from the paper's definitions (NCHW, float64) ---------------------------------------------

def _np_pixel_norm(x: np.ndarray) -> np.ndarray:
    return x / np.sqrt(np.mean(x ** 2, axis=1, keepdims=True) + 1e-8)


def _np_conv(x: np.ndarray, w: np.ndarray, pad: int) -> np.ndarray:
    """Cross-correlation of x (B, C, H, W) with w (O, C, k, k), zero padding ``pad``."""
    k = w.shape[-1]
    x = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    windows = np.lib.stride_tricks.sliding_window_view(x, (k, k), axis=(2, 3))     # B, C, H', W', k, k
    return np.einsum("bchwij,ocij->bohw", windows, w)


def _np_conv_transpose(x: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Transposed convolution of x (B, C, H, W) with kernel (C, O, 4, 4), stride 2, padding 1 (TF's conv2d_transpose
    of PGGAN's fused upscale2d_conv2d): every input pixel adds its kernel-weighted 4×4 patch at (2i, 2j)."""
    b, _, h, w = x.shape
    out = np.zeros((b, kernel.shape[1], 2 * h + 2, 2 * w + 2))
    for p in range(4):
        for q in range(4):
            out[:, :, p:p + 2 * h:2, q:q + 2 * w:2] += np.einsum("bchw,co->bohw", x, kernel[:, :, p, q])
    return out[:, :, 1:-1, 1:-1]


def _np_layer(x: np.ndarray, state: dict, key: str, *, pad: int, gain: float = np.sqrt(2), up: str = "",
              act: bool = True) -> np.ndarray:
    w, b = state[f"{key}.weight"].double().numpy(), state[f"{key}.bias"].double().numpy()
    x = _np_pixel_norm(x)
    if up == "fused":                      # w is (in, out, 3, 3): the 3×3 kernel summed over its four shifts
        fan_in = w.shape[0] * 9
        wp = np.pad(w * gain / np.sqrt(fan_in), ((0, 0), (0, 0), (1, 1), (1, 1)))
        kernel = wp[:, :, 1:, 1:] + wp[:, :, :-1, 1:] + wp[:, :, 1:, :-1] + wp[:, :, :-1, :-1]
        x = _np_conv_transpose(x, kernel)
    else:
        if up:
            x = x.repeat(2, axis=2).repeat(2, axis=3)
        x = _np_conv(x, w * gain / np.sqrt(w[0].size), pad)
    x = x + b[None, :, None, None]
    return np.where(x >= 0, x, 0.2 * x) if act else x


def _np_pggan(state: dict, z: np.ndarray, fused: bool = False) -> np.ndarray:
    """genforce's PGGANGenerator at lod 0: pixel norm of z, 4×4 conv of the 1×1 code (padding 3), ..., ToRGB."""
    levels = sum(1 for key in state if key.startswith("output") and key.endswith(".weight"))
    x = _np_pixel_norm(z)[:, :, None, None]
    x = _np_layer(x, state, "layer0", pad=3)
    x = _np_layer(x, state, "layer1", pad=1)
    for k in range(1, levels):
        x = _np_layer(x, state, f"layer{2 * k}", pad=1, up="fused" if fused else "nearest")
        x = _np_layer(x, state, f"layer{2 * k + 1}", pad=1)
    return _np_layer(x, state, f"output{levels - 1}", pad=0, gain=1.0, act=False)


@pytest.mark.parametrize("fused", [False, True])
def test_images_match_pggan_math_in_numpy(fused):
    state = pggan_state(16, z_dim=24, channels=[16, 12, 8], fused_scale=fused, seed=3)
    net = from_genforce(state, fused_scale=fused).double()
    z = _z(5, 24).double()
    expected = _np_pggan(state, z.numpy(), fused=fused)
    got = net(z).detach().numpy()
    assert got.shape == (5, 3, 16, 16)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-10 * np.abs(expected).max())
    assert np.abs(expected).max() > 0.5          # the images are not all ~0, so the comparison has teeth


@pytest.mark.parametrize("resolution,z_dim,img_channels", [(8, 16, 3), (32, 32, 1)])
def test_shapes_attributes_and_eval_mode(resolution, z_dim, img_channels):
    net = from_genforce(pggan_state(resolution, z_dim=z_dim, img_channels=img_channels))
    assert (net.z_dim, net.img_resolution, net.img_channels) == (z_dim, resolution, img_channels)
    assert not net.training
    with torch.no_grad():
        images = net(_z(3, z_dim))
    assert images.shape == (3, img_channels, resolution, resolution) and images.dtype == torch.float32
    assert torch.isfinite(images).all()


def test_deterministic_and_independent_of_the_batch():
    net = from_genforce(pggan_state(16))
    z = _z(6)
    with torch.no_grad():
        first, again, alone = net(z), net(z), net(z[2:3])
    assert torch.equal(first, again)
    torch.testing.assert_close(alone, first[2:3], rtol=1e-5, atol=1e-5)


def test_z_is_pixel_normalised_first():
    """PGGAN normalises z to unit RMS first: scaling a code does not change its image; another code does."""
    net = from_genforce(pggan_state(8))
    z = _z(4)
    with torch.no_grad():
        images, scaled, other = net(z), net(7.5 * z), net(_z(4, seed=2))
    torch.testing.assert_close(scaled, images, rtol=1e-5, atol=1e-5)
    assert (other - images).abs().max() > 0.1


def test_images_are_not_clamped_and_final_tanh_bounds_them():
    state = pggan_state(8, seed=4)
    state["output1.bias"] += 10.0              # push every image beyond [-1, 1]
    with torch.no_grad():
        raw = from_genforce(state)(_z(2))
        bounded = from_genforce(state, final_tanh=True)(_z(2))
    assert raw.min() > 1.0
    torch.testing.assert_close(bounded, torch.tanh(raw))


def test_stored_lod_is_honoured_as_a_blend_of_resolutions():
    z = _z(3)
    images = {}
    with torch.no_grad():
        for lod in (0.0, 0.25, 1.0, 2.0):
            images[lod] = from_genforce(pggan_state(16, lod=lod))(z)
    # lod k: the image of the resolution k steps below the last, upsampled (nearest): constant 2^k × 2^k blocks
    for lod, block in ((1.0, 2), (2.0, 4)):
        blocks = images[lod].unfold(2, block, block).unfold(3, block, block)
        assert torch.equal(blocks, blocks[..., :1, :1].expand_as(blocks))
    assert not torch.allclose(images[0.0], images[1.0], atol=1e-2)
    # between two integers: alpha = ceil(lod) - lod of the finer image, the rest of the coarser
    torch.testing.assert_close(images[0.25], 0.75 * images[0.0] + 0.25 * images[1.0], rtol=1e-5, atol=1e-5)


def test_lod_beyond_the_resolutions_is_refused():
    with pytest.raises(CheckpointError, match=r"^genforce PGGAN layout: lod must be in \[0, 2\].*got 3.*'lod'") as err:
        from_genforce(pggan_state(16, lod=3.0))
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("edit,message", [
    (lambda s: s.pop("layer3.bias"), r"missing key 'layer3\.bias'"),
    (lambda s: s.pop("lod"), r"missing key 'lod'"),
    (lambda s: s.update({"layer9.weight": torch.zeros(1)}), r"unexpected key 'layer9\.weight'"),
    (lambda s: s.update({"layer1.weight": torch.zeros(32, 32, 1, 1)}),
     r"layer1\.weight has shape \(32, 32, 1, 1\); expected \(32, 32, 3, 3\)"),
    (lambda s: s.update({"output2.bias": torch.zeros(4)}), r"output2\.bias has shape \(4,\); expected \(3,\)"),
])
def test_strict_loading_names_the_key_in_one_line(edit, message):
    state = pggan_state(16)
    edit(state)
    with pytest.raises(CheckpointError, match="^genforce PGGAN layout: " + message) as err:
        from_genforce(state)
    assert "\n" not in str(err.value)


def test_fused_layout_read_as_unfused_is_refused_with_a_hint():
    state = pggan_state(16, channels=[32, 32, 16], fused_scale=True)
    with pytest.raises(CheckpointError, match=r"layer4\.weight has shape \(32, 16, 3, 3\); expected \(16, 32, 3, 3\)"
                                              r".*fused_scale=True"):
        from_genforce(state)


def test_runs_under_bf16_autocast_close_to_float32():
    net = from_genforce(pggan_state(16, seed=5))
    z = _z(4)
    with torch.no_grad():
        reference = net(z)
        with torch.autocast("cpu", torch.bfloat16):
            low = net(z)
    assert low.shape == reference.shape and torch.isfinite(low).all()
    assert (low.float() - reference).abs().max() < 0.05 * reference.abs().max()


def test_follows_the_parameters_dtype():
    net = from_genforce(pggan_state(8))
    z = _z(2)
    with torch.no_grad():
        single, double = net(z), net.double()(z.double())
    assert double.dtype == torch.float64
    torch.testing.assert_close(double.float(), single, rtol=1e-4, atol=1e-4)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    net = from_genforce(pggan_state(16))
    z = _z(4)
    with torch.no_grad():
        cpu = net(z)
        gpu = net.cuda()(z.cuda()).cpu()
    torch.testing.assert_close(gpu, cpu, rtol=1e-3, atol=1e-3)


def test_latent_weights_are_what_sefa_reads_from_the_file():
    state = pggan_state(8, z_dim=16)
    (name, weight), = from_genforce(state).latent_weights()
    (file_name, file_weight), = latent_weights(state, "pggan")
    assert name == file_name == "layer0" and weight.shape == (32 * 16, 16)
    torch.testing.assert_close(weight, file_weight)


def test_checkpoint_file_round_trip(tmp_path):
    """A saved genforce file loads through the engine's safe reader (generator_smooth first) and back."""
    path = tmp_path / "pggan.pth"
    expected = save_pggan_checkpoint(path, smooth=True, resolution=8)
    state, source = unwrap(load_checkpoint(path), str(path))
    assert source == "generator_smooth"
    net = from_genforce(state)
    assert all(torch.equal(to_genforce(net)[key], tensor) for key, tensor in expected.items())
    assert set(to_genforce(net)) == set(expected)


def test_bad_codes_and_options_are_refused():
    net = from_genforce(pggan_state(8))
    with pytest.raises(ValueError, match=r"z must have shape \(batch, 32\); got \(2, 31\)"):
        net(torch.zeros(2, 31))
    with pytest.raises(ValueError, match=r"lod must be in \[0, 1\]"):
        PGGANNetwork([8, 8], z_dim=4, lod=-0.5)
    with pytest.raises(ValueError, match="channels must be"):
        PGGANNetwork([], z_dim=4)
