"""Throughput measurement shared by ``latent-engine bench`` and ``benchmarks/bench_*.py``.

Each variant runs the same models on the same device over the same number of codes:

* ``bare``: ``G(z)`` and the predictors batch by batch, outputs moved to the host and dropped, as anyone
  writes it;
* ``floor``: the same loop with the engine's allocator settings (``engine.allocator``): the compute floor the
  engine's own overhead is measured against (on a CPU the default allocator alone costs up to 2x);
* ``engine``: ``engine.sample`` into a fresh store (draw, compute, write, commit, overlap), optionally
  sharded over Dask workers (``workers``/``gpus``);
* ``research``: the habit the engine replaces: codes, w and scores appended to Python lists, ``np.save``
  at the end (InterFaceGAN's generate_data.py).

Each variant runs in its own subprocess (``python -m engine.bench VARIANT CONFIG_JSON``) so that its peak
resident memory is its own: the child reports ``ru_maxrss`` (peak RSS over its life) beside its RSS once the
models are built and warmed up (``base_rss_mb``), so ``peak - base`` is what the loop itself held. On CUDA
it also reports ``torch.cuda.max_memory_allocated``. Models are built and one batch is run before the clock
starts; for a sharded engine run the clock includes the cluster start-up (``startup_s`` says how much) and
``steady_samples_per_s`` excludes it.
"""
from __future__ import annotations

import dataclasses
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

VARIANTS = ("bare", "floor", "engine", "research")


@dataclasses.dataclass
class BenchConfig:
    generator: str = "convstack"
    predictors: tuple[str, ...] = ("imagestats",)
    n: int = 2048
    batch: int = 64
    chunk: int = 512
    device: str = "auto"
    seed: int = 0
    threads: int | None = None       # torch threads in the measuring process (None: torch's default)
    workers: int | None = None       # engine variant only: shard over a LocalCluster of K processes
    gpus: str | None = None          # engine variant only: shard over dask-cuda workers
    precision: str = "fp32"          # the models' arithmetic (engine.sampler.PRECISIONS), every variant

    def __post_init__(self) -> None:
        self.predictors = tuple(self.predictors)
        for name in ("n", "batch", "chunk"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"bench {name} must be a positive integer; got {value!r}")
        if self.threads is not None and (not isinstance(self.threads, int) or self.threads <= 0):
            raise ValueError(f"bench threads must be a positive integer; got {self.threads!r}")

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))


def _rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def _peak_rss_mb() -> float:
    # The kernel updates ru_maxrss lazily, so it can trail the current RSS by a few pages.
    return max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, _rss_mb())   # Linux: KiB


def _models(config: BenchConfig):
    import torch

    from engine.devices import resolve_device
    from engine.models.registry import load_generator, load_predictor

    if config.threads:
        torch.set_num_threads(config.threads)
    device = resolve_device(config.device)
    G = load_generator(config.generator, device)
    Ps = [load_predictor(p, G, device) for p in config.predictors]
    return G, Ps, device


def _step(G, Ps, z, precision: str = "fp32"):
    """One batch: codes -> (w, images) -> scores; returns host arrays."""
    from contextlib import nullcontext

    import torch

    from engine.sampler import PRECISIONS

    dtype = PRECISIONS[precision]
    with torch.autocast(z.device.type, dtype=dtype) if dtype is not None else nullcontext():
        return _forward(G, Ps, z)


def _forward(G, Ps, z):
    import torch

    from engine.models.base import conditional, map_codes, synthesize

    labels = torch.zeros(len(z), dtype=torch.int64, device=z.device) if conditional(G) else None
    with torch.inference_mode():
        ws = map_codes(G, z, labels)
        images = synthesize(G, ws, labels)
        scores = torch.cat([P(images).float() for P in Ps], dim=1) if Ps else images.new_zeros((len(z), 0))
        return ws[:, 0].float().cpu().numpy(), scores.cpu().numpy()


def _batches(config: BenchConfig, z_dim: int, device):
    import numpy as np
    import torch

    rng = np.random.default_rng(config.seed)
    for start in range(0, config.n, config.batch):
        rows = min(config.batch, config.n - start)
        yield torch.from_numpy(rng.standard_normal((rows, z_dim), dtype=np.float32)).to(device)


def bare(config: BenchConfig, G, Ps, device, workdir: Path) -> dict[str, Any]:
    for z in _batches(config, G.z_dim, device):
        _step(G, Ps, z, config.precision)
    return {}


def research(config: BenchConfig, G, Ps, device, workdir: Path) -> dict[str, Any]:
    import numpy as np

    codes, ws, scores = [], [], []
    for z in _batches(config, G.z_dim, device):
        w, s = _step(G, Ps, z, config.precision)
        codes.append(z.cpu().numpy())
        ws.append(w)
        scores.append(s)
    np.save(workdir / "z.npy", np.concatenate(codes))
    np.save(workdir / "w.npy", np.concatenate(ws))
    np.save(workdir / "scores.npy", np.concatenate(scores))
    return {}


def engine_run(config: BenchConfig, G, Ps, device, workdir: Path) -> dict[str, Any]:
    import engine

    sharded = config.workers is not None or config.gpus is not None
    models = (config.generator, list(config.predictors)) if sharded else (G, Ps)
    start = time.perf_counter()
    store = engine.sample(str(workdir / "bench.zarr"), models[0], models[1], n=config.n, seed=config.seed,
                          chunk=config.chunk, batch=config.batch, device=config.device if sharded else device,
                          progress=False, workers=config.workers, gpus=config.gpus, precision=config.precision)
    wall = time.perf_counter() - start
    steady = store.meta.get("samples_per_s")
    return {"steady_samples_per_s": steady,
            "startup_s": round(max(0.0, wall - config.n / steady), 2) if sharded and steady else None}


RUNNERS = {"bare": bare, "floor": bare, "engine": engine_run, "research": research}


def measure(variant: str, config: BenchConfig) -> dict[str, Any]:
    """Run one variant in this process and return its figures (call it in a fresh process for peak RSS)."""
    import torch

    if variant not in RUNNERS:
        raise ValueError(f"unknown bench variant {variant!r}; known: {', '.join(VARIANTS)}")
    if variant == "floor":
        from engine.allocator import retain_freed_memory

        retain_freed_memory()  # process-wide: only an isolated run keeps "bare" apart from it
    G, Ps, device = _models(config)
    for z in _batches(dataclasses.replace(config, n=min(config.batch, config.n)), G.z_dim, device):
        _step(G, Ps, z, config.precision)                                # warm-up: kernels, allocator
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    base = _rss_mb()
    with tempfile.TemporaryDirectory(prefix=f"bench-{variant}-") as tmp:
        start = time.perf_counter()
        extra = RUNNERS[variant](config, G, Ps, device, Path(tmp))
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - start
    return {"variant": variant, "samples_per_s": round(config.n / seconds, 2), "seconds": round(seconds, 3),
            "n": config.n, "device": str(device), "torch_threads": torch.get_num_threads(),
            "workers": config.workers, "gpus": config.gpus, "base_rss_mb": round(base, 1),
            "peak_rss_mb": round(_peak_rss_mb(), 1),
            "gpu_peak_mb": round(torch.cuda.max_memory_allocated(device) / 2**20, 1) if device.type == "cuda" else None,
            **extra}


def measure_isolated(variant: str, config: BenchConfig, timeout: float = 3600) -> dict[str, Any]:
    """``measure`` in a fresh Python process (its own peak RSS); errors come back as ValueError."""
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run([sys.executable, "-m", "engine.bench", variant, config.to_json()], capture_output=True,
                          text=True, timeout=timeout, env=env)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise ValueError(f"bench variant {variant!r} failed: {tail}")
    return json.loads(lines[-1])


def compare(config: BenchConfig, variants: tuple[str, ...] = ("bare", "engine"), repeats: int = 1,
            isolated: bool = True) -> dict[str, Any]:
    """Run ``variants`` ``repeats`` times, interleaved; keep each variant's fastest run; ratios to ``bare``.

    Interleaving and best-of keep the ratio honest on a shared machine, where neighbours slow some runs.
    """
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats <= 0:
        raise ValueError(f"repeats must be a positive integer; got {repeats!r}")
    runs: dict[str, list[dict[str, Any]]] = {v: [] for v in variants}
    for _ in range(repeats):
        for variant in variants:
            runs[variant].append(measure_isolated(variant, config) if isolated else measure(variant, config))
    best = {v: max(rs, key=lambda r: r["samples_per_s"]) for v, rs in runs.items()}
    floor = best.get("bare", {}).get("samples_per_s")
    for result in best.values():
        result["ratio_to_bare"] = round(result["samples_per_s"] / floor, 3) if floor else None
        result["runs_samples_per_s"] = [r["samples_per_s"] for r in runs[result["variant"]]]
    return {"config": dataclasses.asdict(config), "repeats": repeats, "results": list(best.values()),
            "openblas_coretype": os.environ.get("OPENBLAS_CORETYPE", "unset")}


def cluster_startup(workers: int, repeats: int = 1) -> dict[str, Any]:
    """Seconds to start a LocalCluster of ``workers`` processes and get a task back, and to close it."""
    from engine.distributed import cluster_client

    starts, rounds, closes = [], [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        with cluster_client(workers=workers) as handle:
            t1 = time.perf_counter()
            handle.client.submit(os.getpid, pure=False).result()
            t2 = time.perf_counter()
        t3 = time.perf_counter()
        starts.append(t1 - t0)
        rounds.append(t2 - t1)
        closes.append(t3 - t2)
    return {"workers": workers, "start_s": round(min(starts), 2), "first_task_s": round(min(rounds), 3),
            "close_s": round(min(closes), 2)}


def kernel_benchmarks_path() -> Path:
    """Where the source checkout keeps the kernel benchmarks (beside the ``engine`` package)."""
    return Path(__file__).resolve().parents[1] / "benchmarks" / "bench_kernels.py"


def kernel_benchmarks(quick: bool) -> list[dict[str, Any]]:
    """``benchmarks/bench_kernels.py``'s ``run(quick)`` from the source checkout beside this package."""
    import importlib.util

    path = kernel_benchmarks_path()
    if not path.is_file():
        raise FileNotFoundError(f"the kernel benchmarks live in the source checkout, not in the installed package: "
                                f"{path} not found (clone the repository and run from it)")
    spec = importlib.util.spec_from_file_location("latent_engine_bench_kernels", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not callable(getattr(module, "run", None)):
        raise ValueError(f"{path} has no run(quick) function")
    return list(module.run(quick))


def main(argv: list[str]) -> None:
    if len(argv) != 2:
        raise SystemExit("usage: python -m engine.bench VARIANT CONFIG_JSON")
    variant, config = argv[0], BenchConfig(**json.loads(argv[1]))
    print(json.dumps(measure(variant, config)), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
