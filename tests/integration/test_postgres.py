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
from hpo.testing import write_study
from model.contract import TrialAttr

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
