"""StyleGAN-family files end to end: each format on disk, loaded through its SPEC, sampled, factorized, edited.

The files are written in the exact layouts of rosinality's ``.pt``, NVlabs' ``.pkl`` (persistence layout) and
genforce's ``.pth`` by the builders beside these tests, with random weights; parity with the original code
is checked outside the project (see the closing notes of issue 12).
"""
from __future__ import annotations

import hashlib
import os

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import engine
from engine.cli import cli
from engine.methods.sefa import sefa
from engine.models import stylegan, stylegan2, stylegan3
from engine.models.registry import SpecError
from tests import stylegan2_checkpoints as sg2files
from tests import stylegan3_checkpoints as sg3files
from tests import stylegan_checkpoints as sg1files
from tests.nvlabs_pickles import STYLEGAN2_SOURCE, STYLEGAN3_SOURCE, write_network_pickle


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("stylegan-files")
    ros = sg2files.rosinality_state(size=16, seed=1)
    latent_avg = torch.randn(32, generator=torch.Generator().manual_seed(4))
    torch.save({"g_ema": ros, "latent_avg": latent_avg, "args": {"size": 16}}, folder / "ros.pt")
    torch.save({"g_ema": ros}, folder / "ros_no_avg.pt")
    kwargs, state = sg2files.nvlabs_state(img_resolution=16, seed=2)
    write_network_pickle(folder / "ada.pkl", {"G_ema": ("Generator", STYLEGAN2_SOURCE, kwargs, state)},
                         extra={"training_set_kwargs": {"path": "ffhq.zip"}})
    ckwargs, cstate = sg2files.nvlabs_state(img_resolution=16, c_dim=4, seed=3)
    write_network_pickle(folder / "cond.pkl", {"G_ema": ("Generator", STYLEGAN2_SOURCE, ckwargs, cstate)})
    gf2 = sg2files.genforce_state(resolution=16, seed=5)
    torch.save({"generator": sg2files.genforce_state(resolution=16, seed=6), "generator_smooth": gf2},
               folder / "gf2.pth")
    gf1 = sg1files.save_genforce_checkpoint(folder / "gf1.pth", resolution=16, seed=7)
    for config in ("T", "R"):
        k3, s3 = sg3files.nvlabs_state(config=config, img_resolution=16, seed=8)
        write_network_pickle(folder / f"sg3{config}.pkl", {"G_ema": ("Generator", STYLEGAN3_SOURCE, k3, s3)})
        sg3 = (k3, s3) if config == "T" else sg3
    return {"sg3": sg3,"dir": folder, "ros": ros, "latent_avg": latent_avg, "ada": (kwargs, state), "cond": (ckwargs, cstate),
            "gf2": gf2, "gf1": gf1}


def _path(files, name):
    return str(files["dir"] / name)


@pytest.mark.parametrize("name, family, fmt", [
    ("ros.pt", "stylegan2", "rosinality"),
    ("ada.pkl", "stylegan2", "nvlabs stylegan2 pickle"),
    ("gf2.pth", "stylegan2", "genforce (generator_smooth)"),
    ("gf1.pth", "stylegan", "genforce (generator_smooth)"),
    ("sg3T.pkl", "stylegan3", "nvlabs stylegan3 pickle"),
])
def test_each_format_loads_as_its_converter_builds_it(files, name, family, fmt):
    G = engine.load_generator(f"{family}:{_path(files, name)}")
    assert G.file_format == fmt
    if name == "ros.pt":
        reference = stylegan2.from_rosinality(files["ros"], latent_avg=files["latent_avg"])
    elif name == "ada.pkl":
        reference = stylegan2.from_nvlabs(*files["ada"])
    elif name == "gf2.pth":
        reference = stylegan2.from_genforce(files["gf2"])
    elif name == "sg3T.pkl":
        reference = stylegan3.from_nvlabs(*files["sg3"])
    else:
        reference = stylegan.from_genforce(files["gf1"])
    z = torch.randn(3, G.z_dim, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        w = reference.mapping_w(z)
        torch.testing.assert_close(G.mapping_w(z), w)
        ws = G.mapping(z)
        torch.testing.assert_close(ws, w[:, None].expand(-1, G.num_ws, -1))
        torch.testing.assert_close(G.synthesis(ws), reference.synthesis(ws).clamp(-1, 1))
    digest = hashlib.sha256(open(_path(files, name), "rb").read()).hexdigest()
    assert G.provenance["sha256"] == digest and G.provenance["format"] == fmt


def test_sampling_stores_w_before_and_wp_after_truncation_with_the_files_average(files, tmp_path):
    spec = f"stylegan2:{_path(files, 'ros.pt')},truncation=0.5,truncation_cutoff=3"
    store = engine.sample(str(tmp_path / "r.zarr"), spec, ["imagestats"], n=24, chunk=8, spaces=["w", "wp"],
                          progress=False)
    w = store.array("latents/w")[:]
    wp = store.array("latents/wp")[:]
    avg = files["latent_avg"].numpy()
    expected = avg + 0.5 * (w[:, None] - avg)
    np.testing.assert_allclose(wp[:, :3], np.broadcast_to(expected, wp[:, :3].shape), atol=1e-5)
    np.testing.assert_allclose(wp[:, 3:], np.broadcast_to(w[:, None], wp[:, 3:].shape), atol=1e-6)
    record = store.meta["generator_file"]
    assert record["w_avg"] == "file" and record["truncation"] == 0.5 and record["truncation_cutoff"] == 3
    assert store.meta["generator"] == f"stylegan2:{_path(files, 'ros.pt')},truncation=0.5,truncation_cutoff=3"
    assert np.isfinite(store.array("scores")[:]).all()


def test_a_file_without_an_average_w_gets_a_seeded_estimate_recorded_in_the_store(files, tmp_path):
    spec = f"stylegan2:{_path(files, 'ros_no_avg.pt')},truncation=0.7"
    store = engine.sample(str(tmp_path / "e.zarr"), spec, [], n=8, chunk=8, spaces=["w", "wp"], progress=False)
    record = store.meta["generator_file"]
    assert record["w_avg"].startswith("computed") and len(record["w_avg_values"]) == 32
    again = engine.load_generator(spec)
    assert not again.network.w_avg.any()            # estimated at first use, on the device the model is on by then
    with torch.inference_mode():
        ws = again.mapping(torch.zeros(2, 32))
    np.testing.assert_array_equal(np.asarray(record["w_avg_values"], np.float32), again.network.w_avg.numpy())
    avg = again.network.w_avg
    torch.testing.assert_close(ws[:, 0], avg + 0.7 * (again.mapping_w(torch.zeros(2, 32)) - avg))


def test_sefa_of_a_generator_equals_sefa_of_its_checkpoint_in_every_format(files):
    for name, family in (("ros.pt", "stylegan2"), ("ada.pkl", "stylegan2"), ("gf2.pth", "stylegan2"),
                         ("gf1.pth", "stylegan"), ("sg3T.pkl", "stylegan3"), ("sg3R.pkl", "stylegan3")):
        path = _path(files, name)
        by_generator = sefa(generator=f"{family}:{path}", k=5)
        by_checkpoint = sefa(checkpoint=path, family=family, k=5)
        for key, result in by_generator.items():
            np.testing.assert_allclose(result["directions"], by_checkpoint[key]["directions"], atol=1e-6)
            np.testing.assert_allclose(result["eigenvalues"], by_checkpoint[key]["eigenvalues"], rtol=1e-6)


def test_edit_along_a_w_direction_on_a_layer_range_renders_the_generators_images(files, tmp_path):
    from engine.methods.editing import edit
    from engine.methods.ganspace import pca

    store = engine.sample(str(tmp_path / "g.zarr"), f"stylegan2:{_path(files, 'ada.pkl')}", ["imagestats"], n=64,
                          chunk=32, spaces=["w", "wp"], progress=False)
    pca(store, array="latents/w", k=4)
    result = edit(store, "ganspace/w:0", alphas="-2,2,3", samples=2, layers="0-1")
    assert result["images"].shape == (2, 3, 3, 16, 16)
    assert result["images"].abs().max() <= 1
    # α = 0 (the middle column) is the unedited image
    G = engine.load_generator(store.meta["generator"])
    z = torch.from_numpy(np.asarray(engine.sampler.draw_codes(0, 0, 2, G.z_dim)))
    torch.testing.assert_close(result["images"][:, 1], G.synthesis(G.mapping(z)), atol=1e-5, rtol=0)


def test_stylegan3_samples_and_factorizes_its_affines_numbered_as_w_plus(files, tmp_path):
    store = engine.sample(str(tmp_path / "s3.zarr"), f"stylegan3:{_path(files, 'sg3R.pkl')},truncation=0.7",
                          ["imagestats"], n=16, chunk=8, spaces=["w", "wp"], progress=False)
    assert store.meta["generator_file"]["w_avg"] == "file"
    assert np.isfinite(store.array("scores")[:]).all()
    G = engine.load_generator(f"stylegan3:{_path(files, 'sg3T.pkl')}")
    names = [name for name, _ in G.latent_weights()]
    # layer i of SeFa is the affine that takes ws[i]: the input's transform first, the ToRGB (last ws) apart
    assert names[0] == "input" and [int(n[1:].split("_")[0]) for n in names[1:]] == list(range(len(names) - 1))
    assert len(names) == G.num_ws - 1
    assert len(G.latent_weights(include_torgb=True)) == G.num_ws


def test_random_noise_stores_are_reproducible_and_differ_from_const(files, tmp_path):
    spec = f"stylegan2:{_path(files, 'gf2.pth')}"
    const = engine.sample(str(tmp_path / "c.zarr"), spec, ["imagestats"], n=16, chunk=8, progress=False)
    one = engine.sample(str(tmp_path / "r1.zarr"), spec + ",noise=random", ["imagestats"], n=16, chunk=8,
                        progress=False)
    two = engine.sample(str(tmp_path / "r2.zarr"), spec + ",noise=random", ["imagestats"], n=16, chunk=8,
                        progress=False)
    np.testing.assert_array_equal(one.array("scores")[:], two.array("scores")[:])
    assert not np.array_equal(one.array("scores")[:], const.array("scores")[:])


def test_a_conditional_pickle_needs_its_class(files):
    with pytest.raises(SpecError, match="conditional model with 4 classes: pass class=K"):
        engine.load_generator(f"stylegan2:{_path(files, 'cond.pkl')}")
    G = engine.load_generator(f"stylegan2:{_path(files, 'cond.pkl')},class=3")
    reference = stylegan2.from_nvlabs(*files["cond"])
    z = torch.randn(2, G.z_dim)
    c = torch.zeros(2, 4)
    c[:, 3] = 1
    with torch.no_grad():
        torch.testing.assert_close(G.mapping_w(z, torch.tensor([3, 3])), reference.mapping_w(z, c))
    assert G.label_choice == (3,) and G.num_classes == 4


@pytest.mark.parametrize("spec, message", [
    ("stylegan2:{dir}/missing.pt", "no checkpoint file"),
    ("stylegan3:{dir}/ada.pkl", "holds a StyleGAN2 generator: read it with stylegan2:"),
    ("stylegan2:{dir}/sg3R.pkl", "holds a StyleGAN3 generator: read it with stylegan3:"),
    ("stylegan:{dir}/ros.pt", "rosinality/stylegan2-pytorch checkpoint (g_ema): read it with stylegan2:"),
    ("stylegan2:{dir}/ros.pt,truncation=x", "truncation must be a number"),
    ("stylegan2:{dir}/ros.pt,psi=0.5", "unknown option(s) psi"),
    ("stylegan2:{dir}/ros.pt,noise=loud", "noise must be one of const, random, none"),
])
def test_bad_specs_are_one_line_errors_on_the_command_line(files, tmp_path, spec, message):
    result = CliRunner().invoke(cli, ["sample", str(tmp_path / "x.zarr"), "-g", spec.format(dir=files["dir"]),
                                      "-n", "4"])
    assert result.exit_code == 1, result.output
    assert message in result.output and len(result.output.strip().splitlines()) == 1, result.output
    assert not os.path.exists(tmp_path / "x.zarr")


def test_an_unsafe_pickle_is_refused_through_the_spec_without_running_it(tmp_path):
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    import pickle
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"G_ema": Payload()}))
    result = CliRunner().invoke(cli, ["sample", str(tmp_path / "x.zarr"), "-g", f"stylegan2:{path}", "-n", "4"])
    assert result.exit_code == 1 and "system" in result.output and "refused" in result.output, result.output
    assert not marker.exists()
    sefa_result = CliRunner().invoke(cli, ["sefa", "--checkpoint", str(path), "--family", "stylegan2"])
    assert sefa_result.exit_code == 1 and "refused" in sefa_result.output and not marker.exists()


@pytest.mark.parametrize("name, family", [("ada.pkl", "stylegan2"), ("sg3T.pkl", "stylegan3"), ("gf1.pth", "stylegan")])
def test_bf16_sampling_stores_float32_scores_close_to_fp32(files, tmp_path, name, family):
    spec = f"{family}:{_path(files, name)}"
    full = engine.sample(str(tmp_path / "f.zarr"), spec, ["imagestats"], n=8, chunk=8, progress=False)
    low = engine.sample(str(tmp_path / "l.zarr"), spec, ["imagestats"], n=8, chunk=8, progress=False,
                        precision="bf16")
    assert low.array("scores").dtype == np.float32
    brightness = full.attributes.index("brightness")
    np.testing.assert_allclose(low.array("scores")[:, brightness], full.array("scores")[:, brightness], atol=0.05)
