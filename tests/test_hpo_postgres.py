"""Workers against the real PostgreSQL server on 127.0.0.1:5432 (fail, never skip, without it).

Four worker processes share one grid study; a worker killed with SIGKILL mid-trial is detected by
the heartbeat, its trial is failed and retried by another worker, and nothing stays RUNNING.
"""

from __future__ import annotations

import os
import signal
import uuid
from collections import Counter

import optuna
import pytest
from optuna.trial import TrialState

import hpo
from hpo.launch import warm_cache
from hpo.testing import start_worker, wait_for_running, write_study

PG_URL = os.environ.get("SPECOPT_TEST_POSTGRES_URL",
                        "postgresql+psycopg://postgres@127.0.0.1:5432/test")

pytestmark = [pytest.mark.postgres,
              pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")]


@pytest.fixture
def pg_url():
    try:
        hpo.open_storage(PG_URL, connect_timeout=5)
    except hpo.StorageError as err:
        pytest.fail(f"PostgreSQL is needed for this test and is not reachable ({err}). Start it: "
                    "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start "
                    "(Debian), or docker run -p 5432:5432 -e POSTGRES_HOST_AUTH_METHOD=trust -e "
                    "POSTGRES_DB=test postgres; or set SPECOPT_TEST_POSTGRES_URL.", pytrace=False)
    return PG_URL


@pytest.fixture
def study_name(pg_url):
    name = f"pytest-{uuid.uuid4().hex[:10]}"
    yield name
    try:
        optuna.delete_study(study_name=name, storage=pg_url)
    except KeyError:
        pass


def _grid_point(t) -> tuple:
    return tuple(sorted(t.params.items()))


def test_four_workers_share_a_grid_study(tmp_path, pg_url, study_name):
    path = write_study(tmp_path / "grid.toml", study_name, storage=pg_url,
                       artifacts=tmp_path / "art",
                       space={"loss": ["rmse", "logcosh", "smoothl1"], "sigma": [0.3, 0.5],
                              "epochs": 2, "subset": 200, "lr": 1e-4})
    cfg = hpo.load_study_config(path)
    assert cfg.grid_size() == 6
    code = hpo.launch(cfg, workers=4, cores=4)
    assert code == 0

    trials = optuna.load_study(study_name=study_name, storage=pg_url).get_trials()
    assert len(trials) == 6
    assert {t.state for t in trials} <= {TrialState.COMPLETE, TrialState.PRUNED}
    points = Counter(_grid_point(t) for t in trials)
    assert len(points) == 6 and set(points.values()) == {1}, points  # no grid point twice
    workers = {t.user_attrs["worker"]["pid"] for t in trials}
    assert len(workers) >= 2  # the work really was shared


def test_sigkill_mid_trial_is_recovered_by_another_worker(tmp_path, pg_url, study_name):
    path = write_study(tmp_path / "kill.toml", study_name, storage=pg_url, heartbeat=(1, 3),
                       artifacts=tmp_path / "art",
                       space={"loss": ["rmse", "logcosh"], "epochs": 20, "subset": 200,
                              "lr": 1e-4})
    warm_cache(hpo.load_study_config(path))  # as `launch` does: workers find the data cached
    logs = [tmp_path / f"w{i}.log" for i in range(2)]
    procs = [start_worker(path, index=i, log=logs[i]) for i in range(2)]
    try:
        victim_trial = wait_for_running(study_name, pg_url, min_epochs=2, procs=procs)
        victim_pid = victim_trial.user_attrs["worker"]["pid"]
        victim = next(p for p in procs if p.pid == victim_pid)
        survivor = next(p for p in procs if p.pid != victim_pid)
        victim.send_signal(signal.SIGKILL)
        assert victim.wait(timeout=10) == -signal.SIGKILL
        code = survivor.wait(timeout=240)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert code == 0, "".join(log.read_text() for log in logs)

    trials = optuna.load_study(study_name=study_name, storage=pg_url).get_trials()
    states = Counter(t.state for t in trials)
    assert states == {TrialState.COMPLETE: 2, TrialState.FAIL: 1}, states  # nothing RUNNING
    killed = next(t for t in trials if t.state == TrialState.FAIL)
    assert killed.number == victim_trial.number
    retry = next(t for t in trials if t.system_attrs.get("failed_trial") == killed.number)
    assert retry.state == TrialState.COMPLETE and retry.params == killed.params
    assert retry.user_attrs["worker"]["pid"] == survivor.pid
    assert retry.user_attrs["retry_of"] == killed.number
    complete = [_grid_point(t) for t in trials if t.state == TrialState.COMPLETE]
    assert len(set(complete)) == 2  # both grid points, once each
    assert "retry of trial" in logs[[p.pid for p in procs].index(survivor.pid)].read_text()
