"""Benchmark: GAN inversion, batched vs one image at a time, and what inverting real digits gives.

Speed (``--part speed``): the same optimiser (``engine.methods.inversion.Inverter``: the projector's Adam
schedule and step noise, ``--steps`` steps, one start) inverts ``--images`` images the digits GAN generated
from seeded codes, once in batches of ``--batch`` images and once one image at a time (batch 1, as StyleGAN's
``projector.py`` runs: one target per call), in the same run. Reported: images/s of each, their ratio, and the
mean error of each (the same optimiser, so the same quality up to the per-batch step noise).

Real digits (``--part real``): a sampled digits store (``--codes`` rows, w) gets InterFaceGAN boundaries in w for
every digit; ``--real`` held-out scikit-learn digits (the classifier's held-out split, never seen by either
model) are inverted into w (``--real-steps`` steps); each inverted digit is then edited along every
``interfacegan/digit_K@w`` (K ≠ its own digit) with ``edit --direction-from --stored --distance`` at α = 0..20σ.
Reported: the reconstruction error (MSE as a fraction of the targets' variance, PSNR), how often the
classifier still reads the right digit in the reconstruction, and per K the fraction of edited digits whose
top class becomes K at some α, beside the same fraction for sampled codes (the boundaries' own reach).

Noise maps (``--part noise``): a random-weight StyleGAN2 file (``--noise-size`` pixels, noise inputs at every
resolution, built by tests/stylegan2_checkpoints.py), W, ``--steps`` steps, one start, ``--images`` targets of
three kinds: images it made from seeded codes with its own noise, the same codes with seeded N(0, 1) noise
maps, and real scikit-learn digits (which it cannot draw). Speed, on the second kind: batched with per-image
noise maps (``--optimize-noise``), one image at a time with noise maps (the projector's way), and batched with
its own noise (the default); images/s of each and the two ratios. Quality: each kind's mean error with its own
noise and with optimised maps.

    python benchmarks/bench_inversion.py --json inversion.json
    python benchmarks/bench_inversion.py --part speed --device cuda
    python benchmarks/bench_inversion.py --part noise --images 32 --steps 100
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def generated_images(count: int, seed: int) -> np.ndarray:
    import torch

    from engine.models.base import map_codes, synthesize
    from engine.models.registry import load_generator
    from engine.sampler import draw_codes

    G = load_generator("digits")
    with torch.no_grad():
        z = torch.from_numpy(draw_codes(seed, 0, count, G.z_dim))
        return synthesize(G, map_codes(G, z)).numpy()


def timed_inversion(inverter, images: np.ndarray, device) -> tuple[float, float]:  # noqa: ANN001
    """(seconds, mean MSE / the images' variance) of one inverter on ``images``, as one chunk."""
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    out = inverter(images, 0, len(images))
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start, float(out["error"].mean() / images.var())


def speed(args: argparse.Namespace) -> dict:
    from engine.devices import resolve_device
    from engine.methods.inversion import InversionSettings, Inverter
    from engine.models.registry import load_generator

    device = resolve_device(args.device)
    images = generated_images(args.images, seed=11)
    G = load_generator("digits", device)
    settings = InversionSettings(space="w", steps=args.steps)
    results = {}
    for name, batch in (("batched", args.batch), ("one_at_a_time", 1)):
        seconds, error = timed_inversion(Inverter(G, settings, device, batch), images, device)
        results[name] = {"batch": batch, "seconds": round(seconds, 2), "images_per_s": round(len(images) / seconds, 3),
                         "mean_mse_over_variance": error}
        print(f"{name:>14}: batch {batch:>3}  {seconds:8.2f} s  {len(images) / seconds:8.2f} images/s  "
              f"MSE/var {results[name]['mean_mse_over_variance']:.4f}", flush=True)
    results["speedup"] = round(results["batched"]["images_per_s"] / results["one_at_a_time"]["images_per_s"], 1)
    print(f"batched / one at a time: {results['speedup']}x", flush=True)
    return {"device": str(device), "images": args.images, "steps": args.steps, **results}


def noise(args: argparse.Namespace) -> dict:
    import torch

    from engine.devices import resolve_device
    from engine.methods.inversion import InversionSettings, Inverter
    from engine.models.base import noise_inputs, synthesize
    from engine.models.registry import load_generator
    from engine.models.train_digits import load_digit_images
    from tests.stylegan2_checkpoints import rosinality_state

    device = resolve_device(args.device)
    folder = Path(args.workdir or tempfile.mkdtemp(prefix="bench-inversion-noise-"))
    torch.save({"g_ema": rosinality_state(size=args.noise_size, seed=2), "latent_avg": torch.full((32,), 0.01)},
               folder / "g.pt")
    G = load_generator(f"stylegan2:{folder / 'g.pt'}", device)
    draw = torch.Generator().manual_seed(11)
    z = torch.randn(args.images, G.z_dim, generator=draw)
    maps = [torch.randn(args.images, 1, r, r, generator=draw) for _, r in noise_inputs(G)]
    with torch.no_grad():
        ws = G.mapping(z.to(device))
        other = synthesize(G, ws, noise_maps=[m.to(device) for m in maps])
        targets = {"its own images": synthesize(G, ws).cpu().numpy(), "its images with other noise": other.cpu().numpy()}
    digits = load_digit_images()[0][:args.images]                        # real digits, which it cannot draw
    targets["real digits"] = torch.nn.functional.interpolate(digits, size=(args.noise_size,) * 2).repeat(
        1, G.img_channels, 1, 1).numpy()

    def run(images: np.ndarray, batch: int, optimize: bool) -> tuple[float, float]:
        settings = InversionSettings(space="w", steps=args.steps, optimize_noise=optimize)
        return timed_inversion(Inverter(G, settings, device, batch), images, device)

    results: dict = {"speed": {}, "quality": {}}
    other = targets["its images with other noise"]
    for name, batch, optimize in (("batched, noise maps", args.batch, True), ("one at a time, noise maps", 1, True),
                                  ("batched, own noise", args.batch, False)):
        seconds, error = run(other, batch, optimize)
        results["speed"][name] = {"batch": batch, "seconds": round(seconds, 2),
                                  "images_per_s": round(len(other) / seconds, 3), "mse_over_variance": error}
        print(f"{name:>26}: batch {batch:>3}  {seconds:8.2f} s  {len(other) / seconds:8.2f} images/s  "
              f"MSE/var {error:.4f}", flush=True)
    ips = {name: r["images_per_s"] for name, r in results["speed"].items()}
    results["batching_speedup"] = round(ips["batched, noise maps"] / ips["one at a time, noise maps"], 2)
    results["noise_maps_cost"] = round(ips["batched, own noise"] / ips["batched, noise maps"], 2)
    print(f"batched / one at a time (noise maps): {results['batching_speedup']}x; own noise / noise maps: "
          f"{results['noise_maps_cost']}x", flush=True)
    for kind, images in targets.items():
        own, with_maps = run(images, args.batch, False)[1], run(images, args.batch, True)[1]
        results["quality"][kind] = {"own_noise": own, "noise_maps": with_maps}
        print(f"{kind:>28}: MSE/var with its own noise {own:.4f}, with optimised noise maps {with_maps:.4f}",
              flush=True)
    return {"device": str(device), "resolution": args.noise_size, "noise_inputs": len(maps), "images": args.images,
            "steps": args.steps, **results}


def real(args: argparse.Namespace) -> dict:
    import torch

    import engine
    from engine.models.digits import digits_predictor
    from engine.models.train_digits import heldout_split, load_digit_images
    from engine.store import Store

    folder = Path(args.workdir or tempfile.mkdtemp(prefix="bench-inversion-"))
    demo = str(folder / "demo.zarr")
    start = time.perf_counter()
    engine.sample(demo, "digits", ["digits"], n=args.codes, seed=0, chunk=4096, batch=512, spaces=["w"],
                  overwrite=True, progress=False)
    engine.boundaries(demo, space="w", overwrite=True)
    prepared = time.perf_counter() - start
    images, labels = load_digit_images()
    _, held = heldout_split(len(images), 0)
    held = held[:args.real]
    targets, truth = images[held].numpy(), labels[held].numpy()
    np.save(folder / "real.npy", targets)
    start = time.perf_counter()
    inverted = engine.invert(folder / "real.npy", folder / "real.zarr", "digits", space="w", steps=args.real_steps,
                             restarts=args.restarts, device=args.device, overwrite=True, progress=False)
    inverting = time.perf_counter() - start
    error = inverted.array("inversion/error")[:].astype(np.float64)
    P = digits_predictor()

    def top_classes(result: dict) -> np.ndarray:
        edited = result["images"]
        with torch.no_grad():
            return P.logits(edited.reshape(-1, *edited.shape[2:]).cpu()).argmax(1).reshape(edited.shape[:2]).numpy()

    reconstructed = top_classes(engine.edit(inverted.path, "interfacegan/digit_0@w", direction_from=demo,
                                            stored=True, samples=len(held), alphas="0,0,1"))[:, 0]
    scores = Store.open(demo).array("scores")[:len(held)]          # the classifier's scores of the stored rows
    rates, reference = {}, {}
    alphas, limits = np.linspace(0, 20, 11), (4, 6, 10, 20)
    by_limit = {"inverted": np.zeros((10, len(limits))), "sampled": np.zeros((10, len(limits)))}
    for digit in range(10):
        key = f"interfacegan/digit_{digit}@w"
        grid = dict(stored=True, alphas="0,20,11", distance=True)
        top = top_classes(engine.edit(inverted.path, key, direction_from=demo, samples=len(held), **grid))
        rates[digit] = float((top[truth != digit] == digit).any(axis=1).mean())
        own = top_classes(engine.edit(demo, key, samples=len(held), **grid))
        reference[digit] = float((own[scores.argmax(1) != digit] == digit).any(axis=1).mean())
        for j, limit in enumerate(limits):
            by_limit["inverted"][digit, j] = (top[truth != digit][:, alphas <= limit] == digit).any(axis=1).mean()
            by_limit["sampled"][digit, j] = (own[scores.argmax(1) != digit][:, alphas <= limit] == digit).any(
                axis=1).mean()
        print(f"digit {digit}: inverted real digits reach it {rates[digit]:.2f}, sampled codes {reference[digit]:.2f}",
              flush=True)
    result = {"codes": args.codes, "real": len(held), "steps": args.real_steps, "restarts": args.restarts,
              "prepare_s": round(prepared, 1), "invert_s": round(inverting, 1),
              "mse_mean": float(error.mean()), "mse_over_variance": float(error.mean() / targets.var()),
              "psnr_db": float(10 * np.log10(4.0 / error.mean())),
              "reconstruction_top_class_accuracy": float((reconstructed == truth).mean()),
              "edit_reach_inverted": rates, "edit_reach_sampled": reference,
              "edit_reach_inverted_mean": float(np.mean(list(rates.values()))),
              "edit_reach_sampled_mean": float(np.mean(list(reference.values()))),
              "mean_reach_by_max_alpha": {kind: {f"{limit}sigma": float(values[:, j].mean())
                                                 for j, limit in enumerate(limits)}
                                          for kind, values in by_limit.items()}}
    print(json.dumps({k: v for k, v in result.items() if not isinstance(v, dict) or k.startswith("mean_reach")},
                     indent=1), flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--part", choices=["speed", "real", "noise", "all"], default="all")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (CPU)")
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--codes", type=int, default=20000)
    parser.add_argument("--real", type=int, default=256)
    parser.add_argument("--real-steps", type=int, default=300)
    parser.add_argument("--restarts", type=int, default=1)
    parser.add_argument("--noise-size", type=int, default=32, help="resolution of the --part noise StyleGAN2")
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    record = {"torch": torch.__version__, "threads": args.threads, "cpu_count": os.cpu_count(),
              "load_average": os.getloadavg()}
    if args.part in ("speed", "all"):
        record["speed"] = speed(args)
    if args.part in ("real", "all"):
        record["real"] = real(args)
    if args.part in ("noise", "all"):
        record["noise"] = noise(args)
    if args.json:
        Path(args.json).write_text(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
