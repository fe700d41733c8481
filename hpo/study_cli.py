"""CLI commands of this package, added to the ``specopt`` app by ``hpo.cli``:
``studies``, ``worker``, ``launch``, ``run`` and ``demo``."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import typer

STUDY_HELP = "a shipped study name (see `specopt studies`) or the path of a study .toml file"

StorageOpt = typer.Option(None, "--storage", help="storage URL: sqlite:///FILE, "
                          "postgresql+psycopg://USER:PASS@HOST:PORT/DB or journal:///FILE "
                          "(default: the study file's, else sqlite:///runs/STUDY.db)")
NTrialsOpt = typer.Option(None, "--n-trials", help="trial budget across all workers "
                          "(default: the study file's; grid studies: the grid size)")
TimeoutOpt = typer.Option(None, "--timeout", help="wall-time budget of each worker, seconds")
EpochsOpt = typer.Option(None, "--epochs", help="epochs per trial (overrides the study file)")
SubsetOpt = typer.Option(None, "--subset", help="train on this many molecules (overrides)")
ArtifactsOpt = typer.Option(None, "--artifacts", help="artifact folder (checkpoints, "
                            "predictions); must be shared by workers on several machines")
DatasetOpt = typer.Option(None, "--dataset", help="levels .npz (default: the bundled one)")


def _fail(err: Exception) -> None:
    typer.echo(f"error: {err}", err=True)
    raise typer.Exit(2)


def _config(study: str, **overrides):
    from hpo.config import ConfigError, load_study_config

    try:
        return load_study_config(study).with_overrides(**overrides)
    except ConfigError as err:
        _fail(err)


def studies() -> None:
    """List the shipped studies."""
    from hpo.config import load_study_config, shipped_studies

    rows = []
    for name in shipped_studies():
        c = load_study_config(name)
        n = c.n_trials if c.n_trials is not None else "-"
        rows.append((name, c.sampler.name, c.pruner.name, str(n), ", ".join(
            f"{d[:3]} {o}" for o, d in zip(c.objectives, c.directions, strict=True)),
            c.description))
    head = ("study", "sampler", "pruner", "trials", "objectives")
    widths = [max(len(head[i]), *(len(r[i]) for r in rows)) for i in range(5)]
    typer.echo("  ".join(h.ljust(w) for h, w in zip(head, widths, strict=False)) + "  description")
    for r in rows:
        typer.echo("  ".join(x.ljust(w) for x, w in zip(r[:5], widths, strict=True)) + "  " + r[5])


def worker(
    study: str = typer.Argument(..., help=STUDY_HELP),
    storage: str | None = StorageOpt,
    n_trials: int | None = NTrialsOpt,
    timeout: float | None = TimeoutOpt,
    epochs: int | None = EpochsOpt,
    subset: int | None = SubsetOpt,
    artifacts: str | None = ArtifactsOpt,
    dataset: str | None = DatasetOpt,
    worker_index: int | None = typer.Option(
        None, "--worker-index", help="distinguishes workers' sampler seeds (default: from the "
        "host name and process id)"),
    threads: int | None = typer.Option(None, "--threads", help="CPU threads for training"),
    device: str | None = typer.Option(None, "--device", help="auto, cpu or cuda"),
) -> None:
    """Run trials of STUDY until its budget (trials or time) is spent.

    Start as many as you like, on one machine or many, against the same storage. A worker killed mid-trial is detected by the others (heartbeats) and its trial retried; SIGINT/SIGTERM make a worker finish its current epoch, re-queue its trial and exit.
    """  # noqa: E501 - typer keeps line breaks: one line per paragraph
    from hpo.storage import StorageError
    from hpo.worker import TrialError, run_worker, setup_logging

    setup_logging()
    cfg = _config(study, epochs=epochs, subset=subset, storage=storage, artifacts=artifacts,
                  dataset=dataset)
    try:
        s = run_worker(cfg, n_trials=n_trials, timeout=timeout, worker_index=worker_index,
                       num_threads=threads, device=device)
    except TrialError as err:
        typer.echo(f"error: several trials in a row failed, the last one: {err}", err=True)
        raise typer.Exit(1) from None
    except (StorageError, ValueError) as err:
        _fail(err)
    who = worker_index if worker_index is not None else os.getpid()
    typer.echo(f"[{cfg.name} worker {who}] done: {s.completed} complete, {s.pruned} "
               f"pruned, {s.failed} failed in {s.seconds:.0f} s"
               + (" (interrupted)" if s.interrupted else ""), err=True)
    if s.interrupted:
        raise typer.Exit(130)


def launch(
    study: str = typer.Argument(..., help=STUDY_HELP),
    workers: int = typer.Option(2, "--workers", "-w", help="worker processes"),
    storage: str | None = StorageOpt,
    n_trials: int | None = NTrialsOpt,
    timeout: float | None = TimeoutOpt,
    epochs: int | None = EpochsOpt,
    subset: int | None = SubsetOpt,
    artifacts: str | None = ArtifactsOpt,
    dataset: str | None = DatasetOpt,
) -> None:
    """Start N local workers on STUDY: one GPU each when there are GPUs, else the CPU cores divided between them."""  # noqa: E501
    code = _launch(study, workers, storage, n_trials, timeout, epochs, subset, artifacts, dataset)
    if code:
        raise typer.Exit(code)


def _summary(cfg, storage: str | None) -> str:
    """One line: trial counts and the best value(s)."""
    from optuna.trial import TrialState

    from hpo.study import load_study

    study = load_study(cfg, storage)
    trials = study.get_trials(deepcopy=False)
    counts = {s: sum(1 for t in trials if t.state == s) for s in TrialState}
    line = (f"study {cfg.name}: {counts[TrialState.COMPLETE]} complete, "
            f"{counts[TrialState.PRUNED]} pruned, {counts[TrialState.FAIL]} failed")
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    if done and not cfg.is_multi_objective:
        best = study.best_trial
        line += (f"; best {cfg.objectives[0]} {best.value:.4f} (trial {best.number}: "
                 + ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                             for k, v in best.params.items()) + ")")
    elif done:
        line += f"; {len(study.best_trials)} Pareto-optimal trial(s)"
    return line


def _launch(study, workers, storage, n_trials, timeout, epochs, subset, artifacts, dataset):
    from hpo.launch import launch as launch_workers
    from hpo.storage import StorageError
    from hpo.worker import setup_logging

    setup_logging()
    cfg = _config(study, epochs=epochs, subset=subset, storage=storage, artifacts=artifacts,
                  dataset=dataset)
    try:
        code = launch_workers(cfg, workers, n_trials=n_trials, timeout=timeout, epochs=epochs,
                              subset=subset, artifacts=artifacts, dataset=dataset,
                              storage=storage)
        typer.echo(_summary(cfg, storage))
        return code
    except (StorageError, ValueError) as err:
        _fail(err)


def _report(study: str, storage: str | None, out: Path | None) -> None:
    """The study's report, through the ``specopt report`` command so that its output is the
    same."""
    from hpo.report_cli import report

    cfg = _config(study, storage=storage)
    report(study=str(cfg.source or cfg.name), storage=storage, artifacts=None, out=out)


def run(
    study: str = typer.Argument(..., help=STUDY_HELP),
    workers: int = typer.Option(2, "--workers", "-w", help="worker processes"),
    storage: str | None = StorageOpt,
    n_trials: int | None = NTrialsOpt,
    timeout: float | None = TimeoutOpt,
    epochs: int | None = EpochsOpt,
    subset: int | None = SubsetOpt,
    out: Path | None = typer.Option(None, "--out", help="report folder (runs/STUDY-report)"),
) -> None:
    """Launch N local workers on STUDY, wait for them, then write the report."""
    code = _launch(study, workers, storage, n_trials, timeout, epochs, subset, None, None)
    if code:
        raise typer.Exit(code)
    _report(study, storage, out)


def demo(
    workers: int = typer.Option(2, "--workers", "-w", help="worker processes"),
    out: Path | None = typer.Option(None, "--out", help="report folder (runs/demo-report)"),
) -> None:
    """The main job: the `demo` study (SQLite, 2,000 molecules, a few minutes on 2 CPU cores) with 2 local workers, then its report."""  # noqa: E501
    code = _launch("demo", workers, None, None, None, None, None, None, None)
    if code:
        raise typer.Exit(code)
    _report("demo", None, out)


def register(app: typer.Typer) -> None:
    app.command("studies")(studies)
    app.command("worker")(worker)
    app.command("launch")(launch)
    app.command("run")(run)
    app.command("demo")(demo)


if __name__ == "__main__":  # `python -m hpo.study_cli worker ...`: what `launch` starts
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    _app = typer.Typer(add_completion=False)
    register(_app)
    _app(prog_name="specopt", args=sys.argv[1:])
    logging.shutdown()
