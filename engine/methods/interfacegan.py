"""InterFaceGAN (paper 001): one linear SVM boundary per attribute, and conditional directions.

``boundaries`` follows InterFaceGAN's train_boundary.py step by step, streamed:

1. one pass over ``scores`` keeps, per attribute, the top and bottom K valid rows (K = ratio × valid rows,
   or ``num``), the count of valid rows and the score range; NaN scores and ``invalid_value`` are dropped;
2. each side is shuffled with a recorded seed and split ``split`` / rest into train / validation;
3. one gather reads the ≤ 2K·m selected rows of the chosen space, chunk by chunk;
4. every attribute is fitted in one batched ``kernels.LinearSVM`` call (hinge loss and C = 1 as
   InterFaceGAN's ``SVC(kernel='linear')``); attributes whose NaNs leave them a different K go in their own
   batch, since a batch shares its row count;
5. one more pass labels the remaining valid rows by the midpoint of the score range (InterFaceGAN's
   ``decision_value = (max + min) / 2``) and measures the boundary's accuracy on them.

The unit normal (pointing to higher scores) is written as (1, d), with the intercept as ``offset`` so that the
signed distance of a code x to the boundary is n·x + offset. Its name says its space (``direction_name``):
``directions/interfacegan/<attr>`` in z (InterFaceGAN's own space, and the name ``--primary NAME`` means),
``<attr>@w``, ``<attr>@wp`` (all layers flattened) and ``<attr>@wp<L>`` (layer L of wp) in the others, so the
boundaries of one attribute in several spaces live side by side; attrs record ``space`` and ``layer`` too.
An attribute whose scores cannot be fitted (no valid score, all equal, too few rows for the split) is skipped
with a warning naming it when all attributes are fitted, and is an error when it was asked for by name.

``condition`` removes from a primary direction its projection onto the span of any number of condition
directions (paper 001's conditional manipulation: n₁ − (n₁ᵀn₂)n₂ for one condition), via an SVD basis of the
conditions, so repeated or linearly dependent conditions add nothing and drop nothing.

Nothing stored is replaced unless ``overwrite`` (``--overwrite``) is given; that is checked before any work.
"""
from __future__ import annotations

import math
import os
import sys
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

import click

from engine.cli.options import echo_json, echo_table, json_option
from engine.methods import Method, ReportSection
from engine.methods._common import device_option, open_for_reading, require_attribute, require_new, writing
from engine.spaces import LatentSpace, LatentView
from engine.store import Store, StoreError

if TYPE_CHECKING:
    import torch

METHOD = "interfacegan"
LOSSES = ("hinge", "squared_hinge")
#: A conditioned direction whose residual norm falls below this is "nearly inside" the conditions' span.
NEARLY_INSIDE = 0.1


# ---------------------------------------------------------------------------------------------- selection
@dataclass
class Extremes:
    """Streaming top-K / bottom-K of one score column; ties broken by row index, so the result is deterministic."""

    capacity: int
    top_values: np.ndarray
    top_index: np.ndarray
    bottom_values: np.ndarray
    bottom_index: np.ndarray
    valid: int = 0
    low: float = math.inf
    high: float = -math.inf

    @classmethod
    def empty(cls, capacity: int) -> "Extremes":
        f, i = np.empty(0, np.float64), np.empty(0, np.int64)
        return cls(capacity, f, i, f, i)

    def update(self, values: np.ndarray, index: np.ndarray) -> None:
        """Add the valid ``values`` at rows ``index``."""
        if values.size == 0:
            return
        self.valid += values.size
        self.low, self.high = min(self.low, float(values.min())), max(self.high, float(values.max()))
        if self.top_values.size == self.capacity:
            # Only rows at least as extreme as the current K-th can enter: most chunks add a handful.
            upper, lower = values >= self.top_values[-1], values <= self.bottom_values[-1]
            self._merge_top(values[upper], index[upper])
            self._merge_bottom(values[lower], index[lower])
        else:
            self._merge_top(values, index)
            self._merge_bottom(values, index)

    def _merge_top(self, values: np.ndarray, index: np.ndarray) -> None:
        if values.size:
            self.top_values, self.top_index = _keep(np.r_[self.top_values, values], np.r_[self.top_index, index],
                                                    self.capacity, descending=True)

    def _merge_bottom(self, values: np.ndarray, index: np.ndarray) -> None:
        if values.size:
            self.bottom_values, self.bottom_index = _keep(np.r_[self.bottom_values, values],
                                                          np.r_[self.bottom_index, index], self.capacity,
                                                          descending=False)


def _keep(values: np.ndarray, index: np.ndarray, k: int, descending: bool) -> tuple[np.ndarray, np.ndarray]:
    # One total order (score, then row) read from either end, so top and bottom never share a row.
    if values.size > k:  # only the K best scores and their ties need the full sort
        key = -values if descending else values
        candidates = np.flatnonzero(key <= np.partition(key, k - 1)[k - 1])
        values, index = values[candidates], index[candidates]
    order = np.lexsort((index, -values) if descending else (-index, values))[:k]
    return values[order], index[order]


def select_extremes(store: Store, columns: Sequence[int], capacity: int, invalid_value: float | None,
                    progress: bool = False, rows_mask: np.ndarray | None = None) -> list[Extremes]:
    """One streamed pass over ``scores``: the extremes of each column in ``columns`` (among the rows
    ``rows_mask`` keeps, when given: one class's rows)."""
    from engine.progress import progress_bar

    found = [Extremes.empty(capacity) for _ in columns]
    # Blocks of ~16 MB of float64 scores: few top-K merges, memory still O(block) whatever n is.
    scores = store.array("scores")
    block_chunks = max(1, (1 << 21) // max(1, int(scores.shape[1])) // int(scores.chunks[0]))
    with progress_bar(total=store.n, desc="selecting top/bottom", unit="rows", enabled=progress) as bar:
        for rows, block in store.iter_rows("scores", block_chunks=block_chunks):
            _add_block(found, rows, block, columns, invalid_value,
                       None if rows_mask is None else rows_mask[rows])
            bar.update(rows.stop - rows.start)
    return found


def _add_block(found: list[Extremes], rows: slice, block: np.ndarray, columns: Sequence[int],
               invalid_value: float | None, kept: np.ndarray | None = None) -> None:
    """Fold one block of score rows (those ``kept`` says, if given) into each column's running extremes."""
    block = block[:, list(columns)].astype(np.float64)
    index = np.arange(rows.start, rows.stop, dtype=np.int64)
    for j, extremes in enumerate(found):
        values = block[:, j]
        ok = np.isfinite(values)
        if invalid_value is not None:
            ok &= values != invalid_value
        if kept is not None:
            ok &= kept
        extremes.update(values[ok], index[ok])


# ---------------------------------------------------------------------------------------------- boundaries
def check_selection(ratio: float | None, num: int | None) -> None:
    """ValueError unless ``num`` (rows per side) is a positive integer or, without it, ``ratio`` is in (0, 0.5]."""
    if num is not None:
        if isinstance(num, bool) or not isinstance(num, (int, np.integer)) or num <= 0:
            raise ValueError(f"num must be a positive integer; got {num!r}")
    elif ratio is None or isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0 < ratio <= 0.5:
        raise ValueError(f"ratio must be in (0, 0.5]; got {ratio!r}")


def _check_arguments(ratio: float | None, num: int | None, split: float, loss: str, C: float) -> None:
    check_selection(ratio, num)
    if isinstance(split, bool) or not isinstance(split, (int, float)) or not 0 < split <= 1:
        raise ValueError(f"split must be in (0, 1]; got {split!r}")
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {', '.join(LOSSES)}; got {loss!r}")
    if isinstance(C, bool) or not isinstance(C, (int, float)) or not C > 0 or not math.isfinite(C):
        raise ValueError(f"-C must be a positive number; got {C!r}")


@dataclass
class _Plan:
    """One attribute's selection: K per side, shuffled train / validation rows, score range."""

    name: str
    column: int
    num: int
    train_pos: np.ndarray
    train_neg: np.ndarray
    val_pos: np.ndarray
    val_neg: np.ndarray
    midpoint: float
    valid: int


class UnusableAttribute(ValueError):
    """An attribute whose scores cannot give a boundary; the message names it and says why."""


def _plan(name: str, column: int, extremes: Extremes, ratio: float | None, num: int | None, split: float,
          rng: np.random.Generator, invalid_value: float | None = None) -> _Plan:
    """One attribute's rows per side and its shuffled split; UnusableAttribute when its scores cannot be fitted."""
    if extremes.valid == 0:
        dropped = "NaN or infinite" + ("" if invalid_value is None else f" or --invalid-value {invalid_value:g}")
        raise UnusableAttribute(f"attribute {name!r} cannot be fitted: every score is {dropped}")
    if extremes.low == extremes.high:
        raise UnusableAttribute(f"attribute {name!r} cannot be fitted: all {extremes.valid} valid scores equal "
                                f"{extremes.low:g}, so nothing separates its top rows from its bottom rows")
    if num is not None:
        if 2 * num > extremes.valid:
            raise UnusableAttribute(f"num {num} is larger than half the valid rows of {name!r} "
                                    f"({extremes.valid} valid scores)")
        k = num
    else:
        k = int(extremes.valid * ratio)
    train = int(k * split)
    if train < 1 or (split < 1 and k - train < 1):
        raise UnusableAttribute(f"attribute {name!r}: {k} rows per side (of {extremes.valid} valid scores) leave no "
                                f"{'training' if train < 1 else 'validation'} rows; raise --ratio/--num or sample "
                                "more")
    pos, neg = extremes.top_index[:k].copy(), extremes.bottom_index[:k].copy()
    rng.shuffle(pos)
    rng.shuffle(neg)
    return _Plan(name, column, k, pos[:train], neg[:train], pos[train:], neg[train:],
                 (extremes.high + extremes.low) / 2.0, extremes.valid)


def select_rows(store: str | os.PathLike | Store, method: str, purpose: str, *, space: str, layer: int | None,
                attributes: Sequence[str] | None, ratio: float | None, num: int | None, split: float, seed: int,
                invalid_value: float | None, overwrite: bool, progress: bool, class_label: int | None = None,
                ) -> tuple[Store, LatentView, dict[str, str], list[_Plan], np.ndarray | None]:
    """What ``boundaries`` and the methods that share its rows start from, checked before any work.

    Returns (the store opened for reading, the view of the codes, {attribute: stored name under
    ``directions/<method>``}, the plans of the attributes that can be used, the (n,) mask of the rows of
    ``class_label`` or None). Stored results are refused unless ``overwrite``; then one streamed pass over
    ``scores`` selects each attribute's top and bottom rows (of that class only, with ``class_label``).
    """
    reader = open_for_reading(store)
    if not reader.attributes:
        raise StoreError(f"{reader.path} has no scores: sample it with --predictor to {purpose}")
    names = list(dict.fromkeys(attributes)) if attributes else reader.attributes
    columns = [require_attribute(reader, a) for a in names]
    view = LatentView(reader, space, layer)
    rows_mask = None
    if class_label is not None:
        rows_mask = np.zeros(reader.n, bool)
        rows_mask[reader.class_rows(class_label)] = True
        if not rows_mask.any():
            raise ValueError(f"{reader.path} has no committed rows of class {class_label}")
    stored_as = {a: direction_name(a, space, view.layer, class_label) for a in names}
    require_new(reader, [f"directions/{method}/{stored_as[a]}" for a in names], overwrite)
    capacity = num if num is not None else max(1, int(reader.n * ratio))
    extremes = select_extremes(reader, columns, capacity, invalid_value, progress, rows_mask)
    plans = plan_attributes(names, columns, extremes, ratio, num, split, seed, invalid_value, named=bool(attributes))
    return reader, view, stored_as, plans, rows_mask


def plan_attributes(names: Sequence[str], columns: Sequence[int], extremes: Sequence[Extremes],
                    ratio: float | None, num: int | None, split: float, seed: int, invalid_value: float | None,
                    named: bool) -> list[_Plan]:
    """The plans of the attributes that can be fitted, in order.

    An unusable attribute is an error when it was asked for by name (``named``); otherwise it is skipped with
    a warning naming it and why, and only a store where no attribute can be fitted is an error.
    """
    rng = np.random.default_rng(seed)
    plans, skipped = [], []
    for name, column, found in zip(names, columns, extremes):
        try:
            plans.append(_plan(name, column, found, ratio, num, split, rng, invalid_value))
        except UnusableAttribute as exc:
            if named:
                raise
            skipped.append(str(exc))
    if not plans:
        shown = "; ".join(skipped[:2]) + (f"; and {len(skipped) - 2} more attributes likewise"
                                          if len(skipped) > 2 else "")
        raise UnusableAttribute(skipped[0] if len(skipped) == 1 else f"no attribute can be fitted: {shown}")
    for message in skipped:
        warnings.warn(f"{message}; skipped it, the other attributes are fitted", stacklevel=3)
    return plans


def direction_name(attribute: str, space: str, layer: int | None = None, class_label: int | None = None) -> str:
    """The stored name of ``attribute``'s boundary: the attribute itself in z, else ``<attr>@<space>[<layer>]``,
    and ``_class<K>`` after it when fitted on the rows of one class.

    ``age`` (z), ``age@w``, ``age@wp`` (all wp layers flattened), ``age@wp4`` (layer 4 of wp),
    ``smile@w_class207`` (w, rows of class 207).
    """
    return attribute + LatentSpace.of(space, layer).suffix + ("" if class_label is None else f"_class{class_label}")


def _batch_rows(group: list[_Plan], part: str) -> np.ndarray:
    """(b, n) store rows of ``part`` ('train' or 'val') for a batch of attributes: positives first."""
    return np.stack([np.r_[getattr(p, f"{part}_pos"), getattr(p, f"{part}_neg")] for p in group])


def _labels(group: list[_Plan], part: str) -> np.ndarray:
    """(b, n) labels matching ``_batch_rows``: 1 for the top rows, 0 for the bottom ones."""
    half = getattr(group[0], f"{part}_pos").size
    out = np.zeros((len(group), 2 * half))
    out[:, :half] = 1.0
    return out


def _fit_batch(group: list[_Plan], X: np.ndarray, Xv: np.ndarray | None, C: float, loss: str,
               device: torch.device | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, list]:
    """One batched LinearSVM fit on ``device`` (default CPU): (b, d) weights, (b,) intercepts, train and
    validation accuracies, back on the host."""
    import torch

    from kernels import LinearSVM
    from engine.device_io import to_device, to_host

    device = device or torch.device("cpu")
    y = to_device(_labels(group, "train"), device)
    X = to_device(X, device)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=DeprecationWarning)
        svm = LinearSVM(C=C, loss=loss).fit(X, y)
    train_acc = np.atleast_1d(to_host(svm.score(X, y), np.float64))
    val_acc = [None] * len(group) if Xv is None else \
        np.atleast_1d(to_host(svm.score(to_device(Xv, device), to_device(_labels(group, "val"), device)),
                              np.float64)).tolist()
    coef = np.atleast_2d(to_host(svm.coef_, np.float64))
    intercept = np.atleast_1d(to_host(svm.intercept_, np.float64))
    return coef, intercept, train_acc, val_acc


def _decisions(x: np.ndarray, normals: np.ndarray, offsets: np.ndarray, device: torch.device) -> np.ndarray:
    """Signed distances (rows, b) of a block of codes to b fitted boundaries: one float32 GEMM on ``device``.

    Not ``LinearSVM.decision_function``: it re-checks every stored value for finiteness, which costs ~10x the
    GEMM on CPU; stored codes are complete.
    """
    if device.type == "cpu":
        return x @ normals.T.astype(np.float32) + offsets.astype(np.float32)
    import torch

    from engine.device_io import to_device, to_host
    rows = to_device(np.asarray(x, np.float32), device)
    weights = torch.from_numpy(normals.T.astype(np.float32)).to(device)
    return to_host(torch.addmm(torch.from_numpy(offsets.astype(np.float32)).to(device), rows, weights))


def boundaries(store: str | os.PathLike | Store, *, space: str = "z", attributes: Sequence[str] | None = None,
               ratio: float | None = 0.02, num: int | None = None, split: float = 0.7, loss: str = "hinge",
               C: float = 1.0, seed: int = 0, invalid_value: float | None = None, layer: int | None = None,
               overwrite: bool = False, progress: bool = False, class_label: int | None = None,
               device: str = "cpu") -> dict[str, dict[str, Any]]:
    """Fit InterFaceGAN boundaries for ``attributes`` (default all) and write them to ``directions/interfacegan``.

    Each boundary is stored as ``directions/interfacegan/<direction_name(attr, space, layer)>``: ``<attr>`` in
    z, ``<attr>@w``, ``<attr>@wp`` or ``<attr>@wp<layer>`` elsewhere. Returns {that name: the attrs written
    beside it (attribute, space, layer, accuracies, num, split, ...)} for every fitted attribute.
    ``num`` (rows per side) overrides ``ratio`` (fraction of valid rows per side). Unusable attributes are
    skipped with a warning, or refused if named in ``attributes`` (see the module docstring). A boundary already
    stored under one of the names is refused, before any work, unless ``overwrite``. ``class_label`` fits on
    the rows of that class only (a store sampled from a class-conditional generator), as the papers fit
    per-class boundaries; the names then end in ``_class<K>``. ``device`` (cpu, cuda, cuda:<i>, auto) is where
    the selected rows are copied and the batched SVM runs; the normals come back to the host once.
    """
    from engine.device_io import as_device
    from engine.progress import progress_bar

    if num is not None:
        ratio = None
    _check_arguments(ratio, num, split, loss, C)
    dev = as_device(device)
    reader, view, stored_as, plans, rows_mask = select_rows(
        store, METHOD, "fit boundaries", space=space, layer=layer, attributes=attributes, ratio=ratio, num=num,
        split=split, seed=seed, invalid_value=invalid_value, overwrite=overwrite, progress=progress,
        class_label=class_label)
    names = [p.name for p in plans]

    # One batched fit per distinct K (one call for all attributes unless NaNs differ between them); every
    # problem's rows come from a single gather pass straight into the batched (b, n, d) arrays.
    groups = [[p for p in plans if p.num == k] for k in sorted({p.num for p in plans})]
    parts = ["train", "val"] if split < 1 else ["train"]
    wanted = [_batch_rows(group, part) for group in groups for part in parts]
    with progress_bar(total=view.n, desc="reading selected rows", unit="rows", enabled=progress) as bar:
        gathered = view.gather_many(wanted, on_chunk=bar.update)
    if progress:
        print(f"fitting {len(plans)} boundaries ({loss}, C = {C:g}) in {len(groups)} batched call(s) ...",
              file=sys.stderr, flush=True)
    results: dict[str, dict[str, Any]] = {}
    models: list[tuple[np.ndarray, np.ndarray, list[_Plan]]] = []   # (unit normals, offsets, attributes)
    for group in groups:
        X = gathered.pop(0)
        Xv = gathered.pop(0) if split < 1 else None
        coef, intercept, train_acc, val_acc = _fit_batch(group, X, Xv, float(C), loss, dev)
        del X, Xv  # this batch's rows are freed before the remaining-rows pass
        norms = np.linalg.norm(coef, axis=1)
        for j, p in enumerate(group):
            if not norms[j] > 0:
                raise ValueError(f"attribute {p.name!r}: the SVM found no boundary (zero normal); its scores may "
                                 "not depend on the codes")
            results[p.name] = {
                "direction": coef[j] / norms[j], "space": space, "layer": view.layer, "method": METHOD,
                "attribute": p.name, "num": p.num, "ratio": ratio, "split": float(split), "C": float(C),
                "loss": loss, "seed": int(seed), "invalid_value": invalid_value, "valid_rows": p.valid,
                "n_train": 2 * p.train_pos.size, "n_val": 2 * p.val_pos.size, "decision_value": p.midpoint,
                "offset": float(intercept[j] / norms[j]), "train_accuracy": float(train_acc[j]),
                "val_accuracy": None if val_acc[j] is None else float(val_acc[j]),
                **({} if class_label is None else {"class": int(class_label)}),
            }
        models.append((coef / norms[:, None], intercept / norms, group))

    # Remaining rows: valid, not selected, labelled by the midpoint of the score range.
    correct = dict.fromkeys(names, 0)
    total = dict.fromkeys(names, 0)
    chosen = np.zeros((view.n, len(plans)), bool)
    for j, p in enumerate(plans):
        chosen[np.r_[p.train_pos, p.train_neg, p.val_pos, p.val_neg], j] = True
    position = {p.name: j for j, p in enumerate(plans)}
    scores = reader.array("scores")
    with progress_bar(total=view.n, desc="remaining accuracy", unit="rows", enabled=progress) as bar:
        for rows, x in view.blocks():
            block = np.asarray(scores[rows], dtype=np.float64)
            for normals, offsets, group in models:
                decision = _decisions(x, normals, offsets, dev)
                for j, p in enumerate(group):
                    values = block[:, p.column]
                    keep = np.isfinite(values) & ~chosen[rows, position[p.name]]
                    if invalid_value is not None:
                        keep &= values != invalid_value
                    if rows_mask is not None:
                        keep &= rows_mask[rows]
                    label = values[keep] >= p.midpoint
                    correct[p.name] += int(np.sum((decision[keep, j] > 0) == label))
                    total[p.name] += int(keep.sum())
            bar.update(rows.stop - rows.start)
    for name in names:
        results[name]["n_remaining"] = total[name]
        results[name]["remaining_accuracy"] = correct[name] / total[name] if total[name] else None

    with writing(store, purpose="boundaries") as target:
        require_new(target, [f"directions/{METHOD}/{stored_as[name]}" for name in names], overwrite)
        for name in names:
            attrs = {k: v for k, v in results[name].items() if k != "direction"}
            target.write_direction(METHOD, stored_as[name], results[name]["direction"][None, :], attrs)
    return {stored_as[name]: {k: v for k, v in results[name].items() if k != "direction"} for name in names}


# ---------------------------------------------------------------------------------------------- condition
def resolve_direction(store: Store, key: str, default_method: str = METHOD) -> str:
    """'NAME' -> 'interfacegan/NAME'; 'METHOD/NAME' as is; StoreError naming the stored ones if unknown."""
    full = key if "/" in key else f"{default_method}/{key}"
    if full not in store.directions():
        raise StoreError(f"unknown direction {key!r}; {store.path} has {store.directions() or 'none'}")
    return full


def condition(store: str | os.PathLike | Store, primary: str, conditions: Sequence[str], *,
              name: str | None = None, overwrite: bool = False, device: str = "cpu") -> dict[str, Any]:
    """Write ``primary`` minus its projection onto the span of ``conditions``, renormalised, beside ``primary``.

    Names are 'NAME' (an InterFaceGAN direction) or 'METHOD/NAME'; every row of a condition joins the span, and
    repeated or linearly dependent conditions are allowed (the span is taken from an SVD of all their rows).
    The default ``name`` is ``<primary>__cond_<conditions>`` with the primary's space suffix last (``age__cond_
    gender@w``). Warns when the primary is nearly inside the span (residual norm < 0.1); refuses when it is
    inside, and refuses to replace a stored direction of that name unless ``overwrite``. ``device`` (cpu, cuda,
    cuda:<i>, auto) is where the projection is computed. Returns the attrs written (``key`` is where).
    """
    from engine.device_io import as_device

    dev = as_device(device)
    if isinstance(conditions, str):
        conditions = [conditions]
    if not conditions:
        raise ValueError("condition needs at least one --condition direction")
    reader = open_for_reading(store, complete=False)
    key = resolve_direction(reader, primary)
    vector, attrs = reader.read_direction(key)
    if vector.shape[0] != 1:
        raise ValueError(f"primary {primary!r} holds {vector.shape[0]} directions; condition needs one (k = 1)")
    cond_keys, rows = [], []
    for c in conditions:
        ckey = resolve_direction(reader, c)
        values, cattrs = reader.read_direction(ckey)
        if values.shape[1] != vector.shape[1] or cattrs.get("space") != attrs.get("space") \
                or cattrs.get("layer") != attrs.get("layer"):
            raise ValueError(f"condition {c!r} lives in space {cattrs.get('space')!r} ({values.shape[1]} dims); "
                             f"--primary {primary!r} in {attrs.get('space')!r} ({vector.shape[1]} dims)")
        if ckey == key:
            raise ValueError(f"primary {primary!r} cannot be conditioned on itself")
        cond_keys.append(ckey)
        rows.append(values.astype(np.float64))
    method, primary_name = key.split("/", 1)
    new_name = name or _conditioned_name(primary_name, [k.split("/", 1)[1] for k in cond_keys])
    if "/" in new_name or not new_name:
        raise ValueError(f"name must be a plain name without '/'; got {new_name!r}")
    require_new(reader, [f"directions/{method}/{new_name}"], overwrite)

    n = vector[0].astype(np.float64)
    residual = n - project_onto_span(n, np.concatenate(rows), None if dev.type == "cpu" else dev)
    norm = float(np.linalg.norm(residual))
    if norm < 1e-6:
        raise ValueError(f"primary {primary!r} lies inside the span of the conditions: nothing is left to keep")
    if norm < NEARLY_INSIDE:
        warnings.warn(f"{primary!r} is nearly inside the span of {', '.join(conditions)} (only {norm:.3f} of it "
                      "remains): the conditioned direction is dominated by noise", stacklevel=2)
    out_attrs = {"space": attrs.get("space"), "layer": attrs.get("layer"), "method": "condition",
                 "primary": key, "conditions": cond_keys, "residual_norm": norm,
                 "cosine_to_primary": float(residual @ n / norm)}
    with writing(store, purpose="condition") as target:
        require_new(target, [f"directions/{method}/{new_name}"], overwrite)
        target.write_direction(method, new_name, (residual / norm)[None, :], out_attrs)
    return {"key": f"{method}/{new_name}", **out_attrs}


def project_onto_span(vector: np.ndarray, rows: np.ndarray, device: Any = None) -> np.ndarray:
    """The orthogonal projection of ``vector`` (d,) onto the span of ``rows`` (m, d), in float64, computed on
    ``device`` (a torch device, in torch; default None: numpy on the CPU).

    The basis is the right singular vectors of ``rows`` whose singular value is above float32 rounding
    (stored directions are float32): a repeated row, or one that is a combination of others, adds no basis
    vector, and every independent row keeps its own, whatever the order of the rows. (A QR without pivoting
    cannot promise that: a dependent column early on turns a later, independent one into the wrong basis
    vector.)
    """
    if device is not None:
        import torch

        from engine.device_io import to_device, to_host
        rows_t = to_device(np.asarray(rows, np.float64), device)
        _, sigma_t, vt_t = torch.linalg.svd(rows_t, full_matrices=False)
        basis_t = vt_t[sigma_t > sigma_t[0] * np.finfo(np.float32).eps]
        return to_host(basis_t.T @ (basis_t @ to_device(np.asarray(vector, np.float64), device)))
    rows = np.asarray(rows, np.float64)
    _, sigma, vt = np.linalg.svd(rows, full_matrices=False)
    basis = vt[sigma > sigma[0] * np.finfo(np.float32).eps]
    return basis.T @ (basis @ np.asarray(vector, np.float64))


def _conditioned_name(primary: str, conditions: Sequence[str]) -> str:
    """``<primary>__cond_<c1>_<c2>...`` with the primary's space suffix (``@w``) once, at the end."""
    base, at, space = primary.partition("@")
    suffix = at + space
    parts = [c[: -len(suffix)] if suffix and c.endswith(suffix) else c for c in conditions]
    return f"{base}__cond_{'_'.join(parts)}{suffix}"



# ---------------------------------------------------------------------------------------------- command line
def _fmt(value: object) -> object:
    return "-" if value is None else value


@click.command("boundaries", epilog="""\b
Examples:
  latent-engine boundaries run.zarr
  latent-engine boundaries run.zarr --space w --attribute smile --attribute age --ratio 0.05
  latent-engine boundaries run.zarr --num 10000 --split 0.7 --loss squared_hinge -C 0.1 --seed 3
  latent-engine boundaries run.zarr --space wp --layer 4 --invalid-value -1
  latent-engine boundaries imagenet.zarr --attribute brightness --class 207       # rows of one ImageNet class
  latent-engine boundaries run.zarr --attribute smile --overwrite

\b
Stored as directions/interfacegan/<attr> for --space z, <attr>@w, <attr>@wp and <attr>@wp<L>
(--layer L) for the others, so one attribute's boundaries in several spaces live side by side.
""")
@click.argument("store")
@click.option("--space", type=click.Choice(["z", "w", "wp"]), default="z", help="Latent space the boundaries live in (wp: flattened layers, or one with --layer).")
@click.option("--layer", type=int, default=None, help="With --space wp: fit in this layer's w only.")
@click.option("--attribute", "attributes", multiple=True, help="Attribute to fit (repeatable; default all).")
@click.option("--ratio", type=float, default=0.02, help="Top and bottom fraction of valid rows used (InterFaceGAN: 10K of 500K).")
@click.option("--num", type=int, default=None, help="Use exactly this many rows per side instead of --ratio.")
@click.option("--split", type=float, default=0.7, help="Training fraction of each side; the rest validates (1.0: no validation).")
@click.option("--loss", type=click.Choice(["hinge", "squared_hinge"]), default="hinge", help="SVM loss (hinge = InterFaceGAN's SVC).")
@click.option("-C", "C", type=float, default=1.0, help="SVM inverse regularisation strength.")
@click.option("--seed", type=int, default=0, help="Seed of the train/validation shuffle (recorded).")
@click.option("--invalid-value", type=float, default=None, help="Score value to drop like NaN (e.g. a predictor's failure code).")
@click.option("--class", "class_label", type=int, default=None, help="Fit on the rows of this class only (stores of class-conditional generators); names end in _class<K>.")
@click.option("--overwrite", is_flag=True, help="Replace boundaries already stored under the same names.")
@device_option()
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@json_option
def boundaries_command(store: str, space: str, layer: int | None, attributes: tuple[str, ...], ratio: float,
               num: int | None, split: float, loss: str, C: float, seed: int, invalid_value: float | None,
               class_label: int | None, overwrite: bool, device: str, quiet: bool, as_json: bool) -> None:
    """InterFaceGAN: fit one linear SVM boundary per attribute and store its unit normal.

    Writes directions/interfacegan/<attr> (z) or <attr>@<space> (1, d) with the accuracies on the
    training, validation and remaining rows. All attributes are fitted in one batched kernel call; an
    attribute whose scores cannot be fitted (e.g. all NaN) is skipped with a warning, or is an error when
    named with --attribute. Existing boundaries are kept unless --overwrite.
    """
    result = boundaries(store, space=space, attributes=list(attributes) or None, ratio=ratio, num=num, split=split,
                 loss=loss, C=C, seed=seed, invalid_value=invalid_value, layer=layer, overwrite=overwrite,
                 progress=not quiet and not as_json, class_label=class_label, device=device)
    if as_json:
        echo_json(result)
        return
    echo_table([[f"interfacegan/{name}", r["attribute"], r["space"] if r["layer"] is None else
                 f"{r['space']}[{r['layer']}]", r["num"], r["train_accuracy"], _fmt(r["val_accuracy"]),
                 _fmt(r["remaining_accuracy"])] for name, r in result.items()],
               ["direction", "attribute", "space", "num/side", "train acc", "val acc", "remaining acc"])


@click.command("condition", epilog="""\b
Examples:
  latent-engine condition run.zarr --primary smile --condition gender
  latent-engine condition run.zarr --primary age --condition eyeglasses --condition gender --name age_pure
  latent-engine condition run.zarr --primary interfacegan/age --condition sefa/layers_0-3:0
  latent-engine condition run.zarr --primary age@w --condition gender@w --overwrite
""")
@click.argument("store")
@click.option("--primary", required=True, help="Direction to keep: NAME (InterFaceGAN) or METHOD/NAME.")
@click.option("--condition", "conditions", multiple=True, required=True, help="Direction to stay orthogonal to (repeatable).")
@click.option("--name", default=None, help="Name of the new direction (default <primary>__cond_<conditions>, space suffix last).")
@click.option("--overwrite", is_flag=True, help="Replace a direction already stored under that name.")
@device_option()
@json_option
def condition_command(store: str, primary: str, conditions: tuple[str, ...], name: str | None, overwrite: bool,
              device: str, as_json: bool) -> None:
    """Conditional manipulation: project the primary direction off the span of the conditions.

    The result is renormalised and written beside the primary, with attrs naming its parents; a warning says
    when the primary is nearly inside the span. Repeated or linearly dependent conditions are fine.
    """
    result = condition(store, primary, list(conditions), name=name, overwrite=overwrite, device=device)
    if as_json:
        echo_json(result)
    else:
        click.echo(f"wrote directions/{result['key']}  (cosine to primary {result['cosine_to_primary']:.4f}, "
                   f"kept {result['residual_norm']:.4f} of it)")


# ---------------------------------------------------------------------------------------------- registration
def _boundary_metric(store: Store, key: str, attrs: dict[str, Any]) -> str:
    if attrs.get("val_accuracy") is None:
        return ""
    return f"val acc {attrs['val_accuracy']:.3f}, train acc {attrs.get('train_accuracy', float('nan')):.3f}"


def _boundary_rank(key: str, attrs: dict[str, Any]) -> tuple[tuple, str]:
    """Best validation accuracy first (training accuracy without validation), then the accuracy on the
    remaining, less extreme rows, then the name."""
    accuracy = _first_finite(attrs.get("val_accuracy"), attrs.get("train_accuracy"))
    remaining = _first_finite(attrs.get("remaining_accuracy"))
    metrics = [f"val acc {accuracy:.3f}"] if accuracy >= 0 else []
    metrics += [f"acc on the remaining rows {remaining:.3f}"] if remaining >= 0 else []
    return (-accuracy, -remaining, key), f"{key} ({', '.join(metrics)})" if metrics else key


def _first_finite(*values: Any) -> float:
    """The first recorded metric among ``values``; -1 (below every accuracy) when none is."""
    for value in values:
        if value is not None and np.isfinite(value):
            return float(value)
    return -1.0


def _condition_metric(store: Store, key: str, attrs: dict[str, Any]) -> str:
    kept = attrs.get("residual_norm")
    return (f"conditioned on {', '.join(attrs.get('conditions') or [])}" +
            (f" (kept {kept:.3f} of {attrs.get('primary')})" if kept is not None else ""))


METHODS = (
    Method("interfacegan", twins=(boundaries,), commands=(boundaries_command,), analyses={"boundaries": boundaries},
           report=ReportSection(metric=_boundary_metric, rank=_boundary_rank)),
    Method("condition", twins=(condition,), commands=(condition_command,),
           report=ReportSection(metric=_condition_metric)),
)

__all__ = ["METHODS", "boundaries", "check_selection", "condition", "direction_name", "plan_attributes",
           "project_onto_span", "select_extremes", "resolve_direction"]
