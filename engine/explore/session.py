"""The explorer's state: a read-only store, its generator and predictors, and the renderer of edited grids.

``Explorer`` opens the store read-only, loads the generator and predictors (on a thread, reporting its stage
so the page can show progress), lists the directions with their metrics, and renders requests
(``engine.explore.query``): the samples' codes, moved along each panel's directions by α σ, synthesized in
one batched generator call for every panel not already in its small LRU cache, then re-scored.

Edits reuse the engine's editing math: σ is ``direction_spread`` over the codes ``edit`` measures it on, the
starting codes come from the store's own rows, and codes reach the synthesis through
``engine.spaces.synthesis_input``. Several directions combine as follows: z moves are applied to z first
(and mapped); every move in w or wp then adds its own change of the per-layer codes,
``synthesis_input(x + δ) − synthesis_input(x)``, on its own layers (the synthesis input is affine in a w or wp
code, so each move changes exactly what it would change alone). A store without ``latents/z`` (inverted
codes) starts from its ``latents/wp`` or ``latents/w`` rows; z directions are refused there. An inverted store's
per-image noise maps (``engine.noise_maps``) go with its rows: the unedited images and every panel of those
rows are rendered with them, so the unedited ones are the stored reconstructions.

``direction_from`` (another store of the same generator, as ``edit(..., direction_from=)``) supplies the
directions, their σ (measured on its codes), their models and, when the explored store records none, the
predictors; the explored store's rows stay the samples. An inverted store holds no directions of its own, so it
is explored with the directions of a sampled store this way.
"""
from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from engine.direction_models import load_direction_model
from engine.explore.query import Move, RenderRequest, RequestError, Samples
from engine.explore.render import LRU, grid_png, synthesize_scored
from engine.noise_maps import check_noise_layers, stored_noise_maps
from engine.spaces import LatentSpace, LatentView
from engine.store import Store

CACHE_SIZE = 64         # rendered panels kept (each a PNG, scores and codes of at most MAX_SAMPLES images)


@dataclass
class LoadState:
    """What the page shows while the models load: ``stage`` text, ``done`` of ``total`` steps, ``error``."""

    stage: str = "waiting"
    done: int = 0
    total: int = 4
    ready: bool = False
    error: str | None = None
    started: float = field(default_factory=time.perf_counter)

    def as_json(self) -> dict[str, Any]:
        return {"stage": self.stage, "done": self.done, "total": self.total, "ready": self.ready,
                "error": self.error, "seconds": round(time.perf_counter() - self.started, 2)}


@dataclass
class Base:
    """The unedited samples: store rows, their codes, images (S, C, H, W) and scores (S, m)."""

    rows: np.ndarray
    z: np.ndarray | None
    labels: np.ndarray | None
    w: np.ndarray | None                # (S, w_dim) pre-truncation w, when the generator maps
    ws: Any                             # torch (S, num_ws, w_dim): the synthesis input of the unedited codes
    noise: list[Any] | None = None    # torch (S, 1, r, r) on the CPU per noise input: an inverted store's maps, or None
    images: Any = None
    scores: np.ndarray | None = None
    png: bytes = b""


@dataclass
class Panel:
    """One rendered grid: PNG bytes, the images' scores (S, m) and the synthesis input codes (S, ...)."""

    png: bytes
    scores: np.ndarray | None
    codes: np.ndarray


def _direction_model(store: Store, key: str) -> Any:
    """The z-dependent direction model of ``key`` (LatentCLR linear / nonlinear), or None for fixed rows."""
    return load_direction_model(store, key)


class Explorer:
    """A store opened read-only for exploring; ``load()`` (or ``start()``) builds the models."""

    def __init__(self, store: str | Store, generator: str | Any = None, device: str = "cpu",
                 cache_size: int = CACHE_SIZE, direction_from: str | os.PathLike | Store | None = None):
        from engine.methods.editing import check_same_generator

        self.store = _read_only(store)                                              # never written
        self.source = self.store if direction_from is None else _read_only(direction_from)
        check_same_generator(self.store, self.source)
        self.generator_spec = generator if isinstance(generator, str) or generator is None else \
            getattr(generator, "spec", type(generator).__name__)
        self.generator_spec = self.generator_spec or self.store.meta.get("generator")
        self._given_generator = None if isinstance(generator, str) else generator
        self.device = str(device)
        self.state = LoadState()
        self.G: Any = None
        self.predictors: list[Any] = []
        self.predictor_error: str | None = None
        # The predictors that re-score edits: the explored store's, else those of ``direction_from``. Their
        # attributes are what that store recorded until ``load`` builds them (none if they cannot be built).
        scored = self.store if self.store.meta.get("predictors") else self.source
        self.predictor_specs: list[str] = list(scored.meta.get("predictors") or [])
        self.attributes: list[str] = list(scored.attributes) if self.predictor_specs else []
        self.spread: np.ndarray = np.empty(0)
        self._directions = {key: self.source.array(f"directions/{key}") for key in self.source.directions()}
        self._rows: dict[str, np.ndarray] = {}
        self._models: dict[str, Any] = {}
        self._sigma: dict[tuple[str, int], float] = {}
        self._reference: dict[str, np.ndarray] = {}
        self._cache = LRU(cache_size)           # (rows, moves) -> Panel
        self._bases = LRU(cache_size)           # rows -> Base
        self._lock = threading.Lock()
        self.problems: dict[str, str] = {}       # direction key -> why it cannot be edited here
        committed = np.flatnonzero(self.store.progress())
        self._committed_chunks = committed
        self.committed_rows = int(sum(self.store.chunk_rows(int(c)).stop - self.store.chunk_rows(int(c)).start
                                      for c in committed))
        self.code_space = next((s for s in ("z", "wp", "w") if s in self.store.spaces), None)

    # ------------------------------------------------------------------ loading
    def start(self) -> threading.Thread:
        """Load the models on a daemon thread; ``state`` tells how far it got."""
        thread = threading.Thread(target=self._load_safely, name="explore-load", daemon=True)
        thread.start()
        return thread

    def _load_safely(self) -> None:
        try:
            self.load()
        except Exception as exc:  # noqa: BLE001 - shown on the page: the server keeps serving the store's data
            self.state.error = f"{type(exc).__name__}: {exc}" if not isinstance(exc, ValueError) else str(exc)
            self.state.stage = "failed"

    def load(self) -> "Explorer":
        """Build the generator and the store's predictors, and warm the renderer up on one sample."""
        from engine.methods.editing import score_spread
        from engine.models.registry import load_generator, load_predictor

        if self.code_space is None:
            raise ValueError(f"{self.store.path} holds no latent codes to explore")
        self._step(f"building the generator {self.generator_spec}")
        self.G = self._given_generator if self._given_generator is not None else \
            load_generator(self.generator_spec, self.device)
        check_noise_layers(self.store, self.G)
        self._step("building the predictors")
        try:
            self.predictors = [load_predictor(spec, self.G, self.device) for spec in self.predictor_specs]
        except (ValueError, ImportError, OSError) as exc:     # explore without re-scoring; the page says why
            self.predictor_error = str(exc)
        self.attributes = [a for P in self.predictors for a in P.attributes]
        self._step("measuring σ of every direction")
        self.spread = score_spread(self.store if self.store.attributes else self.source, self.attributes)
        self.problems = {key: why for key in self._directions if (why := self._problem(key)) is not None}
        for key, rows in self.direction_rows.items():
            for row in range(rows if key not in self.problems else 0):
                self.sigma(key, row)
        self._step("rendering a first sample")
        if self.committed_rows:
            self._render(RenderRequest(Samples(count=1, seed=0), ((),)))
        self.state.stage, self.state.done, self.state.ready = "ready", self.state.total, True
        return self

    def _step(self, stage: str) -> None:
        if self.state.stage not in ("waiting",):
            self.state.done += 1
        self.state.stage = stage

    def require_ready(self) -> None:
        if self.state.error is not None:
            raise RequestError(f"the generator could not be loaded: {self.state.error}", 503)
        if not self.state.ready:
            raise RequestError(f"the generator is still loading ({self.state.stage})", 503)

    # ------------------------------------------------------------------ what the store holds
    @property
    def direction_rows(self) -> dict[str, int]:
        """Direction key -> number of rows."""
        return {key: int(array.shape[0]) for key, array in self._directions.items()}

    def describe(self) -> dict[str, Any]:
        """The store as the page shows it: path, size, spaces, models, and whether it holds inverted codes.

        ``predictors`` and ``attributes`` are those that re-score the edits (``direction_from``'s when the store
        records none); ``noise_maps`` says whether the store holds per-image noise maps, so that a panel's codes
        download as an ``.npz`` of codes and maps rather than an ``.npy``."""
        store = self.store
        inverted = "inversion/error" in _members(store)
        return {"path": store.path, "n": store.n, "committed_rows": self.committed_rows, "spaces": store.spaces,
                "generator": self.generator_spec, "predictors": list(self.predictor_specs),
                "predictor_error": self.predictor_error, "attributes": list(self.attributes), "inverted": inverted,
                "noise_maps": bool(store.noise_layers()), "targets": "inversion/targets" in _members(store),
                "direction_from": None if self.source is store else self.source.path,
                "num_ws": None if self.G is None else int(getattr(self.G, "num_ws", 1) or 1),
                "note": self._note(), "limits": _limits()}

    def _note(self) -> str | None:
        """What a person should know about the images, as ``edit`` says it (the planted generator's noise)."""
        from engine.methods.editing import PLANTED_NOTE, _is_planted

        return PLANTED_NOTE if self.G is not None and _is_planted(self.G) else None

    def directions(self) -> list[dict[str, Any]]:
        """Every stored direction, grouped by method: key, rows, space, and its report metric."""
        from engine.methods import method_named, report_section

        groups: dict[str, list[dict[str, Any]]] = {}
        for key, array in self._directions.items():
            attrs = dict(array.attrs)
            section = report_section(key, attrs)
            metric = section.metric(self.source, key, attrs) if section and section.metric else ""
            method = attrs.get("method") if isinstance(attrs.get("method"), str) else key.split("/", 1)[0]
            try:
                space = LatentSpace.from_attrs(attrs)
            except ValueError:
                space = None
            groups.setdefault(method, []).append({
                "key": key, "rows": int(array.shape[0]), "space": attrs.get("space"),
                "label": space.label if space else str(attrs.get("space")),
                "w_sized": bool(space and space.w_sized), "metric": metric,
                "row_label": section.row_label if section else "row",
                "z_dependent": bool(attrs.get("z_dependent", False)),
                "editable": self.state.ready and key not in self.problems, "note": self.problems.get(key)})
        return [{"method": name, "title": _title(name, method_named(name)), "directions": items}
                for name, items in groups.items()]

    # ------------------------------------------------------------------ directions and σ
    def direction_at(self, key: str, row: int, x: np.ndarray) -> np.ndarray:
        """Unit directions (S, D) of row ``row`` of ``key`` at the codes ``x`` (S, D) of its space.

        The one place that says which way a move goes: a fixed direction is the same unit row at every code; a
        z-dependent one (LatentCLR linear / nonlinear) asks its model, ``load_direction_model(...).at(x, row)``.
        """
        if key not in self._models:
            self._models[key] = _direction_model(self.source, key)
        model = self._models[key]
        if model is not None:            # unit rows, or zero where the model has no direction: used as edit uses it
            return np.asarray(model.at(np.asarray(x, np.float32), row), np.float64)
        n = self._unit_rows(key)[row]
        return np.broadcast_to(n, (x.shape[0], n.size))

    def _unit_rows(self, key: str) -> np.ndarray:
        if key not in self._rows:
            values = np.asarray(self._directions[key][...], np.float64)
            self._rows[key] = values / np.linalg.norm(values, axis=1, keepdims=True)
        return self._rows[key]

    def _problem(self, key: str) -> str | None:
        """Why ``key`` cannot be edited with this store and generator, or None."""
        attrs = dict(self._directions[key].attrs)
        try:
            space = LatentSpace.from_attrs(attrs)
        except ValueError:
            return f"it lives in space {attrs.get('space')!r}, not z, w or wp"
        if space.name == "z" and "z" not in self.store.spaces:
            return f"it moves z codes; this store has none (it holds {', '.join(self.store.spaces)})"
        if space.name != "z" and not getattr(self.G, "has_mapping", False):
            return f"it lives in {space.label}; the generator has no mapping network"
        if space.layer is not None and not space.layer < self.G.num_ws:
            return f"its layer {space.layer} is not one of the generator's {self.G.num_ws}"
        expected = space.dim(self.G.z_dim, self.G.w_dim, self.G.num_ws)
        if self._directions[key].shape[1] != expected:
            return f"it has {self._directions[key].shape[1]} dims; the generator's {space.label} codes have {expected}"
        return None

    def space_of(self, key: str) -> LatentSpace:
        return LatentSpace.from_attrs(dict(self._directions[key].attrs))

    def sigma(self, key: str, row: int) -> float:
        """σ of row ``row`` of ``key``: the std of the codes of the directions' store (``direction_from``, else
        the explored one) along it, as ``edit`` measures it."""
        from engine.methods.editing import _reference_codes, direction_spread

        if (key, row) not in self._sigma:
            space = self.space_of(key)
            if space.label not in self._reference:
                self._reference[space.label] = _reference_codes(self.source, space, self.G, self.device)
            self._sigma[(key, row)] = direction_spread(self._reference[space.label], self._unit_rows(key)[row])
        return self._sigma[(key, row)]

    # ------------------------------------------------------------------ rendering
    def pick_rows(self, samples: Samples) -> np.ndarray:
        """The store rows of ``samples``: as given (each committed), or drawn from the committed rows."""
        chunk = self.store.chunk
        committed = set(self._committed_chunks.tolist())
        if samples.rows is not None:
            missing = [r for r in samples.rows if r // chunk not in committed]
            if missing:
                raise RequestError(f"row {missing[0]} is in a chunk the store has not finished sampling")
            return np.asarray(samples.rows, np.int64)
        if samples.count > self.committed_rows:
            raise RequestError(f"count {samples.count} is more than the {self.committed_rows} stored rows")
        sizes = np.array([self.store.chunk_rows(int(c)).stop - self.store.chunk_rows(int(c)).start
                          for c in self._committed_chunks])
        picks = np.random.default_rng(samples.seed).choice(self.committed_rows, samples.count, replace=False)
        ends = np.cumsum(sizes)
        owner = np.searchsorted(ends, picks, side="right")
        return np.sort(self._committed_chunks[owner] * chunk + picks - (ends[owner] - sizes[owner]))

    def render(self, request: RenderRequest) -> dict[str, Any]:
        """Render every panel of ``request`` (cached ones from the cache); returns rows, base and panels."""
        self.require_ready()
        return self._render(request)

    def _render(self, request: RenderRequest) -> dict[str, Any]:
        for panel in request.panels:
            self._check_moves(panel)
        rows = self.pick_rows(request.samples)
        with self._lock:
            base = self._base(rows)
            keys = [(tuple(rows.tolist()), panel) for panel in request.panels]
            todo = list(dict.fromkeys(k for k in keys if self._cache.get(k) is None))
            if todo:
                for k, panel in zip(todo, self._render_panels(base, [k[1] for k in todo])):
                    self._cache.put(k, panel)
            panels = [self._cache.get(k) for k in keys]
        return {"rows": rows, "base": base, "panels": panels}

    def _check_moves(self, panel: tuple[Move, ...]) -> None:
        num_ws = int(getattr(self.G, "num_ws", 1) or 1)
        for move in panel:
            if move.key in self.problems:
                raise RequestError(f"direction {move.key} cannot be edited here: {self.problems[move.key]}")
            space = self.space_of(move.key)
            if move.layers is not None:
                if not space.w_sized:
                    raise RequestError(f"layers applies to w-sized directions (w or one wp layer); {move.key} "
                                       f"lives in {space.label}")
                if move.layers[1] >= num_ws:
                    raise RequestError(f"layers {move.layers[0]}-{move.layers[1]} must lie in 0-{num_ws - 1} "
                                       f"(the generator has {num_ws})")
            if not self.sigma(move.key, move.row) > 0:
                raise RequestError(f"the store's codes do not vary along {move.label}: σ is 0")

    def _base(self, rows: np.ndarray) -> Base:
        key = tuple(rows.tolist())
        base = self._bases.get(key)
        if base is None:
            base = self._codes_of(rows)
            base.noise = stored_noise_maps(self.store, self.G, rows)        # on the CPU: the cache holds many
            base.images, base.scores = self._synthesize(base.ws, base.labels, base.noise)
            base.png = grid_png(base.images)
            self._bases.put(key, base)
        return base

    def _codes_of(self, rows: np.ndarray) -> Base:
        """The store's codes of ``rows``: z (mapped through the generator), else the stored wp or w."""
        import torch

        from engine.models.base import conditional
        from engine.spaces import synthesis_input

        labels = np.asarray(self.store.array("labels").get_orthogonal_selection((rows,))) \
            if conditional(self.G) else None
        space = self.code_space
        codes = LatentView(self.store, space).gather(rows).astype(np.float32)
        if space == "z":
            z = codes
            w, ws = self._map(z, labels)
            return Base(rows, z, labels, w, ws)
        if space == "wp":
            ws = torch.from_numpy(codes.reshape(len(rows), self.G.num_ws, self.G.w_dim)).to(self.device)
            w = LatentView(self.store, "w").gather(rows).astype(np.float32) if "w" in self.store.spaces \
                else ws[:, 0].cpu().numpy()
            return Base(rows, None, labels, w, ws)
        with torch.inference_mode():
            ws = synthesis_input(self.G, torch.from_numpy(codes).to(self.device), LatentSpace("w"))
        return Base(rows, None, labels, codes, ws)

    def _map(self, z: np.ndarray, labels: np.ndarray | None) -> tuple[np.ndarray | None, Any]:
        """z codes -> (w or None, the synthesis input as a torch tensor on the device)."""
        import torch

        from engine.spaces import codes_from_z, synthesis_input

        if getattr(self.G, "has_mapping", False):
            w, ws = codes_from_z(self.G, z, LatentSpace("w"), self.device, labels)
            return w.astype(np.float32), torch.from_numpy(ws).to(self.device)
        with torch.inference_mode():
            lt = None if labels is None else torch.from_numpy(labels.astype(np.int64)).to(self.device)
            return None, synthesis_input(self.G, torch.from_numpy(z).to(self.device), LatentSpace("z"), labels=lt)

    def panel_input(self, base: Base, moves: tuple[Move, ...]) -> Any:
        """The synthesis input (torch, S × ...) of ``base`` moved by every move (see the module docstring)."""
        import torch

        from engine.spaces import synthesis_input

        z_moves = [m for m in moves if self.space_of(m.key).name == "z"]
        w, ws = base.w, base.ws
        if z_moves:
            z = base.z.astype(np.float64)
            for m in z_moves:
                z = z + m.alpha * self.sigma(m.key, m.row) * self.direction_at(m.key, m.row, base.z)
            w, ws = self._map(z.astype(np.float32), base.labels)
        with torch.inference_mode():
            total = ws.clone()
            for m in moves:
                space = self.space_of(m.key)
                if space.name == "z":
                    continue
                x = w if space.name == "w" else space.from_ws(ws.cpu().numpy())
                step = m.alpha * self.sigma(m.key, m.row) * self.direction_at(m.key, m.row, x)
                before = torch.from_numpy(np.asarray(x, np.float32)).to(self.device)
                after = torch.from_numpy((x + step).astype(np.float32)).to(self.device)
                total += (synthesis_input(self.G, after, space, ws, m.layers) -
                          synthesis_input(self.G, before, space, ws, m.layers))
        return total

    def _render_panels(self, base: Base, panels: list[tuple[Move, ...]]) -> list[Panel]:
        """Every panel's grid from one batched generator pass over all of their codes."""
        import torch

        inputs = [self.panel_input(base, moves) for moves in panels]
        labels = None if base.labels is None else np.tile(base.labels, len(panels))
        images, scores = self._synthesize(torch.cat(inputs), labels, base.noise)    # each panel: the base's maps
        size = len(base.rows)
        out = []
        for i, codes in enumerate(inputs):
            part = images[i * size:(i + 1) * size]
            out.append(Panel(grid_png(part), None if scores is None else scores[i * size:(i + 1) * size],
                             codes.float().cpu().numpy()))
        return out

    def _synthesize(self, ws: Any, labels: np.ndarray | None,
                    noise: list[Any] | None = None) -> tuple[Any, np.ndarray | None]:
        return synthesize_scored(self.G, self.predictors, ws, labels, self.device, noise)

    def targets_png(self, rows: np.ndarray) -> bytes | None:
        """The inverted images' targets at ``rows`` as a grid, when the store keeps them (``--keep-images``)."""
        if "inversion/targets" not in _members(self.store):
            return None
        import torch

        array = self.store.array("inversion/targets")
        return grid_png(torch.from_numpy(np.asarray(array.get_orthogonal_selection((rows,)), np.float32)))

    def inversion_error(self, rows: np.ndarray) -> list[float] | None:
        if "inversion/error" not in _members(self.store):
            return None
        return [float(v) for v in np.asarray(self.store.array("inversion/error").get_orthogonal_selection((rows,)))]

    def score_change(self, base: Base, panel: Panel) -> list[dict[str, Any]]:
        """Per attribute: mean score before, after, and the change in units of the attribute's std in the store;
        most changed first."""
        if panel.scores is None or base.scores is None:
            return []
        before = base.scores.astype(np.float64).mean(0)
        after = panel.scores.astype(np.float64).mean(0)
        change = after - before
        relative = np.where(self.spread > 0, change / np.where(self.spread > 0, self.spread, 1), np.nan)
        order = np.argsort(-np.nan_to_num(np.abs(relative), nan=-1.0), kind="stable")
        return [{"attribute": self.attributes[j], "before": float(before[j]), "after": float(after[j]),
                 "change": float(change[j]),
                 "change_std": None if not np.isfinite(relative[j]) else float(relative[j])} for j in order]


def _read_only(store: str | os.PathLike | Store) -> Store:
    """``store`` opened read-only (mode "r")."""
    if isinstance(store, Store):
        return store if store.mode == "r" else Store.open(store.path)
    return Store.open(store)


def _members(store: Store) -> set[str]:
    found = set()
    group = store.group.get("inversion")
    if group is not None:
        found |= {f"inversion/{name}" for name, _ in group.arrays()}
    return found


def _limits() -> dict[str, Any]:
    from engine.explore.query import ALPHA_LIMIT, MAX_MOVES, MAX_PANELS, MAX_SAMPLES

    return {"samples": MAX_SAMPLES, "panels": MAX_PANELS, "moves": MAX_MOVES, "alpha": ALPHA_LIMIT}


_TITLES = {"interfacegan": "InterFaceGAN", "condition": "InterFaceGAN, conditioned", "sefa": "SeFa",
           "ganspace": "GANSpace", "latentclr": "LatentCLR", "meandiff": "Mean difference"}


def _title(name: str, method: Any) -> str:
    return _TITLES.get(name, name)


__all__ = ["Explorer", "LoadState"]
