"""Sharded sampling: samples/s of one process against 1 and 2 Dask workers, and the cluster start-up cost.

    python benchmarks/bench_distributed.py
    python benchmarks/bench_distributed.py --generator convstack -n 4096 --chunk 256 --json distributed.json

All variants run ``engine.sample`` on the same compute-heavy generator and codes, each in a fresh process
(``engine.bench``): ``1 process`` with torch's default threads (all cores) and with one thread, then
``--workers 1`` and ``--workers 2`` (each worker gets cores // workers torch threads). ``samples/s`` is over
the whole call (cluster start-up included); ``steady`` is the run's own rate once the cluster is up.
Start-up: a LocalCluster of K workers until it answers a task, best of ``--repeats``.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.bench import BenchConfig, cluster_startup, measure_isolated  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--generator", default="convstack:channels=128")
    parser.add_argument("--predictor", default="imagestats")
    parser.add_argument("-n", type=int, default=12288)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--chunk", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=1, help="interleaved repeats; best run per variant kept")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()

    base = BenchConfig(generator=args.generator, predictors=(args.predictor,), n=args.n, batch=args.batch,
                       chunk=args.chunk, device="cpu")
    variants = {"1 process": base, "1 process, 1 thread": dataclasses.replace(base, threads=1),
                "1 worker": dataclasses.replace(base, workers=1), "2 workers": dataclasses.replace(base, workers=2)}
    best: dict[str, dict] = {}
    for _ in range(args.repeats):
        for label, config in variants.items():
            result = measure_isolated("engine", config)
            if label not in best or result["samples_per_s"] > best[label]["samples_per_s"]:
                best[label] = result
    floor = best["1 process"]["samples_per_s"]
    print(f"{args.generator} + {args.predictor}, n {args.n}, batch {args.batch}, chunk {args.chunk}, cpu, "
          f"best of {args.repeats}")
    print(f"{'variant':<20} {'samples/s':>10} {'steady':>8} {'vs 1 process':>13}")
    for label, r in best.items():
        steady = r.get("steady_samples_per_s") or r["samples_per_s"]
        print(f"{label:<20} {r['samples_per_s']:>10.1f} {steady:>8.1f} {steady / floor:>13.2f}")
    startup = {k: cluster_startup(k, repeats=max(1, args.repeats)) for k in (1, 2)}
    for k, s in startup.items():
        print(f"LocalCluster of {k}: start {s['start_s']} s, first task {s['first_task_s']} s, close {s['close_s']} s")
    if args.json:
        Path(args.json).write_text(json.dumps({"variants": best, "startup": startup}, indent=2))


if __name__ == "__main__":
    main()
