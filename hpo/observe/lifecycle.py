"""A study's life after its first run: list the studies of a storage with their counts, tell a
finished study from one with work left, extend its budget (``--add-trials``), delete it with its
artifacts, its outputs under the home and its lock files (``specopt delete``, ``--fresh``)."""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

import optuna
from optuna.trial import TrialState

from hpo.storage.artifacts import recorded_artifact_dir
from hpo.storage.database import StorageError, open_storage
from hpo.storage.home import (
    contained,
    home,
    inside_home,
    is_dir,
    is_file,
    mask_url,
    name_problem,
    normalize_url,
    storage_file,
    study_artifacts,
    study_dir,
)
from hpo.storage.stale import orphaned_trials, retry_rule
from hpo.study.budget import added_trials, budget_state, next_action, study_budget
from hpo.study.config import ConfigError, StudyConfig
from hpo.study.create import artifact_dir, check_definition, create_study, storage_url
from model.contract import StudyAttr
from model.errors import ReportError

__all__ = ["Deleted", "StoredStudy", "add_trials", "delete_study", "finished_message",
           "load_existing", "stored_studies"]


def _read_storage(url: str):
    """The storage behind ``url`` for reading (no heartbeats), or None when its file does not
    exist (reading must not create one)."""
    f = storage_file(url)
    if f is not None and not f.exists():
        return None
    return open_storage(url, heartbeat_interval=None, grace_period=None)


def load_existing(name: str, url: str) -> optuna.Study | None:
    """The study ``name`` in ``url``, or None when it does not exist there."""
    storage = _read_storage(url)
    if storage is None or name not in optuna.get_all_study_names(storage):
        return None
    return optuna.load_study(study_name=name, storage=storage)


@dataclass
class StoredStudy:
    """One study of a storage with its trial counts."""

    name: str
    counts: dict[str, int]  # complete, pruned, failed, running, waiting, total
    budget: int | None  # n_trials it was created with plus the trials added since
    best: str  # the best value (single objective), the Pareto front's size, or "-"
    description: str = ""


def stored_studies(url: str) -> list[StoredStudy]:
    """Every study in the storage ``url`` with its counts (:class:`ReportError` naming the URL
    when its file does not exist)."""
    url = normalize_url(url)
    storage = _read_storage(url)
    if storage is None:
        raise ReportError(f"storage {mask_url(url)} does not exist")
    out = []
    for summary in sorted(optuna.get_all_study_summaries(storage, include_best_trial=False),
                          key=lambda s: s.study_name):
        study = optuna.load_study(study_name=summary.study_name, storage=storage)
        trials = study.get_trials(deepcopy=False)
        counts = {name: sum(1 for t in trials if t.state == state) for name, state in (
            ("complete", TrialState.COMPLETE), ("pruned", TrialState.PRUNED),
            ("failed", TrialState.FAIL), ("running", TrialState.RUNNING),
            ("waiting", TrialState.WAITING))}
        counts["total"] = len(trials)
        attrs = summary.user_attrs
        n = attrs.get(StudyAttr.N_TRIALS)
        budget = study_budget(study, int(n)) if isinstance(n, int | float) else None
        done = [t for t in trials if t.state == TrialState.COMPLETE]
        if not done:
            best = "-"
        elif len(study.directions) == 1:
            best = f"{study.best_value:.4g}"
        else:
            best = f"{len(study.best_trials)} Pareto-optimal"
        out.append(StoredStudy(summary.study_name, counts, budget, best,
                               str(attrs.get(StudyAttr.DESCRIPTION) or "")))
    return out


def finished_message(config: StudyConfig, storage: str | None = None) -> str | None:
    """What to say when ``config``'s study has nothing left to run (None: it has work left, or
    does not exist yet).  Running or queued trials are work left; a study with a time budget only
    is never finished."""
    url = storage_url(config, storage)
    try:
        study = load_existing(config.name, url)
    except StorageError:
        return None  # a worker's own storage rides out an outage, or says what is wrong
    if study is None:
        return None
    check_definition(study, config, url)  # a changed definition says so first
    n = study_budget(study, config.n_trials)
    if n is None and not config.is_grid:
        return None
    state = budget_state(study, config, n)
    if next_action(state) != "done":
        return None
    # a trial failed as stale whose retry was lost (its worker killed in between): the next
    # worker queues it, so the study is not finished
    if orphaned_trials(study.get_trials(deepcopy=False), retry_rule(config.heartbeat.max_retry)):
        return None
    where = mask_url(url)
    if config.is_grid and (n is None or state.originals >= config.grid_size()):
        return (f"study {config.name!r} in {where} is finished: all {config.grid_size()} grid "
                "points have run; start over with --fresh, or give the grid more values under "
                "a new study name (--set name=...)")
    return (f"study {config.name!r} in {where} is finished: {state.finished} of {n} trials; "
            "extend it with --add-trials N or start over with --fresh")


def add_trials(config: StudyConfig, n: int, storage: str | None = None) -> int:
    """Extend the study's trial budget so that ``n`` more trials run than have finished (or are
    budgeted) now; stored with the study, so every worker, running or not, sees it.  Creates the
    study when it does not exist yet.  Returns the new budget (for ``config``'s n_trials)."""
    if n < 1:
        raise ConfigError(f"--add-trials {n}: give a positive number of trials")
    if config.is_grid:
        raise ConfigError(f"study {config.name!r} is a grid search: every grid point runs once; "
                          "to run more, give the grid more values under a new study name "
                          "(--set name=...)")
    if config.n_trials is None:
        raise ConfigError(f"study {config.name!r} has no trial budget (it runs until its "
                          "timeout): start workers again instead of --add-trials")
    study = create_study(config, storage)
    artifact_dir(config, storage, study)  # a recorded folder outside the home: refused first
    budget = study_budget(study, config.n_trials)
    assert budget is not None
    state = budget_state(study, config, budget)
    new_budget = max(state.finished, budget) + n
    study.set_user_attr(StudyAttr.ADDED_TRIALS,
                        added_trials(study) + new_budget - budget)
    return new_budget


@dataclass
class Deleted:
    """What :func:`delete_study` removed."""

    name: str
    url: str
    trials: int
    artifacts: Path | None  # the folder removed, or the one artifacts were removed from
    removed_files: int = 0
    kept: list[str] = field(default_factory=list)  # other files of a shared artifact folder
    outputs: Path | None = None  # $SPECOPT_HOME/<study>/ removed whole (reports, exports, logs)
    locks: list[Path] = field(default_factory=list)  # the study's lock files removed


def study_artifact_folder(name: str, url: str, config: StudyConfig | None,
                          study: optuna.Study, artifacts: str | Path | None = None
                          ) -> Path | None:
    """The artifact folder a study uses: ``artifacts``, else (through :func:`artifact_dir`) the
    study file's, the recorded one (only inside the home: :func:`recorded_artifact_dir`), or the
    home's default; None for a stored name no folder may have (:func:`name_problem`)."""
    if artifacts is not None:
        return Path(artifacts).resolve()
    if config is not None:
        return artifact_dir(config, url, study)
    recorded = recorded_artifact_dir(study)
    if recorded is not None:
        return recorded
    return None if name_problem(name) else study_artifacts(name, url)


def describe(name: str, url: str, study: optuna.Study, folder: Path | None) -> str:
    """One line for the confirmation prompt."""
    trials = study.get_trials(deepcopy=False)
    running = sum(1 for t in trials if t.state == TrialState.RUNNING)
    note = (f" ({running} RUNNING: stop their workers first, or they fail)" if running else "")
    there = ("none" if folder is None else folder if folder.is_dir()
             else f"{folder} (not on this machine)")
    return (f"study {name!r} in {mask_url(url)}: {len(trials)} trial(s){note}; artifacts "
            f"{there}")


def delete_study(name: str, url: str, folder: Path | None) -> Deleted:
    """Delete the study from its storage and its artifacts.  ``folder``: its artifact folder;
    the home's own folder of this study (``$SPECOPT_HOME/<study>/...``) is removed whole, any
    other folder (one given in a study file may be shared) loses only this study's artifact
    files and training states, and is removed when that leaves it empty.  Every path read from
    the database must lie inside ``folder`` (:func:`contained`): one that does not refuses the
    whole delete (a :class:`ReportError`) before anything is removed."""
    url = normalize_url(url)
    storage = _read_storage(url)
    if storage is None or name not in optuna.get_all_study_names(storage):
        raise ReportError(f"no study {name!r} in {mask_url(url)}")
    study = optuna.load_study(study_name=name, storage=storage)
    trials = study.get_trials(deepcopy=False)
    removed, kept = 0, list[str]()
    if folder is not None and folder.is_dir():
        own = None if name_problem(name) else study_dir(name) / "artifacts"
        if own is not None and folder.resolve().is_relative_to(own.resolve()):
            removed = sum(1 for p in folder.rglob("*") if p.is_file())
            shutil.rmtree(folder)
        else:
            removed, kept = _remove_own_artifacts(folder, _own_artifacts(folder, trials, storage))
    optuna.delete_study(study_name=name, storage=storage)
    return Deleted(name, url, len(trials), folder, removed, kept, _remove_outputs(name),
                   _remove_locks(name, url))


def _remove_outputs(name: str) -> Path | None:
    """Remove ``$SPECOPT_HOME/<study>/`` (report, export, SLURM logs) once no other storage's
    study of that name keeps artifacts in it (its ``artifacts/<storage-key>/``); the folder as
    the home has it, never a folder a symlink leads to outside (:func:`contained`)."""
    if name_problem(name):
        return None
    folder = study_dir(name)
    if not is_dir(folder) or folder.is_symlink():
        return None
    contained(home(), folder.name, "the study folder")
    arts = folder / "artifacts"
    if is_dir(arts) and any(arts.iterdir()):
        return None  # another storage's study of this name still has its artifacts here
    shutil.rmtree(folder)
    return folder


def _remove_locks(name: str, url: str) -> list[Path]:
    """The study's claim-lock files beside its SQLite or journal file (:mod:`hpo.storage.locks`),
    removed when that file lies in the home."""
    f = storage_file(url)
    if f is None or not inside_home(f):
        return []
    suffix = "claim" if url.startswith("journal:///") else "lock"
    lock = f.with_name(f"{f.name}.{name}.{suffix}")
    if not is_file(lock) or lock.is_symlink():
        return []
    lock.unlink()
    return [lock]


def _own_artifacts(folder: Path, trials: list, storage) -> list[Path]:
    """The study's artifact files and training-state folders in ``folder``, every one checked
    to lie inside it before any is removed."""
    from optuna.artifacts import get_all_artifact_meta

    out = []
    for t in trials:
        for meta in get_all_artifact_meta(t, storage=storage):
            p = contained(folder, meta.artifact_id, f"the artifact id of trial #{t.number}")
            if is_file(p):
                out.append(p)
        state = contained(folder, Path("state") / str(t.number),
                          f"the training state of trial #{t.number}")
        if is_dir(state):
            out.append(state)
    return out


def _remove_own_artifacts(folder: Path, own: list[Path]) -> tuple[int, list[str]]:
    removed = 0
    for p in own:
        if p.is_dir() and not p.is_symlink():
            removed += sum(1 for f in p.rglob("*") if f.is_file())
            shutil.rmtree(p)
        else:
            p.unlink()
            removed += 1
    # empty folders left behind; a symlink to a folder is a file here (never followed)
    for d in sorted((p for p in folder.rglob("*") if p.is_dir() and not p.is_symlink()),
                    reverse=True):
        if not any(d.iterdir()):
            d.rmdir()
    kept = sorted(p.name for p in folder.iterdir())
    if not kept:
        folder.rmdir()
    return removed, kept

