"""``demo``: the whole idea on the built-in models, on a laptop's CPU."""
from __future__ import annotations

import click

from engine.cli.options import echo_json, echo_table, json_option


@click.command(epilog="""\b
Examples:
  latent-engine demo                       # into ./latent-engine-demo, about a minute on 2 CPU cores
  latent-engine demo /tmp/demo -n 100000   # more samples, better boundaries
  latent-engine demo --device cuda
""")
@click.argument("outdir", default="latent-engine-demo", type=click.Path(file_okay=False))
@click.option("-n", "n", type=click.IntRange(min=1000), default=30_000, help="Latent codes to sample.")
@click.option("--seed", type=int, default=0, help="Seed of the latent draw and the train/validation split.")
@click.option("--ratio", type=float, default=0.05, help="InterFaceGAN's top/bottom fraction per attribute.")
@click.option("--device", default="auto", help="auto, cpu, cuda or cuda:<index> for sampling.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
@json_option
def demo(outdir: str, n: int, seed: int, ratio: float, device: str, quiet: bool, as_json: bool) -> None:
    """Run the whole pipeline on the built-in digits GAN and classifier, then write an HTML report.

    sample -> boundaries for every attribute -> SeFa on the first layer -> GANSpace PCA on W -> correlate
    -> edits with re-scoring -> report. Nothing is downloaded: the models ship with latent-engine.
    """
    from engine.demonstration import demo as run_demo

    echo = (lambda *_: None) if as_json else click.echo
    result = run_demo(outdir, n=n, seed=seed, ratio=ratio, device=device, progress=not quiet and not as_json,
                      echo=echo)
    if as_json:
        echo_json(result)
        return
    click.echo("")
    echo_table([[stage, seconds] for stage, seconds in result["timings"].items()], ["stage", "seconds"])
    click.echo("")
    accuracies = result["val_accuracy"]
    echo_table([[name, acc] for name, acc in sorted(accuracies.items(), key=lambda kv: -kv[1])],
               ["InterFaceGAN boundary", "val accuracy"])
    click.echo(f"\nmean validation accuracy {result['mean_val_accuracy']:.3f} over {len(accuracies)} attributes")
    click.echo(f"directions: {', '.join(result['directions'])}")
    click.echo(f"store:  {result['store']}\nreport: {result['report']}")
    click.echo(f"explore it: latent-engine explore {result['store']}")


COMMANDS = [demo]
