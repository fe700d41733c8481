"""bench/hpo_efficiency.py's statistics (issue 21) on hand-computed cases."""

from __future__ import annotations

import math

import pytest

from bench.hpo_efficiency import (
    DELTA,
    _ttt_text,
    exact_statistics,
    holm,
    median_with_misses,
    speedup,
    wilcoxon_p,
    wilson,
)


def test_wilson_interval_by_hand():
    # 8 of 10: p = 0.8, z = 1.96: centre (0.8 + 0.19208) / 1.38416, half 0.22656... / 1.38416
    lo, hi = wilson(8, 10)
    assert (lo, hi) == (pytest.approx(0.4902, abs=1e-4), pytest.approx(0.9433, abs=1e-4))
    assert wilson(0, 10)[0] == 0.0 and wilson(10, 10)[1] == pytest.approx(1.0)
    assert wilson(0, 10)[1] == pytest.approx(0.2775, abs=1e-4)


def _seed(regret_at: dict[str, float], ttt: int | None) -> dict:
    return {"regret_at": regret_at, "ttt": ttt, "trials": 10, "pruned": 0, "seconds": 0.1}


def test_success_rate_and_time_to_target_with_misses():
    g = 100
    ok, bad = DELTA, DELTA + 0.001
    per_seed = [_seed({"0.5": bad, "1": ok, "2": ok, "5": ok}, 80),
                _seed({"0.5": bad, "1": bad, "2": ok, "5": ok}, 150),
                _seed({"0.5": bad, "1": bad, "2": bad, "5": bad}, None),
                _seed({"0.5": bad, "1": bad, "2": bad, "5": bad}, None),
                _seed({"0.5": ok, "1": ok, "2": ok, "5": ok}, 40)]
    stats = exact_statistics({"a": per_seed}, g)
    row = stats["rows"]["a"]
    assert [row["success"][m]["k"] for m in ("0.5", "1", "2", "5")] == [1, 2, 3, 3]
    assert row["success"]["1"]["rate"] == 0.4
    assert row["success"]["1"]["ci"] == wilson(2, 5)
    assert row["median_ttt_G"] == 1.5 and row["reached"] == 3  # [0.4, 0.8, 1.5, inf, inf]
    assert stats["ttt_G"]["a"] == [0.8, 1.5, math.inf, math.inf, 0.4]
    # most seeds miss: the median is a miss, and the report says so
    assert median_with_misses([1.0, math.inf, math.inf]) == math.inf
    assert _ttt_text(math.inf, 1, 3) == "miss (1/3 reached)"


def test_holm_on_known_p_values():
    adjusted = holm({"a": 0.01, "b": 0.04, "c": 0.03, "d": 0.5})
    # sorted 0.01 x4 = 0.04, 0.03 x3 = 0.09, 0.04 x2 = 0.08 -> 0.09 (monotone), 0.5 x1
    assert adjusted == pytest.approx({"a": 0.04, "c": 0.09, "b": 0.09, "d": 0.5})
    assert holm({"x": 0.6, "y": 0.7}) == {"x": 1.0, "y": 1.0}


def test_bootstrap_interval_contains_the_point_estimate_and_misses_count():
    ref = [1.0, 2.0, 4.0, 3.0, 5.0, 2.5, 3.5, 1.5, 4.5, 2.0]
    other = [r / 2 for r in ref]
    point, lo, hi = speedup(ref, other)
    assert point == pytest.approx(2.0) and lo <= point <= hi
    noisy = [0.5, 3.0, 1.0, 2.5, 0.8, 1.2, 4.0, 0.3, 2.2, 1.9]
    point, lo, hi = speedup(ref, noisy)
    assert lo <= point <= hi and lo < hi
    # the reference misses in most seeds: its median is a miss, the speed-up infinite
    point, _, _ = speedup([math.inf] * 6 + [1.0] * 4, [1.0] * 10)
    assert point == math.inf


def test_wilcoxon_on_paired_regrets():
    a = [0.01 * i for i in range(1, 21)]
    assert wilcoxon_p(a, [x + 0.005 for x in a]) < 0.001
    assert wilcoxon_p(a, list(a)) == 1.0
