"""Optuna studies over the report's CNN: study files, storage, workers, launch.

Python API (the ``specopt`` commands are thin layers over it)::

    import hpo
    cfg = hpo.load_study_config("demo")            # or a path to a .toml file
    study = hpo.create_study(cfg)                  # create or join (default: $SPECOPT_HOME/NAME.db)
    hpo.run_worker(cfg)                            # trials until the budget is spent
    hpo.launch(cfg, workers=4)                     # 4 local worker processes

``hpo.objective(trial, config, ...)`` is the Optuna objective itself (module
``hpo.execution.objective``).
"""

from hpo.execution.launch import launch
from hpo.execution.objective import WorkerInterrupted, objective
from hpo.execution.run import run_worker
from hpo.execution.worker import Worker, WorkerSummary
from hpo.storage.database import StorageError, open_storage
from hpo.storage.home import mask_url
from hpo.study.config import ConfigError, StudyConfig, load_study_config, shipped_studies
from hpo.study.create import artifact_dir, create_study, open_study, storage_url

__all__ = [
    "ConfigError", "StorageError", "StudyConfig", "Worker", "WorkerInterrupted", "WorkerSummary",
    "artifact_dir", "create_study", "launch", "load_study_config", "mask_url", "objective",
    "open_storage", "open_study", "run_worker", "shipped_studies", "storage_url",
]
