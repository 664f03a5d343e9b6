"""File-format commands: export, import-interfacegan, index, query (twins in ``engine.interop``).

Each command parses, calls its Python twin and prints; the library validates and raises ValueError/StoreError,
which the group turns into a one-line ``Error: ...``. The methods' commands live with their methods
(``engine.methods``) and reach the command line through the method registry.
"""
from __future__ import annotations

import click

from engine.cli.options import echo_json, json_option

SPACE_CHOICE = click.Choice(["z", "w", "wp"])

@click.command(epilog="""\b
Examples:
  latent-engine export run.zarr --format interfacegan boundaries/
  latent-engine export run.zarr --format ganspace ganspace/
  latent-engine export run.zarr --format latentclr latentclr/
""")
@click.argument("store")
@click.argument("outdir")
@click.option("--format", "fmt", type=click.Choice(["interfacegan", "ganspace", "latentclr"]), required=True, help="Target tool's file layout.")
def export(store: str, outdir: str, fmt: str) -> None:
    """Write the store's codes, scores and directions in InterFaceGAN's .npy or GANSpace's .npz layout, or
    LatentCLR's directions and direction models as .npz + .json."""
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

    from engine.interop import index_record, open_npy, query as run
    from engine.spaces import resolve_array
    from engine.store import Store

    if bool(rows) == (codes is not None):
        raise ValueError("query needs exactly one of --row I (repeatable) or --codes FILE.npy")
    reader = Store.open(store)
    path, space = resolve_array(reader, array)
    record = index_record(reader, space)
    if codes is not None:
        queries = np.asarray(open_npy(codes, "codes"))
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


COMMANDS = [export, import_interfacegan, index, query]
