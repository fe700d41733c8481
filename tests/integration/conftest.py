"""Studies for the report tests, made by the real pipeline: ``hpo.execution.run.run_worker``
trains the
report's CNN on real molecules (200, 2 epochs) and records metrics, histories and artifacts as
the objective does. Built once per test session and shared by the ``test_report_*`` modules."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import optuna
import pytest

from tests.support import small_study_config

_BUILT: dict[str, object] = {}


@dataclass
class BuiltStudy:
    name: str
    url: str
    artifacts: Path
    root: Path

    def load(self) -> optuna.Study:
        return optuna.load_study(study_name=self.name, storage=self.url)


def real_study(tmp_path_factory) -> BuiltStudy:
    """Four real trials, the grid loss rmse / cosine x sigma 0.5 / 0.3, objective the sigma-fair
    accuracy (the default); checkpoints and predictions in a FileSystemArtifactStore."""
    if "real" not in _BUILT:
        from hpo.execution.run import run_worker

        root = tmp_path_factory.mktemp("report-study")
        cfg = small_study_config(root, "tiny", {"loss": ["rmse", "cosine"], "sigma": [0.5, 0.3]}, 4,
                           sampler={"name": "grid"})
        summary = run_worker(cfg, handle_signals=False)
        assert summary.completed == 4, summary
        _BUILT["real"] = BuiltStudy("tiny", cfg.storage, Path(cfg.artifacts), root)
    return _BUILT["real"]  # type: ignore[return-value]


def failed_study(tmp_path_factory) -> BuiltStudy:
    """Two trials, both failed in training (as a NaN loss makes them), through the worker."""
    if "failed" not in _BUILT:
        import model
        from hpo.execution.run import run_worker
        from model.contract import Status, TrialAttr

        root = tmp_path_factory.mktemp("report-failed")
        cfg = small_study_config(root, "broken", {"loss": "rmse", "sigma": [0.5, 0.3]}, 2)

        def diverges(trial, config, should_stop=None):
            err = model.TrainingFailed(3, "train loss is nan (lr=0.001)")
            trial.set_user_attr(TrialAttr.STATUS, Status.FAILED)
            trial.set_user_attr(TrialAttr.FAILURE, str(err))
            raise err

        summary = run_worker(cfg, handle_signals=False, objective_fn=diverges)
        assert summary.failed == 2, summary
        _BUILT["failed"] = BuiltStudy("broken", cfg.storage, Path(cfg.artifacts), root)
    return _BUILT["failed"]  # type: ignore[return-value]


@pytest.fixture(scope="session")
def report_study(tmp_path_factory) -> BuiltStudy:
    return real_study(tmp_path_factory)


@pytest.fixture(scope="session")
def report_failed(tmp_path_factory) -> BuiltStudy:
    return failed_study(tmp_path_factory)

