"""A study's trial budget: the counts that decide whether a worker runs, waits or stops (pure
functions of the trials, shared by workers and ``specopt status``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import optuna
from optuna.trial import FrozenTrial, TrialState

from hpo.storage.stale import (
    retried_trial_number,
    retry_history,
)
from hpo.study.config import (
    StudyConfig,
)
from model.contract import StudyAttr


def added_trials(study: optuna.Study) -> int:
    """Trials added to the study's budget since its creation (``--add-trials``)."""
    return int(study.user_attrs.get(StudyAttr.ADDED_TRIALS) or 0)


def study_budget(study: optuna.Study, n_trials: int | None) -> int | None:
    """A worker's trial budget on ``study``: its ``n_trials`` plus the trials added to the study
    since (stored with it, so every worker sees an extension); None: no trial count."""
    return None if n_trials is None else n_trials + added_trials(study)
Action = Literal["run", "wait", "done"]


@dataclass(frozen=True)
class BudgetState:
    """The counts that decide a worker's next action."""

    finished: int  # COMPLETE + PRUNED + FAIL that no retry re-runs
    running: int
    waiting: int  # queued retries
    originals: int  # trials that are not retries: in a grid study, grid points started
    n_trials: int | None  # the budget (None: time only)
    grid_size: int | None = None  # grid studies: the number of grid points


def budget_state(study: optuna.Study, config: StudyConfig, n_trials: int | None) -> BudgetState:
    """The study's counts now (also handy for tests and status displays)."""
    trials = study.get_trials(deepcopy=False)
    return count_budget(trials, n_trials, config.grid_size() if config.is_grid else None)


def count_budget(trials: list[FrozenTrial], n_trials: int | None,
                 grid_size: int | None = None) -> BudgetState:
    """The :class:`BudgetState` of these trials (``specopt status`` counts with it too)."""
    retried = {n for t in trials for n in retry_history(t)}
    by_state = dict.fromkeys(TrialState, 0)
    for t in trials:
        by_state[t.state] += 1
    failed_for_good = sum(1 for t in trials
                          if t.state == TrialState.FAIL and t.number not in retried)
    return BudgetState(
        finished=by_state[TrialState.COMPLETE] + by_state[TrialState.PRUNED] + failed_for_good,
        running=by_state[TrialState.RUNNING],
        waiting=by_state[TrialState.WAITING],
        originals=sum(1 for t in trials if retried_trial_number(t) is None),
        n_trials=n_trials,
        grid_size=grid_size,
    )


def next_action(state: BudgetState) -> Action:
    """``run`` (a retry or a new trial), ``wait`` (others still running) or ``done``."""
    n = state.n_trials
    if n is not None and state.finished >= n:
        return "done"
    if state.waiting:
        return "run"
    room = n is None or state.finished + state.running < n
    if state.grid_size is not None:
        room = room and state.originals < state.grid_size
    if room:
        return "run"
    return "wait" if state.running else "done"

