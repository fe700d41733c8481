"""The anytime plot on real trials: the attributes that ``hpo.execution.objective.objective``
records
(complete and pruned trials, real per-epoch seconds) give the cost that the report counts."""

from __future__ import annotations

import numpy as np
import optuna
import pandas as pd
import pytest

from hpo.report import write_report
from hpo.report.data import anytime_frame, history_of
from model.contract import TrialAttr
from tests.support import small_study_config


class PruneTrial(optuna.pruners.BasePruner):
    """Prunes one trial at its first report, whatever its value."""

    def __init__(self, number: int) -> None:
        self.number = number

    def prune(self, study, trial) -> bool:
        return trial.number == self.number


def test_report_study_anytime_csv_and_figure(report_study, tmp_path):
    study = report_study.load()
    paths = write_report(study, tmp_path, report_study.artifacts)
    csv = pd.read_csv(paths.csv["anytime"])
    trials = study.get_trials()
    assert sorted(csv["trial"]) == [t.number for t in trials]
    assert csv["cum_epochs"].iloc[-1] == sum(t.user_attrs[TrialAttr.EPOCHS_RUN] for t in trials)
    seconds = sum(e["seconds"] for t in trials for e in history_of(t, study))
    assert csv["cum_seconds"].iloc[-1] == pytest.approx(seconds)
    assert csv["best_so_far"].iloc[-1] == pytest.approx(study.best_value)
    html = paths.html.read_text()
    assert 'data-figure="anytime"' in html and "training time (s)" in html


def test_a_real_pruned_trial_costs_the_epochs_it_ran(tmp_path):
    cfg = small_study_config(tmp_path, "pruned", {"loss": "rmse", "sigma": 0.5, "epochs": 3}, 2)
    study = optuna.create_study(direction="maximize", pruner=PruneTrial(1),
                                storage=optuna.storages.InMemoryStorage())
    from hpo.execution.objective import objective

    study.optimize(lambda t: objective(t, cfg), n_trials=2)
    complete, pruned = study.trials
    assert pruned.state == optuna.trial.TrialState.PRUNED
    df = anytime_frame(study).set_index("trial")
    assert df.loc[0, "epochs"] == 3 and df.loc[1, "epochs"] == 1  # pruned at its first epoch
    for t in (complete, pruned):
        assert df.loc[t.number, "seconds"] == pytest.approx(
            sum(e["seconds"] for e in history_of(t)))
        assert df.loc[t.number, "seconds"] > 0
    assert df["cum_epochs"].iloc[-1] == 4
    assert df.loc[1, "state"] == "pruned" and np.isnan(df.loc[1, "value"])
    assert df["best_so_far"].iloc[-1] == pytest.approx(complete.value)
