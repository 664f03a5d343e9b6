"""Random-weight StyleGAN3 checkpoints in NVlabs' exact key layout, for tests.

``nvlabs_state`` returns what the safe pickle reader yields for a stylegan3 ``G_ema``: its constructor kwargs
(plain dicts) and its ``state_dict()``. The layout is written out here from NVlabs'
``training/networks_stylegan3.py`` (names, shapes, the geometric progression of cutoffs that sizes the layers,
Kaiser / jinc low-pass filter buffers), independently of the engine's converter, so tests compare the two.
Weights are random and moved away from NVlabs' initial values (zero input affine, unit biases, unit
``magnitude_ema``) so that no term is trivially zero or one.
"""
from __future__ import annotations

import numpy as np
import torch


def nvlabs_init_kwargs(config: str = "T", img_resolution: int = 16, z_dim: int = 8, w_dim: int = 8, c_dim: int = 0,
                       channel_base: int = 128, channel_max: int = 8, num_layers: int = 14,
                       mapping_layers: int = 2, img_channels: int = 3, **synthesis_kwargs) -> dict:
    """``G_ema``'s init_kwargs as train.py writes them for ``--cfg stylegan3-t`` / ``stylegan3-r``.

    Config R doubles ``channel_base`` and ``channel_max`` and sets ``conv_kernel=1``, ``use_radial_filters=True``,
    as train.py does. ``synthesis_kwargs`` adds or overrides any other SynthesisNetwork / SynthesisLayer kwarg.
    """
    if config not in ("T", "R"):
        raise ValueError(f"config must be 'T' or 'R'; got {config!r}")
    kwargs = dict(z_dim=z_dim, c_dim=c_dim, w_dim=w_dim, img_resolution=img_resolution, img_channels=img_channels,
                  mapping_kwargs={"num_layers": mapping_layers}, channel_base=channel_base, channel_max=channel_max,
                  magnitude_ema_beta=0.5 ** (32 / 20e3), num_fp16_res=4, conv_clamp=256, num_layers=num_layers)
    if config == "R":
        kwargs.update(conv_kernel=1, channel_base=channel_base * 2, channel_max=channel_max * 2,
                      use_radial_filters=True)
    kwargs.update(synthesis_kwargs)
    return kwargs


def nvlabs_layers(init_kwargs: dict) -> tuple[dict, list[dict]]:
    """(the Fourier input's {channels, size, sampling_rate, bandwidth}, one dict per synthesis layer) as NVlabs'
    SynthesisNetwork lays them out: name ``L{i}_{size}_{channels}``, channels, sizes, filter taps and cutoffs."""
    kw = {"channel_base": 32768, "channel_max": 512, "num_layers": 14, "num_critical": 2, "first_cutoff": 2,
          "first_stopband": 2 ** 2.1, "last_stopband_rel": 2 ** 0.3, "margin_size": 10, "conv_kernel": 3,
          "filter_size": 6, "lrelu_upsampling": 2, "use_radial_filters": False, **init_kwargs}
    n, res = kw["num_layers"], kw["img_resolution"]
    exponents = np.minimum(np.arange(n + 1) / (n - kw["num_critical"]), 1)
    cutoffs = kw["first_cutoff"] * (res / 2 / kw["first_cutoff"]) ** exponents
    stopbands = kw["first_stopband"] * (res / 2 * kw["last_stopband_rel"] / kw["first_stopband"]) ** exponents
    rates = np.exp2(np.ceil(np.log2(np.minimum(stopbands * 2, res))))
    half_widths = np.maximum(stopbands, rates / 2) - cutoffs
    sizes = rates + kw["margin_size"] * 2
    sizes[-2:] = res
    channels = np.rint(np.minimum((kw["channel_base"] / 2) / cutoffs, kw["channel_max"]))
    channels[-1] = kw["img_channels"]
    source = {"channels": int(channels[0]), "size": int(sizes[0]), "sampling_rate": float(rates[0]),
              "bandwidth": float(cutoffs[0])}
    layers = []
    for i in range(n + 1):
        prev = max(i - 1, 0)
        torgb = i == n
        tmp_rate = max(rates[prev], rates[i]) * (1 if torgb else kw["lrelu_upsampling"])
        up, down = int(round(tmp_rate / rates[prev])), int(round(tmp_rate / rates[i]))
        layers.append({
            "name": f"L{i}_{int(sizes[i])}_{int(channels[i])}", "in_channels": int(channels[prev]),
            "out_channels": int(channels[i]), "kernel": 1 if torgb else kw["conv_kernel"],
            "up_taps": kw["filter_size"] * up if up > 1 and not torgb else 1,
            "down_taps": kw["filter_size"] * down if down > 1 and not torgb else 1,
            "radial": kw["use_radial_filters"] and i < n - kw["num_critical"], "tmp_rate": float(tmp_rate),
            "in_cutoff": cutoffs[prev], "in_half_width": half_widths[prev],
            "out_cutoff": cutoffs[i], "out_half_width": half_widths[i]})
    return source, layers


def lowpass(numtaps: int, cutoff: float, width: float, fs: float, radial: bool = False) -> torch.Tensor:
    """NVlabs' ``design_lowpass_filter``: a separable Kaiser low-pass, or a radially symmetric jinc one."""
    import scipy.signal
    import scipy.special

    if not radial:
        return torch.as_tensor(scipy.signal.firwin(numtaps=numtaps, cutoff=cutoff, width=width, fs=fs),
                               dtype=torch.float32)
    x = (np.arange(numtaps) - (numtaps - 1) / 2) / fs
    r = np.hypot(*np.meshgrid(x, x))
    f = scipy.special.j1(2 * cutoff * (np.pi * r)) / (np.pi * r)
    beta = scipy.signal.kaiser_beta(scipy.signal.kaiser_atten(numtaps, width / (fs / 2)))
    window = np.kaiser(numtaps, beta)
    f *= np.outer(window, window)
    return torch.as_tensor(f / np.sum(f), dtype=torch.float32)


def nvlabs_state(config: str = "T", img_resolution: int = 16, z_dim: int = 8, w_dim: int = 8, c_dim: int = 0,
                 channel_base: int = 128, channel_max: int = 8, num_layers: int = 14, mapping_layers: int = 2,
                 seed: int = 0, **synthesis_kwargs) -> tuple[dict, dict[str, torch.Tensor]]:
    """(init_kwargs, state) of a random-weight NVlabs stylegan3 ``G_ema`` of config ``"T"`` or ``"R"``.

    The defaults make a 16 px generator with at most 8 channels (16 for R) and NVlabs' 14 layers (num_ws 16).
    ``state`` has exactly the keys and shapes of NVlabs' ``G_ema.state_dict()``; the filter buffers are NVlabs'
    designs, everything else is random (seeded: the same arguments give the same tensors).
    """
    init_kwargs = nvlabs_init_kwargs(config, img_resolution, z_dim, w_dim, c_dim, channel_base, channel_max,
                                     num_layers, mapping_layers, **synthesis_kwargs)
    g = torch.Generator().manual_seed(seed)

    def randn(*shape: int, scale: float = 1.0) -> torch.Tensor:
        return torch.randn(shape, generator=g) * scale

    state: dict[str, torch.Tensor] = {}
    if c_dim:
        state["mapping.embed.weight"] = randn(w_dim, c_dim)
        state["mapping.embed.bias"] = randn(w_dim, scale=0.1)
    fan_in = z_dim + (w_dim if c_dim else 0)
    for i in range(mapping_layers):
        state[f"mapping.fc{i}.weight"] = randn(w_dim, fan_in, scale=100.0)      # lr multiplier 0.01
        state[f"mapping.fc{i}.bias"] = randn(w_dim, scale=10.0)
        fan_in = w_dim
    state["mapping.w_avg"] = randn(w_dim, scale=0.5)
    source, layers = nvlabs_layers(init_kwargs)
    c = source["channels"]
    radii = randn(c, 2)
    state.update({
        "synthesis.input.weight": randn(c, c),
        "synthesis.input.affine.weight": randn(4, w_dim, scale=0.2),
        "synthesis.input.affine.bias": torch.tensor([1.0, 0.0, 0.0, 0.0]) + randn(4, scale=0.1),
        "synthesis.input.transform": torch.eye(3),
        "synthesis.input.freqs": radii / radii.norm(dim=1, keepdim=True) * source["bandwidth"]
        * torch.rand(c, 1, generator=g),
        "synthesis.input.phases": torch.rand(c, generator=g) - 0.5})
    for layer in layers:
        prefix = f"synthesis.{layer['name']}"
        k = layer["kernel"]
        state[f"{prefix}.weight"] = randn(layer["out_channels"], layer["in_channels"], k, k)
        state[f"{prefix}.bias"] = randn(layer["out_channels"], scale=0.1)
        state[f"{prefix}.magnitude_ema"] = torch.rand((), generator=g) + 0.5
        if layer["up_taps"] > 1:
            state[f"{prefix}.up_filter"] = lowpass(layer["up_taps"], layer["in_cutoff"],
                                                   layer["in_half_width"] * 2, layer["tmp_rate"])
        if layer["down_taps"] > 1:
            state[f"{prefix}.down_filter"] = lowpass(layer["down_taps"], layer["out_cutoff"],
                                                     layer["out_half_width"] * 2, layer["tmp_rate"],
                                                     radial=layer["radial"])
        state[f"{prefix}.affine.weight"] = randn(layer["in_channels"], w_dim)
        state[f"{prefix}.affine.bias"] = 1 + randn(layer["in_channels"], scale=0.1)
    return init_kwargs, state
