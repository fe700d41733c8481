"""bench/replay.py on a small real learning-curve table (tests/data/lc_small, made by its
make_lc_small.py: 8 configurations of the report's CNN, 300 molecules, 5 epochs, 2 repeats)."""

from __future__ import annotations

import csv
import dataclasses
import statistics
from pathlib import Path

import pytest
from optuna.trial import TrialState

from bench.replay import LearningCurveTable, Strategy, replay, strategies
from hpo.study.config import load_study_config
from model.errors import ConfigError

DATA = Path(__file__).resolve().parents[2] / "data" / "lc_small"


@pytest.fixture(scope="module")
def table() -> LearningCurveTable:
    return LearningCurveTable.load(DATA)


@pytest.fixture(scope="module")
def named(table):
    return strategies(table, shipped=())


def _rows(name: str) -> list[dict]:
    with (DATA / name).open(newline="") as f:
        return list(csv.DictReader(f))


def _params(sigma, n_points, loss, lr, batch_size) -> dict:
    return dict(sigma=sigma, n_points=n_points, loss=loss, lr=lr, batch_size=batch_size)


# --- the table --------------------------------------------------------------------------------

def test_load_reads_runs_curves_best_value_and_noise_floor(table):
    configs = _rows("configs.csv")
    assert len(table.runs) == len(configs)
    seed0 = [r for r in configs if r["seed"] == "0" and r["status"] != "failed"]
    best = max(seed0, key=lambda r: float(r["val_fair_accuracy"]))
    assert table.best_value == pytest.approx(float(best["val_fair_accuracy"]))
    assert table.best_run.run_id == best["run_id"]
    curve = [r for r in _rows("table.csv") if r["run_id"] == best["run_id"]]
    assert table.best_run.fair == tuple(float(r["test_fair_accuracy"]) for r in curve)
    assert table.epochs == 5
    by_config = {r["config_id"]: float(r["val_fair_accuracy"]) for r in seed0}
    diffs = [abs(by_config[r["config_id"]] - float(r["val_fair_accuracy"]))
             for r in configs if r["seed"] == "1"]
    floor = table.noise_floor()
    assert floor is not None and floor.n == len(diffs) == 2
    assert floor.mean == pytest.approx(statistics.fmean(diffs))
    assert floor.sd == pytest.approx(statistics.stdev(diffs))


def test_told_value_is_the_test_score_of_the_best_epoch_as_training_tells(table):
    run = table.run("s0.5-np500-rmse-lr0.01-b90-s0")  # its lowest test loss came at epoch 1
    assert run.best_epoch == 1 and run.fair[0] != run.fair[-1]
    trace = replay(Strategy("one", named_config(table), (table.params_of(run),)), table, 0,
                   n_workers=1)
    first = trace.trials[0]
    assert first.run_id == run.run_id and first.state == "COMPLETE"
    assert first.value == run.fair[0]
    assert trace.study is not None
    assert trace.study.trials[0].value == run.fair[0]
    assert run.told_value("validation") == run.val_fair


def named_config(table):
    """A TPE study over the table's space whose trial budget is one trial."""
    return strategies(table, shipped=())["tpe"].config.override({"budget.n_trials": 1})


# --- answering --------------------------------------------------------------------------------

def test_answer_exact_and_the_np_batch_preferences(table):
    a = table.answer(_params(0.5, 300, "rmse", 1e-3, 180))
    assert a.exact and a.run.run_id == "s0.5-np300-rmse-lr0.001-b180-s0"
    # the cell (0.5, rmse, 1e-3) has Np 300 only: the same batch wins
    a = table.answer(_params(0.5, 500, "rmse", 1e-3, 90))
    assert a.kind == "cell" and a.run.run_id == "s0.5-np300-rmse-lr0.001-b90-s0"
    a = table.answer(_params(0.5, 500, "rmse", 1e-3, 180))
    assert a.kind == "cell" and a.run.run_id == "s0.5-np300-rmse-lr0.001-b180-s0"
    # the same Np is preferred to the same batch: move one run of that cell to Np 500
    runs = [dataclasses.replace(r, n_points=500) if r.run_id == "s0.5-np300-rmse-lr0.001-b90-s0"
            else r for r in table.runs]
    moved = LearningCurveTable(runs)
    a = moved.answer(_params(0.5, 300, "rmse", 1e-3, 90))  # (500, 90) and (300, 180) recorded
    assert a.kind == "cell" and a.run.run_id == "s0.5-np300-rmse-lr0.001-b180-s0"
    # only seed-0 runs answer
    assert all(table.answer(table.params_of(r)).run.seed == 0 for r in table.runs)


def test_answer_snaps_lr_by_decade_and_values_outside_the_table(table):
    assert table.answer(_params(0.5, 300, "rmse", 10 ** -3.49, 90)).run.lr == 1e-3
    assert table.answer(_params(0.5, 300, "rmse", 10 ** -3.51, 90)).run.lr == 1e-4
    assert table.answer(_params(0.5, 300, "rmse", 10 ** -3.49, 90)).exact  # the snap is the space
    # Np 700 (a shipped study's) is answered by its Np 500 twin, not as an exact hit
    a = table.answer(_params(0.5, 700, "rmse", 1e-2, 90))
    assert a.kind == "cell" and a.run.run_id == "s0.5-np500-rmse-lr0.01-b90-s0"


def test_answer_for_a_cell_without_a_run(table):
    # same (sigma, loss): the nearest lr in log space (1e-3 is nearer 1e-2 than 1e-4 is)
    a = table.answer(_params(0.3, 300, "rmse", 1e-2, 90))
    assert a.kind == "nearest" and a.run.run_id == "s0.3-np300-rmse-lr0.001-b90-s0"
    # no run of (sigma 0.3, cosine) left: the nearest sigma with cosine
    fewer = LearningCurveTable([r for r in table.runs if r.config_id !=
                                "s0.3-np300-cosine-lr0.0001-b90"])
    a = fewer.answer(_params(0.3, 300, "cosine", 1e-4, 90))
    assert a.kind == "nearest" and a.run.run_id == "s0.5-np500-cosine-lr0.001-b180-s0"
    # a loss with no run at all: the nearest (sigma, lr) of any loss
    a = table.answer(_params(0.3, 300, "huber", 1e-3, 90))
    assert a.kind == "nearest" and a.run.run_id == "s0.3-np300-rmse-lr0.001-b90-s0"


# --- replay -----------------------------------------------------------------------------------

def test_replay_is_deterministic_for_a_seed(table, named):
    for name in ("tpe+median", "random+hyperband"):
        a = replay(named[name], table, seed=3, budget_epochs=120)
        b = replay(named[name], table, seed=3, budget_epochs=120)
        assert a.trials == b.trials and a.regret == b.regret and len(a.trials) > 10
        c = replay(named[name], table, seed=4, budget_epochs=120)
        assert [t.run_id for t in c.trials] != [t.run_id for t in a.trials]


def test_the_best_configuration_enqueued_first_gives_zero_regret_at_once(table, named):
    best = table.params_of(table.best_run)
    strategy = dataclasses.replace(named["tpe"], enqueue=(best,))
    trace = replay(strategy, table, seed=0, n_workers=1, budget_epochs=40)
    assert trace.trials[0].run_id == table.best_run.run_id
    assert trace.trials[0].regret == 0.0
    assert trace.regret_at(table.epochs) == 0.0
    assert trace.first_within(0.0) is trace.trials[0]
    # without it, the first trial of this seed is another run, with positive regret
    plain = replay(named["tpe"], table, seed=0, n_workers=1, budget_epochs=40)
    assert plain.trials[0].run_id != table.best_run.run_id and plain.trials[0].regret > 0


def test_pruned_trials_cost_only_the_epochs_they_ran(table, named):
    trace = replay(named["tpe+sh"], table, seed=1, budget_epochs=150)
    assert trace.study is not None
    pruned = [t for t in trace.trials if t.state == "PRUNED"]
    assert len(pruned) >= 5
    frozen = {t.number: t for t in trace.study.trials}
    for t in pruned:
        assert t.epochs <= table.run(t.run_id).epochs_run  # the last one too, as in training
        assert frozen[t.number].state == TrialState.PRUNED
        assert max(frozen[t.number].intermediate_values) == t.epochs
    # the study's compute is the sum of what every trial ran (the cut-off ones included)
    running = [t for t in trace.study.trials if t.state == TrialState.RUNNING]
    assert len(running) == trace.cut_off
    ran = sum(t.epochs for t in trace.trials)
    ran += sum(len(t.intermediate_values) for t in running)
    assert ran == trace.total_epochs == 150
    seconds = sum(sum(table.run(t.run_id).seconds[:t.epochs]) for t in trace.trials)
    assert seconds <= trace.total_seconds
    cum = [t.cum_epochs for t in trace.trials]
    assert cum == sorted(cum)


@pytest.mark.parametrize("n_workers", [1, 2, 4])
def test_workers_never_run_more_trials_at_once_than_their_number(table, named, n_workers):
    trace = replay(named["tpe+median"], table, seed=2, n_workers=n_workers, budget_epochs=100)
    spans = [(t.start, t.time) for t in trace.trials]
    most = max(sum(1 for s, e in spans if s <= t < e) for t, _ in spans)
    assert most == trace.max_running == n_workers
    per_worker: dict[int, list[tuple[float, float]]] = {}
    for t in trace.trials:
        per_worker.setdefault(t.worker, []).append((t.start, t.time))
    for spans_w in per_worker.values():  # one trial at a time, the next asked at once
        for (_, end), (start, _) in zip(spans_w, spans_w[1:], strict=False):
            assert start == end


def test_incumbent_is_study_best_trial_and_regret_its_validation_gap(table, named):
    trace = replay(named["random"], table, seed=5, budget_epochs=100)
    assert trace.study is not None and trace.incumbent is not None
    assert trace.incumbent.number == trace.study.best_trial.number
    run = table.run(trace.incumbent.run_id)
    assert trace.regret == pytest.approx(table.best_value - run.val_fair)
    assert trace.regret_at(trace.total_epochs) == trace.regret


def test_a_failed_run_fails_in_the_epoch_after_its_last_recorded_one(table, named):
    target = "s0.5-np300-rmse-lr0.001-b90-s0"
    runs = [dataclasses.replace(r, status="failed", fair=r.fair[:2], seconds=r.seconds[:2],
                                val={}) if r.run_id == target else r for r in table.runs]
    failing = LearningCurveTable(runs)
    run = failing.run(target)
    assert run.fail_seconds == pytest.approx(statistics.fmean(run.seconds))
    strategy = Strategy("f", named_config(failing), (failing.params_of(run),))
    trace = replay(strategy, failing, seed=0, n_workers=1)
    (t,) = trace.trials
    assert (t.state, t.epochs, t.value) == ("FAIL", 3, None)
    assert trace.total_seconds == pytest.approx(sum(run.seconds) + run.fail_seconds)
    assert trace.incumbent is None and trace.regret is None


def test_report_grid_and_table_grid_run_every_configuration_to_the_end(table):
    grid = [(0.5, 300, "rmse", 1e-4, 90), (0.5, 700, "rmse", 1e-2, 90)]
    named = strategies(table, report_grid=grid, shipped=())
    trace = replay(named["report-grid"], table, seed=0)
    assert sorted(t.run_id for t in trace.trials) == [
        "s0.5-np300-rmse-lr0.0001-b90-s0", "s0.5-np500-rmse-lr0.01-b90-s0"]
    assert trace.total_epochs == 10 and trace.answers == {"exact": 1, "cell": 1}
    full = replay(named["table-grid"], table, seed=0)
    assert full.total_epochs == table.total_epochs() == 40
    assert full.regret == 0.0 and full.exact_share == 1.0


def test_shipped_studies_replay_and_multi_objective_ones_are_refused(table):
    named = strategies(table)
    demo = replay(named["demo"], table, seed=0)
    assert len(demo.trials) == named["demo"].config.n_trials  # its own budget
    with pytest.raises(ConfigError, match="fair_accuracy"):
        replay(load_study_config("sigma-pareto"), table, seed=0, budget_epochs=10)


def test_simulated_epoch_cost_is_the_median_of_its_shape_or_the_recorded_seconds():
    rows = _rows("table.csv")
    recorded = LearningCurveTable.load(DATA, seconds="recorded")
    for run in recorded.runs:
        assert run.seconds == tuple(float(r["seconds"]) for r in rows
                                    if r["run_id"] == run.run_id)
    shaped = LearningCurveTable.load(DATA)
    for run in shaped.runs:
        same = [s for r in recorded.runs for s in r.seconds
                if (r.n_points, r.batch_size) == (run.n_points, run.batch_size)]
        assert run.seconds == (statistics.median(same),) * len(run.seconds)
    with pytest.raises(ValueError, match="seconds must be"):
        LearningCurveTable.load(DATA, seconds="wall")


def test_a_strategys_name_does_not_change_its_replay(table, named):
    """Optuna's Hyperband picks each trial's bracket from a hash of the study name: replays of
    one seed share the name whatever the strategy, so strategies differ only by what they are
    (common random numbers), not by their names."""
    s = named["tpe+hyperband"]
    a = replay(s, table, 3, budget_epochs=120)
    b = replay(dataclasses.replace(s, name="renamed"), table, 3, budget_epochs=120)
    assert [(r.run_id, r.state, r.epochs) for r in a.trials] == \
        [(r.run_id, r.state, r.epochs) for r in b.trials]
