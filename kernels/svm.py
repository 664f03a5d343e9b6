"""Batched linear SVM: b independent problems (b, n, d) solved together by a primal Newton method.

Objective per problem, with x̃ = [x, 1] when ``fit_intercept`` and labels y in {-1, +1}:

    f(θ) = ½ θᵀRθ + C Σᵢ ℓ(yᵢ θᵀx̃ᵢ)

* ``loss="squared_hinge"``: ℓ(m) = max(0, 1 - m)². R = I: the intercept is penalised like a weight, which is
  liblinear's convention (``LinearSVC``, intercept_scaling=1), the reference this loss is tested against.
* ``loss="hinge"``: ℓ(m) = max(0, 1 - m), InterFaceGAN's ``SVC(kernel='linear')`` objective. R = diag(1, .., 1, 0):
  the intercept is free, as in SVC (libsvm's dual has the equality constraint Σ αᵢyᵢ = 0).

Solver (why): generalized Newton with an exact line search, as in Keerthi & DeCoste's finite Newton method for
the squared hinge (liblinear's TRON solves the same Newton systems with CG). Because n ≫ d here (14K x 512),
the Hessian H = R + C X̃ᵀ diag(ℓ''(m)) X̃ is formed once and then *updated* with only the rows whose curvature
changed since the last step, and solved by a float64 Cholesky: few, exact steps made of batched GEMMs, which is
what a GPU likes, and finite termination once the active set settles (4 steps on the benchmark problems).

The non-smooth hinge is replaced by its softplus smoothing ℓ_μ(m) = μ·log(1 + exp((1 - m)/μ)) (|ℓ_μ - ℓ| ≤ μ·ln 2)
and solved by continuation μ = ``_MU_START`` → ×``_MU_STEP`` → ``_MU_MIN`` per problem, each stage warm-started and
solved by the same Newton iteration to ``_STAGE_TOL`` (the last one to ``tol``). Unlike a Huber smoothing, the
softplus keeps curvature on rows near the margin band, so Newton does not crawl after μ shrinks; rows with
|1 - m| > ``_CURVATURE_CUTOFF``·μ (curvature below 0.2% of its peak) are left out of the Hessian, so late steps
touch only the few rows near the margin. ``_MU_MIN`` = 0.01 puts the unit normal within cos 0.9999 of SVC's
(0.99991 on the 14K x 512 benchmark, objective +0.024 %), far inside the 0.99 asked for. Where many rows sit on
the margin (fewer rows than dimensions, near-separable data) the smoothing itself weighs on the objective (+10 %
on a 300 x 400 problem at μ = 0.01), so μ keeps shrinking, one decade per stage down to ``_MU_FLOOR``, while
the smoothing adds more than ``_SMOOTHING_GAP`` of the exact objective at the current solution (that problem:
+1 %, cos 0.9999994, 42 steps instead of 27; the papers' problems stop at 0.01 as before). (Tried first: Huber smoothing, whose curvature vanishes outside a band of
width μ, made Newton crawl for tens of steps after every cut of μ; a primal-dual active-set polish on SVC's
KKT system diverged from those warm starts.)

Threads: on a CPU the batch is split over the single-threaded workers of ``kernels._threads`` (see
``_solve_batch``): each worker solves a contiguous share of the problems with one intra-op thread, so no OpenMP
barrier is ever entered. The solver is thousands of small ops, each a parallel region ending in a barrier when
torch has two or more threads, and when other processes load the cores a team member that spins or is
descheduled at a barrier stalls it for a scheduler time slice: fits then ran many times slower on two threads,
never on one thread or with OMP_WAIT_POLICY=passive.

Precision: X stays in its dtype (float32 GEMMs and mat-vecs); margins, gradients, the Hessian accumulator, the
Cholesky solve and the line search are float64. Convergence: ‖∇f‖₂ ≤ tol · ‖∇f(0)‖₂ per problem (at the final
μ for the hinge); ``n_iter_`` counts Newton steps.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from ._validation import ConvergenceWarning, check_finite, check_fitted, check_interval, check_option
from .backend import as_tensors, device_scope, import_cupy, resolve_impl, to_cupy, to_origin
from ._threads import CPU_POOL as _CPU_POOL  # the process's single-threaded CPU workers, shared with eigh

_MU_START = 0.1
_MU_MIN = 1e-2
#: Below _MU_MIN, μ keeps shrinking (to _MU_FLOOR) while the smoothing still adds more than this fraction to the
#: objective at the current solution: only problems with few rows per margin row (near-separable) need it.
_SMOOTHING_GAP = 5e-3
_MU_FLOOR = 1e-5
_MU_STEP = 0.1
_CURVATURE_CUTOFF = 8.0
_STAGE_TOL = 1e-3
_LINE_SEARCH_STEPS = 60


class LinearSVM:
    """Linear support vector classifier in scikit-learn's manner, fitting one or a batch of problems.

    Parameters
    ----------
    C : float in (0, inf)
        Inverse regularisation strength.
    loss : "squared_hinge" (matches ``LinearSVC``) or "hinge" (matches ``SVC(kernel='linear')``).
    fit_intercept : bool
    tol : float in (0, 1)
        Relative gradient norm at which a problem counts as converged.
    max_iter : int ≥ 1
        Newton steps per problem (all continuation stages together for the hinge).
    impl : "auto", "torch" or "cupy"
        "cupy" evaluates the loss terms in one fused GPU kernel; "auto" uses it when cupy and a GPU are present.

    ``fit(X, y)`` takes X (n, d) and y (n,), or X (b, n, d) and y (b, n) for b independent problems; y holds
    {0, 1} or {-1, +1}. Fitted: ``coef_`` (b, d) and ``intercept_`` (b,) as X's array type (b = 1 for 2-D X),
    ``classes_``, ``n_iter_`` and ``converged_`` (int/bool for 2-D X, arrays for batched X).
    """

    def __init__(
        self,
        C: float = 1.0,
        loss: str = "squared_hinge",
        fit_intercept: bool = True,
        tol: float = 1e-5,
        max_iter: int = 200,
        impl: str = "auto",
    ) -> None:
        self.C = C
        self.loss = loss
        self.fit_intercept = fit_intercept
        self.tol = tol
        self.max_iter = max_iter
        self.impl = impl

    def fit(self, X: Any, y: Any) -> "LinearSVM":
        """Solve every problem in X, y; returns self. Warns ConvergenceWarning for any problem not converged."""
        owner = "LinearSVM"
        check_interval(self.C, "C", owner, float, 0.0)
        check_option(self.loss, "loss", owner, ("squared_hinge", "hinge"))
        check_option(self.fit_intercept, "fit_intercept", owner, (True, False))
        check_interval(self.tol, "tol", owner, float, 0.0, 1.0)
        check_interval(self.max_iter, "max_iter", owner, int, 1, closed="left")
        (x, labels), origin = as_tensors(X, y, float_dtype=False, names=("X", "y"))
        x = x if x.dtype in (torch.float32, torch.float64) else x.to(torch.float32)
        batched = x.ndim == 3
        if x.ndim not in (2, 3) or labels.shape != x.shape[:-1]:
            raise ValueError(f"The 'X' and 'y' parameters of {owner} must have shapes (n, d) and (n,), or (b, n, d) "
                             f"and (b, n). Got {tuple(x.shape)} and {tuple(labels.shape)} instead.")
        if x.shape[-1] == 0 or x.shape[-2] == 0:
            raise ValueError(f"The 'X' parameter of {owner} must have at least one row and one column. "
                             f"Got shape {tuple(x.shape)} instead.")
        check_finite(x, "X", owner)
        x, labels = (x, labels) if batched else (x[None], labels[None])
        self.classes_, ys = _signed_labels(labels, owner)
        impl = resolve_impl(self.impl, x.device, owner)
        with device_scope(x.device, cupy=impl == "cupy"):
            theta, n_iter, converged = _solve_batch(x.contiguous(), ys, float(self.C), self.loss,
                                                    self.fit_intercept, float(self.tol), int(self.max_iter), impl)
        d = x.shape[-1]
        self._coef = theta[:, :d]
        self._intercept = theta[:, d] if self.fit_intercept else torch.zeros_like(theta[:, 0])
        self._origin, self._dtype, self._batched = origin, x.dtype, batched
        n_iter, converged = n_iter.cpu().numpy(), converged.cpu().numpy()
        self.n_iter_ = n_iter if batched else int(n_iter[0])
        self.converged_ = converged if batched else bool(converged[0])
        if not converged.all():
            bad = np.flatnonzero(~converged).tolist()
            warnings.warn(f"LinearSVM did not converge within max_iter={self.max_iter} Newton steps for problem(s) "
                          f"{bad}; increase max_iter or tol.", ConvergenceWarning, stacklevel=2)
        return self

    @property
    def coef_(self) -> Any:
        """(b, d) weight vectors (not normalised), as X's array type and dtype."""
        check_fitted(self, "_coef")
        return to_origin(self._coef.to(self._dtype), self._origin)

    @property
    def intercept_(self) -> Any:
        """(b,) intercepts (zeros when fit_intercept=False)."""
        check_fitted(self, "_coef")
        return to_origin(self._intercept.to(self._dtype), self._origin)

    def _scores(self, X: Any) -> tuple[torch.Tensor, Any]:
        check_fitted(self, "_coef")
        (x,), origin = as_tensors(X, names=("X",))
        b, d = self._coef.shape
        if x.ndim not in (2, 3) or x.shape[-1] != d or (x.ndim == 3 and x.shape[0] != b):
            raise ValueError(f"The 'X' parameter of LinearSVM must have shape (n, {d}) or ({b}, n, {d}). Got "
                             f"{tuple(x.shape)} instead.")
        check_finite(x, "X", "LinearSVM")
        coef, intercept = self._coef.to(x.device, x.dtype), self._intercept.to(x.device, x.dtype)
        scores = torch.matmul(x, coef[..., None])[..., 0] if x.ndim == 3 else coef @ x.T
        scores = scores + intercept[:, None]
        return (scores if x.ndim == 3 or b > 1 else scores[0]), origin

    def decision_function(self, X: Any) -> Any:
        """Signed distances θᵀx̃ (n,) for 2-D X and one problem; (b, n) for batched X or a batched fit."""
        scores, origin = self._scores(X)
        return to_origin(scores, origin)

    def predict(self, X: Any) -> Any:
        """Labels from ``classes_`` (positive side → classes_[1]), shaped like ``decision_function``."""
        scores, origin = self._scores(X)
        classes = torch.as_tensor(self.classes_, device=scores.device)
        return to_origin(classes[(scores > 0).long()], origin)

    def score(self, X: Any, y: Any) -> Any:
        """Mean accuracy: a float for one problem, a (b,) array for batched ones."""
        scores, origin = self._scores(X)
        (labels,), _ = as_tensors(y, float_dtype=False, names=("y",))
        if labels.shape != scores.shape:
            raise ValueError(f"The 'y' parameter of LinearSVM.score must have shape {tuple(scores.shape)}. Got "
                             f"{tuple(labels.shape)} instead.")
        classes = torch.as_tensor(self.classes_, device=scores.device)
        accuracy = (classes[(scores > 0).long()] == labels.to(classes.dtype)).double().mean(-1)
        return float(accuracy) if accuracy.ndim == 0 else to_origin(accuracy, origin)


def _signed_labels(labels: torch.Tensor, owner: str) -> tuple[np.ndarray, torch.Tensor]:
    """classes_ and float64 signs in {-1, +1}; ValueError for other labels or a problem with one class."""
    values = torch.unique(labels.to(torch.float64)).cpu().tolist()
    if set(values) <= {0.0, 1.0}:
        classes = np.array([0, 1])
    elif set(values) <= {-1.0, 1.0}:
        classes = np.array([-1, 1])
    else:
        raise ValueError(f"The 'y' parameter of {owner} must hold labels {{0, 1}} or {{-1, +1}}. Got values "
                         f"{values[:6]} instead.")
    ys = torch.where(labels.to(torch.float64) == 1.0, 1.0, -1.0).to(torch.float64)
    positives = (ys > 0).sum(-1)
    single = torch.nonzero((positives == 0) | (positives == ys.shape[-1]))[:, 0].tolist()
    if single:
        raise ValueError(f"The 'y' parameter of {owner} must contain both classes in every problem. Got a single "
                         f"class in problem(s) {single[:6]} instead.")
    return classes, ys


# -- loss terms: ℓ'(m) and ℓ''(m) of the squared hinge (mu None) or the softplus-smoothed hinge (mu > 0) ---------
def _loss_terms_torch(m: torch.Tensor, mu: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """ℓ'(m) and the (cut-off) ℓ''(m) per row; mu (b, 1) broadcasts over the rows."""
    if mu is None:
        slack = (1.0 - m).clamp_min(0.0)
        return -2.0 * slack, 2.0 * (slack > 0)
    u = (1.0 - m) / mu
    sig = torch.sigmoid(u)
    return -sig, torch.where(u.abs() < _CURVATURE_CUTOFF, sig * (1.0 - sig) / mu, 0.0)


@functools.cache
def _cupy_kernel() -> Any:
    return import_cupy().ElementwiseKernel(
        "float64 m, float64 mu", "float64 d1, float64 d2",
        """
        double s = 1.0 - m;
        if (mu == 0.0) { d1 = s > 0.0 ? -2.0 * s : 0.0; d2 = s > 0.0 ? 2.0 : 0.0; }
        else {
            double u = s / mu, sig = 1.0 / (1.0 + exp(-u));
            d1 = -sig;
            d2 = fabs(u) < CUTOFF ? sig * (1.0 - sig) / mu : 0.0;
        }
        """,
        "latent_engine_hinge_terms",
        preamble=f"#define CUTOFF {_CURVATURE_CUTOFF!r}",
    )


def _loss_terms_cupy(m: torch.Tensor, mu: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """The same terms in one fused elementwise pass on the GPU (one read of m, two writes; mu broadcasts)."""
    d1, d2 = _cupy_kernel()(to_cupy(m), 0.0 if mu is None else to_cupy(mu))
    return torch.from_dlpack(d1), torch.from_dlpack(d2)


# -- the batched Newton solver ---------------------------------------------------------------------------------
class _Problem:
    """Data and linear maps of b problems: X (b, n, d), signs ys (b, n), θ = [w, b] (b, p)."""

    def __init__(self, x: torch.Tensor, ys: torch.Tensor, fit_intercept: bool) -> None:
        self.x, self.ys, self.fit_intercept = x, ys, fit_intercept
        self.d = x.shape[-1]

    def margins(self, theta: torch.Tensor) -> torch.Tensor:
        """yᵢ θᵀx̃ᵢ, float64 (b, n)."""
        out = (self.x @ theta[:, :self.d, None].to(self.x.dtype))[..., 0].to(torch.float64)
        if self.fit_intercept:
            out = out + theta[:, self.d:]
        return out * self.ys

    def xt(self, v: torch.Tensor) -> torch.Tensor:
        """X̃ᵀv for v (b, n): (b, p) float64."""
        out = torch.bmm(v[:, None, :].to(self.x.dtype), self.x)[:, 0].to(torch.float64)
        return torch.cat([out, v.sum(-1, keepdim=True)], -1) if self.fit_intercept else out

    def gram_update(self, hess: torch.Tensor, weights: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """hess + X̃_Sᵀ diag(w) X̃_S over the rows marked in ``rows`` (b, n) with float64 ``weights`` (b, n).

        The rows are gathered (padded to the largest count in the batch with zero weights) and multiplied in
        X's dtype; the product is accumulated into the float64 ``hess``.
        """
        k = int(rows.sum(-1).max())
        if k == 0:
            return hess
        if k == rows.shape[-1]:  # every row of some problem: skip the gather copy
            sel, w = self.x, torch.where(rows, weights, 0.0)
        else:
            idx = torch.topk(rows.to(torch.int8), k, dim=-1, sorted=False).indices
            sel = self.x.gather(1, idx[..., None].expand(-1, -1, self.d))
            w = torch.where(rows.gather(1, idx), weights.gather(1, idx), 0.0)
        w_x = w[:, None, :].to(sel.dtype)
        hess = hess.clone()
        hess[:, :self.d, :self.d] += ((sel * w_x.mT).mT @ sel).to(torch.float64)
        if self.fit_intercept:
            column = (w_x @ sel)[:, 0].to(torch.float64)
            hess[:, :self.d, self.d] += column
            hess[:, self.d, :self.d] += column
            hess[:, self.d, self.d] += w.sum(-1)
        return hess


def _solve_batch(x: torch.Tensor, ys: torch.Tensor, *args: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``_newton(x, ys, *args)``; on a CPU, the problems are split over single-threaded workers.

    The problems are independent (each keeps its own θ, μ, damping and step length), so a share of the batch
    solved apart gives the same answer up to float rounding in the batched products. Where splitting is not
    possible (one torch thread, a build where the workers cannot be made single-threaded, a GPU) the batch is
    solved by ``_newton`` in the calling thread as before.
    """
    found = _CPU_POOL.executor() if x.device.type == "cpu" else None
    if found is None:
        return _newton(x, ys, *args)
    pool, workers = found
    b = x.shape[0]
    bounds = [round(i * b / min(b, workers)) for i in range(min(b, workers) + 1)]
    solve = _in_caller_modes(_newton)
    try:
        futures = [pool.submit(solve, x[lo:hi], ys[lo:hi], *args) for lo, hi in zip(bounds[:-1], bounds[1:])]
    except RuntimeError:  # the interpreter is shutting down and takes no new work for threads
        return _newton(x, ys, *args)
    parts = [future.result() for future in futures]
    return tuple(torch.cat(pieces) for pieces in zip(*parts))  # type: ignore[return-value]


def _in_caller_modes(function: Callable[..., Any]) -> Callable[..., Any]:
    """``function`` run under the calling thread's grad and inference modes (they are per thread in torch)."""
    grad, inference = torch.is_grad_enabled(), torch.is_inference_mode_enabled()

    def run(*args: Any) -> Any:
        with torch.inference_mode(inference), torch.set_grad_enabled(grad):
            return function(*args)
    return run


def _newton(x: torch.Tensor, ys: torch.Tensor, C: float, loss: str, fit_intercept: bool, tol: float,
            max_iter: int, impl: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Minimise f for every problem; returns θ (b, p) float64, Newton steps (b,), converged (b,)."""
    loss_terms = _loss_terms_cupy if impl == "cupy" else _loss_terms_torch
    prob = _Problem(x, ys, fit_intercept)
    b, n, d = x.shape
    p = d + int(fit_intercept)
    dev = x.device
    reg = torch.ones(p, dtype=torch.float64, device=dev)
    if fit_intercept and loss == "hinge":
        reg[-1] = 0.0
    smooth = loss == "hinge"
    mu = torch.full((b, 1), _MU_START, dtype=torch.float64, device=dev) if smooth else None
    theta = torch.zeros(b, p, dtype=torch.float64, device=dev)
    m = torch.zeros(b, n, dtype=torch.float64, device=dev)
    hess = torch.zeros(b, p, p, dtype=torch.float64, device=dev)
    curv = torch.zeros(b, n, dtype=torch.float64, device=dev)
    n_iter = torch.zeros(b, dtype=torch.long, device=dev)
    done = torch.zeros(b, dtype=torch.bool, device=dev)
    g0 = None
    eye = torch.eye(p, dtype=torch.float64, device=dev)
    # Levenberg–Marquardt damping, relative to the Hessian's largest diagonal entry. Near-separable hinge
    # problems leave only a handful of rows in the smoothed curvature band, so the Hessian is nearly singular
    # along the free intercept: undamped Newton steps then overshoot by orders of magnitude, the exact line
    # search cuts them to almost nothing, and Newton stalls. Damping grows while steps are cut back and decays
    # while full steps are taken, so well-conditioned problems keep pure Newton steps.
    damping = torch.zeros(b, dtype=torch.float64, device=dev)
    while True:
        d1, d2 = loss_terms(m, mu)
        grad = reg * theta + C * prob.xt(ys * d1)
        gnorm = torch.linalg.vector_norm(grad, dim=-1)
        g0 = gnorm.clamp_min(torch.finfo(torch.float64).tiny) if g0 is None else g0
        stage_done = gnorm <= tol * g0
        if smooth:  # a problem converged at its μ moves on to a smaller μ; it is done at _MU_MIN (see above)
            small_gap = _relative_smoothing_gap(m, mu, theta, reg, C) <= _SMOOTHING_GAP
            final = (mu[:, 0] <= _MU_FLOOR * 1.000001) | ((mu[:, 0] <= _MU_MIN * 1.000001) & small_gap)
            advance = (gnorm <= max(tol, _STAGE_TOL) * g0) & ~final & ~done
            done |= stage_done & final
            if bool(advance.any()):
                mu = torch.where(advance[:, None], (mu * _MU_STEP).clamp_min(_MU_FLOOR), mu)
                continue
        else:
            done |= stage_done
        active = ~done & (n_iter < max_iter)
        if not bool(active.any()):
            break
        new_curv = C * d2
        changed = (new_curv != curv) & active[:, None]
        nonzero = (new_curv != 0) & active[:, None]
        if int(changed.sum(-1).max()) < int(nonzero.sum(-1).max()):
            hess = prob.gram_update(hess, new_curv - curv, changed)
        else:
            hess = prob.gram_update(torch.where(active[:, None, None], 0.0, hess), new_curv, nonzero)
        curv = torch.where(active[:, None], new_curv, curv)
        system = hess + torch.diag_embed(reg.expand(b, p))
        scale = torch.diagonal(system, dim1=-2, dim2=-1).amax(-1)
        step = _solve(system + (damping * scale)[:, None, None] * eye, -grad, eye)
        step = torch.where(active[:, None], step, 0.0)
        z = prob.margins(step)
        t = _line_search(m, z, theta, step, reg, C, mu, loss_terms, (grad * step).sum(-1).abs())
        cut = active & (t < 0.25)
        damping = torch.where(cut, (damping * 10).clamp_min(1e-6), torch.where(t > 0.75, damping * 0.1, damping))
        damping = torch.where(damping < 1e-12, 0.0, damping)
        theta = theta + t[:, None] * step
        m = m + t[:, None] * z  # margins are linear in θ: no extra pass over X
        n_iter += active.long()
    return theta, n_iter, done


def _relative_smoothing_gap(m: torch.Tensor, mu: torch.Tensor, theta: torch.Tensor, reg: torch.Tensor,
                            C: float) -> torch.Tensor:
    """(smoothed − exact hinge objective) / exact objective at θ, per problem: C·Σ μ·log(1 + e^(−|1−m|/μ)) / f."""
    gap = C * (mu * torch.nn.functional.softplus(-(1.0 - m).abs() / mu)).sum(-1)
    exact = 0.5 * (reg * theta * theta).sum(-1) + C * (1.0 - m).clamp_min(0.0).sum(-1)
    return gap / exact.clamp_min(torch.finfo(torch.float64).tiny)


def _solve(hess: torch.Tensor, rhs: torch.Tensor, eye: torch.Tensor) -> torch.Tensor:
    """Solve the SPD systems by Cholesky; a matrix that is only semidefinite gets a tiny relative ridge."""
    scale = torch.diagonal(hess, dim1=-2, dim2=-1).amax(-1)[:, None, None]
    jitter = 0.0
    for _ in range(8):
        factor, info = torch.linalg.cholesky_ex(hess + jitter * scale * eye)
        if not bool((info != 0).any()):
            return torch.cholesky_solve(rhs[..., None], factor)[..., 0]
        jitter = 1e-13 if jitter == 0.0 else jitter * 100
    raise ValueError("LinearSVM's Newton system is not positive definite even with a ridge; X may be degenerate.")


def _line_search(m: torch.Tensor, z: torch.Tensor, theta: torch.Tensor, step: torch.Tensor, reg: torch.Tensor,
                 C: float, mu: torch.Tensor | None, loss_terms: Any, slope0: torch.Tensor) -> torch.Tensor:
    """Exact minimiser t ≥ 0 of f(θ + t·s) per problem: safeguarded Newton on the monotone φ'(t).

    ``slope0`` = |φ'(0)| = |∇f·s| sets the scale at which φ'(t) counts as zero.
    """
    a = (reg * theta * step).sum(-1)
    c2 = (reg * step * step).sum(-1)
    lo = torch.zeros_like(a)
    hi = torch.full_like(a, torch.inf)
    t = torch.ones_like(a)
    for _ in range(_LINE_SEARCH_STEPS):
        d1, d2 = loss_terms(m + t[:, None] * z, mu)
        slope = a + t * c2 + C * (d1 * z).sum(-1)
        curve = c2 + C * (d2 * z * z).sum(-1)
        settled = (slope.abs() <= 1e-8 * slope0) | (hi - lo <= 1e-15 * t)
        if bool(settled.all()):
            break
        lo = torch.where(slope < 0, t, lo)
        hi = torch.where(slope > 0, t, hi)
        newton = t - slope / curve.clamp_min(1e-300)
        inside = (newton > lo) & (newton < hi)
        t_next = torch.where(inside, newton, torch.where(torch.isinf(hi), 2 * t, 0.5 * (lo + hi)))
        t = torch.where(settled, t, t_next)
    return t

