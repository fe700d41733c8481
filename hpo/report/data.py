"""What a report reads from a study: trial settings, metrics, histories and artifacts.

Everything here works on a plain :class:`optuna.Study` (any storage) and follows the trial
contract of :mod:`model.contract`: user attributes (:class:`~model.contract.TrialAttr`)
``metrics``, ``params``, ``status``, ``device``, ``seconds_per_epoch``; artifacts
(:class:`~model.contract.ArtifactName`): the checkpoint, the validation predictions and the
per-epoch history (:func:`history_of`; older studies kept it in a ``history`` attribute).
``anytime_frame``: the best value so far against the training epochs and seconds spent by every
finished trial (pruned and failed ones too). A searched parameter is a trial param; a fixed
one is read from the trial's ``params`` user attribute, else from the study's stored definition.
"""

from __future__ import annotations

import io
import json
import math
import re
import warnings
import weakref
from dataclasses import dataclass
from typing import Any

import numpy as np
import optuna
import pandas as pd
from optuna.trial import FrozenTrial, TrialState

from hpo.storage.artifacts import open_artifact_store, store_folder
from hpo.storage.home import contained
from hpo.storage.optuna_private import study_storage
from model.contract import (
    E_MAX,
    E_MIN,
    SCALE_FREE_LOSSES,
    ArtifactName,
    StudyAttr,
    TrialAttr,
    setting_label,
)
from model.errors import ReportError

# Settings shown in tables, in the report's order, with their labels (model.contract's).
_REPORT_ORDER = ("loss", "sigma", "n_points", "output_head", "lr", "batch_size", "epochs",
                 "subset", "patience", "huber_delta", "seed")
SETTING_LABELS: dict[str, str] = {k: setting_label(k) for k in _REPORT_ORDER}
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


def history_of(trial: FrozenTrial, study: optuna.Study | None = None,
               store: Any = None) -> list[dict]:
    """A trial's per-epoch dicts: its ``history.json`` artifact (every epoch; read from
    ``store``, default the folder ``study`` recorded) when ``study`` is given and the file can
    be read, else the ``history`` attribute in which studies written before kept it."""
    if study is not None:
        h = _history_artifact(study, trial, store)
        if h is not None:
            return h
    h = trial.user_attrs.get(TrialAttr.HISTORY)
    return [e for e in h if isinstance(e, dict)] if isinstance(h, list) else []


#: Parsed history.json files by artifact id (unique per upload): a report reads each one for
#: several tables and figures.
_HISTORIES: dict[str, list[dict]] = {}
_STORES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _history_artifact(study: optuna.Study, trial: FrozenTrial, store: Any) -> list[dict] | None:
    artifact_id = artifact_ids(study, trial).get(ArtifactName.HISTORY)
    if artifact_id is None:
        return None
    if artifact_id in _HISTORIES:
        return _HISTORIES[artifact_id]
    if store is None:
        if study not in _STORES:
            try:
                _STORES[study] = open_artifact_store(study)
            except ReportError:  # a recorded folder outside the home is not read
                _STORES[study] = None
        store = _STORES[study]
    try:
        raw = read_artifact(store, study, trial, ArtifactName.HISTORY)
        data = json.loads(raw) if raw is not None else None
    except (ReportError, ValueError):  # unreadable: the attribute, if any, is the fallback
        return None
    if not isinstance(data, list):
        return None
    if len(_HISTORIES) > 10_000:
        _HISTORIES.clear()
    _HISTORIES[artifact_id] = [e for e in data if isinstance(e, dict)]
    return _HISTORIES[artifact_id]


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
    """Artifact file name -> id of one trial: Optuna's records, overridden by the trial's own
    ``artifacts`` attribute (what this attempt uploaded; a retry's is reset to None)."""
    from optuna.artifacts import get_all_artifact_meta

    ids: dict[str, str] = {}
    try:
        for meta in get_all_artifact_meta(trial, storage=study_storage(study)):
            ids[meta.filename] = meta.artifact_id
    except Exception:  # deliberately broad: a storage without artifact records
        pass
    recorded = trial.user_attrs.get(TrialAttr.ARTIFACTS)
    if isinstance(recorded, dict):
        ids.update({str(k): str(v) for k, v in recorded.items()})
    return ids


#: What an artifact id may look like: one plain file name in the store's folder (Optuna's are
#: UUIDs), never a path.
_ARTIFACT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")


def check_artifact_id(artifact_id: str, trial: FrozenTrial, filename: str) -> str:
    """``artifact_id`` when it is a plain file name; else :class:`ReportError` (one line): an id
    read from the database must never lead outside the artifact folder."""
    if not _ARTIFACT_ID.fullmatch(artifact_id) or ".." in artifact_id:
        raise ReportError(f"trial #{trial.number}: the artifact id {artifact_id!r} of its "
                          f"{filename} is not a plain file name; refused (not read)")
    return artifact_id


def read_artifact(store, study: optuna.Study, trial: FrozenTrial, filename: str) -> bytes | None:
    """The bytes of one artifact of a trial, or None when there is no such artifact or store.
    An artifact id that is not a plain file name (``../x``), a file that is a symlink out of
    the store's folder, or a file that is there but cannot be read (an I/O error, a folder in
    its place), is a :class:`ReportError`."""
    if store is None:
        return None
    artifact_id = artifact_ids(study, trial).get(filename)
    if artifact_id is None:
        return None
    check_artifact_id(artifact_id, trial, filename)
    from optuna.artifacts.exceptions import ArtifactNotFound


    folder = store_folder(store)
    if folder is not None:  # Optuna's own check is on the path as written: a symlink escapes it
        contained(folder, artifact_id, f"the {filename} of trial #{trial.number}:")

    try:
        with store.open_reader(artifact_id) as reader:
            return reader.read()
    except (ArtifactNotFound, FileNotFoundError):  # not there: the caller notes it
        return None
    except Exception as err:  # deliberately broad: any store's read error, one line
        raise ReportError(f"the {filename} of trial #{trial.number} cannot be read "
                          f"({first_sentence(err)})") from None


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
        from model.metrics import accuracy_per_spectrum  # torch: kept out of the report's import

        return np.asarray(accuracy_per_spectrum(self.pred, self.target, self.de), np.float64)


def first_sentence(err: BaseException, most: int = 120) -> str:
    """The gist of an exception's message for a one-line note: its first line and sentence."""
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    text = text.split(". ")[0]
    return text if len(text) <= most else text[: most - 3] + "..."


def parse_predictions(raw: bytes, source: str) -> tuple[np.ndarray, ...]:
    """(pred, target, index, grid) of a predictions artifact; :class:`ReportError` naming
    ``source`` when it is truncated, corrupt, of the wrong shape or not finite."""
    try:
        with np.load(io.BytesIO(raw), allow_pickle=False) as z:
            pred = np.asarray(z["pred"], np.float64)
            target = np.asarray(z["target"], np.float64)
            index = np.asarray(z["index"]) if "index" in z else np.arange(len(pred))
            grid = np.asarray(z["grid"], np.float64) if "grid" in z else np.linspace(
                E_MIN, E_MAX, pred.shape[-1])
    except Exception as err:  # deliberately broad: any unreadable file is reported, not raised
        why = "not an .npz archive" if raw[:2] != b"PK" else first_sentence(err)
        raise ReportError(f"{source} cannot be read ({why})") from None
    if (pred.ndim != 2 or target.shape != pred.shape or index.shape != (len(pred),)
            or grid.shape != (pred.shape[1],)):
        raise ReportError(f"{source} holds arrays of inconsistent shapes (pred {pred.shape}, "
                          f"target {target.shape}, index {index.shape}, grid {grid.shape})")
    if not (np.isfinite(pred).all() and np.isfinite(target).all() and np.isfinite(grid).all()):
        raise ReportError(f"{source} holds NaN or infinite values")
    return pred, target, index, grid


def load_predictions(store, study: optuna.Study, trial: FrozenTrial) -> Predictions | None:
    """The validation predictions of ``trial``; None when it has none (or no store is found).
    A corrupt or unsafe artifact is a :class:`ReportError` (one line naming it)."""
    raw = read_artifact(store, study, trial, ArtifactName.PREDICTIONS)
    if raw is None:
        return None
    pred, target, index, grid = parse_predictions(
        raw, f"the {ArtifactName.PREDICTIONS} of trial #{trial.number}")
    # Scale-free runs are judged on predictions scaled to the target, as their metrics are.
    scaled = is_scale_free(trial_settings(trial, study_fixed_settings(study)).get("loss"))
    if scaled:
        from model.metrics import scaled_to_target  # torch: kept out of the report's import

        pred = scaled_to_target(pred, target)
    return Predictions(pred, target, index, grid, scaled)


# --- anytime performance: best value so far against the compute spent -------------------------

#: Trials whose cost is counted: every finished attempt, whatever its outcome.
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
ANYTIME_COLUMNS = ("trial", "state", "finished_at", "wall_seconds", "epochs", "seconds",
                   "cum_epochs", "cum_seconds", "value", "best_so_far")


def _count(x: Any) -> int | None:
    """A recorded epoch count, or None when it is missing or not a finite count (a readable
    report for any database)."""
    ok = isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x) and x >= 0
    return int(x) if ok else None


def _seconds_of(trial: FrozenTrial, first: int, last: int, study: optuna.Study | None = None,
                store: Any = None) -> float:
    """Training seconds of epochs ``first..last`` of a trial: the history's per-epoch seconds
    when it holds every one of them (it is thinned past 200), else seconds per epoch x count."""
    n = last - first + 1
    if n <= 0:
        return 0.0
    secs = {e.get("epoch"): e.get("seconds") for e in history_of(trial, study, store)}
    own = [secs.get(k) for k in range(first, last + 1)]
    if all(isinstance(s, int | float) for s in own):
        return float(sum(own))  # type: ignore[arg-type]
    per = trial.user_attrs.get(TrialAttr.SECONDS_PER_EPOCH)
    return float(per) * n if isinstance(per, int | float) and math.isfinite(per) else 0.0


def anytime_frame(study: optuna.Study, objective: int = 0, store: Any = None) -> pd.DataFrame:
    """The study's best objective value so far against the compute spent, one row per finished
    trial (complete, pruned or failed) in the order they finished (``ANYTIME_COLUMNS``).

    ``epochs`` and ``seconds`` are what the attempt trained itself: ``epochs_trained`` where
    recorded (a retry that continued a saved state does not count its predecessor's epochs
    again), else ``epochs_run``, else its history's length; ``seconds`` sums the per-epoch
    training seconds, not wall time, so parallel workers hide no cost. Epochs a retry continued
    that no earlier attempt of the same chain recorded (a killed worker records nothing) are
    counted once, on the retry. ``wall_seconds``: wall-clock time from the study's first trial
    start to this trial's end. ``value``: the trial's value of objective ``objective`` (complete
    trials only); ``best_so_far``: the best of them up to this row (NaN before the first).
    ``store``: where the trials' ``history.json`` files are (default: the study's recorded
    folder)."""
    trials = [t for t in study.get_trials(deepcopy=False, states=FINISHED)
              if t.datetime_complete is not None]
    trials.sort(key=lambda t: (t.datetime_complete, t.number))
    starts = [t.datetime_start for t in study.get_trials(deepcopy=False)
              if t.datetime_start is not None]
    t0 = min(starts) if starts else None
    maximize = study.directions[objective] == optuna.study.StudyDirection.MAXIMIZE
    recorded: dict[int, int] = {}  # origin -> epochs recorded by finished attempts so far
    rows = []
    best = math.nan
    for t in trials:
        attrs = t.user_attrs
        resumed = attrs.get(TrialAttr.RESUMED_FROM)
        k = _count(resumed.get("epoch")) if isinstance(resumed, dict) else None
        k = k or 0
        run = _count(attrs.get(TrialAttr.EPOCHS_RUN))
        trained = _count(attrs.get(TrialAttr.EPOCHS_TRAINED))
        if trained is None:
            trained = max(0, (run if run is not None else len(history_of(t, study, store))) - k)
        origin = _count(attrs.get(TrialAttr.ORIGIN))
        origin = t.number if origin is None else origin
        missing = max(0, k - recorded.get(origin, 0))  # continued, but nobody recorded them
        epochs = trained + missing
        seconds = (_seconds_of(t, k - missing + 1, k, study, store)
                   + _seconds_of(t, k + 1, k + trained, study, store))
        recorded[origin] = recorded.get(origin, 0) + epochs
        value = math.nan
        if t.state == TrialState.COMPLETE and t.values and len(t.values) > objective:
            v = t.values[objective]
            value = float(v) if v is not None and math.isfinite(v) else math.nan
        if not math.isnan(value) and (math.isnan(best) or (value > best if maximize
                                                            else value < best)):
            best = value
        end = t.datetime_complete
        wall = (end - t0).total_seconds() if t0 is not None and end is not None else math.nan
        rows.append({"trial": t.number, "state": t.state.name.lower(),
                     "finished_at": end, "wall_seconds": wall,
                     "epochs": epochs, "seconds": seconds, "value": value,
                     "best_so_far": best})
    df = pd.DataFrame(rows, columns=[c for c in ANYTIME_COLUMNS
                                     if c not in ("cum_epochs", "cum_seconds")])
    df["cum_epochs"] = df["epochs"].cumsum().astype(int)
    df["cum_seconds"] = df["seconds"].cumsum().astype(float)
    return df[list(ANYTIME_COLUMNS)]
