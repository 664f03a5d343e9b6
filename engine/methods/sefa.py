"""SeFa (paper 003): closed-form directions from the weights that take the latent code in.

For a selection of layers, the weights (out_i, d) are stacked into A, each row normalised to unit length (as
SeFa's ``factorize_weight``), and the directions are the eigenvectors of AᵀA in descending eigenvalue order:
``kernels.eigh`` sorts, fixing the reference code's unsorted ``np.linalg.eig``. Several layer selections
(``layers=["all", "0-1", "2-3"]``) are factorized in one batched eigh call.

Weights come from a generator object exposing ``latent_weights()`` (``engine.models.base.Factorizable``) or
from a checkpoint read by ``engine.models.checkpoints`` (no network is built).

Layer conventions (``like``, checkpoints only; they differ for StyleGAN2 alone):

* ``engine`` (default): layer i is the i-th modulated conv; ``all`` = every conv; the ToRGBs follow the convs
  only with ``include_torgb``; rows normalised.
* ``sefa``: genforce/sefa's numbering: the convs, then one more index for the final ToRGB; ``all`` = the convs
  and the final ToRGB; rows normalised.
* ``rosinality``: ``closed_form_factorization.py``: the convs and ``to_rgb1``, rows not normalised (its
  eigenvectors are the right singular vectors of A; the eigenvalues here are the squared singular values);
  ``layers`` must be ``all``.

A result's default name says what it holds: ``layers_0-3`` (the resolved indices, ``all`` included), or
``layer_<name>`` for a single layer (``layer_fc`` on a one-layer generator), prefixed ``like_<tool>_`` for the
reference conventions.
"""
from __future__ import annotations

import os
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import click
import numpy as np

from engine.cli.options import echo_json, echo_table, json_option
from engine.methods import Method, ReportSection, Spectrum
from engine.methods._common import check_positive_int, device_option, require_new
from engine.store import Store, StoreError

if TYPE_CHECKING:
    import torch

METHOD = "sefa"
LATENT_SPACE = {"stylegan2": "w", "stylegan3": "w", "stylegan": "w", "pggan": "z", "biggan": "z"}


def parse_layers(spec: str, count: int) -> list[int]:
    """'all' | '0-3' | '0,2,5' | '0-2,5' -> sorted layer indices in [0, count)."""
    text = str(spec).strip().lower()
    if text == "all":
        return list(range(count))
    chosen: set[int] = set()
    for part in text.split(","):
        match = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", part)
        if not match:
            raise ValueError(f"layers must be 'all', a range '0-3' or a list '0,2,5'; got {spec!r}")
        lo = int(match.group(1))
        hi = int(match.group(2)) if match.group(2) is not None else lo
        if hi < lo:
            raise ValueError(f"layers range {part.strip()!r} runs backwards")
        chosen.update(range(lo, hi + 1))
    bad = sorted(i for i in chosen if i >= count)
    if bad:
        raise ValueError(f"layers {spec!r} names layer {bad[0]}, but the model has {count} latent layers "
                         f"(0-{count - 1})")
    return sorted(chosen)


def _compact(indices: Sequence[int]) -> str:
    """[0, 1, 2, 5] -> '0-2_5'."""
    runs: list[list[int]] = []
    for i in indices:
        if runs and i == runs[-1][1] + 1:
            runs[-1][1] = i
        else:
            runs.append([i, i])
    return "_".join(str(lo) if lo == hi else f"{lo}-{hi}" for lo, hi in runs)


def selection_name(chosen: Sequence[int], layer_names: Sequence[str], like: str = "engine") -> str:
    """The default result name: the layers it holds, e.g. ``layers_0-3``, ``layer_fc``, ``like_sefa_layers_0-17``."""
    if len(chosen) == 1:
        base = "layer_" + re.sub(r"[^A-Za-z0-9_-]+", "_", layer_names[chosen[0]])
    else:
        base = "layers_" + _compact(chosen)
    return base if like == "engine" else f"like_{like}_{base}"


def factorize(weights: Sequence[torch.Tensor], selections: Sequence[Sequence[int]], *,
              normalise: bool = True, device: Any = None) -> tuple[np.ndarray, np.ndarray]:
    """Eigen-decompose AᵀA for each selection of layers: (eigenvalues (b, d), eigenvectors as rows (b, d, d)).

    A stacks the selected weights' rows, each scaled to unit length when ``normalise`` (zero rows stay zero).
    The Gram matrices and the batched eigh are computed on ``device`` (a torch device; default the CPU);
    the results come back to the host once.
    """
    import kernels
    import torch

    from engine.device_io import to_host

    device = device or torch.device("cpu")
    grams = []
    for chosen in selections:
        A = torch.cat([weights[i].to(device, torch.float64) for i in chosen])
        if normalise:
            norms = torch.linalg.vector_norm(A, dim=1, keepdim=True)
            A = A / torch.where(norms > 0, norms, torch.ones_like(norms))
        grams.append(A.T @ A)
    values, vectors = kernels.eigh(torch.stack(grams))
    return to_host(values), to_host(vectors.transpose(-1, -2))


def load_weights(generator: Any = None, checkpoint: str | os.PathLike | None = None, family: str | None = None,
                 *, include_torgb: bool = False, like: str = "engine",
                 trust_checkpoint: bool = False) -> tuple[list[tuple[str, torch.Tensor]], str, str, str | None]:
    """(layers [(name, (out, d))], space of the code they act on, a source label, the checkpoint entry read).

    The checkpoint entry is the wrapper key the weights came from (``g_ema``, ``generator_smooth``, ...), None
    for a bare state dict or a generator object.
    """
    import inspect

    import torch

    from engine.models.checkpoints import LIKE

    if (generator is None) == (checkpoint is None):
        raise ValueError("sefa needs exactly one of --generator SPEC or --checkpoint PATH --family F")
    if like not in LIKE:
        raise ValueError(f"like must be one of {', '.join(LIKE)}; got {like!r}")
    if checkpoint is not None:
        from engine.models.checkpoints import FAMILIES, check_like, read_checkpoint_weights
        if family not in FAMILIES:
            raise ValueError(f"checkpoint needs --family, one of {', '.join(FAMILIES)}; got {family!r}")
        check_like(family, like, include_torgb)
        layers, entry = read_checkpoint_weights(checkpoint, family, include_torgb=include_torgb, like=like,
                                                trust=trust_checkpoint)
        return layers, LATENT_SPACE[family], f"{family}:{checkpoint}", entry
    if family is not None:
        raise ValueError("family goes with --checkpoint; a --generator knows its own layout")
    if like != "engine":
        raise ValueError(f"like {like} reproduces a reference tool's checkpoint layout; it needs --checkpoint "
                         "and --family, not --generator")
    if isinstance(generator, str):
        from engine.models.registry import load_generator
        G = load_generator(generator)
    else:
        G = generator
    if not callable(getattr(G, "latent_weights", None)):
        raise ValueError(f"generator {getattr(G, 'spec', G)!r} does not expose latent_weights() "
                         "(engine.models.base.Factorizable); pass its checkpoint with --family instead")
    if include_torgb:
        if "include_torgb" not in inspect.signature(G.latent_weights).parameters:
            raise ValueError(f"generator {getattr(G, 'spec', G)!r} has no ToRGB layers to add: drop --include-torgb")
        found = G.latent_weights(include_torgb=True)
    else:
        found = G.latent_weights()
    layers = [(name, torch.as_tensor(w).detach().float().cpu()) for name, w in found]
    if not layers:
        raise ValueError(f"generator {getattr(G, 'spec', G)!r} returned no latent weights")
    space = "w" if getattr(G, "has_mapping", False) else "z"
    return layers, space, f"generator:{getattr(G, 'spec', type(G).__name__)}", None


def sefa(*, generator: Any = None, checkpoint: str | os.PathLike | None = None, family: str | None = None,
         layers: str | Sequence[str] = "all", k: int = 10, store: str | os.PathLike | Store | None = None,
         include_torgb: bool = False, like: str = "engine", trust_checkpoint: bool = False, name: str | None = None,
         overwrite: bool = False, device: str = "cpu") -> dict[str, dict[str, Any]]:
    """SeFa directions for each layer selection in ``layers``; written to ``directions/sefa/<name>`` when
    ``store`` is given (created if missing). Returns {name: {"directions": (k, d), eigenvalues, layers, ...}}.

    ``like`` ("engine", "sefa", "rosinality") picks the layer numbering and row normalisation of the engine or of
    a reference tool (see the module docstring). ``name`` overrides the default name, which says the layers the
    result holds (one selection only). An existing ``directions/sefa/<name>`` is refused, before any
    computation, unless ``overwrite``. ``device`` (cpu, cuda, cuda:<i>, auto) is where the Gram matrices and
    the batched eigh are computed.
    """
    from engine.device_io import as_device

    dev = as_device(device)
    k = check_positive_int("-k", k)
    specs = [layers] if isinstance(layers, str) else list(layers)
    if not specs:
        raise ValueError("layers needs at least one selection")
    if name is not None and (len(specs) != 1 or "/" in name or not name):
        raise ValueError("name needs exactly one --layers selection and a plain name without '/'")
    if like == "rosinality" and any(str(spec).strip().lower() != "all" for spec in specs):
        raise ValueError("like rosinality factorizes closed_form_factorization.py's fixed layer set; "
                         f"--layers must be all; got {', '.join(map(str, specs))}")
    weights, space, source, entry = load_weights(generator, checkpoint, family, include_torgb=include_torgb,
                                                 like=like, trust_checkpoint=trust_checkpoint)
    names = [n for n, _ in weights]
    tensors = [w for _, w in weights]
    d = tensors[0].shape[1]
    if any(w.shape[1] != d for w in tensors):
        raise ValueError(f"{source}: the latent weights disagree on the code size")
    if k > d:
        raise ValueError(f"-k must be at most the code size {d}; got {k}")
    selections = [parse_layers(spec, len(tensors)) for spec in specs]
    out_names = [name] if name else [selection_name(chosen, names, like) for chosen in selections]
    if len(set(out_names)) != len(out_names):
        raise ValueError(f"layers selections repeat: {', '.join(map(str, specs))} all name "
                         f"{', '.join(sorted(set(out_names)))}")
    target_path = None if store is None else (store.path if isinstance(store, Store) else str(store))
    if target_path is not None:
        _check_target(target_path, space, d, out_names, overwrite)

    normalise = like != "rosinality"
    values, vectors = factorize(tensors, selections, normalise=normalise, device=dev)
    results: dict[str, dict[str, Any]] = {}
    for j, (out, chosen) in enumerate(zip(out_names, selections)):
        results[out] = {
            "directions": vectors[j, :k].astype(np.float32), "space": space, "method": METHOD,
            "eigenvalues": values[j, :k].astype(np.float64), "eigenvalue_sum": float(values[j].sum()),
            "layers": chosen, "layer_names": [names[i] for i in chosen], "layers_spec": str(specs[j]),
            "family": family or "generator", "source": source, "checkpoint_entry": entry,
            "include_torgb": bool(include_torgb), "like": like, "rows_normalised": normalise,
        }
    if target_path is not None:
        _write(target_path, results, d, source, overwrite)
    return results


def _check_target(path: str, space: str, d: int, names: Sequence[str], overwrite: bool) -> None:
    from engine.store import exists
    if not exists(path):
        return
    existing = Store.open(path)
    require_new(existing, [f"directions/{METHOD}/{n}" for n in names], overwrite)
    if space in existing.spaces:
        dim = existing.latent_array(space).shape[-1]
        if dim != d:
            raise StoreError(f"{path} stores {space} codes of size {dim}; these SeFa directions have size {d}")


def _write(path: str, results: dict[str, dict[str, Any]], d: int, source: str, overwrite: bool) -> None:
    from engine.lock import StoreLock
    from engine.store import exists, warn_repairs

    with StoreLock(path, purpose="sefa"):
        if exists(path):
            target = Store.open(path, mode="r+")
            warn_repairs(path, target.recover())           # what a killed writer left, as every writer does
            # Checked again under the lock: another writer may have stored one of these names meanwhile.
            require_new(target, [f"directions/{METHOD}/{n}" for n in results], overwrite)
        else:
            # A directions-only store: one placeholder row, never sampled (info reports it incomplete).
            target = Store.create(path, n=1, chunk=1, z_dim=d, meta={"generator": source, "directions_only": True})
        for out, result in results.items():
            attrs = {key: value for key, value in result.items() if key != "directions"}
            target.write_direction(METHOD, out, result["directions"], attrs)


# ---------------------------------------------------------------------------------------------- command line
@click.command("sefa", epilog="""\b
Examples:
  latent-engine sefa --generator planted --store run.zarr
  latent-engine sefa --checkpoint stylegan2-ffhq.pt --family stylegan2 --layers 0-3 -k 10 --store ffhq.zarr
  latent-engine sefa --checkpoint g.pt --family stylegan2 --layers all --layers 0-1 --layers 2-5 --layers 6-16
  latent-engine sefa --checkpoint pggan.pth --family pggan --store pggan.zarr
  latent-engine sefa --checkpoint stylegan2-ffhq.pth --family stylegan2 --like sefa --layers 0-1
  latent-engine sefa --checkpoint 550000.pt --family stylegan2 --like rosinality
  latent-engine sefa --generator stylegan3:stylegan3-r-ffhq-1024x1024.pkl --store ffhq3.zarr

\b
Layer conventions (--like; they differ for StyleGAN2 only):
  engine      layer i = the i-th modulated conv (rosinality conv1 = 0, convs.N = N+1;
              genforce layerN = N; NVlabs synthesis.bRES.conv0/conv1 in order); all = every conv;
              --include-torgb appends the ToRGBs after them; rows normalised
  sefa        genforce/sefa's numbering: the convs, then one more index for the final ToRGB only;
              all = the convs + the final ToRGB; rows normalised
  rosinality  closed_form_factorization.py: conv1, convs.*, to_rgb1; rows not normalised;
              --layers all only; eigenvalues are its squared singular values
\b
Default result names say what they hold: layers_0-3 (all resolves to its indices), layer_fc (one
layer), like_sefa_layers_0-17 / like_rosinality_layers_0-17 for the reference conventions.
""")
@click.option("--generator", "-g", default=None, help="Generator SPEC exposing latent_weights() (e.g. planted, stylegan2:ffhq.pkl).")
@click.option("--checkpoint", default=None, help="Checkpoint file (.pt/.pth state dict, or an NVlabs .pkl read safely); needs --family. Inside g_ema, generator_smooth (before generator), state_dict, ... is read; the result records which.")
@click.option("--family", type=click.Choice(["stylegan2", "stylegan3", "stylegan", "pggan", "biggan"]), default=None, help="Weight layout of --checkpoint.")
@click.option("--layers", "layers", multiple=True, default=["all"], help="all | 0-3 | 0,2,5 (repeatable: all selections in one batched eigh), numbered as --like says.")
@click.option("--like", type=click.Choice(["engine", "sefa", "rosinality"]), default="engine", show_default=True, help="Layer set and normalisation of the engine or of a reference tool (see below).")
@click.option("-k", "k", type=int, default=10, help="Directions kept per selection.")
@click.option("--store", default=None, help="Store to write directions/sefa/<name> into (created if missing).")
@click.option("--name", default=None, help="Name of the result (one --layers only; default: the layers it holds).")
@click.option("--overwrite", is_flag=True, help="Replace an existing directions/sefa/<name> in --store.")
@click.option("--include-torgb", is_flag=True, help="StyleGAN2/3, --like engine: also factorize the ToRGB modulations.")
@click.option("--trust-checkpoint", is_flag=True, help="Allow arbitrary unpickling of --checkpoint (runs code from the file!).")
@device_option()
@json_option
def sefa_command(generator: str | None, checkpoint: str | None, family: str | None, layers: tuple[str, ...], like: str,
         k: int, store: str | None, name: str | None, overwrite: bool, include_torgb: bool, trust_checkpoint: bool,
         device: str, as_json: bool) -> None:
    """SeFa: closed-form directions, the eigenvectors of AᵀA of the layers that take the code in."""
    result = sefa(generator=generator, checkpoint=checkpoint, family=family, layers=list(layers), k=k, store=store,
                 include_torgb=include_torgb, like=like, trust_checkpoint=trust_checkpoint, name=name,
                 overwrite=overwrite, device=device)
    if as_json:
        echo_json({n: {key: v for key, v in r.items() if key != "directions"} for n, r in result.items()})
        return
    shown = 10
    for n, r in result.items():
        where = f"directions/sefa/{n} in {store}" if store else n
        share = [v / r["eigenvalue_sum"] for v in r["eigenvalues"][:shown]]
        entry = f", from the checkpoint's {r['checkpoint_entry']!r} entry" if r.get("checkpoint_entry") else ""
        held = r["layer_names"]
        held = held if len(held) <= 6 else [*held[:3], "…", *held[-2:]]
        click.echo(f"{where}: {len(r['layers'])} layer(s) {', '.join(held)}, space {r['space']}, "
                   f"{r['directions'].shape[0]}×{r['directions'].shape[1]}{entry}")
        echo_table([[i, float(v), float(s)] for i, (v, s) in enumerate(zip(r["eigenvalues"][:shown], share))],
                   ["index", "eigenvalue", "share"])
        if len(r["eigenvalues"]) > shown:
            click.echo(f"({len(r['eigenvalues']) - shown} more rows not shown: {shown} of {len(r['eigenvalues'])}; "
                       "--json prints all)")


# ---------------------------------------------------------------------------------------------- registration
def _eigenvalue_metric(store: Store, key: str, attrs: dict[str, Any]) -> str:
    if "eigenvalues" not in attrs:
        return ""
    values = np.asarray(attrs["eigenvalues"], float)
    return f"eigenvalues {', '.join(f'{v:.3g}' for v in values[:4])}…"


def _eigenvalue_curve(attrs: dict[str, Any]) -> Spectrum | None:
    if "eigenvalues" not in attrs:
        return None
    return Spectrum(np.asarray(attrs["eigenvalues"], float), "eigenvector", "eigenvalue of AᵀA", "SeFa",
                    "eigenvalue spectrum (descending)")


METHODS = (Method(METHOD, twins=(sefa,), commands=(sefa_command,), analyses={"sefa": sefa},
                  report=ReportSection(metric=_eigenvalue_metric, spectrum=_eigenvalue_curve,
                                       row_label="eigenvector")),)
