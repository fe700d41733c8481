"""``specopt status`` (hpo.observe.status) on small stored studies: empty, one with a RUNNING trial
that
reported epochs (asked as a worker does), and the ETA from measured seconds per epoch; and the
workers' epoch lines (hpo.execution.objective.EpochLog): rate-limited at INFO, every epoch at
DEBUG."""

from __future__ import annotations

import datetime as dt
import json
import logging

import optuna
import pytest
from optuna.trial import TrialState
from typer.testing import CliRunner

from hpo.cli import app
from hpo.execution.objective import EpochLog
from hpo.observe.status import BETWEEN_TRIALS, study_status
from model.contract import StudyAttr, TrialAttr

pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")

runner = CliRunner()


def _study(tmp_path, n_trials: int = 5) -> tuple[optuna.Study, str]:
    url = f"sqlite:///{tmp_path}/s.db"
    study = optuna.create_study(study_name="s", storage=url, direction="maximize")
    study.set_user_attr(StudyAttr.N_TRIALS, n_trials)
    study.set_metric_names(["fair_accuracy"])
    study.set_user_attr(StudyAttr.OBJECTIVE_SPLIT, "test")  # as hpo.create_study records it
    return study, url


def test_status_of_an_empty_study(tmp_path):
    study, url = _study(tmp_path, 3)
    s = study_status(study, url)
    assert (s.state, s.finished, s.n_trials, s.running, s.best, s.eta_seconds) == (
        "empty", 0, 3, [], None, None)
    assert s.counts == {"complete": 0, "pruned": 0, "failed": 0, "running": 0, "waiting": 0}
    r = runner.invoke(app, ["status", "s", "--storage", url])
    assert r.exit_code == 0, r.output
    assert "no trials yet" in r.output and "0 of 3 trials" in r.output


def _finished(study: optuna.Study, value: float | None, epochs: int, state=TrialState.COMPLETE):
    t = study.ask({"lr": optuna.distributions.FloatDistribution(1e-4, 1e-2, log=True)})
    t.set_user_attr(TrialAttr.EPOCHS_RUN, epochs)
    t.set_user_attr(TrialAttr.SECONDS_PER_EPOCH, 2.0)
    for e in range(1, epochs + 1):
        t.report(0.5 + 0.01 * e, e)
    study.tell(t, value, state=state)
    return t


def test_status_of_a_running_study_and_its_eta(tmp_path):
    study, url = _study(tmp_path, 5)
    best = _finished(study, 0.8, 10)
    _finished(study, None, 4, TrialState.PRUNED)
    # a trial a worker is running: asked, its worker recorded, 3 of 10 epochs reported
    t = study.ask()
    t.set_user_attr(TrialAttr.WORKER, {"host": "node1", "pid": 42, "index": 0})
    t.set_user_attr(TrialAttr.PARAMS, {"epochs": 10})
    t.set_user_attr(TrialAttr.PROGRESS, {"epoch": 2, "epochs": 10, "value": 0.6,
                                         "seconds_per_epoch": 2.0})
    for e, v in ((1, 0.6), (2, 0.65), (3, 0.7)):
        t.report(v, e)

    s = study_status(study, url)
    assert (s.state, s.finished, s.n_trials) == ("running", 2, 5)
    assert s.counts == {"complete": 1, "pruned": 1, "failed": 0, "running": 1, "waiting": 0}
    [r] = s.running
    # the epoch and value reported last (newer than the rate-limited progress attribute)
    assert (r.number, r.epoch, r.epochs, r.value) == (t.number, 3, 10, 0.7)
    assert r.worker == "0 on node1 (pid 42)"
    assert s.best is not None and (s.best.number, s.best.values) == (best.number, [0.8])
    assert "lr" in s.best.params
    # measured: 2 s/epoch; a trial runs (10 + 4) / 2 = 7 epochs; left: 7 of the running one and
    # 2 trials not started -> 21 epochs x 2 s on 1 worker
    assert s.seconds_per_epoch == 2.0 and s.epochs_per_trial == 7.0
    assert s.eta_seconds == pytest.approx(42.0)

    r = runner.invoke(app, ["status", "s", "--storage", url])
    assert r.exit_code == 0, r.output
    assert "running: 2 of 5 trials" in r.output
    assert "complete 1, pruned 1, failed 0, running 1, waiting 0" in r.output
    assert "fair accuracy" in r.output and "test split" in r.output  # the objective
    assert "worker 0 on node1 (pid 42)" in r.output
    # in the label's unit (%), with the split named
    assert "epoch 3/10, test fair accuracy 70%" in r.output
    assert f"best on the test split: fair accuracy 80% (trial {best.number}: lr=" in r.output
    assert "ETA ~42 s" in r.output
    data = json.loads(runner.invoke(app, ["status", "s", "--storage", url, "--json"]).output)
    assert data["running"][0]["epoch"] == 3 and data["eta_seconds"] == pytest.approx(42.0)
    assert data["objective_split"] == "test" and data["workers"] == 1

    # the worker died: its trial is failed and re-queued; nobody runs: stopped, ETA for 1 worker
    study.tell(t, state=TrialState.FAIL)
    s = study_status(study, url)
    assert s.state == "stopped" and s.running == [] and s.finished == 3
    assert s.eta_seconds == pytest.approx(2 * 7 * 2.0)


def test_best_trial_shows_its_baseline_and_skill(tmp_path):
    """The best line reads the score against the mean-training-spectrum baseline of the
    objective's split (test here), with the trial's skill there."""
    study, url = _study(tmp_path, 2)
    t = study.ask()
    t.set_user_attr(TrialAttr.BASELINE, {"test": {"fair_accuracy": 0.85, "accuracy": 0.8},
                                         "validation": {"fair_accuracy": 0.84}})
    t.set_user_attr(TrialAttr.SELECTION_METRICS, {"fair_accuracy": 0.9, "skill": 1 / 3})
    t.set_user_attr(TrialAttr.METRICS, {"fair_accuracy": 0.88, "skill": 0.25})
    study.tell(t, 0.9)
    s = study_status(study, url)
    assert s.best is not None
    assert s.best.baselines == [0.85] and s.best.skill == pytest.approx(1 / 3)
    r = runner.invoke(app, ["status", "s", "--storage", url])
    assert r.exit_code == 0, r.output
    assert "best on the test split: fair accuracy 90% (baseline 85%)" in r.output
    assert "skill 33.3%" in r.output and f"trial {t.number}" in r.output
    data = json.loads(runner.invoke(app, ["status", "s", "--storage", url, "--json"]).output)
    assert data["best"]["baselines"] == [0.85]
    # scored on the validation split: that split's baseline and skill
    study.set_user_attr(StudyAttr.OBJECTIVE_SPLIT, "validation")
    s = study_status(study, url)
    assert s.best is not None and s.best.baselines == [0.84] and s.best.skill == 0.25
    r = runner.invoke(app, ["status", "s", "--storage", url])
    assert "best on the validation split: fair accuracy 90% (baseline 84%), skill 25%" in \
        r.output


def _running(study: optuna.Study, index: int, epoch: int) -> optuna.Trial:
    """A trial a worker runs: its worker recorded, ``epoch`` of 10 epochs reported."""
    t = study.ask()
    t.set_user_attr(TrialAttr.WORKER, {"host": "node1", "pid": 40 + index, "index": index})
    t.set_user_attr(TrialAttr.PROGRESS, {"epoch": epoch, "epochs": 10, "value": 0.6,
                                         "seconds_per_epoch": 2.0})
    return t


def test_the_eta_counts_every_worker_running(tmp_path):
    """Two workers: the ETA shares the work between them, also while one of them is between
    two trials (its trial just ended, the next one not asked yet)."""
    study, url = _study(tmp_path, 6)
    _finished(study, 0.8, 10)  # 2 s/epoch, 10 epochs per trial
    a, b = _running(study, 0, 4), _running(study, 1, 6)
    s = study_status(study, url)
    # left: 6 + 4 epochs of the running ones, 3 trials x 10 not started: 40 epochs x 2 s / 2
    assert (s.workers, len(s.running)) == (2, 2) and s.eta_seconds == pytest.approx(40.0)
    r = runner.invoke(app, ["status", "s", "--storage", url])
    assert "ETA ~40 s" in r.output and "2 worker(s)" in r.output, r.output
    # worker 1 finished its trial a moment ago and is claiming the next: still 2 workers
    b.set_user_attr(TrialAttr.EPOCHS_RUN, 10)
    study.tell(b, 0.7)
    s = study_status(study, url)
    assert (s.workers, len(s.running)) == (2, 1)
    assert s.eta_seconds == pytest.approx((6 + 3 * 10) * 2.0 / 2)
    # a minute later it still has no trial: it is gone
    later = dt.datetime.now() + dt.timedelta(seconds=BETWEEN_TRIALS + 5)
    assert study_status(study, url, now=later).workers == 1
    # never more workers than trials left: the last trial runs on one
    study.set_user_attr(StudyAttr.N_TRIALS, 3)
    assert study_status(study, url).workers == 1
    del a


def test_status_of_a_missing_study_is_one_line(tmp_path):
    _, url = _study(tmp_path)
    r = runner.invoke(app, ["status", "nope", "--storage", url])
    assert r.exit_code != 0 and r.output.startswith("error: no study 'nope'")


class _Trial:
    number = 7

    def __init__(self) -> None:
        self.attrs: list[dict] = []

    def set_user_attr(self, key, value) -> None:
        assert key == TrialAttr.PROGRESS
        self.attrs.append(value)


def test_epoch_lines_at_most_one_per_interval_first_and_last_always(caplog):
    clock = iter([0.0, 1.0, 2.0, 15.0, 16.0, 17.0])
    trial = _Trial()
    log = EpochLog(trial, "[s worker 0]", total=6, names=["fair_accuracy"], interval=10,
                   clock=lambda: next(clock))
    caplog.set_level(logging.DEBUG, logger="specopt.training")
    for e in range(1, 6):
        log({"epoch": e, "seconds": 0.5, "test_metrics": {"fair_accuracy": 0.5 + e / 100}})
    log.finish()  # stopped early after epoch 5 (patience, pruning): its line at INFO
    lines = [(r.levelno, r.getMessage()) for r in caplog.records]
    info = [m for lvl, m in lines if lvl == logging.INFO]
    # in the label's unit, as `specopt status` shows it; the progress attribute as stored
    assert info == ["[s worker 0] trial 7 epoch 1/6: test fair accuracy 51%, 0.5 s/epoch",
                    "[s worker 0] trial 7 epoch 4/6: test fair accuracy 54%, 0.5 s/epoch",
                    "[s worker 0] trial 7 epoch 5/6: test fair accuracy 55%, 0.5 s/epoch"]
    assert [m.split(" epoch ")[1][0] for lvl, m in lines if lvl == logging.DEBUG] == \
        ["2", "3", "5"]
    assert [a["epoch"] for a in trial.attrs] == [1, 4, 5]  # one write per INFO line
    assert trial.attrs[-1] == {"epoch": 5, "epochs": 6, "value": 0.55, "seconds_per_epoch": 0.5}
    # the last epoch is always at INFO, however soon after the previous line
    log({"epoch": 6, "seconds": 0.5, "test_metrics": {"fair_accuracy": 0.6}})
    assert caplog.records[-1].levelno == logging.INFO
