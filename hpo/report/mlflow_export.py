"""Every trial of a study as an MLflow run (``specopt export-mlflow``): its settings as params,
its final metrics, its learning curves (step = epoch), tags for its study, number and state,
and its artifacts (checkpoint, ``history.json``, predictions) as the study's artifact store has
them.

MLflow is optional (``pip install 'specopt[mlflow]'``: ``mlflow-skinny`` is enough, with a
local SQLite tracking store). Exporting again is idempotent: each run is tagged with its
storage, study and trial; a trial exported before is skipped when it has not changed and
replaced (the old run deleted) when it has (a running trial that has finished since, say).

Names in MLflow: ``validation_<metric>`` are the held-out split's final metrics,
``selection_<metric>`` the model-selection (test) split's at the best epoch, ``objective_<name>``
the study's objective values; the curves are ``train_loss``, ``test_loss``, ``test_<metric>``
(the model-selection split, each epoch) and ``epoch_seconds``.

Units: values as stored, not as ``specopt status`` and the report show them: accuracies and
skill are fractions (``validation_fair_accuracy`` 0.923 is the report's 92.3 %, see
:data:`model.contract.METRIC_LABELS`), energies and sigma in eV.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from hpo.escape import markdown_text
from hpo.report.data import (
    artifact_ids,
    history_of,
    metrics_of,
    objective_names,
    read_artifact,
    study_fixed_settings,
    trial_settings,
)
from hpo.storage.home import home, mask_url
from model.contract import StudyAttr, TrialAttr
from model.errors import ReportError

__all__ = ["EXPORTED_STATES", "TAG", "MlflowExport", "default_tracking_uri", "export_mlflow",
           "mlflow_available"]

#: Tags that identify an exported run (and make a second export skip or replace it).
TAG = {"study": "specopt.study", "trial": "specopt.trial", "storage": "specopt.storage",
       "state": "specopt.state", "digest": "specopt.digest"}
#: Trials that are over: exported. Running and waiting trials are left for a later export.
EXPORTED_STATES = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
_RUN_STATUS = {TrialState.COMPLETE: "FINISHED", TrialState.PRUNED: "KILLED",
               TrialState.FAIL: "FAILED"}
_PLAIN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")
_MISSING = ("MLflow is not installed: pip install 'specopt[mlflow]' (mlflow-skinny, enough for a "
            "local sqlite:/// tracking store) or pip install mlflow")


@dataclass
class MlflowExport:
    """What :func:`export_mlflow` did."""

    tracking_uri: str
    experiment: str
    experiment_id: str
    created: list[int] = field(default_factory=list)  # trial numbers exported as new runs
    replaced: list[int] = field(default_factory=list)  # changed since: old run deleted
    unchanged: list[int] = field(default_factory=list)  # exported before, skipped
    not_finished: list[int] = field(default_factory=list)  # running or waiting: not exported
    runs: dict[int, str] = field(default_factory=dict)  # trial number -> MLflow run id
    missing_artifacts: dict[int, list[str]] = field(default_factory=dict)


def mlflow_available() -> None:
    """A :class:`ReportError` saying how to install MLflow when it is missing."""
    _mlflow()


def _mlflow():
    try:
        from mlflow import MlflowClient
    except ImportError:
        raise ReportError(_MISSING) from None
    return MlflowClient


def default_tracking_uri() -> str:
    """``$MLFLOW_TRACKING_URI``, else a SQLite store in the home: ``$SPECOPT_HOME/mlflow.db``."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{home() / 'mlflow.db'}"


def _artifact_location(tracking_uri: str) -> str | None:
    """Beside a local SQLite store (MLflow's own default is ./mlruns in the working folder)."""
    if tracking_uri.startswith("sqlite:///"):
        db = Path(tracking_uri[len("sqlite:///"):])
        return (db.parent / "mlflow-artifacts").resolve().as_uri()
    return None


def _ms(when) -> int | None:
    return int(when.timestamp() * 1000) if when is not None else None


def _number(x: Any) -> float | None:
    if isinstance(x, bool) or not isinstance(x, int | float):
        return None
    return float(x) if math.isfinite(x) else None


def _digest(trial: FrozenTrial) -> str:
    """Changes whenever the trial does (its state, values, attributes or curve)."""
    text = json.dumps([trial.state.name, trial.values, trial.params, trial.user_attrs,
                       sorted(trial.intermediate_values.items()), str(trial.datetime_complete)],
                      sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _key(name: str) -> str:
    """A param or metric name MLflow accepts: letters, digits, ``_ . -`` and spaces, at most
    250 characters, not ``.``/``..``-like (MLflow refuses a name that normalises as a path)."""
    key = re.sub(r"[^A-Za-z0-9_. -]", "_", name)[:250]
    return "_" + key[:249] if key[:1] in ("", ".") else key


def _params(settings: dict[str, Any]) -> list:
    """The settings as MLflow params, names made acceptable (:func:`_key`) and kept unique."""
    from mlflow.entities import Param

    out: dict[str, str] = {}
    for k, v in sorted(settings.items(), key=lambda kv: str(kv[0])):
        key = base = _key(str(k))
        n = 1
        while key in out:  # two names that became one
            n += 1
            key = f"{base[:240]}_{n}"
        out[key] = _param_text(v)
    return [Param(k, v) for k, v in out.items()]


def _param_text(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text[:6000]  # MLflow's limit of a param value


def _metrics(study: optuna.Study, trial: FrozenTrial, store: Any, t0: int) -> list:
    from mlflow.entities import Metric

    out = []

    def add(key: str, value: Any, step: int = 0, ts: int = t0) -> None:
        v = _number(value)
        if v is not None:
            out.append(Metric(_key(key), v, ts, step))

    for k, v in metrics_of(trial).items():
        add(f"validation_{k}", v)
    selection = trial.user_attrs.get(TrialAttr.SELECTION_METRICS)
    if isinstance(selection, dict):
        for k, v in selection.items():
            add(f"selection_{k}", v)
    baseline = trial.user_attrs.get(TrialAttr.BASELINE)
    for split, values in (baseline.items() if isinstance(baseline, dict) else ()):
        for k, v in (values.items() if isinstance(values, dict) else ()):
            add(f"baseline_{split}_{k}", v)
    for name, v in zip(objective_names(study), trial.values or [], strict=False):
        add(f"objective_{name}", v)
    for key in (TrialAttr.BEST_EPOCH, TrialAttr.EPOCHS_RUN, TrialAttr.SECONDS_PER_EPOCH):
        add(key, trial.user_attrs.get(key))
    elapsed = 0.0
    for i, epoch in enumerate(history_of(trial, study, store)):
        step = int(epoch.get("epoch", i + 1))
        elapsed += _number(epoch.get("seconds")) or 0.0
        ts = t0 + int(1000 * elapsed)
        add("train_loss", epoch.get("train_loss"), step, ts)
        add("test_loss", epoch.get("test_loss"), step, ts)
        add("epoch_seconds", epoch.get("seconds"), step, ts)
        tm = epoch.get("test_metrics")
        for k, v in (tm.items() if isinstance(tm, dict) else ()):
            add(f"test_{k}", v, step, ts)
    for step, v in sorted(trial.intermediate_values.items()):
        add("intermediate_value", v, int(step))  # what the pruner saw
    return out


def _existing_runs(client, experiment_id: str, storage: str, study_name: str) -> dict[int, Any]:
    """Runs exported before from this storage's study, by trial number."""
    runs: dict[int, Any] = {}
    token = None
    query = (f"tags.`{TAG['study']}` = '{study_name.replace(chr(39), chr(39) * 2)}' and "
             f"tags.`{TAG['storage']}` = '{storage.replace(chr(39), chr(39) * 2)}'")
    while True:
        page = client.search_runs([experiment_id], filter_string=query, max_results=1000,
                                  page_token=token)
        for run in page:
            number = run.data.tags.get(TAG["trial"], "")
            if number.isdigit():
                runs[int(number)] = run
        token = page.token
        if not token:
            return runs


def export_mlflow(study: optuna.Study, artifact_store: Any = None, *,
                  storage_url: str = "", tracking_uri: str | None = None,
                  experiment: str | None = None,
                  echo: Callable[[str], None] | None = None) -> MlflowExport:
    """Write every finished trial of ``study`` (complete, pruned, failed) as a run of the MLflow
    ``experiment`` (default: the study's name; created when missing) at ``tracking_uri``
    (default :func:`default_tracking_uri`). ``artifact_store``: where the trials' files are
    read (none: runs without artifacts). ``storage_url`` tells two studies of one name in
    two storages apart. Idempotent: see the module docstring. A missing MLflow, or a tracking
    store that cannot be opened, is a :class:`ReportError` (one line)."""
    MlflowClient = _mlflow()
    from mlflow.exceptions import MlflowException

    uri = tracking_uri or default_tracking_uri()
    name = experiment or study.study_name
    shown_storage = mask_url(storage_url) if storage_url else "?"
    if uri.startswith("sqlite:///"):  # MLflow creates the file, not its folder
        Path(uri[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    try:
        client = MlflowClient(tracking_uri=uri)
        found = client.get_experiment_by_name(name)
        if found is not None and found.lifecycle_stage == "deleted":
            client.restore_experiment(found.experiment_id)
        experiment_id = found.experiment_id if found is not None else client.create_experiment(
            name, artifact_location=_artifact_location(uri),
            tags={TAG["study"]: study.study_name, TAG["storage"]: shown_storage})
        description = study.user_attrs.get(StudyAttr.DESCRIPTION)
        if description:
            # MLflow's page renders the note as Markdown: shown as written
            client.set_experiment_tag(experiment_id, "mlflow.note.content",
                                      markdown_text(description))
        existing = _existing_runs(client, experiment_id, shown_storage, study.study_name)
    except MlflowException as err:
        raise ReportError(f"MLflow tracking store {mask_url(uri)}: "
                          f"{str(err).splitlines()[0]}") from None
    result = MlflowExport(uri, name, experiment_id)
    fixed = study_fixed_settings(study)
    for trial in study.get_trials(deepcopy=False):
        if trial.state not in EXPORTED_STATES:
            result.not_finished.append(trial.number)
            continue
        digest = _digest(trial)
        old = existing.get(trial.number)
        if old is not None and old.data.tags.get(TAG["digest"]) == digest:
            result.unchanged.append(trial.number)
            result.runs[trial.number] = old.info.run_id
            continue
        if old is not None:
            client.delete_run(old.info.run_id)
        t0 = _ms(trial.datetime_start) or _ms(trial.datetime_complete) or 0
        tags = {TAG["study"]: study.study_name, TAG["trial"]: str(trial.number),
                TAG["storage"]: shown_storage, TAG["state"]: trial.state.name.lower(),
                TAG["digest"]: digest}
        for key in (TrialAttr.STATUS, TrialAttr.DEVICE, TrialAttr.FAILURE, TrialAttr.RETRY_OF):
            value = trial.user_attrs.get(key)
            if value is not None:
                tags[f"specopt.{key}"] = str(value)[:5000]
        run = client.create_run(experiment_id, start_time=t0, tags=tags,
                                run_name=f"{study.study_name} #{trial.number}")
        run_id = run.info.run_id
        params = _params(trial_settings(trial, fixed))
        metrics = _metrics(study, trial, artifact_store, t0)
        for s in range(0, len(params), 100):  # MLflow's limits per batch
            client.log_batch(run_id, params=params[s : s + 100])
        for s in range(0, len(metrics), 1000):
            client.log_batch(run_id, metrics=metrics[s : s + 1000])
        missing = _log_artifacts(client, run_id, study, trial, artifact_store)
        if missing:
            result.missing_artifacts[trial.number] = missing
        client.set_terminated(run_id, _RUN_STATUS[trial.state],
                              end_time=_ms(trial.datetime_complete))
        (result.replaced if old is not None else result.created).append(trial.number)
        result.runs[trial.number] = run_id
        if echo is not None:
            echo(f"trial #{trial.number} ({trial.state.name.lower()}): run {run_id}"
                 + (" (replaced)" if old is not None else ""))
    return result


def _log_artifacts(client, run_id: str, study: optuna.Study, trial: FrozenTrial,
                   store: Any) -> list[str]:
    """Upload the trial's artifacts; the names of those that could not be read."""
    missing = []
    names = sorted(artifact_ids(study, trial))
    with tempfile.TemporaryDirectory(prefix="specopt-mlflow-") as tmp:
        for filename in names:
            if not _PLAIN.fullmatch(filename) or ".." in filename:
                missing.append(filename)  # a name from the database is never a path
                continue
            try:
                raw = read_artifact(store, study, trial, filename)
            except ReportError:
                raw = None
            if raw is None:
                missing.append(filename)
                continue
            path = Path(tmp) / filename
            path.write_bytes(raw)
            client.log_artifact(run_id, str(path))
            path.unlink()
    return missing
