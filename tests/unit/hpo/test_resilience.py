"""hpo.storage.resilience: retries through outages, read-back of committed writes, one clear
line."""

from __future__ import annotations

import logging

import optuna
import pytest
import sqlalchemy.exc
from optuna.trial import TrialState

from hpo.storage import resilience
from hpo.storage.resilience import ResilientStorage, is_outage
from model.errors import StorageError


def _down() -> Exception:
    """What Optuna raises when the server is gone: its misleading wrapper around the cause."""
    cause = sqlalchemy.exc.OperationalError("SELECT 1", {}, Exception(
        'connection to server at "127.0.0.1", port 5 failed: Connection refused'))
    try:
        raise optuna.exceptions.StorageInternalError("... e.g. exceeding max length.") from cause
    except optuna.exceptions.StorageInternalError as err:
        return err


@pytest.fixture(autouse=True)
def _fast(monkeypatch):
    monkeypatch.setattr(resilience, "FIRST_DELAY", 0.01)
    monkeypatch.setattr(resilience, "MAX_DELAY", 0.02)
    monkeypatch.setattr(resilience, "LOG_EVERY", 0.0)


class Flaky:
    """An in-memory storage whose calls fail ``n`` times first (optionally after committing)."""

    def __init__(self, n: int, commit_first: bool = False) -> None:
        self.real = optuna.storages.InMemoryStorage()
        self.n = n
        self.commit_first = commit_first
        self.calls = 0

    def __getattr__(self, name):
        method = getattr(self.real, name)

        def call(*args, **kwargs):
            self.calls += 1
            if self.n > 0:
                self.n -= 1
                if self.commit_first:
                    method(*args, **kwargs)
                raise _down()
            return method(*args, **kwargs)
        return call


def test_outage_errors_are_told_from_bad_requests():
    assert is_outage(_down())
    bad = sqlalchemy.exc.OperationalError("x", {}, Exception("no such table: trials"))
    assert not is_outage(bad)
    assert not is_outage(ValueError("value too long"))


def test_calls_are_retried_until_the_database_answers(caplog):
    inner = Flaky(3)
    storage = ResilientStorage(inner, shown="postgresql+psycopg://u:***@h/db", max_wait=5)
    with caplog.at_level(logging.WARNING, logger="specopt.storage"):
        sid = storage.create_new_study([optuna.study.StudyDirection.MINIMIZE], "s")
    assert storage.get_study_name_from_id(sid) == "s"
    lines = [r.getMessage() for r in caplog.records]
    assert any("storage postgresql+psycopg://u:***@h/db unreachable" in m and "retrying in" in m
               and "of 5 s" in m for m in lines), lines
    assert any("reachable again" in m for m in lines), lines


def test_a_write_that_committed_before_the_connection_dropped_is_not_applied_twice():
    inner = Flaky(0)
    storage = ResilientStorage(inner, shown="db", max_wait=5)
    sid = storage.create_new_study([optuna.study.StudyDirection.MINIMIZE], "s")
    tid = storage.create_new_trial(sid)
    inner.n, inner.commit_first = 1, True  # the COMPLETE commits, then the answer is lost
    assert storage.set_trial_state_values(tid, TrialState.COMPLETE, [1.0])  # no UpdateFinished
    assert storage.get_trial(tid).state == TrialState.COMPLETE
    inner.n = 1  # the study was created by the lost attempt
    assert storage.create_new_study([optuna.study.StudyDirection.MINIMIZE], "t") == \
        storage.get_study_id_from_name("t")


def test_it_gives_up_with_one_line_after_max_wait():
    storage = ResilientStorage(Flaky(10**6), shown="postgresql+psycopg://u:***@h/db",
                               max_wait=0.2)
    with pytest.raises(StorageError, match=r"^storage postgresql\+psycopg://u:\*\*\*@h/db "
                       r"unreachable for \d+ s while reading the study: giving up"):
        storage.get_study_id_from_name("s")


def test_other_errors_are_not_retried():
    inner = Flaky(0)
    storage = ResilientStorage(inner, shown="db", max_wait=5)
    with pytest.raises(KeyError):
        storage.get_study_id_from_name("missing")
    assert inner.calls == 1
