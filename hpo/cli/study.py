"""Study commands: ``studies``, ``worker``, ``launch``, ``run`` and ``demo`` (``hpo``).

``worker``, ``launch`` and ``run`` take the study file and change it with their options, once:
each training setting (``--epochs 5``, ``--subset 2000``, ``--device cpu``: one per TrainConfig
field, fixing it in ``[space]`` or ``[train]``), ``--storage``, ``--artifacts``,
``--n-trials``, ``--timeout``, and ``--set KEY=VALUE`` for any other key of the file.
"""

from __future__ import annotations

import os
from pathlib import Path

import typer

from hpo.cli.options import (
    STUDY_HELP,
    ArtifactsOpt,
    NTrialsOpt,
    PrintConfigOpt,
    ReportOutOpt,
    StorageOpt,
    StudySetOpt,
    TimeoutOpt,
    WorkersOpt,
    echo_json,
    parse_sets,
    with_train_options,
)
from hpo.config import SET_BY_STUDY, TRAIN_SECTION, StudyConfig, space_fields

#: The training settings a study's commands take as options: the space, [train] and the
#: study's reference_sigma (not checkpoint_dir: the worker sets it).
STUDY_SETTINGS = (*space_fields(), *TRAIN_SECTION,
                  *(n for n in SET_BY_STUDY if n in StudyConfig.model_fields))


def study_config(study: str, settings: dict, sets: list[str], **keys) -> StudyConfig:
    """The study file with the command's options applied (validated once)."""
    from hpo.config import load_study_config

    changes = {_key(name): value for name, value in settings.items()}
    changes |= {k: v for k, v in keys.items() if v is not None}  # bare study keys
    changes |= parse_sets(sets)
    return load_study_config(study).override(changes)


def _key(name: str) -> str:
    if name in TRAIN_SECTION:
        return f"train.{name}"
    return f"space.{name}" if name in space_fields() else name


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


@with_train_options(STUDY_SETTINGS, study=True)
def worker(
    settings: dict,
    study: str = typer.Argument(..., help=STUDY_HELP),
    storage: str | None = StorageOpt,
    n_trials: int | None = NTrialsOpt,
    timeout: float | None = TimeoutOpt,
    artifacts: str | None = ArtifactsOpt,
    worker_index: int | None = typer.Option(
        None, "--worker-index", help="distinguishes workers' sampler seeds (default: from the "
        "host name and process id)"),
    sets: list[str] = StudySetOpt,
    print_config: bool = PrintConfigOpt,
) -> None:
    """Run trials of STUDY until its budget (trials or time) is spent.

    Start as many as you like, on one machine or many, against the same storage. A worker killed mid-trial is detected by the others (heartbeats) and its trial retried; SIGINT/SIGTERM make a worker finish its current epoch, re-queue its trial and exit.
    """  # noqa: E501 - typer keeps line breaks: one line per paragraph
    cfg = study_config(study, settings, sets, storage=storage, artifacts=artifacts,
                       n_trials=n_trials, timeout=timeout)
    if print_config:
        echo_json(cfg.to_dict())
        return
    from hpo.worker import run_worker

    s = run_worker(cfg, storage=storage, worker_index=worker_index,
                   num_threads=cfg.train.num_threads)
    who = worker_index if worker_index is not None else os.getpid()
    typer.echo(f"[{cfg.name} worker {who}] done: {s.completed} complete, {s.pruned} "
               f"pruned, {s.failed} failed in {s.seconds:.0f} s"
               + (" (interrupted)" if s.interrupted else ""), err=True)
    if s.interrupted:
        raise typer.Exit(130)


def _launch(cfg: StudyConfig, workers: int) -> None:
    """Start the workers, wait, print the study's summary line; a failed worker's exit code
    ends the command."""
    from hpo.launch import launch as launch_workers

    code = launch_workers(cfg, workers)
    typer.echo(_summary(cfg))
    if code:
        raise typer.Exit(code)


def _summary(cfg: StudyConfig) -> str:
    """One line: trial counts and the best value(s)."""
    from optuna.trial import TrialState

    from hpo.study import open_study

    study = open_study(cfg).study
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


@with_train_options(STUDY_SETTINGS, study=True)
def launch(
    settings: dict,
    study: str = typer.Argument(..., help=STUDY_HELP),
    workers: int = WorkersOpt,
    storage: str | None = StorageOpt,
    n_trials: int | None = NTrialsOpt,
    timeout: float | None = TimeoutOpt,
    artifacts: str | None = ArtifactsOpt,
    sets: list[str] = StudySetOpt,
    print_config: bool = PrintConfigOpt,
) -> None:
    """Start N local workers on STUDY: one GPU each when there are GPUs, else the CPU cores divided between them."""  # noqa: E501
    cfg = study_config(study, settings, sets, storage=storage, artifacts=artifacts,
                       n_trials=n_trials, timeout=timeout)
    if print_config:
        echo_json(cfg.to_dict())
        return
    _launch(cfg, workers)


def _run(cfg: StudyConfig, workers: int, out: Path | None) -> None:
    from hpo.cli.report import echo_report
    from hpo.study import open_study

    _launch(cfg, workers)
    echo_report(open_study(cfg), out)


@with_train_options(STUDY_SETTINGS, study=True)
def run(
    settings: dict,
    study: str = typer.Argument(..., help=STUDY_HELP),
    workers: int = WorkersOpt,
    storage: str | None = StorageOpt,
    n_trials: int | None = NTrialsOpt,
    timeout: float | None = TimeoutOpt,
    artifacts: str | None = ArtifactsOpt,
    out: Path | None = ReportOutOpt,
    sets: list[str] = StudySetOpt,
    print_config: bool = PrintConfigOpt,
) -> None:
    """Launch N local workers on STUDY, wait for them, then write the report."""
    cfg = study_config(study, settings, sets, storage=storage, artifacts=artifacts,
                       n_trials=n_trials, timeout=timeout)
    if print_config:
        echo_json(cfg.to_dict())
        return
    _run(cfg, workers, out)


def demo(
    workers: int = WorkersOpt,
    out: Path | None = typer.Option(None, "--out", help="report folder (runs/demo-report)"),
) -> None:
    """The main job: the `demo` study (SQLite, 2,000 molecules, a few minutes on 2 CPU cores) with 2 local workers, then its report."""  # noqa: E501
    from hpo.config import load_study_config

    _run(load_study_config("demo"), workers, out)


def register(app: typer.Typer) -> None:
    app.command("studies")(studies)
    app.command("worker")(worker)
    app.command("launch")(launch)
    app.command("run")(run)
    app.command("demo")(demo)
