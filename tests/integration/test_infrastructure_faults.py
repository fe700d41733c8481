"""Infrastructure faults in real worker processes: not the configuration's fault, so they must
not use up the budget.  A missing dataset file, a read-only artifact folder and a full disk
(real tmpfs mounts: the tests run as root) stop the worker with one ``error:`` line naming the
file and the fix (exit status 3); the trial is re-queued, the study's finished count stays 0,
and once the fault is fixed a new worker completes the trial.  Full disk: no partial artifact
and nothing left RUNNING.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest
from optuna.trial import TrialState

import hpo
from hpo.execution.launch import warm_cache
from hpo.study.budget import budget_state
from model.contract import Status, TrialAttr
from tests.support import run_worker_to_end, study_trials, write_study

pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")

SPACE = {"loss": ["rmse"], "epochs": 2, "subset": 200, "lr": 1e-4}


def _error_lines(log) -> list[str]:
    return [line for line in log.read_text().splitlines() if line.startswith("error:")]


def _finished(path) -> int:
    cfg = hpo.load_study_config(path)
    study = hpo.create_study(cfg)
    return budget_state(study, cfg, cfg.n_trials).finished


def _stopped_and_requeued(path, url, name, log, words: str) -> None:
    assert run_worker_to_end(path, log=log) == 3, log.read_text()
    [line] = _error_lines(log)  # one line, no traceback
    assert words in line and "re-queued" in line, line
    assert "Traceback" not in log.read_text()
    trials = study_trials(name, url)
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.WAITING]
    assert trials[0].user_attrs[TrialAttr.STATUS] == Status.INTERRUPTED
    assert _finished(path) == 0  # the budget is left alone


def _completes_after_the_fix(path, url, name, log) -> None:
    assert run_worker_to_end(path, log=log) == 0, log.read_text()
    trials = study_trials(name, url)
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.COMPLETE]
    assert trials[1].params == trials[0].params
    assert _finished(path) == 1


@pytest.mark.slow
def test_a_missing_dataset_file_stops_the_worker_and_leaves_the_budget(tmp_path):
    from data_prep.dataset import BUNDLED_PATH

    url, name = f"sqlite:///{tmp_path}/infra.db", "infra"
    dataset = tmp_path / "data" / "levels.npz"
    path = write_study(tmp_path / "s.toml", name, storage=url, artifacts=tmp_path / "art",
                       dataset=str(dataset), space=SPACE)
    log = tmp_path / "w.log"
    _stopped_and_requeued(path, url, name, log, str(dataset))
    dataset.parent.mkdir()
    shutil.copy(BUNDLED_PATH, dataset)  # the fix
    _completes_after_the_fix(path, url, name, log)


def test_a_read_only_artifact_folder_stops_the_worker_and_leaves_the_budget(tmp_path, mount_tmpfs):
    url, name = f"sqlite:///{tmp_path}/infra.db", "infra"
    art = mount_tmpfs(tmp_path / "art", "ro,size=4m")
    path = write_study(tmp_path / "s.toml", name, storage=url, artifacts=art, space=SPACE)
    warm_cache(hpo.load_study_config(path))
    log = tmp_path / "w.log"
    _stopped_and_requeued(path, url, name, log, "Read-only file system")
    subprocess.run(["mount", "-o", "remount,rw", str(art)], check=True)  # the fix
    _completes_after_the_fix(path, url, name, log)


def test_a_full_disk_under_sqlite_and_artifacts(tmp_path, mount_tmpfs):
    disk = mount_tmpfs(tmp_path / "disk", "size=2m")
    url, name = f"sqlite:///{disk}/infra.db", "infra"
    path = write_study(tmp_path / "s.toml", name, storage=url, artifacts=disk / "art",
                       space=SPACE)
    cfg = hpo.load_study_config(path)
    warm_cache(cfg)
    hpo.create_study(cfg)
    (disk / "art").mkdir()
    fd = os.open(disk / "filler", os.O_WRONLY | os.O_CREAT)  # leave about 200 KB
    os.write(fd, b"\0" * (os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize - 200_000))
    os.close(fd)
    log = tmp_path / "w.log"
    code = run_worker_to_end(path, log=log)
    assert code == 3, log.read_text()
    [line] = _error_lines(log)
    assert "No space left on device" in line and "free disk space" in line, line
    assert not [p for p in (disk / "art").iterdir() if p.name.endswith(".tmp")]  # no partial
    (disk / "filler").unlink()  # the fix
    assert run_worker_to_end(path, log=log) == 0, log.read_text()
    trials = study_trials(name, url)
    assert TrialState.RUNNING not in {t.state for t in trials}
    assert [t.state for t in trials][-1] == TrialState.COMPLETE, log.read_text()[-6000:]
    assert _finished(path) == 1
    stored = set(trials[-1].user_attrs[TrialAttr.ARTIFACTS].values())
    assert {p.name for p in (disk / "art").iterdir()} == stored  # nothing partial or stray


def _retry_budget_untouched(url, name) -> None:
    """The queued copy's history holds re-queues only: no retry of ``max_retry`` was used."""
    from hpo.storage.stale import REQUEUES_KEY, retry_history

    waiting = study_trials(name, url, states=(TrialState.WAITING,))[0]
    assert len(retry_history(waiting)) == waiting.system_attrs[REQUEUES_KEY]


def _leftovers(folder) -> list[str]:
    """Temporary files and empty folders under ``folder``."""
    return [str(p) for p in folder.rglob("*")
            if p.name.endswith(".tmp") or (p.is_dir() and not any(p.iterdir()))]


@pytest.mark.slow
def test_a_full_disk_under_the_training_state_requeues_the_trial(tmp_path, mount_tmpfs):
    """The training state (saved every epoch, 3.6 MB) does not fit: ``torch.save``'s
    RuntimeError is a full disk like any other, not a failed configuration."""
    url, name = f"sqlite:///{tmp_path}/infra.db", "infra"
    art = mount_tmpfs(tmp_path / "art", "size=2m")
    path = write_study(tmp_path / "s.toml", name, storage=url, artifacts=art, space=SPACE)
    path.write_text(path.read_text() + "[resume]\nsave_interval = 0\n")
    warm_cache(hpo.load_study_config(path))
    log = tmp_path / "w.log"
    _stopped_and_requeued(path, url, name, log, "free disk space")
    [line] = _error_lines(log)
    assert str(art / "state") in line and "state.pt" in line, line
    _retry_budget_untouched(url, name)
    assert list(art.iterdir()) == []  # no partial state, no empty folder
    subprocess.run(["mount", "-o", "remount,size=64m", str(art)], check=True)  # the fix
    _completes_after_the_fix(path, url, name, log)
    assert _leftovers(art) == []


@pytest.mark.slow
def test_a_full_temporary_folder_requeues_the_trial(tmp_path, mount_tmpfs):
    """The best checkpoint (0.9 MB, in the trial's folder under $TMPDIR) does not fit."""
    url, name = f"sqlite:///{tmp_path}/infra.db", "infra"
    tmp = mount_tmpfs(tmp_path / "tmp", "size=512k")
    path = write_study(tmp_path / "s.toml", name, storage=url, artifacts=tmp_path / "art",
                       space=SPACE)
    warm_cache(hpo.load_study_config(path))
    log = tmp_path / "w.log"
    env = {"TMPDIR": str(tmp)}
    assert run_worker_to_end(path, log=log, env=env) == 3, log.read_text()
    [line] = _error_lines(log)
    assert "checkpoint.pt" in line and "free disk space" in line and "re-queued" in line, line
    assert "Traceback" not in log.read_text()
    assert [t.state for t in study_trials(name, url)] == [TrialState.FAIL, TrialState.WAITING]
    assert _finished(path) == 0
    _retry_budget_untouched(url, name)
    assert not list(tmp.glob("specopt-*"))  # the trial's folder went with it
    subprocess.run(["mount", "-o", "remount,size=64m", str(tmp)], check=True)  # the fix
    assert run_worker_to_end(path, log=log, env=env) == 0, log.read_text()
    assert _finished(path) == 1


@pytest.mark.slow
def test_a_full_disk_under_the_sqlite_database_alone(tmp_path, mount_tmpfs):
    """The artifacts have room, the database does not ("database or disk is full"): one line
    naming the database, exit 3, and the trial completes once there is space again."""
    disk = mount_tmpfs(tmp_path / "disk", "size=2m")
    url, name = f"sqlite:///{disk}/infra.db", "infra"
    path = write_study(tmp_path / "s.toml", name, storage=url, artifacts=tmp_path / "art",
                       space={**SPACE, "epochs": 3})
    cfg = hpo.load_study_config(path)
    warm_cache(cfg)
    hpo.create_study(cfg)
    fd = os.open(disk / "filler", os.O_WRONLY | os.O_CREAT)  # no room for the trial's rows
    os.write(fd, b"\0" * (os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize - 8192))
    os.close(fd)
    log = tmp_path / "w.log"
    assert run_worker_to_end(path, log=log) == 3, log.read_text()
    [line] = _error_lines(log)
    assert "infra.db" in line and "free disk space" in line, line
    assert "Traceback" not in log.read_text()
    (disk / "filler").unlink()  # the fix
    assert run_worker_to_end(path, log=log) == 0, log.read_text()
    assert _finished(path) == 1
    assert TrialState.RUNNING not in {t.state for t in study_trials(name, url)}
