"""The built-in demo models: a small GAN and a digit classifier, trained on scikit-learn's 8x8 digits.

They let every command run end to end with no download: ``engine.models.train_digits`` trains both on data
that ships inside scikit-learn, and their weights ship in ``engine/models/weights``. Images are 16x16, one
channel, values in [-1, 1] (the 8x8 digits upsampled bilinearly), for the generator's output and the
classifier's input alike.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
GENERATOR_FILE = "digits_generator.pt"
PREDICTOR_FILE = "digits_predictor.pt"
CONFIG_FILE = "digits.json"
IMAGE_SIZE = 16
NUM_CLASSES = 10


class DigitsGenerator(nn.Module):
    """DCGAN-style generator with a mapping network: z -> w -> fc -> 4x4 map -> two upsampling convs -> 16x16.

    ``num_ws`` is 1: the one w feeds the fully-connected layer ``fc``, whose weight (out_features, w_dim) is
    what SeFa factorizes (``latent_weights``).
    """

    has_mapping = True
    num_ws = 1

    def __init__(self, z_dim: int = 64, w_dim: int = 64, mapping_hidden: int = 128,
                 channels: tuple[int, int, int] = (64, 32, 16)) -> None:
        super().__init__()
        self.z_dim, self.w_dim = z_dim, w_dim
        self.channels = channels
        self.map = nn.Sequential(nn.Linear(z_dim, mapping_hidden), nn.LeakyReLU(0.2),
                                 nn.Linear(mapping_hidden, w_dim))
        self.fc = nn.Linear(w_dim, channels[0] * 4 * 4)
        self.up1 = nn.Conv2d(channels[0], channels[1], 3, padding=1)
        self.up2 = nn.Conv2d(channels[1], channels[2], 3, padding=1)
        self.to_image = nn.Conv2d(channels[2], 1, 3, padding=1)

    def mapping(self, z: torch.Tensor) -> torch.Tensor:
        """(B, z_dim) -> ws (B, 1, w_dim); z is normalised to unit RMS first, as in StyleGAN."""
        z = z * torch.rsqrt(z.square().mean(dim=1, keepdim=True) + 1e-8)
        return self.map(z)[:, None, :]

    def synthesis(self, ws: torch.Tensor) -> torch.Tensor:
        """ws (B, 1, w_dim) -> images (B, 1, 16, 16) in [-1, 1]."""
        x = F.leaky_relu(self.fc(ws[:, 0]), 0.2).view(-1, self.channels[0], 4, 4)
        x = F.leaky_relu(self.up1(F.interpolate(x, scale_factor=2.0)), 0.2)
        x = F.leaky_relu(self.up2(F.interpolate(x, scale_factor=2.0)), 0.2)
        return torch.tanh(self.to_image(x))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """z (B, z_dim) -> images (B, 1, 16, 16): ``synthesis(mapping(z))``."""
        return self.synthesis(self.mapping(z))

    def latent_weights(self) -> list[tuple[str, torch.Tensor]]:
        """[("fc", weight (out_features, w_dim))]: the first layer acting on w, for SeFa."""
        return [("fc", self.fc.weight)]


class DigitsClassifier(nn.Module):
    """Small CNN over 16x16 digits; scores are per-class log-odds, unbounded, one column per digit.

    The score of class k is ``logit_k - logsumexp_{j != k} logit_j`` = log(p_k / (1 - p_k)): it ranks like the
    probability but does not saturate at 0 or 1, which InterFaceGAN's top/bottom ranking needs.
    """

    attributes = [f"digit_{k}" for k in range(NUM_CLASSES)]

    def __init__(self, channels: tuple[int, int] = (16, 32)) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, channels[0], 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(channels[0], channels[1], 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten())
        self.head = nn.Linear(channels[1] * (IMAGE_SIZE // 4) ** 2, NUM_CLASSES)

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """images (B, 1, 16, 16) in [-1, 1] -> class logits (B, 10)."""
        if images.ndim != 4 or tuple(images.shape[1:]) != (1, IMAGE_SIZE, IMAGE_SIZE):
            raise ValueError(f"digits predictor takes images of shape (B, 1, {IMAGE_SIZE}, {IMAGE_SIZE}); "
                             f"got {tuple(images.shape)}")
        return self.head(self.features(images))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images (B, 1, 16, 16) in [-1, 1] -> log-odds scores (B, 10)."""
        return log_odds(self.logits(images))


def log_odds(logits: torch.Tensor) -> torch.Tensor:
    """(B, K) logits -> (B, K) with column k = logit_k - logsumexp over the other columns."""
    eye = torch.eye(logits.shape[1], dtype=torch.bool, device=logits.device)
    others = logits[:, None, :].masked_fill(eye, float("-inf"))
    return logits - torch.logsumexp(others, dim=2)


def load_config(weights_dir: Path = WEIGHTS_DIR) -> dict[str, Any]:
    """The training record written beside the weights (architecture, seed, accuracies, torch version)."""
    path = Path(weights_dir) / CONFIG_FILE
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read digits model config {path}: {exc}") from None
    sections = ("generator", "predictor")
    if not isinstance(config, dict) or not all(isinstance(config.get(key), dict) for key in sections):
        raise ValueError(f"digits model config {path} lacks the 'generator' and 'predictor' sections")
    return config


def _load_state(module: nn.Module, path: Path) -> nn.Module:
    """Load a plain state dict (weights_only) into ``module``; any failure is one ValueError naming the file."""
    try:
        state = torch.load(path, weights_only=True, map_location="cpu")
        module.load_state_dict(state)
    except Exception as exc:  # missing, truncated, not a state dict, wrong keys or shapes: all one message
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ValueError(f"cannot load digits weights {path}: {reason} "
                         f"(retrain with `python -m engine.models.train_digits`)") from None
    return module.eval().requires_grad_(False)


def digits_generator(weights_dir: str | Path = WEIGHTS_DIR) -> DigitsGenerator:
    """The shipped digits GAN (EMA weights), in eval mode on the CPU."""
    config = load_config(Path(weights_dir))
    G = DigitsGenerator(**_tuples(config["generator"]))
    return _load_state(G, Path(weights_dir) / GENERATOR_FILE)


def digits_predictor(weights_dir: str | Path = WEIGHTS_DIR) -> DigitsClassifier:
    """The shipped digit classifier, in eval mode on the CPU; scores are per-class log-odds."""
    config = load_config(Path(weights_dir))
    P = DigitsClassifier(**_tuples(config["predictor"]))
    return _load_state(P, Path(weights_dir) / PREDICTOR_FILE)


def _tuples(options: dict[str, Any]) -> dict[str, Any]:
    """JSON turns tuples into lists; the model constructors take tuples."""
    return {key: tuple(value) if isinstance(value, list) else value for key, value in options.items()}
