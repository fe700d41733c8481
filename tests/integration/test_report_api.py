"""The report package's public API, opening an existing study for reading (``hpo.study.
open_study``, with its artifact store) and the dashboard's address."""

from __future__ import annotations

import importlib
import inspect
import re
from pathlib import Path

import optuna
import pytest

import hpo.report
from hpo.observe.dashboard import dashboard_url
from hpo.report.data import history_of
from hpo.storage.artifacts import open_artifact_store
from hpo.study.create import create_study, open_study
from model.contract import ArtifactName, StudyAttr
from model.errors import ReportError
from tests.support import small_study_config as study_config


def test_public_api_imports():
    """Every name in ``hpo.report.__all__`` exists, is a function or class, and is documented;
    the flat modules it replaced are gone."""
    api = {"write_report", "export_best", "best_trial_table", "ReportPaths", "ExportPaths",
           "predict_xyz", "PredictPaths", "ReportError", "study_message"}
    assert api <= set(hpo.report.__all__)
    for name in hpo.report.__all__:
        obj = getattr(hpo.report, name)
        assert inspect.isfunction(obj) or inspect.isclass(obj), name
        assert inspect.getdoc(obj), name
    assert hpo.report.ReportError is ReportError
    for old in ("report_data", "report_tables", "report_figures", "report_html",
                "report_predict"):
        with pytest.raises(ModuleNotFoundError):
            importlib.import_module(f"hpo.{old}")


def test_report_modules_restate_no_contract_fact():
    """Attribute keys and artifact names come from model.contract, not string literals, in
    every module of hpo."""
    folder = Path(hpo.report.__file__).parent.parent
    facts = [StudyAttr.CONFIG, StudyAttr.IDENTITY, StudyAttr.ARTIFACT_STORE,
             ArtifactName.CHECKPOINT, ArtifactName.PREDICTIONS, ArtifactName.HISTORY]
    for path in folder.rglob("*.py"):
        text = path.read_text()
        for fact in facts:
            assert not re.search(rf"[\"']{re.escape(fact)}[\"']", text), (path.name, fact)


def _create(root: Path, artifacts: Path) -> optuna.Study:
    cfg = study_config(root, "opened", {"loss": "rmse", "sigma": [0.5, 0.3]}, 2)
    return create_study(cfg.model_copy(update={"artifacts": str(artifacts)}))


def test_open_study_from_a_config_finds_its_artifact_folder(tmp_path):
    """A StudyConfig opens its study; the artifacts come from the folder the study recorded,
    else from the study file's folder, unless a folder is given (which must exist)."""
    recorded = tmp_path / "recorded"
    _create(tmp_path, recorded)  # the recorded folder does not exist (yet)
    cfg = study_config(tmp_path, "opened", {"loss": "rmse", "sigma": [0.5, 0.3]}, 2)
    opened = open_study(cfg)
    assert opened.study.study_name == "opened"
    assert opened.study.user_attrs[StudyAttr.ARTIFACT_STORE] == str(recorded.resolve())
    assert opened.storage_url == cfg.storage
    assert opened.artifact_store is None  # neither folder exists
    (tmp_path / "artifacts" / "opened").mkdir(parents=True)  # the study file's folder
    assert Path(open_study(cfg).artifact_store._base_path) == tmp_path / "artifacts" / "opened"
    recorded.mkdir()
    assert Path(open_study(cfg).artifact_store._base_path) == recorded.resolve()
    given = tmp_path / "given"
    given.mkdir()
    assert Path(open_study(cfg, artifacts=given).artifact_store._base_path) == given
    with pytest.raises(ReportError, match="artifact folder not found"):
        open_study(cfg, artifacts=tmp_path / "nowhere")
    # by name in its storage: the same study
    by_name = open_study("opened", cfg.storage)
    assert by_name.study._study_id == opened.study._study_id


def test_open_study_reads_the_real_artifacts(report_study):
    opened = open_study("tiny", report_study.url)
    best = opened.study.best_trial
    from hpo.report.data import read_artifact

    raw = read_artifact(opened.artifact_store, opened.study, best, ArtifactName.CHECKPOINT)
    ids = {m.filename: m.artifact_id for m in optuna.artifacts.get_all_artifact_meta(
        best, storage=opened.study._storage)}
    assert raw == (report_study.artifacts / ids[ArtifactName.CHECKPOINT]).read_bytes()


def test_open_artifact_store_passes_a_store_through(tmp_path):
    study = optuna.create_study()
    assert open_artifact_store(study) is None  # no recorded folder
    study.set_user_attr(StudyAttr.ARTIFACT_STORE, str(tmp_path / "gone"))
    assert open_artifact_store(study) is None  # recorded, but not on this machine
    store = optuna.artifacts.FileSystemArtifactStore(str(tmp_path))
    assert open_artifact_store(study, store) is store


def test_dashboard_url():
    assert dashboard_url("127.0.0.1", 8080) == "http://127.0.0.1:8080/dashboard"
    assert dashboard_url("::1", 81, 3) == "http://[::1]:81/dashboard/studies/3"


def test_real_study_has_the_contract_attributes(report_study):
    """The studies these tests report on carry what the report reads (the ARCHITECTURE
    contract): metrics, history, params, and the artifacts."""
    study = report_study.load()
    for t in study.trials:
        assert t.state == optuna.trial.TrialState.COMPLETE
        assert {"accuracy", "rmse", "mae", "r2", "negative_share",
                "fair_accuracy"} <= set(t.user_attrs["metrics"])
        assert len(history_of(t, study)) == 2  # from the history.json artifact
        assert {"loss", "sigma", "n_points"} <= set(t.user_attrs["params"])
        names = {m.filename for m in optuna.artifacts.get_all_artifact_meta(
            t, storage=study._storage)}
        assert {"checkpoint.pt", "predictions.npz"} <= names
