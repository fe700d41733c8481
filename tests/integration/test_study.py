"""Real tiny studies on SQLite: the objective trains through model.train on real molecules.

The worker fault tests (SIGKILL, SIGINT/SIGTERM) on every storage: tests/test_hpo_worker_faults.py.
"""

from __future__ import annotations

import os

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState

from hpo.execution.launch import worker_plan
from hpo.execution.run import run_worker
from hpo.report.data import history_of
from hpo.study.config import load_study_config
from hpo.study.create import create_study
from tests.support import small_study_config, write_study

pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")


@pytest.mark.slow
def test_tiny_real_study_records_metrics_and_artifacts(tmp_path):
    url = f"sqlite:///{tmp_path}/tiny.db"
    path = write_study(tmp_path / "tiny.toml", "tiny", storage=url, artifacts=tmp_path / "art",
                       space={"sigma": [0.3, 0.5], "loss": "rmse", "lr": 1e-3, "epochs": 2,
                              "subset": 200, "seed": 3})
    cfg = load_study_config(path)
    summary = run_worker(cfg.override(num_threads=1), handle_signals=False)
    assert summary.completed == 2 and summary.failed == 0

    study = create_study(cfg)
    assert study.user_attrs["reference_sigma"] == 0.5
    trials = study.get_trials()
    assert sorted(t.params["sigma"] for t in trials) == [0.3, 0.5]
    for t in trials:
        a = t.user_attrs
        assert t.state == TrialState.COMPLETE
        assert {"accuracy", "fair_accuracy", "rmse", "r2", "wasserstein_eV"} <= set(a["metrics"])
        assert a["status"] in ("completed", "early_stopped") and a["seed"] == 3
        assert a["device"] == "cpu" and a["seconds_per_epoch"] > 0
        assert "history" not in a  # compact attributes: the history is the artifact's
        h = history_of(t, study)
        assert len(h) == 2 and h[0]["epoch"] == 1
        assert a["dataset"]["molecules"] == 200 and len(a["dataset"]["fingerprint"]) == 16
        assert a["params"]["epochs"] == 2 and a["params"]["sigma"] == t.params["sigma"]
        # the objective: sigma-fair accuracy on the test split at the best epoch
        assert t.value == pytest.approx(a["selection_metrics"]["fair_accuracy"])
        assert len(t.intermediate_values) == 2
        # artifacts: checkpoint and validation predictions
        assert set(a["artifacts"]) == {"checkpoint.pt", "predictions.npz", "history.json"}
        out = tmp_path / f"pred{t.number}.npz"
        optuna.artifacts.download_artifact(
            artifact_store=optuna.artifacts.FileSystemArtifactStore(str(tmp_path / "art")),
            artifact_id=a["artifacts"]["predictions.npz"], file_path=str(out))
        with np.load(out) as f:
            assert f["pred"].shape == f["target"].shape == (a["dataset"]["validation"],
                                                             len(f["grid"]))
            assert len(f["index"]) == a["dataset"]["validation"]
    # at the reference width itself, fair accuracy is the report's accuracy
    wide = next(t for t in trials if t.params["sigma"] == 0.5)
    m = wide.user_attrs["metrics"]
    assert m["fair_accuracy"] == pytest.approx(m["accuracy"], abs=1e-4)


@pytest.mark.slow
def test_two_objectives(tmp_path):
    url = f"sqlite:///{tmp_path}/p.db"
    path = write_study(tmp_path / "p.toml", "p", storage=url, sampler="nsga2", n_trials=2,
                       space={"sigma": [0.2, 0.4], "epochs": 1, "subset": 200, "lr": 1e-3})
    text = path.read_text().replace('name = "p"\n', 'name = "p"\nobjectives = '
                                    '["fair_accuracy", "sigma"]\ndirections = '
                                    '["maximize", "minimize"]\n', 1)
    path.write_text(text)
    cfg = load_study_config(path)
    assert run_worker(cfg.override(num_threads=1), handle_signals=False).completed == 2
    for t in create_study(cfg).get_trials():
        assert t.values[1] == t.params["sigma"] and 0 < t.values[0] <= 1


@pytest.mark.slow
def test_skill_is_a_study_objective(tmp_path):
    """Objective ``skill`` (the share of the mean training spectrum's error removed): maximised,
    reported every epoch to Optuna, and each trial records the baseline it is measured against
    (a cosine run's judged on the mean spectrum scaled to each target, as its predictions)."""
    cfg = small_study_config(tmp_path, "skill", {"loss": ["rmse", "cosine"], "sigma": 0.3,
                                                 "seed": 3}, 2, sampler={"name": "grid"},
                             objectives=["skill"])
    assert cfg.directions == ("maximize",)
    assert run_worker(cfg.override(num_threads=1), handle_signals=False).completed == 2
    study = create_study(cfg)
    accuracy = {}
    for t in study.get_trials():
        a = t.user_attrs
        base = a["baseline"]
        assert set(base) == {"test", "validation"} and "level_error_eV" in base["validation"]
        sel, val = a["selection_metrics"], a["metrics"]
        assert t.value == pytest.approx(sel["skill"])
        assert sel["skill"] == pytest.approx(
            1 - (1 - sel["fair_accuracy"]) / (1 - base["test"]["fair_accuracy"]), rel=1e-4)
        assert val["skill"] == pytest.approx(
            1 - (1 - val["fair_accuracy"]) / (1 - base["validation"]["fair_accuracy"]), rel=1e-4)
        history = history_of(t, study)
        assert [t.intermediate_values[h["epoch"]] for h in history] == pytest.approx(
            [h["test_metrics"]["skill"] for h in history])
        accuracy[t.params["loss"]] = base["test"]["accuracy"]
    assert accuracy["rmse"] != pytest.approx(accuracy["cosine"])


def test_worker_plan_divides_gpus_and_cores():
    cpu = worker_plan(3, gpus=0, cores=8)
    assert [w["env"]["CUDA_VISIBLE_DEVICES"] for w in cpu] == ["", "", ""]
    assert {w["threads"] for w in cpu} == {2} and {w["device"] for w in cpu} == {"cpu"}
    gpu = worker_plan(3, gpus=2, cores=2)
    assert [w["env"]["CUDA_VISIBLE_DEVICES"] for w in gpu] == ["0", "1", "0"]
    assert {w["threads"] for w in gpu} == {1} and gpu[0]["env"]["OMP_NUM_THREADS"] == "1"
    with pytest.raises(ValueError):
        worker_plan(0)


@pytest.mark.slow
def test_demo_study_runs_on_real_data(tmp_path, monkeypatch):
    """The demo definition itself, shrunk: every searched parameter goes through training."""
    monkeypatch.setenv("SPECOPT_HOME", str(tmp_path))
    cfg = load_study_config("demo").override(
        epochs=1, subset=200, n_trials=2, dataset=os.environ.get("SPECOPT_TEST_DATASET"))
    s = run_worker(cfg.override(num_threads=1), handle_signals=False)
    assert s.completed + s.pruned == 2
    assert (tmp_path / "demo.db").is_file()


def test_worker_storage_option_wins_over_the_environment(tmp_path, monkeypatch):
    """``launch`` hands workers the URL in $SPECOPT_STORAGE; a --storage typed by a person
    still decides where a worker writes."""
    from typer.testing import CliRunner

    from hpo.cli import app

    monkeypatch.setenv("SPECOPT_HOME", str(tmp_path))
    monkeypatch.setenv("SPECOPT_STORAGE", f"sqlite:///{tmp_path / 'from-env.db'}")
    study = write_study(tmp_path / "s.toml", "s", space={"epochs": 1, "subset": 200},
                        storage=f"sqlite:///{tmp_path / 'from-file.db'}", sampler="random",
                        n_trials=1)
    r = CliRunner().invoke(app, ["worker", str(study), "--storage",
                                 f"sqlite:///{tmp_path / 'typed.db'}", "--num-threads", "1"])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "typed.db").is_file()
    assert not (tmp_path / "from-env.db").exists() and not (tmp_path / "from-file.db").exists()
