"""The learning-curve extrapolation pruner on real Optuna studies (in-memory storage) fed
synthetic saturating curves: curves that cross, flat bad ones, diverging ones, both directions."""

from __future__ import annotations

import math

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState

from hpo.study.config import ConfigError, build_pruner, load_study_config
from hpo.study.pruners import CurveExtrapolationPruner, extrapolate

T = 30  # epochs of every synthetic trial


def power_curve(a: float, b: float, c: float, noise: float = 0.0, seed: int = 0) -> np.ndarray:
    """Accuracy-like values a - b * t**-c at epochs 1..T, plus seeded Gaussian noise."""
    t = np.arange(1, T + 1, dtype=float)
    return a - b * t ** -c + np.random.default_rng(seed).normal(0.0, noise, T)


#: Fast starters that saturate early at 70-74 (the completed trials of most tests).
FAST = [power_curve(70 + i, 30, 1.5, noise=0.2, seed=i) for i in range(5)]
#: Slow start, best end: below every fast curve for its first epochs, above them all at the end.
CROSSING = power_curve(95, 70, 0.4, noise=0.2, seed=10)
#: Flat and bad: never near the fast curves.
FLAT = power_curve(50, 5, 1.0, noise=0.2, seed=11)


def study_with(pruner, direction: str = "maximize") -> optuna.Study:
    return optuna.create_study(storage=optuna.storages.InMemoryStorage(), pruner=pruner,
                               direction=direction)


def run_trial(study: optuna.Study, values) -> int | None:
    """Report ``values`` at steps 1, 2, ...; the step where the pruner stopped the trial (told
    PRUNED), or None (told COMPLETE with the curve's best value)."""
    trial = study.ask()
    for step, v in enumerate(values, start=1):
        trial.report(float(v), step)
        if trial.should_prune():
            study.tell(trial, state=TrialState.PRUNED)
            return step
    finite = [v for v in values if math.isfinite(v)]
    best = max(finite) if study.direction == optuna.study.StudyDirection.MAXIMIZE else min(finite)
    study.tell(trial, float(best))
    return None


def test_crossing_curve_survives_where_the_median_rule_prunes_it():
    assert (CROSSING[:5] < np.min([c[:5] for c in FAST], axis=0)).all()  # it starts worst
    assert CROSSING.max() > max(c.max() for c in FAST)  # and ends best
    median = study_with(optuna.pruners.MedianPruner(n_startup_trials=4))
    extrap = study_with(CurveExtrapolationPruner(max_resource=T))
    for curve in FAST:
        assert run_trial(median, curve) is None and run_trial(extrap, curve) is None
    assert run_trial(median, CROSSING) == 1
    assert run_trial(extrap, CROSSING) is None
    assert extrap.best_value == pytest.approx(CROSSING.max())


def test_flat_bad_curve_is_pruned_at_min_steps():
    study = study_with(CurveExtrapolationPruner(max_resource=T))
    for curve in FAST:
        run_trial(study, curve)
    assert run_trial(study, FLAT) == 3
    pruned = study.trials[-1]
    assert pruned.state == TrialState.PRUNED and pruned.last_step == 3


def test_no_pruning_before_n_startup_trials_complete():
    study = study_with(CurveExtrapolationPruner(n_startup_trials=4, max_resource=T))
    for curve in FAST[:3]:
        run_trial(study, curve)
    assert run_trial(study, FLAT) is None  # 3 completed (+ itself, running): kept to the end
    # FLAT has now completed as the 4th: the next flat curve is pruned
    assert run_trial(study, FLAT - 1.0) == 3


@pytest.mark.parametrize("min_steps", [3, 5, 12])
def test_no_pruning_before_min_steps(min_steps):
    study = study_with(CurveExtrapolationPruner(min_steps=min_steps, max_resource=T))
    for curve in FAST:
        run_trial(study, curve)
    assert run_trial(study, FLAT) == min_steps


def test_minimise_direction():
    loss = [100.0 - c for c in FAST]
    study = study_with(CurveExtrapolationPruner(max_resource=T), direction="minimize")
    for curve in loss:
        assert run_trial(study, curve) is None
    assert run_trial(study, 100.0 - CROSSING) is None
    assert run_trial(study, 100.0 - FLAT) == 3


def test_diverged_curve_is_pruned_after_min_steps():
    study = study_with(CurveExtrapolationPruner(max_resource=T))
    for curve in FAST:
        run_trial(study, curve)
    late = CROSSING.copy()
    late[7:] = np.nan
    assert run_trial(study, late) == 8
    early = CROSSING.copy()
    early[0] = np.inf
    assert run_trial(study, early) == 3  # not at step 1: min_steps first


def test_learnt_margin_keeps_what_a_zero_margin_prunes():
    # completed trials that jump by 15 at epoch 21: cut before it, they extrapolate far too
    # low, so the learnt margin is about 15 up to epoch 20 and keeps a trial that ends a
    # little above their pre-jump level; a zero margin prunes it at once
    jumpy = [np.concatenate([c[:20], c[20:] + 15.0]) for c in FAST[:4]]
    middling = power_curve(74.5, 30, 1.5, noise=0.2, seed=20)
    learnt = study_with(CurveExtrapolationPruner(max_resource=T))
    fixed = study_with(CurveExtrapolationPruner(max_resource=T, margin=0.0))
    for curve in jumpy:
        run_trial(learnt, curve)
        run_trial(fixed, curve)
    assert run_trial(fixed, middling) == 3
    # from epoch 21 the completed curves show their jump: the margin shrinks, the trial goes
    assert run_trial(learnt, middling) == 21


def test_top_k_keeps_trials_that_could_reach_the_top_k():
    done = [power_curve(70 + i, 30, 1.5) for i in range(5)]  # noise-free: ends 69.8 .. 73.8
    third = power_curve(72.5, 30, 1.5)  # would rank third
    top1 = study_with(CurveExtrapolationPruner(max_resource=T, margin=0.0))
    top3 = study_with(CurveExtrapolationPruner(max_resource=T, margin=0.0, top_k=3))
    top2 = study_with(CurveExtrapolationPruner(max_resource=T, margin=0.0, top_k=2))
    for curve in done:
        run_trial(top1, curve)
        run_trial(top2, curve)
        run_trial(top3, curve)
    assert run_trial(top1, third) == 3
    assert run_trial(top2, third) == 3
    assert run_trial(top3, third) is None


def test_auto_max_resource_is_the_longest_completed_curve():
    # completed trials ran 10 epochs; CROSSING extrapolated only to 10 cannot beat them
    short = [c[:10] for c in FAST]
    auto = study_with(CurveExtrapolationPruner(margin=0.0))
    to_30 = study_with(CurveExtrapolationPruner(margin=0.0, max_resource=T))
    for curve in short:
        run_trial(auto, curve)
        run_trial(to_30, curve)
    assert run_trial(auto, CROSSING[:10]) is not None
    assert run_trial(to_30, CROSSING[:10]) is None


def test_extrapolate_recovers_a_power_law_from_its_first_epochs():
    t = np.arange(1, T + 1)
    for a, b, c in [(90, 60, 0.4), (75, 30, 1.5), (60, 10, 0.8)]:
        y = a - b * t ** -c
        for k in (4, 8, 15):
            assert extrapolate(t[:k], y[:k], T) == pytest.approx(y[-1], abs=0.3)
    y = 90 - 60 * t ** -0.4
    assert extrapolate(t[:5], y[:5], 5) == pytest.approx(y[4])  # no horizon: its best
    assert math.isnan(extrapolate([1, 2, 3], [np.nan] * 3, T))
    assert extrapolate([1, 2, 3], [5.0, 4.0, 3.0], T) == 5.0  # getting worse: its best


def test_registered_in_study_config_with_max_resource_from_the_epochs():
    cfg = load_study_config("demo").override({"pruner": {"name": "extrapolation"}})
    pruner = build_pruner(cfg)
    assert isinstance(pruner, CurveExtrapolationPruner)
    assert pruner.max_resource == max(cfg.space["epochs"].values())
    given = cfg.override({"pruner": {"name": "extrapolation",
                                     "options": {"max_resource": 99, "top_k": 2}}})
    assert (build_pruner(given).max_resource, build_pruner(given).top_k) == (99, 2)


@pytest.mark.parametrize("options, message", [
    ({"min_steps": 2}, "min_steps must be an integer >= 3"),
    ({"top_k": 0}, "top_k must be an integer >= 1"),
    ({"margin": -1}, "margin must be a number >= 0"),
    ({"margin_quantile": 1.5}, "margin_quantile must be in [0, 1]"),
    ({"n_warmup_steps": 5}, "unexpected keyword argument 'n_warmup_steps'"),
])
def test_bad_options_fail_when_the_study_is_read(options, message):
    with pytest.raises(ConfigError, match=r"pruner\.options: .*" + _escape(message)):
        load_study_config("demo").override(
            {"pruner": {"name": "extrapolation", "options": options}})


def _escape(text: str) -> str:
    import re

    return re.escape(text)


def _state_bytes(pruner: CurveExtrapolationPruner) -> int:
    """What the pruner keeps between calls, in bytes (pickled)."""
    import pickle

    return len(pickle.dumps(pruner))


def test_learnt_margin_memory_follows_the_completed_curves_not_steps_times_curves():
    # every step of a kept trial learns the margin from each completed curve cut there: what is
    # remembered must grow with the completed trials' points, not with points x steps
    n = 300
    t = np.arange(1, n + 1, dtype=float)
    done = [70 + i - 30 * t ** -1.5 for i in range(5)]
    pruner = CurveExtrapolationPruner(max_resource=n)
    study = study_with(pruner)
    empty = _state_bytes(pruner)
    for curve in done:
        run_trial(study, curve)
    assert run_trial(study, 95 - 70 * t ** -0.4) is None  # kept: asked at every step
    points = sum(c.size for c in done)
    assert _state_bytes(pruner) - empty < 16 * points + 1024 * len(done)


def test_a_pruner_reused_by_another_study_keeps_nothing_of_the_first():
    reused = CurveExtrapolationPruner(max_resource=T)
    first = study_with(reused)
    for curve in FAST:
        run_trial(first, curve)
    run_trial(first, CROSSING)
    fresh = CurveExtrapolationPruner(max_resource=T)
    second, alone = study_with(reused), study_with(fresh)
    jumpy = [np.concatenate([c[:20], c[20:] + 15.0]) for c in FAST[:4]]
    middling = power_curve(74.5, 30, 1.5, noise=0.2, seed=20)
    for curve in jumpy:
        assert run_trial(second, curve) == run_trial(alone, curve)
    assert run_trial(second, middling) == run_trial(alone, middling) == 21
    assert _state_bytes(reused) == _state_bytes(fresh)


def test_each_completed_curve_is_extrapolated_once_per_cut(monkeypatch):
    import hpo.study.pruners as pruners

    calls = []
    real = pruners.extrapolate
    monkeypatch.setattr(pruners, "extrapolate", lambda *a, **k: calls.append(a) or real(*a, **k))
    pruner = CurveExtrapolationPruner(max_resource=T, n_startup_trials=len(FAST))
    study = study_with(pruner)
    for curve in FAST:  # not judged: fewer than n_startup_trials completed
        run_trial(study, curve)
    trial = study.ask()
    for step, v in enumerate(CROSSING[:6], start=1):
        trial.report(float(v), step)
    frozen = study.trials[-1]
    calls.clear()
    assert not pruner.prune(study, frozen)
    assert len(calls) == 1 + len(FAST)  # the trial's own, and each completed curve cut at 6
    calls.clear()
    assert not pruner.prune(study, frozen)
    assert len(calls) == 1  # the completed curves' errors at step 6 are remembered


def test_a_completed_curve_with_no_value_before_a_step_teaches_nothing_there():
    pruner = CurveExtrapolationPruner(max_resource=T)
    steps = np.arange(1, T + 1)
    holey = FAST[0].copy()
    holey[:4] = np.nan  # finite from epoch 5: cut at 4 it predicts nothing
    curves = [(steps, c) for c in FAST[1:]]
    alone = pruner._learnt_margin(curves, 4)
    assert alone is not None
    for _ in range(2):  # computed, then remembered as "no prediction", not as an error
        assert pruner._learnt_margin([(steps, holey), *curves], 4) == alone
    assert pruner._learnt_margin([(steps, holey)], 4) is None
