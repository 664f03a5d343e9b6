"""Feature taps: a generator's intermediate outputs, named as ``named_modules()`` names them.

GANSpace on activations and LatentCLR (issue 14) work on what one layer of the generator outputs, not on its
codes. A tap records that layer's output with a forward hook, flattened per sample, and stops the forward
pass right after it (an exception the tap itself catches), so the layers after it cost nothing.
``layer_shapes`` runs one code through the whole generator and lists every module with its output shape, which
is what ``latent-engine layers`` prints so that a user can pick one.
"""
from __future__ import annotations

import difflib
from typing import Any

import numpy as np
import torch


class _Stop(Exception):
    """Raised by a tap's hook once it has what it needs; caught by the tap."""


def output_tensor(output: Any) -> torch.Tensor | None:
    """The tensor a module returned (the first one of a tuple or list), or None."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)):
        return next((o for o in output if isinstance(o, torch.Tensor)), None)
    return None


def _example(G: Any, device: torch.device) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One code (and class label) drawn as the sampler draws chunk 0 of seed 0."""
    from engine.methods.editing import starting_codes

    z, labels = starting_codes(G, 0, 1)
    return (torch.from_numpy(z).to(device),
            None if labels is None else torch.from_numpy(labels.astype(np.int64)).to(device))


def _forward(G: Any, z: torch.Tensor, labels: torch.Tensor | None) -> None:
    from engine.models.base import map_codes, synthesize

    synthesize(G, map_codes(G, z, labels), labels)


def _device(G: Any) -> torch.device:
    if isinstance(G, torch.nn.Module):
        for tensor in list(G.parameters()) + list(G.buffers()):
            return tensor.device
    return torch.device("cpu")


def layer_shapes(G: Any) -> list[tuple[str, tuple[int, ...]]]:
    """[(module name, output shape of one sample)] for every named module of ``G`` whose output is a tensor,
    in the order they finish (one code through mapping and synthesis)."""
    if not isinstance(G, torch.nn.Module):
        raise ValueError(f"generator {getattr(G, 'spec', G)!r} is not a torch module: it has no layers to tap")
    found: dict[str, tuple[int, ...]] = {}
    handles = []
    for name, module in G.named_modules():
        if not name:
            continue

        def hook(module: torch.nn.Module, args: Any, output: Any, name: str = name) -> None:
            tensor = output_tensor(output)
            if tensor is not None and name not in found:
                found[name] = tuple(tensor.shape[1:])
        handles.append(module.register_forward_hook(hook))
    try:
        with torch.inference_mode():
            _forward(G, *_example(G, _device(G)))
    finally:
        for handle in handles:
            handle.remove()
    return list(found.items())


def check_layer(G: Any, name: str) -> torch.nn.Module:
    """The module ``name`` of ``G``; a one-line ValueError naming the closest names when there is none."""
    modules = dict(G.named_modules()) if isinstance(G, torch.nn.Module) else {}
    if name and name in modules:
        return modules[name]
    close = difflib.get_close_matches(str(name), [n for n in modules if n], n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise ValueError(f"generator {getattr(G, 'spec', type(G).__name__)!r} has no layer {name!r}{hint} "
                     "(latent-engine layers --generator SPEC lists them)")


def features(G: Any, z: torch.Tensor, name: str, labels: torch.Tensor | None = None) -> torch.Tensor:
    """The output of layer ``name`` for codes ``z`` (B, z_dim), flattened per sample: (B, F). The forward pass
    stops after that layer. A layer that the forward pass never reaches is a ValueError."""
    module = check_layer(G, name)
    captured: list[torch.Tensor] = []

    def hook(module: torch.nn.Module, args: Any, output: Any) -> None:
        tensor = output_tensor(output)
        if tensor is None:
            raise ValueError(f"layer {name!r} returns no tensor ({type(output).__name__})")
        captured.append(tensor.reshape(tensor.shape[0], -1))
        raise _Stop

    handle = module.register_forward_hook(hook)
    try:
        _forward(G, z, labels)
    except _Stop:
        pass
    finally:
        handle.remove()
    if not captured:
        raise ValueError(f"layer {name!r} of generator {getattr(G, 'spec', type(G).__name__)!r} is not run by its "
                         "forward pass (mapping and synthesis)")
    return captured[0]
