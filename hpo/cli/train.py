"""``specopt train``: one training run (``model.train``), its options made from TrainConfig.

A bare ``specopt train`` is a quick first look (:data:`QUICK`: a subset and a few epochs, about a
minute on a CPU); ``--full`` trains as ``TrainConfig`` says (every molecule, 50 epochs). The
quick values are this command's own: ``TrainConfig``'s defaults are also the study files' and
the search space's, and stay the report's. Every run keeps its best model (the checkpoint
``specopt predict`` reads) in ``--out``, by default a new folder under
``$SPECOPT_HOME/train/``, and prints where."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import typer

import model
from data_prep.dataset import TEST, TRAIN, check_output, load_levels
from hpo.cli.options import (
    TRAINING_PANEL,
    PrintConfigOpt,
    SetOpt,
    echo_json,
    number_option,
    parse_sets,
    with_train_options,
)
from hpo.escape import json_text
from hpo.storage.home import home
from model.config import TrainConfig
from model.contract import ArtifactName, Split, metric_scale, split_label

#: The settings a bare ``specopt train`` changes from TrainConfig's: a minute's run on a CPU.
QUICK = {"subset": 5000, "epochs": 10}
#: Training samples per second per CPU core in float32 (README "Speed": 1,400/s on 2 cores,
#: 3,300/s with bf16): only for the estimate printed before the first epoch is measured.
CPU_SAMPLES_PER_CORE = 700
#: Runs estimated to take longer than this (seconds) are announced as long.
LONG_RUN_S = 600

_QUICK_NOTE = "(a quick first look; --full: every molecule)"


def _metrics_table(metrics: dict[str, float], baseline: dict[str, float] | None = None) -> str:
    """One metric a line; with ``baseline`` (the mean training spectrum's scores) beside each
    score that it has."""
    width = max(len(k) for k in metrics)

    def shown(k: str, v: float) -> str:
        scale = metric_scale(k)  # 100 for those shown in %
        return f"{scale * v:8.2f} %" if scale != 1.0 else f"{v:10.4g}"

    rows = []
    for k, v in metrics.items():
        beside = f"   baseline {shown(k, baseline[k]).strip()}" if baseline and k in baseline \
            else ""
        rows.append(f"  {k:<{width}}  {shown(k, v)}{beside}")
    return "\n".join(rows)


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def plan(config: TrainConfig, quick: bool) -> list[str]:
    """What the run is about to do, as lines: the data, the settings that matter, where it runs
    and a rough estimate of its time (CPU only: measured after the first epoch anyway)."""
    from model.device import available_cpus, resolve_device, use_amp  # torch: kept out of start

    ds = load_levels(config.dataset).subset(config.subset)
    config.check_memory(len(ds))  # before anything is prepared
    n_train, n_test = len(ds.rows(TRAIN)), len(ds.rows(TEST))
    device = resolve_device(config.device)
    what = (f"{'quick run' if quick else 'run'}: {len(ds):,} molecules "
            f"({n_train:,} train, {n_test:,} test for model selection, "
            f"{len(ds) - n_train - n_test:,} validation), {config.epochs} epochs"
            + (f" {_QUICK_NOTE}" if quick else ""))
    settings = (f"settings: loss {config.loss}, sigma {config.sigma:g} eV, Np {config.n_points}, "
                f"lr {config.lr:g}, batch {config.batch_size}, channels "
                f"{','.join(map(str, config.channels))}, seed {config.seed} "
                "(all: --print-config)")
    lines = [what, settings]
    if device.type == "cpu":
        threads = config.num_threads or available_cpus()
        rate = CPU_SAMPLES_PER_CORE * threads * (2.3 if use_amp(config, device) else 1.0)
        seconds = config.epochs * (n_train + n_test) / rate
        lines.append(f"device: cpu, {threads} thread{'s' if threads > 1 else ''}; estimate: "
                     f"about {_duration(seconds)} (rough; measured after the first epoch)")
        if seconds > LONG_RUN_S:
            lines.append("this is a long run on a CPU; fewer molecules (--subset) or epochs "
                         "(--epochs) make it shorter, Ctrl-C stops it")
    else:
        lines.append(f"device: {device}; the time per epoch is measured after the first one")
    return lines


def default_out_dir() -> Path:
    """A new folder for one run's model: ``$SPECOPT_HOME/train/<start time>`` (``-2``, ``-3``
    after it when two runs start within a second)."""
    base = home() / "train"
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out, n = base / stamp, 1
    while out.exists():
        n += 1
        out = base / f"{stamp}-{n}"
    return out


# checkpoint_dir is this command's --out (with a default), not a generated option
_train_fields = [f for f in TrainConfig.model_fields if f not in QUICK and f != "checkpoint_dir"]


def _quick_option(name: str, metavar: str) -> Any:
    field = TrainConfig.model_fields[name]
    return number_option(None, f"--{name}", metavar=metavar, show_default=f"{QUICK[name]}; "
                         f"--full: {field.get_default() or 'all'}",
                         help=f"{field.description}", rich_help_panel=TRAINING_PANEL)


@with_train_options(_train_fields)
def train(
    settings: dict,
    subset: int | None = _quick_option("subset", "INTEGER"),
    epochs: int | None = _quick_option("epochs", "INTEGER"),
    full: bool = typer.Option(False, "--full", help="train as TrainConfig says (every molecule, "
                              f"{TrainConfig.model_fields['epochs'].default} epochs) instead of "
                              "the quick first look"),
    out: Path | None = typer.Option(
        None, "--out", metavar="FOLDER",
        show_default="a new folder $SPECOPT_HOME/train/<start time>",
        help=f"where the best model is kept, as FOLDER/{ArtifactName.CHECKPOINT} (the file "
        "`specopt predict` reads; its path is printed at the end)"),
    checkpoint_dir: Path | None = typer.Option(None, "--checkpoint-dir", hidden=True,
                                               help="--out's old name"),
    json_out: Path | None = typer.Option(None, "--json", metavar="FILE", help="Also write the "
                                         "validation metrics, history and settings to this "
                                         "JSON file."),
    sets: list[str] = SetOpt,
    print_config: bool = PrintConfigOpt,
) -> None:
    """Train the report's CNN once and print its metrics on the held-out validation split.

    Model selection and early stopping use the test split; the metrics come from the validation split (held out). Defaults are the report's settings (TrainConfig's), except that a bare `specopt train` is a quick first look: 5000 molecules and 10 epochs, about a minute on a CPU. --full trains on every molecule for 50 epochs (over an hour on a 2-core CPU). It prints what it is about to do and an estimate of the time first.

    The best model (the best epoch on the test split) is saved as it trains, to $SPECOPT_HOME/train/<start time>/checkpoint.pt unless --out, and its path printed at the end: `specopt predict PATH molecule.xyz` predicts with it.
    """  # noqa: E501 - typer keeps line breaks: one line per paragraph
    given = {k: v for k, v in (("subset", subset), ("epochs", epochs)) if v is not None}
    extra = {**settings, **given, **parse_sets(sets)}
    out = out if out is not None else checkpoint_dir
    if out is not None:  # --out, else --set checkpoint_dir=..., else a new folder (below)
        extra["checkpoint_dir"] = out
    defaults = {} if full else {k: v for k, v in QUICK.items() if k not in extra}
    if "subset" in defaults:  # a quick look at a dataset smaller than the quick subset: all
        if len(load_levels(extra.get("dataset"))) <= QUICK["subset"]:
            del defaults["subset"]
    config = TrainConfig.model_validate({**defaults, **extra})
    if print_config:
        echo_json(config.model_dump(mode="json"))
        return
    folder = config.checkpoint_dir or default_out_dir()  # made here, not printed by --print-config
    config = config.model_copy(update={"checkpoint_dir": folder})
    saved = Path(folder) / ArtifactName.CHECKPOINT
    for path in (json_out, saved):  # said before the run, not after it
        if path is not None:
            check_output(path)
    quiet = logging.getLogger("specopt").getEffectiveLevel() > logging.INFO  # specopt -q
    for line in [*plan(config, quick=bool(defaults)), f"model: kept in {saved}"]:
        if not quiet or "long run" in line:
            typer.echo(line)

    from tqdm import tqdm

    def on_epoch(report) -> None:
        if report.epoch == 1 and config.epochs > 1 and not quiet:  # measured, beside the bar
            left = report.seconds * (config.epochs - 1)
            tqdm.write(f"epoch 1 took {report.seconds:.1f} s: about {_duration(left)} to go")

    # model.train's own bars (data preparation, epochs): on a terminal, off with specopt -q
    result = model.train(config, on_epoch=on_epoch)
    typer.echo(f"{result.status} after {len(result.history)} epochs on {result.device} "
               f"({result.seconds_per_epoch:.2f} s/epoch); best test loss "
               f"{result.best_test_loss:.4g} in epoch {result.best_epoch}")
    typer.echo(f"{split_label(Split.VALIDATION)}, {len(result.val_index)} molecules:")
    typer.echo(_metrics_table(result.metrics, result.baseline.get(Split.VALIDATION)))
    if result.checkpoint_path and result.checkpoint_path.is_file():
        typer.echo(f"model saved: {result.checkpoint_path} (predict with it: specopt predict "
                   f"{result.checkpoint_path} molecule.xyz)")
    if json_out:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json_text({
            "status": result.status, "best_epoch": result.best_epoch,
            "metrics": result.metrics, "baseline": result.baseline,
            "history": result.history, "config": result.config,
            "device": result.device, "seconds_per_epoch": result.seconds_per_epoch,
        }, indent=1))


def register(app: typer.Typer) -> None:
    app.command("train")(train)
