"""``sample`` and ``info``: fill a store and look at it."""
from __future__ import annotations

import click

from engine.cli.options import cluster_option, echo_json, echo_table, json_option

SPACE_CHOICE = click.Choice(["z", "w", "wp"])


@click.command(epilog="""\b
Examples:
  latent-engine sample run.zarr --generator planted --predictor planted -n 100000 --seed 0
  latent-engine sample run.zarr --generator digits --predictor digits --predictor imagestats -n 50000 --space z --space w
  latent-engine sample run.zarr --generator planted --predictor planted -n 100000 --resume
  latent-engine sample big.zarr --generator mypkg.models:make_gan --predictor imagestats -n 500000 --workers 2
  latent-engine sample ffhq.zarr --generator stylegan2:stylegan2-ffhq-config-f.pt,truncation=0.7 --predictor imagestats -n 200000 --space w --space wp
  latent-engine sample afhq.zarr --generator stylegan3:stylegan3-t-afhqv2-512x512.pkl --predictor imagestats -n 50000 --precision bf16 --device cuda
  latent-engine sample big.zarr --generator planted --predictor planted -n 1000000 --cluster local.yaml
  latent-engine sample /shared/big.zarr --generator stylegan2:ffhq.pt --predictor imagestats -n 500000 --cluster slurm.yaml --dry-run

\b
A cluster file (--cluster FILE; README, "Clusters"):
  kind: slurm                  # local | scheduler | slurm | pbs (slurm/pbs: the [cluster] extra)
  jobs: 4
  cores: 8
  memory: 32GiB
  walltime: "02:00:00"
  queue: gpu
  job_extra_directives: ["--gres=gpu:1"]
""")
@click.argument("store", type=str)
@click.option("--generator", "-g", required=True, help="Generator SPEC: planted, digits, convstack, stylegan2:FILE, stylegan3:FILE.pkl, stylegan:FILE.pth (options after commas: truncation=0.7, truncation_cutoff=8, noise=const|random, class=K), or pkg.module:factory.")
@click.option("--predictor", "-p", "predictors", multiple=True, help="Predictor SPEC (repeatable): planted, digits, imagestats, pkg.module:factory.")
@click.option("-n", "n", type=int, required=True, help="Number of latent codes to sample.")
@click.option("--seed", type=int, default=0, help="Seed of the latent draw; recorded in the store.")
@click.option("--chunk", type=int, default=4096, help="Rows per chunk: the unit of work, resumption and storage.")
@click.option("--batch", type=int, default=None, show_default=False,
              help="Rows per generator call on the device [default: 64 on CPU, 256 on CUDA, the faster sizes "
                   "measured for the built-in models; time yours with `latent-engine bench --batch B`].")
@click.option("--device", default="auto", help="auto, cpu, cuda or cuda:<index>.")
@click.option("--space", "spaces", type=SPACE_CHOICE, multiple=True, help="Latent spaces to store (repeatable; default z and w when the generator maps).")
@click.option("--workers", type=int, default=None, help="Spread chunks over a local Dask cluster of this many processes.")
@click.option("--scheduler", default=None, help="Address of an existing Dask scheduler (tcp://host:8786).")
@click.option("--gpus", default=None, help="Comma-separated GPU indices: one Dask worker per GPU (needs the [gpu] extra).")
@cluster_option
@click.option("--dry-run", is_flag=True, help="With --cluster: print the batch job script dask-jobqueue would submit "
                                               "(or what would be started) and run nothing.")
@click.option("--resume", is_flag=True, help="Continue an interrupted run: redo exactly the uncommitted chunks.")
@click.option("--overwrite", is_flag=True, help="Replace an existing store.")
@click.option("--precision", type=click.Choice(["fp32", "bf16", "fp16"]), default=None,
              help="Arithmetic of the generator and predictors (torch autocast); codes and scores are stored as float32 [default: fp32; on --resume, the run's own].")
@click.option("--channels-last", is_flag=True,
              help="Run convolutions in the channels-last memory format (often faster on GPUs with tensor cores, "
                   "with --precision bf16/fp16; not measured by latent-engine, so off by default).")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@json_option
def sample(store: str, generator: str, predictors: tuple[str, ...], n: int, seed: int, chunk: int, batch: int | None,
           device: str, spaces: tuple[str, ...], workers: int | None, scheduler: str | None, gpus: str | None,
           cluster: str | None, dry_run: bool, resume: bool, overwrite: bool, precision: str | None,
           channels_last: bool, quiet: bool, as_json: bool) -> None:
    """Sample N latent codes through a generator and predictors into a Zarr store.

    The codes of each chunk depend only on (seed, chunk index, chunk size, z_dim), so the store is identical
    however the run is split, interrupted or distributed.
    """
    from engine.sampler import sample as run_sample
    from engine.summary import summarize

    if dry_run:
        print_cluster_dry_run(cluster, as_json)
        return
    result = run_sample(store, generator, list(predictors), n=n, seed=seed, chunk=chunk, batch=batch,
                        device=device, spaces=list(spaces) or None, resume=resume, overwrite=overwrite,
                        progress=not quiet and not as_json, workers=workers, scheduler=scheduler, gpus=gpus,
                        precision=precision, cluster=cluster, channels_last=channels_last)
    summary = summarize(result)
    if as_json:
        echo_json(summary)
    else:
        _print_summary(summary)


def print_cluster_dry_run(cluster: str | None, as_json: bool = False) -> None:
    """``--cluster FILE --dry-run``: the checked file's job script (slurm/pbs) or what it would start."""
    from engine.cluster_config import dry_run_text, load_cluster_config

    if cluster is None:
        raise click.UsageError("--dry-run shows the cluster of --cluster FILE; give a cluster file")
    config = load_cluster_config(cluster)
    note, script = dry_run_text(config)
    if as_json:
        echo_json({"cluster": config.describe(), "kind": config.kind, "jobs": config.options.get("jobs"),
                   "job_script": script or None})
        return
    click.echo(note, err=bool(script))        # the script alone on stdout: `--dry-run > job.sh` runs as is
    if script:
        click.echo(script.rstrip())


@click.command(epilog="""\b
Examples:
  latent-engine info run.zarr
  latent-engine info run.zarr --json | jq .attributes
""")
@click.argument("store", type=str)
@json_option
def info(store: str, as_json: bool) -> None:
    """Summarise a store: run metadata, progress, attribute statistics (NaN counts), directions and tables."""
    from engine.store import Store
    from engine.summary import summarize

    summary = summarize(Store.open(store))
    if as_json:
        echo_json(summary)
    else:
        _print_summary(summary)


def _describe_source(source: dict) -> str:
    kind = source.get("kind", "unknown")
    if kind == "sampled":
        return f"sampled, seed {source.get('seed')}"
    if kind == "imported":
        return f"imported from {', '.join(source.get('files') or []) or '?'}"
    if kind == "mapped":
        return f"mapped from {source.get('from')}"
    if kind == "inverted":
        images = source.get("images") or {}
        return (f"inverted from {images.get('path', '?')}, {source.get('steps')} steps, "
                f"{source.get('restarts')} restart(s)")
    return kind


def _describe_inversion(settings: dict) -> str:
    """An inverted store's settings on one line: 'space w, 300 steps, 4 restart(s), lr 0.1, no feature loss, ...'."""
    def number(value) -> str:
        return "?" if value is None else f"{value:g}"

    feature = (f"feature loss {settings['feature_loss']} (weight {number(settings['feature_weight'])})"
               if settings.get("feature_loss") else "no feature loss")
    noise = (f"noise maps optimised (weight {number(settings['noise_weight'])})" if settings.get("optimize_noise")
             else "noise maps not optimised")
    targets = "targets kept" if settings.get("keep_images") else "targets not kept"
    return (f"space {settings.get('space')}, {settings.get('steps')} steps, {settings.get('restarts')} restart(s), "
            f"lr {number(settings.get('lr'))}, {feature}, {noise}, {targets}")


def _print_summary(s: dict) -> None:
    state = "complete" if s["complete"] else f"INCOMPLETE ({s['chunks_done']}/{s['n_chunks']} chunks; use --resume)"
    click.echo(f"{s['path']}  schema {s['schema']}  latent-engine {s['engine_version']}")
    click.echo(f"  n {s['n']}  chunk {s['chunk']}  {state}  seed {s['seed']}")
    click.echo(f"  generator {s['generator']}  predictors {', '.join(s['predictors']) or '-'}")
    if s.get("samples_per_s"):
        click.echo(f"  sampled on {s['device']} at {s['samples_per_s']} samples/s")
    if s.get("images_per_s"):
        click.echo(f"  inverted on {s['device']} at {s['images_per_s']} images/s")
    if (s.get("inversion_settings") or {}).get("steps") is not None:      # a store that recorded its settings
        click.echo(f"  inversion settings: {_describe_inversion(s['inversion_settings'])}")
    if s.get("inversion", {}).get("rows"):
        e = s["inversion"]
        click.echo(f"  inversion error (pixel MSE) over {e['rows']} rows: mean {e['mean']:.4g}, median "
                   f"{e['median']:.4g}, max {e['max']:.4g}; PSNR of the mean {e['psnr_db']:.3g} dB")
    if s.get("noise_maps"):
        click.echo(f"  inversion/noise  {s['noise_maps']['description']}")
    for name, shape in s["arrays"].items():
        if name == "labels":
            counts = s["labels"]["counts"]
            shown = ", ".join(f"{k}: {v}" for k, v in list(counts.items())[:8]) + (", ..." if len(counts) > 8 else "")
            click.echo(f"  {name:<12} {str(tuple(shape)):<18} {len(counts)} of {s['labels']['num_classes']} "
                       f"classes drawn ({shown})")
            continue
        click.echo(f"  {name:<12} {str(tuple(shape)):<18} {_describe_source(s['sources'].get(name, {}))}")
    if s["attributes"]:
        click.echo("")
        echo_table([[name, st["mean"], st["std"], st["nan"]] for name, st in s["attributes"].items()],
                   ["attribute", "mean", "std", "NaN"])
    if s["directions"]:
        click.echo("")
        echo_table([[key, tuple(d["shape"]), d["space"], d.get("val_accuracy", "")] for key, d in s["directions"].items()],
                   ["direction", "shape", "space", "val acc"])
    if s["tables"]:
        click.echo(f"\n  tables: {', '.join(s['tables'])}")


COMMANDS = [sample, info]
