"""studies/levels-vs-spectra: the output head searched with loss and learning rate. The shipped
file validates, and a tiny version of it (its sampler, pruner and space; 200 molecules, 2
epochs) runs one trial per head on real data through a real worker."""

from __future__ import annotations

import math
import os

import pytest
from optuna.trial import TrialState

from hpo.execution.run import run_worker
from hpo.study.config import load_study_config
from hpo.study.create import create_study
from model.contract import LOSSES, OUTPUT_HEADS

pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")


def test_the_study_file_searches_the_head_with_loss_and_lr():
    cfg = load_study_config("levels-vs-spectra")
    assert cfg.searched() == ["output_head", "loss", "lr"]
    assert cfg.space["output_head"].values() == ["linear", "softplus", "levels"]
    assert set(cfg.space["output_head"].values()) == set(OUTPUT_HEADS)
    assert cfg.space["loss"].values() == list(LOSSES)
    assert cfg.space["lr"].kind == "range" and cfg.space["lr"].log
    assert cfg.objectives == ("fair_accuracy",) and cfg.objective_split == "test"
    # every head trains on the same data for the same epochs, at the report's sigma and Np
    fixed = cfg.fixed()
    assert (fixed["sigma"], fixed["n_points"], fixed["batch_size"]) == (0.5, 300, 90)
    assert fixed["subset"] == 20000 and fixed["epochs"] == 100
    assert cfg.reference_sigma_value == 0.5 and cfg.n_trials == 60


@pytest.mark.slow
def test_a_tiny_version_runs_one_trial_per_head(tmp_path, monkeypatch):
    monkeypatch.setenv("SPECOPT_HOME", str(tmp_path))
    cfg = load_study_config("levels-vs-spectra").override(  # no pruning: all three finish
        {"pruner": {"name": "none"}}, epochs=2, subset=200, n_trials=3,
        dataset=os.environ.get("SPECOPT_TEST_DATASET"))
    study = create_study(cfg)
    for head, loss in zip(OUTPUT_HEADS, ("rmse", "sid", "wasserstein"), strict=True):
        study.enqueue_trial({"output_head": head, "loss": loss, "lr": 1e-3})
    summary = run_worker(cfg.override(num_threads=1), handle_signals=False)
    assert summary.completed == 3 and summary.failed == 0
    trials = create_study(cfg).get_trials()
    assert sorted(t.params["output_head"] for t in trials) == sorted(OUTPUT_HEADS)
    for t in trials:
        assert t.state == TrialState.COMPLETE
        metrics = t.user_attrs["metrics"]
        assert math.isfinite(t.value) and t.value <= 1
        assert t.value == pytest.approx(t.user_attrs["selection_metrics"]["fair_accuracy"])
        assert {"negative_share", "wasserstein_eV", "level_error_eV"} <= set(metrics)
        if t.params["output_head"] != "linear":  # softplus and levels: never negative
            assert metrics["negative_share"] == 0.0
        if t.params["output_head"] == "levels":
            # it starts from the mean training levels: near the mean spectrum at once, where
            # the two spectrum heads after two epochs on 180 molecules may still be far off
            # (softplus with SID, which fixes no scale, even below zero)
            assert t.value > 0.8
