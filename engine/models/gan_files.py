"""PGGAN and BigGAN from the files people have: ``pggan:PATH.pth`` and ``biggan:PATH``.

Neither family has a mapping network: their codes are z, and a store sampled from them has ``latents/z`` only.

* ``pggan:PATH.pth``: a genforce PGGAN checkpoint (InterFaceGAN's and SeFa's CelebA-HQ and LSUN models),
  ``generator_smooth`` when present, else ``generator``; built by ``engine.models.pggan``.
* ``biggan:PATH``: a huggingface pytorch-pretrained-BigGAN model (BigGAN-deep 128/256/512): a folder with
  ``config.json`` and ``pytorch_model.bin``, or the ``.bin`` with its ``config.json`` beside it; built by
  ``engine.models.biggan``. Options: ``class=K`` or ``classes=K1;K2;...|all`` (the ImageNet classes a run draws
  its rows' labels from; default all) and ``truncation=ψ`` in (0, 1] (default 1): z is drawn from the normal
  truncated to [-2, 2] times ψ, as BigGAN samples it, and ψ is also passed to the network, whose batch-norm
  statistics depend on it.

Files load with ``torch.load(weights_only=True)``; every generator carries ``provenance`` (the file's SHA-256,
its format and the options), which the sampler records in the store.
"""
from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

import torch

from engine.models.base import IdentityMapping
from engine.models.checkpoints import CheckpointError, latent_weights, load_checkpoint
from engine.models.stylegan_files import file_sha256, parse_classes

#: BigGAN's truncation trick draws z from the standard normal restricted to [-TRUNCATION_BOUND, TRUNCATION_BOUND].
TRUNCATION_BOUND = 2.0


class PGGANGenerator(IdentityMapping, torch.nn.Module):
    """A PGGAN network behind the Generator protocol: w is z (no mapping), images clamped to [-1, 1]."""

    def __init__(self, network: torch.nn.Module, *, path: str, sha256: str, file_format: str,
                 state: Mapping[str, torch.Tensor]) -> None:
        super().__init__()
        self.network = network
        self.z_dim = self.w_dim = int(network.z_dim)
        self.num_ws = 1
        self.img_resolution, self.img_channels = int(network.img_resolution), int(network.img_channels)
        self._first_layer = {k: v for k, v in state.items() if k.startswith(("layer0.", "fc."))}
        self.path, self.sha256, self.file_format = path, sha256, file_format
        self.spec = f"pggan:{path}"

    def synthesis(self, ws: torch.Tensor) -> torch.Tensor:
        return self.network(ws[:, 0]).clamp(-1.0, 1.0)

    def latent_weights(self) -> list[tuple[str, torch.Tensor]]:
        """The first layer, which takes z, as ``sefa --checkpoint FILE --family pggan`` reads it."""
        return latent_weights(self._first_layer, "pggan", path=self.path)

    @property
    def provenance(self) -> dict[str, Any]:
        return {"path": self.path, "sha256": self.sha256, "family": "pggan", "format": self.file_format,
                "resolution": self.img_resolution}


class BigGANGenerator(torch.nn.Module):
    """A BigGAN network behind the Generator protocol, class-conditional (``engine.models.base``): w is z,
    z is drawn from the truncated normal at ψ, and each code's class label is one-hot into the network."""

    has_mapping = False

    def __init__(self, network: torch.nn.Module, *, path: str, sha256: str, config_sha256: str,
                 gen_z: torch.Tensor, truncation: float = 1.0, classes: Any = None) -> None:
        super().__init__()
        self.network = network
        self.z_dim = self.w_dim = int(network.z_dim)
        self.num_ws = 1
        self.num_classes = int(network.num_classes)
        self.img_resolution, self.img_channels = int(network.img_resolution), int(network.img_channels)
        self.truncation = _check_truncation(truncation)
        self.label_choice = _check_classes(classes, self.num_classes)
        self.latent_distribution = {"kind": "truncated_normal", "bound": TRUNCATION_BOUND, "scale": self.truncation}
        self._gen_z = gen_z
        self.path, self.sha256, self.config_sha256 = path, sha256, config_sha256

    def mapping(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return z[:, None, :]

    def synthesis(self, ws: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        onehot = torch.nn.functional.one_hot(labels.long(), self.num_classes).to(ws.dtype)
        return self.network(ws[:, 0], onehot, self.truncation).clamp(-1.0, 1.0)

    def latent_weights(self) -> list[tuple[str, torch.Tensor]]:
        """The latent half of the first linear layer (the columns acting on z of its input [z, class
        embedding]), as the SeFa paper factorizes BigGAN and ``sefa --checkpoint FILE --family biggan`` reads."""
        return latent_weights({"generator.gen_z.weight": self._gen_z}, "biggan", path=self.path)

    @property
    def provenance(self) -> dict[str, Any]:
        return {"path": self.path, "sha256": self.sha256, "config_sha256": self.config_sha256, "family": "biggan",
                "format": "huggingface pytorch-pretrained-BigGAN", "resolution": self.img_resolution,
                "truncation": self.truncation,
                "classes": None if self.label_choice is None else list(self.label_choice)}


def _check_truncation(psi: Any) -> float:
    if isinstance(psi, bool) or not isinstance(psi, (int, float)) or not 0 < psi <= 1:
        raise ValueError(f"truncation must be in (0, 1] for BigGAN (its batch-norm statistics are stored for that "
                         f"range); got {psi!r}")
    return float(psi)


def _check_classes(classes: Any, num_classes: int) -> tuple[int, ...] | None:
    parsed = parse_classes(classes)
    if parsed is None:
        return None
    if not isinstance(parsed, tuple) or not parsed or any(not 0 <= k < num_classes for k in parsed):
        raise ValueError(f"classes must be integers from 0 to {num_classes - 1} (class=K or classes=K1;K2;...|all); "
                         f"got {classes!r}")
    return parsed


def _options(family: str, args: tuple, options: dict, known: tuple[str, ...]) -> None:
    if args:
        raise ValueError(f"unexpected positional options {list(args)!r}: options are key=value after the path")
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise ValueError(f"unknown option(s) {', '.join(unknown)} for {family} (known: {', '.join(known) or 'none'})")


def pggan_generator(path: Any = None, *args: Any, **options: Any) -> PGGANGenerator:
    """``pggan:PATH.pth``: a genforce PGGAN checkpoint."""
    from engine.models import pggan

    _options("pggan", args, options, ())
    if path is None or not str(path):
        raise ValueError("pggan needs a file: pggan:PATH.pth")
    path = os.path.abspath(os.path.expanduser(str(path)))
    checkpoint = load_checkpoint(path)
    if not isinstance(checkpoint, Mapping):
        raise CheckpointError(f"{path} is not a state dict (it holds a {type(checkpoint).__name__})")
    for key in ("generator_smooth", "generator"):
        if isinstance(checkpoint.get(key), Mapping):
            state = {str(k).removeprefix("module."): v for k, v in checkpoint[key].items()
                     if isinstance(v, torch.Tensor)}
            network = pggan.from_genforce(state).eval().requires_grad_(False)
            return PGGANGenerator(network, path=path, sha256=file_sha256(path), file_format=f"genforce ({key})",
                                  state=state)
    raise CheckpointError(f"{path} is not a genforce PGGAN checkpoint: it has no generator_smooth or generator "
                          f"entry (keys: {', '.join(map(str, list(checkpoint)[:6]))})")


def biggan_files(path: str) -> tuple[str, str]:
    """(weights, config.json) of a huggingface BigGAN: a folder holding both, or the weights file with its
    config.json beside it."""
    if os.path.isdir(path):
        weights, config = os.path.join(path, "pytorch_model.bin"), os.path.join(path, "config.json")
    else:
        weights, config = path, os.path.join(os.path.dirname(path), "config.json")
    if not os.path.isfile(weights):
        raise FileNotFoundError(f"no BigGAN weights file {weights}")
    if not os.path.isfile(config):
        raise FileNotFoundError(f"no config.json beside {weights}: BigGAN's architecture is read from it")
    return weights, config


def biggan_generator(path: Any = None, *args: Any, truncation: float = 1.0, **options: Any) -> BigGANGenerator:
    """``biggan:PATH``: a huggingface pytorch-pretrained-BigGAN folder (or its ``.bin``), with the options of
    the module doc."""
    from engine.models import biggan

    if "class" in options and "classes" in options:
        raise ValueError("give class=K or classes=K1;K2;..., not both")
    classes = options.pop("class", options.pop("classes", None))
    _options("biggan", args, options, ())
    if path is None or not str(path):
        raise ValueError("biggan needs a folder or file: biggan:PATH[,class=207,truncation=0.4]")
    path = os.path.abspath(os.path.expanduser(str(path)))
    weights, config_path = biggan_files(path)
    try:
        with open(config_path) as handle:
            config = json.load(handle)
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{config_path} is not a readable BigGAN config ({type(exc).__name__}: {exc})") from None
    if not isinstance(config, dict):
        raise CheckpointError(f"{config_path} is not a BigGAN config (a JSON object)")
    state = load_checkpoint(weights)
    if not isinstance(state, Mapping):
        raise CheckpointError(f"{weights} is not a state dict (it holds a {type(state).__name__})")
    state = {str(k).removeprefix("module."): v for k, v in state.items() if isinstance(v, torch.Tensor)}
    network = biggan.from_huggingface(config, state).eval().requires_grad_(False)
    gen_z = _effective_gen_z(state, weights)
    generator = BigGANGenerator(network, path=path, sha256=file_sha256(weights), config_sha256=file_sha256(config_path),
                                gen_z=gen_z, truncation=truncation, classes=classes)
    spec = [path] + ([f"truncation={generator.truncation!r}"] if generator.truncation != 1.0 else []) + \
        ([f"classes={classes}"] if classes is not None else [])
    generator.spec = "biggan:" + ",".join(spec)
    return generator


def _effective_gen_z(state: Mapping[str, torch.Tensor], path: str) -> torch.Tensor:
    """The first linear layer's weight as the file stores it (``weight_orig`` under spectral norm): SeFa's
    eigenvectors do not depend on the spectral norm's single scale."""
    for key in ("generator.gen_z.weight_orig", "generator.gen_z.weight"):
        if key in state:
            return state[key].detach().float()
    raise CheckpointError(f"{path} has no BigGAN first linear layer (generator.gen_z.weight_orig)")
