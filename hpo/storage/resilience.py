"""Riding out database outages: retry with back-off, and one Optuna storage that does it.

A PostgreSQL restart, a server stopped for a while or a SQLite file locked by another process
must not kill the workers.  :class:`ResilientStorage` wraps Optuna's RDB storage (inside
Optuna's own cache, as ``optuna.create_study(storage=URL)`` would) and retries every
call that fails because the database cannot be reached, with exponential back-off up to
``max_wait`` seconds (then :class:`~model.errors.StorageError`).  While it waits it logs one line
per attempt (at most one every few seconds), saying what it waits for::

    storage postgresql+psycopg://u:***@host/db unreachable: retrying in 8 s (45 s of 600 s)

Writes that are not idempotent are checked before they are retried: a state change that
committed before the connection dropped is read back instead of being applied twice, and a study
created by the failed attempt is looked up.  Heartbeats (recorded from a thread) are retried the
same way, so they resume when the server is back; and for a while after an outage this worker
reports no trial as stale, since the other workers' heartbeats may not have resumed yet."""

from __future__ import annotations

import functools
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from optuna.storages import BaseStorage
from optuna.study import StudyDirection
from optuna.trial import TrialState

from hpo.storage.optuna_private import HeartbeatStorage, stale_trial_ids_of, uncached
from model.contract import MAX_SECONDS
from model.errors import ConfigError, StorageError

_log = logging.getLogger("specopt.storage")
T = TypeVar("T")


__all__ = ["DEFAULT_MAX_WAIT", "ResilientStorage", "first_line", "is_outage", "outage_wait",
           "retry_outage"]
#: Seconds a worker waits for an unreachable database before it gives up.
DEFAULT_MAX_WAIT = 600.0
#: The environment variable that changes it.
OUTAGE_WAIT_ENV = "SPECOPT_OUTAGE_WAIT"
#: Back-off between attempts: first delay and cap (seconds).
FIRST_DELAY = 1.0
MAX_DELAY = 8.0
#: At most one "unreachable" line per this many seconds (per storage).
LOG_EVERY = 5.0
_OUTAGE_TEXT = (
    "database is locked", "database is busy", "unable to open database", "disk i/o error",
    "connection refused", "could not connect", "server closed the connection",
    "terminating connection", "connection is closed", "connection timeout", "timeout expired",
    "the database system is starting up", "the database system is shutting down",
    "the database system is in recovery mode", "consuming input failed", "ssl syscall error",
    "connection reset", "broken pipe", "no connection to the server", "admin shutdown",
    "cannot connect now", "connection to server", "the connection is lost",
)
#: Errors of a connection the server refuses for good (a wrong database, user, password, host
#: name or option): waiting for them would only delay the one line that says so.
_PERMANENT_TEXT = (
    "does not exist", "password authentication failed", "no pg_hba.conf entry",
    "authentication failed", "name or service not known", "nodename nor servname",
    "invalid port", "invalid connection option", "invalid sslmode", "invalid dsn",
    "no password supplied",
)


def _chain(err: BaseException):
    seen: set[int] = set()
    e: BaseException | None = err
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        yield e
        e = e.__cause__ or e.__context__


def is_outage(err: BaseException) -> bool:
    """Whether ``err`` (or what caused it) means the database cannot be reached for now, as
    opposed to a bad request.  Optuna wraps such errors in ``StorageInternalError`` ("... e.g.
    exceeding max length"): the cause decides."""
    import sqlalchemy.exc as sa

    if any(t in str(e).lower() for e in _chain(err) for t in _PERMANENT_TEXT):
        return False
    for e in _chain(err):
        if isinstance(e, sa.DBAPIError) and e.connection_invalidated:
            return True
        module = type(e).__module__ or ""
        if module.startswith("psycopg") and type(e).__name__ in (
                "OperationalError", "InterfaceError", "ConnectionTimeout", "AdminShutdown",
                "CannotConnectNow", "QueryCanceled"):
            return True  # the connection or the server, never the request
        if isinstance(e, (sa.OperationalError, sa.InterfaceError, sa.DisconnectionError)):
            text = str(e).lower()
            if any(t in text for t in _OUTAGE_TEXT):
                return True
            orig = getattr(e, "orig", None)
            if orig is not None and (type(orig).__module__ or "").startswith("psycopg"):
                return True
        if isinstance(e, (ConnectionError, TimeoutError)):
            return True
    return False


class _Waiter:
    """Back-off, the deadline and the rate-limited log lines of one storage."""

    def __init__(self, shown: str, max_wait: float) -> None:
        self.shown = shown
        self.max_wait = max_wait
        self._lock = threading.Lock()
        self._last_log = 0.0
        self.down_since: float | None = None
        self.back_at = 0.0  # monotonic time the storage answered again after an outage

    def call(self, fn: Callable[[], T], what: str,
             before_retry: Callable[[], tuple[bool, Any]] | None = None) -> T:
        start = time.monotonic()
        delay = FIRST_DELAY
        failed = False
        while True:
            if failed and before_retry is not None:
                try:
                    done, result = before_retry()
                except Exception as err:
                    if not is_outage(err):
                        raise
                    done, result = False, None
                else:
                    if done:
                        self._recovered()
                        return result
            try:
                result = fn()
            except Exception as err:
                if not is_outage(err):
                    raise
                failed = True
                waited = time.monotonic() - start
                if waited >= self.max_wait:
                    raise StorageError(
                        f"storage {self.shown} unreachable for {waited:.0f} s while {what}: "
                        f"giving up ({first_line(err, 200)})") from None
                delay = min(delay, self.max_wait - waited)
                self._note(err, what, delay, waited)
                time.sleep(delay)
                delay = min(2 * delay, MAX_DELAY)
                continue
            if failed:
                self._recovered()
            return result

    def _note(self, err: BaseException, what: str, delay: float, waited: float) -> None:
        now = time.monotonic()
        with self._lock:
            if self.down_since is None:
                self.down_since = now
            if now - self._last_log < LOG_EVERY:
                return
            self._last_log = now
        _log.warning(f"storage {self.shown} unreachable ({what}: {first_line(err, 200)}): retrying "
                     f"in {delay:.0f} s ({waited:.0f} s of {self.max_wait:.0f} s)")

    def _recovered(self) -> None:
        with self._lock:
            since, self.down_since = self.down_since, None
            self.back_at = time.monotonic()
            self._last_log = 0.0
        if since is not None:
            _log.warning(f"storage {self.shown} reachable again after "
                         f"{time.monotonic() - since:.0f} s")


def outage_wait() -> float:
    """Seconds to wait for an unreachable database: ``$SPECOPT_OUTAGE_WAIT``, else
    :data:`DEFAULT_MAX_WAIT`; ConfigError for a value that is no number of seconds from 0 (no
    waiting) to a year."""
    raw = os.environ.get(OUTAGE_WAIT_ENV, "").strip()
    try:
        value = float(raw) if raw else DEFAULT_MAX_WAIT
    except ValueError:
        value = math.nan
    if not 0 <= value <= MAX_SECONDS:  # NaN too
        raise ConfigError(f"${OUTAGE_WAIT_ENV}={raw[:40]!r}: give seconds from 0 (do not wait "
                          f"for the database) to {MAX_SECONDS}, or unset it "
                          f"({DEFAULT_MAX_WAIT:.0f} s)")
    return value


def first_line(err: BaseException, limit: int = 300) -> str:
    """The first line of an error (of the database driver's, when SQLAlchemy wraps one)."""
    text = str(getattr(err, "orig", None) or err).strip()
    return (text.splitlines()[0] if text else type(err).__name__)[:limit]


def retry_outage(fn: Callable[[], T], *, shown: str, what: str,
                 max_wait: float = DEFAULT_MAX_WAIT) -> T:
    """``fn()``, retried with back-off while the database is unreachable (see the module)."""
    return _Waiter(shown, max_wait).call(fn, what)


class _Retried:
    """A method of the inner storage, retried through outages; ``what``: what the log line says
    it waits for.  (``what=None``: passed on as it is, never retried.)"""

    def __init__(self, what: str | None) -> None:
        self.what = what
        self.name = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, storage: ResilientStorage | None, owner: type | None = None) -> Any:
        if storage is None:
            return self
        if self.what is None:
            return getattr(storage._inner, self.name)
        return functools.partial(storage._call, self.what, self.name)


class ResilientStorage(BaseStorage, HeartbeatStorage):
    """An Optuna storage that retries every call through database outages (module docstring).

    ``inner``: the RDB storage (usually inside Optuna's cache: :func:`optuna_private.cached`);
    ``shown``: its URL with the password masked; ``grace``: the heartbeat grace period (seconds).
    Other attributes (``engine``, ...) are the RDB storage's (:attr:`rdb`).
    """

    def __init__(self, inner: BaseStorage, *, shown: str, max_wait: float = DEFAULT_MAX_WAIT,
                 grace: float | None = None) -> None:
        self._inner = inner
        self._rdb = uncached(inner)
        self._waiter = _Waiter(shown, max_wait)
        self._grace = grace

    @property
    def rdb(self) -> Any:
        """The RDB storage itself, for code that needs it; its calls are not retried."""
        return self._rdb

    def __getattr__(self, name: str) -> Any:  # engine, url, scoped_session, ...
        if name.startswith("__") or name in ("_inner", "_rdb", "_waiter", "_grace"):
            raise AttributeError(name)
        return getattr(self._rdb, name)

    def __getstate__(self) -> dict[str, Any]:
        return {"inner": self._inner, "shown": self._waiter.shown,
                "max_wait": self._waiter.max_wait, "grace": self._grace}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["inner"], shown=state["shown"],  # type: ignore[misc]
                      max_wait=state["max_wait"], grace=state["grace"])

    @property
    def max_wait(self) -> float:
        return self._waiter.max_wait

    def _call(self, what: str, name: str, *args: Any,
              before_retry: Callable[[], tuple[bool, Any]] | None = None, **kwargs: Any) -> Any:
        method = getattr(self._inner, name)
        return self._waiter.call(lambda: method(*args, **kwargs), what, before_retry)

    # --- calls retried as they are ---

    set_study_user_attr = _Retried("writing a study attribute")
    set_study_system_attr = _Retried("writing a study attribute")
    get_study_id_from_name = _Retried("reading the study")
    get_study_name_from_id = _Retried("reading the study")
    get_study_directions = _Retried("reading the study")
    get_study_user_attrs = _Retried("reading the study")
    get_study_system_attrs = _Retried("reading the study")
    get_all_studies = _Retried("reading the studies")
    # A retry after an attempt that committed but lost its answer would add a second trial;
    # it stays RUNNING without a heartbeat (or WAITING) and is handled as such trials are.
    create_new_trial = _Retried("creating a trial")
    get_trial_id_from_study_id_trial_number = _Retried("reading a trial")
    get_trial_number_from_id = _Retried("reading a trial")
    get_trial_param = _Retried("reading a trial")
    get_trial = _Retried("reading a trial")
    get_best_trial = _Retried("reading the best trial")
    get_all_trials = _Retried("reading the trials")
    get_n_trials = _Retried("counting trials")
    set_trial_user_attr = _Retried("writing a trial attribute")
    set_trial_system_attr = _Retried("writing a trial attribute")
    record_heartbeat = _Retried("recording a heartbeat")

    # --- calls passed on, never retried ---

    remove_session = _Retried(None)
    check_trial_is_updatable = _Retried(None)
    get_heartbeat_interval = _Retried(None)
    get_heartbeat_stale_trial_callback = _Retried(None)

    # --- calls retried with care: writes checked before a retry, and the stale check ---

    def create_new_study(self, directions: Sequence[StudyDirection],
                         study_name: str | None = None) -> int:
        def committed() -> tuple[bool, Any]:  # the failed attempt may have created it
            if study_name is None:
                return False, None
            try:
                return True, self._inner.get_study_id_from_name(study_name)
            except KeyError:
                return False, None

        return self._call("creating the study", "create_new_study", directions,
                          study_name=study_name, before_retry=committed)

    def delete_study(self, study_id: int) -> None:
        def gone() -> tuple[bool, Any]:
            try:
                self._inner.get_study_name_from_id(study_id)
            except KeyError:
                return True, None
            return False, None

        self._call("deleting a study", "delete_study", study_id, before_retry=gone)

    def set_trial_param(self, trial_id: int, param_name: str, param_value_internal: float,
                        distribution: Any) -> None:
        def committed() -> tuple[bool, Any]:
            t = self._inner.get_trial(trial_id)
            return param_name in t.params, None

        self._call("writing a parameter", "set_trial_param", trial_id, param_name,
                   param_value_internal, distribution, before_retry=committed)

    def set_trial_state_values(self, trial_id: int, state: TrialState,
                               values: Sequence[float] | None = None) -> bool:
        def committed() -> tuple[bool, Any]:
            # the failed attempt may have committed: then its state is there (a finished trial
            # must not be finished twice; Optuna would raise UpdateFinishedTrialError)
            t = self._inner.get_trial(trial_id)
            if t.state != state or state == TrialState.RUNNING:
                return False, None  # RUNNING: cannot tell ours from another worker's claim
            if values is not None and list(t.values or []) != list(values):
                return False, None
            return True, True

        what = f"setting a trial {state.name}"
        return self._call(what, "set_trial_state_values", trial_id, state=state, values=values,
                          before_retry=committed)

    def set_trial_intermediate_value(self, trial_id: int, step: int,
                                     intermediate_value: float) -> None:
        self._call(f"reporting epoch {step}", "set_trial_intermediate_value", trial_id, step,
                   intermediate_value)

    def stale_trial_ids(self, study_id: int) -> list[int]:
        # Just after an outage the other workers' heartbeats may not have resumed yet (they
        # back off up to MAX_DELAY): their trials are not dead.
        grace = self._grace if self._grace is not None else 0.0
        if self._waiter.back_at and time.monotonic() - self._waiter.back_at < grace + 2 * MAX_DELAY:
            return []
        return self._waiter.call(lambda: stale_trial_ids_of(self._inner, study_id),
                                 "looking for stale trials")
