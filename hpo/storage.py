"""Study storage: SQLite (default), PostgreSQL, or Optuna's journal file for shared file systems.

URLs:
- ``sqlite:///runs/demo.db`` (relative to the working directory), ``sqlite:////abs/demo.db``
  (a study with no storage: ``$SPECOPT_HOME/<study>.db``, see :mod:`hpo.home`);
- ``postgresql+psycopg://user:password@host:5432/db`` (``postgresql://`` means the same);
- ``journal:///runs/demo.log`` (relative), ``journal:////shared/demo.log`` (absolute): an
  append-only log file, safe on NFS and other shared file systems without a database server.

Every storage gets heartbeats and a retry callback: a trial whose worker died (SIGKILL, node
lost) is marked FAIL after the grace period and re-queued with the same parameters.
Errors (bad URL, unreachable server) are a one-line :class:`StorageError` naming the URL, with any
password masked.
"""

from __future__ import annotations

import contextlib
import copy
import errno
import fcntl
import hashlib
import json
import os
import random
import shutil
import sqlite3
import time
import warnings
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any, BinaryIO

import optuna
from optuna.artifacts import FileSystemArtifactStore
from optuna.storages import BaseStorage, JournalStorage
from optuna.storages._heartbeat import BaseHeartbeat
from optuna.storages.journal import JournalFileBackend
from optuna.storages.journal._file import get_lock_file
from optuna.trial import FrozenTrial, TrialState

from hpo import faults
from hpo.resilience import ResilientStorage, first_line, outage_wait, retry_outage
from model.contract import Status, TrialAttr
from model.errors import StorageError

__all__ = [
    "REQUEUES_KEY", "AtomicFileSystemArtifactStore", "ClaimLock", "HeartbeatJournalStorage",
    "HeldLock", "RetryCallback", "SafeJournalFileBackend", "SafeJournalStorage",
    "SpecoptRetryCallback", "StorageError", "default_storage_url", "fail_stale_trials",
    "mask_url", "normalize_url", "open_storage", "orphaned_trials", "requeue_trial",
    "retried_trial_number", "retry_rule",
    "retry_history", "runs_dir", "stale_trial_callback", "storage_file",
]

# Optuna 4.9 renamed RetryFailedTrialCallback (the old name warns, and goes in Optuna 6).
RetryCallback = getattr(optuna.storages, "RetryHeartbeatStaleTrialCallback", None) or \
    optuna.storages.RetryFailedTrialCallback


def runs_dir() -> Path:
    """The home of every output (:func:`hpo.home.home`; kept under its old name)."""
    from hpo.home import home

    return home()


def default_storage_url(study_name: str) -> str:
    """SQLite under the home: ``$SPECOPT_HOME/<study>.db`` (see :mod:`hpo.home`)."""
    from hpo.home import sqlite_file  # hpo.home imports this module's URL functions

    return f"sqlite:///{sqlite_file(study_name)}"


def mask_url(url: str) -> str:
    """The URL with its password replaced by ``***``."""
    head, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    creds, at, host = rest.rpartition("@")
    if ":" in creds:
        creds = creds.split(":", 1)[0] + ":***"
    return f"{head}://{creds}{at}{host}"


def _path_of(url: str, scheme: str) -> Path:
    rest = url[len(scheme):]
    if not rest or rest == "/":
        raise StorageError(f"storage {url}: no file path after {scheme!r}")
    if "?" in rest:  # it would become part of the file's name
        raise StorageError(f"storage {url}: a query string ({rest[rest.index('?'):]!r}) is not "
                           f"taken by {scheme}FILE URLs: remove it")
    return Path(rest).resolve()


def _check_credentials(url: str) -> None:
    """Refuse a URL whose user name or password holds an unescaped ``@``: the URL parser ends
    the password at the first one and takes the rest for the host, which errors then show."""
    if url.partition("://")[2].count("@") > 1:
        raise StorageError(
            f"storage {mask_url(url)}: more than one '@' in the URL: percent-escape '@', ':' and "
            "'/' in the user name and password (@ as %40, : as %3A, / as %2F; in Python: "
            "urllib.parse.quote(password, safe=''))")


def normalize_url(url: str) -> str:
    """Canonical form: absolute file paths, ``postgresql+psycopg`` driver."""
    url = url.strip()
    head, sep, rest = url.partition("://")
    if sep:
        url = f"{head.lower()}{sep}{rest}"  # schemes are case-insensitive
    if url.startswith(("postgresql", "postgres:")):
        _check_credentials(url)
    if url.startswith("postgresql://"):
        return "postgresql+psycopg://" + url[len("postgresql://"):]
    if url.startswith("postgres://"):
        return "postgresql+psycopg://" + url[len("postgres://"):]
    if url.startswith("sqlite:///"):
        return f"sqlite:///{_path_of(url, 'sqlite:///')}"
    if url.startswith("journal:///"):
        return f"journal:///{_path_of(url, 'journal:///')}"
    if url.startswith("postgresql+psycopg://"):
        return url
    scheme = url.split("://", 1)[0] if "://" in url else url
    raise StorageError(f"storage {mask_url(url)}: unsupported scheme {scheme!r} (use "
                       "sqlite:///FILE, postgresql+psycopg://USER@HOST:PORT/DB or "
                       "journal:///FILE)")


def storage_file(url: str) -> Path | None:
    """The file behind a SQLite or journal URL (None for PostgreSQL)."""
    url = normalize_url(url)
    for scheme in ("sqlite:///", "journal:///"):
        if url.startswith(scheme):
            return Path(url[len(scheme):])
    return None


#: System attribute: how many of a trial's retry history were re-queues (SIGINT/SIGTERM,
#: infrastructure errors), which do not use up ``max_retry`` (meant for dead workers).
REQUEUES_KEY = "specopt:requeues"


#: Prefix of Optuna's artifact records (system attributes of the trial that uploaded them).
_ARTIFACT_RECORD = "artifacts:"


class SpecoptRetryCallback(RetryCallback):  # type: ignore[misc,valid-type]
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
        return requeue or self._max_retry is None or retries <= self._max_retry

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
    storage = study._storage
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
    _retry_orphans(study)
    rdb = getattr(storage, "_backend", storage)  # create_study wraps it in a _CachedStorage
    if not isinstance(rdb, optuna.storages.RDBStorage) or not rdb.heartbeat_interval:
        return
    failed = []
    for trial_id in _silent_trial_ids(rdb, study._study_id):
        try:
            if storage.set_trial_state_values(trial_id, state=TrialState.FAIL):
                failed.append(trial_id)
                faults.inject("after_stale_fail")
        except optuna.exceptions.UpdateFinishedTrialError:
            pass  # another worker failed it first
    callback = stale_trial_callback(storage)
    if callback is not None:
        for trial_id in failed:
            callback(study, copy.deepcopy(storage.get_trial(trial_id)))


#: Statuses of trials that failed for their own reasons (diverged, a bug): never retried.
_FAILED_FOR_GOOD = (Status.FAILED, Status.ERROR)


def _retry_orphans(study: optuna.Study) -> None:
    """Queue the retry of every trial that was failed as stale but never got one: failing a
    stale trial and queueing its retry are two writes, and the worker doing them can be killed
    in between (Optuna's ``fail_stale_trials`` too), which lost the trial's grid point for
    good.  Trials whose retries are used up (``max_retry``) are left alone."""
    callback = stale_trial_callback(study._storage)
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


def _silent_trial_ids(storage, study_id: int) -> list[int]:
    """RUNNING trials without a heartbeat row that started more than the grace period ago
    (``datetime_start`` is set by the asking client's clock: naive UTC in Optuna 5, local time
    before)."""
    from datetime import UTC, datetime, timedelta

    from optuna.storages._rdb import models

    grace = storage.grace_period or 2 * storage.heartbeat_interval
    start_col = getattr(models.TrialModel, "_datetime_start_utc", None)
    if start_col is not None:
        cutoff = datetime.now(UTC).replace(tzinfo=None) - timedelta(seconds=grace)
    else:
        start_col = models.TrialModel.datetime_start
        cutoff = datetime.now() - timedelta(seconds=grace)
    session = storage.scoped_session()
    try:
        rows = (session.query(models.TrialModel.trial_id)
                .filter(models.TrialModel.study_id == study_id)
                .filter(models.TrialModel.state == TrialState.RUNNING)
                .filter(start_col < cutoff)  # type: ignore[operator]
                .filter(~models.TrialModel.heartbeats.any())
                .all())
        session.commit()
    except Exception:
        session.rollback()
        raise
    finally:
        session.close()
    return [r[0] for r in rows]


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
    get = getattr(storage, "get_heartbeat_stale_trial_callback", None) or \
        getattr(storage, "get_failed_trial_callback", None)  # Optuna before 4.9
    return get() if get is not None else None


def _bad_journal_line(path: str, line: int, why: str) -> StorageError:
    """The error for a journal whose record on ``line`` (1-based) cannot be read: its lines
    before it can, and how to keep them."""
    keep = line - 1
    return StorageError(
        f"storage journal:///{path}: line {line} of the journal is not a record specopt can "
        f"read ({why[:200]}); its first {keep} line(s) are: keep them with `head -n {keep} "
        f"{path} > {path}.recovered` and use journal:///{path}.recovered, or restore the file "
        "from a backup")


class SafeJournalFileBackend(JournalFileBackend):
    """Optuna's journal file, readable up to its last complete record whatever happens: under
    the lock, a trailing partial line (a write cut short by a full disk or a crash) is cut off
    before appending, and each append is one ``os.write`` of the whole record, undone if it
    is short.  (Optuna's reader refuses a partial line followed by more lines.)  A record that
    is no JSON is a :class:`StorageError` naming its line."""

    def read_logs(self, log_number_from: int) -> Generator[dict[str, Any], None, None]:
        line = log_number_from  # Optuna's reader yields one record per line, raising late
        try:
            for log in super().read_logs(log_number_from):
                yield log
                line += 1
        except UnicodeDecodeError:
            raise _bad_journal_line(self._file_path, line + 1, "not UTF-8 text") from None
        except json.JSONDecodeError as err:
            raise _bad_journal_line(self._file_path, line + 1, f"not JSON: {err}") from None
        except ValueError as err:  # Optuna's "Invalid log format." (a cut line, more after it)
            raise _bad_journal_line(self._file_path, line + 1, str(err)) from None

    def append_logs(self, logs: list[dict]) -> None:
        data = ("\n".join(json.dumps(log, separators=(",", ":")) for log in logs) + "\n"
                ).encode("utf-8")
        with get_lock_file(self._lock):
            fd = os.open(self._file_path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                size = _complete_size(fd)
                os.lseek(fd, size, os.SEEK_SET)
                try:
                    written = os.write(fd, data)
                    if written != len(data):
                        raise OSError(errno.ENOSPC, "short write (disk full?)", self._file_path)
                    os.fsync(fd)
                except BaseException:
                    with contextlib.suppress(OSError):
                        os.ftruncate(fd, size)
                    raise
            finally:
                os.close(fd)


def _complete_size(fd: int) -> int:
    """The file's size without a trailing partial line, cut off if there is one."""
    size = os.fstat(fd).st_size
    if size == 0:
        return 0
    if os.pread(fd, 1, size - 1) == b"\n":
        return size
    end = size
    while end > 0:  # back to the last newline
        start = max(0, end - 65536)
        chunk = os.pread(fd, end - start, start)
        i = chunk.rfind(b"\n")
        if i >= 0:
            end = start + i + 1
            break
        end = start
    os.ftruncate(fd, end)
    return end


class SafeJournalStorage(JournalStorage):
    """Optuna's journal storage whose replay of a record it cannot apply (an unknown operation,
    a missing field, no JSON object) is a :class:`StorageError` naming the record's line."""

    def _sync_with_backend(self) -> None:
        result = self._replay_result
        current: list = [None]

        def tracked():
            for log in self._backend.read_logs(result.log_number_read):
                current[0] = log
                yield log

        try:
            result.apply_logs(tracked())
        except (StorageError, OSError):
            raise
        except Exception as err:
            log = current[0]
            if isinstance(log, dict) and log.get("worker_id") == result.worker_id:
                raise  # this process's own write refused (Optuna's signal to its caller)
            from optuna.storages.journal._storage import JournalOperation

            if not isinstance(log, dict):
                why = "not a JSON object"
            elif log.get("op_code") not in set(JournalOperation):
                why = f"unknown operation {log.get('op_code')!r}"
            elif isinstance(err, KeyError):
                why = f"field {err} missing"
            else:  # a field of the wrong type
                why = f"{type(err).__name__}: {err}"
            path = getattr(self._backend, "_file_path", "?")
            raise _bad_journal_line(path, result.log_number_read, why) from None


class HeartbeatJournalStorage(SafeJournalStorage, BaseHeartbeat):
    """Journal storage with heartbeats (Optuna's has none): a running trial's heartbeat is a
    system attribute; trials silent longer than the grace period are stale.  Needs roughly
    synchronised clocks across machines (as NFS itself does)."""

    KEY = "specopt:heartbeat"

    def __init__(self, backend, heartbeat_interval: int, grace_period: int,
                 stale_trial_callback: Callable | None) -> None:
        super().__init__(backend)
        self._hb_interval = heartbeat_interval
        self._hb_grace = grace_period
        self._hb_callback = stale_trial_callback

    def record_heartbeat(self, trial_id: int) -> None:
        self.set_trial_system_attr(trial_id, self.KEY, time.time())

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        now = time.time()
        stale = []
        for t in self.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,)):
            last = t.system_attrs.get(self.KEY)
            if last is None:
                last = t.datetime_start.timestamp() if t.datetime_start else now
            if now - last > self._hb_grace:
                stale.append(t._trial_id)
        return stale

    def get_heartbeat_interval(self) -> int | None:
        return self._hb_interval

    def get_heartbeat_stale_trial_callback(self):
        return self._hb_callback

    def get_failed_trial_callback(self):  # older Optuna name
        return self._hb_callback


def open_storage(url: str, *, heartbeat_interval: int | None = 30, grace_period: int | None = 120,
                 max_retry: int | None = 3, connect_timeout: int = 10,
                 max_wait: float | None = None) -> BaseStorage:
    """An Optuna storage for ``url`` with heartbeats and the retry callback.

    With heartbeats (a worker's storage), a SQLite or PostgreSQL storage rides out database
    outages: every call is retried with back-off for up to ``max_wait`` seconds (default
    ``$SPECOPT_OUTAGE_WAIT``, else :data:`hpo.resilience.DEFAULT_MAX_WAIT`, 600 s), see
    :class:`hpo.resilience.ResilientStorage`.  The tables of a fresh database are created by one
    process at a time (a PostgreSQL advisory lock, a file lock beside a SQLite file), so that
    workers starting together on it do not collide.

    Opening one waits too (a worker started during an outage), but not for a server that
    refuses it for good (a wrong database, user or host).

    Raises :class:`StorageError` (one line, password masked) on a bad URL, an unreachable
    server, a damaged or foreign SQLite file, or an unreadable journal record (naming its line
    and how to keep the lines before it); damage found later, by any query, is the same error.
    """
    shown = mask_url(url)
    url = normalize_url(url)
    callback = _retry_callback(max_retry) if heartbeat_interval else None
    if url.startswith("journal:///"):
        path = _path_of(url, "journal:///")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            backend = SafeJournalFileBackend(str(path))  # appends that never corrupt the file
            if heartbeat_interval:
                return HeartbeatJournalStorage(backend, heartbeat_interval,
                                               grace_period or 2 * heartbeat_interval, callback)
            return SafeJournalStorage(backend)
        except OSError as err:
            fix = ": give a file's path" if path.is_dir() else ""
            raise StorageError(f"storage {shown}: cannot open journal file ({err}){fix}"
                               ) from None

    import sqlalchemy.exc

    engine_kwargs: dict = {}
    sqlite_path: Path | None = None
    if url.startswith("sqlite:///"):
        sqlite_path = path = _path_of(url, "sqlite:///")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            _sqlite_wal(path, shown)
        except (OSError, sqlite3.Error) as err:
            fix = ("" if os.access(path.parent, os.W_OK) else f": its folder {path.parent} is "
                   "read-only and SQLite writes beside the file (-wal, -shm, locks); copy it to "
                   "a writable folder")
            raise _sqlite_damaged(err, path, shown) or StorageError(
                f"storage {shown}: cannot open SQLite file ({err}){fix}") from None
        engine_kwargs = {"connect_args": {"timeout": 60}}
    else:
        # one idle connection per worker; a few more while it claims a trial and beats
        engine_kwargs = {"connect_args": {"connect_timeout": connect_timeout},
                         "pool_pre_ping": True, "pool_size": 1, "max_overflow": 4}
    kwargs: dict = {"heartbeat_interval": heartbeat_interval, "grace_period": grace_period}
    import inspect

    params = inspect.signature(optuna.storages.RDBStorage).parameters
    key = ("heartbeat_stale_trial_callback" if "heartbeat_stale_trial_callback" in params
           else "failed_trial_callback")
    kwargs[key] = callback
    if max_wait is None:
        max_wait = outage_wait()
    resilient = bool(heartbeat_interval) and max_wait > 0  # a worker's storage

    def connect() -> optuna.storages.RDBStorage:
        with warnings.catch_warnings(), _creation_lock(url, connect_timeout):
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs, **kwargs)

    try:
        # a worker started while the database is down waits for it as a running one does
        rdb = (retry_outage(connect, shown=shown, what="opening the storage", max_wait=max_wait)
               if resilient else connect())
    except StorageError:
        raise
    except sqlalchemy.exc.SQLAlchemyError as err:
        damaged = sqlite_path is not None and _sqlite_damaged(err, sqlite_path, shown)
        raise damaged or _open_error(err, shown) from None
    except (ValueError, ImportError, RuntimeError) as err:  # RuntimeError: Optuna's schema check
        raise _open_error(err, shown) from None
    if sqlite_path is not None:
        _report_damage(rdb.engine, sqlite_path, shown)
    if not resilient:
        return rdb  # readers (reports, the dashboard) get Optuna's own storage
    return ResilientStorage(optuna.storages._CachedStorage(rdb), shown=shown, max_wait=max_wait,
                            grace=grace_period or 2 * heartbeat_interval)  # type: ignore[operator]


def _open_error(err: Exception, shown: str) -> StorageError:
    """One line for an error opening a database storage (a bad URL, no server, no driver, the
    tables of another Optuna version)."""
    import sqlalchemy.exc

    if isinstance(err, sqlalchemy.exc.ArgumentError | ValueError):
        return StorageError(f"storage {shown}: malformed URL ({first_line(err)})")
    if isinstance(err, sqlalchemy.exc.OperationalError):
        return StorageError(f"storage {shown}: cannot connect ({first_line(err)})")
    if isinstance(err, ImportError):
        return StorageError(f"storage {shown}: missing database driver ({first_line(err)})")
    return StorageError(f"storage {shown}: {first_line(err)}")


#: SQLite's result codes (primary) of a damaged file and of a file that is no database.
_SQLITE_CORRUPT, _SQLITE_NOTADB = 11, 26


def _sqlite_damaged(err: BaseException, path: Path, shown: str) -> StorageError | None:
    """The one-line error naming the file and the fix when ``err`` (sqlite3's, or SQLAlchemy's
    around it) says the SQLite file is damaged or no database; None for any other error."""
    orig = getattr(err, "orig", None) or err
    code = getattr(orig, "sqlite_errorcode", None)
    if not isinstance(orig, sqlite3.DatabaseError) or code is None:
        return None
    if code & 0xFF == _SQLITE_NOTADB:
        return StorageError(f"storage {shown}: {path} is not a SQLite database ({orig}): give "
                            "the study's .db file, or restore it from a backup")
    if code & 0xFF == _SQLITE_CORRUPT:
        new = path.with_name(f"{path.stem}.recovered.db")
        return StorageError(f"storage {shown}: the SQLite file {path} is damaged ({orig}): copy "
                            f"what is readable into a new file with `sqlite3 {path} .recover | "
                            f"sqlite3 {new}` and use sqlite:///{new}, or restore it from a "
                            "backup")
    return None


def _report_damage(engine, path: Path, shown: str) -> None:
    """Every query of ``engine`` that meets damaged pages raises :func:`_sqlite_damaged`'s
    error (damage in the middle of a table shows only when a query reads it)."""
    from sqlalchemy import event

    def handle_error(ctx) -> None:
        damaged = _sqlite_damaged(ctx.original_exception, path, shown)
        if damaged is not None:
            raise damaged

    event.listen(engine, "handle_error", handle_error)


def _optuna_tables() -> set[str]:
    from optuna.storages._rdb import models

    return {*models.BaseModel.metadata.tables, "alembic_version"}


def _sqlite_wal(path: Path, shown: str, wait: float = 60.0) -> None:
    """Put the SQLite file in WAL mode (readers do not block the writer; several local workers
    share the file). Switching can fail at once with "database is locked" while another
    process opens the same fresh file (SQLite's busy timeout does not cover it): retried.
    A database of another program (tables that are not Optuna's) is refused untouched."""
    deadline = time.monotonic() + wait
    while True:
        try:
            with contextlib.closing(sqlite3.connect(path, timeout=wait)) as con:
                tables = {r[0] for r in con.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'table' AND "
                    "name NOT LIKE 'sqlite\\_%' ESCAPE '\\'")}
                foreign = sorted(tables - _optuna_tables())
                if foreign:
                    raise StorageError(
                        f"storage {shown}: {path} is not a specopt (Optuna) storage: it holds "
                        f"another program's tables ({', '.join(foreign[:5])}); give another "
                        "file, e.g. sqlite:///runs/STUDY.db")
                con.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as err:
            if "locked" not in str(err) or time.monotonic() > deadline:
                raise
            time.sleep(0.05 + 0.1 * random.random())


def _lock_key(name: str) -> int:
    """A PostgreSQL advisory-lock key for ``name`` (a study's claims, table creation)."""
    return int.from_bytes(hashlib.sha1(name.encode()).digest()[:8], "big", signed=True)


#: PostgreSQL advisory-lock key serialising table creation.
_CREATE_KEY = _lock_key("specopt:create-tables")


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """An exclusive ``flock`` on ``path`` (created if missing) for the duration."""
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


@contextlib.contextmanager
def _creation_lock(url: str, connect_timeout: int) -> Iterator[None]:
    """One process at a time creates (or checks) the tables of ``url``'s database: Optuna's
    ``create_all`` races on a fresh database ("duplicate key ... pg_type_typname_nsp_index",
    "table studies already exists")."""
    if url.startswith("sqlite:///"):
        db = _path_of(url, "sqlite:///")
        with _file_lock(db.with_name(f"{db.name}.create.lock")):
            yield
        return
    import sqlalchemy
    import sqlalchemy.pool

    engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool,
                                      connect_args={"connect_timeout": connect_timeout})
    try:
        with engine.connect() as con:
            con.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": _CREATE_KEY})
            con.commit()
            try:
                yield
            finally:
                with contextlib.suppress(Exception):  # closing the session releases it anyway
                    con.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"),
                                {"k": _CREATE_KEY})
                    con.commit()
    finally:
        engine.dispose()


class AtomicFileSystemArtifactStore(FileSystemArtifactStore):
    """Optuna's file-system artifact store, writing each artifact atomically: a temporary file
    beside it, renamed when complete and removed when the write fails (a full disk leaves no
    partial artifact)."""

    def write(self, artifact_id: str, content_body: BinaryIO) -> None:
        from data_prep.cache import atomic_write  # here: importing data_prep imports torch

        target = Path(self._get_filepath(artifact_id))

        def copy(f: BinaryIO) -> None:
            shutil.copyfileobj(content_body, f)
            f.flush()
            os.fsync(f.fileno())

        try:
            atomic_write(target, copy)
        except OSError as err:
            if err.filename is None:  # name the file at fault
                raise OSError(err.errno, err.strerror, str(target)) from err
            raise


# --- a lock around "decide, then ask" so that parallel workers never pick one grid point twice --

class ClaimLock:
    """Mutual exclusion among all workers of one study, across processes and machines.

    PostgreSQL: a session advisory lock, on a connection of the storage's own pool when given
    (released by the server if the worker dies).  SQLite: ``flock`` on a file beside the
    database.  Journal: Optuna's NFS-safe open lock.  Taking the PostgreSQL lock is retried
    through a database outage for up to ``max_wait`` seconds (see :mod:`hpo.resilience`).

    ``with lock() as held:`` gives a :class:`HeldLock`.  A PostgreSQL server that restarts
    drops every session lock, so another worker can take this one while its holder still works
    under it: the holder asks ``held.still_held()`` right before it writes what it decided.
    """

    def __init__(self, url: str, study_name: str, engine=None,
                 max_wait: float | None = None) -> None:
        self.url = normalize_url(url)
        self.study_name = study_name
        self.engine = engine
        self.max_wait = max_wait if max_wait is not None else outage_wait()

    def _connect(self):
        if self.engine is not None:
            return self.engine.connect()
        import sqlalchemy

        self.engine = sqlalchemy.create_engine(self.url, pool_size=1, max_overflow=1,
                                               pool_pre_ping=True,
                                               connect_args={"connect_timeout": 10})
        return self.engine.connect()

    def _pg_lock(self, key: int):
        import sqlalchemy

        con = self._connect()
        try:
            con.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": key})
        except BaseException:
            with contextlib.suppress(Exception):
                con.invalidate()
            raise
        return con

    @contextlib.contextmanager
    def __call__(self) -> Iterator[HeldLock]:
        if self.url.startswith("postgresql"):
            import sqlalchemy

            key = _lock_key(self.study_name)
            shown = mask_url(self.url)
            try:
                con = retry_outage(lambda: self._pg_lock(key), shown=shown,
                                   what="taking the claim lock", max_wait=self.max_wait)
            except StorageError:
                raise
            except Exception as err:
                raise StorageError(f"storage {shown}: lock failed ({first_line(err)})") from None
            try:
                yield HeldLock(con)
            finally:
                try:
                    con.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": key})
                    con.rollback()
                    con.close()
                except Exception:  # a session lock must not go back to the pool: drop it
                    with contextlib.suppress(Exception):
                        con.invalidate()
        elif self.url.startswith("journal:///"):
            from optuna.storages.journal import JournalFileOpenLock

            lock = JournalFileOpenLock(f"{_path_of(self.url, 'journal:///')}."
                                       f"{self.study_name}.claim")
            lock.acquire()
            try:
                yield HeldLock()
            finally:
                lock.release()
        else:
            db = _path_of(self.url, "sqlite:///")
            with _file_lock(db.with_name(f"{db.name}.{self.study_name}.lock")):
                yield HeldLock()


class HeldLock:
    """A taken :class:`ClaimLock`: ``con`` is the PostgreSQL session that holds it (None: a
    file lock, which this process holds until it lets go)."""

    def __init__(self, con=None) -> None:
        self.con = con

    def still_held(self) -> bool:
        """Whether the lock is still this process's: False when the PostgreSQL session that
        took it is gone (a server restart or a dropped connection releases its locks)."""
        if self.con is None:
            return True
        import sqlalchemy

        try:
            return bool(self.con.execute(sqlalchemy.text(
                "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND "
                "pid = pg_backend_pid() AND granted)")).scalar())
        except Exception:  # the session is gone, and its lock with it
            return False
