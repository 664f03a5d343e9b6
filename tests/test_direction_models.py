"""LatentCLR's direction models: the batched K networks equal K separate ones, and they survive the store."""
from __future__ import annotations

from collections import OrderedDict

import numpy as np
import pytest
import torch
import zarr
from torch import nn

import engine
from engine.direction_models import (DirectionModel, Projector, build_model, load_direction_model, module_arrays,
                                     read_model, write_group)
from engine.lock import StoreLock
from engine.store import Store, StoreError


def _separate_mlp(model: DirectionModel, k: int) -> nn.Sequential:
    """Direction ``k`` of a batched nonlinear model as its own torch Sequential (the public code's create_mlp)."""
    layers: list[tuple[str, nn.Module]] = []
    d = model.size
    for i, layer in enumerate(model.layers):
        last = i == model.depth - 1
        linear = nn.Linear(d, d, bias=not last)
        with torch.no_grad():
            linear.weight.copy_(layer.weight[k])
            if not last:
                linear.bias.copy_(layer.bias[k])
        layers.append((f"linear_{i + 1}", linear))
        if not last:
            norm = nn.BatchNorm1d(d)
            source = model.norms[i]
            with torch.no_grad():
                for name in ("weight", "bias", "running_mean", "running_var"):
                    getattr(norm, name).copy_(getattr(source, name)[k * d:(k + 1) * d])
            layers += [(f"batchnorm_{i + 1}", norm), (f"relu_{i + 1}", nn.ReLU())]
    return nn.Sequential(OrderedDict(layers))


def _perturbed(model: DirectionModel) -> DirectionModel:
    """``model`` with batch-norm affine parameters and running statistics away from their initial values."""
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for norm in getattr(model, "norms", []):
            norm.weight.copy_(1 + 0.3 * torch.randn(norm.weight.shape, generator=g))
            norm.bias.copy_(0.3 * torch.randn(norm.bias.shape, generator=g))
            norm.running_mean.copy_(0.2 * torch.randn(norm.running_mean.shape, generator=g))
            norm.running_var.copy_(0.5 + torch.rand(norm.running_var.shape, generator=g))
    return model


@pytest.mark.parametrize("training", [True, False])
def test_batched_nonlinear_model_equals_one_mlp_per_direction(training):
    model = _perturbed(DirectionModel("nonlinear", 4, 12, generator=torch.Generator().manual_seed(1)))
    x = torch.randn(9, 12, generator=torch.Generator().manual_seed(2))
    separate = [_separate_mlp(model, k) for k in range(4)]
    model.train(training)
    for net in separate:
        net.train(training)
    batched = model(x)
    for k, net in enumerate(separate):
        expected = net(x)
        expected = expected / expected.norm(dim=1, keepdim=True)
        torch.testing.assert_close(batched[k], expected, rtol=1e-5, atol=1e-6)
    if training:        # each direction's batch norm updated its own running statistics, as its own module would
        for i, norm in enumerate(model.norms):
            for k, net in enumerate(separate):
                torch.testing.assert_close(norm.running_mean[k * 12:(k + 1) * 12], net[3 * i + 1].running_mean)


def test_linear_and_global_directions_are_unit_and_as_defined():
    x = torch.randn(5, 3, generator=torch.Generator().manual_seed(0))
    linear = DirectionModel("linear", 2, 3)
    expected = torch.einsum("kde,be->kbd", linear.weight, x)
    torch.testing.assert_close(linear(x), expected / expected.norm(dim=-1, keepdim=True))
    fixed = DirectionModel("global", 2, 3)
    out = fixed(x)
    assert out.shape == (2, 5, 3) and torch.allclose(out[:, 0], out[:, 4])
    torch.testing.assert_close(out.norm(dim=-1), torch.ones(2, 5))
    assert not fixed.z_dependent and linear.z_dependent


def test_projectors_give_unit_rows_of_the_configured_width():
    features = torch.randn(8, 20)
    assert Projector("identity", 20)(features).shape == (8, 20)
    for kind in ("linear", "nonlinear"):
        out = Projector(kind, 20)(features)
        assert out.shape == (8, 128)
        torch.testing.assert_close(out.norm(dim=1), torch.ones(8))
    with pytest.raises(ValueError, match="projector must be one of identity, linear, nonlinear"):
        Projector("mlp", 20)


@pytest.fixture()
def small_store(tmp_path):
    return Store.create(str(tmp_path / "m.zarr"), n=4, chunk=4, z_dim=16)


@pytest.mark.parametrize("kind", ["global", "linear", "nonlinear"])
def test_a_stored_model_is_plain_arrays_and_loads_back_equal(small_store, kind):
    model = _perturbed(DirectionModel(kind, 3, 16, generator=torch.Generator().manual_seed(4))).eval()
    with StoreLock(small_store.path):
        write_group(Store.open(small_store.path, mode="r+"), "models/latentclr/m", module_arrays(model),
                    model.architecture())
    raw = zarr.open_group(small_store.path, mode="r")["models/latentclr/m"]       # no latent-engine code needed
    assert raw.attrs["format"] == "latentclr-direction-model/1" and raw.attrs["kind"] == kind
    assert all(np.asarray(a[...]).dtype in (np.float32, np.int64) for _, a in raw.arrays())
    loaded = read_model(Store.open(small_store.path), "models/latentclr/m")
    x = np.random.default_rng(0).standard_normal((7, 16)).astype(np.float32)
    for row in range(3):
        np.testing.assert_array_equal(loaded.at(x, row), model.at(x, row))
        np.testing.assert_allclose(np.linalg.norm(loaded.at(x, row), axis=1), 1, atol=1e-6)


def test_load_direction_model_is_none_for_a_fixed_direction_and_errors_are_one_line(small_store):
    with StoreLock(small_store.path):
        target = Store.open(small_store.path, mode="r+")
        target.write_direction("sefa", "fixed", np.eye(2, 16), {"space": "z"})
        target.write_direction("latentclr", "lost", np.eye(2, 16), {"space": "z", "z_dependent": True,
                                                                     "model": "models/latentclr/lost"})
    reader = Store.open(small_store.path)
    assert load_direction_model(reader, "sefa/fixed") is None
    with pytest.raises(StoreError, match="has no models/latentclr/lost"):
        load_direction_model(reader, "latentclr/lost")
    with pytest.raises(StoreError, match="not a LatentCLR direction model"):
        build_model({"format": "pickle"})
    model = DirectionModel("linear", 2, 6)
    with pytest.raises(ValueError, match=r"row must be in \[0, 2\)"):
        model.at(np.zeros((1, 6), np.float32), 2)
    with pytest.raises(ValueError, match=r"codes must be \(S, 6\)"):
        model.at(np.zeros((1, 5), np.float32), 0)
    with pytest.raises(ValueError, match="model must be one of global, linear, nonlinear"):
        DirectionModel("mlp", 2, 6)


def test_engine_exports_the_latentclr_twin():
    assert callable(engine.latentclr)
