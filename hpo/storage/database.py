"""Opening a study storage: SQLite (default), PostgreSQL, or Optuna's journal file for shared
file systems, with damaged or locked databases turned into one clear :class:`StorageError`."""

from __future__ import annotations

import contextlib
import os
import random
import sqlite3
import time
import warnings
from pathlib import Path

import optuna
from optuna.storages import BaseStorage

from hpo.storage.home import _path_of, mask_url, normalize_url
from hpo.storage.journal import HeartbeatJournalStorage, SafeJournalFileBackend, SafeJournalStorage
from hpo.storage.locks import _creation_lock
from hpo.storage.optuna_private import cached, optuna_table_names
from hpo.storage.resilience import ResilientStorage, first_line, outage_wait, retry_outage
from hpo.storage.stale import _retry_callback
from model.errors import StorageError

__all__ = ["StorageError", "open_storage", "sqlite_problem", "study_databases"]


def open_storage(url: str, *, heartbeat_interval: int | None = 30, grace_period: int | None = 120,
                 max_retry: int | None = 3, connect_timeout: int = 10,
                 max_wait: float | None = None) -> BaseStorage:
    """An Optuna storage for ``url`` with heartbeats and the retry callback.

    With heartbeats (a worker's storage), a SQLite or PostgreSQL storage rides out database
    outages: every call is retried with back-off for up to ``max_wait`` seconds (default
    ``$SPECOPT_OUTAGE_WAIT``, else :data:`hpo.storage.resilience.DEFAULT_MAX_WAIT`, 600 s), see
    :class:`hpo.storage.resilience.ResilientStorage`.  The tables of a fresh database are created
    by one
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
        if not heartbeat_interval and path.is_file():
            # a reader (no heartbeats) never writes Optuna's tables into another file
            problem = sqlite_problem(path)
            if problem is not None:
                raise StorageError(f"storage {shown}: {path} is {problem}")
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
    kwargs: dict = {"heartbeat_interval": heartbeat_interval, "grace_period": grace_period,
                    "heartbeat_stale_trial_callback": callback}
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
    return ResilientStorage(cached(rdb), shown=shown, max_wait=max_wait,
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


def sqlite_problem(path: Path) -> str | None:
    """Why the SQLite file ``path`` is no study storage, with what to do (None: it is one,
    i.e. it holds Optuna's tables and no other program's).  Read-only and cheap: one query of
    the file's table names, nothing created or changed."""
    try:
        with contextlib.closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro",
                                                uri=True, timeout=5)) as con:
            tables = {r[0] for r in con.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND "
                "name NOT LIKE 'sqlite\\_%' ESCAPE '\\'")}
    except sqlite3.DatabaseError as err:
        code = getattr(err, "sqlite_errorcode", 0) or 0
        if code & 0xFF == _SQLITE_NOTADB:
            return ("not a SQLite database: give a study's .db file, or restore this one from a "
                    "backup")
        return None  # locked, unreadable: opening it says what is wrong
    fix = "give a study's storage, e.g. sqlite:///runs/STUDY.db"
    if {"experiments", "runs", "metrics"} <= tables:
        return ("an MLflow tracking store (specopt export-mlflow writes one), not a study "
                f"storage: browse it with `mlflow ui --backend-store-uri sqlite:///{path}`; "
                + fix)
    foreign = sorted(tables - optuna_table_names())
    if foreign:
        return (f"not a specopt (Optuna) storage: it holds another program's tables "
                f"({', '.join(foreign[:5])}); {fix}")
    if "studies" not in tables:
        return f"an empty SQLite database, not a study storage (no study was created in it); {fix}"
    return None


def study_databases(folder: Path) -> list[Path]:
    """The ``*.db`` files of ``folder`` that are study storages (:func:`sqlite_problem`):
    an MLflow store, an empty or foreign database there is no study."""
    if not folder.is_dir():
        return []
    return [p for p in sorted(folder.glob("*.db")) if p.is_file() and sqlite_problem(p) is None]


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
                if tables - optuna_table_names():
                    raise StorageError(f"storage {shown}: {path} is {sqlite_problem(path)}")
                con.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as err:
            if "locked" not in str(err) or time.monotonic() > deadline:
                raise
            time.sleep(0.05 + 0.1 * random.random())

