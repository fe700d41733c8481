"""A trial continues from its last saved epoch on another worker (issue 9).

Real worker processes (``python -m hpo.cli worker``), killed at an exact point through
``hpo.faults`` (``SPECOPT_FAULT``): SIGKILL at the end of epoch 3 (after its state save), or a
SIGTERM there with a save interval of an hour (a signal always saves); another worker finishes
the trial from the saved state. And a retry never shows its dead attempt's artifacts.
Tiny real trainings (200 molecules), heartbeat every 1 s, grace 3 s.
"""

from __future__ import annotations

import signal

import optuna
import pytest
from optuna.artifacts import FileSystemArtifactStore, get_all_artifact_meta
from optuna.trial import TrialState

import hpo
from hpo.execution.launch import warm_cache
from hpo.execution.objective import objective
from hpo.report.data import history_of
from hpo.storage.database import open_storage
from hpo.study.config import study_config_from_dict
from hpo.study.create import open_study
from model.contract import Status, TrialAttr
from model.errors import ConfigError, TrainingFailed, WorkerInterrupted
from tests.support import run_worker_to_end, small_study_config, study_trials, write_study

pytestmark = [pytest.mark.slow,  # real worker processes, killed and restarted
              pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")]

EPOCHS = 6


def _study(tmp_path, url, name, save_interval):
    path = write_study(tmp_path / "resume.toml", name, storage=url, heartbeat=(1, 3),
                       artifacts=tmp_path / "art",
                       space={"loss": ["rmse"], "epochs": EPOCHS, "subset": 200, "lr": 1e-4})
    path.write_text(path.read_text() + f"[resume]\nsave_interval = {save_interval}\n")
    warm_cache(hpo.load_study_config(path))
    return path


def _run(path, log, fault, monkeypatch, expect):
    if fault:
        monkeypatch.setenv("SPECOPT_FAULT", fault)
    else:
        monkeypatch.delenv("SPECOPT_FAULT", raising=False)
    code = run_worker_to_end(path, log=log, timeout=240)
    assert code == expect, log.read_text()


@pytest.mark.parametrize("fault,interval,killed_code", [
    ("epoch_end_3", 0, -signal.SIGKILL),
    ("epoch_end_3:SIGTERM", 3600, 130),
])
@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_retry_continues_from_the_saved_epoch(tmp_path, monkeypatch, kind, fault, interval,
                                               killed_code):
    url = (f"sqlite:///{tmp_path}/resume.db" if kind == "sqlite"
           else f"journal:///{tmp_path}/resume.log")
    path = _study(tmp_path, url, "resume", interval)
    logs = [tmp_path / "w0.log", tmp_path / "w1.log"]
    _run(path, logs[0], fault, monkeypatch, killed_code)
    assert (tmp_path / "art" / "state" / "0" / "state.pt").is_file()
    _run(path, logs[1], None, monkeypatch, 0)

    trials = study_trials("resume", url)
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.COMPLETE]
    dead, done = trials
    assert dead.user_attrs[TrialAttr.ORIGIN] == 0 == done.user_attrs[TrialAttr.ORIGIN]
    # the pruner's view: every epoch once, the first three as the dead attempt reported them
    assert sorted(done.intermediate_values) == list(range(1, EPOCHS + 1))
    assert all(done.intermediate_values[e] == dead.intermediate_values[e] for e in (1, 2, 3))
    assert done.user_attrs[TrialAttr.RESUMED_FROM] == {"trial": 0, "epoch": 3}
    assert done.user_attrs[TrialAttr.EPOCHS_TRAINED] == EPOCHS - 3  # only the rest trained
    assert done.user_attrs[TrialAttr.EPOCHS_RUN] == EPOCHS
    assert TrialAttr.HISTORY not in done.user_attrs  # compact: history.json holds it
    store = FileSystemArtifactStore(str(tmp_path / "art"))
    assert [h["epoch"] for h in history_of(done, open_study("resume", url).study,
                                           store)] == list(range(1, 7))
    assert "trial 1 continues trial 0 from epoch 3" in logs[1].read_text()
    assert not (tmp_path / "art" / "state" / "0").exists()  # removed once complete


@pytest.fixture(scope="module")
def artifact_chain(tmp_path_factory):
    """Attempt 0 dies right after recording its artifacts, attempt 1 dies mid-training (no
    state: an hour's save interval), attempt 2 completes."""
    tmp_path = tmp_path_factory.mktemp("arts")
    url = f"sqlite:///{tmp_path}/arts.db"
    path = _study(tmp_path, url, "arts", 3600)
    with pytest.MonkeyPatch.context() as monkeypatch:
        for i, (fault, code) in enumerate([("after_upload", -signal.SIGKILL),
                                           ("epoch_end_1", -signal.SIGKILL), (None, 0)]):
            _run(path, tmp_path / f"w{i}.log", fault, monkeypatch, code)
    return study_trials("arts", url), open_storage(url, heartbeat_interval=None)


def test_a_retry_shows_only_its_own_artifacts(artifact_chain):
    trials, storage = artifact_chain
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.FAIL, TrialState.COMPLETE]
    first, second, third = trials
    dead_ids = set(first.user_attrs[TrialAttr.ARTIFACTS].values())  # it uploaded, then died
    assert dead_ids
    for key in (TrialAttr.ARTIFACTS, TrialAttr.METRICS, TrialAttr.STATUS):
        assert second.user_attrs.get(key) is None, key  # not attempt 0's
    ids = set(third.user_attrs[TrialAttr.ARTIFACTS].values())
    assert len(ids) == 3 and not ids & dead_ids
    assert ids <= {m.artifact_id for m in get_all_artifact_meta(third, storage=storage)}
    assert third.user_attrs[TrialAttr.STATUS] == Status.COMPLETED
    assert third.user_attrs[TrialAttr.EPOCHS_TRAINED] == EPOCHS  # nothing saved to continue
    assert third.user_attrs[TrialAttr.ORIGIN] == 0


def test_a_retry_inherits_no_artifact_records(artifact_chain):
    trials, storage = artifact_chain
    third = trials[2]
    own = {m.artifact_id for m in get_all_artifact_meta(third, storage=storage)}
    assert own == set(third.user_attrs[TrialAttr.ARTIFACTS].values())


def test_save_interval_setting(tmp_path):
    base = {"name": "s", "sampler": {"name": "grid"}, "space": {"loss": ["rmse"]}}
    assert study_config_from_dict(base).resume.save_interval == 60
    cfg = study_config_from_dict({**base, "resume": {"save_interval": 0}})
    assert cfg.resume.save_interval == 0
    assert cfg.override(save_interval=5).resume.save_interval == 5
    with pytest.raises(ConfigError, match="save_interval"):
        study_config_from_dict({**base, "resume": {"save_interval": -1}})


class _Prune(optuna.pruners.BasePruner):
    def prune(self, study, trial) -> bool:
        return True


def test_objective_keeps_and_removes_states(tmp_path):
    """In process: a signal keeps the state (epoch 1), a trial of the same origin continues it
    and removes it when complete; pruned and diverged trials leave no state."""
    cfg = small_study_config(tmp_path, "objstates", {"epochs": 3}, 5,
                             resume={"save_interval": 0})
    store = FileSystemArtifactStore(str(tmp_path / "art"))
    study = optuna.create_study(storage=f"sqlite:///{tmp_path}/o.db", study_name="o")
    first = study.ask()
    with pytest.raises(WorkerInterrupted):
        objective(first, cfg, artifact_store=store, should_stop=lambda: True)
    assert (tmp_path / "art" / "state" / "0" / "state.pt").is_file()
    study.tell(first, state=TrialState.FAIL)

    study.enqueue_trial({}, user_attrs={TrialAttr.ORIGIN: 0})
    second = study.ask()
    objective(second, cfg, artifact_store=store)
    done = study._storage.get_trial(second._trial_id)
    assert sorted(done.intermediate_values) == [1, 2, 3]
    assert done.user_attrs[TrialAttr.EPOCHS_TRAINED] == 2
    assert done.user_attrs[TrialAttr.RESUMED_FROM] == {"trial": 0, "epoch": 1}
    assert not (tmp_path / "art" / "state" / "0").exists()

    pruning = optuna.create_study(storage=f"sqlite:///{tmp_path}/p.db", study_name="p",
                                  pruner=_Prune())
    with pytest.raises(optuna.TrialPruned):
        objective(pruning.ask(), cfg, artifact_store=store)
    diverging = cfg.override({"space.lr": 1e6})
    with pytest.raises(TrainingFailed):
        objective(pruning.ask(), diverging, artifact_store=store)
    assert not (tmp_path / "art" / "state").exists() or \
        not any((tmp_path / "art" / "state").iterdir())
