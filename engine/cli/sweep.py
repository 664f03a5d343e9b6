"""``sweep``: many sample runs and their analyses from one YAML file."""
from __future__ import annotations

import click

from engine.cli.options import cluster_option, echo_json, echo_table, json_option
from engine.sweep import ANALYSES

SWEEP_EXAMPLE = """\b
Example SWEEP.yaml (lists are swept as a cartesian product):
  out: runs                       # folder of the runs, relative to this file
  # cluster: cluster.yaml         # optional: one cluster for every run (README, "Clusters"); runs then set
  #                               # no workers | scheduler | gpus
  defaults:
    n: 20000
    analyses: [boundaries]
  runs:
    - generator: [planted, "planted:seed=3"]
      predictors: [planted]       # one predictor set; a list of lists sweeps sets
      seed: [0, 1]
      spaces: [z, w]
      analyses: [boundaries, {pca: {k: 10}}, correlate]
    - name: conv
      generator: convstack:channels=32
      predictors: [imagestats]
      n: 5000
      workers: 2                  # or scheduler: tcp://host:8786, or gpus: "0,1"

\b
Run keys: name, generator, predictors, seed, n, spaces (swept); chunk, batch, device,
workers | scheduler | gpus, analyses (ANALYSES; a name or
{name: {options}}). Top-level keys: out, cluster, defaults, runs. A cluster file is started
once for the whole sweep: every run samples on it and pca/correlate reduce on it (runs then
set no workers | scheduler | gpus). Each run gets its own folder with
store.zarr and run.json; a re-run skips finished runs and stages and resumes the rest;
summary.md and summary.json list rows, samples/s and boundary accuracies per run.

\b
Examples:
  latent-engine sweep sweep.yaml --dry-run
  latent-engine sweep sweep.yaml --out /scratch/runs -q
  latent-engine sweep sweep.yaml --cluster slurm.yaml --dry-run    # the runs and the job script
"""


@click.command(epilog=SWEEP_EXAMPLE.replace("ANALYSES", ", ".join(ANALYSES)))
@click.argument("sweep_file", metavar="SWEEP.yaml", type=str)
@click.option("--out", default=None, help="Folder of the runs (default: the file's `out`, else <file stem>-runs beside it).")
@click.option("--dry-run", is_flag=True, help="Validate the file and print the resolved runs (and the cluster's "
                                               "batch job script); run nothing.")
@cluster_option
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
@json_option
def sweep(sweep_file: str, out: str | None, dry_run: bool, cluster: str | None, quiet: bool, as_json: bool) -> None:
    """Run many sample runs and their analyses from one YAML file; resumable, with a summary table."""
    from engine.cluster_config import dry_run_text
    from engine.sweep import load_sweep, run_sweep, state_of

    plan = load_sweep(sweep_file, out, cluster=cluster)
    if dry_run:
        resolved = [{**run.describe(), "folder": str(plan.out / run.name), "state": state_of(run, plan.out)}
                    for run in plan.runs]
        note, script = dry_run_text(plan.cluster) if plan.cluster is not None else (None, "")
        if as_json:
            echo_json({"out": str(plan.out), "runs": resolved,
                       **({"cluster": {"describe": plan.cluster.describe(), "job_script": script or None}}
                          if plan.cluster is not None else {})})
            return
        if plan.cluster is not None:
            click.echo(note)
            if script:
                click.echo(script.rstrip() + "\n")
        click.echo(f"{len(plan.runs)} run(s) into {plan.out}")
        echo_table([[r["name"], r["state"], r["generator"], ",".join(r["predictors"]) or "-", r["seed"], r["n"],
                     ",".join(r["spaces"] or ["default"]), ",".join(a for a, _ in r["analyses"]) or "-"]
                    for r in resolved],
                   ["run", "state", "generator", "predictors", "seed", "n", "spaces", "analyses"])
        return
    echo = (lambda line: None) if as_json else click.echo
    rows = run_sweep(plan, progress=not quiet and not as_json, echo=echo)
    if as_json:
        echo_json({"out": str(plan.out), "runs": rows})
    else:
        click.echo("")
        click.echo((plan.out / "summary.md").read_text().rstrip())
        click.echo(f"\nsummary: {plan.out / 'summary.md'}  {plan.out / 'summary.json'}")
    failed = [r for r in rows if r["status"] == "failed"]
    if failed:
        raise click.ClickException(f"{len(failed)} of {len(rows)} runs failed (first: {failed[0]['run']}: "
                                   f"{failed[0]['error']}); fix and run the sweep again to retry them")


COMMANDS = [sweep]
