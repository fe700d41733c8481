"""Reports of a study: the report's tables (Markdown, CSV), a self-contained HTML report with
plotly figures, the best trial exported for sharing, and the study lookup by name.

Python API:

- ``write_report(study, out_dir, artifact_store=None) -> ReportPaths``
- ``best_trial_table(study) -> str``: the best trial's numbers as a small Markdown table
- ``export_best(study, out_dir, artifact_store=None) -> ExportPaths``
- ``open_study(name, storage=None, artifacts=None) -> OpenedStudy``: a study by its shipped
  name, its ``.toml`` file, or its name in a storage URL; unknown names list the known ones.

An empty study, or one whose trials all failed, still gets a report: it says so (and why the
trials failed) instead of showing empty tables.
"""

from __future__ import annotations

import datetime as _dt
import html
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import optuna

from hpo.report_data import (
    ReportError,
    as_artifact_store,
    best_trial,
    complete_trials,
    default_artifact_store,
    directions,
    failure_of,
    load_predictions,
    metrics_of,
    objective_names,
    read_artifact,
    searched_settings,
    state_counts,
    study_fixed_settings,
    trial_settings,
)
from hpo.report_figures import (
    Figure,
    accuracy_histogram,
    best_worst_spectra,
    loss_curves,
    optuna_figures,
)
from hpo.report_html import figure_html, json_block, page, section, table_html
from hpo.report_tables import (
    best_trial_rows,
    format_frame,
    markdown_table,
    negative_table,
    results_table,
    trials_table,
)

__all__ = [
    "ExportPaths", "OpenedStudy", "ReportError", "ReportPaths", "best_trial_table",
    "export_best", "open_study", "study_message", "write_report",
]


@dataclass
class ReportPaths:
    """Files written by :func:`write_report`."""

    out_dir: Path
    markdown: Path
    html: Path
    csv: dict[str, Path] = field(default_factory=dict)
    message: str | None = None  # set when the study has no complete trial


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
    missing: list[str] = field(default_factory=list)


# --- messages -----------------------------------------------------------------------------------

def study_message(study: optuna.Study) -> str | None:
    """Why a study has nothing to report (None when it has a complete trial)."""
    if complete_trials(study):
        return None
    counts = state_counts(study)
    name = study.study_name
    if not counts:
        return f"Study {name!r} has no trials yet: run its workers first (specopt worker)."
    told = ", ".join(f"{n} {state}" for state, n in counts.items())
    msg = f"Study {name!r} has no complete trial yet ({told})."
    reasons = []
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.FAIL,)):
        why = failure_of(t)
        if why and why not in reasons:
            reasons.append(why)
    if reasons:
        msg += " Failures: " + "; ".join(reasons[:5]) + (" ..." if len(reasons) > 5 else "")
    return msg


def best_trial_table(study: optuna.Study) -> str:
    """The best trial's settings and validation numbers as a small Markdown table (or the
    message saying why there is none)."""
    rows = best_trial_rows(study)
    if not rows:
        return study_message(study) or "No complete trial."
    return markdown_table([["best trial", "value"], *[[k, v] for k, v in rows]])


# --- the report ---------------------------------------------------------------------------------

def _summary(study: optuna.Study) -> dict:
    counts = state_counts(study)
    return {
        "study": study.study_name,
        "objectives": objective_names(study),
        "directions": directions(study),
        "trials": counts,
        "searched": searched_settings(study),
        "fixed": study_fixed_settings(study),
        "description": study.user_attrs.get("description") or "",
        "reference_sigma": study.user_attrs.get("reference_sigma"),
        "generated": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


def _summary_lines(s: dict) -> list[str]:
    objectives = ", ".join(f"{o} ({d})" for o, d in zip(s["objectives"], s["directions"],
                                                        strict=False))
    trials = ", ".join(f"{n} {k}" for k, n in s["trials"].items()) or "none"
    lines = [f"Objective(s): {objectives}", f"Trials: {trials}",
             f"Searched: {', '.join(s['searched']) or 'nothing'}"]
    if s["fixed"]:
        lines.append("Fixed: " + ", ".join(f"{k}={v}" for k, v in s["fixed"].items()))
    if s["reference_sigma"]:
        lines.append(f"Reference sigma of the fair accuracy: {s['reference_sigma']} eV")
    lines.append(f"Generated: {s['generated']}")
    return lines


_TABLE_TEXT = {
    "results": ("Results per loss / sigma / Np (validation set)",
                "The best complete trial of each group (by the study's first objective). "
                "Accuracy = 1 - sqrt(sum dE (T-P)^2) / sum dE T per spectrum, averaged. "
                "Cosine and Pearson losses fix no scale: their rows are judged on normalised "
                "predictions, as in the report. Fair accuracy re-broadens prediction and target "
                "to the reference sigma; W1 is the Wasserstein-1 distance in eV; level error is "
                "the mean error of the 16 levels recovered from the predicted spectrum."),
    "negative": ("Negative predicted intensities (validation set)",
                 "Share of predicted points below zero, and their mean magnitude on "
                 "L2-normalised predictions."),
    "trials": ("All trials", "Every trial with its validation metrics (_n: on normalised "
               "predictions); pruned and failed trials say why."),
}


def _figures(study: optuna.Study, store) -> list[Figure]:
    best = best_trial(study)
    pred = load_predictions(store, study, best) if best is not None else None
    number = best.number if best is not None else None
    return [loss_curves(study), best_worst_spectra(pred, number),
            accuracy_histogram(pred, number), *optuna_figures(study)]


def write_report(study: optuna.Study, out_dir: str | Path, artifact_store=None) -> ReportPaths:
    """Write ``report.md``, ``report.html`` and the tables as CSV (``results.csv``,
    ``negative.csv``, ``trials.csv``) into ``out_dir``. ``artifact_store``: an Optuna artifact
    store or folder; None uses the folder the study recorded (for the spectra figures)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    store = as_artifact_store(artifact_store) or default_artifact_store(study)
    message = study_message(study)
    summary = _summary(study)
    tables = {"results": results_table(study), "negative": negative_table(study),
              "trials": trials_table(study)}
    csv_paths = {}
    for key, df in tables.items():
        csv_paths[key] = out / f"{key}.csv"
        df.to_csv(csv_paths[key], index=False)
    best_rows = best_trial_rows(study)
    figs = _figures(study, store)

    # Markdown
    md = [f"# Study `{study.study_name}`", ""]
    if summary["description"]:
        md += [summary["description"], ""]
    md += [f"- {line}" for line in _summary_lines(summary)] + [""]
    if message:
        md += [f"> **{message}**", ""]
    if best_rows:
        md += ["## Best trial", "", markdown_table([["field", "value"],
                                                   *[[k, v] for k, v in best_rows]]), ""]
    for key, df in tables.items():
        heading, text = _TABLE_TEXT[key]
        md += [f"## {heading}", "", text, ""]
        md += [markdown_table(format_frame(df)) if len(df) else "_No complete trials._", ""]
    md += ["## Figures", "", f"In `{out / 'report.html'}`:", ""]
    md += [f"- {f.title}" + (f": {f.note}" if f.fig is None else "") for f in figs] + [""]
    md_path = out / "report.md"
    md_path.write_text("\n".join(md))

    # HTML
    sections = [f"<h1>Study <code>{html.escape(study.study_name)}</code></h1>"]
    if summary["description"]:
        sections.append(f"<p>{html.escape(summary['description'])}</p>")
    sections.append('<ul class="meta">' + "".join(f"<li>{html.escape(x)}</li>"
                                                 for x in _summary_lines(summary)) + "</ul>")
    if message:
        sections.append(f'<p class="message" id="study-message">{html.escape(message)}</p>')
    if best_rows:
        sections.append(section("Best trial", table_html(
            [["field", "value"], *[[k, v] for k, v in best_rows]], "best_trial"), "best-trial"))
    for key, df in tables.items():
        heading, text = _TABLE_TEXT[key]
        body = f'<p class="meta">{html.escape(text)}</p>' + table_html(format_frame(df), key)
        sections.append(section(heading, body, f"table-{key}"))
    sections.append(section("Figures", "".join(figure_html(f) for f in figs), "figures"))
    sections.append(json_block(summary, "summary"))
    html_path = out / "report.html"
    html_path.write_text(page(f"specopt report: {study.study_name}", sections))
    return ReportPaths(out, md_path, html_path, csv_paths, message)


# --- export of the best trial -------------------------------------------------------------------

def export_best(study: optuna.Study, out_dir: str | Path, artifact_store=None) -> ExportPaths:
    """The best trial ready to share: ``params.json``, ``metrics.json``, ``checkpoint.pt``,
    ``predictions.npz`` and ``predictions.csv`` (validation set), and the study's report.
    Raises :class:`ReportError` when the study has no complete trial."""
    trial = best_trial(study)
    if trial is None:
        raise ReportError(study_message(study) or "no complete trial")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    store = as_artifact_store(artifact_store) or default_artifact_store(study)
    settings = trial_settings(trial, study_fixed_settings(study))
    params_path = out / "params.json"
    params_path.write_text(json.dumps({
        "study": study.study_name, "trial": trial.number, "searched": dict(trial.params),
        "settings": settings,
        "objectives": dict(zip(objective_names(study), trial.values, strict=False)),
        "directions": directions(study)}, indent=2, default=str) + "\n")
    attrs = trial.user_attrs
    metrics_path = out / "metrics.json"
    metrics_path.write_text(json.dumps({
        "study": study.study_name, "trial": trial.number,
        "validation": metrics_of(trial), "selection (test split)": attrs.get("selection_metrics"),
        **{k: attrs.get(k) for k in ("status", "best_epoch", "epochs_run", "device",
                                     "seconds_per_epoch", "reference_sigma", "dataset", "seed")},
    }, indent=2, default=str) + "\n")
    paths = ExportPaths(out, params_path, metrics_path)
    for name, attr in (("checkpoint.pt", "checkpoint"), ("predictions.npz", "predictions")):
        raw = read_artifact(store, study, trial, name)
        if raw is None:
            paths.missing.append(name)
            continue
        (out / name).write_bytes(raw)
        setattr(paths, attr, out / name)
    if paths.predictions is not None:
        pred = load_predictions(store, study, trial)
        paths.predictions_csv = _predictions_csv(pred, out / "predictions.csv")
    paths.report = write_report(study, out, store)
    return paths


def _predictions_csv(pred, path: Path) -> Path:
    import pandas as pd

    acc = pred.accuracy()
    cols = {"molecule": pred.index.astype(np.int64), "accuracy": acc}
    header = [f"{e:.4f}" for e in pred.grid]
    df = pd.concat([pd.DataFrame(cols),
                    pd.DataFrame(pred.pred, columns=[f"pred {h}" for h in header]),
                    pd.DataFrame(pred.target, columns=[f"target {h}" for h in header])], axis=1)
    df.to_csv(path, index=False, float_format="%.9g")
    return path


# --- finding a study ----------------------------------------------------------------------------

@dataclass
class OpenedStudy:
    study: optuna.Study
    storage_url: str
    artifact_store: object | None
    storage: object


def _studies_in_runs() -> list[str]:
    from hpo.storage import runs_dir

    runs = runs_dir()
    return sorted(p.stem for p in runs.glob("*.db")) if runs.is_dir() else []


def open_study(name: str, storage: str | None = None, artifacts: str | Path | None = None
               ) -> OpenedStudy:
    """Open an existing study for reading (never creates one).

    ``name``: a shipped study (``demo``), a study ``.toml`` file, or (with ``storage``) a study
    name in that storage. Raises :class:`ReportError` naming the studies that do exist.
    """
    from hpo.config import ConfigError, load_study_config
    from hpo.storage import (
        StorageError,
        default_storage_url,
        mask_url,
        normalize_url,
        open_storage,
        storage_file,
    )

    config = None
    try:
        config = load_study_config(name)
    except ConfigError as err:
        if storage is None:
            runs = _studies_in_runs()
            if name not in runs:
                extra = f"; studies run here (runs/): {', '.join(runs)}" if runs else ""
                raise ReportError(f"{err}{extra}") from None
    study_name = config.name if config is not None else name
    try:
        if storage is not None:
            url = normalize_url(storage)
        elif config is not None:
            from hpo.study import storage_url

            url = storage_url(config)
        else:
            url = normalize_url(default_storage_url(name))
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
                          f"{', '.join(names) or 'none'}")
    study = optuna.load_study(study_name=study_name, storage=st)
    if artifacts is not None:
        store = as_artifact_store(artifacts)
    else:
        store = default_artifact_store(study)
        if store is None and config is not None:
            from optuna.artifacts import FileSystemArtifactStore

            from hpo.study import artifact_dir

            folder = artifact_dir(config, storage)
            store = FileSystemArtifactStore(str(folder)) if folder.is_dir() else None
    return OpenedStudy(study, url, store, st)

