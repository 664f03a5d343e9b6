"""Options and printing helpers shared by the commands."""
from __future__ import annotations

import json
from typing import Any

import click

json_option = click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON instead of a table.")


def echo_json(payload: Any) -> None:
    click.echo(json.dumps(payload, indent=2, default=str))


def echo_table(rows: list[list[Any]], headers: list[str]) -> None:
    """A plain aligned text table (no dependency, copy-pastable)."""
    cells = [[str(c) for c in headers]] + [[_fmt(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    for k, row in enumerate(cells):
        click.echo("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
        if k == 0:
            click.echo("  ".join("-" * w for w in widths))


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
