"""PGGAN and BigGAN files end to end: loaded through their SPECs, sampled (z only; BigGAN with labels and its
truncated z), factorized as ``sefa --checkpoint`` does, edited per class. Parity with the original code is
checked outside the project (see the closing notes of issue 13)."""
from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import engine
from engine.cli import cli
from engine.methods.sefa import sefa
from engine.models import biggan, pggan
from engine.models.registry import SpecError
from engine.sampler import draw_codes
from tests.biggan_checkpoints import biggan_config, biggan_state, write_biggan_folder
from tests.pggan_checkpoints import save_pggan_checkpoint


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("gan-files")
    pg_state = save_pggan_checkpoint(folder / "pggan.pth", smooth=True, resolution=16, seed=3)
    big = write_biggan_folder(folder / "biggan", seed=4)
    return {"dir": folder, "pggan": pg_state, "biggan": big, "biggan_state": biggan_state(biggan_config(), 4)}


def test_pggan_samples_z_only_and_equals_its_converter(files, tmp_path):
    path = str(files["dir"] / "pggan.pth")
    G = engine.load_generator(f"pggan:{path}")
    reference = pggan.from_genforce(files["pggan"])
    z = torch.randn(3, G.z_dim)
    with torch.no_grad():
        torch.testing.assert_close(G.synthesis(G.mapping(z)), reference(z).clamp(-1, 1))
    store = engine.sample(str(tmp_path / "p.zarr"), f"pggan:{path}", ["imagestats"], n=16, chunk=8, progress=False)
    assert store.spaces == ["z"] and store.num_classes is None
    assert store.meta["generator_file"]["sha256"] == hashlib.sha256(open(path, "rb").read()).hexdigest()
    with pytest.raises(ValueError, match="no mapping network"):
        engine.sample(str(tmp_path / "w.zarr"), f"pggan:{path}", [], n=8, spaces=["w"], progress=False)


def test_biggan_samples_truncated_codes_with_labels_and_equals_its_converter(files, tmp_path):
    spec = f"biggan:{files['biggan']},classes=1;3,truncation=0.5"
    store = engine.sample(str(tmp_path / "b.zarr"), spec, ["imagestats"], n=24, chunk=12, progress=False)
    z = store.array("latents/z")[:]
    labels = store.array("labels")[:]
    assert np.abs(z).max() <= 1.0 + 1e-6 and set(np.unique(labels)) <= {1, 3}
    np.testing.assert_array_equal(z[:12], draw_codes(0, 0, 12, 8, distribution=store.meta["distribution"]))
    record = store.meta["generator_file"]
    assert record["truncation"] == 0.5 and record["classes"] == [1, 3] and len(record["config_sha256"]) == 64
    reference = biggan.from_huggingface(biggan_config(), files["biggan_state"])
    onehot = torch.nn.functional.one_hot(torch.from_numpy(labels[:4].astype(np.int64)), 5).float()
    with torch.no_grad():
        expected = reference(torch.from_numpy(z[:4]), onehot, 0.5).clamp(-1, 1)
    G = engine.load_generator(spec)
    lt = torch.from_numpy(labels[:4].astype(np.int64))
    with torch.no_grad():
        torch.testing.assert_close(G.synthesis(G.mapping(torch.from_numpy(z[:4]), lt), lt), expected)


def test_biggan_reads_the_bin_with_its_config_beside_it(files):
    G = engine.load_generator(f"biggan:{files['biggan'] / 'pytorch_model.bin'},class=2")
    assert G.label_choice == (2,) and G.truncation == 1.0


@pytest.mark.parametrize("name, family", [("pggan.pth", "pggan"), ("biggan", "biggan")])
def test_sefa_of_the_generator_equals_sefa_of_its_checkpoint(files, name, family):
    path = files["dir"] / name
    checkpoint = path / "pytorch_model.bin" if family == "biggan" else path
    by_generator = sefa(generator=f"{family}:{path}", k=4)
    by_checkpoint = sefa(checkpoint=str(checkpoint), family=family, k=4)
    for key, result in by_generator.items():
        np.testing.assert_allclose(result["directions"], by_checkpoint[key]["directions"], atol=1e-6)
    if family == "biggan":
        assert next(iter(by_generator.values()))["directions"].shape[1] == 8      # the latent half only


@pytest.mark.parametrize("spec, message", [
    ("biggan:{dir}/biggan,truncation=1.5", "truncation must be in (0, 1]"),
    ("biggan:{dir}/biggan,class=9", "classes must be integers from 0 to 4"),
    ("biggan:{dir}/nothing", "no BigGAN weights file"),
    ("pggan:{dir}/pggan.pth,truncation=0.5", "unknown option(s) truncation for pggan"),
])
def test_bad_specs_are_one_line_errors(files, tmp_path, spec, message):
    result = CliRunner().invoke(cli, ["sample", str(tmp_path / "x.zarr"), "-g", spec.format(dir=files["dir"]),
                                      "-n", "4"])
    assert result.exit_code == 1 and message in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1
    with pytest.raises(SpecError):
        engine.load_generator(spec.format(dir=files["dir"]))


def test_biggan_per_class_boundaries_and_edit_through_the_cli(files, tmp_path):
    path = str(tmp_path / "c.zarr")
    spec = f"biggan:{files['biggan']},classes=0;2,truncation=0.8"
    runner = CliRunner()
    assert runner.invoke(cli, ["sample", path, "-g", spec, "-p", "imagestats", "-n", "200", "--chunk", "100",
                               "-q"]).exit_code == 0
    out = runner.invoke(cli, ["boundaries", path, "--attribute", "brightness", "--class", "2", "--ratio", "0.2",
                              "--json", "-q"])
    assert out.exit_code == 0, out.output
    assert '"brightness_class2"' in out.output
    edited = runner.invoke(cli, ["edit", path, "--direction", "interfacegan/brightness_class2", "--stored",
                                 "--samples", "2", "--alphas", "-2,2,3", "--out", str(tmp_path / "e.png")])
    assert edited.exit_code == 0, edited.output
    assert (tmp_path / "e.png").exists()


@pytest.mark.parametrize("family", ["pggan", "biggan"])
def test_bf16_sampling_stores_float32_scores_close_to_fp32(files, tmp_path, family):
    spec = f"pggan:{files['dir'] / 'pggan.pth'}" if family == "pggan" else f"biggan:{files['biggan']},class=1"
    full = engine.sample(str(tmp_path / "f.zarr"), spec, ["imagestats"], n=8, chunk=8, progress=False)
    low = engine.sample(str(tmp_path / "l.zarr"), spec, ["imagestats"], n=8, chunk=8, progress=False,
                        precision="bf16")
    assert low.array("scores").dtype == np.float32 and low.meta["numerics"]["precision"] == "bf16"
    brightness = full.attributes.index("brightness")
    np.testing.assert_allclose(low.array("scores")[:, brightness], full.array("scores")[:, brightness], atol=0.05)
