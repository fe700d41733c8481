"""``specopt export-mlflow``: a real tiny study (one complete trial, one pruned at its first
epoch, trained by ``hpo.execution.objective.objective`` with a real artifact store) written to a
real
local MLflow tracking store (SQLite) and read back with ``MlflowClient``."""

from __future__ import annotations

import json
import sys

import optuna
import pytest
from typer.testing import CliRunner

from hpo.cli import app
from tests.support import small_study_config

mlflow = pytest.importorskip("mlflow")  # the test extra installs it (mlflow-skinny)

pytestmark = pytest.mark.slow  # MLflow creates its SQLite schema (a few seconds)


class PruneTrial(optuna.pruners.BasePruner):
    """Prunes one trial at its first report, whatever its value."""

    def __init__(self, number: int) -> None:
        self.number = number

    def prune(self, study, trial) -> bool:
        return trial.number == self.number


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(study name, storage URL, artifact folder) of 2 real trials: #0 complete, #1 pruned."""
    from hpo.execution.objective import objective
    from hpo.storage.artifacts import AtomicFileSystemArtifactStore
    from hpo.study.create import create_study

    root = tmp_path_factory.mktemp("mlflow-study")
    cfg = small_study_config(root, "mlf", {"loss": "rmse", "sigma": 0.5, "epochs": 2}, 2)
    create_study(cfg)
    study = optuna.load_study(study_name="mlf", storage=cfg.storage, pruner=PruneTrial(1))
    artifacts = root / "artifacts" / "mlf"
    artifacts.mkdir(parents=True, exist_ok=True)
    store = AtomicFileSystemArtifactStore(str(artifacts))
    study.optimize(lambda t: objective(t, cfg, artifact_store=store), n_trials=2)
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE,
                                               optuna.trial.TrialState.PRUNED]
    return "mlf", cfg.storage, artifacts


def _export(tiny, uri, *extra):
    name, url, artifacts = tiny
    return CliRunner().invoke(app, ["export-mlflow", name, "--storage", url, "--artifacts",
                                    str(artifacts), "--tracking-uri", uri, *extra])


def _runs(client, experiment):
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], max_results=100)
    return {int(r.data.tags["specopt.trial"]): r for r in runs}


def test_every_trial_round_trips_through_a_real_mlflow_store(tiny, tmp_path):
    from mlflow import MlflowClient

    from hpo.report.data import read_artifact
    from hpo.study.create import open_study

    uri = f"sqlite:///{tmp_path / 'ml' / 'mlflow.db'}"
    r = _export(tiny, uri, "--experiment", "tiny-exp")
    assert r.exit_code == 0, r.output
    assert "MLflow: 2 runs in experiment 'tiny-exp'" in r.output and "2 new" in r.output
    client = MlflowClient(tracking_uri=uri)
    runs = _runs(client, "tiny-exp")
    assert sorted(runs) == [0, 1]
    opened = open_study("mlf", tiny[1], tiny[2])
    complete, pruned = opened.study.trials

    run = runs[0]
    assert run.info.status == "FINISHED" and runs[1].info.status == "KILLED"
    assert run.data.tags["specopt.state"] == "complete"
    assert runs[1].data.tags["specopt.state"] == "pruned"
    assert run.data.tags["specopt.study"] == "mlf" and run.info.run_name == "mlf #0"
    # params: every training setting of the trial
    assert run.data.params["loss"] == "rmse" and float(run.data.params["sigma"]) == 0.5
    assert int(run.data.params["epochs"]) == 2 and int(run.data.params["subset"]) == 200
    # final metrics: held-out (validation), model-selection (test) split, the objective
    m = run.data.metrics
    assert m["validation_accuracy"] == pytest.approx(complete.user_attrs["metrics"]["accuracy"])
    assert m["objective_fair_accuracy"] == pytest.approx(complete.value)
    assert "selection_fair_accuracy" in m and m["epochs_run"] == 2
    # curves, step = epoch: both epochs of #0, the one epoch #1 ran before it was pruned
    loss = client.get_metric_history(run.info.run_id, "test_loss")
    assert [p.step for p in loss] == [1, 2]
    acc = client.get_metric_history(runs[1].info.run_id, "test_fair_accuracy")
    assert [p.step for p in acc] == [1]
    history = json.loads(read_artifact(opened.artifact_store, opened.study, complete,
                                       "history.json"))
    assert [p.value for p in loss] == pytest.approx([e["test_loss"] for e in history])
    # artifacts, byte for byte as the study's store has them
    names = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert names == {"checkpoint.pt", "predictions.npz", "history.json"}
    assert {a.path for a in client.list_artifacts(runs[1].info.run_id)} == {"history.json"}
    got = client.download_artifacts(run.info.run_id, "checkpoint.pt", str(tmp_path))
    assert open(got, "rb").read() == read_artifact(opened.artifact_store, opened.study,
                                                   complete, "checkpoint.pt")
    # a local SQLite store keeps its artifacts beside it, not in the working folder
    assert (tmp_path / "ml" / "mlflow-artifacts").is_dir()

    # again: nothing duplicated
    r = _export(tiny, uri, "--experiment", "tiny-exp")
    assert r.exit_code == 0, r.output
    assert "0 new, 0 replaced (changed since), 2 unchanged" in r.output
    assert {n: x.info.run_id for n, x in _runs(client, "tiny-exp").items()} == \
        {n: x.info.run_id for n, x in runs.items()}

    # a run exported from another state of its trial is replaced, never doubled
    client.set_tag(runs[1].info.run_id, "specopt.digest", "older")
    r = _export(tiny, uri, "--experiment", "tiny-exp")
    assert r.exit_code == 0 and "0 new, 1 replaced (changed since), 1 unchanged" in r.output
    after = _runs(client, "tiny-exp")
    assert sorted(after) == [0, 1] and after[1].info.run_id != runs[1].info.run_id
    assert after[0].info.run_id == runs[0].info.run_id

    # a trial still running is left for later; once over, the next export adds it
    study = optuna.load_study(study_name="mlf", storage=tiny[1])
    trial = study.ask()
    r = _export(tiny, uri, "--experiment", "tiny-exp")
    assert r.exit_code == 0 and "not exported (running or waiting" in r.output
    assert f"#{trial.number}" in r.output
    study.tell(trial, state=optuna.trial.TrialState.FAIL)
    r = _export(tiny, uri, "--experiment", "tiny-exp")
    assert r.exit_code == 0 and "1 new, 0 replaced (changed since), 2 unchanged" in r.output
    assert _runs(client, "tiny-exp")[trial.number].info.status == "FAILED"


def test_default_store_is_in_the_home_and_experiment_is_the_study(tiny, tmp_path, monkeypatch):
    from mlflow import MlflowClient

    name, url, artifacts = tiny
    monkeypatch.setenv("SPECOPT_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    r = CliRunner().invoke(app, ["export-mlflow", name, "--storage", url, "--artifacts",
                                 str(artifacts)])
    assert r.exit_code == 0, r.output
    db = tmp_path / "home" / "mlflow.db"
    assert db.is_file() and "experiment 'mlf'" in r.output
    finished = [t.number for t in optuna.load_study(study_name=name, storage=url).trials
                if t.state.is_finished()]  # 0 and 1, and any a test before added
    assert sorted(_runs(MlflowClient(tracking_uri=f"sqlite:///{db}"), "mlf")) == finished
    assert (tmp_path / "home" / "mlflow-artifacts").is_dir()


def test_missing_mlflow_is_a_clear_error(tiny, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # import mlflow raises ImportError
    r = _export(tiny, f"sqlite:///{tmp_path / 'x.db'}")
    assert r.exit_code == 2 and "Traceback" not in r.output
    assert r.output.startswith("error: ") and "MLflow" in r.output, r.output
    assert "pip install 'specopt[mlflow]'" in r.output  # the fix named
    assert not (tmp_path / "x.db").exists()
