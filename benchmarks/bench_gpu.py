"""GPU check: each analysis kernel's engine path on the GPU against the same path on the CPU, and the sampler.

    python benchmarks/bench_gpu.py [--quick] [--device cuda[:i]] [--json PATH] [--skip-sampler]

One table (format in benchmarks/README.md, "GPU check"). Analysis rows run the engine's own code (the
``partial``/``merge`` functions that ``pca`` and ``correlate`` stream, ``LinearSVM`` as ``boundaries`` fits it,
``kernels.eigh`` as ``sefa`` calls it) on host data, read to the device through ``engine.device_io`` inside the
clock, results back to the host inside the clock; the CPU column is the same call on the CPU. Each GPU time is
the best of ``--repeats`` after one warm-up run (CUDA context, cuBLAS/cuSOLVER handles), each CPU time one run.
Parity compares the GPU result with the CPU result: the smallest |cos| between matching directions and the
largest absolute (or relative, where marked) error of the values.

Sampler rows: ``engine.bench`` (``bare`` G + predictor loop vs ``engine`` sampling into a store, each in its own
process, best of ``--repeats``) for a StyleGAN2-256-shaped network with random weights (rosinality's channel
table, 8 mapping layers, w 512) and a ResNet-50-shaped predictor (bottleneck blocks 3-4-6-3, 40 outputs) on the
generated images, in fp32 and bf16.

``--quick`` shrinks every size so that the whole driver runs on a CPU in seconds (``--device cpu``: the "GPU"
column is then the CPU too; a test runs it so). Without CUDA, asking for a CUDA device fails at once with one
line. This module is also a pytest plugin (``-p bench_gpu``) that ``gpu_check.sh`` uses to select every CUDA
test: those marked ``gpu`` and those skipped by a ``skipif`` whose reason names CUDA or a GPU.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

FULL = {"svm": (40, 20_000, 512), "pca": (500_000, 512, 64), "eigh": (200, 512), "corr": (500_000, 40),
        "sampler": {"size": 256, "style_dim": 512, "n_mlp": 8, "max_channels": None, "width": 64, "n": 2048,
                    "batch": 64, "chunk": 512}}
QUICK = {"svm": (3, 400, 16), "pca": (6_000, 32, 4), "eigh": (4, 32), "corr": (6_000, 6),
         "sampler": {"size": 16, "style_dim": 32, "n_mlp": 2, "max_channels": 32, "width": 4, "n": 64,
                     "batch": 16, "chunk": 32}}
#: Rows per block fed to the streaming states: what ``reduce_rows`` hands ``partial`` for a 512-wide store.
BLOCK_ROWS = 16_384


# ------------------------------------------------------------------------------------------ timing and parity
def _sync(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(run: Callable[[Any], Any], device: Any, repeats: int) -> tuple[float, Any]:
    """(best seconds of ``repeats`` runs of ``run(device)``, its result); on CUDA after one warm-up run."""
    if device.type == "cuda":
        run(device)
    best, result = float("inf"), None
    for _ in range(repeats if device.type == "cuda" else 1):
        _sync(device)
        start = time.perf_counter()
        result = run(device)
        _sync(device)
        best = min(best, time.perf_counter() - start)
    return best, result


def min_abs_cos(a: np.ndarray, b: np.ndarray) -> float:
    """Smallest |cos| between matching rows of a and b (sign-free: directions are axes)."""
    a = np.asarray(a, np.float64).reshape(-1, np.shape(a)[-1])
    b = np.asarray(b, np.float64).reshape(-1, np.shape(b)[-1])
    cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    return float(np.abs(cos).min())


def max_error(a: Any, b: Any, relative: bool = False) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    error = np.abs(a - b)
    if relative:
        error = error / np.maximum(np.abs(b), np.finfo(np.float64).tiny)
    return float(np.nanmax(error))


# ------------------------------------------------------------------------------------------ analysis rows
def svm_row(sizes: dict, device: Any, cpu: Any, repeats: int, rng: np.random.Generator) -> dict[str, Any]:
    from engine.device_io import to_device, to_host
    from kernels import LinearSVM

    b, n, d = sizes["svm"]
    normals = rng.standard_normal((b, d)).astype(np.float32)
    X = rng.standard_normal((b, n, d), dtype=np.float32)
    score = np.einsum("bnd,bd->bn", X, normals) + rng.standard_normal((b, n)).astype(np.float32) * 4
    y = (score > np.median(score, axis=1, keepdims=True)).astype(np.float32)

    def run(dev: Any) -> np.ndarray:
        svm = LinearSVM(C=1.0, loss="hinge").fit(to_device(X, dev), to_device(y, dev))
        return to_host(svm.coef_)
    return _row(f"SVM hinge, {b} attributes x {n} x {d}", run, device, cpu, repeats,
                lambda g, c: (min_abs_cos(g, c), max_error(g / np.linalg.norm(g, axis=1, keepdims=True),
                                                           c / np.linalg.norm(c, axis=1, keepdims=True))))


def pca_row(sizes: dict, device: Any, cpu: Any, repeats: int, rng: np.random.Generator) -> dict[str, Any]:
    from engine.device_io import to_host
    from engine.methods.ganspace import pca_merge, pca_partial

    n, d, k = sizes["pca"]
    scale = (0.97 ** np.arange(d)).astype(np.float32)       # distinct variances: well-defined components
    X = rng.standard_normal((n, d), dtype=np.float32) * scale + 3.0

    def run(dev: Any) -> tuple[np.ndarray, np.ndarray]:
        state = None
        for start in range(0, n, BLOCK_ROWS):
            part = pca_partial(X[start:start + BLOCK_ROWS], n_components=k, device=str(dev))
            state = part if state is None else pca_merge(state, part)
        return to_host(state.components_), to_host(state.explained_variance_)
    return _row(f"streaming PCA {n} x {d}, k {k}", run, device, cpu, repeats,
                lambda g, c: (min_abs_cos(g[0], c[0]), max_error(g[1], c[1], relative=True)), relative=True)


def eigh_row(sizes: dict, device: Any, cpu: Any, repeats: int, rng: np.random.Generator) -> dict[str, Any]:
    from engine.device_io import to_device, to_host
    import kernels

    b, d = sizes["eigh"]
    A = rng.standard_normal((b, d, d), dtype=np.float32)
    A = (A + A.transpose(0, 2, 1)) / 2

    def run(dev: Any) -> tuple[np.ndarray, np.ndarray]:
        w, v = kernels.eigh(to_device(A, dev))
        return to_host(w), to_host(v)
    top = min(16, d)
    return _row(f"batched eigh {b} x {d}x{d}", run, device, cpu, repeats,
                lambda g, c: (min_abs_cos(np.swapaxes(g[1], 1, 2)[:, :top], np.swapaxes(c[1], 1, 2)[:, :top]),
                              max_error(g[0], c[0]) / float(np.abs(c[0]).max())), relative=True)


def pearson_row(sizes: dict, device: Any, cpu: Any, repeats: int, rng: np.random.Generator) -> dict[str, Any]:
    from engine.device_io import to_host
    from engine.methods.correlate import pearson_merge, pearson_partial

    n, m = sizes["corr"]
    S = rng.standard_normal((n, m), dtype=np.float32) @ rng.standard_normal((m, m), dtype=np.float32)
    block = max(BLOCK_ROWS, (32 << 20) // (m * 4))           # reduce_rows' ~32 MB blocks

    def run(dev: Any) -> np.ndarray:
        state = None
        for start in range(0, n, block):
            part = pearson_partial(S[start:start + block], device=str(dev))
            state = part if state is None else pearson_merge(state, part)
        return to_host(state.result())
    return _row(f"Pearson {n} x {m}", run, device, cpu, repeats, lambda g, c: (None, max_error(g, c)))


def cosine_row(sizes: dict, device: Any, cpu: Any, repeats: int, rng: np.random.Generator) -> dict[str, Any]:
    from engine.device_io import to_device, to_host
    import kernels

    n, m = sizes["corr"]
    columns = np.ascontiguousarray(rng.standard_normal((n, m), dtype=np.float32).T)

    def run(dev: Any) -> np.ndarray:
        rows = to_device(columns, dev)
        return to_host(kernels.cosine_matrix(rows, rows))
    return _row(f"cosine of {m} columns of {n}", run, device, cpu, repeats, lambda g, c: (None, max_error(g, c)))


def _row(task: str, run: Callable[[Any], Any], device: Any, cpu: Any, repeats: int,
         parity: Callable[[Any, Any], tuple[float | None, float]], relative: bool = False) -> dict[str, Any]:
    gpu_s, gpu_out = timed(run, device, repeats)
    cpu_s, cpu_out = timed(run, cpu, 1)
    cos, error = parity(gpu_out, cpu_out)
    return {"task": task, "gpu_s": gpu_s, "cpu_s": cpu_s, "speedup": cpu_s / gpu_s, "min_abs_cos": cos,
            "max_error": error, "error_kind": "relative" if relative else "absolute"}


# ------------------------------------------------------------------------------------------ sampler rows
def _bottleneck(torch: Any, cin: int, width: int, stride: int) -> Any:
    nn = torch.nn
    out = width * 4

    class Bottleneck(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Sequential(
                nn.Conv2d(cin, width, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
                nn.Conv2d(width, width, 3, stride, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
                nn.Conv2d(width, out, 1, bias=False), nn.BatchNorm2d(out))
            self.short = nn.Identity() if stride == 1 and cin == out else nn.Sequential(
                nn.Conv2d(cin, out, 1, stride, bias=False), nn.BatchNorm2d(out))

        def forward(self, x: Any) -> Any:
            return torch.relu(self.body(x) + self.short(x))
    return Bottleneck()


def resnet50(width: int = 64, outputs: int = 40, generator: Any = None) -> Any:
    """A ResNet-50-shaped predictor (random weights, eval-mode BatchNorm): images (B, 3, H, W) in [-1, 1] ->
    (B, ``outputs``) scores. ``width`` 64 is ResNet-50's own (25.6M parameters with 1000 outputs)."""
    import torch

    nn = torch.nn
    torch.manual_seed(0)
    layers: list[Any] = [nn.Conv2d(3, width, 7, 2, 3, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
                         nn.MaxPool2d(3, 2, 1)]
    cin = width
    for stage, blocks in enumerate((3, 4, 6, 3)):
        for i in range(blocks):
            layers.append(_bottleneck(torch, cin, width * 2 ** stage, 2 if i == 0 and stage > 0 else 1))
            cin = width * 2 ** stage * 4
    net = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, outputs))
    net.attributes = [f"attribute_{j}" for j in range(outputs)]
    return net


def stylegan2_file(config: dict, folder: str) -> str:
    """A rosinality-layout StyleGAN2 checkpoint with random weights, as a file the engine loads."""
    import torch

    from tests.stylegan2_checkpoints import rosinality_state

    path = os.path.join(folder, f"stylegan2-{config['size']}.pt")
    state = rosinality_state(size=config["size"], style_dim=config["style_dim"], n_mlp=config["n_mlp"],
                             channel_multiplier=2, max_channels=config["max_channels"])
    torch.save({"g_ema": state}, path)
    return path


def sampler_rows(sizes: dict, device: Any, repeats: int) -> list[dict[str, Any]]:
    from engine.bench import BenchConfig, compare

    config = sizes["sampler"]
    rows, fp32 = [], None
    with tempfile.TemporaryDirectory(prefix="bench-gpu-") as folder:
        spec = f"stylegan2:{stylegan2_file(config, folder)}"
        for precision in ("fp32", "bf16"):
            predictor = f"benchmarks.bench_gpu:resnet50:width={config['width']}"
            bench = BenchConfig(generator=spec, predictors=(predictor,),
                                n=config["n"], batch=config["batch"], chunk=config["chunk"], device=str(device),
                                precision=precision)
            found = {r["variant"]: r for r in compare(bench, ("bare", "engine"), repeats)["results"]}
            engine, bare = found["engine"]["samples_per_s"], found["bare"]["samples_per_s"]
            fp32 = fp32 or engine
            rows.append({"task": f"sampler StyleGAN2-{config['size']} + ResNet-50, {precision}, batch "
                                 f"{config['batch']}", "engine_per_s": engine, "bare_per_s": bare,
                         "engine_vs_bare": engine / bare, "vs_fp32": engine / fp32})
    return rows


# ------------------------------------------------------------------------------------------ table
def table(result: dict[str, Any]) -> str:
    lines = [f"GPU check  {result['date']}  device {result['device']} ({result['device_name']})  "
             f"torch {result['torch']}  cupy {result['cupy']}  quick {result['quick']}", "",
             f"{'task':<44} {'GPU s':>9} {'CPU s':>9} {'speed-up':>9} {'min |cos|':>10} {'max error':>10}"]
    for r in result["analyses"]:
        cos = "-" if r["min_abs_cos"] is None else f"{r['min_abs_cos']:.6f}"
        error = f"{r['max_error']:.1e}" + (" rel" if r["error_kind"] == "relative" else "")
        lines.append(f"{r['task']:<44} {r['gpu_s']:>9.3f} {r['cpu_s']:>9.3f} {r['speedup']:>8.1f}x {cos:>10} "
                     f"{error:>10}")
    if result["sampler"]:
        lines += ["", f"{'sampler':<56} {'engine/s':>9} {'bare/s':>9} {'eng/bare':>9} {'vs fp32':>8}"]
        for r in result["sampler"]:
            lines.append(f"{r['task']:<56} {r['engine_per_s']:>9.1f} {r['bare_per_s']:>9.1f} "
                         f"{r['engine_vs_bare']:>9.3f} {r['vs_fp32']:>7.2f}x")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", help="cuda, cuda:<index> (or cpu, for a dry run).")
    parser.add_argument("--quick", action="store_true", help="Tiny sizes: a dry run of the driver in seconds.")
    parser.add_argument("--repeats", type=int, default=3, help="GPU runs per task (best kept); sampler repeats.")
    parser.add_argument("--skip-sampler", action="store_true")
    parser.add_argument("--json", type=Path, default=None, help="Also write the results here.")
    args = parser.parse_args(argv)
    import torch

    from engine.devices import resolve_device
    from kernels.backend import cupy_available

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("bench_gpu: no CUDA device: torch sees no GPU on this machine (run with --quick --device cpu for a "
              "dry run)", file=sys.stderr)
        return 2
    device = resolve_device(args.device)
    sizes = QUICK if args.quick else FULL
    rng = np.random.default_rng(0)
    cpu = torch.device("cpu")
    analyses = []
    for row in (svm_row, pca_row, eigh_row, pearson_row, cosine_row):
        analyses.append(row(sizes, device, cpu, args.repeats, rng))
        print(f"  {analyses[-1]['task']}: GPU {analyses[-1]['gpu_s']:.3f} s, CPU {analyses[-1]['cpu_s']:.3f} s",
              file=sys.stderr, flush=True)
    sampler = [] if args.skip_sampler else sampler_rows(sizes, device, 1 if args.quick else args.repeats)
    result = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "device": str(device),
              "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU",
              "torch": torch.__version__, "cupy": cupy_available(), "quick": args.quick, "analyses": analyses,
              "sampler": sampler}
    print(table(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


# ------------------------------------------------------------------------------------------ pytest plugin
def _needs_cuda(item: Any) -> bool:
    if item.get_closest_marker("gpu") is not None:
        return True
    for mark in item.iter_markers("skipif"):
        reason = str(mark.kwargs.get("reason", "")).lower()
        if "cuda" in reason or "gpu" in reason:
            return "without" not in reason and "no gpu" not in reason  # not the tests *for* CPU-only machines
    return False


def pytest_collection_modifyitems(config: Any, items: list) -> None:
    """With ``-p bench_gpu``: keep only the tests that need CUDA (see the module docstring)."""
    selected = [item for item in items if _needs_cuda(item)]
    config.hook.pytest_deselected(items=[item for item in items if item not in selected])
    items[:] = selected


if __name__ == "__main__":
    sys.exit(main())
