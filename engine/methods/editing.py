"""Editing along a stored direction, and re-scoring (the SeFa paper's Table 2).

Codes move as ``x + α n`` (paper 001's single-attribute manipulation) or, with ``distance=True``, to signed
distance α from the boundary nᵀx = 0, as InterFaceGAN's ``linear_interpolate`` does: x + (α − nᵀx) n.
The code lives in the direction's space: z codes go through the mapping; w codes are moved on every layer; a
flattened wp direction moves every layer by its own slice; a wp direction of one ``layer`` moves that layer.

Re-scoring runs the store's predictors on the edited images and reports, per α, the mean change of every
attribute from the unedited images: ``tables/rescore_<method>_<name>`` (rows α, columns attributes).
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from engine.methods._common import check_positive_int, open_for_reading, writing
from engine.sampler import draw_codes
from engine.store import Store


def parse_alphas(text: str | tuple | list) -> np.ndarray:
    """'START,STOP,STEPS' (or a 3-sequence) -> np.linspace(START, STOP, STEPS)."""
    parts = text.split(",") if isinstance(text, str) else list(text)
    try:
        start, stop, steps = float(parts[0]), float(parts[1]), parts[2]
        steps = int(steps) if isinstance(steps, (int, np.integer)) else int(str(steps).strip())
    except (ValueError, IndexError, TypeError):
        raise ValueError(f"--alphas must be START,STOP,STEPS (e.g. -3,3,7); got {text!r}") from None
    if len(parts) != 3 or steps < 1 or not (np.isfinite(start) and np.isfinite(stop)):
        raise ValueError(f"--alphas must be START,STOP,STEPS with STEPS ≥ 1; got {text!r}")
    return np.linspace(start, stop, steps)


def split_direction_key(key: str) -> tuple[str, int]:
    """'METHOD/NAME' or 'METHOD/NAME:ROW' -> ('METHOD/NAME', row)."""
    match = re.fullmatch(r"(.+?)(?::(\d+))?", key)
    return match.group(1), int(match.group(2) or 0)


def _moved(x: np.ndarray, n: np.ndarray, alphas: np.ndarray, distance: bool) -> np.ndarray:
    """(S, D) codes and unit (D,) n -> (S, A, D) edited codes."""
    if distance:
        shift = alphas[None, :] - (x @ n)[:, None]                    # to signed distance α from nᵀx = 0
    else:
        shift = np.broadcast_to(alphas[None, :], (x.shape[0], alphas.size))
    return x[:, None, :] + shift[..., None] * n


def edit(store: str | os.PathLike | Store, direction: str, *, alphas: Any = "-3,3,7", samples: int = 4,
         seed: int = 0, stored: bool = False, distance: bool = False, rescore: bool = False,
         out: str | os.PathLike | None = None, generator: Any = None, predictors: Any = None,
         batch: int = 256, device: str = "cpu") -> dict[str, Any]:
    """Edit ``samples`` codes along ``direction`` ('METHOD/NAME[:ROW]') at each α; returns the results.

    Codes are drawn with ``seed`` (or, with ``stored``, the store's first rows). ``out`` saves the image grid
    (rows samples, columns α); with ``rescore`` the predictors re-score every edited image, the mean change
    per α is written to ``tables/rescore_<method>_<name>`` and plotted beside ``out``. ``generator`` and
    ``predictors`` default to the models the store was sampled with.
    """
    from engine.models.registry import load_generator, load_predictor

    samples = check_positive_int("--samples", samples)
    batch = check_positive_int("--batch", batch)
    grid = parse_alphas(alphas)
    reader = open_for_reading(store, complete=stored)
    key, row = split_direction_key(direction)
    if "/" not in key:
        raise ValueError(f"--direction must be METHOD/NAME (e.g. interfacegan/smile); got {direction!r}")
    values, attrs = reader.read_direction(key)
    if row >= values.shape[0]:
        raise ValueError(f"--direction {direction!r}: {key} has {values.shape[0]} rows (0-{values.shape[0] - 1})")
    n = values[row].astype(np.float64)
    n /= np.linalg.norm(n)
    space, layer = attrs.get("space"), attrs.get("layer")
    if space not in ("z", "w", "wp"):
        raise ValueError(f"--direction {key} lives in space {space!r}; edit moves z, w or wp codes")
    if stored and samples > reader.n:
        raise ValueError(f"--samples {samples} is more than the {reader.n} stored rows")

    G = generator if generator is not None and not isinstance(generator, str) else \
        load_generator(generator or reader.meta.get("generator"), device)
    if space != "z" and not getattr(G, "has_mapping", False):
        raise ValueError(f"the generator has no mapping network, so it cannot take {space} codes")
    expected = {"z": G.z_dim, "w": G.w_dim, "wp": G.w_dim if layer is not None else G.num_ws * G.w_dim}[space]
    if n.size != expected:
        raise ValueError(f"--direction {key} has {n.size} dims; the generator's {space} codes have {expected}")
    if rescore:
        specs = predictors if predictors is not None else reader.meta.get("predictors", [])
        if not specs:
            raise ValueError("--rescore needs predictors: the store was sampled without any")
        Ps = [load_predictor(p, G, device) if isinstance(p, str) else p for p in specs]
    if out is not None and Path(out).suffix.lower() != ".png":
        raise ValueError(f"--out must name a .png file; got {out}")

    # Starting codes in the direction's space, as (S, D) rows.
    if stored:
        z = np.asarray(reader.latent_array("z")[:samples], np.float32)
    else:
        z = draw_codes(seed, 0, samples, G.z_dim)
    with torch.inference_mode():
        ws = G.mapping(torch.from_numpy(z).to(device)).float().cpu().numpy()        # (S, L, w_dim)
    if space == "z":
        x = z.astype(np.float64)
    elif space == "w":
        x = ws[:, 0].astype(np.float64)
    elif layer is None:
        x = ws.reshape(samples, -1).astype(np.float64)
    else:
        x = ws[:, int(layer)].astype(np.float64)
    moved = _moved(x, n, grid, distance).astype(np.float32)                          # (S, A, D)
    codes = np.concatenate([x[:, None, :].astype(np.float32), moved], axis=1)        # column 0: unedited

    flat = codes.reshape(-1, codes.shape[-1])
    images, scores = [], []
    with torch.inference_mode():
        for start in range(0, flat.shape[0], batch):
            part = torch.from_numpy(flat[start:start + batch]).to(device)
            if space == "z":
                wsb = G.mapping(part)
            elif space == "w":
                wsb = part[:, None, :].expand(-1, G.num_ws, -1)
            elif layer is None:
                wsb = part.reshape(-1, G.num_ws, G.w_dim)
            else:
                base = np.repeat(ws, codes.shape[1], axis=0)[start:start + batch].copy()
                base[:, int(layer)] = flat[start:start + batch]
                wsb = torch.from_numpy(base).to(device)
            img = G.synthesis(wsb)
            images.append(img.float().cpu())
            if rescore:
                scores.append(torch.cat([P(img).float() for P in Ps], dim=1).cpu().numpy())
    images = torch.cat(images).reshape(samples, codes.shape[1], *images[0].shape[1:])
    result: dict[str, Any] = {"alphas": grid, "codes": moved, "images": images[:, 1:], "space": space,
                              "direction": key, "row": row}
    if out is not None:
        from engine.plots import image_grid
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        image_grid(images[:, 1:], scale=max(1, 64 // images.shape[-1])).save(out)
        result["png"] = str(out)
    if rescore:
        attributes = [a for P in Ps for a in P.attributes]
        s = np.concatenate(scores).reshape(samples, codes.shape[1], -1).astype(np.float64)
        change = np.nanmean(s[:, 1:] - s[:, :1], axis=0)                              # (A, m)
        table = f"rescore_{key.replace('/', '_')}" + (f"_{row}" if row else "")
        rows = [f"{a:g}" for a in grid]
        with writing(store, purpose="edit --rescore") as target:
            target.write_table(table, change, rows, attributes,
                               {"direction": key, "row": row, "samples": samples, "seed": seed,
                                "distance": bool(distance), "space": space, "alphas": grid})
        result.update(table=table, rescore=change, attributes=attributes)
        if out is not None:
            from engine.plots import line_plot
            plot = Path(out).with_name(Path(out).stem + "_rescore.png")
            line_plot(grid, {a: change[:, j] for j, a in enumerate(attributes)}, xlabel="α",
                      ylabel="mean score change", title=f"re-scoring along {direction}").save(plot)
            result["plot"] = str(plot)
    return result


__all__ = ["edit", "parse_alphas"]
