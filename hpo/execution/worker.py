"""Workers: run trials of one study until its budget is spent, safely alongside other workers.

A worker (:class:`Worker`; :func:`hpo.execution.run.run_worker` makes and runs one) repeats:
under a study-wide lock (:class:`hpo.storage.locks.ClaimLock`), fail stale trials (whose worker
died: the heartbeat stopped) so that the retry callback re-queues them, then decide
(:func:`next_action`):

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
once (the trial is still marked FAIL and re-queued).  Re-queues never use up the heartbeat's
``max_retry`` (that is for dead workers) and are not new grid points.

Faults: a worker that dies before its trial's first heartbeat leaves a RUNNING trial with no
heartbeat; it is failed and retried like any stale trial once its start is older than the grace
period.  Infrastructure errors (:class:`InfrastructureError`, ``data_prep.DataError``,
``OSError``: a missing or corrupt data file, an unwritable folder, a full disk) are not the
configuration's fault: the trial is re-queued (the budget is left alone) and the worker stops
with one line naming the file and the fix (exit status 3). A worker removes, when it starts, the
temporary trial folders that killed workers left on its machine
(``hpo.execution.objective.trial_workdir``)."""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import signal
import socket
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import NoReturn

import optuna
from optuna.trial import FrozenTrial, TrialState

from hpo import faults
from hpo.execution.log import setup_logging
from hpo.execution.objective import objective, remove_dead_workdirs
from hpo.storage.artifacts import AtomicFileSystemArtifactStore
from hpo.storage.database import open_storage
from hpo.storage.home import mask_url, storage_file
from hpo.storage.locks import ClaimLock
from hpo.storage.optuna_private import is_heartbeat_storage, study_storage, trial_id
from hpo.storage.stale import (
    fail_stale_trials,
    requeue_trial,
    retried_trial_number,
)
from hpo.study.budget import Action, budget_state, next_action, study_budget
from hpo.study.config import StudyConfig
from hpo.study.create import artifact_dir, create_study, storage_url
from model.contract import Status, TrialAttr, metric_text
from model.errors import (
    ConfigError,
    DataError,
    InfrastructureError,
    TrainingFailed,
    TrialError,
    WorkerInterrupted,
    describe_os_error,
)

_log = logging.getLogger("specopt.worker")


__all__ = [
    "InfrastructureError",
    "StopFlag",
    "TrialError",
    "Worker",
    "WorkerInterrupted",
    "WorkerSettings",
    "WorkerSummary",
    "budget_state",
    "next_action",
    "setup_logging",
]


@dataclass
class WorkerSummary:
    """What one worker did (its counters while it runs)."""

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

    def count(self, state: TrialState) -> None:
        if state == TrialState.COMPLETE:
            self.completed += 1
        elif state == TrialState.PRUNED:
            self.pruned += 1
        elif state == TrialState.FAIL:
            self.failed += 1


@dataclass(frozen=True)
class WorkerSettings:
    """A worker's settings, resolved once: the study file's values unless overridden (its
    device and threads are none of them: the study's ``[train]``, as every trial reads them)."""

    n_trials: int | None  # finished trials in total across workers (None: no count)
    timeout: float | None  # seconds of wall time for this worker
    poll: float  # seconds between looks while other workers run the last trials
    heartbeat: int | None  # seconds between heartbeats of the running trial
    max_errors_in_a_row: int
    handle_signals: bool
    label: str  # "[study worker i]", the log lines' prefix


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

    def __init__(self, storage, trial_id: int, interval: int | None) -> None:
        self.storage = storage
        self.trial_id = trial_id
        self.interval = interval
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


def tell_trial(study: optuna.Study, trial: optuna.Trial, values=None, state=None) -> FrozenTrial:
    """``study.tell`` outside ``optimize``: GridSampler.after_trial calls ``study.stop()`` when
    the grid is done, which raises outside optimize() after the result is stored; the worker
    loop decides on stopping itself, so that is harmless."""
    try:
        return study.tell(trial, values, state=state)
    except RuntimeError as err:
        if "Study.stop" not in str(err):
            raise
        return study_storage(study).get_trial(trial_id(trial))


def _fail_and_requeue(study: optuna.Study, trial: optuna.Trial, reason: str) -> None:
    """Interrupted trial: queue it again with the same parameters, whatever the retry budget
    (``max_retry`` is for dead workers), then FAIL it.  In this order, a storage that fails
    half-way (a full disk) never loses the grid point: either nothing was written (the trial
    stays RUNNING, and goes stale and is retried when this worker is gone), or the copy is
    queued (and the stale check does not queue another)."""
    try:
        trial.set_user_attr(TrialAttr.STATUS, Status.INTERRUPTED)
        trial.set_user_attr(TrialAttr.FAILURE, reason[:500])
    except Exception as err:  # best effort: the trial is re-queued and failed all the same
        _log.warning(f"could not annotate trial {trial.number}: {err}")
    requeue_trial(study, study_storage(study).get_trial(trial_id(trial)))
    tell_trial(study, trial, state=TrialState.FAIL)


def infrastructure_message(err: BaseException) -> str:
    """One line naming the file at fault and the fix."""
    if isinstance(err, InfrastructureError) and isinstance(err.__cause__, OSError):
        err = err.__cause__  # a failed write (model.checkpoint): say it as the worker does
    if isinstance(err, OSError):
        what, fix = describe_os_error(err)
        return f"{what} ({fix}, then start the worker again)"
    return f"{err} (fix it, then start the worker again)"


def database_disk_full(err: BaseException, url: str) -> OSError | None:
    """The full disk behind a failed database write (SQLite's ``SQLITE_FULL``, PostgreSQL's
    ``disk_full``, SQLSTATE 53100), as an ``OSError`` naming the database; else None."""
    for _ in range(10):
        if (getattr(err, "sqlite_errorname", None) == "SQLITE_FULL"
                or getattr(err, "sqlstate", None) == "53100"):
            where = storage_file(url) or mask_url(url)
            return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(where))
        nxt = err.__cause__ or err.__context__
        if nxt is None:
            return None
        err = nxt
    return None


class Worker:
    """One worker on ``config``'s study: opens the storage and joins the study when made,
    :meth:`run` works until the budget is spent (see the module docstring)."""

    def __init__(
        self,
        config: StudyConfig,
        *,
        storage: str | None = None,
        n_trials: int | None = None,
        timeout: float | None = None,
        worker_index: int | None = None,
        objective_fn: Callable | None = None,
        poll_interval: float | None = None,
        handle_signals: bool = True,
        max_errors_in_a_row: int = 3,
    ) -> None:
        hb = config.heartbeat
        who = worker_index if worker_index is not None else os.getpid()
        self.config = config
        self.settings = WorkerSettings(
            n_trials=n_trials if n_trials is not None else config.n_trials,
            timeout=timeout if timeout is not None else config.budget.timeout,
            poll=poll_interval or max(0.5, min(5.0, hb.interval / 2)),
            heartbeat=hb.interval,
            max_errors_in_a_row=max_errors_in_a_row,
            handle_signals=handle_signals,
            label=f"[{config.name} worker {who}]",
        )
        if objective_fn is None:  # a device this machine lacks would fail every trial
            from model.device import resolve_device  # torch: not on hpo's import path

            resolve_device(config.train.device)
        url = storage_url(config, storage)
        self.url = url
        self.storage = open_storage(url, heartbeat_interval=hb.interval, grace_period=hb.grace,
                                    max_retry=hb.max_retry)
        self.study = create_study(config, url, worker_index=worker_index,
                                  storage_obj=self.storage)
        self.lock = ClaimLock(url, config.name, getattr(self.storage, "engine", None))
        self.objective_fn = objective_fn
        self.artifacts = None
        if objective_fn is None:
            adir = artifact_dir(config, url, self.study)  # the recorded one of an old study
            try:
                adir.mkdir(parents=True, exist_ok=True)
            except OSError as err:
                raise InfrastructureError(f"{self.settings.label} artifact folder: "
                                          f"{infrastructure_message(err)}") from None
            self.artifacts = AtomicFileSystemArtifactStore(str(adir))
            remove_dead_workdirs()  # what killed workers on this machine left
        self.info = {"host": socket.gethostname(), "pid": os.getpid(), "index": worker_index}
        self.stop = StopFlag()
        self.summary = WorkerSummary(study=config.name)

    def run(self) -> WorkerSummary:
        """Run trials until the budget is spent or a signal stops the worker.

        A trial that raises an unexpected error is marked FAIL (its ``failure`` attribute says
        why) and the worker goes on; ``max_errors_in_a_row`` such trials in a row raise
        :class:`TrialError`."""
        s, threads = self.settings, self.config.train.num_threads
        if threads:
            os.environ.setdefault("OMP_NUM_THREADS", str(threads))
            if self.objective_fn is None:
                from model.device import set_threads  # torch: not on hpo's import path

                set_threads(threads)
        errors_in_a_row = 0
        with self._running() as start:
            while not self.stop():
                if self._out_of_time(start):
                    break
                try:
                    action, trial = self._claim()
                except Exception as err:
                    full = database_disk_full(err, self.url)
                    if full is None:
                        raise
                    line = f"{s.label} stopped: {infrastructure_message(full)}"
                    _log.error(line)
                    raise InfrastructureError(line) from err
                if action == "done":
                    break
                if action == "wait":
                    time.sleep(s.poll)
                    continue
                assert trial is not None
                self.summary.trials.append(trial.number)
                try:
                    state = self._run_trial(trial)
                    errors_in_a_row = 0
                except TrialError:
                    # one odd trial must not end a long campaign; a systematic error must
                    errors_in_a_row += 1
                    if errors_in_a_row >= s.max_errors_in_a_row:
                        raise
                    state = TrialState.FAIL
                if state is None:  # interrupted
                    self.summary.interrupted = True
                    break
                self.summary.count(state)
        return self.summary

    @contextlib.contextmanager
    def _running(self, on_second_signal: Callable[[], None] | None = None
                 ) -> Iterator[float]:
        """Around a worker's loop (this one's and :class:`hpo.execution.packed.PackedWorker`'s): the
        signal handlers, installed then restored; at a normal end, ``interrupted`` when a stop
        was asked for, else the line saying the time budget is spent; ``seconds`` always.
        Yields the start (``time.monotonic``). ``on_second_signal``: the KeyboardInterrupt of
        a second signal is handled by it (the run counts as interrupted) instead of raised."""
        s = self.settings
        if s.handle_signals:
            self.stop.install()
        start = time.monotonic()
        try:
            yield start
        except KeyboardInterrupt:
            if on_second_signal is None:
                raise
            on_second_signal()
            self.summary.interrupted = True
        else:
            if self.stop():
                self.summary.interrupted = True
            elif not self.summary.interrupted and self._out_of_time(start):
                _log.info(f"{s.label} time budget of {s.timeout:g} s spent")
        finally:
            if s.handle_signals:
                self.stop.restore()
            self.summary.seconds = time.monotonic() - start

    def _out_of_time(self, start: float) -> bool:
        timeout = self.settings.timeout
        return timeout is not None and time.monotonic() - start >= timeout

    def _decide(self) -> Action:
        s = self.settings
        if s.n_trials is None and not self.config.is_grid:
            return "run"  # time only: no counts needed (ask() pops queued retries itself)
        # read each time: --add-trials extends the budget of running workers too
        n_trials = study_budget(self.study, s.n_trials)
        return next_action(budget_state(self.study, self.config, n_trials))

    def _claim(self) -> tuple[Action, optuna.Trial | None]:
        """Under the study-wide lock: fail stale trials, decide, and ask a trial if running.
        A lock lost meanwhile (a PostgreSQL restart drops it, and another worker may have
        decided since) means deciding again under a fresh one, not asking on a stale decision
        (one trial over the budget, or a grid point run twice)."""
        while True:
            with self.lock() as held:
                fail_stale_trials(self.study)
                action = self._decide()
                if action != "run":
                    return action, None
                if not held.still_held():
                    _log.warning(f"{self.settings.label} lost the claim lock (database "
                                 "restarted?): deciding again")
                    continue
                with warnings.catch_warnings():  # heartbeats are recorded here, not optimize()
                    warnings.simplefilter("ignore", UserWarning)
                    trial = self.study.ask()
                faults.inject("after_ask")  # a death before the first heartbeat (tests)
                if self.settings.heartbeat and is_heartbeat_storage(self.storage):
                    self.storage.record_heartbeat(trial_id(trial))
                return action, trial

    def _run_trial(self, trial: optuna.Trial) -> TrialState | None:
        """Run one asked trial and tell its result; returns its final state (None: interrupted).
        An unexpected error fails the trial and is raised as :class:`TrialError`."""
        label = self.settings.label
        retry = retried_trial_number(self.storage.get_trial(trial_id(trial)))
        note = f" (retry of trial {retry})" if retry is not None else ""
        _log.info(f"{label} trial {trial.number}{note} started")
        with _Heartbeat(self.storage, trial_id(trial), self.settings.heartbeat):
            try:
                values = self._evaluate(trial)
            except optuna.TrialPruned as err:
                tell_trial(self.study, trial, state=TrialState.PRUNED)
                _log.info(f"{label} trial {trial.number} {err}")
                return TrialState.PRUNED
            except (WorkerInterrupted, KeyboardInterrupt) as err:
                _fail_and_requeue(self.study, trial, str(err) or "interrupted")
                _log.warning(f"{label} trial {trial.number} interrupted: marked FAIL and "
                             "re-queued")
                return None
            except (TrainingFailed, ConfigError) as err:
                # the configuration's own failure (a NaN loss, settings this machine cannot
                # hold): recorded so that no stale check retries it
                trial.set_user_attr(TrialAttr.STATUS, Status.FAILED)
                if isinstance(err, ConfigError):  # objective records a TrainingFailed's
                    trial.set_user_attr(TrialAttr.FAILURE, str(err)[:500])
                tell_trial(self.study, trial, state=TrialState.FAIL)
                _log.warning(f"{label} trial {trial.number} failed: {err}")
                return TrialState.FAIL
            except (InfrastructureError, DataError, OSError) as err:
                self._stop_for(trial, err, infrastructure_message(err))
            except optuna.exceptions.UpdateFinishedTrialError:
                return self._taken_over(trial)
            except Exception as err:  # any other error: fail this trial, count it, go on
                full = database_disk_full(err, self.url)
                if full is not None:  # not the trial's fault either
                    self._stop_for(trial, err, infrastructure_message(full))
                try:
                    trial.set_user_attr(TrialAttr.FAILURE, f"{type(err).__name__}: {err}"[:500])
                    trial.set_user_attr(TrialAttr.STATUS, Status.ERROR)
                finally:
                    tell_trial(self.study, trial, state=TrialState.FAIL)
                _log.error(f"{label} trial {trial.number} failed with an error", exc_info=True)
                raise TrialError(f"trial {trial.number}: {type(err).__name__}: {err}") from err
        try:
            frozen = tell_trial(self.study, trial, values)
        except optuna.exceptions.UpdateFinishedTrialError:
            return self._taken_over(trial)
        except Exception as err:
            full = database_disk_full(err, self.url)
            if full is None:
                raise
            self._stop_for(trial, err, infrastructure_message(full))
        if frozen.state == TrialState.COMPLETE:
            shown = ", ".join(metric_text(n, v) for n, v in zip(
                self.config.objectives, frozen.values, strict=False))
            shown += f" ({self.config.objective_split} split)"
            _log.info(f"{label} trial {trial.number} complete: {shown}")
        return frozen.state

    def _taken_over(self, trial: optuna.Trial) -> TrialState:
        """The trial was finished by another worker: it took this one for dead (heartbeats
        late beyond the grace period: a stopped process, a journal lock held by a killed
        worker) and failed it, queueing its retry. This attempt ends; the worker goes on."""
        _log.warning(f"{self.settings.label} trial {trial.number} was failed by another worker "
                     "(this worker's heartbeats came too late): its retry is queued; going on")
        return TrialState.FAIL

    def _stop_for(self, trial: optuna.Trial, err: BaseException, line: str) -> NoReturn:
        """An infrastructure error: re-queue the trial, stop this worker with ``line``."""
        label = self.settings.label
        try:
            _fail_and_requeue(self.study, trial, line)
            note = f"trial {trial.number} re-queued"
        except Exception as store_err:  # e.g. the database on the same full disk
            note = (f"trial {trial.number} left to the other workers' stale check "
                    f"(re-queue failed: {type(store_err).__name__})")
        _log.error(f"{label} stopped: {line}; {note}")
        raise InfrastructureError(f"{label} stopped: {line}; {note}") from err

    def _evaluate(self, trial: optuna.Trial):
        if self.objective_fn is not None:
            return self.objective_fn(trial, self.config, should_stop=self.stop)
        s = self.settings
        return objective(trial, self.config, artifact_store=self.artifacts,
                         should_stop=self.stop, worker=self.info, log_label=s.label)
