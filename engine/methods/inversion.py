"""GAN inversion: real images in, codes out, as a chunked, resumable job (``latent-engine invert``).

Each image is projected the way StyleGAN2's projector (NVlabs stylegan2-ada-pytorch ``projector.py``) does it,
many images at once: the code starts from the average w (W, W+) or a drawn z (z), and Adam (β = 0.9, 0.999)
minimises the pixel MSE to the target, plus, with ``feature_loss``, ``feature_weight`` × the MSE between a
predictor's features of the two images. The learning rate warms up over the first ``LR_RAMPUP`` of the steps
and decays along a half cosine over the last ``LR_RAMPDOWN``; Gaussian noise of ``INITIAL_NOISE_FACTOR`` × the
codes' spread (``w_std``, the RMS distance of w from its average), decaying quadratically to 0 at
``NOISE_RAMP`` of the steps, is added to the code seen by the generator. ``restarts`` R > 1 optimises R
starts per image side by side (restart 0 from the average, the others from the w of drawn z codes) and keeps
the one of lowest objective.

The generator's noise inputs (StyleGAN, StyleGAN2) keep its own constant noise by default, so the code alone
re-generates the reconstruction. With ``optimize_noise`` (``--optimize-noise``) each image also gets its own noise
maps, one (1, r, r) per noise layer, optimised with its code as the projector does: moved by the same Adam,
penalised by ``noise_weight`` × the projector's regulariser (``noise_regularization``: the squared mean
autocorrelation at lag 1 along each axis, at every scale from r down to 8 by 2×2 average pooling, so the maps stay
white and cannot carry the image) and renormalised to mean 0 and variance 1 after every step. One thing differs
from the projector: the maps start at the generator's own noise (``stored_noise``), not at fresh N(0, 1) draws, so
optimisation starts where the default stays; on a random-weight StyleGAN2 this took the error on its own images
from 33 % of their variance to 6 % (own noise held: 3 %), and on real digits from 58 % to 51 % (own noise: 47 %).
It is not the default: at the projector's weight the regulariser holds the maps to white noise, which on
random-weight files reconstructed only images made with other noise better than the generator's own noise (by
3 %), its own images and real digits worse, at up to 10.7 MiB more per image at 1024² (benchmarks/README.md). The
maps are stored (``inversion/noise/<layer>``) and every command that renders the stored codes replays them
(``engine.noise_maps``); an edit moves the code and keeps its maps. Either way ``inversion/error`` is the error of
what the store holds.

Every image's result depends only on its own target, the seed, its chunk and the batch it was computed in
(Adam acts element by element on a sum of per-image losses), so a resumed run equals an uninterrupted one and
batching changes speed, not results, beyond the per-step noise that each batch draws from its own stream.
The average w is the file's where it has one, else estimated as the projector does, from ``W_AVG_SAMPLES``
seeded z draws through the mapping; which one is recorded, with its value and w_std, and a resume starts from
the recorded ones (an estimate on another device would differ in the last bits). A resume whose numerics
(device type, torch, thread count) differ from the creating run's is warned about, as ``sample`` does.

The store (schema 2): ``latents/<space>`` with source ``inverted``, ``inversion/error`` (n,) float32 (pixel MSE
of the reconstruction, images in [-1, 1]), ``inversion/files`` (n,) the rows' names, and with ``keep_images``
``inversion/targets`` (n, C, H, W) float32, each committed with its chunk as the sampler commits its chunks.
"""
from __future__ import annotations

import math
import os
import threading
import warnings
from collections import OrderedDict
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from typing import Any

import click
import numpy as np

from engine.cli.options import cluster_option, echo_json, echo_table, json_option
from engine.methods import Method

SPACES = ("w", "wp", "z")
LR_RAMPUP = 0.05
LR_RAMPDOWN = 0.25
INITIAL_NOISE_FACTOR = 0.05
NOISE_RAMP = 0.75
NOISE_WEIGHT = 1e5
W_AVG_SAMPLES = 10_000
#: Defaults that keep memory flat for large generators: a chunk's targets take at most this many bytes (the
#: executor holds a few chunks), and the default batch shrinks with the square of the resolution past 256
#: (activations and their gradients grow with the image).
CHUNK_BYTES = 256 << 20
MAX_CHUNK = 1024
BETAS = (0.9, 0.999)
SCHEDULE_RECIPE = (f"Adam{BETAS}; lr × min(1, t/{LR_RAMPUP}) × (0.5 − 0.5·cos(π·min(1, (1 − t)/{LR_RAMPDOWN}))), "
                   f"t = step/steps; code + N(0, I)·w_std·{INITIAL_NOISE_FACTOR}·max(0, 1 − t/{NOISE_RAMP})² "
                   "(NVlabs stylegan2-ada-pytorch projector.py)")
START_RECIPE = ("z = numpy PCG64(SeedSequence(seed, spawn_key=(4, chunk_index))).standard_normal((restarts, chunk, "
                "z_dim), float32)[:, :rows]; W/W+: restart 0 starts at the average w, restart r ≥ 1 at mapping_w(z[r]);"
                " z: restart r starts at z[r]")
STEP_NOISE_RECIPE = ("torch.Generator seeded SeedSequence(seed, spawn_key=(5, chunk_index, first row of the batch "
                     "in the chunk)).generate_state(1, uint64)[0] >> 1")
NOISE_MAPS_RECIPE = ("per image and noise layer: start at the generator's own noise (noise_const); Adam with the "
                     "code; loss + weight · Σ_layers Σ_scales [mean(n·roll(n, 1, x))² + mean(n·roll(n, 1, y))²], "
                     "scales r, r/2, ... down to 8 (2×2 average pooling); after each step n ← (n − mean n) / std n "
                     "(NVlabs stylegan2-ada-pytorch projector.py, which starts at "
                     "N(0, 1) draws instead)")
W_AVG_RECIPE = (f"the file's average w where it has one, else the mean of mapping_w(z) over {W_AVG_SAMPLES} z drawn as "
                "chunk 0 of the seed (engine.sampler.draw_codes); w_std = RMS of ‖w − w_avg‖ over those draws")


@dataclass(frozen=True)
class InversionSettings:
    """What decides an inversion's results (recorded in the store and compared on a resume)."""

    space: str = "w"
    steps: int = 1000
    lr: float = 0.1
    restarts: int = 1
    seed: int = 0
    feature_loss: str | None = None
    feature_weight: float = 1.0
    optimize_noise: bool = False
    noise_weight: float = NOISE_WEIGHT

    def __post_init__(self) -> None:
        from engine.store import check_positive_int

        if self.space not in SPACES:
            raise ValueError(f"space must be w, wp or z; got {self.space!r}")
        check_positive_int("steps", self.steps)
        check_positive_int("restarts", self.restarts)
        if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative integer; got {self.seed!r}")
        if not isinstance(self.optimize_noise, (bool, np.bool_)):
            raise ValueError(f"optimize_noise must be True or False; got {self.optimize_noise!r}")
        for name in ("lr", "feature_weight", "noise_weight"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                    or value < 0 or value == 0 and name != "noise_weight":
                kind = "a finite non-negative" if name == "noise_weight" else "a finite positive"
                raise ValueError(f"{name} must be {kind} number; got {value!r}")


def learning_rate(step: int, steps: int, lr: float) -> float:
    """The projector's schedule: linear warm-up over ``LR_RAMPUP``, half-cosine decay over ``LR_RAMPDOWN``."""
    t = step / steps
    ramp = min(1.0, (1.0 - t) / LR_RAMPDOWN)
    ramp = 0.5 - 0.5 * math.cos(ramp * math.pi)
    return lr * ramp * min(1.0, t / LR_RAMPUP)


def noise_scale(step: int, steps: int, spread: float) -> float:
    """The std of the noise added to the code at ``step``: ``INITIAL_NOISE_FACTOR`` × spread, to 0 at ``NOISE_RAMP``."""
    return spread * INITIAL_NOISE_FACTOR * max(0.0, 1.0 - step / steps / NOISE_RAMP) ** 2


def _stream_seed(seed: int, *key: int) -> int:
    return int(np.random.SeedSequence(seed, spawn_key=key).generate_state(1, np.uint64)[0] >> np.uint64(1))


def start_draws(seed: int, index: int, chunk: int, rows: int, restarts: int, z_dim: int) -> np.ndarray:
    """(restarts, rows, z_dim) z codes the restarts of chunk ``index`` start from (``START_RECIPE``)."""
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=(4, index))))
    return rng.standard_normal((restarts, chunk, z_dim), dtype=np.float32)[:, :rows]


def file_w_avg(G: Any) -> np.ndarray | None:
    """The average w a generator's file holds (StyleGAN-family files with one), else None."""
    network = getattr(G, "network", None)
    if network is None or not getattr(network, "has_w_avg", False):
        return None
    return network.w_avg.detach().float().cpu().numpy()


def latent_stats(G: Any, seed: int, device: Any, samples: int = W_AVG_SAMPLES) -> tuple[np.ndarray, float]:
    """(w_avg (w_dim,), w_std): the file's average w where it has one (``file_w_avg``), else the mean of
    ``samples`` mapped seeded draws; w_std is the draws' RMS distance from that average."""
    import torch

    from engine.models.base import map_codes, mapped_w
    from engine.sampler import draw_codes

    z = draw_codes(seed, 0, samples, G.z_dim)
    ws = []
    with torch.inference_mode():
        for start in range(0, samples, 1000):
            zb = torch.from_numpy(z[start:start + 1000]).to(device)
            ws.append(mapped_w(G, zb, map_codes(G, zb)).double().cpu().numpy())
    w = np.concatenate(ws)
    w_avg = file_w_avg(G)
    w_avg = w.mean(axis=0) if w_avg is None else w_avg.astype(np.float64)
    return w_avg.astype(np.float32), float(np.sqrt(((w - w_avg) ** 2).sum(axis=1).mean()))


def noise_regularization(maps: Sequence[Any]) -> Any:
    """(B,) the projector's noise regulariser of each image's maps ((B, 1, r, r) each): Σ over maps and scales of
    the squared mean products of the map with itself shifted by one pixel (wrapping) along x and along y; the
    scales halve the map by 2×2 average pooling until it is 8 pixels or less. 0 for white noise in expectation,
    large when a map has structure (what would let it paint the image instead of the code)."""
    import torch.nn.functional as F

    total = 0
    for noise in maps:
        while True:
            total = total + (noise * noise.roll(1, dims=3)).mean(dim=(1, 2, 3)).square() \
                + (noise * noise.roll(1, dims=2)).mean(dim=(1, 2, 3)).square()
            if noise.shape[2] <= 8:
                break
            noise = F.avg_pool2d(noise, kernel_size=2)
    return total


def normalize_noise_(maps: Sequence[Any]) -> None:
    """Renormalise each image's map in place to mean 0 and mean square 1 (the projector's step)."""
    for noise in maps:
        noise.sub_(noise.mean(dim=(1, 2, 3), keepdim=True))
        noise.mul_(noise.square().mean(dim=(1, 2, 3), keepdim=True).rsqrt())


def feature_function(P: Any) -> Callable[[Any], Any]:
    """What the feature loss compares: a predictor's ``features(images)`` where it has them, else its outputs."""
    features = getattr(P, "features", None)
    return features if callable(features) else P


class Inverter:
    """Inverts chunks of targets with one generator (and feature predictor) on one device, batch by batch."""

    def __init__(self, G: Any, settings: InversionSettings, device: Any, batch: int, predictor: Any = None,
                 stats: tuple[np.ndarray, float] | None = None) -> None:
        from engine.models.base import noise_inputs

        self.G, self.settings, self.device, self.batch = G, settings, device, int(batch)
        self.features = None if predictor is None else feature_function(predictor)
        #: (layer, r) of the noise maps optimised per image: the generator's noise inputs, if asked for.
        self.noise_layers = noise_inputs(G) if settings.optimize_noise else ()
        #: Called with "batch i/n, step s/S" as the optimisation goes (a progress bar's postfix), or None.
        self.on_step: Callable[[str], None] | None = None
        if settings.space == "z":
            self.w_avg, self.spread = None, float(math.sqrt(G.z_dim))
        else:
            self.w_avg, self.spread = stats if stats is not None else latent_stats(G, settings.seed, device)

    # ------------------------------------------------------------------ codes
    def starts(self, index: int, chunk: int, rows: int) -> np.ndarray:
        """(restarts, rows, *code shape) starting codes of chunk ``index``."""
        import torch

        from engine.models.base import map_codes, mapped_w

        s = self.settings
        z = start_draws(s.seed, index, chunk, rows, s.restarts, self.G.z_dim)
        if s.space == "z":
            return z
        w = np.empty((s.restarts, rows, self.G.w_dim), np.float32)
        w[0] = self.w_avg
        with torch.inference_mode():
            for r in range(1, s.restarts):
                zr = torch.from_numpy(np.ascontiguousarray(z[r])).to(self.device)
                w[r] = mapped_w(self.G, zr, map_codes(self.G, zr)).float().cpu().numpy()
        if s.space == "w":
            return w
        with torch.inference_mode():
            per_layer = self._per_layer(torch.from_numpy(w.reshape(-1, self.G.w_dim)).to(self.device))
        return per_layer.float().cpu().numpy().reshape(s.restarts, rows, self.G.num_ws, self.G.w_dim)

    def _per_layer(self, w: Any) -> Any:
        from engine.spaces import LatentSpace, synthesis_input

        return synthesis_input(self.G, w, LatentSpace("w"))

    def start_noise(self) -> list[Any]:
        """(1, 1, r, r) per ``noise_layers`` entry: where every image's maps start, the generator's own noise
        (``stored_noise``), so that step 0 renders what the generator's own noise renders."""
        return self.G.stored_noise() if self.noise_layers else []

    def render(self, codes: Any, noise_maps: list[Any] | None = None) -> Any:
        """Images of (B, *code shape) codes of the settings' space (with per-image ``noise_maps`` if given)."""
        from engine.models.base import map_codes, synthesize

        if self.settings.space == "z":
            ws = map_codes(self.G, codes)
        elif self.settings.space == "w":
            ws = self._per_layer(codes)
        else:
            ws = codes
        return synthesize(self.G, ws, noise_maps=noise_maps or None)

    # ------------------------------------------------------------------ losses
    def losses(self, images: Any, targets: Any, target_features: Any) -> tuple[Any, Any]:
        """(objective, pixel MSE), each (B,): the pixel MSE plus the weighted feature MSE."""
        pixel = (images - targets).square().flatten(1).mean(dim=1)
        if self.features is None:
            return pixel, pixel
        feature = (self.features(images) - target_features).square().flatten(1).mean(dim=1)
        return pixel + self.settings.feature_weight * feature, pixel

    # ------------------------------------------------------------------ optimisation
    def __call__(self, targets: np.ndarray, index: int, chunk: int) -> dict[str, Any]:
        """Targets (rows, C, H, W) of chunk ``index`` -> {"codes", "error" (rows,), "noise": one (rows, 1, r, r)
        array per ``noise_layers`` entry}."""
        rows = targets.shape[0]
        starts = self.starts(index, chunk, rows)
        codes = np.empty(starts.shape[1:], np.float32)
        error = np.empty(rows, np.float32)
        noise = [np.empty((rows, 1, r, r), np.float32) for _, r in self.noise_layers]
        batches = -(-rows // self.batch)
        for start in range(0, rows, self.batch):
            stop = min(start + self.batch, rows)
            seed = _stream_seed(self.settings.seed, 5, index, start)
            self._batch_label = f"chunk {index}, batch {start // self.batch + 1}/{batches}"
            codes[start:stop], error[start:stop], maps = self.invert_batch(targets[start:stop],
                                                                           starts[:, start:stop], seed)
            for out, values in zip(noise, maps):
                out[start:stop] = values
        return {"codes": codes, "error": error, "noise": noise}

    def invert_batch(self, targets: np.ndarray, starts: np.ndarray,
                     seed: int) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
        """One batch: (b, C, H, W) targets, (R, b, *shape) starts -> best codes (b, *shape), pixel MSE (b,), and
        their noise maps (b, 1, r, r) per ``noise_layers`` entry."""
        import torch

        s = self.settings
        restarts, b = starts.shape[:2]
        target = torch.from_numpy(np.ascontiguousarray(targets, np.float32)).to(self.device)
        target = target.repeat(restarts, *([1] * (target.ndim - 1)))               # restart-major rows
        x = torch.from_numpy(np.ascontiguousarray(starts.reshape(restarts * b, *starts.shape[2:]))).to(
            self.device).requires_grad_(True)
        stream = torch.Generator(device=self.device).manual_seed(seed)
        maps = [m.to(self.device).repeat(restarts * b, 1, 1, 1).requires_grad_(True) for m in self.start_noise()]
        optimizer = torch.optim.Adam([x, *maps], lr=s.lr, betas=BETAS)
        with torch.enable_grad():
            target_features = None
            if self.features is not None:
                with torch.no_grad():
                    target_features = self.features(target)
            report_every = max(1, s.steps // 20)
            for step in range(s.steps):
                if self.on_step is not None and step % report_every == 0:
                    self.on_step(f"{getattr(self, '_batch_label', 'batch')}, step {step}/{s.steps}")
                for group in optimizer.param_groups:
                    group["lr"] = learning_rate(step, s.steps, s.lr)
                scale = noise_scale(step, s.steps, self.spread)
                seen = x + torch.randn(x.shape, generator=stream, device=self.device) * scale if scale > 0 else x
                objective, _ = self.losses(self.render(seen, maps), target, target_features)
                if maps:
                    objective = objective + s.noise_weight * noise_regularization(maps)
                optimizer.zero_grad(set_to_none=True)
                objective.sum().backward()
                optimizer.step()
                if maps:
                    with torch.no_grad():
                        normalize_noise_(maps)
        with torch.no_grad():
            objective, pixel = self.losses(self.render(x, maps), target, target_features)
        best = objective.reshape(restarts, b).argmin(dim=0)
        pick = best * b + torch.arange(b, device=best.device)
        return (x.detach()[pick].float().cpu().numpy(), pixel[pick].float().cpu().numpy(),
                [m.detach()[pick].float().cpu().numpy() for m in maps])


# ---------------------------------------------------------------------------------------------- the job
@dataclass(frozen=True)
class InverterSpecs:
    """The models of an inversion as plain values, built where the job runs (Dask workers) and cached."""

    generator: str
    settings: InversionSettings
    device: str
    batch: int
    w_avg: tuple[float, ...] | None = None
    spread: float | None = None


_MODELS: "OrderedDict[InverterSpecs, Inverter]" = OrderedDict()
_MODELS_LOCK = threading.Lock()


def _built(specs: InverterSpecs) -> Inverter:
    """This process's Inverter for ``specs``, built on first use and kept for the next chunks."""
    from engine.devices import resolve_device
    from engine.models.registry import load_generator, load_predictor

    with _MODELS_LOCK:
        if specs not in _MODELS:
            device = resolve_device(specs.device)
            G = load_generator(specs.generator, device)
            P = load_predictor(specs.settings.feature_loss, G, device) if specs.settings.feature_loss else None
            stats = None if specs.w_avg is None else (np.asarray(specs.w_avg, np.float32), float(specs.spread))
            _MODELS[specs] = Inverter(G, specs.settings, device, specs.batch, P, stats)
            while len(_MODELS) > 2:
                _MODELS.popitem(last=False)
        _MODELS.move_to_end(specs)
        return _MODELS[specs]


@dataclass
class InversionJob:
    """Inversion as a chunked job (``engine.runtime.ChunkJob``): read the chunk's images, invert, commit.

    Give ``inverter`` (models built, in-process runs) or ``models`` (SPECs, built where the job runs).
    """

    images: Any                                 # engine.images.ImageSource
    space: str
    resolution: int
    channels: int
    keep_images: bool = False
    noise_layers: tuple[tuple[str, int], ...] = ()     # the maps each row gets (``Inverter.noise_layers``)
    models: InverterSpecs | None = None
    inverter: Inverter | None = field(default=None, compare=False)

    def read(self, store: Any, index: int) -> tuple[int, int, np.ndarray]:
        return index, store.chunk, self.images.read(store.chunk_rows(index), self.resolution, self.channels)

    def compute(self, inputs: tuple[int, int, np.ndarray]) -> dict[str, np.ndarray]:
        index, chunk, targets = inputs
        out = (self.inverter or _built(self.models))(targets, index, chunk)
        if len(out["noise"]) != len(self.noise_layers):
            raise RuntimeError(f"chunk {index}: the inverter made {len(out['noise'])} noise maps per image, the store "
                               f"expects {len(self.noise_layers)} ({', '.join(n for n, _ in self.noise_layers)})")
        return {f"latents/{self.space}": out["codes"], "inversion/error": out["error"], "targets": targets,
                **{f"inversion/noise/{name}": values for (name, _), values in zip(self.noise_layers, out["noise"])}}

    def write(self, store: Any, index: int, outputs: dict[str, np.ndarray]) -> dict[str, int]:
        rows = store.chunk_rows(index)
        arrays = {f"latents/{self.space}": outputs[f"latents/{self.space}"],
                  "inversion/error": outputs["inversion/error"],
                  "inversion/files": np.array(self.images.names[rows], dtype=str)}
        if self.keep_images:
            arrays["inversion/targets"] = outputs["targets"]
        for name, _ in self.noise_layers:
            arrays[f"inversion/noise/{name}"] = outputs[f"inversion/noise/{name}"]
        store.write_chunk(index, arrays)
        return {"rows": rows.stop - rows.start}


# ---------------------------------------------------------------------------------------------- the store
def image_shape(G: Any, device: Any) -> tuple[int, int, int]:
    """(C, H, W) of the generator's images (one synthesis of the first drawn code)."""
    import torch

    from engine.models.base import map_codes, synthesize
    from engine.sampler import draw_codes

    with torch.inference_mode():
        z = torch.from_numpy(draw_codes(0, 0, 1, G.z_dim)).to(device)
        shape = tuple(int(v) for v in synthesize(G, map_codes(G, z)).shape[1:])
    if len(shape) != 3 or shape[1] != shape[2]:
        raise ValueError(f"generator {getattr(G, 'spec', G)!r} makes images of shape {shape}; invert takes "
                         "square (C, H, W) images")
    return shape


def default_sizes(shape: tuple[int, int, int], device: Any, batch: int | None,
                  chunk: int | None, noise_layers: Sequence[tuple[str, int]] = ()) -> tuple[int, int]:
    """(batch, chunk) where not given: the device's default batch (``engine.devices``) scaled by (256 / H)² past
    256 pixels and capped so that its targets and noise maps fit ``CHUNK_BYTES``, and chunks of at most
    ``MAX_CHUNK`` rows that fit it too, never below a batch."""
    from engine.devices import default_batch

    row = int(np.prod(shape)) + sum(r * r for _, r in noise_layers)
    if batch is None:
        batch = max(1, int(default_batch(device) * min(1.0, (256 / shape[1]) ** 2)))
        batch = max(1, min(batch, CHUNK_BYTES // (4 * row)))     # a chunk holds at least a batch
    if chunk is None:
        chunk = max(batch, min(MAX_CHUNK, CHUNK_BYTES // (4 * row)))
    return int(batch), int(chunk)


def noise_record(G: Any, settings: InversionSettings) -> str | dict[str, Any]:
    """What the run did with the generator's noise inputs, as recorded in the store."""
    from engine.models.base import noise_inputs

    layers = noise_inputs(G)
    if not layers:
        if getattr(G, "noise", None) == "none":
            return "none (the generator's noise is switched off: noise=none)"
        return "none (the generator has no noise inputs)"
    if not settings.optimize_noise:
        return "the generator's own (held fixed)"
    return {"optimised": True, "layers": [[name, res] for name, res in layers], "weight": settings.noise_weight,
            "recipe": NOISE_MAPS_RECIPE, "stored": "inversion/noise/<layer>"}


def _record(G: Any, source: Any, settings: InversionSettings, shape: tuple[int, int, int], keep_images: bool,
            stats: tuple[np.ndarray, float] | None) -> dict[str, Any]:
    from engine.sampler import _spec_of

    inversion = {"settings": asdict(settings), "schedule": SCHEDULE_RECIPE, "starts": START_RECIPE,
                 "step_noise": STEP_NOISE_RECIPE, "images": source.description, "image_shape": list(shape),
                 "keep_images": bool(keep_images), "noise_inputs": noise_record(G, settings)}
    if stats is not None:
        inversion["w_avg"] = {"source": "the generator's file" if file_w_avg(G) is not None else "estimated",
                              "recipe": W_AVG_RECIPE, "seed": settings.seed, "w_std": stats[1],
                              "value": [float(v) for v in stats[0]]}
    record: dict[str, Any] = {"seed": settings.seed, "generator": _spec_of(G), "predictors": [],
                              "inversion": inversion}
    provenance = getattr(G, "provenance", None)
    if provenance:
        record["generator_file"] = dict(provenance)
    return record


#: What stores inverted before a setting existed did (to compare their settings with a resume's).
LEGACY_SETTINGS = {"optimize_noise": False, "noise_weight": NOISE_WEIGHT}


def _check_resumable(path: str, store: Any, record: dict[str, Any], n: int, chunk: int, has_noise: bool) -> None:
    from engine.store import StoreError

    meta = store.meta
    if not isinstance(meta.get("inversion"), dict):
        raise StoreError(f"cannot resume {path}: it is not an inverted store")
    if (record.get("generator_file") or {}).get("sha256") != (meta.get("generator_file") or {}).get("sha256"):
        raise StoreError(f"cannot resume {path}: the generator file is not the one it was inverted with")
    then, now = meta["inversion"], record["inversion"]
    stored_settings = _compared_settings(then.get("settings") or {}, has_noise)
    asked_settings = _compared_settings(now["settings"], has_noise)
    for key in dict.fromkeys([*asked_settings, *stored_settings]):         # the settings' own order
        stored, asked = stored_settings.get(key), asked_settings.get(key)
        if stored != asked:
            flag = f" ({SETTING_FLAGS[key]})" if key in SETTING_FLAGS else ""
            raise StoreError(f"cannot resume {path}: it was inverted with {key}={stored!r}{flag}, this run asks for "
                             f"{asked!r}")
    if then.get("images") != now["images"]:
        raise StoreError(f"cannot resume {path}: it was inverted from {_images_text(then.get('images'))}, this run "
                         f"gives {_images_text(now['images'])} ({_differences(then.get('images'), now['images'])})")
    checks = {"n": (meta.get("n"), n, "images"), "chunk": (meta.get("chunk"), chunk, "--chunk"),
              "generator": (meta.get("generator"), record["generator"], "--generator"),
              "keep_images": (then.get("keep_images"), now["keep_images"], "--keep-images")}
    for key, (stored, asked, flag) in checks.items():
        if stored != asked:
            raise StoreError(f"cannot resume {path}: it was inverted with {key}={stored!r} ({flag}), this run asks "
                             f"for {asked!r}")


def _differences(then: Any, now: Any) -> str:
    """'layout nchw -> nhwc; values uint8 -> unit': the fields of two image records that differ."""
    if not (isinstance(then, dict) and isinstance(now, dict)):
        return "another record"
    return "; ".join(f"{key} {then.get(key)!r} -> {now.get(key)!r}" for key in dict.fromkeys([*then, *now])
                     if then.get(key) != now.get(key))


def _images_text(images: Any) -> str:
    """A store's record of its images (``ImageSource.description``) in a few words."""
    if not isinstance(images, dict):
        return repr(images)
    if images.get("kind") == "array":
        return f"{images.get('path')} ({images.get('count')} images)"
    return f"{images.get('count')} image files ({images.get('first')} … {images.get('last')})"


#: The command-line flag of each setting, for the resume's error.
SETTING_FLAGS = {"space": "--space", "steps": "--steps", "lr": "--lr", "restarts": "--restarts", "seed": "--seed",
                 "feature_loss": "--feature-loss", "feature_weight": "--feature-weight",
                 "optimize_noise": "--optimize-noise", "noise_weight": "--noise-weight"}


def _compared_settings(settings: dict[str, Any], has_noise: bool) -> dict[str, Any]:
    """The settings that decide a run's results: those of the noise maps only where the generator has noise
    inputs and they are optimised (stores made before a setting existed did what ``LEGACY_SETTINGS`` says)."""
    out = {**LEGACY_SETTINGS, **settings}
    if not (has_noise and out["optimize_noise"]):
        out.pop("noise_weight")
    if not has_noise:
        out.pop("optimize_noise")
    return out


def start_stats(path: str, G: Any, settings: InversionSettings, device: Any,
                resume: bool) -> tuple[np.ndarray, float] | None:
    """(w_avg, w_std) the starts use: on ``resume``, those the store recorded at its creation (an estimate on
    another device differs in the last bits, and so would every resumed start); else ``latent_stats``.
    None in z."""
    from engine.store import Store, exists

    if settings.space == "z":
        return None
    if resume and exists(path):
        recorded = ((Store.open(path).meta.get("inversion") or {}).get("w_avg") or {})
        if recorded.get("value") is not None:
            return np.asarray(recorded["value"], np.float32), float(recorded["w_std"])
        warnings.warn(f"{path} does not record the average w its starts used: it is estimated again on {device}, "
                      "so the resumed chunks may start from a w that differs in the last float bits", stacklevel=3)
    return latent_stats(G, settings.seed, device)


def _warn_if_numerics_differ(path: str, stored: dict[str, Any], now: dict[str, Any]) -> None:
    changed = [f"{key} {stored[key]!r} -> {now[key]!r}" for key in now if key in stored and stored[key] != now[key]]
    if changed:
        warnings.warn(f"{path}: this resume differs from the run that created it ({'; '.join(changed)}): the codes "
                      "and errors of the resumed chunks may differ from an uninterrupted run's in the last float bits "
                      "(more, after many steps)", stacklevel=3)


def run_numerics(batch: int, device: Any, request: Any, requested_device: Any) -> tuple[str, dict[str, Any]]:
    """(device, numerics) of the run as recorded: ``device``'s in process; on a cluster, the workers' device
    (``auto`` on workers elsewhere stays ``auto``: each resolves its own)."""
    from engine.sampler import _worker_device, numerics

    if request is None:
        return str(device), numerics(batch, device)
    worker = _worker_device(request, requested_device)
    if worker == "auto" and request.kind == "local":
        from engine.devices import resolve_device

        worker = str(resolve_device("auto"))           # local workers resolve it on this machine
    return worker, {**numerics(batch, device, True), "device_type": worker.split(":")[0]}


def optimized_noise_layers(G: Any, settings: InversionSettings) -> tuple[tuple[str, int], ...]:
    """(layer, r) of the noise maps a run optimises and stores per image (none without ``optimize_noise``)."""
    from engine.models.base import noise_inputs

    return noise_inputs(G) if settings.optimize_noise else ()


def prepare_inverted_store(path: str, G: Any, source: Any, settings: InversionSettings, *, chunk: int,
                           shape: tuple[int, int, int], keep_images: bool, stats: tuple[np.ndarray, float] | None,
                           resume: bool, overwrite: bool, numerics: dict[str, Any]) -> Any:
    """Create the inverted store (schema 2), or reopen it for ``resume`` after checking it is the same run."""
    from engine.models.base import noise_inputs
    from engine.sampler import check_overwritable
    from engine.store import Store, exists, warn_repairs

    record = _record(G, source, settings, shape, keep_images, stats)
    if resume and exists(path):
        store = Store.open(path, mode="r+")
        _check_resumable(path, store, record, source.n, chunk, bool(noise_inputs(G)))
        warn_repairs(path, store.recover())
        return store
    if overwrite:
        check_overwritable(path)
    space = settings.space
    latent_source = {"kind": "inverted", "source": "inverted", "generator": record["generator"],
                     "images": source.description, "seed": settings.seed, "steps": settings.steps,
                     "restarts": settings.restarts, "feature_loss": settings.feature_loss,
                     "noise_maps": [name for name, _ in optimized_noise_layers(G, settings)] or None}
    return Store.create(path, n=source.n, chunk=chunk, z_dim=G.z_dim if space == "z" else None,
                        w_dim=G.w_dim if space != "z" else None, num_ws=G.num_ws if space == "wp" else None,
                        spaces=[space], meta={**record, "numerics": numerics}, sources={space: latent_source},
                        overwrite=overwrite,
                        fill=lambda created: created.add_inversion_arrays(shape if keep_images else None,
                                                                          optimized_noise_layers(G, settings)))


def invert(images: str | os.PathLike, store: str | os.PathLike, generator: Any, *, space: str = "w",
           steps: int = 1000, lr: float = 0.1, restarts: int = 1, batch: int | None = None, chunk: int | None = None,
           feature_loss: str | None = None, feature_weight: float = 1.0, optimize_noise: bool = False,
           noise_weight: float = NOISE_WEIGHT, keep_images: bool = False, seed: int = 0,
           device: Any = "auto", resume: bool = False, overwrite: bool = False, progress: bool = True,
           workers: int | None = None, scheduler: str | None = None,
           gpus: str | Sequence[int] | None = None, cluster: str | os.PathLike | None = None) -> Any:
    """Invert ``images`` (a folder, glob or ``.npy``; see ``engine.images``) into the store at ``store``.

    Each image becomes one row of ``latents/<space>`` (``space`` w, wp or z): the code whose image under
    ``generator`` (a SPEC, or a model with ``w_dim``/``num_ws``; a SPEC is needed on a cluster) is closest to it
    after ``steps`` Adam steps from ``restarts`` starts (see the module docstring). ``feature_loss`` (a
    predictor SPEC) adds ``feature_weight`` × the MSE of its features. With ``optimize_noise``, a generator with
    noise inputs gets per-image noise maps optimised beside each code under ``noise_weight`` × the projector's
    regulariser, and stored (by default it keeps its own noise). Chunks of ``chunk`` rows are inverted in
    batches of ``batch`` (defaults: ``default_sizes``) and committed one by one: ``resume`` redoes exactly the
    uncommitted ones, ``workers`` / ``scheduler`` / ``gpus`` / ``cluster`` (a cluster file,
    ``engine.cluster_config``) spread them over a Dask cluster, whose client builds its models on the CPU only
    (the workers build their own where they run). Every input is
    checked before anything is written. Returns the store, opened read-only.
    """
    from engine.devices import resolve_device
    from engine.distributed import cluster_client, validate_cluster_flags
    from engine.images import open_images
    from engine.lock import StoreLock
    from engine.models.base import conditional, noise_inputs
    from engine.models.registry import load_generator, load_predictor
    from engine.progress import progress_bar
    from engine.runtime import run_in_process, run_on_dask
    from engine.sampler import _spec_of, _worker_device
    from engine.store import Store, StoreError, check_chunk_count, check_positive_int, check_writable, exists

    settings = InversionSettings(space, steps, lr, restarts, seed, feature_loss, feature_weight, optimize_noise,
                                 noise_weight)
    for name, value in (("chunk", chunk), ("batch", batch)):
        if value is not None:
            check_positive_int(name, value)
    if resume and overwrite:
        raise ValueError("resume and overwrite exclude each other")
    distributed = any(v is not None for v in (workers, scheduler, gpus, cluster))
    request = None
    if distributed:
        request = validate_cluster_flags(workers, scheduler, gpus, cluster)
        if not isinstance(generator, str):
            raise ValueError("distributed inversion builds the models on each worker: pass a generator SPEC")
    path = str(store)
    check_writable(path)
    if exists(path) and not (resume or overwrite):
        raise StoreError(f"{path} already exists; pass --resume to continue it or --overwrite to replace it")
    source = open_images(images)
    dev = resolve_device("cpu" if distributed else device)      # a cluster's client checks; workers compute
    requested_batch = batch
    G = load_generator(generator, dev) if isinstance(generator, str) else generator
    if conditional(G):
        raise ValueError(f"generator {_spec_of(G)!r} is class-conditional; invert takes unconditional generators")
    if getattr(G, "noise", None) == "random" and not (optimize_noise and noise_inputs(G)):
        raise ValueError(f"generator {_spec_of(G)!r} draws random noise: its images are not a function of the code, "
                         "so no code reproduces a target; invert with noise=const, or optimise noise maps "
                         "(--optimize-noise), which replace all of its noise")
    if optimize_noise and not noise_inputs(G):
        warnings.warn(f"generator {_spec_of(G)!r} has no noise inputs (or noise=none): optimize_noise changes nothing",
                      stacklevel=2)
    elif noise_weight != NOISE_WEIGHT and not optimize_noise:
        warnings.warn("noise_weight weighs the regulariser of optimised noise maps: without optimize_noise "
                      "(--optimize-noise) it changes nothing", stacklevel=2)
    if space != "z" and not G.has_mapping:
        raise ValueError(f"generator {_spec_of(G)!r} has no mapping network: invert it with space='z' (--space z)")
    P = load_predictor(feature_loss, G, dev) if feature_loss else None
    shape = image_shape(G, dev)
    if resume and chunk is None and exists(path):
        chunk = Store.open(path).chunk                 # a resume continues in the run's own chunks
    on_gpus = request is not None and request.kind == "cuda"
    noise_layers = optimized_noise_layers(G, settings)
    batch, chunk = default_sizes(shape, "cuda" if on_gpus else resolve_device(device), batch, chunk, noise_layers)
    chunk = min(chunk, source.n)
    check_chunk_count(source.n, chunk)
    stats = start_stats(path, G, settings, dev, resume)
    with StoreLock(path, purpose="invert"), \
            (cluster_client(workers, scheduler, gpus, request.config) if distributed else nullcontext()) as handle:
        target = prepare_inverted_store(path, G, source, settings, chunk=chunk, shape=shape, keep_images=keep_images,
                                        stats=stats, resume=resume, overwrite=overwrite,
                                        numerics=run_numerics(batch, dev, request, device)[1])
        batch = _resumed_batch(path, target.meta, requested_batch, batch)
        run_device, now = run_numerics(batch, dev, request, device)
        if resume:
            _warn_if_numerics_differ(path, target.meta.get("numerics") or {}, now)
        pending = target.pending_chunks()
        done = source.n - sum(target.chunk_rows(i).stop - target.chunk_rows(i).start for i in pending)
        common = dict(images=source, space=space, resolution=shape[1], channels=shape[0], keep_images=keep_images,
                      noise_layers=noise_layers)
        with progress_bar(total=source.n, initial=done, desc="invert", unit="images", enabled=progress) as bar:
            if distributed:
                specs = InverterSpecs(_spec_of(G), settings, _worker_device(handle.request, device), int(batch),
                                      None if stats is None else tuple(float(v) for v in stats[0]),
                                      None if stats is None else stats[1])
                run = run_on_dask(InversionJob(**common, models=specs), target.path, pending, handle,
                                  on_chunk=lambda i, rows: bar.update(rows))
            else:
                inverter = Inverter(G, settings, dev, batch, P, stats)
                inverter.on_step = lambda text: bar.set_postfix_str(text, refresh=True)
                job = InversionJob(**common, inverter=inverter)
                run = run_in_process(job, target, pending, on_chunk=lambda i, rows: bar.update(rows))
        if run.rows:
            target.update_meta(device=run_device, batch=int(batch), images_per_s=round(run.samples_per_s, 3))
    return _opened(path)


def _resumed_batch(path: str, meta: dict[str, Any], requested: int | None, batch: int) -> int:
    """The batch a run computes in: a resume keeps the run's own (each batch draws its own step noise, so
    another batch would change the resumed rows' codes) and refuses another one."""
    from engine.store import StoreError

    stored = (meta.get("numerics") or {}).get("batch")
    if not stored:
        return batch
    if requested is not None and int(requested) != int(stored):
        raise StoreError(f"cannot resume {path}: it was inverted with batch {stored} (each batch draws its own step "
                         "noise); resume with that batch, or without one")
    return int(stored)


def _opened(path: str) -> Any:
    from engine.store import Store

    return Store.open(path)


def error_summary(store: Any) -> dict[str, Any]:
    """Statistics of ``inversion/error`` over the committed rows (``engine.summary.inversion_error_stats``)."""
    from engine.summary import inversion_error_stats

    return inversion_error_stats(store)


__all__ = ["InversionJob", "InversionSettings", "Inverter", "error_summary", "invert", "learning_rate",
           "noise_regularization", "noise_scale", "normalize_noise_"]


# ---------------------------------------------------------------------------------------------- command line
@click.command("invert", epilog="""\b
Examples:
  latent-engine invert photos/ photos.zarr --generator stylegan2:ffhq.pkl --space wp --steps 1000
  latent-engine invert photos/ photos.zarr -g stylegan2:ffhq.pkl --space w --optimize-noise   # + per-image noise maps
  latent-engine invert 'shots/*.png' shots.zarr -g stylegan2:ffhq.pkl --feature-loss mypkg.nets:vgg --keep-images
  latent-engine invert digits.npy inv.zarr --generator digits --space w --steps 300 --restarts 4 --keep-images
  latent-engine invert digits.npy inv.zarr --generator digits --space w --steps 300 --restarts 4 --keep-images --resume
  latent-engine invert photos/ photos.zarr -g stylegan2:ffhq.pkl --gpus 0,1
  latent-engine edit inv.zarr --direction-from demo.zarr --direction interfacegan/digit_3@w --stored --out 3.png
\b
IMAGES: a folder of PNG/JPEG files, a glob of them, or a .npy array (n, C, H, W), (n, H, W) or (n, H, W, C)
(integers 0..255, uint16 0..65535, or floats in [-1, 1]); centre-cropped, resized to the generator's resolution
and channels.
""")
@click.argument("images")
@click.argument("store")
@click.option("--generator", "-g", required=True, help="Generator SPEC (as for sample).")
@click.option("--space", type=click.Choice(list(SPACES)), default="w", show_default=True,
              help="Space of the codes: w (one w for every layer), wp (W+: one per layer) or z.")
@click.option("--steps", type=int, default=1000, show_default=True, help="Adam steps per image.")
@click.option("--lr", type=float, default=0.1, show_default=True, help="Peak learning rate (warm-up, cosine decay).")
@click.option("--restarts", type=int, default=1, show_default=True,
              help="Starts per image (the average w, then seeded draws); the best is kept.")
@click.option("--batch", type=int, default=None, show_default=False,
              help="Images optimised at once [default: 64 on CPU, 256 on CUDA, times (256/resolution)² past 256 "
                   "pixels; on --resume, the run's own].")
@click.option("--chunk", type=int, default=None, show_default=False,
              help="Rows per chunk, the unit of work and resumption [default: up to 1024, targets ≤ 256 MiB].")
@click.option("--feature-loss", default=None, help="Predictor SPEC whose features (or outputs) are matched too.")
@click.option("--feature-weight", type=float, default=1.0, show_default=True, help="Weight of the feature loss.")
@click.option("--optimize-noise", is_flag=True,
              help="Optimise per-image noise maps with the code, as StyleGAN2's projector does (StyleGAN, StyleGAN2); "
                   "they are stored and replayed. Default: the generator's own noise, so the code alone re-generates "
                   "the reconstruction.")
@click.option("--noise-weight", type=float, default=NOISE_WEIGHT, show_default=True,
              help="With --optimize-noise: weight of the maps' regulariser (their autocorrelation), as in StyleGAN2's "
                   "projector; lower lets the maps paint the image, 0 switches it off.")
@click.option("--keep-images", is_flag=True, help="Store each target, resized, in inversion/targets.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the restarts, step noise and average w.")
@click.option("--device", default="auto", help="auto, cpu, cuda or cuda:<index>.")
@click.option("--workers", type=int, default=None, help="Spread chunks over a local Dask cluster of this many processes.")
@click.option("--scheduler", default=None, help="Address of an existing Dask scheduler (tcp://host:8786).")
@click.option("--gpus", default=None, help="Comma-separated GPU indices: one Dask worker per GPU.")
@cluster_option
@click.option("--resume", is_flag=True, help="Continue an interrupted run: redo exactly the uncommitted chunks.")
@click.option("--overwrite", is_flag=True, help="Replace an existing store.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@json_option
def invert_command(images: str, store: str, generator: str, space: str, steps: int, lr: float, restarts: int,
                   batch: int | None, chunk: int | None, feature_loss: str | None, feature_weight: float,
                   optimize_noise: bool, noise_weight: float, keep_images: bool,
                   seed: int, device: str, workers: int | None, scheduler: str | None, gpus: str | None,
                   cluster: str | None, resume: bool, overwrite: bool, quiet: bool, as_json: bool) -> None:
    """Invert images into a generator's latent space: one stored code per image, with its reconstruction error.

    The store holds latents/<space> (source "inverted"), inversion/error (pixel MSE, images in [-1, 1]),
    inversion/files and, for generators with noise inputs, each image's optimised noise maps
    (inversion/noise/<layer>, replayed by edit, report and explore); edit it with directions of a sampled
    store of the same generator (edit --direction-from).
    """
    result = invert(images, store, generator, space=space, steps=steps, lr=lr, restarts=restarts, batch=batch,
                    chunk=chunk, feature_loss=feature_loss, feature_weight=feature_weight,
                    optimize_noise=optimize_noise, noise_weight=noise_weight, keep_images=keep_images,
                    seed=seed, device=device, resume=resume, overwrite=overwrite, progress=not quiet and not as_json,
                    workers=workers, scheduler=scheduler, gpus=gpus, cluster=cluster)
    summary = {"path": result.path, "n": result.n, "space": space, "images_per_s": result.meta.get("images_per_s"),
               "device": result.meta.get("device"), "error": error_summary(result),
               "noise_maps": [name for name, _ in result.noise_layers()]}
    if as_json:
        echo_json(summary)
        return
    e = summary["error"]
    click.echo(f"wrote {result.path}: {result.n} codes in {space} ({summary['images_per_s']} images/s on "
               f"{summary['device']})")
    if summary["noise_maps"]:
        click.echo(f"each code has its own noise maps ({len(summary['noise_maps'])} layers, inversion/noise/*): "
                   "edit, report and explore replay them")
    echo_table([[e["rows"], e["mean"], e["median"], e["max"], e["psnr_db"]]],
               ["rows", "mean MSE", "median MSE", "max MSE", "PSNR of mean (dB)"])


METHODS = (Method("inversion", twins=(invert,), commands=(invert_command,)),)
