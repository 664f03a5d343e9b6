"""Method commands: boundaries, condition, edit, sefa, pca, correlate, export, import-interfacegan.

Each command parses, calls its Python twin in ``engine.methods`` / ``engine.interop`` and prints; the library
validates and raises ValueError/StoreError, which the group turns into a one-line ``Error: ...``.
"""
from __future__ import annotations

import click

from engine.cli.options import echo_json, echo_table, json_option

SPACE_CHOICE = click.Choice(["z", "w", "wp"])
workers_option = click.option("--workers", type=int, default=None,
                              help="Reduce the chunks on a local Dask cluster of this many processes.")
scheduler_option = click.option("--scheduler", default=None, help="Address of an existing Dask scheduler.")


def _fmt(value: object) -> object:
    return "-" if value is None else value


@click.command(epilog="""\b
Examples:
  latent-engine boundaries run.zarr
  latent-engine boundaries run.zarr --space w --attribute smile --attribute age --ratio 0.05
  latent-engine boundaries run.zarr --num 10000 --split 0.7 --loss squared_hinge -C 0.1 --seed 3
  latent-engine boundaries run.zarr --space wp --layer 4 --invalid-value -1
  latent-engine boundaries run.zarr --attribute smile --overwrite

\b
Stored as directions/interfacegan/<attr> for --space z, <attr>@w, <attr>@wp and <attr>@wp<L>
(--layer L) for the others, so one attribute's boundaries in several spaces live side by side.
""")
@click.argument("store")
@click.option("--space", type=SPACE_CHOICE, default="z", help="Latent space the boundaries live in (wp: flattened layers, or one with --layer).")
@click.option("--layer", type=int, default=None, help="With --space wp: fit in this layer's w only.")
@click.option("--attribute", "attributes", multiple=True, help="Attribute to fit (repeatable; default all).")
@click.option("--ratio", type=float, default=0.02, help="Top and bottom fraction of valid rows used (InterFaceGAN: 10K of 500K).")
@click.option("--num", type=int, default=None, help="Use exactly this many rows per side instead of --ratio.")
@click.option("--split", type=float, default=0.7, help="Training fraction of each side; the rest validates (1.0: no validation).")
@click.option("--loss", type=click.Choice(["hinge", "squared_hinge"]), default="hinge", help="SVM loss (hinge = InterFaceGAN's SVC).")
@click.option("-C", "C", type=float, default=1.0, help="SVM inverse regularisation strength.")
@click.option("--seed", type=int, default=0, help="Seed of the train/validation shuffle (recorded).")
@click.option("--invalid-value", type=float, default=None, help="Score value to drop like NaN (e.g. a predictor's failure code).")
@click.option("--overwrite", is_flag=True, help="Replace boundaries already stored under the same names.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@json_option
def boundaries(store: str, space: str, layer: int | None, attributes: tuple[str, ...], ratio: float,
               num: int | None, split: float, loss: str, C: float, seed: int, invalid_value: float | None,
               overwrite: bool, quiet: bool, as_json: bool) -> None:
    """InterFaceGAN: fit one linear SVM boundary per attribute and store its unit normal.

    Writes directions/interfacegan/<attr> (z) or <attr>@<space> (1, d) with the accuracies on the
    training, validation and remaining rows. All attributes are fitted in one batched kernel call; an
    attribute whose scores cannot be fitted (e.g. all NaN) is skipped with a warning, or is an error when
    named with --attribute. Existing boundaries are kept unless --overwrite.
    """
    from engine.methods.interfacegan import boundaries as run

    result = run(store, space=space, attributes=list(attributes) or None, ratio=ratio, num=num, split=split,
                 loss=loss, C=C, seed=seed, invalid_value=invalid_value, layer=layer, overwrite=overwrite,
                 progress=not quiet and not as_json)
    if as_json:
        echo_json(result)
        return
    echo_table([[f"interfacegan/{name}", r["attribute"], r["space"] if r["layer"] is None else
                 f"{r['space']}[{r['layer']}]", r["num"], r["train_accuracy"], _fmt(r["val_accuracy"]),
                 _fmt(r["remaining_accuracy"])] for name, r in result.items()],
               ["direction", "attribute", "space", "num/side", "train acc", "val acc", "remaining acc"])


@click.command(epilog="""\b
Examples:
  latent-engine condition run.zarr --primary smile --condition gender
  latent-engine condition run.zarr --primary age --condition eyeglasses --condition gender --name age_pure
  latent-engine condition run.zarr --primary interfacegan/age --condition sefa/layers_0-3:0
  latent-engine condition run.zarr --primary age@w --condition gender@w --overwrite
""")
@click.argument("store")
@click.option("--primary", required=True, help="Direction to keep: NAME (InterFaceGAN) or METHOD/NAME.")
@click.option("--condition", "conditions", multiple=True, required=True, help="Direction to stay orthogonal to (repeatable).")
@click.option("--name", default=None, help="Name of the new direction (default <primary>__cond_<conditions>, space suffix last).")
@click.option("--overwrite", is_flag=True, help="Replace a direction already stored under that name.")
@json_option
def condition(store: str, primary: str, conditions: tuple[str, ...], name: str | None, overwrite: bool,
              as_json: bool) -> None:
    """Conditional manipulation: project the primary direction off the span of the conditions.

    The result is renormalised and written beside the primary, with attrs naming its parents; a warning says
    when the primary is nearly inside the span. Repeated or linearly dependent conditions are fine.
    """
    from engine.methods.interfacegan import condition as run

    result = run(store, primary, list(conditions), name=name, overwrite=overwrite)
    if as_json:
        echo_json(result)
    else:
        click.echo(f"wrote directions/{result['key']}  (cosine to primary {result['cosine_to_primary']:.4f}, "
                   f"kept {result['residual_norm']:.4f} of it)")


@click.command(epilog="""\b
Examples:
  latent-engine edit run.zarr --direction interfacegan/smile --out smile.png
  latent-engine edit run.zarr --direction interfacegan/age --alphas -5,5,11 --samples 8 --rescore --out age.png
  latent-engine edit run.zarr --direction sefa/layers_0-3:2 --stored --distance --out sefa2.png
  latent-engine edit run.zarr --direction ganspace/w:0 --alphas -10,10,5 --units raw --out pc0.png
\b
α counts in σ by default: the standard deviation of the store's codes along the direction, so
--alphas -3,3,7 is a large edit in z, w and W+ alike; --units raw takes α as the step length itself.
""")
@click.argument("store")
@click.option("--direction", required=True, help="METHOD/NAME, or METHOD/NAME:ROW for a multi-row direction.")
@click.option("--alphas", default="-3,3,7", show_default=True, help="START,STOP,STEPS of the edit strengths, in --units.")
@click.option("--units", type=click.Choice(["sigma", "raw"]), default="sigma", show_default=True,
              help="Unit of α: sigma = std of the store's codes along the direction; raw = step length in the space.")
@click.option("--samples", type=int, default=4, help="Codes to edit (grid rows).")
@click.option("--seed", type=int, default=0, help="Seed of the drawn codes.")
@click.option("--stored", is_flag=True, help="Edit the store's first codes instead of drawing new ones.")
@click.option("--distance", is_flag=True, help="InterFaceGAN's form: move each code to signed distance α from the boundary.")
@click.option("--rescore", is_flag=True, help="Re-score edited images: writes tables/rescore_<method>_<name>[_<row>] and a line plot.")
@click.option("--overwrite", is_flag=True, help="With --rescore: replace an existing re-scoring table of this direction.")
@click.option("--out", default=None, help="PNG of the image grid (rows samples, columns α).")
@click.option("--device", default="cpu", help="cpu, cuda or cuda:<index>.")
@json_option
def edit(store: str, direction: str, alphas: str, units: str, samples: int, seed: int, stored: bool,
         distance: bool, rescore: bool, overwrite: bool, out: str | None, device: str, as_json: bool) -> None:
    """Edit codes along a stored direction (x + α·n) and synthesize the image grid; optionally re-score.

    With --rescore the attributes are listed most changed first, measured in each attribute's std in the
    store (so an image statistic that moves by 2σ ranks above a logit that moves more raw units but less of
    its range).
    """
    from engine.devices import resolve_device
    from engine.methods.editing import alpha_label, edit as run, units_label

    result = run(store, direction, alphas=alphas, units=units, samples=samples, seed=seed, stored=stored,
                 distance=distance, rescore=rescore, out=out, device=str(resolve_device(device)),
                 overwrite=overwrite)
    summary = {k: result[k] for k in ("direction", "row", "space", "units", "sigma", "png", "plot", "table", "note")
               if k in result}
    summary["alphas"] = [float(a) for a in result["alphas"]]
    summary["alphas_raw"] = [float(a) for a in result["alphas_raw"]]
    if rescore:
        order = result["order"]
        summary["rescore"] = {result["attributes"][j]: [float(v) for v in result["rescore"][:, j]] for j in order}
        summary["attribute_std"] = {result["attributes"][j]: float(result["attribute_std"][j]) for j in order}
    if as_json:
        echo_json(summary)
        return
    if "note" in summary:
        click.echo(f"note: {summary['note']}", err=True)
    for key in ("png", "plot", "table"):
        if key in summary:
            click.echo(f"wrote {summary[key] if key != 'table' else 'tables/' + summary[key]}")
    click.echo(f"{units_label(result['units'], result['sigma'], result['space'])}: "
               f"{', '.join(alpha_label(a, result['units']) for a in result['alphas'])}")
    if rescore:
        rows = []
        for attribute, changes in summary["rescore"].items():
            std = summary["attribute_std"][attribute]
            relative = max(abs(v) for v in changes) / std if std > 0 else float("nan")
            rows.append([attribute, std, *changes, relative])
        echo_table(rows, ["attribute", "std", *[f"α={alpha_label(a, result['units'])}" for a in result["alphas"]],
                          "max|Δ|/std"])


@click.command(epilog="""\b
Examples:
  latent-engine sefa --generator planted --store run.zarr
  latent-engine sefa --checkpoint stylegan2-ffhq.pt --family stylegan2 --layers 0-3 -k 10 --store ffhq.zarr
  latent-engine sefa --checkpoint g.pt --family stylegan2 --layers all --layers 0-1 --layers 2-5 --layers 6-16
  latent-engine sefa --checkpoint pggan.pth --family pggan --store pggan.zarr
  latent-engine sefa --checkpoint stylegan2-ffhq.pth --family stylegan2 --like sefa --layers 0-1
  latent-engine sefa --checkpoint 550000.pt --family stylegan2 --like rosinality

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
@click.option("--generator", "-g", default=None, help="Generator SPEC exposing latent_weights() (e.g. planted).")
@click.option("--checkpoint", default=None, help="Checkpoint file (.pt/.pth state dict); needs --family. Inside g_ema, generator_smooth (before generator), state_dict, ... is read; the result records which.")
@click.option("--family", type=click.Choice(["stylegan2", "stylegan", "pggan", "biggan"]), default=None, help="Weight layout of --checkpoint.")
@click.option("--layers", "layers", multiple=True, default=["all"], help="all | 0-3 | 0,2,5 (repeatable: all selections in one batched eigh), numbered as --like says.")
@click.option("--like", type=click.Choice(["engine", "sefa", "rosinality"]), default="engine", show_default=True, help="Layer set and normalisation of the engine or of a reference tool (see below).")
@click.option("-k", "k", type=int, default=10, help="Directions kept per selection.")
@click.option("--store", default=None, help="Store to write directions/sefa/<name> into (created if missing).")
@click.option("--name", default=None, help="Name of the result (one --layers only; default: the layers it holds).")
@click.option("--overwrite", is_flag=True, help="Replace an existing directions/sefa/<name> in --store.")
@click.option("--include-torgb", is_flag=True, help="StyleGAN2, --like engine: also factorize the ToRGB modulations.")
@click.option("--trust-checkpoint", is_flag=True, help="Allow arbitrary unpickling of --checkpoint (runs code from the file!).")
@json_option
def sefa(generator: str | None, checkpoint: str | None, family: str | None, layers: tuple[str, ...], like: str,
         k: int, store: str | None, name: str | None, overwrite: bool, include_torgb: bool, trust_checkpoint: bool,
         as_json: bool) -> None:
    """SeFa: closed-form directions, the eigenvectors of AᵀA of the layers that take the code in."""
    from engine.methods.sefa import sefa as run

    result = run(generator=generator, checkpoint=checkpoint, family=family, layers=list(layers), k=k, store=store,
                 include_torgb=include_torgb, like=like, trust_checkpoint=trust_checkpoint, name=name,
                 overwrite=overwrite)
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


@click.command(epilog="""\b
Examples:
  latent-engine pca run.zarr
  latent-engine pca run.zarr --array latents/z -k 20
  latent-engine pca big.zarr --array latents/wp --workers 4
  latent-engine pca run.zarr -k 10 --overwrite
""")
@click.argument("store")
@click.option("--array", default=None, help="latents/z, latents/w or latents/wp (default w if stored, else z).")
@click.option("-k", "k", type=int, default=None, help="Components kept (default all).")
@click.option("--overwrite", is_flag=True, help="Replace directions/ganspace/<space> if already stored.")
@workers_option
@scheduler_option
@json_option
def pca(store: str, array: str | None, k: int | None, overwrite: bool, workers: int | None,
        scheduler: str | None, as_json: bool) -> None:
    """GANSpace: streaming PCA of stored codes into directions/ganspace/<space>.

    Prints the first 10 components' variance ratios; --json gives all of them.
    """
    from engine.methods.ganspace import pca as run

    result = run(store, array=array, k=k, workers=workers, scheduler=scheduler, overwrite=overwrite)
    if as_json:
        echo_json({key: result[key] for key in ("space", "array", "n_rows", "explained_variance_ratio")})
        return
    ratio = result["explained_variance_ratio"]
    click.echo(f"wrote directions/ganspace/{result['space']} ({len(ratio)} components of {result['array']}, "
               f"{result['n_rows']} rows)")
    shown = 10
    echo_table([[i, float(r), float(sum(ratio[: i + 1]))] for i, r in enumerate(ratio[:shown])],
               ["component", "variance ratio", "cumulative"])
    if len(ratio) > shown:
        click.echo(f"… {len(ratio) - shown} more rows; --json for all")


@click.command(epilog="""\b
Examples:
  latent-engine correlate run.zarr
  latent-engine correlate run.zarr --heatmaps
  latent-engine correlate big.zarr --workers 4 --json
  latent-engine correlate run.zarr --overwrite     # after new boundaries: recompute the stored tables
""")
@click.argument("store")
@click.option("--heatmaps", is_flag=True, help="Also save each square table as <store>_<table>.png beside the store.")
@click.option("--overwrite", is_flag=True, help="Replace tables already stored under the same names.")
@workers_option
@scheduler_option
@json_option
def correlate(store: str, heatmaps: bool, overwrite: bool, workers: int | None, scheduler: str | None,
              as_json: bool) -> None:
    """Boundary cosines, attribute Pearson correlations and method-vs-method matching tables.

    An attribute with no usable scores (e.g. all NaN) is left out of attribute_pearson with a warning.
    """
    from engine.methods.correlate import correlate as run

    tables = run(store, heatmaps=heatmaps, workers=workers, scheduler=scheduler, overwrite=overwrite)
    if as_json:
        echo_json({name: {"rows": t["rows"], "cols": t["cols"], "values": t["values"].tolist()}
                   for name, t in tables.items()})
        return
    for name, t in tables.items():
        click.echo(f"\ntables/{name}" + (f"  ({t['png']})" if "png" in t else ""))
        echo_table([[r, *[float(v) for v in row]] for r, row in zip(t["rows"], t["values"])], ["", *t["cols"]])


@click.command(epilog="""\b
Examples:
  latent-engine export run.zarr --format interfacegan boundaries/
  latent-engine export run.zarr --format ganspace ganspace/
""")
@click.argument("store")
@click.argument("outdir")
@click.option("--format", "fmt", type=click.Choice(["interfacegan", "ganspace"]), required=True, help="Target tool's file layout.")
def export(store: str, outdir: str, fmt: str) -> None:
    """Write the store's codes, scores and directions in InterFaceGAN's .npy or GANSpace's .npz layout."""
    from engine.interop import export as run

    for path in run(store, outdir, format=fmt):
        click.echo(path)


@click.command("import-interfacegan", epilog="""\b
Examples:
  latent-engine import-interfacegan z.npy smile_scores.npy run.zarr
  latent-engine import-interfacegan w.npy attributes.npy run.zarr --space w --attribute age --attribute smile
""")
@click.argument("codes")
@click.argument("scores")
@click.argument("store")
@click.option("--attribute", "attributes", multiple=True, help="Name of each score column (default from the file name).")
@click.option("--chunk", type=int, default=4096, help="Rows per store chunk.")
@click.option("--space", type=SPACE_CHOICE, default="z", help="What the codes are, as InterFaceGAN names its files: z.npy, w.npy (N, d) or wp.npy (N, L, d); stored as latents/<space>.")
@click.option("--overwrite", is_flag=True, help="Replace an existing store.")
def import_interfacegan(codes: str, scores: str, store: str, attributes: tuple[str, ...], chunk: int, space: str,
                        overwrite: bool) -> None:
    """Build a store from InterFaceGAN's CODES.npy and SCORES.npy (N, 1), read memory-mapped."""
    from engine.interop import import_interfacegan as run

    result = run(codes, scores, store, attributes=list(attributes) or None, chunk=chunk, space=space,
                 overwrite=overwrite)
    shape = tuple(result.latent_array(space).shape[1:])
    click.echo(f"wrote {result.path}: {result.n} {space} codes of shape {shape} in latents/{space}, "
               f"attributes {', '.join(result.attributes)}")


@click.command(epilog="""\b
Examples:
  latent-engine index run.zarr
  latent-engine index run.zarr --array latents/z --metric ip
""")
@click.argument("store")
@click.option("--array", default=None, help="latents/z, latents/w or latents/wp (default w if stored, else z).")
@click.option("--metric", type=click.Choice(["l2", "ip"]), default="l2", help="Exact L2 or inner-product index.")
@json_option
def index(store: str, array: str | None, metric: str, as_json: bool) -> None:
    """Build an exact faiss index over stored codes, saved beside the store as <store>.<space>.faiss.

    A record of the store it indexes is kept beside it (<store>.<space>.faiss.json); `query` refuses the
    index once the store no longer matches it.
    """
    from engine.interop import build_index

    result = build_index(store, array=array, metric=metric)
    if as_json:
        echo_json(result)
    else:
        click.echo(f"wrote {result['path']}: {result['rows']} codes of {result['array']} ({result['dim']} dims, "
                   f"{result['metric']})")


@click.command(epilog="""\b
Examples:
  latent-engine query run.zarr --row 17 -k 5
  latent-engine query run.zarr --codes my_w.npy --array latents/w --json

\b
Distances are squared L2 (smaller is nearer) for an index built with --metric l2, inner products (larger
is nearer) for --metric ip. An index the store no longer matches (re-sampled, overwritten) is refused.
""")
@click.argument("store")
@click.option("--row", "rows", type=int, multiple=True, help="Query with the store's own code at this row (repeatable).")
@click.option("--codes", default=None, help=".npy file of query codes (n, d).")
@click.option("--array", default=None, help="Which index: latents/z, latents/w or latents/wp.")
@click.option("-k", "k", type=int, default=10, help="Neighbours per query.")
@json_option
def query(store: str, rows: tuple[int, ...], codes: str | None, array: str | None, k: int, as_json: bool) -> None:
    """Nearest stored codes of each query (faiss index built by `latent-engine index`)."""
    import numpy as np

    from engine.interop import _open_npy, index_record, query as run
    from engine.spaces import resolve_array
    from engine.store import Store

    if bool(rows) == (codes is not None):
        raise ValueError("query needs exactly one of --row I (repeatable) or --codes FILE.npy")
    reader = Store.open(store)
    path, space = resolve_array(reader, array)
    record = index_record(reader, space)
    if codes is not None:
        queries = np.asarray(_open_npy(codes, "codes"))
    else:
        bad = [r for r in rows if not 0 <= r < reader.n]
        if bad:
            raise ValueError(f"--row {bad[0]} is outside the store's {reader.n} rows")
        queries = np.stack([reader.array(path)[r] for r in rows])
    distances, found = run(reader, queries, space=space, k=k)
    measure, symbol, nearer = (("squared L2 distance", "d²", "smaller") if record["metric"] == "l2"
                               else ("inner product", "ip", "larger"))
    labels = [f"row {r}" for r in rows] if rows else [f"code {q}" for q in range(len(queries))]
    if as_json:
        echo_json({"array": path, "metric": record["metric"], "distance": measure, "queries": labels,
                   "rows": found, "distances": distances})
        return
    click.echo(f"nearest stored rows of {path} by {measure} {symbol} ({nearer} is nearer)")
    for label, d, f in zip(labels, distances, found):
        click.echo(f"{label}: " + ", ".join(f"{int(i)} ({symbol}={float(x):.4g})" for i, x in zip(f, d)))


COMMANDS = [boundaries, condition, edit, sefa, pca, correlate, export, import_interfacegan, index, query]
