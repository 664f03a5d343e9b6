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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--store", default="/tmp/bench_clr.zarr")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per side (after 2 warm-up steps)")
    parser.add_argument("-k", type=int, default=32)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--layer", default="fc")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()

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
