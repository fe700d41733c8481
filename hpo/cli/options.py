"""Options shared by the ``specopt`` commands, defined once.

The training settings are not listed here: :func:`with_train_options` makes one option per
``model.config.TrainConfig`` field (name, type, help and default from the field), so a field that
``model`` gains is an option of ``train``, ``worker``, ``launch`` and ``run`` at once.  Where the
workers run (``--on local|slurm|ray`` and its options, ``--pack``) is one group too
(:func:`with_place_options`, a :class:`Place`), shared by ``launch`` and ``run``.
"""

from __future__ import annotations

import functools
import inspect
import json
import math
import tomllib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import typer

from hpo.execution.cluster import DEFAULT_TIME, PLACES
from hpo.study.config import MAX_TRIALS, setting_type
from model.config import TrainConfig
from model.errors import ConfigError, SpecoptError

STUDY_HELP = "a shipped study name (see `specopt studies`) or the path of a study .toml file"
STORED_STUDY_HELP = ("a shipped study name (see `specopt studies`), a study .toml file, or a "
                     "study name in --storage")

#: No word of a help text is wider than 40 characters: rich cuts one wider than its column
#: at 80 columns.
StorageOpt = typer.Option(None, "--storage", metavar="URL", help="storage URL: "
                          "sqlite:///FILE, journal:///FILE or a PostgreSQL URL "
                          "(postgresql+psycopg://USER:PASS@HOST/DB); default: the study file's, "
                          "else sqlite:///$SPECOPT_HOME/STUDY.db ($SPECOPT_HOME: ./runs "
                          "unless set)")
ArtifactsOpt = typer.Option(None, "--artifacts", metavar="FOLDER", help="artifact folder "
                            "(checkpoints, predictions; default: "
                            "$SPECOPT_HOME/STUDY/artifacts/<storage>); must be shared by "
                            "workers on several machines")
StoredArtifactsOpt = typer.Option(None, "--artifacts", metavar="FOLDER", help="artifact folder "
                                  "of the study (default: the one the study recorded)")
#: Worker processes one command starts, and GPUs or CPU cores of one worker: beyond any node.
MAX_WORKERS = 1024
MAX_PER_WORKER = 1024


def number_option(default: Any, *decls: str, kind: type = int, low: float | None = None,
                  high: float | None = None, **kw: Any) -> Any:
    """A numeric option whose bad value ends in the one ``error:`` line naming it (a
    ConfigError from its callback) instead of click's framed usage box: typer hands the text
    on as it is (``parser=str``) and :func:`parse_number` reads and bounds it."""
    def check(value: str | None) -> Any:
        return None if value is None else parse_number(decls[0], value, kind, low, high)

    metavar = kw.pop("metavar", "INTEGER" if kind is int else "NUMBER")
    return typer.Option(default, *decls, parser=str, callback=check, metavar=metavar, **kw)


#: The help panel of the budget options.
BUDGET_PANEL = "Budget"
NTrialsOpt = number_option(None, "--n-trials", help="trial budget across all workers "
                           "(default: the study file's; grid studies: the grid size)",
                           rich_help_panel=BUDGET_PANEL)
TimeoutOpt = number_option(None, "--timeout", kind=float, help="wall-time budget of each "
                           "worker, seconds", rich_help_panel=BUDGET_PANEL)
WorkersOpt = number_option(2, "--workers", "-w", low=1, high=MAX_WORKERS,
                           help="worker processes")
WorkerIndexOpt = number_option(None, "--worker-index", low=0, help="distinguishes workers' "
                               "sampler seeds (default: from the host name and process id)")
ReportOutOpt = typer.Option(None, "--out", metavar="FOLDER", help="report folder (default: "
                            "$SPECOPT_HOME/STUDY/report)")
AddTrialsOpt = number_option(None, "--add-trials", low=1, high=MAX_TRIALS, metavar="N",
                             help="extend the "
                            "study's trial budget by N (stored with the study: every worker "
                            "sees it; give it to one command, not to each worker)",
                             rich_help_panel=BUDGET_PANEL)
FreshOpt = typer.Option(False, "--fresh", help="delete the study and its artifacts first and "
                        "start over (asks; --yes to skip the question)")
YesOpt = typer.Option(False, "--yes", "-y", help="do not ask before deleting (required where "
                      "there is no terminal to ask on)")
SetOpt = typer.Option([], "--set", metavar="KEY=VALUE", help="set any training setting "
                      "(TOML value: --set channels=[16,32]); repeatable")
StudySetOpt = typer.Option([], "--set", metavar="KEY=VALUE", help="set any study key, dotted "
                           "as in the file (--set budget.n_trials=4, --set sigma=[0.1,0.3], "
                           "--set pruner.name=none; TOML values); repeatable")
PrintConfigOpt = typer.Option(False, "--print-config", help="print the resolved settings as "
                              "JSON and exit (nothing runs)")

PackOpt = typer.Option(
    None, "--pack", metavar="K|auto", help="train up to K trials at once in each worker as one "
    "batched model, each with its own weights, optimiser, lr, loss, sigma, data order and "
    "pruning; trials of another Np, batch size or network shape form packs of their own. auto: "
    "the fastest K, timed on the device within its memory (1 where packs are not faster, as on "
    "most CPUs)")

#: Extra spellings of some options (short forms, and the old worker --threads).
ALIASES = {"n_points": ("--np",), "num_threads": ("--threads",)}


# --- values -------------------------------------------------------------------------------------

def _toml_value(text: str) -> Any:
    """``text`` as one TOML value; TOMLDecodeError where it is none (nested too deep too, or
    followed by more TOML: ``0.3\n[budget]``)."""
    try:
        doc = tomllib.loads(f"v = {text}")
    except RecursionError:
        raise tomllib.TOMLDecodeError("nested too deep") from None
    if list(doc) != ["v"]:
        raise tomllib.TOMLDecodeError("more than one value")
    return doc["v"]


def parse_value(text: str) -> Any:
    """A command-line value read as a TOML value (``5``, ``0.3``, ``true``, ``[1, 2]``,
    ``{low = 1e-4, high = 1e-2}``), else as the string itself."""
    try:
        return _toml_value(text)
    except tomllib.TOMLDecodeError:
        return text


def parse_number(flag: str, text: Any, kind: type = int, low: float | None = None,
                 high: float | None = None) -> Any:
    """A command-line number (TOML: ``5``, ``1e3``, ``nan``), an int where ``kind`` is int;
    ConfigError naming ``flag`` when it is none, not finite or outside [low, high]."""
    value = parse_value(text) if isinstance(text, str) else text
    what = "a whole number" if kind is int else "a finite number"
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or (kind is int and not float(value).is_integer()):
        raise ConfigError(f"{flag} {text!r}: expected {what}")
    value = kind(value)
    if low is not None and value < low:
        raise ConfigError(f"{flag} {text}: must be at least {low}")
    if high is not None and value > high:
        raise ConfigError(f"{flag} {text}: must be at most {high}")
    return value


#: How a TOML list, table or string starts: a value starting so that is no TOML is a typo
#: (``[0.1, 0.3``), not the text it would otherwise become.
_TOML_OPENERS = ("[", "{", '"', "'")


def parse_sets(items: Iterable[str]) -> dict[str, Any]:
    """``--set KEY=VALUE`` options as a dict."""
    out: dict[str, Any] = {}
    for item in items:
        shown = item if len(item) <= 80 else item[:77] + "..."
        key, sep, value = item.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or "" in key.split("."):
            raise ConfigError(f"--set {shown!r}: expected KEY=VALUE (KEY a name or a dotted "
                              "path such as budget.n_trials)")
        try:
            out[key] = _toml_value(value)
        except tomllib.TOMLDecodeError as err:
            if value.startswith(_TOML_OPENERS) or "\n" in value:
                raise ConfigError(f"--set {shown!r}: not a TOML value ({err}); quote text as "
                                  "'\"...\"'") from None
            out[key] = value  # plain text: the string itself
    return out


def echo_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=1, default=str))


# --- options from TrainConfig -------------------------------------------------------------------

def _option_type(name: str) -> type:
    """The option's type: the field's, with numbers, tuples and choices as text (read by
    :func:`_to_setting`, checked by TrainConfig: a bad number is one ``error:`` line)."""
    base = setting_type(name)
    if base in (bool, Path):
        return base
    return str


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _to_setting(name: str, value: Any) -> Any:
    """An option's value as a setting: numbers read as TOML (``1e-3``; TrainConfig bounds
    them), tuples from ``22,47,42`` or ``[22, 47, 42]``."""
    base = setting_type(name)
    if base in (int, float) and isinstance(value, str):
        return parse_number(_flag(name), value, base)
    if get_origin(base) in (tuple, list) and isinstance(value, str):
        text = value.strip()
        return parse_value(text if text.startswith("[") else f"[{text}]")
    if isinstance(value, Path):
        return str(value)
    return value


def _help(name: str) -> str:
    text = TrainConfig.model_fields[name].description or ""
    base = setting_type(name)
    if get_origin(base) is Literal and not all(str(c) in text for c in get_args(base)):
        text += f" One of: {', '.join(map(str, get_args(base)))}."
    if get_origin(base) in (tuple, list):
        text += " Comma-separated."
    return text


#: The help panels of the training options, in the order shown, with the fields each holds
#: (the first: every field no other panel names, a new one too); the settings most changed
#: come first (:data:`COMMON`).
TRAINING_PANEL = "Training settings"
PANELS = {TRAINING_PANEL: (),
          "Network": ("channels", "convs_per_block", "kernel_size", "pooling", "batch_norm",
                      "dropout", "output_head"),
          "Device and speed": ("device", "num_threads", "amp", "compile", "eval_batch_size",
                               "checkpoint_dir")}
COMMON = ("epochs", "subset", "sigma", "n_points", "loss", "lr", "batch_size", "seed")
#: Said once in each panel's title where the defaults are a study's (not on every option).
STUDY_DEFAULT = " (default: the study's)"


def panel_of(name: str) -> str:
    """The help panel of the training setting ``name``."""
    return next((p for p, names in PANELS.items() if name in names), TRAINING_PANEL)


def _shown_order(names: Iterable[str]) -> list[str]:
    """``names`` by panel, the common settings first in theirs, else in TrainConfig's order."""
    panels, names = list(PANELS), list(names)
    return sorted(names, key=lambda n: (panels.index(panel_of(n)),
                                        COMMON.index(n) if n in COMMON else len(COMMON),
                                        names.index(n)))


def _parameter(name: str, default_shown: Callable[[str], str | None],
               study: bool) -> inspect.Parameter:
    flag = _flag(name)
    typ = _option_type(name)
    decls = [f"{flag}/--no-{flag[2:]}"] if typ is bool else [flag, *ALIASES.get(name, ())]
    metavar = {int: "INTEGER", float: "NUMBER"}.get(setting_type(name))  # numbers read as text
    option = typer.Option(None, *decls, help=_help(name), show_default=default_shown(name) or False,
                          rich_help_panel=panel_of(name) + (STUDY_DEFAULT if study else ""),
                          metavar=metavar)
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=option,
                             annotation=typ | None)


def _train_default(name: str) -> str | None:
    value = TrainConfig.model_fields[name].get_default(call_default_factory=True)
    if value is None:
        return None
    return ",".join(map(str, value)) if isinstance(value, tuple | list) else str(value)


def with_train_options(fields: Iterable[str], *, study: bool = False):
    """A decorator: the command gets one option per TrainConfig field in ``fields`` and is called
    with ``settings``, the dict of those given (``{name: value}``), as its first argument."""
    fields = tuple(fields)
    shown = (lambda name: None) if study else _train_default  # a study's: in the panel's title

    def decorate(fn: Callable) -> Callable:
        own = list(inspect.signature(fn, eval_str=True).parameters.values())[1:]

        @functools.wraps(fn)
        def command(**kwargs: Any) -> Any:
            settings = {n: _to_setting(n, kwargs.pop(n)) for n in fields
                        if kwargs.get(n) is not None}
            for n in fields:
                kwargs.pop(n, None)
            return fn(settings, **kwargs)

        command.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
            [*own, *(_parameter(n, shown, study) for n in _shown_order(fields))])
        command.__annotations__ = {}
        del command.__wrapped__  # typer reads __signature__, not the wrapped function's
        return command

    return decorate


# --- where the workers run: launch and run ------------------------------------------------------

_PLACE_PANEL = "Where the workers run"


@dataclass(frozen=True)
class Place:
    """Where ``launch`` and ``run`` start their workers: their ``--on`` group of options, as
    given (checked when made: a wrong value says so before anything starts)."""

    on: str = "local"
    partition: str | None = None
    gpus_per_worker: float = 0
    cpus_per_worker: float | None = None
    time_limit: str = DEFAULT_TIME
    mem: str | None = None
    sbatch: tuple[str, ...] = ()
    address: str = "auto"
    pack: str | None = None

    def __post_init__(self) -> None:
        from hpo.execution.packed import parse_pack  # torch: kept out of specopt's start

        if self.on not in PLACES:
            raise SpecoptError(f"--on {self.on!r}: expected one of {', '.join(PLACES)}")
        if self.on == "slurm" and self.gpus_per_worker != int(self.gpus_per_worker):
            raise SpecoptError(f"--gpus-per-worker {self.gpus_per_worker:g}: SLURM gives whole "
                               "GPUs (a share of a GPU: --on ray)")
        parse_pack(self.pack)

    @property
    def slots(self) -> int | str | None:
        """Each worker's ``--pack`` (None: no packing)."""
        from hpo.execution.packed import parse_pack  # torch: kept out of specopt's start

        return parse_pack(self.pack)


#: The options of :class:`Place`, by field: (annotation, typer option).
PLACE_OPTIONS: dict[str, tuple[Any, Any]] = {
    "on": (str, typer.Option(
        "local", "--on", metavar="local|slurm|ray", help="where the workers run: local "
        "processes; a SLURM job array (submitit: pip install 'specopt[slurm]'); Ray tasks (pip "
        "install 'specopt[ray]'). "
        "On a cluster the storage must be one every node reaches (PostgreSQL)")),
    "partition": (str | None, typer.Option(
        None, "--partition", help="slurm: the partition (default: the cluster's default)")),
    "gpus_per_worker": (float, number_option(
        0, "--gpus-per-worker", kind=float, low=0, high=MAX_PER_WORKER, help="slurm: GPUs per "
        "worker job (whole); ray: GPU share per worker (0.25: four workers per GPU)")),
    "cpus_per_worker": (float | None, number_option(
        None, "--cpus-per-worker", kind=float, low=0.01, high=MAX_PER_WORKER, help="slurm/ray: "
        "CPU cores per worker, also its torch threads (default: 1, or 4 with GPUs)")),
    "time_limit": (str, typer.Option(
        DEFAULT_TIME, "--time", help="slurm: time limit of each worker job (MM, HH:MM:SS or "
        "D-HH:MM:SS); near it the worker finishes its epoch, re-queues its trial and the job "
        "is requeued, so the study goes on")),
    "mem": (str | None, typer.Option(None, "--mem", help="slurm: memory per worker job (16G)")),
    "sbatch": (list[str], typer.Option(
        [], "--sbatch", metavar="KEY=VALUE", help="slurm: any other sbatch option, without its "
        "dashes (account=proj, qos=long, constraint=a100, exclude=node1); repeatable")),
    "address": (str, typer.Option(
        "auto", "--address", help="ray: the cluster (auto: the one started on this machine "
        "by `ray start`; HOST:PORT; ray://HOST:10001)")),
    "pack": (str | None, PackOpt),
}
assert set(PLACE_OPTIONS) == {f.name for f in fields(Place)}


def with_place_options(fn: Callable) -> Callable:
    """A decorator: the command gets the options of :data:`PLACE_OPTIONS` (in their own help
    panel) and is called with ``place=``, the :class:`Place` they make."""
    own = [p for p in inspect.signature(fn, eval_str=True).parameters.values()
           if p.name != "place"]

    @functools.wraps(fn)
    def command(*args: Any, **kwargs: Any) -> Any:
        given = {n: kwargs.pop(n) for n in PLACE_OPTIONS}
        given["sbatch"] = tuple(given["sbatch"] or ())
        return fn(*args, place=Place(**given), **kwargs)

    command.__signature__ = inspect.Signature([  # type: ignore[attr-defined]
        *own, *(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation,
                                  default=_in_panel(option, _PLACE_PANEL))
                for name, (annotation, option) in PLACE_OPTIONS.items())])
    command.__annotations__ = {}
    del command.__wrapped__  # typer reads __signature__, not the wrapped function's
    return command


def _in_panel(option: Any, panel: str) -> Any:
    """A copy of a typer option shown in the help panel ``panel``."""
    import copy

    option = copy.copy(option)
    option.rich_help_panel = panel
    return option
