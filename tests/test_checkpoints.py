"""Safe checkpoint loading: weights only unless trusted, state-dict unwrapping, one-line refusals."""
from __future__ import annotations

import collections

import pytest
import torch

from engine.models.checkpoints import (CheckpointError, latent_weights, load_checkpoint, read_latent_weights,
                                       state_dict_of)
from tests.conftest import run_cli


class Payload:
    """A custom class: unpickling it needs arbitrary code, which weights_only refuses."""

    def __init__(self):
        self.weight = torch.ones(2, 2)


def _modulations(d=32):
    return {"conv1.conv.modulation.weight": torch.randn(64, d), "convs.0.conv.modulation.weight": torch.randn(32, d)}


def test_weights_only_refuses_custom_objects_unless_trusted(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"g_ema": _modulations(), "extra": Payload()}, path)
    with pytest.raises(CheckpointError, match="arbitrary unpickling.*--trust-checkpoint"):
        load_checkpoint(path)
    trusted = load_checkpoint(path, trust=True)
    assert isinstance(trusted["extra"], Payload)
    assert len(read_latent_weights(path, "stylegan2", trust=True)) == 2


def test_unwrapping_and_prefixes():
    state = _modulations()
    assert set(state_dict_of({"g_ema": state, "d": {"x": torch.zeros(1)}})) == set(state)
    assert set(state_dict_of({"state_dict": {f"module.{k}": v for k, v in state.items()}})) == set(state)
    assert set(state_dict_of(collections.OrderedDict(state))) == set(state)
    with pytest.raises(CheckpointError, match="not a state dict"):
        state_dict_of([torch.zeros(2)])
    with pytest.raises(CheckpointError, match="not a state dict"):
        state_dict_of(torch.zeros(3))
    with pytest.raises(CheckpointError, match="no tensors"):
        state_dict_of({"epoch": 3})


def test_missing_keys_and_bad_shapes_are_named():
    with pytest.raises(CheckpointError, match="style-modulation"):
        latent_weights({"foo.weight": torch.zeros(2, 2)}, "stylegan2")
    with pytest.raises(CheckpointError, match="gen_z"):
        latent_weights({"foo.weight": torch.zeros(2, 2)}, "biggan")
    with pytest.raises(CheckpointError, match="code size"):
        latent_weights({"conv1.conv.modulation.weight": torch.zeros(4, 8),
                        "convs.0.conv.modulation.weight": torch.zeros(4, 6)}, "stylegan2")
    with pytest.raises(ValueError, match="--family"):
        latent_weights({}, "vqgan")


def test_garbage_and_missing_files(tmp_path):
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="not a readable torch checkpoint"):
        load_checkpoint(tmp_path / "junk.pt")
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "absent.pt")


@pytest.mark.parametrize("content, message", [
    ("evil", "arbitrary unpickling"),
    ("list", "not a state dict"),
    ("nokeys", "style-modulation"),
    ("junk", "not a readable torch checkpoint"),
])
def test_cli_refusals_are_one_line_and_write_nothing(tmp_path, content, message):
    path = tmp_path / "g.pt"
    if content == "evil":
        torch.save({"extra": Payload(), **_modulations()}, path)
    elif content == "list":
        torch.save([torch.zeros(2, 2)], path)
    elif content == "nokeys":
        torch.save({"mapping.fc0.weight": torch.zeros(4, 4)}, path)
    else:
        path.write_bytes(b"\x00garbage")
    store = tmp_path / "s.zarr"
    proc = run_cli("sefa", "--checkpoint", str(path), "--family", "stylegan2", "--store", str(store))
    lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
    assert proc.returncode == 1 and len(lines) == 1 and lines[0].startswith("Error: "), proc.stderr
    assert message in lines[0]
    assert not store.exists()
