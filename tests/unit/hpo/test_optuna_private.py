"""hpo.storage.optuna_private against the installed Optuna: each private name it relies on is
there with the shape it uses, and does what it expects.  A failure here after an Optuna upgrade
means fault tolerance (heartbeats, stale trials, the journal, outage retries) must be checked
against the new release before the pin in pyproject.toml moves."""

from __future__ import annotations

import inspect
import json
import os
import tomllib
from pathlib import Path

import optuna
import pytest
import sqlalchemy.orm
from optuna.trial import TrialState
from packaging.requirements import Requirement

from hpo.storage import optuna_private as op

ROOT = Path(__file__).resolve().parents[3]
pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning",
                                        "ignore:Heartbeat of storage:UserWarning")


def _params(fn) -> list[str]:
    return list(inspect.signature(fn).parameters)


def test_the_installed_optuna_is_within_the_pin():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    pin = next(Requirement(d) for d in deps if Requirement(d).name == "optuna")
    assert pin.specifier.contains(optuna.__version__), (optuna.__version__, str(pin))
    assert "<" in str(pin.specifier), "no upper bound: an upgrade would go unchecked"


def test_the_private_names_have_the_shapes_used():
    from optuna.storages._heartbeat import BaseHeartbeat
    from optuna.storages.journal import JournalFileBackend, JournalStorage
    from optuna.storages.journal._file import get_lock_file

    assert "_get_stale_trial_ids" in BaseHeartbeat.__abstractmethods__
    assert _params(BaseHeartbeat._get_stale_trial_ids) == ["self", "study_id"]
    assert _params(optuna.storages._CachedStorage) == ["backend"]
    assert _params(get_lock_file) == ["lock_obj"]
    assert _params(JournalFileBackend) == ["file_path", "lock_obj"]
    assert _params(JournalStorage._sync_with_backend) == ["self"]
    body = inspect.getsource(JournalStorage._sync_with_backend)  # JournalStorageBase restates it
    assert "read_logs(self._replay_result.log_number_read)" in body and "apply_logs" in body
    assert _params(optuna.artifacts.FileSystemArtifactStore._get_filepath) == \
        ["self", "artifact_id"]
    # public, but only in this range: the keyword open_storage gives the retry callback by
    assert "heartbeat_stale_trial_callback" in _params(optuna.storages.RDBStorage)
    models = op.rdb_models()
    sqlalchemy.orm.configure_mappers()  # TrialModel.heartbeats is a backref, set up by this
    for column in ("_datetime_start_utc", "trial_id", "study_id", "state", "heartbeats"):
        assert hasattr(models.TrialModel, column), column


def test_study_and_trial_ids_round_trip():
    study = optuna.create_study(study_name="s")
    trial = study.ask()
    storage = op.study_storage(study)
    assert isinstance(storage, optuna.storages.BaseStorage)
    assert storage.get_trial(op.trial_id(trial)).number == trial.number
    assert op.trial_id(study.trials[0]) == op.trial_id(trial)  # a FrozenTrial's too
    assert storage.get_study_name_from_id(op.study_id(study)) == "s"


def test_the_rdb_storage_under_the_cache_its_tables_and_silent_trials(tmp_path):
    rdb = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 's.db'}", heartbeat_interval=60,
                                     grace_period=120)
    storage = op.cached(rdb)
    assert op.uncached(storage) is rdb and op.uncached(rdb) is rdb
    assert op.is_heartbeat_storage(storage)
    assert not op.is_heartbeat_storage(optuna.storages.InMemoryStorage())
    tables = {t for (t,) in rdb.engine.connect().exec_driver_sql(
        "SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert "trial_heartbeats" in tables and tables <= op.optuna_table_names()

    study = optuna.create_study(storage=storage)
    tid = op.trial_id(study.ask())
    sid = op.study_id(study)
    assert op.silent_trial_ids(rdb, sid, grace=-1) == [tid]  # started before "1 s from now"
    assert op.silent_trial_ids(rdb, sid, grace=3600) == []
    rdb.record_heartbeat(tid)
    assert op.silent_trial_ids(rdb, sid, grace=-1) == []  # it has a heartbeat now
    assert op.stale_trial_ids_of(storage, sid) == []


class _AllStale(optuna.storages.InMemoryStorage, op.HeartbeatStorage):
    def record_heartbeat(self, trial_id: int) -> None:
        pass

    def stale_trial_ids(self, study_id: int) -> list[int]:
        return [op.trial_id(t) for t in self.get_all_trials(study_id, states=(TrialState.RUNNING,))]

    def get_heartbeat_interval(self) -> int | None:
        return 1

    def get_heartbeat_stale_trial_callback(self):
        return None


def test_optunas_fail_stale_trials_asks_our_hook():
    study = optuna.create_study(storage=_AllStale())
    trial = study.ask()
    assert op.stale_trial_ids_of(op.study_storage(study), op.study_id(study)) == \
        [op.trial_id(trial)]
    optuna.storages.fail_stale_trials(study)
    assert study.trials[0].state == TrialState.FAIL


def test_the_journal_file_its_lock_and_the_replay_hook(tmp_path):
    path = str(tmp_path / "j.log")
    backend = op.JournalFile(path)
    assert backend.file_path == path
    with backend.locked():
        assert os.path.lexists(path + ".lock")  # Optuna's symlink lock, held
    assert not os.path.lexists(path + ".lock")

    optuna.create_study(storage=optuna.storages.JournalStorage(backend), study_name="s")
    with open(path, "a") as f:
        f.write(json.dumps({"op_code": 999, "worker_id": "another"}) + "\n")
    assert 0 in op.JOURNAL_OPERATIONS and 999 not in op.JOURNAL_OPERATIONS
    seen = []

    class Recording(op.JournalStorageBase):
        def replay_failed(self, err, record, line, own_write):
            seen.append((record, line, own_write, self.journal_path))

    with pytest.raises(Exception):  # noqa: B017 - Optuna's own error, let through
        Recording(op.JournalFile(path))
    assert seen == [({"op_code": 999, "worker_id": "another"}, 2, False, path)]  # line 2


def test_the_artifact_store_folder_and_files(tmp_path):
    store = op.FileArtifactStore(str(tmp_path))
    assert store.artifact_file("abc") == tmp_path / "abc"
    with pytest.raises(ValueError):
        store.artifact_file("../outside")
    assert Path(op.artifact_store_folder(store)) == tmp_path
    assert op.artifact_store_folder(object()) is None


def test_the_retry_callbacks_budget():
    assert op.RetryCallback(max_retry=2).max_retry == 2
    assert op.RetryCallback().max_retry is None
