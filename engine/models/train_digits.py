"""Train the built-in digits models on scikit-learn's 8x8 digits and write their weights.

    python -m engine.models.train_digits --out engine/models/weights

Seeded and CPU-only, a few minutes on two cores. It trains the classifier first (light shift augmentation, a
seeded held-out split), then the GAN (hinge loss, spectral norm in D, EMA of G), then scores GAN samples with
the classifier, and writes two plain state dicts plus ``digits.json`` recording the architecture, seed,
accuracies, the sample check and the torch version.
"""
from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path
from typing import Any

import torch
from sklearn.datasets import load_digits
from torch import nn
from torch.nn import functional as F
from torch.nn.utils.parametrizations import spectral_norm

from engine.models.digits import (CONFIG_FILE, GENERATOR_FILE, IMAGE_SIZE, NUM_CLASSES, PREDICTOR_FILE,
                                  DigitsClassifier, DigitsGenerator)

HELDOUT_FRACTION = 0.2
CONFIDENCE = 0.9


def load_digit_images() -> tuple[torch.Tensor, torch.Tensor]:
    """All 1,797 digits as (N, 1, 16, 16) float32 in [-1, 1] (bilinear upsampling of the 8x8 originals)."""
    data = load_digits()
    images = torch.as_tensor(data.images, dtype=torch.float32)[:, None] / 16.0 * 2.0 - 1.0
    images = F.interpolate(images, size=(IMAGE_SIZE, IMAGE_SIZE), mode="bilinear", align_corners=False)
    return images.clamp(-1.0, 1.0), torch.as_tensor(data.target, dtype=torch.int64)


def heldout_split(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded (train, held-out) index split; the held-out part is ``HELDOUT_FRACTION`` of the rows."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_heldout = round(n * HELDOUT_FRACTION)
    return order[n_heldout:], order[:n_heldout]


def random_shift(images: torch.Tensor, max_shift: float, generator: torch.Generator) -> torch.Tensor:
    """Translate each image by a random sub-pixel offset in [-max_shift, max_shift] pixels; the border is -1."""
    offsets = (torch.rand(images.shape[0], 2, generator=generator) * 2.0 - 1.0) * max_shift
    theta = torch.zeros(images.shape[0], 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = 1.0
    theta[:, :, 2] = offsets * 2.0 / IMAGE_SIZE
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images + 1.0, grid, align_corners=False) - 1.0


def accuracy(model: DigitsClassifier, images: torch.Tensor, labels: torch.Tensor) -> float:
    """Fraction of ``images`` whose arg-max class is the label."""
    with torch.no_grad():
        return (model.logits(images).argmax(dim=1) == labels).float().mean().item()


def train_classifier(images: torch.Tensor, labels: torch.Tensor, seed: int, steps: int,
                     batch: int = 128, max_shift: float = 1.5) -> DigitsClassifier:
    """Train the CNN with cross-entropy on shifted copies of ``images``."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    model = DigitsClassifier()
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    for _ in range(steps):
        rows = torch.randint(len(images), (batch,), generator=generator)
        loss = F.cross_entropy(model.logits(random_shift(images[rows], max_shift, generator)), labels[rows])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
    return model.eval()


class MinibatchStd(nn.Module):
    """Append the batch's mean feature standard deviation as a channel, so D can see a collapsed batch."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        spread = x.std(dim=0).mean().expand(x.shape[0], 1, *x.shape[2:])
        return torch.cat([x, spread], dim=1)


class Discriminator(nn.Module):
    """Spectrally normalised conv net 16x16 -> 8x8 -> 4x4 (+ minibatch std) -> one real/fake score."""

    def __init__(self, channels: tuple[int, int, int] = (16, 32, 64)) -> None:
        super().__init__()
        self.net = nn.Sequential(
            spectral_norm(nn.Conv2d(1, channels[0], 3, padding=1)), nn.LeakyReLU(0.2),
            spectral_norm(nn.Conv2d(channels[0], channels[1], 4, stride=2, padding=1)), nn.LeakyReLU(0.2),
            spectral_norm(nn.Conv2d(channels[1], channels[2], 4, stride=2, padding=1)), nn.LeakyReLU(0.2),
            MinibatchStd(),
            spectral_norm(nn.Conv2d(channels[2] + 1, channels[2], 3, padding=1)), nn.LeakyReLU(0.2),
            nn.Flatten(), spectral_norm(nn.Linear(channels[2] * 16, 1)))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images)[:, 0]


def train_gan(images: torch.Tensor, seed: int, steps: int, batch: int = 64, lr: float = 1e-3,
              ema_decay: float = 0.999, **generator_options: Any) -> DigitsGenerator:
    """Adversarial training with the hinge loss; returns the EMA of the generator's weights.

    The learning rate holds for the first half and then falls linearly to zero, which sharpens the samples.
    The EMA's decay ramps up as (1 + t) / (10 + t) towards ``ema_decay`` so the average forgets the untrained
    start instead of dragging it along for thousands of steps.
    """
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    G, D = DigitsGenerator(**generator_options), Discriminator()
    G_ema = copy.deepcopy(G).requires_grad_(False)
    opt_G = torch.optim.Adam(G.parameters(), lr=lr, betas=(0.0, 0.9))
    opt_D = torch.optim.Adam(D.parameters(), lr=lr, betas=(0.0, 0.9))

    def half_then_linear_to_zero(step: int) -> float:
        return min(1.0, (1.0 - step / steps) / 0.5)

    schedules = [torch.optim.lr_scheduler.LambdaLR(opt, half_then_linear_to_zero) for opt in (opt_G, opt_D)]
    for step in range(steps):
        real = images[torch.randint(len(images), (batch,), generator=generator)]
        z = torch.randn(batch, G.z_dim, generator=generator)
        loss_D = F.relu(1.0 - D(real)).mean() + F.relu(1.0 + D(G(z).detach())).mean()
        opt_D.zero_grad(set_to_none=True)
        loss_D.backward()
        opt_D.step()
        loss_G = -D(G(torch.randn(batch, G.z_dim, generator=generator))).mean()
        opt_G.zero_grad(set_to_none=True)
        loss_G.backward()
        opt_G.step()
        for schedule in schedules:
            schedule.step()
        decay = min(ema_decay, (1 + step) / (10 + step))
        with torch.no_grad():
            for p_ema, p in zip(G_ema.parameters(), G.parameters()):
                p_ema.lerp_(p, 1.0 - decay)
    return G_ema.eval()


def sample_check(G: DigitsGenerator, P: DigitsClassifier, n: int, seed: int) -> dict[str, Any]:
    """Classify ``n`` seeded samples of ``G``: the confidently classified fraction and the class histogram."""
    z = torch.randn(n, G.z_dim, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        probabilities = P.logits(G(z)).softmax(dim=1)
    confidence, classes = probabilities.max(dim=1)
    return {"samples": n, "seed": seed, "confidence": CONFIDENCE,
            "confident_fraction": (confidence >= CONFIDENCE).float().mean().item(),
            "class_histogram": torch.bincount(classes, minlength=NUM_CLASSES).tolist()}


def main(argv: list[str] | None = None) -> None:
    """Train both models and write the weights and ``digits.json`` into ``--out``."""
    parser = argparse.ArgumentParser(prog="python -m engine.models.train_digits", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "weights")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--classifier-steps", type=int, default=3000)
    parser.add_argument("--gan-steps", type=int, default=3000)
    args = parser.parse_args(argv)
    # One thread: these models are too small to gain from more, a busy machine makes OpenMP threads spin-wait
    # (20x slower on two shared cores), and the results do not depend on the machine's core count.
    torch.set_num_threads(1)

    start = time.perf_counter()
    images, labels = load_digit_images()
    train_rows, heldout_rows = heldout_split(len(images), args.seed)
    P = train_classifier(images[train_rows], labels[train_rows], args.seed, args.classifier_steps)
    classifier_seconds = time.perf_counter() - start
    print(f"classifier: held-out accuracy {accuracy(P, images[heldout_rows], labels[heldout_rows]):.4f} "
          f"({classifier_seconds:.0f} s)", flush=True)
    G = train_gan(images, args.seed, args.gan_steps)
    check = sample_check(G, P, n=512, seed=args.seed)
    print(f"generator: {check['confident_fraction']:.3f} of samples confidently classified, "
          f"classes {check['class_histogram']} ({time.perf_counter() - start:.0f} s)", flush=True)

    args.out.mkdir(parents=True, exist_ok=True)
    torch.save(G.state_dict(), args.out / GENERATOR_FILE)
    torch.save(P.state_dict(), args.out / PREDICTOR_FILE)
    record = {
        "generator": {"z_dim": G.z_dim, "w_dim": G.w_dim, "mapping_hidden": G.map[0].out_features,
                      "channels": list(G.channels)},
        "predictor": {"channels": [P.features[0].out_channels, P.features[3].out_channels]},
        "seed": args.seed, "classifier_steps": args.classifier_steps, "gan_steps": args.gan_steps,
        "heldout_fraction": HELDOUT_FRACTION,
        "train_accuracy": accuracy(P, images[train_rows], labels[train_rows]),
        "heldout_accuracy": accuracy(P, images[heldout_rows], labels[heldout_rows]),
        "sample_check": check, "torch_version": torch.__version__,
        "train_seconds": round(time.perf_counter() - start, 1),
    }
    (args.out / CONFIG_FILE).write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
