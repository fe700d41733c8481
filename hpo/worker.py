"""Workers: run trials of one study until its budget is spent, safely alongside other workers.

A worker repeats: under a study-wide lock (:class:`hpo.storage.ClaimLock`), fail stale trials
(whose worker died: the heartbeat stopped) so that the retry callback re-queues them, then decide:

- a WAITING trial (a retry) exists: run it;
- the budget has room (and, for grid studies, a grid point nobody has started): ask a new trial;
- all remaining budget is being run by other workers: wait, polling, so that if one of them dies
  its trial is failed after the grace period and retried here;
- otherwise: done.

The budget is ``n_trials`` finished trials in total across workers (COMPLETE, PRUNED, or FAIL from
a training failure; trials failed because their worker died are retried and do not count), and/or
``timeout`` seconds of wall time for this worker.  Grid studies never start a grid point twice.

SIGINT/SIGTERM: the current trial stops after its current epoch, is marked FAIL (status
``interrupted``) and re-queued for another worker, and the worker exits; a second signal stops at
once (the trial is still marked FAIL and re-queued).
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import optuna
from optuna.trial import TrialState

from hpo.config import StudyConfig
from hpo.storage import ClaimLock, open_storage
from hpo.study import artifact_dir, create_study, storage_url
from hpo.training import WorkerInterrupted, objective

_log = logging.getLogger("specopt.worker")


def setup_logging(level: int = logging.INFO) -> None:
    """Worker progress on stderr (once per process; leaves configured loggers alone)."""
    root = logging.getLogger("specopt")
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
        root.addHandler(handler)
        root.setLevel(level)


@dataclass
class WorkerSummary:
    study: str
    completed: int = 0
    pruned: int = 0
    failed: int = 0
    interrupted: bool = False
    trials: list[int] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def run(self) -> int:
        return self.completed + self.pruned + self.failed


class StopFlag:
    """Set by SIGINT/SIGTERM; the second signal raises KeyboardInterrupt."""

    def __init__(self) -> None:
        self.requested = False
        self.signum: int | None = None
        self._old: dict = {}

    def __call__(self) -> bool:
        return self.requested

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt(f"signal {signum}")
        self.requested = True
        self.signum = signum
        _log.warning(f"signal {signal.Signals(signum).name}: finishing the current epoch, then "
                     "stopping (send it again to stop at once)")

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._old[sig] = signal.signal(sig, self._handle)

    def restore(self) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old.clear()


class _Heartbeat:
    """Records the running trial's heartbeat every interval (as Optuna's optimize() does)."""

    def __init__(self, storage, trial_id: int) -> None:
        self.storage = storage
        self.trial_id = trial_id
        self.interval = storage.get_heartbeat_interval() if hasattr(
            storage, "get_heartbeat_interval") else None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.storage.record_heartbeat(self.trial_id)
            except Exception as err:  # a database hiccup must not kill the trial
                _log.warning(f"heartbeat of trial id {self.trial_id} failed: {err}")

    def __enter__(self):
        if self.interval:
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


def _fail_stale(study: optuna.Study) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


def _retried_numbers(trials) -> set[int]:
    out: set[int] = set()
    for t in trials:
        out.update(t.system_attrs.get("retry_history", ()))
    return out


def budget_state(study: optuna.Study, config: StudyConfig, n_trials: int | None) -> dict:
    """Counts that decide the next action (also handy for tests and status displays)."""
    trials = study._storage.get_all_trials(study._study_id, deepcopy=False)
    retried = _retried_numbers(trials)
    by_state = {s: 0 for s in TrialState}
    for t in trials:
        by_state[t.state] += 1
    failed_for_good = sum(1 for t in trials
                          if t.state == TrialState.FAIL and t.number not in retried)
    return {
        "finished": by_state[TrialState.COMPLETE] + by_state[TrialState.PRUNED] + failed_for_good,
        "running": by_state[TrialState.RUNNING],
        "waiting": by_state[TrialState.WAITING],
        # trials that are not retries: for grid studies, each one started its own grid point
        "originals": sum(1 for t in trials if "failed_trial" not in t.system_attrs),
        "n_trials": n_trials,
    }


def _needs_counts(config: StudyConfig, n_trials: int | None) -> bool:
    """Time-only budgets of non-grid studies need no trial counts (ask() pops retries itself)."""
    return n_trials is not None or config.is_grid


def next_action(state: dict, config: StudyConfig) -> str:
    """``run`` (a retry or a new trial), ``wait`` (others still running) or ``done``."""
    n = state["n_trials"]
    if n is not None and state["finished"] >= n:
        return "done"
    if state["waiting"]:
        return "run"
    room = n is None or state["finished"] + state["running"] < n
    if config.is_grid:
        room = room and state["originals"] < config.grid_size()
    if room:
        return "run"
    return "wait" if state["running"] else "done"


def _tell(study: optuna.Study, trial: optuna.Trial, values=None, state=None):
    """``study.tell`` outside ``optimize``: GridSampler.after_trial calls ``study.stop()`` when
    the grid is done, which raises outside optimize() after the result is stored; the worker
    loop decides on stopping itself, so that is harmless."""
    try:
        return study.tell(trial, values, state=state)
    except RuntimeError as err:
        if "Study.stop" not in str(err):
            raise
        return study._storage.get_trial(trial._trial_id)


def _mark_failed_and_requeue(study: optuna.Study, trial: optuna.Trial, reason: str) -> None:
    """Interrupted trial: FAIL it and queue a retry with the same parameters."""
    storage = study._storage
    try:
        trial.set_user_attr("status", "interrupted")
        trial.set_user_attr("failure", reason)
    except Exception as err:  # best effort: the trial is failed below whatever happens
        _log.warning(f"could not annotate trial {trial.number}: {err}")
    _tell(study, trial, state=TrialState.FAIL)
    callback = None
    if hasattr(storage, "get_heartbeat_stale_trial_callback"):
        callback = storage.get_heartbeat_stale_trial_callback()
    if callback is not None:
        frozen = storage.get_trial(trial._trial_id)
        callback(study, frozen)


def run_worker(
    config: StudyConfig,
    *,
    storage: str | None = None,
    n_trials: int | None = None,
    timeout: float | None = None,
    worker_index: int | None = None,
    device: str | None = None,
    num_threads: int | None = None,
    objective_fn: Callable | None = None,
    poll_interval: float | None = None,
    handle_signals: bool = True,
    max_errors_in_a_row: int = 3,
) -> WorkerSummary:
    """Run trials of ``config``'s study until its budget is spent (see the module docstring).

    ``objective_fn(trial, config, should_stop=...)`` replaces the training objective (benchmarks
    and tests of the worker machinery).  Returns what this worker did.  A trial that raises an
    unexpected error is marked FAIL (its ``failure`` attribute says why) and the worker goes on;
    ``max_errors_in_a_row`` such trials in a row stop it with :class:`TrialError`.
    """
    url = storage_url(config, storage)
    hb = config.heartbeat
    storage_obj = open_storage(url, heartbeat_interval=hb.interval, grace_period=hb.grace,
                               max_retry=hb.max_retry)
    study = create_study(config, url, worker_index=worker_index, storage_obj=storage_obj)
    n_trials = n_trials if n_trials is not None else config.n_trials
    timeout = timeout if timeout is not None else config.budget.timeout
    poll = poll_interval or max(0.5, min(5.0, hb.interval / 2))
    lock = ClaimLock(url, config.name, getattr(storage_obj, "engine", None))
    artifacts = None
    if objective_fn is None:
        from optuna.artifacts import FileSystemArtifactStore

        adir = artifact_dir(config, url)
        adir.mkdir(parents=True, exist_ok=True)
        artifacts = FileSystemArtifactStore(str(adir))
    if num_threads:
        os.environ.setdefault("OMP_NUM_THREADS", str(num_threads))
        if objective_fn is None:
            import torch

            torch.set_num_threads(num_threads)
    info = {"host": socket.gethostname(), "pid": os.getpid(), "index": worker_index}
    stop = StopFlag()
    if handle_signals:
        stop.install()
    summary = WorkerSummary(study=config.name)
    errors_in_a_row = 0
    start = time.monotonic()
    prefix = f"[{config.name} worker {worker_index if worker_index is not None else os.getpid()}]"
    try:
        while not stop():
            if timeout is not None and time.monotonic() - start >= timeout:
                _log.info(f"{prefix} time budget of {timeout:g} s spent")
                break
            with lock():
                _fail_stale(study)
                action = (next_action(budget_state(study, config, n_trials), config)
                          if _needs_counts(config, n_trials) else "run")
                trial = None
                if action == "run":
                    with warnings.catch_warnings():  # heartbeats are recorded here, not by
                        warnings.simplefilter("ignore", UserWarning)  # optimize()
                        trial = study.ask()
                if trial is not None and hb.interval:
                    storage_obj.record_heartbeat(trial._trial_id)
            if action == "done":
                break
            if action == "wait":
                time.sleep(poll)
                continue
            summary.trials.append(trial.number)
            try:
                state = _run_one(study, trial, config, storage_obj, stop, objective_fn, device,
                                 num_threads, artifacts, info, prefix)
                errors_in_a_row = 0
            except TrialError:
                # one odd trial must not end a long campaign; a systematic error must
                errors_in_a_row += 1
                if errors_in_a_row >= max_errors_in_a_row:
                    raise
                state = TrialState.FAIL
            if state == TrialState.COMPLETE:
                summary.completed += 1
            elif state == TrialState.PRUNED:
                summary.pruned += 1
            elif state == TrialState.FAIL:
                summary.failed += 1
            else:  # interrupted
                summary.interrupted = True
                break
        if stop():
            summary.interrupted = True
    finally:
        lock.close()
        if handle_signals:
            stop.restore()
        summary.seconds = time.monotonic() - start
    return summary


class TrialError(Exception):
    """An unexpected error in a trial (not a training failure): the trial is FAIL."""


def _run_one(study, trial, config, storage_obj, stop, objective_fn, device, num_threads,
             artifacts, info, prefix):
    """Run one asked trial and tell its result; returns the final state (None: interrupted).
    An unexpected error fails the trial and is raised as :class:`TrialError`."""
    retry = storage_obj.get_trial_system_attrs(trial._trial_id).get("failed_trial")
    note = f" (retry of trial {retry})" if retry is not None else ""
    _log.info(f"{prefix} trial {trial.number}{note} started")
    with _Heartbeat(storage_obj, trial._trial_id):
        try:
            if objective_fn is not None:
                values = objective_fn(trial, config, should_stop=stop)
            else:
                values = objective(trial, config, device=device, num_threads=num_threads,
                                   artifact_store=artifacts, should_stop=stop, worker=info)
        except optuna.TrialPruned as err:
            _tell(study, trial, state=TrialState.PRUNED)
            _log.info(f"{prefix} trial {trial.number} {err}")
            return TrialState.PRUNED
        except (WorkerInterrupted, KeyboardInterrupt) as err:
            _mark_failed_and_requeue(study, trial, str(err) or "interrupted")
            _log.warning(f"{prefix} trial {trial.number} interrupted: marked FAIL and re-queued")
            return None
        except Exception as err:
            import model

            if isinstance(err, getattr(model, "TrainingFailed", ())):
                _tell(study, trial, state=TrialState.FAIL)
                _log.warning(f"{prefix} trial {trial.number} failed: {err}")
                return TrialState.FAIL
            try:
                trial.set_user_attr("failure", f"{type(err).__name__}: {err}"[:500])
                trial.set_user_attr("status", "error")
            finally:
                _tell(study, trial, state=TrialState.FAIL)
            _log.error(f"{prefix} trial {trial.number} failed with an error", exc_info=True)
            raise TrialError(f"trial {trial.number}: {type(err).__name__}: {err}") from err
    frozen = _tell(study, trial, values)
    if frozen.state == TrialState.COMPLETE:
        shown = ", ".join(f"{v:.4g}" for v in frozen.values)
        _log.info(f"{prefix} trial {trial.number} complete: {shown}")
    return frozen.state
