"""The best trial of a study ready to share (``export_best``): its settings and metrics as JSON,
its checkpoint and validation predictions (NPZ and CSV), and the study's report beside them."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import optuna

from data_prep.files import atomic_write
from hpo.escape import json_text
from hpo.report.data import (
    Predictions,
    best_trial,
    directions,
    first_sentence,
    load_predictions,
    metrics_of,
    objective_names,
    parse_predictions,
    read_artifact,
    study_fixed_settings,
    trial_settings,
)
from hpo.report.write import ReportPaths, study_message, write_report
from hpo.storage.artifacts import open_artifact_store
from model.contract import ArtifactName, Split, TrialAttr
from model.errors import ReportError

log = logging.getLogger("specopt.report")

#: Trial attributes copied into ``metrics.json`` (under their own names).
EXPORTED_ATTRS = (TrialAttr.STATUS, TrialAttr.BEST_EPOCH, TrialAttr.EPOCHS_RUN, TrialAttr.DEVICE,
                  TrialAttr.SECONDS_PER_EPOCH, TrialAttr.REFERENCE_SIGMA, TrialAttr.DATASET,
                  TrialAttr.SEED, TrialAttr.BASELINE)


@dataclass
class ExportPaths:
    """Files written by :func:`export_best`."""

    out_dir: Path
    params: Path
    metrics: Path
    report: ReportPaths | None = None
    checkpoint: Path | None = None
    predictions: Path | None = None
    predictions_csv: Path | None = None
    history: Path | None = None
    missing: list[str] = field(default_factory=list)
    #: Artifacts that exist but could not be read (corrupt, unsafe id), one line each: they are
    #: not exported, and the report says so.
    problems: list[str] = field(default_factory=list)


def export_best(study: optuna.Study, out_dir: str | Path, artifact_store: Any = None
                ) -> ExportPaths:
    """The best trial ready to share: ``params.json``, ``metrics.json``, its checkpoint and
    validation predictions (:class:`~model.contract.ArtifactName`) with ``predictions.csv``,
    and the study's report. ``artifact_store``: as for
    :func:`~hpo.report.write.write_report`. Raises :class:`ReportError` when the study has no
    complete trial."""
    trial = best_trial(study)
    if trial is None:
        raise ReportError(study_message(study) or "no complete trial")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    store = open_artifact_store(study, artifact_store)
    settings = trial_settings(trial, study_fixed_settings(study))
    params_path = out / "params.json"
    params_path.write_text(json_text({
        "study": study.study_name, "trial": trial.number, "searched": dict(trial.params),
        "settings": settings,
        "objectives": dict(zip(objective_names(study), trial.values, strict=False)),
        "directions": directions(study)}, indent=2) + "\n")
    attrs = trial.user_attrs
    metrics_path = out / "metrics.json"
    metrics_path.write_text(json_text({
        "study": study.study_name, "trial": trial.number,
        Split.VALIDATION: metrics_of(trial),
        "selection (test split)": attrs.get(TrialAttr.SELECTION_METRICS),
        **{k: attrs.get(k) for k in EXPORTED_ATTRS},
    }, indent=2) + "\n")
    paths = ExportPaths(out, params_path, metrics_path)
    for name, attr in ((ArtifactName.CHECKPOINT, "checkpoint"),
                       (ArtifactName.PREDICTIONS, "predictions"),
                       (ArtifactName.HISTORY, "history")):
        try:
            raw = read_artifact(store, study, trial, name)
            if raw is not None:
                _check_artifact(name, raw, f"the {name} of trial #{trial.number}")
        except ReportError as err:
            paths.problems.append(f"{err}; not exported")
            log.warning("export-best: %s; not exported", err)
            continue
        if raw is None:
            if name != ArtifactName.HISTORY:  # older trials have no history file
                paths.missing.append(name)
            continue
        target = out / name
        atomic_write(target, lambda f, raw=raw: f.write(raw))
        setattr(paths, attr, target)
    if paths.predictions is not None:
        pred = load_predictions(store, study, trial)
        if pred is not None:
            paths.predictions_csv = predictions_csv(pred, out / "predictions.csv")
    paths.report = write_report(study, out, store)
    return paths


def _check_artifact(name: str, raw: bytes, source: str) -> None:
    """:class:`ReportError` (one line naming ``source``) when an artifact's bytes are not what
    its name says: a checkpoint that does not load, predictions or a history that do not parse."""
    if name == ArtifactName.PREDICTIONS:
        parse_predictions(raw, source)
    elif name == ArtifactName.HISTORY:
        try:
            history = json.loads(raw)
        except ValueError as err:
            raise ReportError(f"{source} cannot be read (not JSON: {err})") from None
        if not isinstance(history, list):
            raise ReportError(f"{source} cannot be read (not a list of epochs)")
    elif name == ArtifactName.CHECKPOINT:
        import tempfile

        from model.checkpoint import load_checkpoint  # torch: kept out of the report's import

        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / name
            path.write_bytes(raw)
            try:
                load_checkpoint(path)
            except Exception as err:  # deliberately broad: torch's errors differ per damage
                cause = err.__cause__ or err.__context__ or err
                why = first_sentence(cause).replace(f"{path}: ", "")
                raise ReportError(f"{source} cannot be read ({why})") from None


def predictions_csv(pred: Predictions, path: Path) -> Path:
    """One row per validation molecule: its index, the report's accuracy, then the predicted
    and the target spectrum (one column per grid point, named by its energy)."""
    import pandas as pd

    acc = pred.accuracy()
    cols = {"molecule": pred.index.astype(np.int64), "accuracy": acc}
    header = [f"{e:.4f}" for e in pred.grid]
    df = pd.concat([pd.DataFrame(cols),
                    pd.DataFrame(pred.pred, columns=[f"pred {h}" for h in header]),
                    pd.DataFrame(pred.target, columns=[f"target {h}" for h in header])], axis=1)
    df.to_csv(path, index=False, float_format="%.9g")
    return path
