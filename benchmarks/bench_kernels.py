"""Each kernel against its baseline in one process: time ratio and parity (cuML's AlgorithmPair idea).

    python benchmarks/bench_kernels.py [--quick] [--json PATH] [--only eigh,pca,correlation,svm]

Full sizes follow the papers: 5 InterFaceGAN attributes (14K x 512 train rows from the top/bottom 10K of 200K
rows ranked by a noisy linear score, validation accuracy ~0.89), GANSpace PCA of 500K x 512 with 64 components,
SeFa-sized eigh of 200 stacked 512 x 512 Gram matrices, Pearson of 500K x 40 scores and a 10K x 512 cosine table.
One SVC(kernel='linear') fit takes minutes: it is timed once and multiplied by the number of attributes.

Timings on a shared machine move with its load; every row records the load average, torch's and BLAS's thread
counts and whether OPENBLAS_CORETYPE is set (it is only read, never changed). On an oversubscribed machine
OpenMP/MKL threads that spin at barriers slow small LAPACK calls by up to 50x (measured here: 20 eigh of 256x256,
0.07 s with 1 thread, 3.5-6 s with 2 at load average 5); ``--threads 1`` then gives both sides a fair footing.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import kernels  # noqa: E402


def _environment() -> dict[str, Any]:
    return {
        "openblas_coretype": os.environ.get("OPENBLAS_CORETYPE", "<unset>"),
        "torch_threads": torch.get_num_threads(),
        "blas_threads": _blas_threads(),
        "load_avg_1m": round(os.getloadavg()[0], 2),
    }


def _blas_threads() -> int:
    from threadpoolctl import threadpool_info

    return max((pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"), default=0)


class _PeakRSS:
    """Peak resident memory above the starting level while the block runs (sampled every 5 ms from /proc).

    Freed heap pages are first handed back to the OS (glibc ``malloc_trim``), else a block that reuses memory an
    earlier one freed would show no growth.
    """

    def __enter__(self) -> "_PeakRSS":
        gc.collect()
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        self.base = self.peak = self._rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, self._rss())

    @staticmethod
    def _rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    @property
    def mib(self) -> float:
        return round((self.peak - self.base) / 2**20, 1)


def _timed(fn: Callable[[], Any], repeat: int = 1) -> tuple[float, Any]:
    """Best wall time of ``repeat`` calls and the last result."""
    best, out = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def _row(task: str, engine_s: float, baseline: str, baseline_s: float, parity: str, **extra: Any) -> dict[str, Any]:
    return {"task": task, "engine_s": round(engine_s, 4), "baseline": baseline, "baseline_s": round(baseline_s, 4),
            "ratio": round(baseline_s / engine_s, 2), "parity": parity, **extra, **_environment()}


def _unit(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64)
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


# -- SVM ----------------------------------------------------------------------------------------------------------
def interfacegan_problems(b: int, pool: int, keep: int, d: int, sigma: float = 1.5, seed: int = 0):
    """b attributes: top/bottom keep/2 of pool rows by a noisy linear score, split 70/30 into train/validation."""
    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for _ in range(b):
        z = rng.standard_normal((pool, d), dtype=np.float32)
        normal = rng.standard_normal(d)
        score = z @ (normal / np.linalg.norm(normal)).astype(np.float32) + sigma * rng.standard_normal(pool)
        order = np.argsort(score)
        rows = rng.permutation(np.r_[order[: keep // 2], order[-keep // 2:]])
        xs.append(z[rows])
        ys.append((score[rows] > np.median(score)).astype(np.int64))
        del z
    X, y = np.stack(xs), np.stack(ys)
    cut = int(0.7 * keep)
    return X[:, :cut], y[:, :cut], X[:, cut:], y[:, cut:]


def bench_svm(quick: bool) -> list[dict[str, Any]]:
    from sklearn.linear_model import LogisticRegression
    from sklearn.svm import SVC, LinearSVC

    b, pool, keep, d = (5, 20_000, 2_000, 128) if quick else (5, 200_000, 20_000, 512)
    X, y, Xv, yv = interfacegan_problems(b, pool, keep, d)
    size = f"{b} attributes x {X.shape[1]}x{d}"
    rows = []

    t_sq, svm_sq = _timed(lambda: kernels.LinearSVM(loss="squared_hinge").fit(X, y))
    t_lin, refs = _timed(lambda: [LinearSVC(C=1.0).fit(X[i], y[i]) for i in range(b)])
    cos = min(float(_unit(svm_sq.coef_[i]) @ _unit(refs[i].coef_[0])) for i in range(b))
    val = np.asarray(svm_sq.score(Xv, yv))
    rows.append(_row(f"LinearSVM squared_hinge, {size}", t_sq, f"{b} x LinearSVC", t_lin,
                     f"min cos to LinearSVC {cos:.6f}", val_acc=f"{val.min():.3f}-{val.max():.3f}",
                     n_iter=np.asarray(svm_sq.n_iter_).tolist()))
    t_log, logs = _timed(lambda: [LogisticRegression(C=1.0).fit(X[i], y[i]) for i in range(b)])
    cos = min(float(_unit(svm_sq.coef_[i]) @ _unit(logs[i].coef_[0])) for i in range(b))
    rows.append(_row(f"LinearSVM squared_hinge, {size}", t_sq, f"{b} x LogisticRegression", t_log,
                     f"min cos to LogisticRegression {cos:.4f} (other objective)"))

    t_h, svm_h = _timed(lambda: kernels.LinearSVM(loss="hinge").fit(X, y))
    t_svc, ref = _timed(lambda: SVC(kernel="linear", C=1.0).fit(X[0], y[0]))
    cos = float(_unit(svm_h.coef_[0]) @ _unit(ref.coef_[0]))
    val = np.asarray(svm_h.score(Xv, yv))
    rows.append(_row(f"LinearSVM hinge, {size}", t_h, f"{b} x SVC(kernel='linear') (1 fit timed x {b})", b * t_svc,
                     f"cos to SVC (attribute 0) {cos:.6f}", val_acc=f"{val.min():.3f}-{val.max():.3f}",
                     svc_val_acc=round(float(ref.score(Xv[0], yv[0])), 4), n_iter=np.asarray(svm_h.n_iter_).tolist()))
    return rows


# -- PCA ----------------------------------------------------------------------------------------------------------
def bench_pca(quick: bool) -> list[dict[str, Any]]:
    from sklearn.decomposition import PCA, IncrementalPCA

    n, d, k = (50_000, 128, 16) if quick else (500_000, 512, 64)
    rng = np.random.default_rng(1)
    # a GANSpace-like spectrum: a decaying head on a nearly flat tail
    scales = np.r_[np.linspace(4.0, 1.5, k), np.linspace(1.2, 0.8, d - k)].astype(np.float32)
    X = rng.standard_normal((n, d), dtype=np.float32) * scales + 0.5
    size = f"{n}x{d}, {k} components"

    with _PeakRSS() as mem:
        t_ours, ours = _timed(lambda: kernels.PCA(k).fit(X))
        components = ours.components_
    ours_mib = mem.mib
    rows = []
    baselines = [
        ("PCA(svd_solver='full')", lambda: PCA(k, svd_solver="full").fit(X)),
        ("PCA() default (covariance_eigh)", lambda: PCA(k).fit(X)),
        ("PCA(svd_solver='randomized')", lambda: PCA(k, svd_solver="randomized", random_state=0).fit(X)),
        (f"IncrementalPCA(batch_size={max(100, 5 * k)}) (GANSpace)",
         lambda: IncrementalPCA(k, batch_size=max(100, 5 * k)).fit(X)),
    ]
    for name, fit in baselines:
        with _PeakRSS() as mem:
            t_ref, ref = _timed(fit)
        cos = np.abs(np.sum(components * ref.components_, axis=1))
        separated = cos[: k // 2]  # the head of the spectrum, where eigenvalues are separated
        rows.append(_row(f"PCA streaming, {size}", t_ours, name, t_ref,
                         f"|cos| head min {separated.min():.6f}, all min {cos.min():.4f}",
                         engine_peak_mib=ours_mib, baseline_peak_mib=mem.mib))
    return rows


# -- eigh ---------------------------------------------------------------------------------------------------------
def bench_eigh(quick: bool) -> list[dict[str, Any]]:
    count, d = (20, 256) if quick else (200, 512)
    rng = np.random.default_rng(2)
    W = rng.standard_normal((count, d, d), dtype=np.float32) / np.float32(np.sqrt(d))
    A = W @ np.swapaxes(W, -1, -2)  # SeFa's AᵀA-style symmetric Gram matrices, float32
    assert A.dtype == np.float32
    A64 = A.astype(np.float64)

    # best of two: a single LAPACK-bound run here moves by ±30% from one call to the next
    t_ours, (w, v) = _timed(lambda: kernels.eigh(A), repeat=2)
    t_ours64, (w64, v64) = _timed(lambda: kernels.eigh(A64), repeat=2)
    t_f32, _ = _timed(lambda: [np.linalg.eigh(a) for a in A], repeat=2)
    t_f64, refs = _timed(lambda: [np.linalg.eigh(a) for a in A64], repeat=2)

    def parity(w: np.ndarray, v: np.ndarray, top: int = 16) -> str:
        cos = min(float(np.abs(np.sum(v[i][:, :top] * r[1][:, ::-1][:, :top], axis=0)).min())
                  for i, r in enumerate(refs))
        err = max(float(np.abs(w[i] - r[0][::-1]).max() / np.abs(r[0]).max()) for i, r in enumerate(refs))
        return f"top-{top} |cos| min {cos:.6f}, eigenvalue rel err {err:.1e} (vs numpy float64)"

    task = f"eigh batched float32, {count} x {d}x{d}"
    return [_row(task, t_ours, "numpy.linalg.eigh loop, same float32 input", t_f32, parity(w, v)),
            _row(task, t_ours, "numpy.linalg.eigh loop, float64 copy", t_f64, parity(w, v)),
            _row(f"eigh batched float64, {count} x {d}x{d}", t_ours64, "numpy.linalg.eigh loop, same float64 input",
                 t_f64, parity(w64, v64))]


# -- correlation --------------------------------------------------------------------------------------------------
def bench_correlation(quick: bool) -> list[dict[str, Any]]:
    n, m = (50_000, 40) if quick else (500_000, 40)
    rng = np.random.default_rng(3)
    S = (rng.standard_normal((n, 8)) @ rng.standard_normal((8, m)) + rng.standard_normal((n, m))).astype(np.float32)
    t_ours, ours = _timed(lambda: kernels.pearson(S), repeat=3)
    t_ref, ref = _timed(lambda: np.corrcoef(S, rowvar=False), repeat=3)
    rows = [_row(f"pearson, {n}x{m}", t_ours, "numpy.corrcoef", t_ref, f"max abs diff {np.abs(ours - ref).max():.1e}")]

    k, d = (2_000, 512) if quick else (10_000, 512)
    A = rng.standard_normal((k, d), dtype=np.float32)
    B = rng.standard_normal((k, d), dtype=np.float32)

    def numpy_cosine() -> np.ndarray:
        return (A / np.linalg.norm(A, axis=1, keepdims=True)) @ (B / np.linalg.norm(B, axis=1, keepdims=True)).T

    t_ours, ours = _timed(lambda: kernels.cosine_matrix(A, B), repeat=3)
    t_ref, ref = _timed(numpy_cosine, repeat=3)
    rows.append(_row(f"cosine_matrix, {k}x{d} vs {k}x{d}", t_ours, "numpy normalise + matmul", t_ref,
                     f"max abs diff {np.abs(ours - ref).max():.1e}"))
    t_ours, (index, _) = _timed(lambda: kernels.best_match(A, B), repeat=3)
    t_ref, ref_index = _timed(lambda: np.abs(numpy_cosine()).argmax(1), repeat=3)
    rows.append(_row(f"best_match, {k}x{d} vs {k}x{d}", t_ours, "numpy |cos| argmax", t_ref,
                     f"same index {float(np.mean(index == ref_index)):.4f}"))
    return rows


BENCHES = {"eigh": bench_eigh, "correlation": bench_correlation, "pca": bench_pca, "svm": bench_svm}


def run(quick: bool = False, only: list[str] | None = None) -> list[dict[str, Any]]:
    """The kernel benchmarks (all, or the ``only`` ones); one dict per (kernel, baseline) pair."""
    unknown = sorted(set(only or ()) - set(BENCHES))
    if unknown:
        raise ValueError(f"unknown benchmark {', '.join(unknown)}; choose from {', '.join(BENCHES)}")
    rows: list[dict[str, Any]] = []
    for name, bench in BENCHES.items():
        if only and name not in only:
            continue
        rows.extend(bench(quick))
        print(f"{bench.__name__} done: {json.dumps(rows[-1])}", file=sys.stderr, flush=True)
    return rows


def _print_table(rows: list[dict[str, Any]]) -> None:
    print(f"{'task':<46} {'engine s':>9} {'baseline':<52} {'baseline s':>10} {'ratio':>8}  parity")
    for r in rows:
        print(f"{r['task']:<46} {r['engine_s']:>9.3f} {r['baseline']:<52} {r['baseline_s']:>10.3f} "
              f"{r['ratio']:>7.1f}x  {r['parity']}")
    env = _environment()
    print(f"OPENBLAS_CORETYPE={env['openblas_coretype']}, torch threads {env['torch_threads']}, BLAS threads "
          f"{env['blas_threads']}, "
          f"load average at the end {env['load_avg_1m']}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (seconds, for CI)")
    parser.add_argument("--json", type=Path, help="also write the rows as JSON here")
    parser.add_argument("--only", type=lambda text: text.split(","), help="comma-separated subset of "
                        f"{','.join(BENCHES)}")
    parser.add_argument("--threads", type=int, help="limit torch and BLAS threads (engine and baselines alike)")
    args = parser.parse_args(argv)
    if args.threads:
        import sklearn.decomposition  # noqa: F401  (load scipy's and sklearn's BLAS before limiting them)
        import sklearn.svm  # noqa: F401
        from threadpoolctl import threadpool_limits

        torch.set_num_threads(args.threads)
        threadpool_limits(args.threads)
    rows = run(args.quick, args.only)
    _print_table(rows)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
