"""StyleGAN2 from a checkpoint: the engine's sampling beside the reference implementation's own forward loop.

    python benchmarks/bench_stylegan.py --rosinality /path/to/stylegan2-pytorch            # 64 px, CPU
    python benchmarks/bench_stylegan.py --rosinality /path/to/stylegan2-pytorch --memory   # + 1024 px RSS
    python benchmarks/bench_stylegan.py --rosinality /path/to/stylegan2-pytorch --device cuda --size 256 --precision bf16

A rosinality/stylegan2-pytorch ``Generator`` (a checkout you point at; nothing of it is in this project) is
built with seeded random weights (every weight moved off its initial value, noise strengths nonzero) and saved
as a ``{'g_ema': ..., 'latent_avg': ...}`` checkpoint, exactly like its converted FFHQ files. Then, same
codes, batch, device and threads, each in its own process, interleaved, best of ``--repeats``:

* ``reference``: rosinality's ``g_ema([z], randomize_noise=False)`` batch after batch, nothing stored;
* ``bare``: the engine's network from that file (``stylegan2:FILE``) + ``imagestats``, nothing stored;
* ``engine``: ``engine.sample`` of ``stylegan2:FILE`` with ``imagestats`` into a fresh store.

The ratio engine / reference is the issue's figure (target ≥ 1.0). ``--memory`` samples a config-f-shaped
1024 px generator (random weights): 2,000 and 20,000 codes through the mapping network (latents only), and
``--memory-n`` and ten times as many codes through synthesis and ``imagestats`` (1024 px images are slow on
a CPU), each in its own process, and reports peak RSS (target: within 1.25× as n grows tenfold).
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


def build_reference_file(checkout: str, size: int, path: str, channel_multiplier: int = 2, seed: int = 0) -> None:
    import torch

    model = import_rosinality(checkout)
    torch.manual_seed(seed)
    g = model.Generator(size, 512, 8, channel_multiplier=channel_multiplier)
    with torch.no_grad():
        for name, p in g.named_parameters():
            p.add_(torch.randn_like(p) * (0.2 if "noise" in name or "bias" in name else 0.05))
        latent_avg = g.mean_latent(4096)[0]
    torch.save({"g_ema": g.state_dict(), "latent_avg": latent_avg}, path)


def reference_child(config: dict) -> dict:
    """One reference run in this process: samples/s and peak RSS."""
    import resource

    import numpy as np
    import torch

    model = import_rosinality(config["rosinality"])
    checkpoint = torch.load(config["file"], map_location="cpu", weights_only=True)
    g = model.Generator(config["size"], 512, 8, channel_multiplier=config["channel_multiplier"])
    g.load_state_dict(checkpoint["g_ema"])
    device = torch.device(config["device"])
    g = g.eval().to(device)
    rng = np.random.default_rng(0)
    batches = [torch.from_numpy(rng.standard_normal((config["batch"], 512), dtype=np.float32))
               for _ in range(max(1, config["n"] // config["batch"]))]
    with torch.inference_mode():
        g([batches[0].to(device)], randomize_noise=False)                     # warm-up
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for z in batches:
            image, _ = g([z.to(device)], randomize_noise=False)
            image.cpu()
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


def throughput(args: argparse.Namespace, workdir: str) -> dict:
    from engine.bench import BenchConfig, measure_isolated

    path = os.path.join(workdir, f"rosinality-{args.size}.pt")
    build_reference_file(args.rosinality, args.size, path, args.channel_multiplier)
    spec = f"stylegan2:{path}"
    bench = BenchConfig(generator=spec, predictors=("imagestats",), n=args.n, batch=args.batch,
                        chunk=args.chunk, device=args.device)
    reference = {"rosinality": args.rosinality, "file": path, "size": args.size, "n": args.n,
                 "batch": args.batch, "device": args.device if args.device != "auto" else "cpu",
                 "channel_multiplier": args.channel_multiplier}
    runs: dict[str, list[dict]] = {"reference": [], "bare": [], "engine": []}
    for _ in range(args.repeats):
        runs["reference"].append(run_reference(reference))
        for variant in ("bare", "engine"):
            runs[variant].append(measure_isolated(variant, bench))
    best = {v: max(rs, key=lambda r: r["samples_per_s"]) for v, rs in runs.items()}
    floor = best["reference"]["samples_per_s"]
    return {"size": args.size, "batch": args.batch, "n": args.n, "device": args.device,
            "results": [{"variant": v, "samples_per_s": r["samples_per_s"],
                         "vs_reference": round(r["samples_per_s"] / floor, 3),
                         "runs": [x["samples_per_s"] for x in runs[v]], "peak_rss_mb": r["peak_rss_mb"]}
                        for v, r in best.items()]}


def memory(args: argparse.Namespace, workdir: str) -> dict:
    from engine.bench import BenchConfig, measure_isolated

    path = os.path.join(workdir, "rosinality-1024.pt")
    build_reference_file(args.rosinality, 1024, path, 2)
    runs = []
    # codes only (mapping network, latents/z, w, wp): the 2K and 20K codes
    for n in (2000, 20000):
        bench = BenchConfig(generator=f"stylegan2:{path}", predictors=(), n=n, batch=args.memory_batch, chunk=1000,
                            device=args.device)
        runs.append(_memory_row("codes (mapping)", n, measure_isolated("engine", bench, timeout=6 * 3600)))
    # the full path, synthesis at 1024 px and imagestats, at sizes a CPU finishes
    for n in (args.memory_n, 10 * args.memory_n):
        bench = BenchConfig(generator=f"stylegan2:{path}", predictors=("imagestats",), n=n, batch=args.memory_batch,
                            chunk=args.memory_batch * 4, device=args.device)
        runs.append(_memory_row("images + imagestats", n, measure_isolated("engine", bench, timeout=6 * 3600)))
    return {"size": 1024, "runs": runs,
            "peak_ratio_codes": round(runs[1]["peak_rss_mb"] / runs[0]["peak_rss_mb"], 3),
            "peak_ratio_images": round(runs[3]["peak_rss_mb"] / runs[2]["peak_rss_mb"], 3)}


def _memory_row(what: str, n: int, result: dict) -> dict:
    return {"what": what, "n": n, "samples_per_s": result["samples_per_s"], "base_rss_mb": result["base_rss_mb"],
            "peak_rss_mb": result["peak_rss_mb"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rosinality", help="a checkout of rosinality/stylegan2-pytorch (its model.py and op/)")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--channel-multiplier", type=int, default=2)
    parser.add_argument("--n", type=int, default=256)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--chunk", type=int, default=128)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--memory", action="store_true", help="also the 1024 px peak-RSS comparison")
    parser.add_argument("--memory-n", type=int, default=32)
    parser.add_argument("--memory-batch", type=int, default=4)
    parser.add_argument("--json", help="write the figures here too")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(reference_child(json.loads(args.child))))
        return
    if not args.rosinality:
        parser.error("--rosinality PATH is needed: the reference loop and the test file come from that checkout")
    with tempfile.TemporaryDirectory(prefix="bench-stylegan-") as workdir:
        result = {"throughput": throughput(args, workdir)}
        if args.memory:
            result["memory"] = memory(args, workdir)
    print(f"StyleGAN2 {args.size} px, batch {args.batch}, {args.n} codes, device {args.device}")
    print(f"{'variant':<10} {'samples/s':>10} {'vs reference':>13} {'peak RSS MB':>12}")
    for r in result["throughput"]["results"]:
        print(f"{r['variant']:<10} {r['samples_per_s']:>10.2f} {r['vs_reference']:>13.3f} {r['peak_rss_mb']:>12.1f}")
    if args.memory:
        for r in result["memory"]["runs"]:
            print(f"1024 px {r['what']:<20} {r['n']:>6} codes: peak RSS {r['peak_rss_mb']:.1f} MB "
                  f"({r['samples_per_s']:.2f} samples/s)")
        print(f"peak RSS ratio, 10x the codes: codes only {result['memory']['peak_ratio_codes']}, "
              f"with images {result['memory']['peak_ratio_images']}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
