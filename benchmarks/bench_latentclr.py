"""Benchmark: LatentCLR training steps, the engine's against a plain loop written as the public code's, same run.

The setting is issue 14's: the digits demo GAN, its layer ``fc`` (1,024 features), K = 32 global directions,
B = 32 codes per step (1,024 moved codes), identity projector, the public defaults (α 0.1, Adam 1e-3). Both
sides train from the same initial directions on the same rows, in one process, on ``--device``:

* engine: ``engine.methods.latentclr``'s training step (the K·B moved codes in one generator pass, the loss's
  same-direction terms read from the similarity matrix's diagonal blocks);
* plain loop: the public code's trainer step (catlab-team/latentclr ``colat/trainer.py``, ``colat/loss.py``),
  re-written here: the codes repeated K times, one generator pass per direction of B codes, a boolean mask of
  the pairs built in a Python loop every step, ``masked_select`` for the positives and negatives.

Reported: seconds per 1,000 steps of each (the mean over ``--steps`` timed steps after 2 warm-up steps,
scaled), their ratio, the two losses' difference on the same divergences (the same math: float rounding), the torch
thread count and the load average (the CPU is shared: read the ratio, measured in one run, before the times).

    python benchmarks/bench_latentclr.py --store /tmp/bench_clr.zarr --steps 20 --json clr.json

``--study STORE`` instead trains K = 16 global directions on the digits GAN's layer ``up1`` (B = 16, 300 steps,
lr 1e-2, α 1) over a digits store with the classifier's and imagestats' scores (sampled there if missing:
8,192 rows), then reports what issue 14 asks of them: their pairwise |cos|, the loss, the σ of the stored w along
each, the two attributes each moves most under ``edit --rescore`` at raw α = ±3 (in each attribute's std), and
the best |cos| of each with the InterFaceGAN boundaries, SeFa (layer fc) and GANSpace (w) directions.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def ensure_store(path: str) -> None:
    import engine
    from engine.store import Store, StoreError
    try:
        if Store.open(path).complete:
            return
    except StoreError:
        pass
    engine.sample(path, "digits", [], n=4096, seed=0, chunk=4096, batch=1024, spaces=["z", "w"], overwrite=True,
                  progress=False)


def plain_loss(features: torch.Tensor, k: int, temp: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """The public code's contrastive loss: exp(|sim|·temp), masks of the pairs, means of the masked entries."""
    n = len(features)
    sim = torch.exp(torch.abs(features @ features.t()) * temp)
    mask = torch.zeros((n, n), dtype=torch.bool, device=sim.device)
    for i in range(k):
        lo, hi = i * (n // k), (i + 1) * (n // k)
        mask[lo:hi, lo:hi] = True
    off_diagonal = ~torch.eye(n, dtype=torch.bool, device=sim.device)
    pos = sim.masked_select(mask & off_diagonal).view(n, -1).mean(dim=-1)
    neg = sim.masked_select(~mask).view(n, -1).mean(dim=-1)
    return -torch.log(pos / neg).mean(), (pos > neg).float().mean()


class PlainStep:
    """One training step as the public trainer takes it, with the same generator tap and starting directions."""

    def __init__(self, G, module, params: torch.Tensor, alpha: float, lr: float, device) -> None:
        self.G, self.module, self.alpha = G, module, alpha
        self.params = torch.nn.Parameter(params.detach().clone().to(device))
        self.optimizer = torch.optim.Adam([self.params], lr=lr, weight_decay=1e-3)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        from engine.methods.latentclr import layer_features
        f = layer_features(self.G, self.module, x, "w")
        return f / torch.norm(f, dim=1).reshape(-1, 1)                 # the identity projector normalises

    def divergences(self, x: torch.Tensor) -> torch.Tensor:
        """The (K·B, F) unit feature divergences of the current directions at ``x``, as the step computes them."""
        k, b = self.params.shape[0], x.shape[0]
        with torch.no_grad():
            original = self.features(x)
            moved = x.reshape(1, -1, x.shape[1]).repeat(k, 1, 1)
            step = self.params / torch.norm(self.params, dim=1).reshape(-1, 1)
            moved = (moved + self.alpha * step.reshape(k, 1, -1)).reshape(-1, x.shape[1])
            feats = self.features(moved).reshape(k, b, -1) - original
            return (feats / torch.norm(feats, dim=-1, keepdim=True)).reshape(k * b, -1)

    def __call__(self, x: torch.Tensor) -> tuple[float, float]:
        k, b = self.params.shape[0], x.shape[0]
        with torch.no_grad():
            original = self.features(x)
        self.optimizer.zero_grad()
        moved = x.reshape(1, -1, x.shape[1]).repeat(k, 1, 1)
        step = self.params / torch.norm(self.params, dim=1).reshape(-1, 1)
        moved = (moved + self.alpha * step.reshape(k, 1, -1)).reshape(-1, x.shape[1])
        parts = []
        for j in range(k):                                             # one generator pass per direction
            feats = self.features(moved[j * b:(j + 1) * b]) - original
            parts.append(feats / torch.norm(feats, dim=1).reshape(-1, 1))
        loss, accuracy = plain_loss(torch.cat(parts), k)
        loss.backward()
        self.optimizer.step()
        return float(loss.detach()), float(accuracy)


def study(path: str) -> dict:
    """The digits study of the module docstring."""
    import engine
    from engine.methods.latentclr import latentclr
    from engine.store import Store, StoreError
    try:
        ready = Store.open(path).complete
    except StoreError:
        ready = False
    if not ready:
        engine.sample(path, "digits", ["digits", "imagestats"], n=8192, seed=0, chunk=4096, batch=1024,
                      spaces=["z", "w"], overwrite=True, progress=False)
    engine.boundaries(path, space="w", ratio=0.05, overwrite=True)
    engine.sefa(generator="digits", store=path, k=16, overwrite=True)
    engine.pca(path, array="latents/w", k=16, overwrite=True)
    start = time.perf_counter()
    run = latentclr(path, layer="up1", k=16, batch=16, steps=300, lr=1e-2, alpha=1.0, name="study", overwrite=True,
                    progress=False)
    out: dict = {"train_s": round(time.perf_counter() - start, 1), "loss_first": run["loss_first"],
                 "loss_last": run["loss_last"], "accuracy_last": run["accuracy_last"]}
    reader = Store.open(path)
    D = run["directions"].astype(np.float64)
    cosines = np.abs(D @ D.T)[~np.eye(len(D), dtype=bool)]
    out["pairwise_abs_cos_max"], out["pairwise_abs_cos_mean"] = float(cosines.max()), float(cosines.mean())
    w = np.asarray(reader.latent_array("w")[:4096], np.float64)
    out["sigma_in_w"] = np.std(w @ D.T, axis=0).round(3).tolist()
    out["w_std_along_principal_axes"] = np.sqrt(np.linalg.eigvalsh(np.cov(w.T))[::-1][[0, -1]]).round(3).tolist()

    def rows(prefix: str) -> list[tuple[str, np.ndarray]]:
        found = []
        for key in reader.directions():
            values, attrs = reader.read_direction(key)
            if key.startswith(prefix) and attrs.get("space") == "w" and attrs.get("layer") is None:
                found += [(key if len(values) == 1 else f"{key}:{i}", v.astype(np.float64))
                          for i, v in enumerate(values)]
        return found
    references = {"interfacegan": rows("interfacegan/"), "sefa": rows("sefa/layer_fc"), "ganspace": rows("ganspace/w")}
    out["per_direction"] = []
    for row in range(len(D)):
        edit = engine.edit(path, f"latentclr/study:{row}", alphas="-3,3,3", units="raw", samples=32, rescore=True,
                           overwrite=True)
        relative = np.nanmax(np.abs(edit["rescore"]) / edit["attribute_std"], axis=0)
        entry = {"row": row, "moves": [(edit["attributes"][j], round(float(relative[j]), 2))
                                       for j in np.argsort(-relative)[:2]]}
        for method, vectors in references.items():
            key, value = max(((k, abs(float(v @ D[row]))) for k, v in vectors), key=lambda kv: kv[1])
            entry[method] = (key, round(value, 2))
        out["per_direction"].append(entry)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--store", default="/tmp/bench_clr.zarr")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per side (after 2 warm-up steps)")
    parser.add_argument("-k", type=int, default=32)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--layer", default="fc")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", default=None)
    parser.add_argument("--study", default=None, metavar="STORE", help="run the digits study instead (docstring)")
    args = parser.parse_args()
    if args.study:
        result = study(args.study)
        print(json.dumps(result, indent=1))
        if args.json:
            Path(args.json).write_text(json.dumps(result, indent=1))
        return

    import engine
    from engine.devices import resolve_device
    from engine.methods import latentclr as clr
    from engine.store import Store

    device = resolve_device(args.device)
    ensure_store(args.store)
    reader = Store.open(args.store)
    G = engine.load_generator("digits", device)
    for p in G.parameters():
        p.requires_grad_(False)
    module = dict(G.named_modules())[args.layer]
    pool, _ = clr._pool(reader, "w", False)
    settings = {"seed": 0, "model_kind": "global", "projector": "identity", "k": args.k, "batch": args.batch,
                "lr": clr.LR, "alpha": clr.ALPHA, "temperature": clr.TEMPERATURE, "space": "w",
                "tapped_layer": args.layer}
    width = clr.layer_features(G, module, torch.from_numpy(pool[:2]).to(device), "w").shape[1]
    trainer = clr._Trainer(G, module, pool, None, settings, device, width)
    plain = PlainStep(G, module, trainer.model.directions, clr.ALPHA, clr.LR, device)
    rows = torch.randint(pool.shape[0], (args.steps + 2, args.batch), generator=torch.Generator().manual_seed(1))

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def timed(step) -> tuple[float, float]:
        first = step(0)
        step(1)
        sync()
        start = time.perf_counter()
        for i in range(2, args.steps + 2):
            step(i)
        sync()
        return (time.perf_counter() - start) / args.steps, first

    divergences = plain.divergences(torch.from_numpy(pool[rows[0]]).to(device))
    parity = abs(float(plain_loss(divergences, args.k)[0]) - float(clr.contrastive_loss(
        divergences.reshape(args.k, args.batch, -1), clr.TEMPERATURE)[0]))
    plain_time, plain_first = timed(lambda i: plain(torch.from_numpy(pool[rows[i]]).to(device))[0])
    engine_time, engine_first = timed(lambda i: clr._train_step(trainer)[0])
    result = {"device": str(device), "k": args.k, "batch": args.batch, "layer": args.layer, "feature_width": width,
              "timed_steps": args.steps, "engine_s_per_1000_steps": round(engine_time * 1000, 1),
              "plain_loop_s_per_1000_steps": round(plain_time * 1000, 1),
              "speedup": round(plain_time / engine_time, 2), "loss_difference_same_divergences": parity,
              "engine_first_loss": engine_first, "plain_first_loss": plain_first, "torch_threads": torch.get_num_threads(),
              "load_average": os.getloadavg()}
    print(json.dumps(result, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
