"""``--pack auto`` (:func:`hpo.execution.packed.auto_pack`): K from measured steps within the
memory bound.

The choice is tested with injected step times (seconds per step of a pack of K); one real call
times tiny networks on this CPU; ``run_worker`` runs the plain worker when auto measures 1.
"""

from __future__ import annotations

import logging

import pytest
import torch
from optuna.trial import TrialState

from hpo.execution import packed
from hpo.execution.packed import AUTO_BUDGET_S, AUTO_STEPS, auto_pack, step_seconds, timing_config
from hpo.execution.run import run_worker
from hpo.study.config import study_config_from_dict
from model.config import TrainConfig


@pytest.fixture(autouse=True)
def _fresh_cache(monkeypatch):
    """Each test measures anew (auto_pack caches its answers per process)."""
    monkeypatch.setattr(packed, "_measured", {})


def _timer(seconds: dict[int, float]):
    """A fake ``step_time``: the given seconds per step of each K; records the Ks timed."""
    calls: list[int] = []

    def step_time(config, k):
        calls.append(k)
        value = seconds[k]
        if isinstance(value, BaseException):
            raise value
        return value

    step_time.calls = calls  # type: ignore[attr-defined]
    return step_time


CPU = TrainConfig(device="cpu", num_threads=1)


FASTER = {k: 0.001 for k in (1, 2, 4, 8, 16)}  # same step time whatever K: packs always win
STEP = AUTO_BUDGET_S / (1 + AUTO_STEPS) / 3.5  # K=1 and K=2 of it take 3/3.5 of the budget


@pytest.mark.parametrize("seconds, limit, k, timed, logged", [
    # rates 100, 167, 250, 200 trial-steps/s: K=4 wins; 8 is slower, so 16 is not timed
    ({1: 0.010, 2: 0.012, 4: 0.016, 8: 0.040, 16: 0.001}, 32, 4, [1, 2, 4, 8],
     "K=4: 0.016 s/step, 250 trial-steps/s"),
    # the CPU's case (bench/pack_speed.py): a pack of 2 steps in 3x the lone step
    ({1: 0.010, 2: 0.030, 4: 0.001}, 8, 1, [1, 2], "-> K=1, the plain worker"),
    # 2% more trial-steps per second is noise: the smaller K stays
    ({1: 0.010, 2: 0.0196, 4: 0.0392}, 4, 1, [1, 2, 4], "-> K=1"),
    # the memory bound
    (FASTER, 8, 8, [1, 2, 4, 8], "(at most 8)"),
    # out of memory before the bound
    ({**FASTER, 8: torch.OutOfMemoryError("CUDA out of memory")}, 16, 4, [1, 2, 4, 8],
     "K=8: out of memory"),
    # steps growing with K (same rate): K=4's would pass the budget
    ({1: STEP, 2: 2 * STEP, 4: 4 * STEP}, 8, 1, [1, 2], "K=4 not timed"),
], ids=["best-rate", "packs-slower", "margin", "memory-bound", "out-of-memory", "budget"])
def test_the_k_with_the_most_trial_steps_per_second_wins(caplog, seconds, limit, k, timed,
                                                         logged):
    timer = _timer(seconds)
    with caplog.at_level(logging.INFO, "specopt"):
        assert auto_pack(CPU, step_time=timer, limit=limit) == k
    assert timer.calls == timed
    assert logged in caplog.text and f"-> K={k}" in caplog.text


def test_answers_are_cached_per_shape():
    timer = _timer({1: 0.010, 2: 0.005, 4: 0.020})
    assert auto_pack(CPU, step_time=timer, limit=4) == 2
    assert auto_pack(CPU, step_time=timer, limit=4) == 2
    assert timer.calls == [1, 2, 4]  # measured once
    other = TrainConfig(device="cpu", num_threads=1, batch_size=45)
    assert auto_pack(other, step_time=timer, limit=4) == 2
    assert timer.calls == [1, 2, 4] * 2


def test_timing_config_takes_the_studys_shape(tmp_path):
    study = study_config_from_dict({
        "name": "shape", "storage": f"sqlite:///{tmp_path}/s.db",
        "budget": {"n_trials": 1}, "train": {"device": "cpu", "amp": "off", "num_threads": 1},
        "space": {"channels": [[8, 12], [16, 24]], "batch_size": {"low": 30, "high": 120},
                  "n_points": 500, "lr": {"low": 1e-4, "high": 1e-2, "log": True}}})
    config = timing_config(study)
    assert (config.channels, config.batch_size, config.n_points) == ((8, 12), 30, 500)
    assert (config.device, config.amp, config.num_threads) == ("cpu", "off", 1)
    assert config.lr == TrainConfig().lr  # not a shape field: the default
    # a worker's --device is set in the study's [train]
    assert timing_config(study.override(device="cuda")).device == "cuda"


def test_a_real_measurement_on_this_cpu(caplog):
    """Tiny networks timed for real: a positive step time, K=1 and the answer logged."""
    config = TrainConfig(device="cpu", num_threads=1, channels=(4, 8), batch_size=16,
                         n_points=50)
    assert 0 < step_seconds(config, 1) < 5 and 0 < step_seconds(config, 2) < 5
    with caplog.at_level(logging.INFO, "specopt"):
        k = auto_pack(config, limit=2)
    assert k in (1, 2)
    assert "--pack auto on cpu (at most 2): K=1: " in caplog.text and f"-> K={k}" in caplog.text


def _value(trial, config, should_stop):
    return trial.suggest_float("x", 0, 1)


@pytest.mark.parametrize("pack_faster", [False, True])
def test_run_worker_with_auto_runs_the_plain_worker_when_packs_are_slower(
        tmp_path, monkeypatch, caplog, pack_faster):
    """run_worker(pack="auto") measures (here: a fake step time) and runs a plain Worker when
    K=1 wins, a PackedWorker with the measured K otherwise; the study completes either way."""
    seconds = {1: 0.010, 2: 0.006 if pack_faster else 0.030, 4: 0.030}
    monkeypatch.setattr(packed, "step_seconds", lambda config, k: seconds[k])
    monkeypatch.setattr(packed, "memory_slots", lambda device: 4)
    cfg = study_config_from_dict({
        "name": "auto", "storage": f"sqlite:///{tmp_path}/s.db", "sampler": {"name": "random"},
        "pruner": {"name": "none"}, "budget": {"n_trials": 3}, "train": {"device": "cpu"}})
    with caplog.at_level(logging.INFO, "specopt"):
        summary = run_worker(cfg, objective_fn=_value, pack="auto", handle_signals=False)
    assert summary.completed == 3
    assert ("packing up to" in caplog.text) == pack_faster  # the PackedWorker's first line
    assert ("packing up to 2 trials" in caplog.text) == pack_faster
    from tests.support import study_trials

    assert [t.state for t in study_trials("auto", cfg.storage)] == [TrialState.COMPLETE] * 3
