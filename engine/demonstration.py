"""``latent-engine demo``: the whole pipeline on the built-in digits models, on a laptop's CPU.

sample -> InterFaceGAN boundaries for every attribute -> SeFa on the generator's first layer -> GANSpace PCA
on W -> correlation tables -> edits with re-scoring along each method's strongest directions -> HTML report.
Every stage is the same library call a user makes; the demo only chooses sizes and records timings.
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from engine.store import Store

GENERATOR = "digits"
PREDICTORS = ("digits", "imagestats")
SPACE = "w"          # SeFa and GANSpace directions live in W, so all three methods can be matched there


@contextmanager
def _stage(name: str, timings: dict[str, float], echo: Any) -> Iterator[None]:
    echo(f"[{len(timings) + 1}] {name} ...")
    start = time.perf_counter()
    yield
    timings[name] = round(time.perf_counter() - start, 2)
    echo(f"    done in {timings[name]:.1f} s")


def demo(out_dir: str | Path = "latent-engine-demo", *, n: int = 30_000, seed: int = 0, ratio: float = 0.05,
         edits_per_method: int = 3, device: str = "auto", progress: bool = True,
         echo: Any = print) -> dict[str, Any]:
    """Run the pipeline into ``out_dir`` (store ``demo.zarr``, report ``report/``); returns a summary.

    ``ratio`` is InterFaceGAN's top/bottom fraction; 0.05 keeps enough rows per side at the demo's n.
    Re-running replaces the previous demo store in ``out_dir`` (never anything else).
    """
    import engine
    from engine.reporting import REPORT_STAGE, report, strongest_directions

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = str(out / "demo.zarr")
    timings: dict[str, float] = {}
    with _stage(f"sample {n} digits codes through the GAN, the classifier and imagestats", timings, echo):
        engine.sample(path, GENERATOR, list(PREDICTORS), n=n, seed=seed, chunk=4096, batch=1024, device=device,
                      spaces=["z", "w"], overwrite=Path(path).exists(), progress=progress)
    with _stage("InterFaceGAN boundaries for every attribute (one batched SVM)", timings, echo):
        fitted = engine.boundaries(path, space=SPACE, ratio=ratio, seed=seed)
    with _stage("SeFa on the generator's first layer", timings, echo):
        engine.sefa(generator=GENERATOR, store=path, k=10)
    with _stage("GANSpace PCA on W", timings, echo):
        engine.pca(path, array=f"latents/{SPACE}", k=10)
    with _stage("correlation tables", timings, echo):
        engine.correlate(path)
    targets = [key for key, _ in strongest_directions(Store.open(path), edits_per_method)]
    with _stage(f"edits with re-scoring along {len(targets)} directions", timings, echo):
        for key in targets:                       # ±3σ: a large edit along every direction, whatever its space
            engine.edit(path, key, alphas="-3,3,7", units="sigma", samples=8, seed=seed, rescore=True, device="cpu")
    Store.open(path, mode="r+").update_meta(timings=timings)
    with _stage(REPORT_STAGE, timings, echo):
        page = report(path, out / "report", per_method=edits_per_method, progress=progress)
    Store.open(path, mode="r+").update_meta(timings=timings)
    accuracies = {name: r["val_accuracy"] for name, r in fitted.items() if r.get("val_accuracy") is not None}
    return {"store": path, "report": str(page), "timings": timings, "val_accuracy": accuracies,
            "mean_val_accuracy": sum(accuracies.values()) / max(len(accuracies), 1),
            "directions": Store.open(path).directions()}

