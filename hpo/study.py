"""Creating (or joining) an Optuna study from a :class:`~hpo.config.StudyConfig`."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import optuna

from hpo.config import ConfigError, StudyConfig, build_pruner, build_sampler
from hpo.storage import (
    default_storage_url,
    mask_url,
    normalize_url,
    open_storage,
    runs_dir,
    storage_file,
)

CONFIG_ATTR = "specopt:config"
IDENTITY_ATTR = "specopt:identity"


def storage_url(config: StudyConfig, storage: str | None = None) -> str:
    """The URL in effect: the argument, else the study file's, else SQLite under ``runs/``."""
    return normalize_url(storage or config.storage or default_storage_url(config.name))


def artifact_dir(config: StudyConfig, storage: str | None = None) -> Path:
    """Where checkpoints and predictions go: the study's ``artifacts``, else beside the SQLite or
    journal file, else ``runs/artifacts/<study>``."""
    if config.artifacts:
        return Path(config.artifacts).resolve()
    f = storage_file(storage_url(config, storage))
    base = f.parent if f is not None else runs_dir()
    return base / "artifacts" / config.name


def _diff(a: dict, b: dict, prefix: str = "") -> list[str]:
    out = []
    for k in sorted(set(a) | set(b)):
        if isinstance(a.get(k), dict) and isinstance(b.get(k), dict):
            out += _diff(a[k], b[k], f"{prefix}{k}.")
        elif a.get(k) != b.get(k):
            out.append(f"{prefix}{k}")
    return out


def create_study(config: StudyConfig, storage: str | None = None, *, worker_index: int | None = 0,
                 storage_obj=None) -> optuna.Study:
    """Create the study, or join it if it exists with the same definition.

    Joining a study created from a different definition (search space, objectives, sampler,
    pruner, reference sigma, dataset) is refused with a one-line :class:`ConfigError`; budget,
    storage and heartbeat settings may differ between workers.
    """
    url = storage_url(config, storage)
    if storage_obj is None:
        hb = config.heartbeat
        storage_obj = open_storage(url, heartbeat_interval=hb.interval, grace_period=hb.grace,
                                   max_retry=hb.max_retry)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study = optuna.create_study(
            storage=storage_obj, study_name=config.name, load_if_exists=True,
            directions=list(config.directions),
            sampler=build_sampler(config, worker_index), pruner=build_pruner(config),
        )
    stored_dirs = [d.name.lower() for d in study.directions]
    if stored_dirs != list(config.directions):
        raise ConfigError(f"study {config.name!r} in {mask_url(url)} has directions "
                          f"{stored_dirs}, the definition {list(config.directions)}: use another "
                          "study name or storage")
    identity = config.identity()
    attrs = study.user_attrs
    if IDENTITY_ATTR in attrs:
        stored = json.loads(attrs[IDENTITY_ATTR])
        diff = _diff(stored, json.loads(json.dumps(identity)))
        if diff:
            raise ConfigError(f"study {config.name!r} in {mask_url(url)} was created from a "
                              f"different definition (differs in {', '.join(diff)}): use another "
                              "study name (a copy of the file with a new name) or --storage")
    else:
        study.set_user_attr(IDENTITY_ATTR, json.dumps(identity, sort_keys=True))
        study.set_user_attr(CONFIG_ATTR, json.dumps(config.to_dict(), sort_keys=True))
        study.set_user_attr("objectives", list(config.objectives))
        study.set_user_attr("objective_split", config.objective_split)
        study.set_user_attr("reference_sigma", config.reference_sigma_value)
        study.set_user_attr("description", config.description)
        study.set_user_attr("artifact_store", str(artifact_dir(config, storage)))
        study.set_user_attr("n_trials", config.n_trials)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(list(config.objectives))
    return study


def load_study(config: StudyConfig, storage: str | None = None) -> optuna.Study:
    """The existing study, for reading results (no definition check; KeyError if missing)."""
    storage_obj = open_storage(storage_url(config, storage), heartbeat_interval=None)
    return optuna.load_study(study_name=config.name, storage=storage_obj)
