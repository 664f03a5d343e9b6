"""The CPU streaming analyses against the read floor and the obvious script, as whole processes.

For one store (made with ``latent-engine sample`` if missing) each repeat runs, each in a fresh process, in
turn so that the machine's load falls on all of them alike:

* ``read floor``: zarr decompresses ``latents/z`` chunk by chunk, nothing else (no engine import);
* ``sklearn PCA``: the obvious script: ``zarr.open_array(...)[:]`` then scikit-learn's default ``PCA(k)``;
* ``engine pca``: ``latent-engine pca STORE --array latents/z -k K --overwrite``;
* ``numpy corrcoef``: the obvious correlation script: read ``scores`` with zarr, ``numpy.corrcoef``;
* ``engine correlate``: ``latent-engine correlate STORE --overwrite``.

Every process runs with ``CUDA_VISIBLE_DEVICES=""``: this is the CPU path, whatever the machine has.

Each row prints the wall time of the whole process, its CPU time (user + system, all threads: less
sensitive than wall time to other jobs sharing the cores) and its peak RSS; the ratios to the sklearn script (pca) and
to the numpy script (correlate) are per repeat, then the median over repeats. ``--engine-root`` runs the
engine of another checkout (e.g. before/after a change in one run).

    python benchmarks/bench_read_floor.py --store /tmp/read500k.zarr -n 500000 --repeats 3
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

READ_FLOOR = """
import sys, zarr
a = zarr.open_array(sys.argv[1] + "/latents/z", mode="r")
step = a.chunks[0]
for start in range(0, a.shape[0], step):
    a[start:start + step]
"""

SKLEARN_PCA = """
import sys, zarr
from sklearn.decomposition import PCA
x = zarr.open_array(sys.argv[1] + "/latents/z", mode="r")[:]
PCA(int(sys.argv[2])).fit(x)
"""

NUMPY_CORRCOEF = """
import sys, numpy as np, zarr
s = zarr.open_array(sys.argv[1] + "/scores", mode="r")[:]
np.corrcoef(s[np.isfinite(s).all(axis=1)], rowvar=False)
"""

#: Runs a child command and prints its wall time and peak RSS (this wrapper's only child: RUSAGE_CHILDREN is it).
MEASURE = """
import json, resource, subprocess, sys, time
t = time.perf_counter()
code = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL).returncode
wall = time.perf_counter() - t
usage = resource.getrusage(resource.RUSAGE_CHILDREN)
print(json.dumps({"wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime, "peak_mib": usage.ru_maxrss / 1024,
                  "rc": code}))
"""


def measure(argv: list[str], env: dict[str, str]) -> dict[str, float]:
    out = subprocess.run([sys.executable, "-c", MEASURE, *argv], capture_output=True, text=True, env=env,
                         check=True)
    result = json.loads(out.stdout)
    if result["rc"] != 0:
        raise SystemExit(f"{' '.join(argv)} failed with exit code {result['rc']}")
    return result


def ensure_store(path: str, n: int) -> None:
    if Path(path, "zarr.json").exists():
        return
    print(f"sampling {n} rows into {path} ...", flush=True)
    subprocess.run([sys.executable, "-m", "engine", "sample", path, "--generator", "planted", "--predictor",
                    "planted", "-n", str(n), "--seed", "1", "--space", "z", "-q"], check=True, cwd=ROOT)


def commands(store: str, k: int, engine_root: Path) -> dict[str, list[str]]:
    engine = [sys.executable, "-m", "engine"]
    return {
        "read floor": [sys.executable, "-c", READ_FLOOR, store],
        "sklearn PCA": [sys.executable, "-c", SKLEARN_PCA, store, str(k)],
        "engine pca": [*engine, "pca", store, "--array", "latents/z", "-k", str(k), "--overwrite"],
        "numpy corrcoef": [sys.executable, "-c", NUMPY_CORRCOEF, store],
        "engine correlate": [*engine, "correlate", store, "--overwrite"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", default="/tmp/read500k.zarr")
    parser.add_argument("-n", type=int, default=500_000, help="Rows of the store if it has to be made.")
    parser.add_argument("-k", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--engine-root", type=Path, default=ROOT, help="Checkout whose engine is timed.")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    ensure_store(args.store, args.n)
    env = {**os.environ, "PYTHONPATH": str(args.engine_root), "CUDA_VISIBLE_DEVICES": ""}  # the CPU path
    runs: dict[str, list[dict[str, float]]] = {}
    for repeat in range(args.repeats):
        for name, argv in commands(args.store, args.k, args.engine_root).items():
            runs.setdefault(name, []).append(measure(argv, env))
        print(f"repeat {repeat + 1}: " + ", ".join(f"{n} {r[-1]['wall_s']:.2f} s" for n, r in runs.items()) +
              f"  (load {os.getloadavg()[0]:.1f})", flush=True)
    ratio = {"engine pca": "sklearn PCA", "engine correlate": "numpy corrcoef", "sklearn PCA": "read floor"}
    print(f"\n{'process':<18} {'wall s (median)':>16} {'CPU s (median)':>15} {'peak MiB':>9}  "
          "wall ratio per repeat")
    for name, found in runs.items():
        walls, cpus = [r["wall_s"] for r in found], [r["cpu_s"] for r in found]
        ratios = "" if name not in ratio else f"{name} / {ratio[name]}: " + ", ".join(
            f"{a['wall_s'] / b['wall_s']:.2f}" for a, b in zip(found, runs[ratio[name]]))
        print(f"{name:<18} {statistics.median(walls):>16.2f} {statistics.median(cpus):>15.2f} "
              f"{max(r['peak_mib'] for r in found):>9.0f}  {ratios}")
    if args.json:
        args.json.write_text(json.dumps({"runs": runs, "load": os.getloadavg(), "time": time.time()}, indent=2))


if __name__ == "__main__":
    main()
