"""The one door to Optuna's private API: every Optuna name that is not public (a leading
underscore, a private module) is used here and nowhere else in ``hpo/``, behind names of our
own (``tests/unit/test_architecture.py`` enforces it).

Fault tolerance rests on these: the trial and study ids behind Optuna's objects, its heartbeat
interface, the RDB storage under Optuna's cache and its tables, the journal file's lock and
replay, the artifact store's files and the retry callback's budget.  Optuna is pinned to the
minor release they were checked on (``pyproject.toml``), and
``tests/unit/hpo/test_optuna_private.py`` fails when an upgrade changes any of them.
"""

from __future__ import annotations

import abc
from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeGuard

import optuna
from optuna.artifacts import FileSystemArtifactStore
from optuna.storages import BaseStorage, JournalStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages._heartbeat import BaseHeartbeat
from optuna.storages.journal import JournalFileBackend
from optuna.storages.journal._file import get_lock_file
from optuna.storages.journal._storage import JournalOperation
from optuna.trial import FrozenTrial, TrialState

if TYPE_CHECKING:
    from types import ModuleType

__all__ = [
    "JOURNAL_OPERATIONS", "FileArtifactStore", "HeartbeatStorage", "JournalFile",
    "JournalStorageBase", "RetryCallback", "artifact_store_folder", "cached",
    "is_heartbeat_storage", "optuna_table_names", "rdb_models", "silent_trial_ids",
    "stale_trial_ids_of", "study_id", "study_storage", "trial_id", "uncached",
]


# --- studies and trials ---------------------------------------------------------------------

def study_storage(study: optuna.Study) -> BaseStorage:
    """The storage ``study`` reads and writes (with Optuna's cache, when it put one around it)."""
    return study._storage


def study_id(study: optuna.Study) -> int:
    """The storage's id of ``study``."""
    return study._study_id


def trial_id(trial: optuna.Trial | FrozenTrial) -> int:
    """The storage's id of a trial (its ``number`` counts within the study; storage calls take
    the id)."""
    return trial._trial_id


# --- storages ------------------------------------------------------------------------------

def cached(rdb: optuna.storages.RDBStorage) -> BaseStorage:
    """Optuna's cache around an RDB storage, as ``optuna.create_study(storage=URL)`` puts it."""
    return optuna.storages._CachedStorage(rdb)


def uncached(storage: BaseStorage) -> BaseStorage:
    """``storage`` without Optuna's cache around it (``storage`` itself when it has none)."""
    if isinstance(storage, optuna.storages._CachedStorage):
        return storage._backend
    return storage


def rdb_models() -> ModuleType:
    """Optuna's SQLAlchemy models of an RDB storage's tables."""
    from optuna.storages._rdb import models  # here: it imports SQLAlchemy

    return models


def optuna_table_names() -> set[str]:
    """The tables of an Optuna RDB storage, its schema-version table included."""
    return {*rdb_models().BaseModel.metadata.tables, "alembic_version"}


def silent_trial_ids(rdb: optuna.storages.RDBStorage, study_id: int,
                     grace: float) -> list[int]:
    """The ids of the RUNNING trials of study ``study_id`` in ``rdb`` that have no heartbeat row
    and started more than ``grace`` seconds ago (Optuna stores the asking client's clock as naive
    UTC)."""
    from datetime import UTC, datetime, timedelta

    models = rdb_models()
    cutoff = datetime.now(UTC).replace(tzinfo=None) - timedelta(seconds=grace)
    session = rdb.scoped_session()
    try:
        rows = (session.query(models.TrialModel.trial_id)
                .filter(models.TrialModel.study_id == study_id)
                .filter(models.TrialModel.state == TrialState.RUNNING)
                .filter(models.TrialModel._datetime_start_utc < cutoff)
                .filter(~models.TrialModel.heartbeats.any())
                .all())
        session.commit()
    except Exception:
        session.rollback()
        raise
    finally:
        session.close()
    return [r[0] for r in rows]


# --- heartbeats ----------------------------------------------------------------------------

def is_heartbeat_storage(storage: object) -> TypeGuard[BaseHeartbeat]:
    """Whether ``storage`` records heartbeats (Optuna's RDB storage, ours of the journal)."""
    return isinstance(storage, BaseHeartbeat)


def stale_trial_ids_of(storage: BaseStorage, study_id: int) -> list[int]:
    """The trials of ``study_id`` that ``storage`` (a heartbeat storage) finds stale."""
    return storage._get_stale_trial_ids(study_id)  # type: ignore[attr-defined]


class HeartbeatStorage(BaseHeartbeat):
    """Optuna's heartbeat interface for a storage of ours: implement :meth:`stale_trial_ids`
    (Optuna's ``fail_stale_trials`` asks its private name) and Optuna's public methods
    (``record_heartbeat``, ``get_heartbeat_interval``,
    ``get_heartbeat_stale_trial_callback``)."""

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        return self.stale_trial_ids(study_id)

    @abc.abstractmethod
    def stale_trial_ids(self, study_id: int) -> list[int]:
        """The ids of the study's RUNNING trials whose worker is presumed dead."""


# --- the journal file ----------------------------------------------------------------------

class JournalFile(JournalFileBackend):
    """Optuna's journal file backend, with names of our own for what a subclass uses of it."""

    @property
    def file_path(self) -> str:
        return self._file_path

    def locked(self) -> AbstractContextManager[None]:
        """Optuna's lock of the file (shared by every process appending to it), held."""
        return get_lock_file(self._lock)


#: The operation codes of Optuna's journal records.
JOURNAL_OPERATIONS = frozenset(JournalOperation)


class JournalStorageBase(JournalStorage):
    """Optuna's journal storage, telling :meth:`replay_failed` about a record its replay of the
    file could not apply."""

    def _sync_with_backend(self) -> None:  # Optuna's, with the record being applied tracked
        result = self._replay_result
        current: list = [None]

        def tracked() -> Iterator[Any]:
            for log in self._backend.read_logs(result.log_number_read):
                current[0] = log
                yield log

        try:
            result.apply_logs(tracked())
        except Exception as err:
            record = current[0]
            own = isinstance(record, dict) and record.get("worker_id") == result.worker_id
            self.replay_failed(err, record, result.log_number_read, own)
            raise

    @property
    def journal_path(self) -> str:
        """The journal's file ("?" for another backend)."""
        return getattr(self._backend, "_file_path", "?")

    def replay_failed(self, err: Exception, record: Any, line: int, own_write: bool) -> None:
        """Called (inside the ``except``) when replaying ``record``, the journal's ``line``
        (1-based), raised ``err``; ``own_write``: a record of this process's (Optuna refusing
        its own write, a signal to its caller).  Raise the error to report instead; returning
        lets ``err`` through."""


# --- artifacts and retries -----------------------------------------------------------------

class FileArtifactStore(FileSystemArtifactStore):
    """Optuna's file-system artifact store, with our name for the file of an artifact."""

    def artifact_file(self, artifact_id: str) -> Path:
        """The file of ``artifact_id`` (checked by Optuna to lie inside the store's folder)."""
        return Path(self._get_filepath(artifact_id))


def artifact_store_folder(store: object) -> str | Path | None:
    """The folder of a file-system artifact store (None: another kind of store)."""
    return getattr(store, "_base_path", None)


class RetryCallback(RetryHeartbeatStaleTrialCallback):
    """Optuna's retry callback for trials whose worker died, with its retry budget readable."""

    @property
    def max_retry(self) -> int | None:
        return self._max_retry

