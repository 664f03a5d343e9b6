"""Real-generator checkpoints: the engine's sampling beside the reference implementation's own forward loop.

    python benchmarks/bench_checkpoints.py --family stylegan2 --reference /path/to/stylegan2-pytorch   # 64 px
    python benchmarks/bench_checkpoints.py --family stylegan2 --reference /path/to/stylegan2-pytorch --memory
    python benchmarks/bench_checkpoints.py --family biggan --reference /path/to/pytorch-pretrained-BigGAN
    python benchmarks/bench_checkpoints.py --family biggan --reference ... --device cuda --precision bf16

The reference is a checkout you point at (nothing of it is in this project): rosinality/stylegan2-pytorch for
``stylegan2`` (its ``Generator(size, 512, 8, channel_multiplier)``, saved as ``{'g_ema', 'latent_avg'}`` like its
converted FFHQ files) or huggingface pytorch-pretrained-BigGAN for ``biggan`` (BigGAN-deep-128's config, saved as
``config.json`` + ``pytorch_model.bin``). It is built with seeded random weights, every weight moved off its
initial value, and saved in its native format. Then, same codes, batch, device and threads, each in its own
process, interleaved, best of ``--repeats``:

* ``reference``: the reference model's forward batch after batch (rosinality ``g_ema([z],
  randomize_noise=False)``; BigGAN ``model(z, one_hot, ψ)``), images moved to the host, nothing stored;
* ``bare``: the engine's network from that file (its SPEC) + ``imagestats``, nothing stored;
* ``engine``: ``engine.sample`` of the SPEC with ``imagestats`` into a fresh store.

The ratio engine / reference is the issues' figure (target ≥ 1.0). ``--memory`` samples a bigger model
(StyleGAN2: config-f-shaped 1024 px; BigGAN: the same 128 px) with random weights: 2,000 and 20,000 codes
without a predictor (codes only; BigGAN has no mapping, so its codes-only run is the draw and the store), and
``--memory-n`` and ten times as many codes through the synthesis and ``imagestats``, each in its own process,
and reports peak RSS (target: within 1.25× as n grows tenfold).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def import_rosinality(checkout: str):
    """rosinality's ``model`` module from ``checkout``; its CUDA extensions are not compiled (their CPU paths
    are pure torch and are what runs on a CPU), on a GPU they are compiled as the checkout does."""
    import torch
    import torch.utils.cpp_extension as cpp_extension

    sys.path.insert(0, checkout)
    if not torch.cuda.is_available():
        cpp_extension.load = lambda *args, **kwargs: None
    import model  # noqa: PLC0415 - the reference checkout, found on sys.path above

    return model


def import_biggan(checkout: str):
    sys.path.insert(0, checkout)
    import pytorch_pretrained_biggan  # noqa: PLC0415 - the reference checkout

    return pytorch_pretrained_biggan


#: BigGAN-deep-128's architecture, as its config.json holds it.
BIGGAN_DEEP_128 = {"output_dim": 128, "z_dim": 128, "class_embed_dim": 128, "channel_width": 128,
                   "num_classes": 1000, "attention_layer_position": 8, "eps": 1e-4, "n_stats": 51,
                   "layers": [[False, 16, 16], [True, 16, 16], [False, 16, 16], [True, 16, 8], [False, 8, 8],
                              [True, 8, 4], [False, 4, 4], [True, 4, 2], [False, 2, 2], [True, 2, 1]]}


def build_reference_file(family: str, checkout: str, size: int, path: str, channel_multiplier: int = 2,
                         seed: int = 0) -> str:
    """Save a seeded random-weight reference model at ``path`` in its native format; returns the SPEC path."""
    import torch

    torch.manual_seed(seed)
    if family == "stylegan2":
        g = import_rosinality(checkout).Generator(size, 512, 8, channel_multiplier=channel_multiplier)
        with torch.no_grad():
            for name, p in g.named_parameters():
                p.add_(torch.randn_like(p) * (0.2 if "noise" in name or "bias" in name else 0.05))
            latent_avg = g.mean_latent(4096)[0]
        torch.save({"g_ema": g.state_dict(), "latent_avg": latent_avg}, path)
        return path
    biggan = import_biggan(checkout)
    model = biggan.BigGAN(biggan.BigGANConfig(**{k: (tuple(map(tuple, v)) if k == "layers" else v)
                                                for k, v in BIGGAN_DEEP_128.items()}))
    with torch.no_grad():
        for name, t in model.state_dict(keep_vars=True).items():
            if name.endswith("running_vars"):
                t.copy_(0.5 + torch.rand_like(t))
            elif t.is_floating_point() and not name.endswith(("weight_u", "weight_v", "running_means")):
                t.add_(0.1 * (t.std() if t.numel() > 1 else 1) * torch.randn_like(t))
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "config.json"), "w") as handle:
        json.dump(BIGGAN_DEEP_128, handle)
    torch.save(model.state_dict(), os.path.join(path, "pytorch_model.bin"))
    return path


def reference_child(config: dict) -> dict:
    """One reference run in this process: samples/s and peak RSS."""
    import resource

    import numpy as np
    import torch

    device = torch.device(config["device"])
    if config["family"] == "stylegan2":
        model = import_rosinality(config["reference"])
        checkpoint = torch.load(config["file"], map_location="cpu", weights_only=True)
        g = model.Generator(config["size"], 512, 8, channel_multiplier=config["channel_multiplier"])
        g.load_state_dict(checkpoint["g_ema"])

        def forward(z):
            return g([z], randomize_noise=False)[0]
    else:
        biggan = import_biggan(config["reference"])
        g = biggan.BigGAN.from_pretrained(config["file"])
        onehot = torch.zeros(config["batch"], 1000, device=device)
        onehot[:, 207] = 1

        def forward(z):
            return g(z, onehot, config["truncation"])
    g = g.eval().to(device)
    z_dim = 512 if config["family"] == "stylegan2" else 128
    rng = np.random.default_rng(0)
    batches = [torch.from_numpy(rng.standard_normal((config["batch"], z_dim), dtype=np.float32))
               for _ in range(max(1, config["n"] // config["batch"]))]
    with torch.inference_mode():
        forward(batches[0].to(device))                                        # warm-up
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for z in batches:
            forward(z.to(device)).cpu()
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
    rows = len(batches) * config["batch"]
    return {"variant": "reference", "samples_per_s": round(rows / seconds, 2), "seconds": round(seconds, 3),
            "torch_threads": torch.get_num_threads(),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


def run_reference(config: dict) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--child", json.dumps(config)], capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode or not lines:
        raise SystemExit(f"reference run failed: {(proc.stderr.strip().splitlines() or ['no output'])[-1]}")
    return json.loads(lines[-1])


def spec_of(args: argparse.Namespace, path: str) -> str:
    if args.family == "stylegan2":
        return f"stylegan2:{path}"
    return f"biggan:{path},class=207,truncation={args.truncation}"


def throughput(args: argparse.Namespace, workdir: str) -> dict:
    from engine.bench import BenchConfig, measure_isolated

    size = args.size if args.family == "stylegan2" else 128
    path = build_reference_file(args.family, args.reference, size, os.path.join(workdir, f"{args.family}-{size}"),
                                args.channel_multiplier)
    bench = BenchConfig(generator=spec_of(args, path), predictors=("imagestats",), n=args.n, batch=args.batch,
                        chunk=args.chunk, device=args.device, precision=args.precision)
    reference = {"family": args.family, "reference": args.reference, "file": path, "size": size, "n": args.n,
                 "batch": args.batch, "device": args.device if args.device != "auto" else "cpu",
                 "channel_multiplier": args.channel_multiplier, "truncation": args.truncation}
    runs: dict[str, list[dict]] = {"reference": [], "bare": [], "engine": []}
    for _ in range(args.repeats):
        runs["reference"].append(run_reference(reference))
        for variant in ("bare", "engine"):
            runs[variant].append(measure_isolated(variant, bench))
    best = {v: max(rs, key=lambda r: r["samples_per_s"]) for v, rs in runs.items()}
    floor = best["reference"]["samples_per_s"]
    return {"family": args.family, "size": size, "batch": args.batch, "n": args.n, "device": args.device,
            "precision": args.precision,
            "results": [{"variant": v, "samples_per_s": r["samples_per_s"],
                         "vs_reference": round(r["samples_per_s"] / floor, 3),
                         "runs": [x["samples_per_s"] for x in runs[v]], "peak_rss_mb": r["peak_rss_mb"]}
                        for v, r in best.items()]}


def memory(args: argparse.Namespace, workdir: str) -> dict:
    from engine.bench import BenchConfig, measure_isolated

    size = 1024 if args.family == "stylegan2" else 128
    path = build_reference_file(args.family, args.reference, size, os.path.join(workdir, f"{args.family}-{size}-m"))
    spec = spec_of(args, path)
    runs = []
    for n in (2000, 20000):                                   # codes only: the draw, the mapping, the store
        bench = BenchConfig(generator=spec, predictors=(), n=n, batch=args.memory_batch, chunk=1000,
                            device=args.device)
        runs.append(_memory_row("codes", n, measure_isolated("engine", bench, timeout=6 * 3600)))
    for n in (args.memory_n, 10 * args.memory_n):            # the full path, at sizes a CPU finishes
        bench = BenchConfig(generator=spec, predictors=("imagestats",), n=n, batch=args.memory_batch,
                            chunk=args.memory_batch * 4, device=args.device)
        runs.append(_memory_row("images + imagestats", n, measure_isolated("engine", bench, timeout=6 * 3600)))
    return {"size": size, "runs": runs,
            "peak_ratio_codes": round(runs[1]["peak_rss_mb"] / runs[0]["peak_rss_mb"], 3),
            "peak_ratio_images": round(runs[3]["peak_rss_mb"] / runs[2]["peak_rss_mb"], 3)}


def _memory_row(what: str, n: int, result: dict) -> dict:
    return {"what": what, "n": n, "samples_per_s": result["samples_per_s"], "base_rss_mb": result["base_rss_mb"],
            "peak_rss_mb": result["peak_rss_mb"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--family", choices=["stylegan2", "biggan"], default="stylegan2")
    parser.add_argument("--reference", help="a checkout of rosinality/stylegan2-pytorch (stylegan2) or of "
                                            "huggingface/pytorch-pretrained-BigGAN (biggan)")
    parser.add_argument("--size", type=int, default=64, help="StyleGAN2 resolution (BigGAN: deep-128)")
    parser.add_argument("--channel-multiplier", type=int, default=2)
    parser.add_argument("--truncation", type=float, default=0.4, help="BigGAN's ψ")
    parser.add_argument("--n", type=int, default=256)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--chunk", type=int, default=128)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default="fp32",
                        help="the engine's arithmetic (the reference runs in float32)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--memory", action="store_true", help="also the peak-RSS comparison as n grows")
    parser.add_argument("--memory-n", type=int, default=32)
    parser.add_argument("--memory-batch", type=int, default=4)
    parser.add_argument("--json", help="write the figures here too")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(reference_child(json.loads(args.child))))
        return
    if not args.reference:
        parser.error("--reference PATH is needed: the reference loop and the test file come from that checkout")
    with tempfile.TemporaryDirectory(prefix="bench-checkpoints-") as workdir:
        result = {"throughput": throughput(args, workdir)}
        if args.memory:
            result["memory"] = memory(args, workdir)
    t = result["throughput"]
    print(f"{args.family} {t['size']} px, batch {args.batch}, {args.n} codes, device {args.device}, "
          f"engine precision {args.precision}")
    print(f"{'variant':<10} {'samples/s':>10} {'vs reference':>13} {'peak RSS MB':>12}")
    for r in t["results"]:
        print(f"{r['variant']:<10} {r['samples_per_s']:>10.2f} {r['vs_reference']:>13.3f} {r['peak_rss_mb']:>12.1f}")
    if args.memory:
        m = result["memory"]
        for r in m["runs"]:
            print(f"{m['size']} px {r['what']:<20} {r['n']:>6} codes: peak RSS {r['peak_rss_mb']:.1f} MB "
                  f"({r['samples_per_s']:.2f} samples/s)")
        print(f"peak RSS ratio, 10x the codes: codes only {m['peak_ratio_codes']}, with images {m['peak_ratio_images']}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
