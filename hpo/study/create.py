"""Creating (or joining) an Optuna study from a :class:`~hpo.study.config.StudyConfig`, and opening
an
existing one for reading (:func:`open_study`, with its artifact store)."""

from __future__ import annotations

import json
import shlex
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna

from hpo.storage.artifacts import open_artifact_store, recorded_artifact_dir
from hpo.storage.database import StorageError, open_storage
from hpo.storage.home import (
    STORAGE_ENV as STORAGE_ENV,  # re-exported: launch and cluster set it for the workers
)
from hpo.storage.home import (
    default_storage_url,
    home,
    mask_url,
    normalize_url,
    resolve_storage_url,
    shown_name,
    storage_file,
    study_artifacts,
)
from hpo.study.config import (
    ConfigError,
    StudyConfig,
    build_pruner,
    build_sampler,
    load_study_config,
)
from model.contract import StudyAttr
from model.errors import ReportError


def storage_url(config: StudyConfig, storage: str | None = None) -> str:
    """The URL in effect for ``config``'s study (:func:`hpo.storage.home.resolve_storage_url`)."""
    return resolve_storage_url(config.name, config.storage, storage)


def public_config(config: StudyConfig) -> dict:
    """The definition as stored with the study (served by optuna-dashboard): the storage URL's
    password masked."""
    d = config.to_dict()
    if d.get("storage"):
        d["storage"] = mask_url(d["storage"])
    return d


def artifact_dir(config: StudyConfig, storage: str | None = None,
                 study: optuna.Study | None = None) -> Path:
    """Where checkpoints and predictions go: the study's ``artifacts``, else the folder
    ``study`` recorded when it was created (when that exists here, inside the home:
    :func:`recorded_artifact_dir`), else ``$SPECOPT_HOME/<study>/artifacts/<storage-key>``
    (one folder per storage, see :mod:`hpo.storage.home`)."""
    if config.artifacts:
        return Path(config.artifacts).resolve()
    recorded = recorded_artifact_dir(study) if study is not None else None
    return recorded or study_artifacts(config.name, storage_url(config, storage))


def _toml(value: Any) -> str:
    """A value as ``--set`` reads it (a TOML value, compact: one shell word when it has no
    string with a space)."""
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}={_toml(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(_toml(v) for v in value) + "]"
    return json.dumps(value)  # numbers, strings and true/false read the same in TOML


def _at(tree: dict, dotted: str) -> Any:
    node: Any = tree
    for part in dotted.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def changed_definition_message(name: str, url: str, stored: dict, now: dict, diff: list[str],
                               n_trials: int) -> str:
    """Why a study cannot be joined with this definition, and the three ways on: start over
    (``--fresh``), a new study name, or the stored values (``--set``)."""
    def show(v: Any) -> str:
        return "unset" if v is None else _toml(v)

    shown = [f"{k} is {show(_at(stored, k))} there, {show(_at(now, k))} here" for k in diff[:4]]
    more = f" (and {len(diff) - 4} more)" if len(diff) > 4 else ""
    # directions follow objectives: --set objectives covers both
    sets = " ".join(f"--set {shlex.quote(f'{k}={_toml(_at(stored, k))}')}" for k in diff
                    if _at(stored, k) is not None and not (k == "directions"
                                                          and "objectives" in diff))
    keep = (f"; or keep the stored definition: {sets}" if sets else "")
    return (f"study {name!r} in {mask_url(url)} was created from a different definition: "
            f"{'; '.join(shown)}{more}. Start over with --fresh (deletes its {n_trials} "
            f"trial(s) and artifacts), or use a new study name (--set name={name}-2){keep}")


def _diff(a: dict, b: dict, prefix: str = "") -> list[str]:
    out = []
    for k in sorted(set(a) | set(b)):
        if isinstance(a.get(k), dict) and isinstance(b.get(k), dict):
            out += _diff(a[k], b[k], f"{prefix}{k}.")
        elif a.get(k) != b.get(k):
            out.append(f"{prefix}{k}")
    return out


def check_definition(study: optuna.Study, config: StudyConfig, url: str) -> bool:
    """Whether ``study`` has a stored definition (False: a new study); a :class:`ConfigError`
    saying what works when it differs from ``config``'s."""
    stored_dirs = [d.name.lower() for d in study.directions]
    if stored_dirs != list(config.directions):
        raise ConfigError(f"study {config.name!r} in {mask_url(url)} has directions "
                          f"{stored_dirs}, the definition {list(config.directions)}: start over "
                          f"with --fresh, or use a new study name (--set name={config.name}-2)")
    attrs = study.user_attrs
    if StudyAttr.IDENTITY not in attrs:
        return False
    stored = json.loads(attrs[StudyAttr.IDENTITY])
    now = json.loads(json.dumps(config.identity()))
    diff = _diff(stored, now)
    if diff:
        raise ConfigError(changed_definition_message(config.name, url, stored, now, diff,
                                                     len(study.get_trials(deepcopy=False))))
    return True


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
    if not check_definition(study, config, url):
        study.set_user_attr(StudyAttr.IDENTITY, json.dumps(config.identity(), sort_keys=True))
        study.set_user_attr(StudyAttr.CONFIG, json.dumps(public_config(config), sort_keys=True))
        study.set_user_attr(StudyAttr.OBJECTIVES, list(config.objectives))
        study.set_user_attr(StudyAttr.OBJECTIVE_SPLIT, config.objective_split)
        study.set_user_attr(StudyAttr.REFERENCE_SIGMA, config.reference_sigma_value)
        study.set_user_attr(StudyAttr.DESCRIPTION, config.description)
        study.set_user_attr(StudyAttr.ARTIFACT_STORE, str(artifact_dir(config, storage)))
        study.set_user_attr(StudyAttr.N_TRIALS, config.n_trials)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(list(config.objectives))
    return study


@dataclass
class OpenedStudy:
    """An existing study with what reading it needs."""

    study: optuna.Study
    storage_url: str
    artifact_store: Any | None  # an Optuna artifact store, or None when none was found
    storage: Any  # the Optuna storage object (optuna-dashboard serves it)


def _studies_in_runs() -> list[str]:
    runs = home()
    return sorted(p.stem for p in runs.glob("*.db")) if runs.is_dir() else []


def open_study(study: str | Path | StudyConfig, storage: str | None = None,
               artifacts: Any = None, *, with_store: bool = True) -> OpenedStudy:
    """Open an existing study for reading: never creates a study or a storage file.

    ``study``: a shipped study name (``demo``), a study ``.toml`` file, a :class:`StudyConfig`,
    or (with ``storage``, or for a ``$SPECOPT_HOME/NAME.db`` of an earlier run) a study name in that
    storage. ``storage``: a URL overriding the study file's (default: the file's, else SQLite
    under the home). ``artifacts``: an artifact store or folder overriding the one the study
    recorded (see :func:`open_artifact_store`); with neither, the study file's artifact folder.
    ``with_store=False``: no artifact store is looked for (``delete`` reads no artifact).
    Raises :class:`ReportError` (one line) naming the studies that do exist.
    """
    config: StudyConfig | None = study if isinstance(study, StudyConfig) else None
    name = config.name if config is not None else str(study)
    if config is None:
        try:
            config = load_study_config(study)  # type: ignore[arg-type]
        except ConfigError as err:
            if storage is None:
                runs = _studies_in_runs()
                if name not in runs:
                    extra = (f"; studies run here ({home()}): {', '.join(map(shown_name, runs))}"
                             if runs else "")
                    raise ReportError(f"{err}{extra}") from None
    study_name = config.name if config is not None else name
    try:
        if config is not None:
            url = storage_url(config, storage)
        else:
            url = normalize_url(storage or default_storage_url(name))
    except StorageError as err:
        raise ReportError(str(err)) from None
    shown = mask_url(url)
    f = storage_file(url)
    if f is not None and not f.exists():
        raise ReportError(f"study {study_name!r} has not been run: its storage {shown} does not "
                          f"exist (start it with: specopt worker {name})")
    try:
        st = open_storage(url, heartbeat_interval=None, grace_period=None)
        names = sorted(optuna.get_all_study_names(st))
    except StorageError as err:
        raise ReportError(str(err)) from None
    if study_name not in names:
        raise ReportError(f"no study {study_name!r} in {shown}; studies there: "
                          f"{', '.join(map(shown_name, names)) or 'none'}")
    opened = optuna.load_study(study_name=study_name, storage=st)
    store = None
    if with_store:
        try:
            store = open_artifact_store(opened, artifacts)
        except ReportError:  # a recorded folder outside the home: the study file's own wins
            if artifacts is not None or config is None or not config.artifacts:
                raise
    if with_store and store is None and artifacts is None and config is not None:
        folder = artifact_dir(config, url, opened)
        store = open_artifact_store(opened, folder) if folder.is_dir() else None
    return OpenedStudy(opened, url, store, st)

