"""The ``specopt`` command: a thin layer over the packages' Python APIs.

One root app; one module per command group (``data``, ``train``, ``study``: studies, worker,
launch, run, demo; ``report``: report, export-best, predict, dashboard); the options they share
in :mod:`hpo.cli.options`.  Commands call the Python API, never each other.

One error handler for all of them (:class:`SpecoptGroup`): a
:class:`model.errors.SpecoptError`, or an invalid ``TrainConfig``, ends the command with one line
``error: ...`` and the error's ``exit_code`` (2 unless it says otherwise); so does an ``OSError``
that no module turned into one (exit 3, as an ``InfrastructureError``, naming the file).
``specopt --debug`` prints the traceback too.  ``python -m hpo.cli ...`` runs the same app
(``launch`` starts its workers so).  Root options: ``-q``/``-v``/``--log-file``
(:mod:`hpo.execution.log`, passed on to launched workers) and ``--version``.
"""

from __future__ import annotations

import re
import traceback
from pathlib import Path

import typer
from pydantic import ValidationError
from typer.core import HAS_RICH, TyperCommand, TyperGroup

from hpo.cli import data, export, report, status, study, train
from hpo.execution.log import setup_logging
from model.config import validation_message
from model.errors import InfrastructureError, SpecoptError, describe_os_error

__all__ = ["SpecoptGroup", "app", "as_written", "error_line"]

_DEBUG = "specopt.debug"


def error_line(err: BaseException) -> str:
    """The one line the command prints for an error it ends with."""
    if isinstance(err, ValidationError):  # a TrainConfig built from options
        return validation_message(err)
    return " ".join(str(err).split("\n"))


#: A ``[`` with the backslashes before it, and the rest of a rich markup tag if one starts there.
_BRACKET = re.compile(r"(\\*)(\[(?:[a-z#/@][^[]*?\])?)")


def as_written(text: str) -> str:
    """``text`` escaped so that rich markup shows it as written.  rich's own ``escape`` misses
    a backslash before a ``[`` that starts no tag (``\\[`` shows as ``[``)."""
    def escaped(m: re.Match) -> str:
        slashes, bracket = m.groups()
        if bracket == "[":  # no tag: rich drops one backslash before it
            return f"{slashes}\\[" if slashes else "["
        return f"{slashes * 2}\\{bracket}"  # a tag: literal backslashes, then an escaped tag

    return _BRACKET.sub(escaped, text)


def _help_as_written(cmd: TyperCommand | TyperGroup) -> None:
    """Escape the help texts of ``cmd`` and its subcommands where typer renders them as rich
    markup, so that they show as written: rich reads ``[train]`` or ``specopt[slurm]`` as a
    style and drops it, and fails on ``[/x]``.  (``rich_markup_mode=None`` would do it too,
    but loses the help panels.)"""
    if getattr(cmd, "rich_markup_mode", None) == "rich" and HAS_RICH:
        for owner, attr in [(cmd, "help"), (cmd, "short_help"), (cmd, "epilog"),
                            *((p, "help") for p in cmd.params)]:
            if getattr(owner, attr, None):
                setattr(owner, attr, as_written(getattr(owner, attr)))
    _flags_untyped(cmd)
    for sub in getattr(cmd, "commands", {}).values():
        _help_as_written(sub)


def _flags_untyped(cmd: TyperCommand | TyperGroup) -> None:
    """Show a flag (``--fresh``, ``--help``) as a flag: typer shows its type (``<bool>``) as if
    it took a value; an empty metavar shows none.  The help option is made on first use, so it
    is made here (with the help names of a plain context: the app sets no others)."""
    from typer._click.core import Context

    for param in [*cmd.params, cmd.get_help_option(Context(cmd))]:
        if param is not None and getattr(param, "is_bool_flag", False) \
                and param.metavar is None:
            param.metavar = ""


class SpecoptGroup(TyperGroup):
    """The root command group, whose ``invoke`` runs every command: the one error handler.
    Its help and every command's is shown as written (no rich markup)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        _help_as_written(self)  # typer builds a fresh tree of commands for each run

    def format_help(self, ctx, formatter):
        _flags_untyped(self)  # typer adds --install-completion after __init__
        return super().format_help(ctx, formatter)

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except (SpecoptError, ValidationError, OSError) as err:
            if ctx.meta.get(_DEBUG):
                traceback.print_exc()
            if isinstance(err, OSError):  # a file no module named yet: still one line
                what, fix = describe_os_error(err)
                err = InfrastructureError(f"{what} ({fix})")
            typer.echo(f"error: {error_line(err)}", err=True)
            code = err.exit_code if isinstance(err, SpecoptError) else 2
            raise typer.Exit(code) from None


app = typer.Typer(
    cls=SpecoptGroup, no_args_is_help=True, pretty_exceptions_enable=False,
    help="specopt: hyperparameter optimisation of CNNs for molecular photoemission spectra "
    "(QM9), built on Optuna.\n\nLog lines (ours and Optuna's) go to stderr in one format; "
    "progress bars show on a terminal only. -q, -v and --log-file apply to the workers that "
    "launch and run start too.")


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"specopt {version('specopt')}")
        raise typer.Exit()


@app.callback()
def _root(ctx: typer.Context,
          debug: bool = typer.Option(False, "--debug", help="on an error, print the traceback "
                                     "as well as its one line"),
          quiet: bool = typer.Option(False, "--quiet", "-q", help="warnings and errors only, "
                                     "no progress bars (workers of launch/run too)"),
          verbose: bool = typer.Option(False, "--verbose", "-v", help="debug lines too: a "
                                       "worker logs every epoch (by default one line every "
                                       "few seconds)"),
          log_file: Path | None = typer.Option(None, "--log-file", metavar="PATH",
                                               help="also append every log line (Optuna's "
                                               "too) to PATH; launched workers share it"),
          version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="print the version and exit")) -> None:
    ctx.meta[_DEBUG] = debug
    if quiet and verbose:
        raise typer.BadParameter("give -q or -v, not both")
    level = "WARNING" if quiet else "DEBUG" if verbose else None
    setup_logging(level, log_file, progress=False if quiet else None)


def _register() -> None:
    app.add_typer(data.app, name="data")
    app.add_typer(data.cache_app, name="cache")  # cache info, cache clear
    train.register(app)  # train
    study.register(app)  # studies, worker, launch, run, demo
    status.register(app)  # status
    report.register(app)  # report, export-best, predict, dashboard
    export.register(app)  # export-mlflow


_register()
