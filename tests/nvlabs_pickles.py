"""Write pickles in NVlabs' ``torch_utils.persistence`` layout without NVlabs code (a test helper).

NVlabs' training loop pickles ``dict(G=..., D=..., G_ema=..., augment_pipe=..., training_set_kwargs=...)``; each
network reduces to ``torch_utils.persistence._reconstruct_persistent_obj(meta)`` with ``meta = dict(type='class',
version=6, module_src=<the networks file's source>, class_name=..., state=<the module's __dict__>)``, and kwargs
are ``dnnlib.util.EasyDict``s. ``write_network_pickle`` writes exactly that from a flat state dict: it registers
throwaway ``torch_utils.persistence`` and ``dnnlib.util`` modules in ``sys.modules`` only while pickling, so the
file names the same globals as a real one, and restores ``sys.modules`` afterwards.
"""
from __future__ import annotations

import contextlib
import os
import pickle
import sys
import types
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

import torch

PERSISTENCE_VERSION = 6
# The buffers NVlabs' networks register (stylegan2-ada-pytorch, stylegan3, AugmentPipe); other tensors are
# parameters, as in their files.
NVLABS_BUFFERS = frozenset({"w_avg", "noise_const", "resample_filter", "magnitude_ema", "up_filter", "down_filter",
                            "transform", "freqs", "phases", "p", "Hz_geom", "Hz_fbank"})

# Stand-ins for the networks files' source text: the class definitions by which the reader tells the two families
# apart (no NVlabs code; the reader never runs the source anyway).
STYLEGAN2_SOURCE = """import torch
from torch_utils import persistence

def modulated_conv2d(x, weight, styles): ...

@persistence.persistent_class
class MappingNetwork(torch.nn.Module): ...

@persistence.persistent_class
class SynthesisLayer(torch.nn.Module): ...

@persistence.persistent_class
class ToRGBLayer(torch.nn.Module): ...

@persistence.persistent_class
class SynthesisBlock(torch.nn.Module): ...

@persistence.persistent_class
class SynthesisNetwork(torch.nn.Module): ...

@persistence.persistent_class
class Generator(torch.nn.Module): ...

@persistence.persistent_class
class Discriminator(torch.nn.Module): ...
"""
STYLEGAN3_SOURCE = """import torch
from torch_utils import persistence

@persistence.persistent_class
class MappingNetwork(torch.nn.Module): ...

@persistence.persistent_class
class SynthesisInput(torch.nn.Module): ...

@persistence.persistent_class
class SynthesisLayer(torch.nn.Module): ...

@persistence.persistent_class
class SynthesisNetwork(torch.nn.Module): ...

@persistence.persistent_class
class Generator(torch.nn.Module): ...
"""


@dataclass
class Network:
    """One persistent network to write.

    ``state`` is flat, in ``state_dict`` order (``"mapping.fc0.weight"``; dotted prefixes become child modules).
    A tensor is written as a buffer when it is not a ``torch.nn.Parameter`` and its last name component is in
    ``NVLABS_BUFFERS``, else as a parameter. ``non_persistent`` holds extra buffers (dotted names) registered
    as non-persistent, which ``state_dict`` leaves out. ``attributes`` and ``class_names`` are keyed by dotted
    module path (``""`` = this network); children's class names default to ``"Module"``.
    """

    class_name: str
    module_source: str
    init_kwargs: dict
    state: Mapping[str, torch.Tensor]
    init_args: tuple = ()
    attributes: Mapping[str, dict] = field(default_factory=dict)
    non_persistent: Mapping[str, torch.Tensor] = field(default_factory=dict)
    class_names: Mapping[str, str] = field(default_factory=dict)


def write_network_pickle(path: str | os.PathLike,
                         networks: Mapping[str, tuple[str, str, dict, Mapping[str, torch.Tensor]] | Network],
                         extra: dict | None = None, *, protocol: int = 4) -> None:
    """Write ``{**extra, name: network, ...}`` to ``path`` as NVlabs' training loop pickles its snapshots.

    ``networks`` maps a top-level key (``"G_ema"``, ``"G"``, ``"D"``, ...) to ``(class_name, module_source,
    init_kwargs, flat_state)`` or a ``Network``; ``None`` values (``augment_pipe=None``) go through as they are.
    Nested dicts in ``init_kwargs`` are written as ``dnnlib.util.EasyDict``s, as ``train.py`` builds them.
    ``extra`` entries (e.g. ``training_set_kwargs``) are pickled as given.
    """
    data = dict(extra or {})
    with _nvlabs_modules() as (reconstruct, easydict):
        for key, network in networks.items():
            if network is not None and not isinstance(network, Network):
                network = Network(*network)
            data[key] = None if network is None else _persistent_tree(network, reconstruct, easydict)
        with open(path, "wb") as f:
            pickle.dump(data, f, protocol=protocol)


class _Persistent:
    """Reduces to ``_reconstruct_persistent_obj(meta)``, as persistence's decorator makes a network reduce."""

    def __init__(self, reconstruct: types.FunctionType, meta: dict) -> None:
        self.reconstruct, self.meta = reconstruct, meta

    def __reduce__(self) -> tuple:
        return self.reconstruct, (self.meta,)


@contextlib.contextmanager
def _nvlabs_modules() -> Iterator[tuple[types.FunctionType, type]]:
    """Throwaway ``torch_utils.persistence`` / ``dnnlib.util`` modules, registered only inside the block."""
    def _reconstruct_persistent_obj(meta):
        raise AssertionError("the throwaway persistence module never unpickles")

    class EasyDict(dict):
        pass

    made = {"torch_utils": types.ModuleType("torch_utils"),
            "torch_utils.persistence": types.ModuleType("torch_utils.persistence"),
            "dnnlib": types.ModuleType("dnnlib"), "dnnlib.util": types.ModuleType("dnnlib.util")}
    for obj, module, name in ((_reconstruct_persistent_obj, "torch_utils.persistence", "_reconstruct_persistent_obj"),
                              (EasyDict, "dnnlib.util", "EasyDict")):
        obj.__module__, obj.__qualname__, obj.__name__ = module, name, name
        setattr(made[module], name, obj)
    saved = {name: sys.modules.get(name) for name in made}
    sys.modules.update(made)
    try:
        yield _reconstruct_persistent_obj, EasyDict
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


def _easydicts(value: object, easydict: type) -> object:
    if isinstance(value, dict):
        return easydict({k: _easydicts(v, easydict) for k, v in value.items()})
    if isinstance(value, (list, tuple)):
        return type(value)(_easydicts(v, easydict) for v in value)
    return value


def _persistent_tree(network: Network, reconstruct: types.FunctionType, easydict: type) -> _Persistent:
    root: tuple[list, dict] = ([], {})           # a module: ([(name, tensor, persistent)], {child: module})
    for name, tensor in network.state.items():
        _owner(root, name)[0].append((name.rsplit(".", 1)[-1], tensor, True))
    for name, tensor in network.non_persistent.items():
        _owner(root, name)[0].append((name.rsplit(".", 1)[-1], tensor, False))
    kwargs = {k: _easydicts(v, easydict) for k, v in network.init_kwargs.items()}
    return _module(network, root, "", network.class_name, tuple(network.init_args), kwargs, reconstruct)


def _owner(root: tuple[list, dict], dotted: str) -> tuple[list, dict]:
    """The module that owns the dotted tensor name, its parents created on the way."""
    node = root
    for part in dotted.split(".")[:-1]:
        node = node[1].setdefault(part, ([], {}))
    return node


def _module(network: Network, node: tuple[list, dict], path: str, class_name: str, init_args: tuple,
            init_kwargs: dict, reconstruct: types.FunctionType) -> _Persistent:
    """One module's persistent reduce. Payloads placed in attributes or kwargs are pickled, never copied
    (copying would run their reduce)."""
    tensors, children = node
    state = vars(torch.nn.Module()).copy()       # this torch's module __dict__: hooks and all, as a real file holds
    state["training"] = False
    state["_parameters"], state["_buffers"] = OrderedDict(), OrderedDict()
    state["_non_persistent_buffers_set"] = set()
    for name, tensor, persistent in tensors:
        if not persistent or (not isinstance(tensor, torch.nn.Parameter) and name in NVLABS_BUFFERS):
            state["_buffers"][name] = tensor.detach().clone()
            if not persistent:
                state["_non_persistent_buffers_set"].add(name)
        else:
            state["_parameters"][name] = torch.nn.Parameter(tensor.detach().clone(), requires_grad=False)
    state["_modules"] = OrderedDict(
        (name, _module(network, child, f"{path}{name}.", network.class_names.get(f"{path}{name}", "Module"), (), {},
                       reconstruct))
        for name, child in children.items())
    state.update(network.attributes.get(path.removesuffix("."), {}))
    state["_init_args"], state["_init_kwargs"] = init_args, init_kwargs
    meta = dict(type="class", version=PERSISTENCE_VERSION, module_src=network.module_source, class_name=class_name,
                state=state)
    return _Persistent(reconstruct, meta)
