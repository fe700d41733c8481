"""What a report reads from a study: trial settings, metrics, histories and artifacts.

Everything here works on a plain :class:`optuna.Study` (any storage) and follows the trial
contract of :mod:`model.contract`: user attributes (:class:`~model.contract.TrialAttr`)
``metrics``, ``history``, ``params``, ``status``, ``device``, ``seconds_per_epoch``; artifacts
(:class:`~model.contract.ArtifactName`): the checkpoint and the validation predictions.
A searched parameter is a trial param; a fixed one is read from the trial's ``params`` user
attribute, else from the study's stored definition.
"""

from __future__ import annotations

import io
import json
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

from model.contract import E_MAX, E_MIN, SCALE_FREE_LOSSES, ArtifactName, StudyAttr, TrialAttr

# Settings shown in tables, in the report's order, with their column labels.
SETTING_LABELS: dict[str, str] = {
    "loss": "loss", "sigma": "sigma (eV)", "n_points": "Np", "output_head": "head",
    "lr": "lr", "batch_size": "batch", "epochs": "epochs", "subset": "subset",
    "patience": "patience", "huber_delta": "Huber delta", "seed": "seed",
}
#: The report's tables are per loss / sigma / Np (and output head, a later addition).
GROUP_SETTINGS = ("loss", "sigma", "n_points", "output_head")


def state_counts(study: optuna.Study) -> dict[str, int]:
    counts = {s.name.lower(): 0 for s in TrialState}
    for t in study.get_trials(deepcopy=False):
        counts[t.state.name.lower()] += 1
    return {k: v for k, v in counts.items() if v}


def complete_trials(study: optuna.Study) -> list[FrozenTrial]:
    return study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))


def objective_names(study: optuna.Study) -> list[str]:
    n = len(study.directions)
    names = None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            names = study.metric_names
        except Exception:  # deliberately broad: older storages have no metric names
            names = None
    if not names:
        stored = study.user_attrs.get(StudyAttr.OBJECTIVES)
        names = list(stored) if isinstance(stored, list) and len(stored) == n else None
    if not names:
        names = ["objective"] if n == 1 else [f"objective {i}" for i in range(n)]
    return [str(x) for x in names]


def directions(study: optuna.Study) -> list[str]:
    return [d.name.lower() for d in study.directions]


def _stored_config(study: optuna.Study) -> dict:
    raw = study.user_attrs.get(StudyAttr.CONFIG)
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError:
            return {}
    return raw if isinstance(raw, dict) else {}


def study_fixed_settings(study: optuna.Study) -> dict[str, Any]:
    """Fixed (not searched) values of the study's definition, when it stored one."""
    space = _stored_config(study).get("space")
    if not isinstance(space, dict):
        return {}
    return {k: v for k, v in space.items() if not isinstance(v, list | dict)}


def trial_settings(trial: FrozenTrial, fixed: dict[str, Any] | None = None) -> dict[str, Any]:
    """Every known training setting of a trial: searched params override recorded ones."""
    out: dict[str, Any] = dict(fixed or {})
    recorded = trial.user_attrs.get(TrialAttr.PARAMS)
    if isinstance(recorded, dict):
        out.update({k: v for k, v in recorded.items() if v is not None})
    out.update(trial.params)
    return out


def searched_settings(study: optuna.Study) -> list[str]:
    """The parameters the study varies (those Optuna sampled in any trial), report order."""
    names: set[str] = set()
    for t in study.get_trials(deepcopy=False):
        names.update(t.params)
    known = [k for k in SETTING_LABELS if k in names]
    return known + sorted(names - set(known))


def metrics_of(trial: FrozenTrial) -> dict[str, float]:
    m = trial.user_attrs.get(TrialAttr.METRICS)
    return dict(m) if isinstance(m, dict) else {}


def history_of(trial: FrozenTrial) -> list[dict]:
    h = trial.user_attrs.get(TrialAttr.HISTORY)
    return [e for e in h if isinstance(e, dict)] if isinstance(h, list) else []


def is_scale_free(loss: Any) -> bool:
    return str(loss) in SCALE_FREE_LOSSES


def best_trial(study: optuna.Study) -> FrozenTrial | None:
    """The best complete trial: Optuna's for one objective; on a Pareto front, the front's best
    in the first objective. None when no trial completed."""
    if not complete_trials(study):
        return None
    if len(study.directions) == 1:
        try:
            return study.best_trial
        except ValueError:
            return None
    front = study.best_trials
    if not front:
        return None
    sign = 1.0 if study.directions[0] == optuna.study.StudyDirection.MAXIMIZE else -1.0
    return max(front, key=lambda t: sign * t.values[0])


def failure_of(trial: FrozenTrial) -> str:
    """Why a trial failed or was pruned, as recorded by the worker or Optuna."""
    if trial.user_attrs.get(TrialAttr.FAILURE):
        return str(trial.user_attrs[TrialAttr.FAILURE])
    reason = trial.system_attrs.get("fail_reason")
    if reason:
        return str(reason).strip().splitlines()[-1]
    return ""


# --- artifacts ----------------------------------------------------------------------------------

def artifact_ids(study: optuna.Study, trial: FrozenTrial) -> dict[str, str]:
    """Artifact file name -> id of one trial (the ``artifacts`` attr, then Optuna's records)."""
    from optuna.artifacts import get_all_artifact_meta

    ids: dict[str, str] = {}
    recorded = trial.user_attrs.get(TrialAttr.ARTIFACTS)
    if isinstance(recorded, dict):
        ids.update({str(k): str(v) for k, v in recorded.items()})
    try:
        for meta in get_all_artifact_meta(trial, storage=study._storage):
            ids[meta.filename] = meta.artifact_id
    except Exception:  # deliberately broad: a storage without artifact records
        pass
    return ids


def read_artifact(store, study: optuna.Study, trial: FrozenTrial, filename: str) -> bytes | None:
    """The bytes of one artifact of a trial, or None when there is no such artifact or store."""
    if store is None:
        return None
    artifact_id = artifact_ids(study, trial).get(filename)
    if artifact_id is None:
        return None
    try:
        with store.open_reader(artifact_id) as reader:
            return reader.read()
    except Exception:  # deliberately broad: a missing file; the caller notes it
        return None


@dataclass
class Predictions:
    """Validation predictions of one trial (:attr:`ArtifactName.PREDICTIONS`)."""

    pred: np.ndarray  # as judged: scaled to the target for scale-free losses
    target: np.ndarray
    index: np.ndarray
    grid: np.ndarray
    scaled: bool = False  # pred was scaled to the target (cosine / Pearson trials)

    @property
    def de(self) -> float:
        """The report's dE: energy window / Np."""
        return float(self.grid[-1] - self.grid[0]) / len(self.grid)

    def accuracy(self) -> np.ndarray:
        """The report's accuracy of every validation spectrum (fraction)."""
        from model.metrics import accuracy_per_spectrum

        return np.asarray(accuracy_per_spectrum(self.pred, self.target, self.de), np.float64)


def load_predictions(store, study: optuna.Study, trial: FrozenTrial) -> Predictions | None:
    raw = read_artifact(store, study, trial, ArtifactName.PREDICTIONS)
    if raw is None:
        return None
    with np.load(io.BytesIO(raw)) as z:
        pred = np.asarray(z["pred"], np.float64)
        target = np.asarray(z["target"], np.float64)
        index = np.asarray(z["index"]) if "index" in z else np.arange(len(pred))
        grid = np.asarray(z["grid"], np.float64) if "grid" in z else np.linspace(
            E_MIN, E_MAX, pred.shape[-1])
    # Scale-free runs are judged on predictions scaled to the target, as their metrics are.
    scaled = is_scale_free(trial_settings(trial, study_fixed_settings(study)).get("loss"))
    if scaled:
        from model.metrics import scaled_to_target

        pred = scaled_to_target(pred, target)
    return Predictions(pred, target, index, grid, scaled)
