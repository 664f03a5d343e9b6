"""The safe reader of NVlabs network pickles: round trips against torch's own state_dict, and refusals.

Pickles are written by ``tests/nvlabs_pickles.py`` in the persistence layout, or by hand for the malicious ones.
Every malicious payload would create a marker file if it ran; the tests check that it is live (plain ``pickle``
runs it) and that the reader leaves no marker behind.
"""
from __future__ import annotations

import io
import os
import pickle
import sys
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.models.checkpoints import CheckpointError
from engine.models.nvlabs_pickle import (PersistentObject, UnsafePickleError, read_generator,
                                         read_network_pickle)
from tests import nvlabs_pickles
from tests.nvlabs_pickles import STYLEGAN2_SOURCE, STYLEGAN3_SOURCE, Network, write_network_pickle

INIT_KWARGS = {"z_dim": 8, "c_dim": 0, "w_dim": 8, "img_resolution": 8, "img_channels": 3,
               "mapping_kwargs": {"num_layers": 2, "lr_multiplier": 0.01},
               "synthesis_kwargs": {"channel_base": 64, "channel_max": 16, "num_fp16_res": 0, "conv_clamp": 256,
                                    "block_kwargs": {"resample_filter": [1, 3, 3, 1]}}}


def reference_generator(seed: int = 0) -> torch.nn.Module:
    """A tiny torch module tree shaped like NVlabs' StyleGAN2 generator (parameters and buffers at several depths),
    random values: the reference whose ``state_dict()`` the reader must reproduce."""
    g = torch.Generator().manual_seed(seed)

    def module(parameters: dict, buffers: dict, **children: torch.nn.Module) -> torch.nn.Module:
        m = torch.nn.Module()
        for name, shape in parameters.items():
            m.register_parameter(name, torch.nn.Parameter(torch.randn(shape, generator=g), requires_grad=False))
        for name, shape in buffers.items():
            m.register_buffer(name, torch.randn(shape, generator=g))
        for name, child in children.items():
            m.add_module(name, child)
        return m

    fc = lambda i, o: module({"weight": (o, i), "bias": (o,)}, {})  # noqa: E731
    layer = lambda: module({"weight": (16, 16, 3, 3), "noise_strength": ()},  # noqa: E731
                           {"resample_filter": (4, 4), "noise_const": (4, 4)}, affine=fc(8, 16))
    mapping = module({}, {"w_avg": (8,)}, fc0=fc(8, 8), fc1=fc(8, 8))
    b4 = module({"const": (16, 4, 4)}, {"resample_filter": (4, 4)}, conv1=layer(),
                torgb=module({"weight": (3, 16, 1, 1), "bias": (3,)}, {}, affine=fc(8, 16)))
    return module({}, {}, synthesis=module({}, {}, b4=b4), mapping=mapping)


def _children(module: torch.nn.Module) -> dict[str, torch.nn.Module]:
    return dict(module.named_children())


@pytest.fixture
def generator_pickle(tmp_path: Path) -> tuple[Path, torch.nn.Module]:
    ref = reference_generator()
    attributes = {"": {"z_dim": 8, "w_dim": 8, "num_ws": 2, "img_resolution": 8},
                  "synthesis.b4": {"resolution": 4, "in_size": np.array([36, 36]), "cutoff": np.float64(2.5),
                                   "use_fp16": np.False_, "padding": [9, 8, 9, 8], "architecture": "skip"}}
    network = Network("Generator", STYLEGAN2_SOURCE, INIT_KWARGS, ref.state_dict(), attributes=attributes,
                      class_names={"mapping": "MappingNetwork", "synthesis": "SynthesisNetwork",
                                   "synthesis.b4": "SynthesisBlock"})
    path = tmp_path / "network-snapshot-000000.pkl"
    write_network_pickle(path, {"G": network, "D": ("Discriminator", STYLEGAN2_SOURCE, {"c_dim": 0}, {}),
                                "G_ema": network, "augment_pipe": None},
                         extra={"training_set_kwargs": {"class_name": "training.dataset.ImageFolderDataset",
                                                        "resolution": 8, "use_labels": False}})
    return path, ref


# ------------------------------------------------------------------------------------------------ round trips

def test_state_dict_matches_torch_key_for_key_value_for_value(generator_pickle):
    path, ref = generator_pickle
    g = read_generator(path)
    expected = ref.state_dict()
    got = g.state_dict()
    assert list(got) == list(expected)                   # torch's order: own tensors first, then each child
    for name, tensor in expected.items():
        assert torch.equal(got[name], tensor) and got[name].dtype == tensor.dtype, name
        assert not got[name].requires_grad


def test_parameters_buffers_and_children_split_as_in_the_module(generator_pickle):
    path, ref = generator_pickle
    g = read_generator(path)

    def check(obj: PersistentObject, module: torch.nn.Module, where: str) -> None:
        assert list(obj.parameters) == [n for n, p in module._parameters.items() if p is not None], where
        assert list(obj.buffers) == list(module._buffers), where
        assert list(obj.children) == list(_children(module)), where
        for name, child in _children(module).items():
            check(obj.children[name], child, f"{where}.{name}")

    check(g, ref, "G_ema")
    assert g.children["mapping"].class_name == "MappingNetwork"
    assert g.children["synthesis"].children["b4"].children["conv1"].class_name == "Module"


def test_init_kwargs_are_plain_dicts_and_attributes_round_trip(generator_pickle):
    path, _ = generator_pickle
    data = read_network_pickle(path)
    g = data["G_ema"]
    assert g.init_kwargs == INIT_KWARGS and g.init_args == []
    nested = [g.init_kwargs["mapping_kwargs"], g.init_kwargs["synthesis_kwargs"],
              g.init_kwargs["synthesis_kwargs"]["block_kwargs"]]
    assert all(type(d) is dict for d in [g.init_kwargs, *nested])          # the file holds EasyDicts
    assert g.attributes == {"z_dim": 8, "w_dim": 8, "num_ws": 2, "img_resolution": 8}
    b4 = g.children["synthesis"].children["b4"].attributes
    assert np.array_equal(b4["in_size"], [36, 36]) and b4["in_size"].dtype == np.array([36]).dtype
    assert type(b4["cutoff"]) is np.float64 and b4["cutoff"] == 2.5 and b4["use_fp16"] is np.False_
    assert b4["padding"] == [9, 8, 9, 8] and b4["architecture"] == "skip"
    assert data["augment_pipe"] is None and data["D"].class_name == "Discriminator"
    assert data["training_set_kwargs"]["resolution"] == 8 and type(data["training_set_kwargs"]) is dict


@pytest.mark.parametrize("protocol", [3, 4, 5])
def test_every_protocol_nvlabs_or_newer_pythons_write(tmp_path, protocol):
    ref = reference_generator(seed=protocol)
    path = tmp_path / "g.pkl"
    attributes = {"": {"in_size": np.arange(6, dtype=np.int32).reshape(2, 3), "gain": np.float32(0.5)}}
    write_network_pickle(path, {"G_ema": Network("Generator", STYLEGAN3_SOURCE, {"z_dim": 8}, ref.state_dict(),
                                                 attributes=attributes)}, protocol=protocol)
    g = read_generator(path)
    assert all(torch.equal(g.state_dict()[k], v) for k, v in ref.state_dict().items())
    assert np.array_equal(g.attributes["in_size"], np.arange(6).reshape(2, 3))
    assert g.attributes["in_size"].dtype == np.int32 and g.attributes["gain"] == np.float32(0.5)


def test_non_persistent_buffers_are_kept_but_left_out_of_state_dict(tmp_path):
    ref = reference_generator()
    ref.mapping.register_buffer("scratch", torch.ones(3), persistent=False)
    path = tmp_path / "g.pkl"
    write_network_pickle(path, {"G_ema": Network("Generator", STYLEGAN2_SOURCE, {}, ref.state_dict(),
                                                 non_persistent={"mapping.scratch": ref.mapping.scratch})})
    g = read_generator(path)
    assert "mapping.scratch" not in g.state_dict() and list(g.state_dict()) == list(ref.state_dict())
    mapping = g.children["mapping"]
    assert mapping.non_persistent == {"scratch"} and torch.equal(mapping.buffers["scratch"], torch.ones(3))


def test_module_kind_is_read_from_the_source_text():
    kinds = [PersistentObject("Generator", source).module_kind()
             for source in (STYLEGAN2_SOURCE, STYLEGAN3_SOURCE, "class AugmentPipe(torch.nn.Module): ...\n", "")]
    assert kinds == ["stylegan2", "stylegan3", None, None]


def test_reader_imports_nothing_and_the_writer_restores_sys_modules(generator_pickle):
    path, _ = generator_pickle
    read_network_pickle(path)
    assert not {"torch_utils", "torch_utils.persistence", "dnnlib", "dnnlib.util"} & set(sys.modules)


# ------------------------------------------------------------------------------------------------ refusals

class _Reduce:
    """Pickles as ``function(*args)``: how a malicious pickle runs code when plainly unpickled."""

    def __init__(self, function, *args) -> None:
        self.function, self.args = function, args

    def __reduce__(self):
        return self.function, self.args


def _touch(marker: Path) -> _Reduce:
    return _Reduce(os.system, f"touch {marker}")


def _refusal(path: Path, exc_type: type = CheckpointError) -> str:
    with pytest.raises(exc_type) as info:
        read_generator(path)
    message = str(info.value)
    assert "\n" not in message and message.startswith(str(path))
    return message


def _unsafe(path: Path, global_name: str) -> str:
    return (f"{path}: asks for {global_name}, which a network pickle may not use; refused, nothing from the file "
            "was run")


def test_the_payload_is_live_when_plainly_unpickled(tmp_path):
    marker = tmp_path / "ran"
    pickle.loads(pickle.dumps(_touch(marker)))           # what pickle.load of the files below would do
    assert marker.exists()


@pytest.mark.parametrize("where", ["init_kwargs", "module state", "top level"])
def test_os_system_anywhere_is_refused_and_never_runs(tmp_path, where):
    marker, path = tmp_path / "ran", tmp_path / "evil.pkl"
    payload = _touch(marker)
    kwargs = {"z_dim": 8, "mapping_kwargs": {"evil": payload}} if where == "init_kwargs" else {}
    attributes = {"mapping.fc0": {"evil": payload}} if where == "module state" else {}
    extra = {"evil": payload} if where == "top level" else {}
    ref = reference_generator()
    write_network_pickle(path, {"G_ema": Network("Generator", STYLEGAN2_SOURCE, kwargs, ref.state_dict(),
                                                 attributes=attributes)}, extra=extra)
    assert _refusal(path, UnsafePickleError) == _unsafe(path, f"{os.system.__module__}.system")
    assert not marker.exists()


def test_builtins_exec_is_refused_and_never_runs(tmp_path):
    marker, path = tmp_path / "ran", tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"G_ema": _Reduce(exec, f"open({str(marker)!r}, 'w').close()")}))
    assert _refusal(path, UnsafePickleError) == _unsafe(path, "builtins.exec")
    assert not marker.exists()


def test_an_unknown_network_class_is_refused(tmp_path):
    path = tmp_path / "evil.pkl"
    # protocol 2 by hand: {'G_ema': training.networks.Generator.__new__(Generator)}
    path.write_bytes(b"\x80\x02}q\x00X\x05\x00\x00\x00G_emaq\x01ctraining.networks\nGenerator\nq\x02)\x81q\x03s.")
    assert _refusal(path, UnsafePickleError) == _unsafe(path, "training.networks.Generator")


def test_copyreg_reconstructor_of_a_plain_object_is_refused(tmp_path):
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"G_ema": Network("x", "", {}, {})}, protocol=1))   # old-protocol class instance
    assert _refusal(path, UnsafePickleError) == _unsafe(path, "copyreg._reconstructor")


def test_a_payload_inside_a_tensors_storage_bytes_is_refused(tmp_path):
    marker, path = tmp_path / "ran", tmp_path / "evil.pkl"
    inner = io.BytesIO()
    torch.save(_touch(marker), inner, _use_new_zipfile_serialization=False)
    from torch.storage import _load_from_bytes
    path.write_bytes(pickle.dumps({"G_ema": _Reduce(_load_from_bytes, inner.getvalue())}))
    message = _refusal(path, UnsafePickleError)
    assert message == (f"{path}: a tensor's storage bytes ask for {os.system.__module__}.system, which is not "
                       "allowed; refused, nothing from the file was run")
    assert not marker.exists()


def test_a_tensor_reaching_past_its_storage_is_refused(tmp_path):
    path = tmp_path / "evil.pkl"
    # a 4-element float storage, as torch pickles it, under a view of 100 elements
    typed = torch.TypedStorage(wrap_storage=torch.zeros(4).untyped_storage(), dtype=torch.float32, _internal=True)
    path.write_bytes(pickle.dumps({"G_ema": _Reduce(torch._utils._rebuild_tensor_v2, typed, 0, (100,), (1,), False,
                                                    OrderedDict())}))
    assert _refusal(path) == (f"{path}: a tensor of size (100,) at offset 0 reaches past its storage of 4 "
                              "elements")


def test_opcodes_cannot_alter_a_rebuilt_network(tmp_path):
    path = tmp_path / "evil.pkl"

    class Tampered(nvlabs_pickles._Persistent):             # BUILD with slot state after the reconstruct call
        def __reduce__(self):
            return self.reconstruct, (self.meta,), (None, {"parameters": {}})

    with nvlabs_pickles._nvlabs_modules() as (reconstruct, _):
        meta = dict(type="class", version=6, module_src="", class_name="Generator", state={})
        path.write_bytes(pickle.dumps({"G_ema": Tampered(reconstruct, meta)}))
    assert _refusal(path) == f"{path}: the pickle tries to set 'parameters' on _Persistent; not a network pickle"


def test_a_tensorflow_pickle_is_named_with_the_conversion_command(tmp_path):
    path = tmp_path / "stylegan2-ffhq-config-f.pkl"
    # protocol 2 by hand, as TensorFlow-era files are: Network.__new__(Network) with its state set by BUILD
    path.write_bytes(b"\x80\x02cdnnlib.tflib.network\nNetwork\nq\x00)\x81q\x01}q\x02X\x04\x00\x00\x00nameq\x03"
                     b"X\x01\x00\x00\x00Gq\x04sb.")
    assert _refusal(path) == (
        f"{path}: a TensorFlow network pickle (dnnlib.tflib.network.Network), which this reader does not read; "
        f"convert it with NVlabs' stylegan2-ada-pytorch first: python legacy.py --source={path} "
        "--dest=CONVERTED.pkl")


def test_an_unknown_persistence_version_is_named(tmp_path, monkeypatch):
    path = tmp_path / "g.pkl"
    monkeypatch.setattr(nvlabs_pickles, "PERSISTENCE_VERSION", 7)
    write_network_pickle(path, {"G_ema": ("Generator", STYLEGAN2_SOURCE, {}, reference_generator().state_dict())})
    assert _refusal(path) == (f"{path}: Generator was saved by torch_utils.persistence version 7; this reader "
                              "knows version 6 only")


def test_a_truncated_file_is_one_line_naming_it(generator_pickle):
    path, _ = generator_pickle
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    assert _refusal(path).startswith(f"{path}: not a readable network pickle (UnpicklingError: ")


@pytest.mark.parametrize("content", [b"", b"not a pickle at all\n", b"PK\x03\x04" + bytes(60)])
def test_a_file_that_is_not_a_pickle_is_one_line_naming_it(tmp_path, content):
    path = tmp_path / "g.pkl"
    path.write_bytes(content)
    assert _refusal(path).startswith(f"{path}: not a readable network pickle (")


def test_a_pickle_that_is_not_a_dict_of_networks(tmp_path):
    path = tmp_path / "g.pkl"
    path.write_bytes(pickle.dumps([1, 2, 3]))
    assert _refusal(path) == (f"{path}: not an NVlabs network pickle (it holds a list, not a dict of networks "
                              "such as G_ema)")


def test_a_missing_or_empty_generator_entry(generator_pickle, tmp_path):
    path, _ = generator_pickle
    with pytest.raises(CheckpointError, match=r"has no 'G_emma' network \(its entries: training_set_kwargs, G, D, "
                                              r"G_ema, augment_pipe\)$"):
        read_generator(path, key="G_emma")
    with pytest.raises(CheckpointError, match=r"its 'augment_pipe' entry is a NoneType, not a network$"):
        read_generator(path, key="augment_pipe")
    with pytest.raises(FileNotFoundError, match="no network pickle"):
        read_generator(tmp_path / "absent.pkl")


class _Dtype:
    """Pickles as numpy.dtype(spec) followed by a BUILD with ``state`` (numpy's own form, or a forged one)."""

    def __init__(self, spec, state):
        self.spec, self.state = spec, state

    def __reduce__(self):
        return np.dtype, (self.spec, False, True), self.state


class _FromBuffer:
    def __init__(self, dtype):
        self.dtype = dtype

    def __reduce__(self):
        from numpy._core.numeric import _frombuffer
        return _frombuffer, (b"\x41" * 8, self.dtype, (1,), "C")


@pytest.mark.parametrize("spec, state", [
    ("V8", (3, "|", None, ("a",), {"a": (np.dtype("O"), 0)}, 8, 1, 0)),     # an object field behind a void
    ("f8", (3, "<", None, ("a",), {"a": (np.dtype("O"), 0)}, 8, 1, 0)),     # a float code, forged state
])
def test_a_numpy_dtype_with_a_forged_state_is_refused_before_any_array_uses_it(tmp_path, spec, state):
    """Without the check, such an array's elements are read as pointers taken from the file (a segfault)."""
    path = tmp_path / "dtype.pkl"
    path.write_bytes(pickle.dumps({"training_set_kwargs": {"x": _FromBuffer(_Dtype(spec, state))}}, protocol=4))
    with pytest.raises(CheckpointError, match="numpy dtype .* (not a plain numeric type|a state numpy never writes)"):
        read_network_pickle(path)


def test_numpy_values_as_numpy_pickles_them_come_back_as_fresh_numeric_copies(tmp_path):
    values = {"a": np.arange(6, dtype=">i4").reshape(2, 3), "b": np.float32(2.5), "c": np.asfortranarray(np.eye(3))}
    for protocol in (3, 4, 5):
        path = tmp_path / f"np{protocol}.pkl"
        path.write_bytes(pickle.dumps({"training_set_kwargs": values}, protocol=protocol))
        back = read_network_pickle(path)["training_set_kwargs"]
        for key, value in values.items():
            np.testing.assert_array_equal(back[key], value)
            assert back[key].dtype == value.dtype


def test_shared_containers_are_read_once_and_a_container_holding_itself_is_refused(tmp_path):
    import time

    nested = [0]
    for _ in range(40):                    # 2**40 paths through a file of a few hundred bytes
        nested = [nested, nested]
    path = tmp_path / "dag.pkl"
    path.write_bytes(pickle.dumps({"a": nested}, protocol=4))
    start = time.perf_counter()
    back = read_network_pickle(path)["a"]
    assert time.perf_counter() - start < 5 and back[0] is back[1]
    loop: list = []
    loop.append(loop)
    path.write_bytes(pickle.dumps({"a": loop}, protocol=4))
    with pytest.raises(CheckpointError, match="contains itself"):
        read_network_pickle(path)
