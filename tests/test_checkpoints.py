"""Safe checkpoint loading: weights only unless trusted, state-dict unwrapping, one-line refusals."""
from __future__ import annotations

import collections
import io
import random
import warnings
import zipfile

import pytest
import torch

from engine.models.checkpoints import (CheckpointError, latent_weights, load_checkpoint, read_latent_weights,
                                       state_dict_of, unwrap)
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


def test_genforce_generator_smooth_comes_before_its_raw_generator():
    smooth, raw = _modulations(), _modulations()
    state, key = unwrap({"generator": raw, "discriminator": {"d": torch.zeros(1)}, "generator_smooth": smooth})
    assert key == "generator_smooth" and all(state[k] is smooth[k] for k in smooth)
    assert unwrap({"generator_smooth": smooth})[1] == "generator_smooth"
    assert unwrap({"generator": raw})[1] == "generator"
    assert unwrap({"g_ema": smooth, "g": raw})[1] == "g_ema"
    assert unwrap(smooth)[1] is None
    with pytest.raises(CheckpointError, match="'generator_smooth' entry holds no tensors"):
        unwrap({"generator_smooth": {"epoch": 1}})


def test_stylegan3_keys_are_not_taken_for_stylegan2():
    """The docstring promises StyleGAN2 layouts only: StyleGAN3's affine names must not match silently."""
    sg3 = {"synthesis.input.affine.weight": torch.zeros(4, 8), "synthesis.L0_36_512.affine.weight": torch.zeros(4, 8)}
    with pytest.raises(CheckpointError, match="style-modulation"):
        latent_weights(sg3, "stylegan2")


def test_missing_keys_and_bad_shapes_are_named():
    with pytest.raises(CheckpointError, match="style-modulation"):
        latent_weights({"foo.weight": torch.zeros(2, 2)}, "stylegan2")
    with pytest.raises(CheckpointError, match="gen_z"):
        latent_weights({"foo.weight": torch.zeros(2, 2)}, "biggan")
    with pytest.raises(CheckpointError, match="code size"):
        latent_weights({"conv1.conv.modulation.weight": torch.zeros(4, 8),
                        "convs.0.conv.modulation.weight": torch.zeros(4, 6)}, "stylegan2")
    with pytest.raises(ValueError, match="family must be one of"):
        latent_weights({}, "vqgan")


def test_garbage_and_missing_files(tmp_path):
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="junk.pt is not a readable checkpoint"):
        load_checkpoint(tmp_path / "junk.pt")
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "absent.pt")


@pytest.mark.parametrize("content, message", [
    ("evil", "arbitrary unpickling"),
    ("list", "not a state dict"),
    ("nokeys", "style-modulation"),
    ("junk", "not a readable checkpoint"),
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


def _valid_zip(tmp_path):
    path = tmp_path / "valid.pt"
    torch.save({"g_ema": _modulations()}, path)
    return path.read_bytes()


def _damaged_files(tmp_path):
    """Seeded corrupt files: random bytes of many sizes, a valid torch zip truncated at many offsets, and that
    zip with its data.pkl replaced by random bytes or with a few of its bytes changed."""
    rng = random.Random(17)
    files = []
    for i in range(200):
        size = rng.choice([0, 1, 2, 3, 8, 64, 512, 4096, 65536])
        files.append(("random", tmp_path / f"random{i}.pt", rng.randbytes(size)))
    valid = _valid_zip(tmp_path)
    for cut in range(1, len(valid), max(1, len(valid) // 40)):
        files.append(("truncated", tmp_path / f"cut{cut}.pt", valid[:cut]))
    for i in range(60):
        buffer = io.BytesIO()
        with zipfile.ZipFile(io.BytesIO(valid)) as source, zipfile.ZipFile(buffer, "w") as target:
            for info in source.infolist():
                data = source.read(info)
                if info.filename.endswith("data.pkl"):
                    if i % 2:
                        data = rng.randbytes(rng.choice([1, len(data), 4 * len(data)]))
                    else:
                        changed = bytearray(data)
                        for _ in range(3):
                            changed[rng.randrange(len(changed))] = rng.randrange(256)
                        data = bytes(changed)
                target.writestr(info, data)
        files.append(("garbage data.pkl" if i % 2 else "changed data.pkl", tmp_path / f"pkl{i}.pt",
                      buffer.getvalue()))
    for _, path, data in files:
        path.write_bytes(data)
    return files


def test_every_damaged_file_is_one_checkpoint_error_naming_it(tmp_path):
    """Before the fix ~1 random file in 20 and more damaged zips escaped as IndexError/KeyError/... tracebacks."""
    escaped, kinds = [], collections.Counter()
    for kind, path, _ in _damaged_files(tmp_path):
        try:
            read_latent_weights(path, "stylegan2")
        except CheckpointError as exc:
            text = str(exc)
            assert "\n" not in text and str(path) in text, text
            if kind != "changed data.pkl":         # a few changed bytes may still unpickle into a (wrong) dict
                assert "not a readable checkpoint" in text, text
            kinds[kind] += 1
        except Exception as exc:  # noqa: BLE001 - the test is that nothing else escapes
            escaped.append(f"{kind} {path.name}: {type(exc).__name__}: {exc}")
        else:
            kinds[kind + " (read)"] += 1
    assert not escaped, escaped[:5]
    assert kinds["random"] == 200 and kinds["truncated"] >= 40 and kinds["garbage data.pkl"] == 30, kinds


def test_cli_on_a_file_torch_load_chokes_on_is_one_line(tmp_path):
    """Pick damaged files on which torch.load itself raises something other than an unpickling error."""
    chokes = []
    for kind, path, _ in _damaged_files(tmp_path):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.load(path, map_location="cpu", weights_only=True)
        except (IndexError, KeyError, UnicodeDecodeError, TypeError) as exc:
            chokes.append((kind, path, type(exc).__name__))
        except Exception:  # noqa: BLE001
            pass
    assert {name for _, _, name in chokes} >= {"IndexError", "KeyError"}, chokes
    kind, path, _ = next(c for c in chokes if c[2] == "IndexError")
    store = tmp_path / "s.zarr"
    proc = run_cli("sefa", "--checkpoint", str(path), "--family", "stylegan2", "--store", str(store))
    lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
    assert proc.returncode == 1 and len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"Error: {path} is not a readable checkpoint (IndexError")
    assert not store.exists()
