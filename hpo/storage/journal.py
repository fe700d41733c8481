"""Optuna's journal file, read safely: a damaged line is one :class:`StorageError` naming it,
a cut last line is read up to it, and heartbeats work on the journal too."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import time
from collections.abc import Callable, Generator
from typing import Any

from optuna.trial import TrialState

from hpo.storage.optuna_private import (
    JOURNAL_OPERATIONS,
    HeartbeatStorage,
    JournalFile,
    JournalStorageBase,
    trial_id,
)
from model.errors import StorageError


def _bad_journal_line(path: str, line: int, why: str) -> StorageError:
    """The error for a journal whose record on ``line`` (1-based) cannot be read: its lines
    before it can, and how to keep them."""
    keep = line - 1
    return StorageError(
        f"storage journal:///{path}: line {line} of the journal is not a record specopt can "
        f"read ({why[:200]}); its first {keep} line(s) are: keep them with `head -n {keep} "
        f"{path} > {path}.recovered` and use journal:///{path}.recovered, or restore the file "
        "from a backup")


class SafeJournalFileBackend(JournalFile):
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
            raise _bad_journal_line(self.file_path, line + 1, "not UTF-8 text") from None
        except json.JSONDecodeError as err:
            raise _bad_journal_line(self.file_path, line + 1, f"not JSON: {err}") from None
        except ValueError as err:  # Optuna's "Invalid log format." (a cut line, more after it)
            raise _bad_journal_line(self.file_path, line + 1, str(err)) from None

    def append_logs(self, logs: list[dict]) -> None:
        data = ("\n".join(json.dumps(log, separators=(",", ":")) for log in logs) + "\n"
                ).encode("utf-8")
        with self.locked():
            fd = os.open(self.file_path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                size = _complete_size(fd)
                os.lseek(fd, size, os.SEEK_SET)
                try:
                    written = os.write(fd, data)
                    if written != len(data):
                        raise OSError(errno.ENOSPC, "short write (disk full?)", self.file_path)
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


class SafeJournalStorage(JournalStorageBase):
    """Optuna's journal storage whose replay of a record it cannot apply (an unknown operation,
    a missing field, no JSON object) is a :class:`StorageError` naming the record's line."""

    def replay_failed(self, err: Exception, record: Any, line: int, own_write: bool) -> None:
        if isinstance(err, StorageError | OSError) or own_write:
            return  # own_write: this process's own write refused (Optuna's signal to its caller)
        if not isinstance(record, dict):
            why = "not a JSON object"
        elif record.get("op_code") not in JOURNAL_OPERATIONS:
            why = f"unknown operation {record.get('op_code')!r}"
        elif isinstance(err, KeyError):
            why = f"field {err} missing"
        else:  # a field of the wrong type
            why = f"{type(err).__name__}: {err}"
        raise _bad_journal_line(self.journal_path, line, why) from None


class HeartbeatJournalStorage(SafeJournalStorage, HeartbeatStorage):
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

    def stale_trial_ids(self, study_id: int) -> list[int]:
        now = time.time()
        stale = []
        for t in self.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,)):
            last = t.system_attrs.get(self.KEY)
            if last is None:
                last = t.datetime_start.timestamp() if t.datetime_start else now
            if now - last > self._hb_grace:
                stale.append(trial_id(t))
        return stale

    def get_heartbeat_interval(self) -> int | None:
        return self._hb_interval

    def get_heartbeat_stale_trial_callback(self):
        return self._hb_callback
