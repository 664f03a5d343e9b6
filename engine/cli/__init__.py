"""The ``latent-engine`` command line: thin commands that parse, call the library and print.

Each area of the tool keeps its commands in its own module here; ``COMMAND_MODULES`` lists them. User
mistakes (ValueError and its kin from the library) become a one-line ``Error: ...`` and exit status 1;
set LATENT_ENGINE_DEBUG=1 to see the traceback instead.
"""
from __future__ import annotations

import importlib
import os
import warnings

import click

from engine import __version__
from engine.lock import LockError

COMMAND_MODULES = ["engine.cli.sampling", "engine.cli.methods", "engine.cli.cluster", "engine.cli.showcase"]
USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError, NotADirectoryError, PermissionError, LockError)


class EngineGroup(click.Group):
    """A click group that turns library errors into one-line messages with a non-zero exit."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except USER_ERRORS as exc:
            if os.environ.get("LATENT_ENGINE_DEBUG"):
                raise
            message = str(exc)
            raise click.ClickException(message.splitlines()[0] if message else type(exc).__name__) from None


def _format_warning(message, category, filename, lineno, line=None) -> str:  # noqa: ANN001
    return f"Warning: {message}\n"


@click.group(cls=EngineGroup, context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.version_option(__version__, prog_name="latent-engine")
def cli() -> None:
    """latent-engine: sample, analyse and edit the latent space of generative models.

    \b
    Quick start:
      latent-engine sample run.zarr --generator planted --predictor planted -n 50000
      latent-engine info run.zarr
    """
    warnings.formatwarning = _format_warning


for _module in COMMAND_MODULES:
    for _command in importlib.import_module(_module).COMMANDS:
        cli.add_command(_command)


def main() -> None:
    cli(prog_name="latent-engine")
