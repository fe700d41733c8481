"""bench/replay.py's exactly tabular problem (issue 21): cells, draws with common random numbers,
seed-mean regret, synchronous successive halving; on a synthetic table written here and on the
small real one (tests/data/lc_small)."""

from __future__ import annotations

import math
import statistics
from pathlib import Path

import pytest

from bench import hpo_efficiency
from bench.replay import CellSpace, LearningCurveTable, Run, Strategy, exact_strategies, replay
from model.errors import ConfigError

DATA = Path(__file__).resolve().parents[2] / "data" / "lc_small"
EPOCHS = 3
#: (sigma, loss, lr) -> the validation fair accuracies of its runs (seeds 0, 1, ...)
VALUES = {
    (0.3, "rmse", 1e-4): (0.80,), (0.3, "rmse", 1e-3): (0.86, 0.84),
    (0.3, "cosine", 1e-4): (0.70,), (0.3, "cosine", 1e-3): (0.90, 0.80),  # lucky, mean 0.85
    (0.5, "rmse", 1e-4): (0.82,), (0.5, "rmse", 1e-3): (0.88, 0.88, 0.88),  # best mean 0.88
    (0.5, "cosine", 1e-4): (0.75,), (0.5, "cosine", 1e-3): (0.87, 0.85),
}


def _run(sigma, loss, lr, seed, v, n_points=300, batch=90) -> Run:
    cid = f"s{sigma}-np{n_points}-{loss}-lr{lr}-b{batch}"
    return Run(run_id=f"{cid}-s{seed}", config_id=cid, sigma=sigma, n_points=n_points,
               loss=loss, lr=lr, batch_size=batch, seed=seed, status="completed",
               best_epoch=EPOCHS, fair=tuple(v - 0.1 * (EPOCHS - e) for e in range(1, 4)),
               seconds=(1.0,) * EPOCHS, val={"fair_accuracy": v})


def synthetic(drop: tuple | None = None) -> LearningCurveTable:
    runs = [_run(*cell, seed, v) for cell, vals in VALUES.items() if cell != drop
            for seed, v in enumerate(vals)]
    runs.append(_run(0.5, "huber", 1e-3, 0, 0.99))  # left out: it is smoothl1
    return LearningCurveTable(runs)


@pytest.fixture(scope="module")
def space() -> CellSpace:
    return CellSpace(synthetic())


@pytest.fixture(scope="module")
def named(space):
    return exact_strategies(space, sh_batch=8, sh_eta=2, sh_rungs=(1, 2))


def test_cells_are_the_product_of_the_recorded_values_and_huber_is_left_out(space):
    assert space.keys == ("sigma", "loss", "lr")
    assert space.values == {"sigma": [0.3, 0.5], "loss": ["rmse", "cosine"], "lr": [1e-4, 1e-3]}
    assert space.n_cells == len(space.cells) == 8 and space.missing == 0
    assert space.grid_epochs == 8 * EPOCHS
    assert space.best_cell == (0.5, "rmse", 1e-3) and space.best_value == pytest.approx(0.88)
    study = space.study_space()
    assert study["lr"] == [1e-4, 1e-3] and study["n_points"] == 300  # lr categorical, Np fixed


def test_every_proposal_is_a_recorded_cell_and_answers_with_one_of_its_runs(space, named):
    for name in ("random", "tpe", "tpe+sh", "random+hyperband", "sync-sh", "table-grid"):
        trace = replay(named[name], space, seed=7, budget_epochs=60)
        assert trace.trials and all(t.answer == "draw" for t in trace.trials)
        for t in trace.trials:
            assert t.cell in space.cells
            assert t.run_id in {r.run_id for r in space.cells[t.cell]}
    with pytest.raises(ConfigError, match="not a cell"):
        space.cell_of({"sigma": 0.2, "loss": "rmse", "lr": 1e-3})


def test_a_missing_cell_is_refused_with_how_many(capsys):
    with pytest.raises(ConfigError, match=r"1 of the 8 cells .* have no recorded run"):
        CellSpace(synthetic(drop=(0.3, "cosine", 1e-4)))
    # the command line: --space full on the small real table, one error line
    with pytest.raises(SystemExit) as exit_:
        hpo_efficiency.main(["--table", str(DATA), "--space", "full", "--seeds", "1"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --space full:")
    assert "cells" in err[0] and "have no recorded run" in err[0]


def test_common_random_numbers_the_kth_query_of_a_cell_gets_the_same_run(space, named):
    a = replay(named["random"], space, seed=11, budget_epochs=90)
    b = replay(named["tpe"], space, seed=11, budget_epochs=90)

    def draws(trace):
        seen: dict = {}
        out = {}
        for t in sorted(trace.trials, key=lambda t: t.number):
            k = seen[t.cell] = seen.get(t.cell, -1) + 1
            out[(t.cell, k)] = t.run_id
        return out

    da, db = draws(a), draws(b)
    shared = da.keys() & db.keys()
    assert len(shared) >= 8
    assert all(da[k] == db[k] for k in shared)
    # the draw depends on (seed, cell, k) only, and does vary
    cell = (0.5, "rmse", 1e-3)
    assert space.draw(cell, 3, 5) == space.draw(cell, 3, 5)
    assert len({space.draw(cell, s, k).run_id for s in range(5) for k in range(5)}) == 3


def test_regret_is_measured_against_seed_means(space, named):
    lucky = (0.3, "cosine", 1e-3)  # runs 0.90 and 0.80: mean 0.85, best cell mean 0.88
    assert space.mean[lucky] == pytest.approx(0.85)
    assert space.regret(lucky) == pytest.approx(0.03)
    assert space.regret(space.best_cell) == 0.0
    for seed in range(4):
        one = Strategy("one", named["random"].config.override({"budget.n_trials": 1}),
                       ({"sigma": 0.3, "loss": "cosine", "lr": 1e-3},))
        trace = replay(one, space, seed, n_workers=1)
        assert trace.regret == pytest.approx(0.03)  # whichever run was drawn
    # the incumbent is chosen by the drawn run's told value, its regret is its cell's
    trace = replay(named["random"], space, seed=2, budget_epochs=60)
    inc = trace.incumbent
    assert inc is not None
    assert inc.value == max(t.value for t in trace.trials if t.value is not None)
    assert trace.regret == pytest.approx(space.regret(inc.cell))


def test_seed_noise_is_the_pooled_sd_within_configurations(space):
    noise = space.noise()
    groups = [v for v in VALUES.values() if len(v) >= 2]
    df = sum(len(v) - 1 for v in groups)
    pooled = math.sqrt(sum((len(v) - 1) * statistics.variance(v) for v in groups) / df)
    assert noise.sd == pytest.approx(pooled)
    assert (noise.configurations, noise.runs) == (4, 9)


def test_synchronous_successive_halving_keeps_the_best_1_over_eta_at_each_rung(space, named):
    trace = replay(named["sync-sh"], space, seed=0, n_workers=2, budget_epochs=8 + 4 + 2)
    first = trace.trials
    assert [t.state for t in first].count("PRUNED") == 6
    assert [t.state for t in first].count("COMPLETE") == 2
    pruned_at_1 = [t for t in first if t.state == "PRUNED" and t.epochs == 1]
    pruned_at_2 = [t for t in first if t.state == "PRUNED" and t.epochs == 2]
    done = [t for t in first if t.state == "COMPLETE"]
    assert len(pruned_at_1) == 4 and len(pruned_at_2) == 2
    fair = {t.number: space.table.run(t.run_id).fair for t in first}
    assert min(fair[t.number][0] for t in pruned_at_2 + done) >= \
        max(fair[t.number][0] for t in pruned_at_1)
    assert min(fair[t.number][1] for t in done) >= max(fair[t.number][1] for t in pruned_at_2)
    assert trace.total_epochs == 14 and all(t.epochs == EPOCHS for t in done)
    assert trace.max_running <= 2
    # a whole batch (8 distinct cells) costs 8 + 4 + 2 epochs; the budget cuts the next one
    assert len({t.cell for t in first}) == 8
    longer = replay(named["sync-sh"], space, seed=0, n_workers=2, budget_epochs=20)
    assert longer.total_epochs == 20 and longer.trials[:len(first)] == first


def test_report_grid_and_hand_grid_with_lr_on_the_cells(space):
    grid = [(0.5, 300, "rmse", 1e-4, 90), (0.3, 300, "cosine", 1e-4, 90),
            (0.5, 500, "rmse", 1e-4, 180)]  # Np and batch are not searched: a second draw
    named = exact_strategies(space, report_grid=grid)
    rep = replay(named["report-grid"], space, seed=0)
    assert sorted(t.cell for t in rep.trials) == sorted(
        [(0.5, "rmse", 1e-4), (0.3, "cosine", 1e-4), (0.5, "rmse", 1e-4)])
    hand = replay(named["hand-grid-lr"], space, seed=0)
    assert len(hand.trials) == 3 * 2
    assert {t.cell[2] for t in hand.trials} == {1e-4, 1e-3}
    assert hand.total_epochs == 6 * EPOCHS


def test_the_table_grid_costs_g_and_finds_a_cell_with_zero_regret_by_its_told_value(space,
                                                                                      named):
    for seed in range(3):
        trace = replay(named["table-grid"], space, seed)
        assert trace.total_epochs == space.grid_epochs
        assert sorted(t.cell for t in trace.trials) == sorted(space.cells)
        assert trace.incumbent.value == max(t.value for t in trace.trials)
