"""latent-engine explore: the server's time for a slider move, against re-running ``engine.edit`` for it.

    python benchmarks/bench_explore.py --store /tmp/explore_demo/demo.zarr     # the demo's store
    python benchmarks/bench_explore.py                 # runs the demo first (about a minute on 2 cores)

The explorer is served by waitress on a loopback port, as ``latent-engine explore`` serves it; a client posts
the requests a page sends while a slider moves: 8 random samples of the store, one direction, α stepping by
0.1σ (every step a new edit, so nothing comes from the cache). Figures per move: the server's own time (its
``Server-Timing`` header), the client's round trip, and the same request again (a cache hit). The baseline is
what a person does without the explorer: one ``engine.edit`` call per slider position with the generator
already built (σ measured, codes moved, images synthesized; no PNG written). Also: two directions side by
side (two panels from one batched generator call) and four directions in one grid.
Target: a slider move on the digits demo store (8 images, CPU) in ≤ 200 ms server time.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def post(url: str, body: dict) -> tuple[float, float]:
    """(server ms, round-trip ms) of one render request."""
    request = urllib.request.Request(url + "api/render", data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    start = time.perf_counter()
    with urllib.request.urlopen(request, timeout=120) as response:
        response.read()
        timing = response.headers["Server-Timing"]
    return float(timing.split("dur=")[1]), (time.perf_counter() - start) * 1000


def summary(values: list[float]) -> str:
    ordered = sorted(values)
    p90 = ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]
    return f"median {statistics.median(values):7.1f} ms  p90 {p90:7.1f} ms  (n={len(values)})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", default=None, help="a store with directions (default: run the demo first)")
    parser.add_argument("--direction", default=None, help="METHOD/NAME[:ROW] to move (default: the first listed)")
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--moves", type=int, default=40)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", default=None, help="write the figures here")
    args = parser.parse_args()

    import engine
    from waitress import create_server

    from engine.explore import Explorer
    from engine.explore.server import create_app

    store = args.store
    if store is None:
        folder = tempfile.mkdtemp(prefix="bench_explore_")
        store = engine.demo(folder, device=args.device, progress=False, echo=lambda *_: None)["store"]
    started = time.perf_counter()
    explorer = Explorer(store, device=args.device)
    server = create_server(create_app(explorer), host="127.0.0.1", port=0, threads=4)
    threading.Thread(target=server.run, daemon=True).start()
    explorer.load()
    load_s = time.perf_counter() - started
    url = f"http://127.0.0.1:{server.effective_port}/"
    keys = [f"{d['key']}:{r}" for g in explorer.directions() for d in g["directions"] if d["editable"]
            for r in range(d["rows"])]
    key = args.direction or keys[0]
    samples = {"random": {"count": args.samples, "seed": 0}}

    def move(alpha: float, direction: str = key) -> dict:
        return {**samples, "panels": [[{"direction": direction, "alpha": round(alpha, 2)}]]}

    post(url, move(0.0))                                                   # the unedited grid, as the page does
    alphas = [0.1 * (i + 1) for i in range(args.moves)]
    fresh = [post(url, move(a)) for a in alphas]
    cached = [post(url, move(a)) for a in alphas[:10]]
    side = [post(url, {**samples, "panels": [[{"direction": key, "alpha": a}],
                                             [{"direction": keys[-1], "alpha": -a}]]}) for a in alphas[:20]]
    four = [post(url, {**samples, "panels": [[{"direction": k, "alpha": a} for k in keys[:4]]]})
            for a in alphas[:20]]

    from engine.methods.editing import edit, split_direction_key
    name, row = split_direction_key(key)
    baseline = []
    for a in alphas[:10]:
        start = time.perf_counter()
        edit(store, f"{name}:{row}", alphas=[a, a, 1], samples=args.samples, stored=True, generator=explorer.G,
             device=args.device)
        baseline.append((time.perf_counter() - start) * 1000)
    server.close()

    load = os.getloadavg()
    print(f"store {store}; generator {explorer.generator_spec} on {args.device}; {args.samples} samples; "
          f"direction {key}; models loaded in {load_s:.2f} s; load average {load[0]:.2f}")
    rows = {"slider move, server time": [s for s, _ in fresh], "slider move, round trip": [r for _, r in fresh],
            "same move again (cache), server": [s for s, _ in cached],
            "two directions side by side, server": [s for s, _ in side],
            "four directions in one grid, server": [s for s, _ in four],
            "baseline: engine.edit per move": baseline}
    for label, values in rows.items():
        print(f"{label:<38} {summary(values)}")
    ratio = statistics.median(baseline) / statistics.median(rows["slider move, server time"])
    print(f"engine.edit per move / explore server time: {ratio:.1f}x")
    if args.json:
        Path(args.json).write_text(json.dumps({"store": store, "direction": key, "samples": args.samples,
                                               "load_s": load_s, "ms": rows, "loadavg": load}, indent=2))


if __name__ == "__main__":
    main()
