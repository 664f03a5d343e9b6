"""User-style models for tests, loaded through the `package.module:factory` SPEC path."""
from __future__ import annotations

import torch
from torch import nn


class HalfNaN(nn.Module):
    """Scores every other image NaN, as a broken user predictor might."""

    attributes = ["broken"]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        scores = images.reshape(images.shape[0], -1).mean(dim=1, keepdim=True)
        scores[::2] = float("nan")
        return scores


class WrongShape(nn.Module):
    attributes = ["a", "b"]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return images.reshape(images.shape[0], -1)[:, :3]


def half_nan() -> HalfNaN:
    return HalfNaN()


def wrong_shape() -> WrongShape:
    return WrongShape()


class TruncatingGenerator(nn.Module):
    """A StyleGAN-like generator whose mapping truncates the first ``cutoff`` layers towards ``w_avg``."""

    z_dim, w_dim, num_ws, has_mapping = 8, 8, 4, True

    def __init__(self, psi: float = 0.5, cutoff: int = 2):
        super().__init__()
        self.psi, self.cutoff = psi, cutoff
        self.net = nn.Linear(8, 8)
        torch.nn.init.orthogonal_(self.net.weight, generator=torch.Generator().manual_seed(0))
        torch.nn.init.zeros_(self.net.bias)
        self.register_buffer("w_avg", torch.full((8,), 0.25))

    def mapping_w(self, z: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.net(z))

    def truncate(self, w: torch.Tensor) -> torch.Tensor:
        ws = w[:, None, :].repeat(1, self.num_ws, 1)
        ws[:, :self.cutoff] = self.w_avg + self.psi * (ws[:, :self.cutoff] - self.w_avg)
        return ws

    def mapping(self, z: torch.Tensor) -> torch.Tensor:
        return self.truncate(self.mapping_w(z))

    def synthesis(self, ws: torch.Tensor) -> torch.Tensor:
        return torch.tanh(ws.mean(dim=1))[:, None, None, :].expand(-1, 1, 8, 8)


def truncating_generator(psi: float = 0.5, cutoff: int = 2) -> TruncatingGenerator:
    return TruncatingGenerator(psi, cutoff)


class ClassConditionalGenerator(nn.Module):
    """A BigGAN-like class-conditional generator without a mapping network: each class has its own planted
    direction, and the image's brightness is tanh of the code along its class's direction."""

    z_dim, w_dim, num_ws, has_mapping, num_classes = 6, 6, 1, False, 5

    def __init__(self, classes: tuple[int, ...] | None = None, truncation: float | None = None):
        super().__init__()
        g = torch.Generator().manual_seed(5)
        directions = torch.randn(self.num_classes, self.z_dim, generator=g)
        self.register_buffer("directions", directions / directions.norm(dim=1, keepdim=True))
        self.label_choice = classes
        if truncation is not None:
            self.latent_distribution = {"kind": "truncated_normal", "bound": 2.0, "scale": float(truncation)}

    def mapping(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return z[:, None, :]

    def synthesis(self, ws: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        along = (ws[:, 0] * self.directions[labels]).sum(dim=1)
        return torch.tanh(along)[:, None, None, None].expand(-1, 3, 4, 4)


def class_conditional_generator(classes: object = None, truncation: float | None = None) -> ClassConditionalGenerator:
    """SPEC options: ``classes=2`` or ``classes=1;3`` (the classes a run draws; default all), ``truncation=ψ``."""
    if classes is None:
        chosen = None
    elif isinstance(classes, int):
        chosen = (classes,)
    else:
        chosen = tuple(int(c) for c in str(classes).split(";"))
    return ClassConditionalGenerator(chosen, truncation)


def failing_inside():
    """A factory whose own code raises a TypeError (as a model built from a malformed file may)."""
    return len(3)


class LinearLayerGenerator(nn.Module):
    """No mapping network; its layer ``features`` is a known linear map A of z (singular values 5, 3, 2, 1, 0.5,
    0.25), the images a fixed nonlinear function of those features: GANSpace's regressed directions on that
    layer are A's right singular vectors."""

    z_dim, w_dim, num_ws, has_mapping = 6, 6, 1, False

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(11)
        u = torch.linalg.qr(torch.randn(10, 6, generator=g))[0]
        v = torch.linalg.qr(torch.randn(6, 6, generator=g))[0]
        self.features = nn.Linear(6, 10, bias=False)
        with torch.no_grad():
            self.features.weight.copy_(u @ torch.diag(torch.tensor([5.0, 3, 2, 1, 0.5, 0.25])) @ v.T)
        self.head = nn.Linear(10, 16)

    def mapping(self, z: torch.Tensor) -> torch.Tensor:
        return z[:, None, :]

    def synthesis(self, ws: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.head(self.features(ws[:, 0]))).reshape(-1, 1, 4, 4)


def linear_layer_generator() -> LinearLayerGenerator:
    return LinearLayerGenerator()
