"""``bench``: the engine's throughput against the bare G(z) + predictor loop on the user's own hardware."""
from __future__ import annotations

import click

from engine.cli.options import echo_json, echo_table, json_option


@click.command(epilog="""\b
Examples:
  latent-engine bench                                   # convstack + imagestats on the default device
  latent-engine bench --generator mypkg.models:make_gan --predictor imagestats --batch 32 --device cuda
  latent-engine bench --workers 2 --out bench.json      # the engine sharded over 2 processes vs 1 bare loop
  latent-engine bench --kernels --quick                 # the kernel benchmarks (needs the source checkout)

\b
Each variant runs in a fresh process on the same device and codes: `bare` is the G(z) + predictor loop
with nothing stored, `engine` is `sample` into a temporary store; --research adds the lists + np.save
habit. The table gives samples/s, the ratio to the bare loop, peak RSS (and GPU memory peak on CUDA);
--json prints the results as JSON instead, --out also writes them to a file.
""")
@click.option("--generator", "-g", default="convstack", help="Generator SPEC to measure.")
@click.option("--predictor", "-p", "predictors", multiple=True, help="Predictor SPEC (repeatable; default imagestats).")
@click.option("-n", "n", type=click.IntRange(min=1), default=None, help="Codes per variant (default 2048; 512 with --quick).")
@click.option("--batch", type=click.IntRange(min=1), default=64, help="Rows per generator call.")
@click.option("--chunk", type=click.IntRange(min=1), default=512, help="Engine chunk size.")
@click.option("--device", default="auto", help="auto, cpu, cuda or cuda:<index>.")
@click.option("--workers", type=int, default=None, help="Shard the engine variant over a local cluster of K processes.")
@click.option("--gpus", default=None, help="Shard the engine variant over dask-cuda workers on these GPUs.")
@click.option("--repeats", type=click.IntRange(min=1), default=1, help="Interleaved repeats; each variant's best run is kept.")
@click.option("--research", is_flag=True, help="Also measure the research-code habit (lists + np.save).")
@click.option("--kernels", is_flag=True, help="Run the kernel benchmarks (benchmarks/bench_kernels.py) instead.")
@click.option("--quick", is_flag=True, help="Smaller problems: a minute, not many.")
@click.option("--out", "out", type=click.Path(dir_okay=False, writable=True), default=None,
              help="Also write the results as JSON to this file.")
@json_option
def bench(generator: str, predictors: tuple[str, ...], n: int | None, batch: int, chunk: int, device: str,
          workers: int | None, gpus: str | None, repeats: int, research: bool, kernels: bool, quick: bool,
          out: str | None, as_json: bool) -> None:
    """Measure the engine's samples/s against the bare G(z) + predictor loop on your hardware."""
    import json
    from pathlib import Path

    from engine import bench as measuring
    from engine.cli.options import to_json
    from engine.devices import resolve_device
    from engine.distributed import validate_cluster_flags

    if kernels:
        payload: dict = {"kernels": measuring.kernel_benchmarks(quick)}
    else:
        validate_cluster_flags(workers, None, gpus)
        resolve_device(device)
        config = measuring.BenchConfig(generator=generator, predictors=predictors or ("imagestats",),
                                       n=n or (512 if quick else 2048), batch=batch, chunk=chunk, device=device,
                                       workers=workers, gpus=gpus)
        variants = ("bare", "engine", "research") if research else ("bare", "engine")
        payload = measuring.compare(config, variants, repeats=repeats)
    if out:
        Path(out).write_text(json.dumps(to_json(payload), indent=2, allow_nan=False) + "\n")
        click.echo(f"wrote {out}", err=as_json)
    if as_json:
        echo_json(payload)
    elif kernels:
        headers = list(dict.fromkeys(key for row in payload["kernels"] for key in row))
        echo_table([[row.get(h, "") for h in headers] for row in payload["kernels"]], headers)
    else:
        _print_bench(payload, generator, workers, gpus)


def _print_bench(payload: dict, generator: str, workers: int | None, gpus: str | None) -> None:
    rows, config = payload["results"], payload["config"]
    click.echo(f"{generator} + {', '.join(config['predictors'])}  n {config['n']}  batch {config['batch']}  "
               f"device {rows[0]['device']}  torch threads {rows[0]['torch_threads']}")
    echo_table([[r["variant"] + (f" ({workers or gpus} workers)" if r["variant"] == "engine" and (workers or gpus)
                                 else ""),
                 r["samples_per_s"], r["ratio_to_bare"], r["peak_rss_mb"], r["base_rss_mb"],
                 "-" if r["gpu_peak_mb"] is None else r["gpu_peak_mb"]] for r in rows],
               ["variant", "samples/s", "vs bare", "peak RSS MB", "RSS after warm-up MB", "GPU peak MB"])
    startup = next((r.get("startup_s") for r in rows if r.get("startup_s") is not None), None)
    if startup is not None:
        steady = next(r["steady_samples_per_s"] for r in rows if r["variant"] == "engine")
        click.echo(f"cluster start-up and model builds: {startup} s of the engine's wall time; once up: "
                   f"{steady} samples/s. The engine row's peak RSS is the client's; workers are processes "
                   "of their own.")


COMMANDS = [bench]
