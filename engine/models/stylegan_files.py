"""StyleGAN-family generators from the files people have: ``stylegan2:PATH``, ``stylegan3:PATH``, ``stylegan:PATH``.

Each family's network is the engine's own implementation (``engine.models.stylegan2`` / ``stylegan3`` /
``stylegan``); this module reads the file safely, picks the converter for its key layout, and puts the network
behind the engine's ``Generator`` protocol with the options a researcher sets per run:

* ``truncation=ψ`` (default 1) and ``truncation_cutoff=N`` (layers truncated, default all): the per-layer codes
  are ``w_avg.lerp(w, ψ)`` on the first N layers, with the file's own average w; where the file has none it is
  computed here, deterministically, to 1e-3 (see ``estimate_w_avg``) and recorded with the store.
* ``noise=const|random|none``: const (the default) uses the file's stored noise, so an image is a function of
  its code alone; random draws fresh noise from a generator the sampler seeds per chunk (``reseed_noise``),
  so a store stays reproducible.
* ``class=K`` or ``classes=K1;K2;...|all`` for a conditional model (``c_dim > 0``): the classes a run draws
  its codes' labels from (``engine.sampler.draw_labels``; one class: every code); the store keeps each row's
  class in ``labels``.

Files read (nothing in them is executed; ``--trust-checkpoint`` is never needed):

======================  ==========================================================================
``.pkl``                NVlabs stylegan2-ada-pytorch / stylegan3 pickles, through the restricted
                        reader of ``engine.models.nvlabs_pickle`` (``G_ema``)
``.pt`` / ``.pth``      rosinality/stylegan2-pytorch (``g_ema``, converted files' ``latent_avg``) or
                        genforce (``generator_smooth``, else ``generator``), with
                        ``torch.load(weights_only=True)``
======================  ==========================================================================

Every generator carries ``provenance``: the file's SHA-256, its format and the options, which the sampler
records in the store so a run can be traced to its weights.
"""
from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from engine.models.checkpoints import CheckpointError, is_plain_pickle, latent_weights, load_checkpoint

NOISE_MODES = ("const", "random", "none")
#: The standard error to which a computed average w is fixed, per coordinate (the issue's 1e-3).
W_AVG_TOLERANCE = 1e-3
W_AVG_SEED = 0


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class StyleGenerator(torch.nn.Module):
    """A StyleGAN-family network behind the engine's Generator protocol, with truncation, noise and class.

    ``mapping_w`` is the mapping network's output before truncation (stored as ``latents/w``); ``mapping`` the
    per-layer codes after it (``latents/wp``); ``synthesis`` images clamped to [-1, 1].
    """

    has_mapping = True

    def __init__(self, network: torch.nn.Module, *, family: str, file_format: str, path: str, sha256: str,
                 state_affines: dict[str, torch.Tensor], truncation: float = 1.0,
                 truncation_cutoff: int | None = None, noise: str = "const",
                 classes: tuple[int, ...] | None = None, w_avg_source: str = "file") -> None:
        super().__init__()
        self.network = network
        self.z_dim, self.w_dim, self.num_ws = int(network.z_dim), int(network.w_dim), int(network.num_ws)
        self.c_dim = int(getattr(network, "c_dim", 0) or 0)
        self.img_resolution = int(network.img_resolution)
        self.img_channels = int(network.img_channels)
        self.family, self.file_format, self.path, self.sha256 = family, file_format, path, sha256
        self.truncation, self.truncation_cutoff = _check_truncation(truncation, truncation_cutoff, self.num_ws)
        self.noise = _check_noise(noise, family)
        self.label_choice = _check_classes(classes, self.c_dim, path)
        if self.c_dim:
            self.num_classes = self.c_dim         # a class-conditional generator (engine.models.base)
        self._state_affines = state_affines
        self.w_avg_source = w_avg_source
        self._w_avg_pending = False            # see ``estimate_w_avg_when_needed``
        # One random-noise stream per thread: a process that computes chunks on several threads at once (a Dask
        # worker with threads) must not let them draw from each other's stream.
        self._streams = threading.local()

    # --- the Generator protocol -------------------------------------------------------------------------
    def mapping_w(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """(B, z_dim) [+ class labels (B,) of a conditional model] -> w (B, w_dim), before truncation."""
        return self.network.mapping_w(z, self._class_codes(labels))

    def truncate(self, w: torch.Tensor) -> torch.Tensor:
        """w (B, w_dim) -> the per-layer codes (B, num_ws, w_dim) the synthesis takes, truncated as asked."""
        ws = w[:, None, :].repeat(1, self.num_ws, 1)
        if self.truncation != 1.0:
            self._settle_w_avg()
            cut = self.truncation_cutoff or self.num_ws
            avg = self.network.w_avg.to(ws.dtype)
            ws[:, :cut] = avg.lerp(ws[:, :cut], self.truncation)
        return ws

    def mapping(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.truncate(self.mapping_w(z, labels))

    def synthesis(self, ws: torch.Tensor, labels: torch.Tensor | None = None,
                  noise_maps: Sequence[torch.Tensor] | None = None) -> torch.Tensor:
        """Images in [-1, 1]; a conditional model's class acts through the mapping only, so ``labels`` is unused.
        ``noise_maps`` (one (B, 1, r, r) map per ``noise_inputs`` entry) replaces the noise of every layer."""
        if noise_maps is not None and not self.noise_inputs:
            raise ValueError(f"{self.path} takes no noise maps: it has no noise inputs (or noise=none)")
        extra = {} if noise_maps is None else {"noise_maps": noise_maps}
        images = self.network.synthesis(ws, noise=self.noise, generator=self._noise_stream(), **extra)
        return images.clamp(-1.0, 1.0)

    def stored_noise(self) -> list[torch.Tensor]:
        """The file's own noise of each ``noise_inputs`` entry as a (1, 1, r, r) map (what noise=const adds, before
        the layer's strength): where an inversion's per-image maps start."""
        return [self.network.get_submodule(name).noise_const.detach().reshape(1, 1, r, r).float()
                for name, r in self.noise_inputs]

    @property
    def noise_inputs(self) -> tuple[tuple[str, int], ...]:
        """(layer name, resolution r) of each per-layer noise input, in synthesis order; each takes a
        (B, 1, r, r) map. Empty for StyleGAN3 (no noise inputs) and with noise=none (noise switched off)."""
        if self.noise == "none":
            return ()
        return tuple(getattr(self.network, "noise_layers", ()))

    def latent_weights(self, include_torgb: bool = False) -> list[tuple[str, torch.Tensor]]:
        """The per-layer style affines SeFa factorizes, as ``sefa --checkpoint FILE --family F`` reads them
        (the ToRGB affines after the convs with ``include_torgb``, StyleGAN2/3 only)."""
        if include_torgb and self.family == "stylegan":
            raise ValueError("StyleGAN has no ToRGB modulations: drop --include-torgb")
        return latent_weights(self._state_affines, self.family, include_torgb=include_torgb, path=self.path)

    # --- what the sampler uses beside the protocol ------------------------------------------------------
    def reseed_noise(self, seed: int) -> None:
        """Restart this thread's random-noise stream (``noise=random``) from ``seed``; const noise ignores it.
        The noise of a chunk is then a function of (seed, the batches it is computed in)."""
        if self.noise == "random":
            self._streams.rng = torch.Generator(device=self.network.w_avg.device).manual_seed(int(seed))

    def _noise_stream(self) -> torch.Generator | None:
        if self.noise != "random":
            return None
        rng = getattr(self._streams, "rng", None)
        if rng is None or rng.device != self.network.w_avg.device:      # a torch.Generator lives on one device
            self.reseed_noise(0)
            rng = self._streams.rng
        return rng

    def estimate_w_avg_when_needed(self) -> None:
        """A file without an average w (and ψ ≠ 1): estimate it at first use, on the device the generator has
        been moved to by then (a GPU does it in seconds), rather than on the CPU while the file is read."""
        self._w_avg_pending = True
        self.w_avg_source = (f"computed: mean of mapping_w over z ~ N(0, I) seeded {W_AVG_SEED}, "
                             f"standard error ≤ {W_AVG_TOLERANCE}")

    def _settle_w_avg(self) -> None:
        if self._w_avg_pending:
            first = None if not self.c_dim else torch.tensor([(self.label_choice or (0,))[0]],
                                                              device=self.network.w_avg.device)
            estimate = estimate_w_avg(self.network, self._class_codes(first))
            with torch.inference_mode(False), torch.no_grad():
                self.network.w_avg.copy_(estimate.clone())
            self._w_avg_pending = False

    @property
    def provenance(self) -> dict[str, Any]:
        """What the store records of the weights and options behind its codes."""
        if self.truncation != 1.0:
            self._settle_w_avg()
        record: dict[str, Any] = {
            "path": self.path, "sha256": self.sha256, "family": self.family, "format": self.file_format,
            "resolution": self.img_resolution, "num_ws": self.num_ws, "truncation": self.truncation,
            "truncation_cutoff": self.truncation_cutoff, "noise": self.noise, "w_avg": self.w_avg_source}
        if self.c_dim:
            record["c_dim"] = self.c_dim
            record["classes"] = None if self.label_choice is None else list(self.label_choice)
        if self.w_avg_source != "file" and self.truncation != 1.0:
            record["w_avg_values"] = [float(v) for v in self.network.w_avg.float().cpu()]
        return record

    def _class_codes(self, labels: torch.Tensor | None) -> torch.Tensor | None:
        """One-hot c (B, c_dim) for NVlabs' conditional mapping."""
        if not self.c_dim:
            return None
        if labels is None:
            raise ValueError(f"{self.path} is a conditional model: its codes need class labels")
        return torch.nn.functional.one_hot(labels.long(), self.c_dim).to(self.network.w_avg.dtype)


def _check_truncation(psi: Any, cutoff: Any, num_ws: int) -> tuple[float, int | None]:
    if isinstance(psi, bool) or not isinstance(psi, (int, float)) or not np.isfinite(psi):
        raise ValueError(f"truncation must be a number (ψ, 1 = none); got {psi!r}")
    if cutoff is not None:
        if isinstance(cutoff, bool) or not isinstance(cutoff, int) or not 1 <= cutoff <= num_ws:
            raise ValueError(f"truncation_cutoff must be a layer count from 1 to {num_ws}; got {cutoff!r}")
    return float(psi), cutoff


def _check_noise(noise: Any, family: str) -> str:
    if noise not in NOISE_MODES:
        raise ValueError(f"noise must be one of {', '.join(NOISE_MODES)}; got {noise!r}")
    return str(noise)


def parse_classes(value: Any) -> tuple[int, ...] | None | str:
    """A SPEC's ``class=K`` / ``classes=K1;K2;...|all`` -> (K, ...) or None (all); the text if malformed."""
    if value is None or value == "all":
        return None
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return (value,)
    try:
        return tuple(int(part) for part in str(value).split(";"))
    except ValueError:
        return str(value)


def _check_classes(classes: Any, c_dim: int, path: str) -> tuple[int, ...] | None:
    if not c_dim:
        if classes is not None:
            raise ValueError(f"{path} is not a conditional model (c_dim 0): drop class/classes")
        return None
    if classes is None:
        raise ValueError(f"{path} is a conditional model with {c_dim} classes: pass class=K (0 ≤ K < {c_dim}) "
                         "or classes=K1;K2;...|all")
    if classes == "all":
        return None
    if not isinstance(classes, tuple) or not classes or any(not 0 <= k < c_dim for k in classes):
        raise ValueError(f"classes must be integers from 0 to {c_dim - 1} (class=K or classes=K1;K2;...|all); "
                         f"got {classes!r}")
    return classes


def estimate_w_avg(network: torch.nn.Module, class_codes: torch.Tensor | None = None, *,
                   tolerance: float = W_AVG_TOLERANCE, seed: int = W_AVG_SEED, batch: int = 8192,
                   most: int = 4_000_000) -> torch.Tensor:
    """The mean of ``mapping_w`` over z ~ N(0, I), drawn from ``seed``, until every coordinate's standard error
    is at most ``tolerance`` (or ``most`` codes have been mapped: then a ValueError says so).

    For files that carry no average w (rosinality's own training checkpoints): deterministic, so two runs of
    the same file truncate alike, and recorded with the store.
    """
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=(2,))))
    total = None
    squares = None
    count = 0
    device = network.w_avg.device
    with torch.inference_mode():
        while count < most:
            z = torch.from_numpy(rng.standard_normal((batch, int(network.z_dim)), dtype=np.float32)).to(device)
            c = None if class_codes is None else class_codes[:1].expand(batch, -1)
            w = network.mapping_w(z, c).double()
            total = w.sum(0) if total is None else total + w.sum(0)
            squares = (w * w).sum(0) if squares is None else squares + (w * w).sum(0)
            count += batch
            mean = total / count
            variance = (squares / count - mean * mean).clamp_min(0)
            if float((variance / count).sqrt().max()) <= tolerance:
                return mean.float()
    raise ValueError(f"the average w did not settle to {tolerance} within {most} codes; pass truncation=1")


# --- reading the files ----------------------------------------------------------------------------------
def read_network(path: str, family: str) -> tuple[torch.nn.Module, str, dict[str, torch.Tensor]]:
    """(network, format name, the generator's flat state in the file's layout) for ``path``.

    The format comes from the file's content, not its name: a pickle is read as NVlabs', a ``torch.save``
    file by its wrapper keys (``g_ema``: rosinality; ``generator_smooth``/``generator``: genforce).
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no checkpoint file {path}")
    if is_plain_pickle(path):
        return _read_nvlabs(path, family)
    checkpoint = load_checkpoint(path)
    if not isinstance(checkpoint, Mapping):
        raise CheckpointError(f"{path} is not a state dict (it holds a {type(checkpoint).__name__})")
    if "g_ema" in checkpoint:
        if family != "stylegan2":
            raise CheckpointError(f"{path} is a rosinality/stylegan2-pytorch checkpoint (g_ema): read it with "
                                  f"stylegan2:{path}")
        from engine.models import stylegan2
        state = _tensors(checkpoint["g_ema"], path, "g_ema")
        latent_avg = checkpoint.get("latent_avg")
        network = stylegan2.from_rosinality(state, latent_avg=latent_avg if isinstance(latent_avg, torch.Tensor)
                                            else None)
        return network, "rosinality", state
    for key in ("generator_smooth", "generator"):
        if isinstance(checkpoint.get(key), Mapping):
            state = _tensors(checkpoint[key], path, key)
            if family == "stylegan2":
                from engine.models import stylegan2
                return stylegan2.from_genforce(state), f"genforce ({key})", state
            if family == "stylegan":
                from engine.models import stylegan
                return stylegan.from_genforce(state), f"genforce ({key})", state
            raise CheckpointError(f"{path} is a genforce checkpoint; stylegan3 files are NVlabs pickles (.pkl)")
    raise CheckpointError(f"{path} is neither a rosinality checkpoint (g_ema) nor a genforce one "
                          f"(generator_smooth / generator); its keys are {', '.join(map(str, list(checkpoint)[:6]))}")


def _tensors(state: object, path: str, key: str) -> dict[str, torch.Tensor]:
    if not isinstance(state, Mapping):
        raise CheckpointError(f"{path}: its {key!r} entry is not a state dict")
    return {str(k).removeprefix("module."): v for k, v in state.items() if isinstance(v, torch.Tensor)}


def _read_nvlabs(path: str, family: str) -> tuple[torch.nn.Module, str, dict[str, torch.Tensor]]:
    from engine.models.nvlabs_pickle import read_generator

    record = read_generator(path)
    state = record.state_dict()
    kind = "stylegan3" if any(k.startswith("synthesis.input.") for k in state) else "stylegan2"
    if kind != family:
        raise CheckpointError(f"{path} holds a {kind.replace('stylegan', 'StyleGAN')} generator: read it with "
                              f"{kind}:{path}")
    if kind == "stylegan3":
        from engine.models import stylegan3 as module
    else:
        from engine.models import stylegan2 as module
    return module.from_nvlabs(dict(record.init_kwargs), state), f"nvlabs {kind} pickle", state


def _affines(state: Mapping[str, torch.Tensor], family: str, path: str) -> dict[str, torch.Tensor]:
    """The entries of the file's state that SeFa reads (kept in the file's layout, so ``--generator`` and
    ``--checkpoint`` factorize the same matrices), after checking they are there."""
    latent_weights(state, family, path=path)
    return {key: value for key, value in state.items()
            if key.endswith((".weight",)) and any(tag in key for tag in ("modulation", "affine", "style"))}


def load_style_generator(family: str, path: Any = None, *args: Any, truncation: float = 1.0,
                         truncation_cutoff: int | None = None, noise: str = "const",
                         **options: Any) -> StyleGenerator:
    """Build the ``family`` generator of the file at ``path`` with the SPEC's options (see the module doc)."""
    if args:
        raise ValueError(f"unexpected positional options {list(args)!r}: options are key=value after the path")
    if path is None or not str(path):
        raise ValueError(f"{family} needs a file: {family}:PATH[,truncation=0.7,...]")
    if "class" in options and "classes" in options:
        raise ValueError("give class=K or classes=K1;K2;..., not both")
    raw = options.pop("class", options.pop("classes", None))
    classes = "all" if raw == "all" else (None if raw is None else parse_classes(raw))
    if options:
        known = "truncation, truncation_cutoff, noise, class, classes"
        raise ValueError(f"unknown option(s) {', '.join(sorted(options))} (known: {known})")
    path = os.path.abspath(os.path.expanduser(str(path)))
    network, file_format, state = read_network(path, family)
    network = network.eval().requires_grad_(False)
    generator = StyleGenerator(network, family=family, file_format=file_format, path=path,
                               sha256=file_sha256(path), state_affines=_affines(state, family, path),
                               truncation=truncation, truncation_cutoff=truncation_cutoff, noise=noise,
                               classes=classes,
                               w_avg_source="file" if network.has_w_avg else "none")
    generator.spec = canonical_spec(family, path, truncation=generator.truncation,
                                    truncation_cutoff=truncation_cutoff, noise=noise, classes=raw)
    if generator.truncation != 1.0 and not network.has_w_avg:
        generator.estimate_w_avg_when_needed()
    return generator


def canonical_spec(family: str, path: str, *, truncation: float, truncation_cutoff: int | None, noise: str,
                   classes: Any) -> str:
    """The SPEC of this generator with the file's absolute path and only the options that differ from the
    defaults: what a store records, so that ``edit``, ``report`` and Dask workers find the same file anywhere."""
    options = [path]
    if truncation != 1.0:
        options.append(f"truncation={truncation!r}")
    if truncation_cutoff is not None:
        options.append(f"truncation_cutoff={truncation_cutoff}")
    if noise != "const":
        options.append(f"noise={noise}")
    if classes is not None:
        options.append(f"classes={classes}")
    return f"{family}:{','.join(options)}"


def stylegan2_generator(path: Any = None, *args: Any, **options: Any) -> StyleGenerator:
    """``stylegan2:PATH``: a rosinality ``.pt``, an NVlabs stylegan2-ada ``.pkl`` or a genforce ``.pth``."""
    return load_style_generator("stylegan2", path, *args, **options)


def stylegan3_generator(path: Any = None, *args: Any, **options: Any) -> StyleGenerator:
    """``stylegan3:PATH``: an NVlabs stylegan3 ``.pkl`` (configs T and R)."""
    return load_style_generator("stylegan3", path, *args, **options)


def stylegan_generator(path: Any = None, *args: Any, **options: Any) -> StyleGenerator:
    """``stylegan:PATH``: a genforce StyleGAN ``.pth`` (InterFaceGAN's / SeFa's)."""
    return load_style_generator("stylegan", path, *args, **options)
