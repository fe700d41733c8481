"""The anytime frame and plot of a report (``hpo.report.data.anytime_frame``,
``hpo.report.figures.anytime``) on a hand-made study whose trials carry the attributes that
``hpo.execution.objective.objective`` records: complete, pruned, diverged, a SIGTERM re-queue
continued by
its retry, a killed attempt (nothing recorded) continued by its retry, and one still running."""

from __future__ import annotations

import datetime as dt
import math
import warnings

import numpy as np
import optuna
import pandas as pd
import pytest
from optuna.trial import FrozenTrial, TrialState

from hpo.report.data import ANYTIME_COLUMNS, anytime_frame
from hpo.report.figures import anytime
from hpo.report.write import write_report
from model.contract import Status, StudyAttr, TrialAttr

T0 = dt.datetime(2026, 1, 1, 12, 0, 0)


def _history(seconds: list[float], first: int = 1) -> list[dict]:
    return [{"epoch": first + i, "train_loss": 1.0 / (first + i), "seconds": s}
            for i, s in enumerate(seconds)]


def _trial(number: int, state: TrialState, start: float, end: float | None,
           value: float | None = None, **attrs) -> FrozenTrial:
    attrs.setdefault(TrialAttr.ORIGIN, number)
    return FrozenTrial(
        number=number, state=state, value=value,
        datetime_start=T0 + dt.timedelta(seconds=start),
        datetime_complete=None if end is None else T0 + dt.timedelta(seconds=end),
        params={}, distributions={}, user_attrs=attrs, system_attrs={},
        intermediate_values=attrs.pop("_reported", {}), trial_id=number)


def _run(seconds: list[float], status: str, resumed: int = 0, thinned: bool = False) -> dict:
    """The epoch attributes objective() records for an attempt that ran ``seconds`` per epoch,
    the first ``resumed`` of them continued from a saved state."""
    history = _history(seconds)
    out = {TrialAttr.STATUS: status, TrialAttr.EPOCHS_RUN: len(seconds),
           TrialAttr.EPOCHS_TRAINED: len(seconds) - resumed,
           TrialAttr.SECONDS_PER_EPOCH: float(np.mean(seconds)),
           TrialAttr.HISTORY: history[::2] if thinned else history}
    return out


def make_study(direction: str = "maximize") -> optuna.Study:
    study = optuna.create_study(storage=optuna.storages.InMemoryStorage(), direction=direction)
    study.set_user_attr(StudyAttr.OBJECTIVE_SPLIT, "test")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names(["fair_accuracy"])
    good = 1.0 if direction == "maximize" else -1.0
    trials = [
        # two workers: #1 starts after #0 but finishes first
        _trial(0, TrialState.COMPLETE, 0, 40, 0.50 * good, **_run([10, 10, 10, 10],
                                                                  Status.COMPLETED)),
        _trial(1, TrialState.PRUNED, 1, 20, **_run([9, 9], Status.PRUNED),
               _reported={1: 0.2 * good, 2: 0.3 * good}),
        # diverged; its history thinned (every other epoch): seconds from seconds_per_epoch
        _trial(2, TrialState.FAIL, 41, 70, **_run([7, 7, 7, 7], Status.FAILED, thinned=True)),
        # SIGTERM after 3 epochs (recorded, re-queued as #4, which continues from epoch 3)
        _trial(3, TrialState.FAIL, 21, 50, **_run([5, 5, 5], Status.INTERRUPTED)),
        _trial(4, TrialState.COMPLETE, 60, 90, 0.70 * good,
               **_run([5, 5, 5, 6, 6, 6], Status.COMPLETED, resumed=3),
               **{TrialAttr.ORIGIN: 3, TrialAttr.RESUMED_FROM: {"trial": 3, "epoch": 3}}),
        # killed (nothing recorded) after saving epoch 2; #6 continues from epoch 2
        _trial(5, TrialState.FAIL, 71, 100, **{TrialAttr.STATUS: None}),
        _trial(6, TrialState.COMPLETE, 101, 130, 0.60 * good,
               **_run([4, 4, 3, 3, 3], Status.COMPLETED, resumed=2),
               **{TrialAttr.ORIGIN: 5, TrialAttr.RESUMED_FROM: {"trial": 5, "epoch": 2}}),
        _trial(7, TrialState.RUNNING, 131, None),
    ]
    for t in trials:
        study.add_trial(t)
    return study


@pytest.fixture(scope="module")
def study() -> optuna.Study:
    return make_study()


def test_rows_are_finished_trials_in_the_order_they_finished(study):
    df = anytime_frame(study)
    assert list(df.columns) == list(ANYTIME_COLUMNS)
    assert df["trial"].tolist() == [1, 0, 3, 2, 4, 5, 6]  # by end time; #7 still runs
    assert df["state"].tolist() == ["pruned", "complete", "fail", "fail", "complete", "fail",
                                    "complete"]
    assert df["finished_at"].is_monotonic_increasing
    assert df["wall_seconds"].tolist() == [20, 40, 50, 70, 90, 100, 130]


def test_cost_counts_pruned_and_failed_epochs_once(study):
    df = anytime_frame(study).set_index("trial")
    # pruned: the 2 epochs it ran; diverged: its 4; the interrupted attempt: its 3
    assert df.loc[1, "epochs"] == 2 and df.loc[1, "seconds"] == pytest.approx(18)
    assert df.loc[2, "epochs"] == 4 and df.loc[2, "seconds"] == pytest.approx(28)
    assert df.loc[3, "epochs"] == 3 and df.loc[3, "seconds"] == pytest.approx(15)
    # its re-queue continued from epoch 3: only the 3 epochs it trained itself
    assert df.loc[4, "epochs"] == 3 and df.loc[4, "seconds"] == pytest.approx(18)
    # the killed attempt recorded nothing; its 2 saved epochs are counted once, on the retry
    assert df.loc[5, "epochs"] == 0 and df.loc[5, "seconds"] == 0
    assert df.loc[6, "epochs"] == 5 and df.loc[6, "seconds"] == pytest.approx(17)
    total = 4 + 2 + 4 + 3 + 3 + 5
    assert df["cum_epochs"].iloc[-1] == total
    every_run = sum(t.user_attrs.get(TrialAttr.EPOCHS_RUN) or 0 for t in study.trials)
    assert every_run == total + 3  # summing epochs_run would count #3's epochs twice
    np.testing.assert_allclose(df["cum_seconds"], np.cumsum(df["seconds"]))
    np.testing.assert_array_equal(df["cum_epochs"], np.cumsum(df["epochs"]))


@pytest.mark.parametrize("direction", ["maximize", "minimize"])
def test_best_so_far_is_monotone_and_ends_at_the_best_value(direction):
    s = make_study(direction)
    df = anytime_frame(s)
    best = df["best_so_far"].dropna()
    steps = np.diff(best.to_numpy())
    assert (steps >= 0).all() if direction == "maximize" else (steps <= 0).all()
    assert best.iloc[-1] == s.best_value
    assert math.isnan(df["best_so_far"].iloc[0])  # the pruned trial finished first
    assert df["value"].notna().tolist() == (df["state"] == "complete").tolist()
    # #6 (0.6) is worse than #4 (0.7): the best does not follow the last value
    assert df.set_index("trial").loc[6, "best_so_far"] == pytest.approx(s.trials[4].value)


def test_an_empty_study_has_an_empty_frame_and_a_note():
    s = optuna.create_study(storage=optuna.storages.InMemoryStorage())
    df = anytime_frame(s)
    assert df.empty and list(df.columns) == list(ANYTIME_COLUMNS)
    f = anytime(s)
    assert f.fig is None and "No trial has finished" in f.note


def test_figure_draws_the_frame_on_three_axes(study):
    f = anytime(study)
    label = "fair accuracy (%), test split (model selection)"  # in %, as the tables
    assert f.fig is not None and label in f.title
    df = anytime_frame(study)
    traces = {(tr.meta["series"], tr.meta["x"]): tr for tr in f.fig.data}
    titles = [f.fig.layout[f"xaxis{'' if i == 1 else i}"].title.text for i in (1, 2, 3)]
    assert titles == ["training time (s)", "epochs trained",
                      "wall-clock time since the first trial started (s)"]
    for x in ("cum_seconds", "cum_epochs", "wall_seconds"):
        line = traces[("best_so_far", x)]
        np.testing.assert_allclose(np.asarray(line.x, float), df[x])
        np.testing.assert_allclose(np.asarray(line.y, float), 100 * df["best_so_far"])
        pruned = traces[("pruned", x)]
        assert list(pruned.x) == df.loc[df["state"] == "pruned", x].tolist()
        # no complete trial before it: at its last reported value instead of the line
        assert list(pruned.y) == [100 * study.trials[1].intermediate_values[2]]
        failed = traces[("fail", x)]
        np.testing.assert_allclose(
            failed.y, 100 * df.loc[df["state"] == "fail", "best_so_far"].to_numpy())
    assert f"best {label}" == f.fig.layout.yaxis.title.text


def test_multi_objective_study_gets_a_note():
    s = optuna.create_study(storage=optuna.storages.InMemoryStorage(),
                            directions=["maximize", "minimize"])
    s.add_trial(optuna.trial.create_trial(values=[0.5, 0.3]))
    f = anytime(s)
    assert f.fig is None and "Pareto front" in f.note
    assert anytime_frame(s, objective=1)["best_so_far"].tolist() == [0.3]


def test_written_report_exports_the_frame_and_places_the_figure(study, tmp_path):
    paths = write_report(study, tmp_path)
    csv = pd.read_csv(paths.csv["anytime"])
    df = anytime_frame(study)
    assert csv["trial"].tolist() == df["trial"].tolist()
    np.testing.assert_allclose(csv["cum_seconds"], df["cum_seconds"])
    html = paths.html.read_text()
    assert 'data-figure="anytime"' in html
    assert html.index('data-figure-key="optimization_history"') \
        < html.index('data-figure-key="anytime"')
    md = paths.markdown.read_text()
    assert "Anytime performance" in md and "`anytime.csv`" in md
