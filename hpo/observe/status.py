"""Where a study stands (``specopt status``): trials done against the budget, counts per state,
the running trials (worker, epoch/total, last objective value), the best so far, and an ETA.

Read-only, from any storage: :func:`status` opens a stored study
(:func:`hpo.study.create.open_study`),
:func:`study_status` reads an open one.  The ETA is measured, not guessed: seconds per epoch
are the median of what trials recorded (``seconds_per_epoch`` of finished trials, the
``progress`` attribute of running ones, else their time since start per epoch reported), the
epochs a new trial runs are the mean of the finished trials' (pruned trials run fewer; before
any finished, the running trials' totals), and the work left (the running trials' remaining
epochs plus the trials not started yet) is shared by the workers running now: the RUNNING
trials (a packed worker runs several at once), or more when a worker whose trial ended in the
last :data:`BETWEEN_TRIALS` seconds has no RUNNING trial yet (it is claiming or starting its
next one), never more than the trials left to run.  Data preparation
and start-up are not counted: the ETA is a lower bound when a worker has yet to start (no
worker is seen before its first trial).

Values are as stored (accuracies and skill as fractions; ``specopt status`` shows them in % as
:data:`model.contract.METRIC_LABELS` labels them): a running trial's value is on the test split
(every epoch's is), the best trial's values, baselines and skill on ``objective_split``.
The best trial comes with the mean-training-spectrum baseline's value of each objective on the
objective's split (``TrialAttr.BASELINE``) and its skill there: what its score is read against."""

from __future__ import annotations

import datetime as dt
import math
import statistics
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import optuna
from optuna.trial import FrozenTrial, TrialState

from hpo.storage.home import mask_url
from hpo.study.budget import count_budget, study_budget
from hpo.study.create import open_study
from model.contract import Split, StudyAttr, TrialAttr, objective_label

__all__ = ["BestTrial", "RunningTrial", "StudyStatus", "status", "study_status"]
#: Seconds after its trial ended that a worker still counts as running (claiming and starting
#: its next trial) when it has no RUNNING trial.
BETWEEN_TRIALS = 60.0
State = Literal["empty", "running", "stopped", "finished"]
#: The states counted, by the names shown (Optuna's FAIL as "failed").
COUNTED = {"complete": TrialState.COMPLETE, "pruned": TrialState.PRUNED,
           "failed": TrialState.FAIL, "running": TrialState.RUNNING,
           "waiting": TrialState.WAITING}


@dataclass
class RunningTrial:
    number: int
    worker: str | None  # "0 on host (pid 123)" as the worker recorded it
    epoch: int | None  # epochs done (of this trial, resumed ones included)
    epochs: int | None  # its epochs in total (early stopping may end it sooner)
    value: float | None  # the first objective at the last epoch reported (test split)
    seconds_per_epoch: float | None
    running_seconds: float | None  # since the trial started


@dataclass
class BestTrial:
    number: int
    values: list[float]
    params: dict[str, Any]  # the searched ones
    #: per objective: the baseline's value on the objective's split (None: it has none, e.g.
    #: skill, sigma, or a trial recorded without a baseline)
    baselines: list[float | None] = field(default_factory=list)
    skill: float | None = None  # on the objective's split


@dataclass
class StudyStatus:
    study: str
    storage: str  # password masked
    state: State  # empty, running, stopped (trials left, no worker), finished
    n_trials: int | None  # the budget (None: time only)
    finished: int  # trials that count against the budget (retried ones do not)
    counts: dict[str, int]  # complete, pruned, failed, running, waiting
    objectives: list[str]
    directions: list[str]
    objective_labels: list[str] = field(default_factory=list)  # with the split and its role
    objective_split: str = "test"  # of the best trial's values, baselines and skill
    running: list[RunningTrial] = field(default_factory=list)
    best: BestTrial | None = None  # one objective: the best; several: the first's best
    pareto_size: int | None = None  # several objectives: trials on the Pareto front
    seconds_per_epoch: float | None = None
    epochs_per_trial: float | None = None
    eta_seconds: float | None = None  # None: unknown (no budget, or nothing measured yet)
    workers: int = 0  # running (see the module docstring): what the ETA divides the work by

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def status(study: str | Path, storage: str | None = None) -> StudyStatus:
    """The status of a stored study (a shipped name, a study file, or a name in ``storage``)."""
    opened = open_study(study, storage, with_store=False)  # status reads no artifact
    return study_status(opened.study, opened.storage_url)


def _number(x: Any) -> float | None:
    ok = isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)
    return float(x) if ok else None


def _worker(attrs: dict) -> str | None:
    w = attrs.get(TrialAttr.WORKER)
    if not isinstance(w, dict):
        return None
    where = f"{w.get('host', '?')} (pid {w.get('pid', '?')})"
    return f"{w['index']} on {where}" if w.get("index") is not None else where


def _total_epochs(t: FrozenTrial) -> int | None:
    progress = t.user_attrs.get(TrialAttr.PROGRESS)
    if isinstance(progress, dict) and _number(progress.get("epochs")):
        return int(progress["epochs"])
    params = t.user_attrs.get(TrialAttr.PARAMS)
    epochs = _number(params.get("epochs")) if isinstance(params, dict) else None
    return int(epochs) if epochs else None


def _running(t: FrozenTrial, now: dt.datetime) -> RunningTrial:
    progress = t.user_attrs.get(TrialAttr.PROGRESS)
    progress = progress if isinstance(progress, dict) else {}
    epoch = int(progress["epoch"]) if _number(progress.get("epoch")) else None
    value = _number(progress.get("value"))
    if t.intermediate_values:  # reported every epoch: newer than the rate-limited attribute
        step = max(t.intermediate_values)
        if epoch is None or step >= epoch:
            epoch, value = step, _number(t.intermediate_values[step])
    since = (now - t.datetime_start).total_seconds() if t.datetime_start else None
    per = _number(progress.get("seconds_per_epoch"))
    if per is None and since and epoch:
        per = since / epoch  # includes the data preparation: an upper bound
    return RunningTrial(t.number, _worker(t.user_attrs), epoch, _total_epochs(t), value, per,
                        since)


def _objectives(study: optuna.Study) -> list[str]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        names = study.metric_names
    if not names:
        stored = study.user_attrs.get(StudyAttr.OBJECTIVES)
        names = stored if isinstance(stored, list) else None
    n = len(study.directions)
    if not names or len(names) != n:
        names = ["objective"] if n == 1 else [f"objective {i}" for i in range(n)]
    return [str(x) for x in names]


def baseline_of(trial: FrozenTrial, split: str = Split.VALIDATION) -> dict[str, float]:
    """The mean-training-spectrum baseline's metrics on ``split`` (validation: beside
    ``metrics_of``; test: beside the objective); empty for trials recorded without one."""
    b = trial.user_attrs.get(TrialAttr.BASELINE)
    m = b.get(split) if isinstance(b, dict) else None
    return dict(m) if isinstance(m, dict) else {}


def _best_trial(t: FrozenTrial, objectives: list[str], split: str) -> BestTrial:
    """The best trial with its baseline and skill on the objective's ``split``."""
    attrs = t.user_attrs
    baseline = baseline_of(t, split)
    scores = attrs.get(TrialAttr.SELECTION_METRICS if split == Split.TEST else TrialAttr.METRICS)
    skill = scores.get("skill") if isinstance(scores, dict) else None
    return BestTrial(t.number, list(t.values), dict(t.params),
                     [_number(baseline.get(n)) for n in objectives], _number(skill))


def _best(study: optuna.Study, complete: list[FrozenTrial]) -> tuple[BestTrial | None,
                                                                       int | None]:
    if not complete:
        return None, None
    split = str(study.user_attrs.get(StudyAttr.OBJECTIVE_SPLIT) or Split.TEST)
    objectives = _objectives(study)
    if len(study.directions) == 1:
        return _best_trial(study.best_trial, objectives, split), None
    front = study.best_trials
    sign = 1.0 if study.directions[0] == optuna.study.StudyDirection.MAXIMIZE else -1.0
    t = max(front, key=lambda f: sign * f.values[0])
    return _best_trial(t, objectives, split), len(front)


def study_status(study: optuna.Study, storage_url: str = "",
                 now: dt.datetime | None = None) -> StudyStatus:
    """The status of an open study (see the module docstring); ``now``: for tests."""
    now = now or dt.datetime.now()
    trials = study.get_trials(deepcopy=False)
    stored = _number(study.user_attrs.get(StudyAttr.N_TRIALS))
    n_trials = study_budget(study, int(stored) if stored is not None else None)
    budget = count_budget(trials, n_trials)
    counts = {name: sum(1 for t in trials if t.state == s) for name, s in COUNTED.items()}
    running = [_running(t, now) for t in trials if t.state == TrialState.RUNNING]
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    best, pareto = _best(study, complete)

    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    per = [p for t in finished if (p := _number(t.user_attrs.get(TrialAttr.SECONDS_PER_EPOCH)))]
    per += [r.seconds_per_epoch for r in running if r.seconds_per_epoch]
    seconds_per_epoch = statistics.median(per) if per else None
    ran = [int(e) for t in finished if (e := _number(t.user_attrs.get(TrialAttr.EPOCHS_RUN)))]
    if not ran:
        ran = [len(t.intermediate_values) for t in finished if t.intermediate_values]
    totals = [r.epochs for r in running if r.epochs]
    epochs_per_trial = (statistics.fmean(ran) if ran else
                        statistics.fmean(totals) if totals else None)

    if not trials:
        state: State = "empty"
    elif n_trials is not None and budget.finished >= n_trials and not running:
        state = "finished"
    else:
        state = "running" if running else "stopped"
    not_started = max(0, n_trials - budget.finished - len(running)) if n_trials else 0
    workers = _workers(trials, now, len(running), not_started) if running else 0
    eta: float | None = None
    if state == "finished":
        eta = 0.0
    elif n_trials is not None and seconds_per_epoch and epochs_per_trial:
        left = sum(max(0, (r.epochs or epochs_per_trial) - (r.epoch or 0)) for r in running)
        left += not_started * epochs_per_trial
        eta = left * seconds_per_epoch / max(1, workers)
    split = str(study.user_attrs.get(StudyAttr.OBJECTIVE_SPLIT) or Split.TEST)
    return StudyStatus(
        study=study.study_name, storage=mask_url(storage_url) if storage_url else "",
        state=state, n_trials=n_trials, finished=budget.finished, counts=counts,
        objectives=_objectives(study),
        objective_labels=[objective_label(n, split) for n in _objectives(study)],
        objective_split=split,
        directions=[d.name.lower() for d in study.directions], running=running, best=best,
        pareto_size=pareto, seconds_per_epoch=seconds_per_epoch,
        epochs_per_trial=epochs_per_trial, eta_seconds=eta, workers=workers)


def _workers(trials: list[FrozenTrial], now: dt.datetime, running: int, not_started: int) -> int:
    """The workers running now (see the module docstring): the RUNNING trials, plus the workers
    whose trial ended in the last :data:`BETWEEN_TRIALS` s and that run none, at most as many
    as there are trials to run."""
    busy = {_worker(t.user_attrs) for t in trials if t.state == TrialState.RUNNING}
    between = {w for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)
               and t.datetime_complete
               and (now - t.datetime_complete).total_seconds() <= BETWEEN_TRIALS
               and (w := _worker(t.user_attrs)) is not None and w not in busy}
    return min(running + len(between), running + not_started)

