"""The engine's sample loop against a bare G(z) + predictor loop and against the research-code habit.

    python benchmarks/bench_sampler.py                    # convstack + imagestats, torch's default threads
    python benchmarks/bench_sampler.py --threads 1 --repeats 3 --json sampler.json

Four variants over the same codes, models and device (``engine.bench``): ``bare`` (G(z) + predictor at the
same batch, nothing stored), ``floor`` (the same loop with the engine's allocator settings, see
``engine.allocator``), ``engine`` (``engine.sample`` into a fresh Zarr store: draw, compute, write, commit,
with draw and writes overlapping compute) and ``research`` (append to Python lists, ``np.save`` at the end).
Throughput ratio to the bare loop; target: engine >= 0.9 of the floor.

Peak RSS: one subprocess per variant, which reports its own ``ru_maxrss`` and its RSS after the models are
built and warmed up; the difference is what the loop held. A second, cheap-generator table (``planted``,
``--memory-n`` codes) shows how that grows with n: flat for the engine (a few chunks), O(n) for the lists.
OPENBLAS_CORETYPE is left as the machine sets it and printed.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.bench import BenchConfig, compare  # noqa: E402


def table(result: dict) -> str:
    lines = [f"{'variant':<9} {'samples/s':>10} {'vs bare':>8} {'peak RSS MB':>12} {'held MB':>8}"]
    for r in result["results"]:
        lines.append(f"{r['variant']:<9} {r['samples_per_s']:>10.1f} {r['ratio_to_bare']:>8.3f} "
                     f"{r['peak_rss_mb']:>12.1f} {r['peak_rss_mb'] - r['base_rss_mb']:>8.1f}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--generator", default="convstack")
    parser.add_argument("--predictor", default="imagestats")
    parser.add_argument("-n", type=int, default=1024)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--chunk", type=int, default=256)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=None, help="torch threads per variant (default: torch's)")
    parser.add_argument("--repeats", type=int, default=2, help="interleaved repeats; best run per variant kept")
    parser.add_argument("--memory-n", type=int, default=200_000, help="codes for the memory table (0: skip)")
    parser.add_argument("--json", default=None, help="write the results here")
    args = parser.parse_args()

    config = BenchConfig(generator=args.generator, predictors=(args.predictor,), n=args.n, batch=args.batch,
                         chunk=args.chunk, device=args.device, threads=args.threads)
    speed = compare(config, ("bare", "floor", "engine", "research"), repeats=args.repeats)
    print(f"throughput: {args.generator} + {args.predictor}, n {args.n}, batch {args.batch}, chunk {args.chunk}, "
          f"device {speed['results'][0]['device']}, torch threads {speed['results'][0]['torch_threads']}, "
          f"OPENBLAS_CORETYPE {speed['openblas_coretype']}, best of {args.repeats}")
    print(table(speed))
    engine, floor = (next(r for r in speed["results"] if r["variant"] == v) for v in ("engine", "floor"))
    print(f"engine / bare = {engine['ratio_to_bare']:.3f}, engine / floor = "
          f"{engine['samples_per_s'] / floor['samples_per_s']:.3f} (target >= 0.9)")
    payload = {"throughput": speed}
    if args.memory_n:
        memory = compare(BenchConfig(generator="planted", predictors=("planted",), n=args.memory_n, batch=1024,
                                     chunk=8192, device=args.device, threads=args.threads),
                         ("bare", "engine", "research"), repeats=1)
        print(f"\nmemory: planted + planted, n {args.memory_n}, batch 1024, chunk 8192")
        print(table(memory))
        payload["memory"] = memory
    if args.json:
        Path(args.json).write_text(json.dumps(payload, indent=2))


if __name__ == "__main__":
    main()
