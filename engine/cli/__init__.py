"""The ``latent-engine`` command line: thin commands that parse, call the library and print.

Each area of the tool keeps its commands in its own module here (``COMMAND_MODULES`` lists them); the methods'
commands come from the method registry (``engine.methods``). Both are added on first use of the group, so a
method module can import this package's helpers without an import cycle. User
mistakes (ValueError and its kin from the library) and what the machine refuses (a full disk, a read-only file
system, too little memory) become a one-line ``Error: ...`` and exit status 1. Anything else is a bug in
latent-engine: a one-line message says so and where its traceback was saved, with exit status 70
(EX_SOFTWARE). Set LATENT_ENGINE_DEBUG=1 to see every traceback instead.
"""
from __future__ import annotations

import datetime as _dt
import importlib
import os
import sys
import tempfile
import traceback
import warnings

import click

from engine._version import __version__
from engine.lock import LockError

COMMAND_MODULES = ["engine.cli.sampling", "engine.cli.interop", "engine.cli.sweep", "engine.cli.bench",
                   "engine.cli.demo", "engine.cli.report", "engine.cli.layers", "engine.cli.explore"]
USER_ERRORS = (ValueError, OSError, LockError)
BUG_EXIT_STATUS = 70


#: Commands that commit their store chunk by chunk and continue with --resume (latentclr saves its training
#: state every --save-every steps instead: a plain abort there).
CHUNKED_COMMANDS = frozenset({"sample", "invert"})


class Interrupted(click.ClickException):
    """Ctrl-C in a command that can resume: what is kept and how to go on, exit status 130 (as for SIGINT)."""

    exit_code = 130


class BugReport(click.ClickException):
    """An unplanned exception: reported as a bug in one line, its traceback saved to a file."""

    exit_code = BUG_EXIT_STATUS


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, MemoryError):
        return ("out of memory" + (f" ({exc})" if str(exc) else "") +
                "; lower --batch or --chunk, or run on a machine with more memory")
    message = str(exc)
    if isinstance(exc, OSError) and exc.strerror and not isinstance(exc, (FileNotFoundError, PermissionError)):
        message = f"{exc.strerror}" + (f": {exc.filename}" if exc.filename else "")
    return message.splitlines()[0] if message else type(exc).__name__


def _save_traceback(exc: BaseException) -> str:
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    fd, path = tempfile.mkstemp(prefix=f"latent-engine-bug-{stamp}-", suffix=".txt")
    with os.fdopen(fd, "w") as f:
        f.write(f"latent-engine {__version__}, python {sys.version.split()[0]}\ncommand: {' '.join(sys.argv)}\n\n")
        f.write("".join(traceback.format_exception(exc)))
    return path


class EngineGroup(click.Group):
    """A click group that turns library errors into one-line messages with a non-zero exit.

    Its commands are those of ``COMMAND_MODULES`` and of the registered methods, added when ``commands`` is
    first read (listing, looking up or running a command).
    """

    _loaded = False

    @property
    def commands(self) -> dict[str, click.Command]:
        if not self._loaded:
            self._loaded = True
            for command in _all_commands():
                if command.name in self._commands:
                    raise RuntimeError(f"two modules define the command {command.name!r}")
                self.add_command(command)
        return self._commands

    @commands.setter
    def commands(self, value: dict[str, click.Command]) -> None:
        self._commands = value

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except KeyboardInterrupt:
            command = self._subcommand(ctx)
            if command is None or command.name not in CHUNKED_COMMANDS:
                raise
            raise Interrupted("interrupted: the chunks committed so far are kept; run the same command with --resume "
                              "to finish the rest (`latent-engine info STORE` shows how far it got)") from None
        except (*USER_ERRORS, MemoryError) as exc:
            if os.environ.get("LATENT_ENGINE_DEBUG"):
                raise
            raise click.ClickException(as_flags(_one_line(exc), self._subcommand(ctx))) from None
        except Exception as exc:  # noqa: BLE001 - anything unplanned is a bug, reported as one
            if os.environ.get("LATENT_ENGINE_DEBUG"):
                raise
            path = _save_traceback(exc)
            raise BugReport(f"a bug in latent-engine ({type(exc).__name__}: {_one_line(exc)}); the traceback is in "
                            f"{path}; please report it (LATENT_ENGINE_DEBUG=1 shows it here)") from None


    def _subcommand(self, ctx: click.Context) -> click.Command | None:
        name = ctx.invoked_subcommand
        return self.get_command(ctx, name) if name else None


def as_flags(message: str, command: click.Command | None) -> str:
    """A library message in library terms ('ratio must be ...') in the command's terms ('--ratio must be ...').

    The library names parameters as the Python twin does; where a message starts with one that the command
    takes as an option, the option's flag replaces it.
    """
    if command is None:
        return message
    head, sep, rest = message.partition(" ")
    for param in command.params:
        if isinstance(param, click.Option) and param.name == head.replace("-", "_"):
            flag = max(param.opts, key=len)
            return f"{flag}{sep}{rest}"
    return message


def _all_commands() -> list[click.Command]:
    from engine.methods import commands as method_commands

    return [c for module in COMMAND_MODULES for c in importlib.import_module(module).COMMANDS] + method_commands()


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


def main() -> None:
    cli(prog_name="latent-engine")
