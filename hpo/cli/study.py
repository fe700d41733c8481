"""Study commands: ``studies``, ``worker``, ``launch``, ``run``, ``demo`` and ``delete``
(``hpo``, ``hpo.observe.lifecycle``).

``worker``, ``launch`` and ``run`` take the study file and change it with their options, once:
each training setting (``--epochs 5``, ``--subset 2000``, ``--device cpu``: one per TrainConfig
field, fixing it in ``[space]`` or ``[train]``), ``--storage``, ``--artifacts``,
``--n-trials``, ``--timeout``, and ``--set KEY=VALUE`` for any other key of the file.  On a
finished study they say so (``--add-trials N`` extends it, ``--fresh`` starts over).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import typer

from hpo.cli.options import (
    STORED_STUDY_HELP,
    STUDY_HELP,
    AddTrialsOpt,
    ArtifactsOpt,
    FreshOpt,
    NTrialsOpt,
    PackOpt,
    Place,
    PrintConfigOpt,
    ReportOutOpt,
    StorageOpt,
    StudySetOpt,
    TimeoutOpt,
    WorkerIndexOpt,
    WorkersOpt,
    YesOpt,
    echo_json,
    parse_sets,
    with_place_options,
    with_train_options,
)
from hpo.cli.report import echo_report
from hpo.execution import cluster
from hpo.execution.launch import launch as launch_workers
from hpo.execution.run import run_worker
from hpo.observe.lifecycle import (
    add_trials,
    delete_study,
    describe,
    finished_message,
    load_existing,
    stored_studies,
    study_artifact_folder,
)
from hpo.storage.database import study_databases
from hpo.storage.home import default_storage_url, home, mask_url, normalize_url, shown_name
from hpo.study.config import (
    SET_BY_STUDY,
    TRAIN_SECTION,
    ConfigError,
    StudyConfig,
    load_study_config,
    shipped_studies,
    space_fields,
)
from hpo.study.create import open_study, storage_url
from model.errors import SpecoptError, TrialError

#: The training settings a study's commands take as options: the space, [train] and the
#: study's reference_sigma (not checkpoint_dir: the worker sets it).
STUDY_SETTINGS = (*space_fields(), *TRAIN_SECTION,
                  *(n for n in SET_BY_STUDY if n in StudyConfig.model_fields))


def study_config(study: str, settings: dict, sets: list[str], **keys) -> StudyConfig:
    """The study file with the command's options applied (validated once): where a worker's
    ``--device`` and ``--num-threads`` (launch passes each worker its own) become the study's
    ``[train]`` settings, which its trials read."""
    changes = {_key(name): value for name, value in settings.items()}
    changes |= {k: v for k, v in keys.items() if v is not None}  # bare study keys
    changes |= parse_sets(sets)
    return load_study_config(study).override(changes)


def _key(name: str) -> str:
    if name in TRAIN_SECTION:
        return f"train.{name}"
    return f"space.{name}" if name in space_fields() else name


def studies(
    storage: str | None = typer.Option(
        None, "--storage", help="list the studies stored there instead (a storage URL), with "
        "their trial counts, budget and best value"),
) -> None:
    """List the shipped studies, or with --storage the studies stored in a storage."""
    if storage is not None:
        _stored_studies(storage)
        return

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
    _run_here()


def _table(head: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(head[i]), *(len(r[i]) for r in rows)) for i in range(len(head))]
    for r in (head, *rows):
        typer.echo("  ".join(x.ljust(w) for x, w in zip(r, widths, strict=True)).rstrip())


def _stored_studies(storage: str) -> None:
    found = stored_studies(storage)
    shown = mask_url(normalize_url(storage))
    if not found:
        typer.echo(f"no studies in {shown}")
        return
    typer.echo(f"studies in {shown}:")
    _table(("study", "complete", "pruned", "failed", "running", "waiting", "total", "budget",
            "best"),
           [(shown_name(s.name), *(str(s.counts[k]) for k in (
               "complete", "pruned", "failed", "running", "waiting", "total")),
             "-" if s.budget is None else str(s.budget), s.best) for s in found])


def _run_here() -> None:
    """Where the studies run with the default storage are (SQLite files under the home)."""
    root = home()
    files = study_databases(root)  # not an MLflow store or another program's database
    if files:
        typer.echo(f"\nstored under {root} (SPECOPT_HOME): "
                   f"{', '.join(shown_name(f.name) for f in files)}; "
                   f"list one with: specopt studies --storage sqlite:///{files[0]}")


def _confirm(question: str, yes: bool) -> None:
    """Go on with --yes or a 'y' typed at a terminal; refuse without a terminal to ask on."""
    if yes:
        return
    if not sys.stdin.isatty():
        raise SpecoptError(f"{question} Refused: no terminal to ask on; give --yes to confirm")
    if not typer.confirm(question, default=False, err=True):
        typer.echo("nothing deleted", err=True)
        raise typer.Exit(1)


def _delete(name: str, url: str, config: StudyConfig | None, study, artifacts, yes: bool,
            what: str) -> None:
    folder = study_artifact_folder(name, url, config, study, artifacts)
    _confirm(f"{what} {describe(name, url, study, folder)}?", yes)
    d = delete_study(name, url, folder)
    left = (f"; kept other files in {d.artifacts}: {', '.join(map(shown_name, d.kept[:5]))}"
            if d.kept else "")
    where = f" in {d.artifacts}" if d.artifacts is not None else ""
    outputs = f"; removed {d.outputs} (reports, exports, logs)" if d.outputs else ""
    typer.echo(f"deleted study {name!r} ({d.trials} trials) and {d.removed_files} artifact "
               f"file(s){where}{left}{outputs}", err=True)


def _lifecycle(cfg: StudyConfig, storage: str | None, fresh: bool, add: int | None,
               yes: bool) -> str | None:
    """--fresh, then --add-trials; returns the finished-study message (None: work to do)."""
    url = storage_url(cfg, storage)
    if fresh:
        study = load_existing(cfg.name, url)
        if study is not None:
            _delete(cfg.name, url, cfg, study, None, yes, "Start over: delete")
    if add is not None:
        n = add_trials(cfg, add, url)
        typer.echo(f"study {cfg.name!r}: budget extended to {n} trials", err=True)
    return finished_message(cfg, url)


@with_train_options(STUDY_SETTINGS, study=True)
def worker(
    settings: dict,
    study: str = typer.Argument(..., help=STUDY_HELP),
    storage: str | None = StorageOpt,
    n_trials: int | None = NTrialsOpt,
    timeout: float | None = TimeoutOpt,
    artifacts: str | None = ArtifactsOpt,
    worker_index: int | None = WorkerIndexOpt,
    pack: str | None = PackOpt,
    sets: list[str] = StudySetOpt,
    print_config: bool = PrintConfigOpt,
    add_trials: int | None = AddTrialsOpt,
    fresh: bool = FreshOpt,
    yes: bool = YesOpt,
) -> None:
    """Run trials of STUDY until its budget (trials or time) is spent.

    Each training option fixes its setting in the study's [space] section (or [train]); --set changes any key of the file.

    Start as many as you like, on one machine or many, against the same storage. A worker killed mid-trial is detected by the others (heartbeats) and its trial retried; SIGINT/SIGTERM make a worker finish its current epoch, re-queue its trial and exit.

    A finished study is left alone (it says so): --add-trials N extends it, --fresh starts over.
    """  # noqa: E501 - typer keeps line breaks: one line per paragraph
    from hpo.execution.packed import parse_pack  # torch: kept out of specopt's start

    slots = parse_pack(pack)  # a wrong value says so before anything starts
    cfg = study_config(study, settings, sets, storage=storage, artifacts=artifacts,
                       n_trials=n_trials, timeout=timeout)
    if print_config:
        echo_json(cfg.to_dict())
        return
    finished = _lifecycle(cfg, storage, fresh, add_trials, yes)
    if finished:
        typer.echo(finished, err=True)
        return

    s = run_worker(cfg, storage=storage, worker_index=worker_index, pack=slots)
    who = worker_index if worker_index is not None else os.getpid()
    typer.echo(f"[{cfg.name} worker {who}] done: {s.completed} complete, {s.pruned} "
               f"pruned, {s.failed} failed in {s.seconds:.0f} s"
               + (" (interrupted)" if s.interrupted else ""), err=True)
    if s.interrupted:
        raise typer.Exit(130)


def _launch(cfg: StudyConfig, workers: int, place: Place, wait: bool = True) -> None:
    """Start the workers where ``place`` says, wait for them (SLURM: only with ``wait``; else
    say how to follow them and return), print the study's summary line; a failed worker's exit
    code ends the command."""
    if place.on == "local":
        code = launch_workers(cfg, workers, pack=place.slots)
    elif place.on == "ray":
        code = cluster.launch_ray(cfg, workers, cluster.RayOptions(
            address=place.address, gpus_per_worker=place.gpus_per_worker,
            cpus_per_worker=place.cpus_per_worker, pack=place.slots))
    else:  # slurm
        cpus = place.cpus_per_worker
        jobs = cluster.submit_slurm(cfg, workers, cluster.SlurmOptions(
            partition=place.partition, gpus_per_worker=int(place.gpus_per_worker),
            cpus_per_worker=int(cpus) if cpus else None, time=place.time_limit, mem=place.mem,
            sbatch=cluster.parse_sbatch(list(place.sbatch)), pack=place.slots))
        typer.echo(f"submitted {len(jobs)} worker(s) of {cfg.name}: SLURM jobs "
                   + " ".join(j.job_id for j in jobs))
        if not wait:
            folder = jobs[0].paths.folder
            typer.echo(f"follow: specopt status {cfg.name}; logs: {folder}; cancel: scancel "
                       f"{jobs[0].job_id.split('_')[0]} (each worker re-queues its trial)")
            return
        code = cluster.wait_slurm(jobs)
    typer.echo(_summary(cfg))
    if code:
        raise typer.Exit(code)


def _summary(cfg: StudyConfig) -> str:
    """One line: trial counts and the best value(s)."""
    from optuna.trial import TrialState

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
@with_place_options
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
    add_trials: int | None = AddTrialsOpt,
    fresh: bool = FreshOpt,
    yes: bool = YesOpt,
    wait: bool = typer.Option(False, "--wait", help="slurm: wait until every worker job has "
                              "ended, then print the study's summary (default: return once "
                              "submitted)"),
    *,
    place: Place,
) -> None:
    """Start N workers on STUDY: local processes (one GPU each when there are GPUs, else the CPU cores divided between them), a SLURM job array (--on slurm) or Ray tasks (--on ray). A finished study is left alone (it says so): --add-trials N extends it, --fresh starts over.

    Every worker coordinates through the study's storage only; on SLURM the time-limit signal and scancel make a worker finish its epoch and re-queue its trial (see docs/distributed.md).
    """  # noqa: E501
    cfg = study_config(study, settings, sets, storage=storage, artifacts=artifacts,
                       n_trials=n_trials, timeout=timeout)
    if print_config:
        echo_json(cfg.to_dict())
        return
    finished = _lifecycle(cfg, storage, fresh, add_trials, yes)
    if finished:
        typer.echo(finished, err=True)
        typer.echo(_summary(cfg))
        return
    _launch(cfg, workers, place, wait)


def _run(cfg: StudyConfig, workers: int, out: Path | None, finished: str | None = None,
         place: Place | None = None) -> None:
    """Launch the workers where ``place`` says (default: local processes) and wait for them
    (not on a finished study: say so), then write the report."""
    if finished:
        typer.echo(finished, err=True)
        typer.echo(_summary(cfg))
    else:
        _launch(cfg, workers, place or Place())
    opened = open_study(cfg)
    echo_report(opened, out)
    _fail_if_nothing_completed(opened.study)


def _fail_if_nothing_completed(study) -> None:
    """A study whose every finished trial failed did not run: say so, and exit 1 (scripts and
    schedulers see it), after the report that lists the failures."""
    from optuna.trial import TrialState

    states = [t.state for t in study.get_trials(deepcopy=False)]
    if TrialState.COMPLETE not in states and TrialState.FAIL in states:
        raise TrialError(f"no trial of {study.study_name} completed: "
                         f"{states.count(TrialState.FAIL)} failed (the report's failures say "
                         "why)")


@with_train_options(STUDY_SETTINGS, study=True)
@with_place_options
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
    add_trials: int | None = AddTrialsOpt,
    fresh: bool = FreshOpt,
    yes: bool = YesOpt,
    *,
    place: Place,
) -> None:
    """Launch N workers on STUDY (local processes, or --on slurm|ray as `launch` does), wait for them, then write the report. A finished study is not run again (it says so, and writes the report): --add-trials N extends it, --fresh starts over."""  # noqa: E501
    cfg = study_config(study, settings, sets, storage=storage, artifacts=artifacts,
                       n_trials=n_trials, timeout=timeout)
    if print_config:
        echo_json(cfg.to_dict())
        return
    _run(cfg, workers, out, _lifecycle(cfg, storage, fresh, add_trials, yes), place)


def demo(
    workers: int = WorkersOpt,
    out: Path | None = ReportOutOpt,
    add_trials: int | None = AddTrialsOpt,
    fresh: bool = FreshOpt,
    yes: bool = YesOpt,
) -> None:
    """The main job: the `demo` study (SQLite, 2,000 molecules, a few minutes on 2 CPU cores) with 2 local workers, then its report."""  # noqa: E501
    cfg = load_study_config("demo")
    _run(cfg, workers, out, _lifecycle(cfg, None, fresh, add_trials, yes))


def delete(
    study: str = typer.Argument(..., help=STORED_STUDY_HELP),
    storage: str | None = typer.Option(None, "--storage", help="storage URL (default: the "
                                       "study file's, else sqlite:///$SPECOPT_HOME/STUDY.db)"),
    artifacts: Path | None = typer.Option(None, "--artifacts", help="its artifact folder "
                                          "(default: the one the study recorded)"),
    yes: bool = YesOpt,
) -> None:
    """Delete STUDY from its storage, with its artifacts (checkpoints, training states, predictions). Also removes $SPECOPT_HOME/STUDY/ (its report, export and SLURM logs; kept while another storage's study of that name has artifacts there) and the study's lock file beside a database in the home; the database file itself stays. Asks first; --yes skips the question (needed where there is no terminal)."""  # noqa: E501
    config: StudyConfig | None
    try:
        config = load_study_config(study)
        name, url = config.name, storage_url(config, storage)
    except ConfigError:
        config, name = None, study
        url = normalize_url(storage or default_storage_url(study))
    # one line naming the studies there if none
    opened = open_study(config or study, url, with_store=False)
    _delete(name, url, config, opened.study, artifacts, yes, "Delete")


def register(app: typer.Typer) -> None:
    app.command("studies")(studies)
    app.command("worker")(worker)
    app.command("launch")(launch)
    app.command("run")(run)
    app.command("demo")(demo)
    app.command("delete")(delete)
