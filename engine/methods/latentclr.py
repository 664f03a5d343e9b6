"""LatentCLR (Yüksel et al., ICCV 2021; paper 002): directions found by contrastive learning on a layer's features.

Each step takes B codes x from the store's rows (w for generators with a mapping network, as the paper does for
StyleGAN2, else z), moves each along every one of K directions, x + α d_k(x) (``engine.direction_models``), and
runs the generator up to the tapped layer f. The K·B feature divergences

    h_i^k = normalize( g(f(x_i + α d_k(x_i))) − g(f(x_i)) ),     g the projector (its outputs unit rows)

are contrasted: moves along the same direction are positives, moves along the others negatives. With
s(u, v) = |uᵀv| (cosine similarity, sign-free as in the public code: ``abs: True``) and temperature τ,

    ℓ(i, k) = −log( mean_{j≠i} exp(s(h_i^k, h_j^k)/τ) / mean_{j, l≠k} exp(s(h_i^k, h_j^l)/τ) ),

averaged over all K·B rows. The paper writes sums where the public code takes means (``reduce: mean``): the two
differ by the constant log((K−1)·B/(B−1)), so the gradients are the same; this module reports the public code's
value. Pair accuracy is the share of rows whose mean positive term exceeds their mean negative one.

Temperature convention: τ divides the similarity, as in the paper's formula. The public code multiplies by its
``temp: 0.5``, that is τ = 2 here; ``TEMPERATURE`` is 2.0 so that the defaults train what the published
directions were trained with. The other defaults are the public code's too: K = 32, B = 32, Adam (lr 1e-3,
weight decay 1e-3) with the learning rate × 0.2 after steps 1,000 and 5,000, α = 0.1 (a range 'LO,HI' draws one α
uniformly per step), the projector's outputs normalised before the difference.

Training is seeded and resumable: one torch generator, seeded with ``seed``, initialises the model and the
projector and then draws every step's rows and α; the whole training state (model, projector, Adam state, step,
the generator's state, the loss and accuracy of every step) is written to ``models/latentclr/<name>.training``
every ``save_every`` steps, all or nothing, and ``resume`` continues from it: a run stopped and resumed ends
with the same directions as one that ran through (same device).

Output: ``directions/latentclr/<name>`` (K, D) unit rows, attrs with the space, ``tapped_layer``, the settings
and the loss curve. For ``global`` they are the directions; for ``linear`` / ``nonlinear`` each row is the
normalised mean of d_k(x) over the store's first rows (a summary that ``correlate`` and ``export`` use as any
direction), with attrs ``z_dependent: true`` and ``model: models/latentclr/<name>``, the model's group
(``engine.direction_models``), through which ``edit`` applies d_k at each code.
"""
from __future__ import annotations

import math
import os
from typing import TYPE_CHECKING, Any

import click
import numpy as np

from engine.cli.options import echo_json, json_option
from engine.methods import Method, ReportSection, Spectrum
from engine.methods._common import check_positive_int, open_for_reading, require_new, writing
from engine.store import Store, StoreError

if TYPE_CHECKING:
    import torch

METHOD = "latentclr"
K = 32
BATCH = 32
LR = 1e-3
WEIGHT_DECAY = 1e-3
LR_MILESTONES = (1000, 5000)
LR_GAMMA = 0.2
ALPHA = 0.1
TEMPERATURE = 2.0
STEPS = 1000
SAVE_EVERY = 100
POOL_ROWS = 65_536          # the store's first committed rows the steps draw codes from, held in memory
SUMMARY_ROWS = 4096         # the rows a z-dependent direction's summary row is the mean over
CURVE_POINTS = 200          # the loss curve in the attrs: at most this many window means
TRAINING_SUFFIX = ".training"


class _Stop(Exception):
    """Raised by the tap's hook once it has the layer's output."""


# ---------------------------------------------------------------------------------------------- the loss
def contrastive_loss(divergences: torch.Tensor, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss, pair accuracy) of (K, B, F) unit divergences: the module docstring's ℓ, averaged over K·B rows."""
    import torch

    k, b, _ = divergences.shape
    flat = divergences.reshape(k * b, -1)
    similarity = torch.exp((flat @ flat.T).abs() / temperature)                 # (K·B, K·B)
    blocks = torch.diagonal(similarity.reshape(k, b, k, b), dim1=0, dim2=2)     # (B, B, K): same direction
    own = blocks.sum(dim=1).T.reshape(-1)                                       # (K·B,) incl. the row itself
    positive = (own - torch.diagonal(similarity)) / (b - 1)
    negative = (similarity.sum(dim=1) - own) / ((k - 1) * b)
    loss = -torch.log(positive / negative).mean()
    accuracy = (positive > negative).float().mean()
    return loss, accuracy


# ---------------------------------------------------------------------------------------------- features
def layer_features(G: Any, module: Any, codes: torch.Tensor, space: str,
                   labels: torch.Tensor | None = None) -> torch.Tensor:
    """The output of ``module`` (a layer of ``G``) for ``codes`` (N, D) of ``space`` ('z' or 'w'), flattened
    per code: (N, F). The forward pass stops after that layer; gradients flow back to ``codes``."""
    from engine.models.base import synthesize
    from engine.spaces import LatentSpace, synthesis_input
    from engine.taps import output_tensor

    captured: list[Any] = []

    def hook(module: Any, args: Any, output: Any) -> None:
        captured.append(output_tensor(output))
        raise _Stop

    handle = module.register_forward_hook(hook)
    try:
        synthesize(G, synthesis_input(G, codes, LatentSpace(space), labels=labels), labels)
    except _Stop:
        pass
    finally:
        handle.remove()
    if not captured or captured[0] is None:
        raise ValueError("the tapped layer is not run by the synthesis of "
                         f"{space} codes, or returns no tensor: pick another (latent-engine layers)")
    return captured[0].reshape(captured[0].shape[0], -1)


# ---------------------------------------------------------------------------------------------- settings
def parse_alpha(alpha: Any) -> float | tuple[float, float]:
    """α: a positive number, or 'LO,HI' / (LO, HI) with LO < HI (one α drawn uniformly per step)."""
    parts = alpha.split(",") if isinstance(alpha, str) else list(alpha) if isinstance(alpha, (tuple, list)) \
        else [alpha]
    try:
        values = [float(p) for p in parts]
    except (TypeError, ValueError):
        raise ValueError(f"alpha must be a number or LO,HI; got {alpha!r}") from None
    if len(values) == 1 and math.isfinite(values[0]) and values[0] != 0:
        return values[0]
    if len(values) == 2 and all(math.isfinite(v) for v in values) and values[0] < values[1]:
        return values[0], values[1]
    raise ValueError(f"alpha must be a non-zero number or LO,HI with LO < HI; got {alpha!r}")


def _positive_float(name: str, value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = float("nan")
    if not (math.isfinite(number) and number > 0):
        raise ValueError(f"{name} must be a positive number; got {value!r}")
    return number


def default_name(layer: str, model: str) -> str:
    """``directions/latentclr/<name>``'s default name: the tapped layer, then the model unless global."""
    from engine.methods.activation_pca import stored_name

    return stored_name(layer) + ("" if model == "global" else f"_{model}")


def _space(reader: Store, G: Any) -> str:
    """w for a generator with a mapping network whose store holds w codes, else z; the rows to draw from."""
    if getattr(G, "has_mapping", False) and "w" in reader.spaces:
        return "w"
    if "z" in reader.spaces:
        return "z"
    raise ValueError(f"{reader.path} stores {', '.join(reader.spaces)} codes; LatentCLR draws w codes (for a "
                     "generator with a mapping network) or z codes")


def _pool(reader: Store, space: str, conditional: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """The store's first committed rows of ``space`` (at most ``POOL_ROWS``), and their class labels."""
    committed = np.flatnonzero(reader.progress())
    if committed.size == 0:
        raise ValueError(f"{reader.path} has no committed rows to train on")
    codes, labels, taken = [], [], 0
    array = reader.latent_array(space)
    for chunk in committed:
        rows = reader.chunk_rows(int(chunk))
        rows = slice(rows.start, min(rows.stop, rows.start + POOL_ROWS - taken))
        codes.append(np.asarray(array[rows], np.float32))
        if conditional:
            labels.append(np.asarray(reader.array("labels")[rows], np.int64))
        taken += rows.stop - rows.start
        if taken >= POOL_ROWS:
            break
    pool = np.concatenate(codes)
    bad = np.flatnonzero(~np.isfinite(pool).all(axis=1))
    if bad.size:
        raise ValueError(f"{reader.path}: latents/{space} row {int(bad[0])} is not finite ({bad.size} such rows "
                         "among the rows LatentCLR draws from)")
    return pool, (np.concatenate(labels) if conditional else None)


def _learning_rate(lr: float, step: int) -> float:
    """The public code's MultiStepLR: ``lr`` × 0.2 after each of ``LR_MILESTONES`` steps."""
    return lr * LR_GAMMA ** sum(step >= m for m in LR_MILESTONES)


# ---------------------------------------------------------------------------------------------- training
class _Trainer:
    """The model, projector, optimizer and random stream of one run; ``step`` trains one batch."""

    def __init__(self, G: Any, module: Any, pool: np.ndarray, labels: np.ndarray | None, settings: dict[str, Any],
                 device: Any, feature_width: int) -> None:
        import torch

        from engine.direction_models import DirectionModel, Projector

        self.G, self.module, self.settings, self.device = G, module, settings, device
        self.pool = torch.from_numpy(pool)
        self.labels = None if labels is None else torch.from_numpy(labels)
        self.random = torch.Generator().manual_seed(int(settings["seed"]))
        self.model = DirectionModel(settings["model_kind"], settings["k"], pool.shape[1],
                                    generator=self.random).to(device)
        self.projector = Projector(settings["projector"], feature_width, generator=self.random).to(device)
        self.optimizer = torch.optim.Adam(list(self.model.parameters()) + list(self.projector.parameters()),
                                          lr=settings["lr"], weight_decay=WEIGHT_DECAY)
        self.step_index = 0
        self.losses: list[float] = []
        self.accuracies: list[float] = []

    def _alpha(self) -> float:
        import torch

        alpha = self.settings["alpha"]
        if isinstance(alpha, (list, tuple)):
            return float(alpha[0] + (alpha[1] - alpha[0]) * torch.rand((), generator=self.random))
        return float(alpha)

    def _project(self, features: torch.Tensor, groups: int) -> torch.Tensor:
        """The projector per group of B rows (its batch norm sees one direction's moves, as the public code)."""
        if self.projector.kind == "identity":
            return self.projector(features)
        import torch

        return torch.cat([self.projector(part) for part in features.chunk(groups)])

    def step(self) -> tuple[float, float]:
        """One training step; returns (loss, pair accuracy)."""
        import torch

        s = self.settings
        rows = torch.randint(self.pool.shape[0], (s["batch"],), generator=self.random)
        alpha = self._alpha()
        x = self.pool[rows].to(self.device)
        labels = None if self.labels is None else self.labels[rows].to(self.device)
        for group in self.optimizer.param_groups:
            group["lr"] = _learning_rate(s["lr"], self.step_index)
        self.model.train()
        self.projector.train()
        with torch.no_grad():
            original = self.projector(layer_features(self.G, self.module, x, s["space"], labels))
        directions = self.model(x)                                                   # (K, B, D)
        moved = (x[None] + alpha * directions).reshape(-1, x.shape[1])
        moved_labels = None if labels is None else labels.repeat(s["k"])
        features = self._project(layer_features(self.G, self.module, moved, s["space"], moved_labels), s["k"])
        divergence = features.reshape(s["k"], s["batch"], -1) - original[None]
        divergence = divergence / torch.linalg.vector_norm(divergence, dim=-1, keepdim=True)
        loss, accuracy = contrastive_loss(divergence, s["temperature"])
        if not torch.isfinite(loss):
            raise ValueError(f"layer {s['tapped_layer']!r} does not change when codes move along the directions (zero "
                             "feature divergence): tap a layer after the codes enter the generator")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.step_index += 1
        self.losses.append(float(loss.detach()))
        self.accuracies.append(float(accuracy))
        return self.losses[-1], self.accuracies[-1]

    # ---- state
    def state(self) -> dict[str, np.ndarray]:
        """Every array the run needs to continue exactly: model, projector, Adam state, random stream, curves."""
        from engine.direction_models import module_arrays

        arrays = {f"model.{n}": v for n, v in module_arrays(self.model).items()}
        arrays.update({f"projector.{n}": v for n, v in module_arrays(self.projector).items()})
        for index, entry in self.optimizer.state_dict()["state"].items():
            for key, value in entry.items():
                arrays[f"adam.{index}.{key}"] = value.detach().cpu().numpy()
        arrays["random"] = self.random.get_state().numpy()
        arrays["loss"] = np.asarray(self.losses, np.float64)
        arrays["accuracy"] = np.asarray(self.accuracies, np.float64)
        return arrays

    def restore(self, arrays: dict[str, np.ndarray], step: int) -> None:
        import torch

        from engine.direction_models import load_arrays

        load_arrays(self.model, {n[6:]: v for n, v in arrays.items() if n.startswith("model.")})
        load_arrays(self.projector, {n[10:]: v for n, v in arrays.items() if n.startswith("projector.")})
        state: dict[int, dict[str, torch.Tensor]] = {}
        for name, value in arrays.items():
            if name.startswith("adam."):
                _, index, key = name.split(".", 2)
                state.setdefault(int(index), {})[key] = torch.from_numpy(np.array(value)).to(
                    self.device if key != "step" else "cpu")
        saved = self.optimizer.state_dict()
        self.optimizer.load_state_dict({"state": state, "param_groups": saved["param_groups"]})
        self.random.set_state(torch.from_numpy(np.asarray(arrays["random"], np.uint8)))
        self.losses = [float(v) for v in arrays["loss"]]
        self.accuracies = [float(v) for v in arrays["accuracy"]]
        self.step_index = step


def _train_step(trainer: _Trainer) -> tuple[float, float]:
    """One step of ``trainer`` (a module-level seam: tests stop a run here to check that resuming is exact)."""
    return trainer.step()


RESUMABLE = ("generator", "tapped_layer", "space", "model_kind", "projector", "k", "batch", "lr", "alpha", "temperature",
             "seed", "pool_rows", "feature_width")


def _check_resume(saved: dict[str, Any], settings: dict[str, Any], name: str, done: int, steps: int) -> None:
    from engine.store import jsonable

    mine = jsonable({key: settings[key] for key in RESUMABLE})
    theirs = {key: saved.get(key) for key in RESUMABLE}
    differ = [f"{key} {theirs[key]!r} (asked {mine[key]!r})" for key in RESUMABLE if theirs[key] != mine[key]]
    if differ:
        raise ValueError(f"cannot resume latentclr run {name!r} with other settings: it was started with "
                         f"{'; '.join(differ)}; pass the same settings, or overwrite=True (--overwrite) to start "
                         "again")
    if steps < done:
        raise ValueError(f"cannot resume latentclr run {name!r} to {steps} steps: it has done {done} already")


def _save(target: Store, key: str, trainer: _Trainer, settings: dict[str, Any]) -> None:
    from engine.direction_models import write_group

    write_group(target, key, trainer.state(), {"step": trainer.step_index, "settings": settings})


def _curve(values: list[float]) -> tuple[np.ndarray, int]:
    """``values`` as at most ``CURVE_POINTS`` means of equal windows, and the window length."""
    array = np.asarray(values, np.float64)
    stride = max(1, math.ceil(array.size / CURVE_POINTS))
    usable = array.size // stride * stride
    means = array[:usable].reshape(-1, stride).mean(axis=1) if usable else array
    return means, stride


def _summary_directions(trainer: _Trainer, pool: np.ndarray) -> np.ndarray:
    """(K, D): global directions as they are; z-dependent ones as the normalised mean of d_k(x) over rows."""
    import torch

    model = trainer.model.eval()
    with torch.no_grad():
        if model.kind == "global":
            values = model(torch.zeros(1, pool.shape[1], device=trainer.device))[:, 0]
        else:
            x = torch.from_numpy(pool[:SUMMARY_ROWS]).to(trainer.device)
            values = model(x).mean(dim=1)
    values = values.double().cpu().numpy()
    norms = np.linalg.norm(values, axis=1, keepdims=True)
    if not (norms > 0).all():
        raise ValueError("a z-dependent direction averages to zero over the store's rows: it has no summary row")
    return (values / norms).astype(np.float32)


def latentclr(store: str | os.PathLike | Store, *, layer: str, generator: Any = None, k: int = K,
              model: str = "global", projector: str = "identity", batch: int = BATCH, lr: float = LR,
              alpha: Any = ALPHA, temperature: float = TEMPERATURE, steps: int = STEPS, save_every: int = SAVE_EVERY,
              seed: int = 0, name: str | None = None, device: str = "cpu", resume: bool = False,
              overwrite: bool = False, progress: bool = True) -> dict[str, Any]:
    """Train LatentCLR on ``layer``'s features over the store's codes; write ``directions/latentclr/<name>``
    (and, for ``linear`` / ``nonlinear``, the model's group ``models/latentclr/<name>``). Returns the result:
    ``directions`` (K, D), ``name``, ``space``, ``loss`` and ``accuracy`` (one value per step), the settings.

    ``generator`` defaults to the store's. The loss, its temperature convention (τ divides; the default τ = 2 is
    the public code's ×0.5) and the defaults are the module docstring's. The training state is saved every
    ``save_every`` steps; ``resume`` continues a stopped run of ``name`` (refused with other settings, except
    more ``steps``). An existing result or training state of ``name`` is refused unless ``overwrite`` (or
    ``resume``). ``device`` runs the training step there.
    """
    import torch

    from engine.direction_models import KINDS, PROJECTORS, has_group, read_group, write_group
    from engine.models.base import conditional
    from engine.models.registry import load_generator
    from engine.progress import progress_bar
    from engine.taps import check_layer

    k = check_positive_int("k", k)
    if k < 2:
        raise ValueError(f"k must be at least 2 (the loss contrasts directions with each other); got {k}")
    batch = check_positive_int("batch", batch)
    if batch < 2:
        raise ValueError(f"batch must be at least 2 (positives are other codes moved the same way); got {batch}")
    steps = check_positive_int("steps", steps)
    save_every = check_positive_int("save_every", save_every)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer; got {seed!r}")
    if model not in KINDS:
        raise ValueError(f"model must be one of {', '.join(KINDS)}; got {model!r}")
    if projector not in PROJECTORS:
        raise ValueError(f"projector must be one of {', '.join(PROJECTORS)}; got {projector!r}")
    lr = _positive_float("lr", lr)
    temperature = _positive_float("temperature", temperature)
    alpha = parse_alpha(alpha)
    name = name if name is not None else default_name(layer, model)
    if not name or "/" in name or name.startswith(".") or name.endswith(TRAINING_SUFFIX):
        raise ValueError(f"name must be a plain name without '/', not starting with '.' nor ending in "
                         f"{TRAINING_SUFFIX!r}; got {name!r}")

    reader = open_for_reading(store, complete=False)
    G = generator if generator is not None and not isinstance(generator, str) else \
        load_generator(generator or reader.meta.get("generator"), device)
    module = check_layer(G, layer)
    space = _space(reader, G)
    direction_key, model_key = f"directions/{METHOD}/{name}", f"models/{METHOD}/{name}"
    training_key = model_key + TRAINING_SUFFIX
    require_new(reader, [direction_key], overwrite or resume)
    if has_group(reader, training_key) and not (resume or overwrite):
        raise StoreError(f"{reader.path} has an unfinished or finished latentclr run {name!r} "
                         f"({training_key}); pass resume=True (--resume) to continue it or overwrite=True "
                         "(--overwrite) to start again")
    if resume and not overwrite and not has_group(reader, training_key):
        raise StoreError(f"{reader.path} has no latentclr run {name!r} to resume ({training_key} is missing)")
    pool, labels = _pool(reader, space, conditional(G))
    dev = torch.device(device)
    with torch.no_grad():
        width = int(layer_features(G, module, torch.from_numpy(pool[:2]).to(dev), space,
                                   None if labels is None else torch.from_numpy(labels[:2]).to(dev)).shape[1])
    settings = {"generator": str(generator if isinstance(generator, str) else reader.meta.get("generator")
                                 if generator is None else getattr(G, "spec", type(G).__name__)),
                "tapped_layer": layer, "space": space, "model_kind": model, "projector": projector, "k": k, "batch": batch,
                "lr": lr, "alpha": list(alpha) if isinstance(alpha, tuple) else alpha, "temperature": temperature,
                "seed": int(seed), "pool_rows": int(pool.shape[0]), "feature_width": width}

    with writing(store, purpose="latentclr") as target:
        require_new(target, [direction_key], overwrite or resume)   # again, under the lock
        trainer = _Trainer(G, module, pool, labels, settings, dev, width)
        if resume and has_group(target, training_key) and not overwrite:
            arrays, attrs = read_group(target, training_key)
            _check_resume(attrs.get("settings", {}), settings, name, int(attrs["step"]), steps)
            trainer.restore(arrays, int(attrs["step"]))
        frozen = [p for p in G.parameters() if p.requires_grad] if isinstance(G, torch.nn.Module) else []
        for p in frozen:
            p.requires_grad_(False)
        try:
            with progress_bar(total=steps, initial=trainer.step_index, desc="latentclr", unit="steps",
                              enabled=progress) as bar:
                while trainer.step_index < steps:
                    loss, accuracy = _train_step(trainer)
                    bar.update(1)
                    bar.set_postfix(loss=f"{loss:.4f}", acc=f"{accuracy:.3f}", refresh=False)
                    if trainer.step_index % save_every == 0 or trainer.step_index == steps:
                        _save(target, training_key, trainer, settings)
        finally:
            for p in frozen:
                p.requires_grad_(True)
        directions = _summary_directions(trainer, pool)
        curve, stride = _curve(trainer.losses)
        attrs: dict[str, Any] = {
            "space": space, "method": METHOD, **settings, "steps": steps,
            "temperature_convention": "exp(|cos|/temperature); the public code's temp 0.5 (a factor) is 2.0 here",
            "loss_reduce": "mean (the public code's); the paper's sums differ by log((k-1)*batch/(batch-1))",
            "weight_decay": WEIGHT_DECAY, "lr_milestones": list(LR_MILESTONES), "lr_gamma": LR_GAMMA,
            "loss_first": float(np.mean(trainer.losses[:stride])), "loss_last": float(np.mean(trainer.losses[-stride:])),
            "accuracy_last": float(np.mean(trainer.accuracies[-stride:])), "loss_curve": curve,
            "loss_curve_stride": stride, "z_dependent": model != "global",
            "model": model_key if model != "global" else None, "training_state": training_key,
        }
        if model != "global":
            from engine.direction_models import module_arrays
            write_group(target, model_key, module_arrays(trainer.model.cpu()),
                        {**trainer.model.architecture(), "space": space, "tapped_layer": layer, "direction": name})
        target.write_direction(METHOD, name, directions, attrs)
    return {"directions": directions, "name": name, "loss": np.asarray(trainer.losses),
            "accuracy": np.asarray(trainer.accuracies), **attrs}


# ---------------------------------------------------------------------------------------------- command line
@click.command("latentclr", epilog="""\b
Examples:
  latent-engine layers --generator digits                      # pick a layer
  latent-engine latentclr run.zarr --layer fc                  # K = 32 global directions, the store's generator
  latent-engine latentclr run.zarr --layer up1 -k 16 --steps 2000 --name up1_16
  latent-engine latentclr run.zarr --layer up1 --model nonlinear --projector linear --alpha 0.5,3
  latent-engine latentclr run.zarr --layer up1 --steps 5000 --resume      # continue a stopped run
  latent-engine latentclr ffhq.zarr --generator stylegan2:ffhq.pkl --layer conv1 --device cuda
  latent-engine edit run.zarr --direction latentclr/fc:3 --out clr3.png
\b
Codes are the store's rows: w for a generator with a mapping network, else z. --temperature τ
divides the similarity (the paper's formula); the default 2.0 is the public code's factor 0.5.
The training state is saved every --save-every steps; --resume continues it with the same settings.
""")
@click.argument("store")
@click.option("--layer", required=True, help="Module name of the tapped layer (latent-engine layers lists them).")
@click.option("--generator", "-g", default=None, help="Generator SPEC (default: the store's).")
@click.option("-k", "k", type=int, default=K, show_default=True, help="Directions to learn.")
@click.option("--model", type=click.Choice(["global", "linear", "nonlinear"]), default="global", show_default=True,
              help="Direction model: K vectors, or per direction a linear map / an MLP of the code.")
@click.option("--projector", type=click.Choice(["identity", "linear", "nonlinear"]), default="identity",
              show_default=True, help="Projector of the features before the contrastive loss.")
@click.option("--batch", type=int, default=BATCH, show_default=True, help="Codes per step (K·B moved codes).")
@click.option("--lr", type=float, default=LR, show_default=True, help="Adam's learning rate.")
@click.option("--alpha", default=str(ALPHA), show_default=True, help="Edit strength α (raw units of the space), or LO,HI to draw one per step.")
@click.option("--temperature", type=float, default=TEMPERATURE, show_default=True, help="τ in exp(|cos|/τ).")
@click.option("--steps", type=int, default=STEPS, show_default=True, help="Training steps in all.")
@click.option("--save-every", type=int, default=SAVE_EVERY, show_default=True, help="Save the training state every N steps.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the initialisation and of every draw.")
@click.option("--name", default=None, help="Result name (default: the layer, plus _linear / _nonlinear).")
@click.option("--device", default="cpu", show_default=True, help="Where the training step runs: auto, cpu, cuda, cuda:<index>.")
@click.option("--resume", is_flag=True, help="Continue the stopped (or finished) run of this name.")
@click.option("--overwrite", is_flag=True, help="Replace an existing result and training state of this name.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@json_option
def latentclr_command(store: str, layer: str, generator: str | None, k: int, model: str, projector: str, batch: int,
                      lr: float, alpha: str, temperature: float, steps: int, save_every: int, seed: int,
                      name: str | None, device: str, resume: bool, overwrite: bool, quiet: bool,
                      as_json: bool) -> None:
    """LatentCLR: K directions whose moves change a layer's features each in its own way (contrastive)."""
    from engine.devices import resolve_device

    result = latentclr(store, layer=layer, generator=generator, k=k, model=model, projector=projector, batch=batch,
                       lr=lr, alpha=alpha, temperature=temperature, steps=steps, save_every=save_every, seed=seed,
                       name=name, device=str(resolve_device(device)), resume=resume, overwrite=overwrite,
                       progress=not quiet and not as_json)
    summary = {key: result[key] for key in ("name", "space", "tapped_layer", "model_kind", "projector", "k", "batch",
                                            "steps", "seed", "loss_first", "loss_last", "accuracy_last",
                                            "z_dependent")}
    summary["direction"] = f"{METHOD}/{result['name']}"
    summary["model_group"] = result["model"]
    if as_json:
        echo_json(summary)
        return
    where = f" (model in {result['model']})" if result["model"] else ""
    click.echo(f"directions/{METHOD}/{result['name']} in {store}: {result['k']} {result['model_kind']} directions in "
               f"{result['space']}{where}, layer {layer}, {steps} steps")
    click.echo(f"loss {result['loss_first']:.4f} -> {result['loss_last']:.4f}, pair accuracy "
               f"{result['accuracy_last']:.3f}")


# ---------------------------------------------------------------------------------------------- registration
def _loss_metric(store: Store, key: str, attrs: dict[str, Any]) -> str:
    if "loss_last" not in attrs:
        return ""
    return (f"{attrs.get('model_kind', 'global')}, layer {attrs.get('tapped_layer')}: loss "
            f"{attrs['loss_first']:.3g} → {attrs['loss_last']:.3g}, pair accuracy {attrs['accuracy_last']:.2f}")


def _loss_curve(attrs: dict[str, Any]) -> Spectrum | None:
    if not attrs.get("loss_curve"):
        return None
    stride = int(attrs.get("loss_curve_stride") or 1)
    return Spectrum(np.asarray(attrs["loss_curve"], float), f"training step (×{stride})" if stride > 1 else
                    "training step", "contrastive loss", "LatentCLR", "training loss")


METHODS = (Method(METHOD, twins=(latentclr,), commands=(latentclr_command,), analyses={"latentclr": latentclr},
                  report=ReportSection(metric=_loss_metric, spectrum=_loss_curve, row_label="direction")),)
