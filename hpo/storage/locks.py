"""Locks between workers: the creation lock (one process creates a storage's tables) and the
claim locks that keep two workers off one trial."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
from collections.abc import Iterator
from pathlib import Path

from hpo.storage.home import _path_of, mask_url, normalize_url
from hpo.storage.resilience import first_line, outage_wait, retry_outage
from model.errors import StorageError


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


class ClaimLock:
    """Mutual exclusion among all workers of one study, across processes and machines.

    PostgreSQL: a session advisory lock, on a connection of the storage's own pool when given
    (released by the server if the worker dies).  SQLite: ``flock`` on a file beside the
    database.  Journal: Optuna's NFS-safe open lock.  Taking the PostgreSQL lock is retried
    through a database outage for up to ``max_wait`` seconds (see :mod:`hpo.storage.resilience`).

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

