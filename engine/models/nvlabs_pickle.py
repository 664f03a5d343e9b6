"""Read NVlabs network pickles (stylegan2-ada-pytorch, stylegan3) as data, never as code.

NVlabs' ``.pkl`` files are meant for ``pickle.load``, which imports ``torch_utils.persistence``, executes the
Python module source embedded in the file and rebuilds the network classes from it. This reader does none of
that. Its unpickler resolves only an allowlist of globals (``ALLOWED_GLOBALS``), each to an engine-owned callable
that builds data: ``torch_utils.persistence._reconstruct_persistent_obj`` records the object's class name,
source text (kept as text) and state; ``dnnlib.util.EasyDict`` becomes ``dict``; tensors are rebuilt by torch's
plain-pickle route, their storage bytes read with ``torch.load(weights_only=True)`` and every view checked to
stay inside its storage; numeric numpy arrays, scalars and dtypes go through numpy's constructors after a type
check. Any other global (``os.system``, ``builtins.exec``, a network class of the file's own) is refused with
``UnsafePickleError`` before it is called; nothing from the file runs.

Loading happens in two steps. The unpickler builds only plain containers, numbers, strings, numpy values and
inert tokens (a tensor, a persistent object's recorded ``meta``) that no pickle opcode can alter. A second pass
checks every type and turns the tokens into tensors and ``PersistentObject``s, so what comes back is data of the
documented shapes only.

The layout read (``torch_utils/persistence.py``, version 6): the file is a dict such as ``{'G', 'D', 'G_ema',
'augment_pipe', 'training_set_kwargs'}``; each network is ``_reconstruct_persistent_obj(meta)`` with
``meta = {type: 'class', version, module_src, class_name, state}`` and ``state`` the module's ``__dict__``
(``_parameters``, ``_buffers``, ``_non_persistent_buffers_set``, ``_modules``, hooks, ``_init_args``,
``_init_kwargs`` and the plain attributes such as ``z_dim``).
"""
from __future__ import annotations

import io
import os
import pickle
import re
import warnings
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from engine.models.checkpoint_errors import CheckpointError, first_line

PERSISTENCE_VERSION = 6
TF_NETWORK = ("dnnlib.tflib.network", "Network")


class UnsafePickleError(CheckpointError):
    """A pickle asked for a global outside the allowlist; it was refused before anything from the file ran."""


@dataclass(eq=False, repr=False)
class PersistentObject:
    """One persistent network object of an NVlabs pickle, rebuilt as data only.

    ``module_source`` is the Python source the file embeds for the object's class; it is kept as text and never
    executed or compiled. ``init_args``/``init_kwargs`` are the constructor arguments the object was built with
    (``dnnlib.EasyDict`` turned into ``dict``, recursively). ``attributes`` are the other public fields of its
    state (``z_dim``, ``w_dim``, ``block_resolutions``, ...); numpy values stay numpy values. ``parameters`` and
    ``buffers`` hold the object's own tensors (never None), ``non_persistent`` the names of buffers that
    ``state_dict`` leaves out, ``children`` the sub-networks by attribute name.
    """

    class_name: str
    module_source: str
    init_args: list = field(default_factory=list)
    init_kwargs: dict = field(default_factory=dict)
    attributes: dict = field(default_factory=dict)
    parameters: dict[str, torch.Tensor] = field(default_factory=dict)
    buffers: dict[str, torch.Tensor] = field(default_factory=dict)
    non_persistent: set[str] = field(default_factory=set)
    children: dict[str, PersistentObject] = field(default_factory=dict)

    def __repr__(self) -> str:
        return (f"PersistentObject({self.class_name}, kind={self.module_kind()}, {len(self.state_dict())} tensors, "
                f"children={list(self.children)})")

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The flat {dotted name: tensor} dict ``module.state_dict()`` of the original network gives, in its order:
        each module's parameters, then its persistent buffers, then its children's entries."""
        out: dict[str, torch.Tensor] = {}
        self._collect(out, "")
        return out

    def _collect(self, out: dict[str, torch.Tensor], prefix: str) -> None:
        out.update((prefix + name, tensor) for name, tensor in self.parameters.items())
        out.update((prefix + name, tensor) for name, tensor in self.buffers.items() if name not in self.non_persistent)
        for name, child in self.children.items():
            child._collect(out, f"{prefix}{name}.")

    def module_kind(self) -> str | None:
        """Which NVlabs networks file ``module_source`` is, judged from its text (class definitions) alone:
        ``"stylegan2"`` (stylegan2-ada-pytorch's ``training/networks.py``, stylegan3's ``networks_stylegan2.py``),
        ``"stylegan3"`` (``networks_stylegan3.py``), or None for any other source."""
        classes = set(re.findall(r"^class\s+(\w+)\s*[(:]", self.module_source, flags=re.MULTILINE))
        common = {"Generator", "MappingNetwork", "SynthesisNetwork", "SynthesisLayer"}
        if not common <= classes:
            return None
        if {"SynthesisInput"} <= classes and "SynthesisBlock" not in classes:
            return "stylegan3"
        if {"SynthesisBlock", "ToRGBLayer"} <= classes and "SynthesisInput" not in classes:
            return "stylegan2"
        return None


def read_network_pickle(path: str | os.PathLike) -> dict:
    """The whole NVlabs network pickle at ``path``: its top-level dict, with every persistent network as a
    ``PersistentObject``, tensors on CPU and ``EasyDict``s as plain dicts.

    Raises ``FileNotFoundError`` for a missing file, ``UnsafePickleError`` (one line naming the global) for a
    pickle that asks for anything outside the allowlist, and ``CheckpointError`` (one line naming the file) for a
    TensorFlow pickle, an unknown persistence version, or a file that is not a readable network pickle.
    """
    path = str(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no network pickle {path}")
    try:
        raw = _load(path)
        data = _Materializer().value(raw)
    except CheckpointError as exc:      # UnsafePickleError too: the same one line, with the file's name in front
        raise type(exc)(f"{path}: {exc}") from None
    except RecursionError:
        raise CheckpointError(f"{path}: nested too deeply to be a network pickle") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: not an NVlabs network pickle (it holds a {type(data).__name__}, not a "
                              "dict of networks such as G_ema)")
    return data


def read_generator(path: str | os.PathLike, key: str = "G_ema") -> PersistentObject:
    """The network stored under ``key`` (the averaged generator ``G_ema`` by default) in the pickle at ``path``.

    Raises ``CheckpointError`` (one line) when the file has no such entry or the entry is not a network, and
    whatever ``read_network_pickle`` raises.
    """
    data = read_network_pickle(path)
    if key not in data:
        raise CheckpointError(f"{path} has no {key!r} network (its entries: {', '.join(map(str, data)) or 'none'})")
    network = data[key]
    if not isinstance(network, PersistentObject):
        raise CheckpointError(f"{path}: its {key!r} entry is a {type(network).__name__}, not a network")
    return network


# ---------------------------------------------------------------- step 1: unpickling to plain data and tokens


class _Inert:
    """Base of everything the unpickler hands out that is not plain data: no ``__dict__`` and no attribute
    setting, so a BUILD opcode aimed at one fails instead of changing it."""

    __slots__ = ()

    def __setattr__(self, name: str, value: object) -> None:
        raise CheckpointError(f"the pickle tries to set {name!r} on {type(self).__name__}; not a network pickle")


class _Allowed(_Inert):
    """An allowlisted global as the unpickler returns it: a named engine-owned callable."""

    __slots__ = ("name", "function")

    def __init__(self, name: str, function: Callable) -> None:
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "function", function)

    def __call__(self, *args: object) -> object:
        return self.function(*args)


class _Tensor(_Inert):
    """A tensor rebuilt from the pickle, kept out of reach of later opcodes (``Tensor.__setstate__``)."""

    __slots__ = ("tensor",)

    def __init__(self, tensor: torch.Tensor) -> None:
        object.__setattr__(self, "tensor", tensor)


class _Storage(_Inert):
    """A storage read from its bytes: (untyped storage, dtype)."""

    __slots__ = ("untyped", "dtype")

    def __init__(self, untyped: torch.UntypedStorage, dtype: torch.dtype) -> None:
        object.__setattr__(self, "untyped", untyped)
        object.__setattr__(self, "dtype", dtype)


class _Persistent(_Inert):
    """``_reconstruct_persistent_obj(meta)`` as recorded: the meta, turned into a PersistentObject after loading."""

    __slots__ = ("meta",)

    def __init__(self, meta: object) -> None:
        object.__setattr__(self, "meta", meta)


def _load_storage(data: object) -> _Storage:
    """``torch.storage._load_from_bytes``: a storage saved by ``torch.save`` in its legacy format, read weights-only."""
    if not isinstance(data, bytes):
        raise CheckpointError(f"a tensor storage is given as {type(data).__name__}, not bytes")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")     # TypedStorage deprecation
            storage = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        asked = re.search(r"GLOBAL (\S+)", str(exc))
        if asked:
            raise UnsafePickleError(f"a tensor's storage bytes ask for {asked.group(1)}, which is not allowed; "
                                    "refused, nothing from the file was run") from None
        raise CheckpointError(f"a tensor's storage is not readable ({first_line(exc)})") from None
    except Exception as exc:  # noqa: BLE001 - damaged storage bytes make torch.load raise almost anything
        raise CheckpointError(f"a tensor's storage is not readable ({type(exc).__name__}: {first_line(exc)})") \
            from None
    if not isinstance(storage, torch.TypedStorage):
        raise CheckpointError(f"a tensor's storage bytes hold a {type(storage).__name__}, not a storage")
    return _Storage(storage._untyped_storage, storage.dtype)


def _ints(value: object, what: str) -> tuple[int, ...]:
    if not isinstance(value, (tuple, list)) or not all(type(v) is int and v >= 0 for v in value):
        raise CheckpointError(f"{what} is not a tuple of non-negative integers")
    return tuple(value)


def _no_hooks(hooks: object) -> None:
    if not (hooks is None or (isinstance(hooks, dict) and not hooks)):
        raise CheckpointError("a tensor carries backward hooks; a network pickle's tensors have none")


def _view_fits(storage: _Storage, offset: int, size: tuple[int, ...], stride: tuple[int, ...]) -> None:
    """Refuses a view reaching past its storage (torch's ``set_`` would grow the storage instead)."""
    if len(size) != len(stride):
        raise CheckpointError(f"a tensor has {len(size)} sizes but {len(stride)} strides")
    elements = storage.untyped.nbytes() // storage.dtype.itemsize
    last = offset + sum((n - 1) * s for n, s in zip(size, stride)) if all(size) else offset - 1
    if last >= elements:
        raise CheckpointError(f"a tensor of size {size} at offset {offset} reaches past its storage of {elements} "
                              "elements")


def _rebuild_tensor(storage: object, offset: object, size: object, stride: object, requires_grad: object = False,
                    backward_hooks: object = None, metadata: object = None) -> _Tensor:
    """``torch._utils._rebuild_tensor_v2``: a view of ``storage`` (offset, size, stride) that stays inside it.
    Gradient flags and (empty) hooks are dropped: the tensors come back as plain data."""
    if not isinstance(storage, _Storage):
        raise CheckpointError(f"a tensor is built on a {type(storage).__name__}, not on a storage")
    if type(offset) is not int or offset < 0 or not isinstance(requires_grad, bool):
        raise CheckpointError("a tensor's storage offset or requires_grad flag is not valid")
    _no_hooks(backward_hooks)
    if not (metadata is None or (isinstance(metadata, dict) and not metadata)):
        raise CheckpointError("a tensor carries metadata (conjugate/negative bits), which this reader does not apply")
    size, stride = _ints(size, "a tensor's size"), _ints(stride, "a tensor's stride")
    _view_fits(storage, offset, size, stride)
    return _Tensor(torch.empty((0,), dtype=storage.dtype).set_(storage.untyped, offset, size, stride))


def _rebuild_parameter(data: object, requires_grad: object, backward_hooks: object) -> _Tensor:
    """``torch._utils._rebuild_parameter``: the parameter's data, as a plain tensor."""
    if not isinstance(data, _Tensor) or not isinstance(requires_grad, bool):
        raise CheckpointError("a parameter is built from something other than a tensor")
    _no_hooks(backward_hooks)
    return data


_NDARRAY = _Allowed("numpy.ndarray", lambda *args: _refuse_call("numpy.ndarray"))


def _refuse_call(name: str) -> None:
    raise CheckpointError(f"the pickle calls {name} directly, which numpy's own pickles never do")


#: numpy kinds a network pickle may hold: booleans, integers, floats, complex numbers (never objects, voids, text).
_NUMPY_KINDS = "biufc"


class _DtypeToken:
    """``numpy.dtype(spec, align, copy)`` recorded as data. numpy's BUILD applies a dtype's state with
    ``dtype.__setstate__``, which can turn a plain code into one with object fields: the state is only stored
    here, and ``resolve`` accepts nothing but the state numpy itself writes for ``spec``."""

    def __init__(self, spec: str) -> None:
        self.spec = spec
        self.state: object = None

    def __setstate__(self, state: object) -> None:
        self.state = state

    def resolve(self) -> np.dtype:
        try:
            dtype = np.dtype(self.spec)
        except TypeError as exc:
            raise CheckpointError(f"numpy dtype {self.spec!r} is not a type code") from exc
        if isinstance(self.state, tuple) and len(self.state) > 1 and self.state[1] in "<>" and dtype.itemsize > 1:
            dtype = dtype.newbyteorder(self.state[1])
        if dtype.kind not in _NUMPY_KINDS or dtype.fields is not None or dtype.subdtype is not None:
            raise CheckpointError(f"numpy dtype {self.spec!r} is not a plain numeric type")
        if self.state is not None and self.state != dtype.__reduce__()[2]:
            raise CheckpointError(f"numpy dtype {self.spec!r} comes with a state numpy never writes for it")
        return dtype


def _plain_dtype(dtype: object) -> np.dtype:
    if not isinstance(dtype, _DtypeToken):
        raise CheckpointError("a numpy value is built on something other than a numpy dtype")
    return dtype.resolve()


class _ArrayToken:
    """``numpy.core.multiarray._reconstruct(ndarray, shape, dtype_code)``, to be filled by numpy's BUILD:
    recorded as data, and built as a fresh, copied numeric array from the state's raw bytes when checked."""

    def __init__(self) -> None:
        self.state: object = None

    def __setstate__(self, state: object) -> None:
        self.state = state

    def resolve(self) -> np.ndarray:
        state = self.state
        if not (isinstance(state, tuple) and len(state) == 5):
            raise CheckpointError("a numpy array has no state numpy writes")
        _, shape, dtype, fortran, raw = state
        dtype = _plain_dtype(dtype)
        shape = _ints(shape, "a numpy shape")
        if not isinstance(fortran, bool) or not isinstance(raw, (bytes, bytearray)) \
                or len(raw) != int(np.prod(shape, dtype=np.int64)) * dtype.itemsize:
            raise CheckpointError("a numpy array's data does not match its shape and dtype")
        return np.frombuffer(bytes(raw), dtype=dtype).reshape(shape, order="F" if fortran else "C").copy()


def _np_reconstruct(subtype: object, shape: object, dtype_code: object) -> _ArrayToken:
    """``numpy.core.multiarray._reconstruct`` for plain ndarrays only (numpy's BUILD then fills it)."""
    if subtype is not _NDARRAY or not isinstance(dtype_code, bytes):
        raise CheckpointError("numpy's _reconstruct is asked for something other than a plain ndarray")
    return _ArrayToken()


def _np_frombuffer(buffer: object, dtype: object, shape: object, order: object) -> np.ndarray:
    """``numpy.core.numeric._frombuffer``: how numpy pickles an array with protocol 5 (the buffer in-band)."""
    dtype = _plain_dtype(dtype)
    shape = _ints(shape, "a numpy shape")
    if not isinstance(buffer, (bytes, bytearray)) or order not in ("C", "F") \
            or len(buffer) != int(np.prod(shape, dtype=np.int64)) * dtype.itemsize:
        raise CheckpointError("a numpy array is not a plain numeric array")
    return np.frombuffer(bytes(buffer), dtype=dtype).reshape(shape, order=order).copy()


def _np_dtype(spec: object, align: object = False, copy: object = False) -> _DtypeToken:
    """``numpy.dtype(spec, align, copy)`` as numpy pickles it: ``spec`` a type code such as ``'f8'``."""
    if not isinstance(spec, str) or not isinstance(align, bool) or not isinstance(copy, bool) or align:
        raise CheckpointError(f"numpy dtype {spec!r} is not a plain type code")
    return _DtypeToken(spec)


def _np_scalar(dtype: object, data: object = None) -> np.generic:
    """``numpy.core.multiarray.scalar``: a numpy scalar from its dtype and raw bytes."""
    dtype = _plain_dtype(dtype)
    if not isinstance(data, bytes) or len(data) != dtype.itemsize:
        raise CheckpointError("a numpy scalar is not a plain number")
    return np.frombuffer(data, dtype=dtype, count=1)[0].copy()


def _torch_device(kind: object, index: object = None) -> torch.device:
    if not isinstance(kind, str) or not (index is None or type(index) is int):
        raise CheckpointError(f"torch.device({kind!r}, {index!r}) is not a device")
    return torch.device(kind) if index is None else torch.device(kind, index)


def _plain_types() -> dict[tuple[str, str], object]:
    """Globals that are safe types to hand out as they are (calling them only builds containers)."""
    allowed: dict[tuple[str, str], object] = {
        ("dnnlib.util", "EasyDict"): dict,
        ("collections", "OrderedDict"): OrderedDict,
        ("builtins", "set"): set,
        ("builtins", "frozenset"): frozenset,
    }
    allowed.update((("torch", name), value) for name, value in vars(torch).items() if isinstance(value, torch.dtype))
    return allowed


def _callables() -> dict[tuple[str, str], _Allowed]:
    table: dict[tuple[str, str], Callable] = {
        ("torch_utils.persistence", "_reconstruct_persistent_obj"): _Persistent,
        ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
        ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
        ("torch.storage", "_load_from_bytes"): _load_storage,
        ("torch", "device"): _torch_device,
        ("numpy", "dtype"): _np_dtype,
    }
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):    # numpy 1.x / 2.x spell it differently
        table[(module, "_reconstruct")] = _np_reconstruct
        table[(module, "scalar")] = _np_scalar
        table[(module.replace("multiarray", "numeric"), "_frombuffer")] = _np_frombuffer
    allowed = {key: _Allowed(".".join(key), function) for key, function in table.items()}
    allowed[("numpy", "ndarray")] = _NDARRAY
    return allowed


ALLOWED_GLOBALS: dict[tuple[str, str], object] = {**_plain_types(), **_callables()}
_PY2_NAMES = {"__builtin__": "builtins", "copy_reg": "copyreg"}     # protocol-2 pickles' spelling


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only ``ALLOWED_GLOBALS``; every other global is refused by name before it is imported."""

    def __init__(self, file: io.BufferedReader, path: str) -> None:
        super().__init__(file)
        self.path = path

    def find_class(self, module: str, name: str) -> object:
        module = _PY2_NAMES.get(module, module)
        if (module, name) == TF_NETWORK:
            raise CheckpointError(
                "a TensorFlow network pickle (dnnlib.tflib.network.Network), which this reader does not read; "
                "convert it with NVlabs' stylegan2-ada-pytorch first: "
                f"python legacy.py --source={self.path} --dest=CONVERTED.pkl")
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise UnsafePickleError(f"asks for {module}.{name}, which a network pickle may not use; refused, "
                                    "nothing from the file was run") from None


def _load(path: str) -> object:
    """Step 1: the file through the restricted unpickler; a file it cannot read is a one-line CheckpointError."""
    try:
        with open(path, "rb") as f:
            return _RestrictedUnpickler(f, path).load()
    except CheckpointError:
        raise
    except Exception as exc:  # noqa: BLE001 - a damaged pickle makes the unpickler raise almost anything
        raise CheckpointError(f"not a readable network pickle ({type(exc).__name__}: {first_line(exc)})") \
            from None


# ---------------------------------------------------------------- step 2: checking and materializing

_SCALARS = (str, bytes, int, float, complex, bool, type(None), torch.dtype, torch.device)


class _Materializer:
    """Step 2: checks every value's type and turns tokens into tensors and PersistentObjects (each once)."""

    def __init__(self) -> None:
        self._done: dict[int, PersistentObject] = {}
        self._building: set[int] = set()
        self._containers: dict[int, object] = {}
        self._keep: list[object] = []

    def value(self, obj: object) -> object:
        """``obj`` as plain data: mappings as dicts, EasyDicts included; tensors; PersistentObjects."""
        if isinstance(obj, _SCALARS):
            return obj
        if isinstance(obj, _Tensor):
            return obj.tensor
        if isinstance(obj, _Persistent):
            return self.network(obj)
        if isinstance(obj, (_DtypeToken, _ArrayToken)):
            return obj.resolve()
        if isinstance(obj, (np.ndarray, np.generic)) and obj.dtype.kind in _NUMPY_KINDS \
                and obj.dtype.fields is None:
            return obj                                        # built above from a resolved dtype, copied
        if isinstance(obj, (dict, list, tuple, set, frozenset)):
            return self._container(obj)
        what = obj.name if isinstance(obj, _Allowed) else type(obj).__name__
        raise CheckpointError(f"holds a {what} object where a network pickle holds only data")

    def _container(self, obj: dict | list | tuple | set | frozenset) -> object:
        """A container as plain data, each one once: a pickle can share one container many times (a file of a
        few hundred bytes could otherwise expand exponentially) or make one contain itself (refused)."""
        key = id(obj)
        if key in self._containers:
            return self._containers[key]
        if key in self._building:
            raise CheckpointError("a container in the pickle contains itself")
        self._building.add(key)
        if isinstance(obj, dict):
            built: object = {self.value(k): self.value(v) for k, v in obj.items()}
        else:
            built = type(obj)(self.value(v) for v in obj)
        self._building.discard(key)
        self._containers[key] = built
        self._keep.append(obj)            # ids stay unique while the memo holds them
        return built

    def network(self, token: _Persistent) -> PersistentObject:
        key = id(token)
        if key in self._done:
            return self._done[key]
        if key in self._building:
            raise CheckpointError("a persistent object contains itself")
        self._building.add(key)
        self._done[key] = built = self._build(token.meta)
        self._building.discard(key)
        return built

    def _build(self, meta: object) -> PersistentObject:
        if not isinstance(meta, dict):
            raise CheckpointError(f"a persistent object's meta is a {type(meta).__name__}, not a dict")
        class_name, source, state = meta.get("class_name"), meta.get("module_src"), meta.get("state")
        if not isinstance(class_name, str) or not isinstance(source, str) or not isinstance(state, dict):
            raise CheckpointError("a persistent object's meta lacks class_name, module_src or state")
        if meta.get("version") != PERSISTENCE_VERSION:
            raise CheckpointError(f"{class_name} was saved by torch_utils.persistence version "
                                  f"{meta.get('version')!r}; this reader knows version {PERSISTENCE_VERSION} only")
        if meta.get("type") != "class":
            raise CheckpointError(f"{class_name} is a persistent {meta.get('type')!r}, not a class instance")
        args, kwargs = self.value(state.get("_init_args", ())), self.value(state.get("_init_kwargs", {}))
        if not isinstance(args, (tuple, list)) or not isinstance(kwargs, dict):
            raise CheckpointError(f"{class_name}'s recorded constructor arguments are not a list and a dict")
        return PersistentObject(
            class_name=class_name, module_source=source, init_args=list(args), init_kwargs=kwargs,
            attributes={k: self.value(v) for k, v in state.items()
                        if isinstance(k, str) and not k.startswith("_") and k != "training"},
            parameters=self._tensors(state, "_parameters", class_name),
            buffers=self._tensors(state, "_buffers", class_name),
            non_persistent=self._names(state.get("_non_persistent_buffers_set", set()), class_name),
            children=self._children(state, class_name))

    def _field(self, state: dict, name: str, class_name: str) -> dict:
        entries = state.get(name)
        if not isinstance(entries, dict) or not all(isinstance(k, str) for k in entries):
            raise CheckpointError(f"{class_name}'s state has no {name} dict; not a torch module's state")
        return entries

    def _tensors(self, state: dict, name: str, class_name: str) -> dict[str, torch.Tensor]:
        out = {}
        for key, value in self._field(state, name, class_name).items():
            if value is None:
                continue
            if not isinstance(value, _Tensor):
                raise CheckpointError(f"{class_name}.{name}[{key!r}] is a {type(value).__name__}, not a tensor")
            out[key] = value.tensor
        return out

    def _children(self, state: dict, class_name: str) -> dict[str, PersistentObject]:
        out = {}
        for key, value in self._field(state, "_modules", class_name).items():
            if value is None:
                continue
            if not isinstance(value, _Persistent):
                raise CheckpointError(f"{class_name}'s submodule {key!r} is a {type(value).__name__}, "
                                      "not a persistent network object")
            out[key] = self.network(value)
        return out

    @staticmethod
    def _names(names: object, class_name: str) -> set[str]:
        if not isinstance(names, (set, frozenset, list, tuple)) or not all(isinstance(n, str) for n in names):
            raise CheckpointError(f"{class_name}'s _non_persistent_buffers_set is not a set of names")
        return set(names)
