"""Trials whose worker died: heartbeats make them stale, Optuna fails them, and a retry rule
requeues them (each retry remembers the trial it re-runs)."""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable

import optuna
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, TrialState

from hpo import faults
from hpo.storage.artifacts import _ARTIFACT_RECORD
from hpo.storage.optuna_private import (
    RetryCallback,
    silent_trial_ids,
    study_id,
    study_storage,
    uncached,
)
from hpo.storage.resilience import ResilientStorage
from model.contract import Status, TrialAttr

#: System attribute: how many of a trial's retry history were re-queues (SIGINT/SIGTERM,
#: infrastructure errors), which do not use up ``max_retry`` (meant for dead workers).
REQUEUES_KEY = "specopt:requeues"


class SpecoptRetryCallback(RetryCallback):
    """Optuna's retry callback, except that re-queues do not count against ``max_retry``: the
    budget of retries is for dead workers only.  The queued trial has the failed one's
    parameters, distributions and user attributes (with :attr:`TrialAttr.ORIGIN`, the first
    attempt of the chain), its system attributes except its artifact records (a retry shows only
    its own artifacts), and Optuna's retry history, so :func:`retried_trial_number` and
    :func:`retry_history` see it as a retry (not a new grid point)."""

    def allows(self, trial: FrozenTrial, requeue: bool = False) -> bool:
        """Whether ``trial`` may be queued again: always for a re-queue, else while its retries
        after dead workers stay within ``max_retry``."""
        retries = len(retry_history(trial)) + 1 - int(trial.system_attrs.get(REQUEUES_KEY, 0))
        return requeue or self.max_retry is None or retries <= self.max_retry

    def __call__(self, study: optuna.Study, trial: FrozenTrial, requeue: bool = False) -> None:
        if any(trial.number in retry_history(t) for t in study.get_trials(deepcopy=False)):
            return  # queued already (a re-queue whose FAIL did not reach the storage)
        if not self.allows(trial, requeue):
            return
        history = [*retry_history(trial), trial.number]
        requeues = int(trial.system_attrs.get(REQUEUES_KEY, 0)) + (1 if requeue else 0)
        own = {k: v for k, v in trial.system_attrs.items()  # not the attempt's artifacts
               if not k.startswith(_ARTIFACT_RECORD)}
        system_attrs = {**own, "failed_trial": history[0], "retry_history": history,
                        REQUEUES_KEY: requeues}
        user_attrs = {**trial.user_attrs, TrialAttr.ORIGIN:
                      trial.user_attrs.get(TrialAttr.ORIGIN, history[0])}
        study.add_trial(optuna.create_trial(
            state=TrialState.WAITING, params=trial.params, distributions=trial.distributions,
            user_attrs=user_attrs, system_attrs=system_attrs))


def _retry_callback(max_retry: int | None):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return SpecoptRetryCallback(max_retry=max_retry)


def requeue_trial(study: optuna.Study, trial: FrozenTrial) -> None:
    """Queue ``trial`` again with the same parameters, whatever the retry budget (an interrupted
    trial, or one stopped by an infrastructure error); at most once per trial."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        SpecoptRetryCallback(max_retry=None)(study, copy.deepcopy(trial), requeue=True)


def fail_stale_trials(study: optuna.Study) -> None:
    """Optuna's ``fail_stale_trials``, plus RUNNING trials of a database storage that never got a
    heartbeat (the worker died between ``ask()`` and its first heartbeat) and started longer than
    the grace period ago: Optuna never marks those stale.  Each is failed and goes through the
    retry callback."""
    storage = study_storage(study)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
    _retry_orphans(study)
    # the RDB storage inside a worker's storage, or inside the cache create_study puts around it
    rdb = storage.rdb if isinstance(storage, ResilientStorage) else uncached(storage)
    if not isinstance(rdb, optuna.storages.RDBStorage) or not rdb.heartbeat_interval:
        return
    failed = []
    grace = rdb.grace_period or 2 * rdb.heartbeat_interval
    for tid in silent_trial_ids(rdb, study_id(study), grace):
        try:
            if storage.set_trial_state_values(tid, state=TrialState.FAIL):
                failed.append(tid)
                faults.inject("after_stale_fail")
        except optuna.exceptions.UpdateFinishedTrialError:
            pass  # another worker failed it first
    callback = stale_trial_callback(storage)
    if callback is not None:
        for tid in failed:
            callback(study, copy.deepcopy(storage.get_trial(tid)))
#: Statuses of trials that failed for their own reasons (diverged, a bug): never retried.
_FAILED_FOR_GOOD = (Status.FAILED, Status.ERROR)


def _retry_orphans(study: optuna.Study) -> None:
    """Queue the retry of every trial that was failed as stale but never got one: failing a
    stale trial and queueing its retry are two writes, and the worker doing them can be killed
    in between (Optuna's ``fail_stale_trials`` too), which lost the trial's grid point for
    good.  Trials whose retries are used up (``max_retry``) are left alone."""
    callback = stale_trial_callback(study_storage(study))
    if callback is None:
        return
    allows = getattr(callback, "allows", lambda t: True)
    for t in orphaned_trials(study.get_trials(deepcopy=False), allows):
        callback(study, copy.deepcopy(t))


def orphaned_trials(trials: list[FrozenTrial], allows: Callable[[FrozenTrial], bool]
                    ) -> list[FrozenTrial]:
    """The trials failed as stale whose retry was never queued and that ``allows`` (the retry
    callback's ``max_retry`` rule) lets run again: work left, whatever the counts say."""
    retried = {n for t in trials for n in retry_history(t)}
    return [t for t in trials
            if t.state == TrialState.FAIL and t.number not in retried
            and t.user_attrs.get(TrialAttr.STATUS) not in _FAILED_FOR_GOOD and allows(t)]


def retry_rule(max_retry: int | None) -> Callable[[FrozenTrial], bool]:
    """Whether a trial failed as stale may run again under ``max_retry`` (the workers' rule)."""
    return _retry_callback(max_retry).allows


def retried_trial_number(trial: FrozenTrial) -> int | None:
    """The number of the (first) trial that ``trial`` retries; None for an original trial."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return RetryCallback.retried_trial_number(trial)


def retry_history(trial: FrozenTrial) -> list[int]:
    """The numbers of the trials that ``trial`` retries, the original first ([] if none)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return RetryCallback.retry_history(trial)


def stale_trial_callback(storage: BaseStorage) -> Callable | None:
    """The storage's retry callback for trials whose worker died (None: no heartbeats)."""
    get = getattr(storage, "get_heartbeat_stale_trial_callback", None)
    return get() if get is not None else None

