"""Workers against the real PostgreSQL server on 127.0.0.1:5432 (fail, never skip, without it).

Four worker processes share one grid study and never start a grid point twice.  The worker fault
tests (SIGKILL, SIGINT/SIGTERM) run on PostgreSQL, SQLite and journal files alike:
tests/test_hpo_worker_faults.py.  The ``pg_url`` and ``pg_study`` fixtures: tests/conftest.py.
"""

from __future__ import annotations

from collections import Counter

import optuna
import pytest
from optuna.trial import TrialState

import hpo
from model.contract import TrialAttr
from tests.support import write_study

pytestmark = [pytest.mark.postgres,
              pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")]


def _grid_point(t) -> tuple:
    return tuple(sorted(t.params.items()))


def test_four_workers_share_a_grid_study(tmp_path, pg_url, pg_study):
    path = write_study(tmp_path / "grid.toml", pg_study, storage=pg_url,
                       artifacts=tmp_path / "art",
                       space={"loss": ["rmse", "logcosh", "smoothl1"], "sigma": [0.3, 0.5],
                              "epochs": 2, "subset": 200, "lr": 1e-4})
    cfg = hpo.load_study_config(path)
    assert cfg.grid_size() == 6
    code = hpo.launch(cfg, workers=4, cores=4)
    assert code == 0

    trials = optuna.load_study(study_name=pg_study, storage=pg_url).get_trials()
    assert len(trials) == 6
    assert {t.state for t in trials} <= {TrialState.COMPLETE, TrialState.PRUNED}
    points = Counter(_grid_point(t) for t in trials)
    assert len(points) == 6 and set(points.values()) == {1}, points  # no grid point twice
    workers = {t.user_attrs[TrialAttr.WORKER]["pid"] for t in trials}
    assert len(workers) >= 2  # the work really was shared


def test_launch_keeps_the_password_out_of_the_study_and_the_command_lines(tmp_path, pg_url,
                                                                          pg_study, monkeypatch):
    """The server trusts local connections, so a password in the URL is accepted and ignored:
    it must appear in no study or trial attribute and on no worker command line."""
    import importlib
    import json
    import subprocess

    # hpo.execution.launch is the function
    launch_module = importlib.import_module("hpo.execution.launch")

    secret = "s3cret-Pw"
    url = pg_url.replace("postgres@", f"postgres:{secret}@")
    assert secret in url
    seen = []
    real_popen = subprocess.Popen

    def popen(cmd, **kw):
        seen.append((cmd, kw.get("env") or {}))
        return real_popen(cmd, **kw)

    monkeypatch.setattr(launch_module.subprocess, "Popen", popen)
    path = write_study(tmp_path / "pw.toml", pg_study, storage=url, artifacts=tmp_path / "art",
                       space={"loss": ["rmse"], "epochs": 1, "subset": 200, "lr": 1e-4})
    assert hpo.launch(hpo.load_study_config(path), workers=1, cores=1) == 0
    [(cmd, env)] = seen
    assert secret not in " ".join(cmd) and env["SPECOPT_STORAGE"] == url
    study = optuna.load_study(study_name=pg_study, storage=pg_url)
    [trial] = study.get_trials()
    assert trial.state == TrialState.COMPLETE
    stored = json.dumps([study.user_attrs, study._storage.get_study_system_attrs(study._study_id),
                         trial.user_attrs, trial.system_attrs], default=str)
    assert secret not in stored and "postgres:***@" in stored
