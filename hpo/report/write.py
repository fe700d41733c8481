"""The report of a study: its tables (Markdown, CSV) and a self-contained HTML page with plotly
figures (``write_report``), the figures also as PNG / SVG / PDF files on request (``formats``),
and the best trial as a small Markdown table (``best_trial_table``).

An empty study, or one whose trials all failed, still gets a report: it says so (and why the
trials failed) instead of showing empty tables.
"""

from __future__ import annotations

import datetime as _dt
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna

from hpo.escape import markdown_text, terminal_text, write_csv
from hpo.report.data import (
    anytime_frame,
    best_trial,
    complete_trials,
    directions,
    failure_of,
    load_predictions,
    objective_names,
    searched_settings,
    state_counts,
    study_fixed_settings,
)
from hpo.report.export_figures import FIGURES_DIR, parse_formats, write_figures
from hpo.report.figures import (
    Figure,
    accuracy_histogram,
    anytime,
    best_worst_spectra,
    loss_curves,
    optuna_figures,
    report_figures,
)
from hpo.report.page import (
    esc,
    figure_html,
    json_block,
    page,
    plotly_script,
    section,
    table_html,
)
from hpo.report.tables import (
    best_trial_rows,
    format_frame,
    markdown_table,
    negative_table,
    results_table,
    trials_table,
)
from hpo.storage.artifacts import open_artifact_store
from hpo.storage.home import plain_name, study_output
from model.contract import (
    N_LEVELS,
    SPLIT_ROLE,
    Split,
    StudyAttr,
    objective_label,
    split_label,
)
from model.errors import ReportError

log = logging.getLogger("specopt.report")


@dataclass
class ReportPaths:
    """Files written by :func:`write_report`."""

    out_dir: Path
    markdown: Path
    html: Path
    csv: dict[str, Path] = field(default_factory=dict)
    message: str | None = None  # set when the study has no complete trial
    #: What could not be read (a corrupt or unsafe artifact), one line each; the report notes
    #: them and leaves out what needed them.
    problems: list[str] = field(default_factory=list)
    #: The figures as PNG / SVG / PDF files (``formats``), in ``out_dir/figures``.
    figures: list[Path] = field(default_factory=list)


# --- where reports go ---------------------------------------------------------------------------

def inside(folder: str | Path, name: str) -> Path:
    """``folder / name`` for a ``name`` read from a study (its name in the database, a file name
    in an attribute) that is one plain file name staying inside ``folder``; else
    :class:`ReportError` (one line). ``../x``, ``a/b``, ``..``, an absolute path or a NUL are
    refused."""
    base = Path(folder)
    return base / plain_name(name, base)


def default_out_dir(study_name: str, suffix: str) -> Path:
    """``$SPECOPT_HOME/<study>/<suffix>`` (``report``, ``export``; see :mod:`hpo.storage.home`),
    where
    ``specopt report`` and ``run`` write by default; a study name that is not a plain file name
    (``../../x``, read from any database) is a :class:`ReportError` instead of a folder outside
    the home."""
    return study_output(study_name, suffix)


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
        why = terminal_text(failure_of(t))  # the CLI prints the message
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
        "description": study.user_attrs.get(StudyAttr.DESCRIPTION) or "",
        "reference_sigma": study.user_attrs.get(StudyAttr.REFERENCE_SIGMA),
        "objective_split": study.user_attrs.get(StudyAttr.OBJECTIVE_SPLIT),
        "generated": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


def _summary_lines(s: dict) -> list[str]:
    objectives = "; ".join(f"{objective_label(o, s['objective_split'])} ({d})"
                           for o, d in zip(s["objectives"], s["directions"], strict=False))
    trials = ", ".join(f"{n} {k}" for k, n in s["trials"].items()) or "none"
    lines = [f"Objective(s): {objectives}", SPLITS, f"Trials: {trials}",
             f"Searched: {', '.join(s['searched']) or 'nothing'}"]
    if s["fixed"]:
        lines.append("Fixed: " + ", ".join(f"{k}={v}" for k, v in s["fixed"].items()))
    if s["reference_sigma"]:
        lines.append(f"Reference sigma of the fair accuracy: {s['reference_sigma']} eV")
    lines.append(f"Generated: {s['generated']}")
    return lines


#: What each split is for, said once at the top of every report.
SPLITS = (f"Splits: test = {SPLIT_ROLE[Split.TEST]} (early stopping, best epoch, the objective); "
          f"validation = {SPLIT_ROLE[Split.VALIDATION]} (every metric in the tables and the "
          "accuracy figures; no choice has seen it)")
HELD_OUT = split_label(Split.VALIDATION)

#: What the baseline columns and skill are, said with the results table.
BASELINE_TEXT = ("'baseline' columns: the same score of the mean training spectrum predicted "
                 "for every molecule (no training; judged as the trial is; high on the bundled "
                 "GFN2-xTB data, whose levels are compressed); skill = 1 - (1 - fair accuracy) "
                 "/ (1 - baseline fair accuracy), the share of the baseline's error the model "
                 "removes (0: no better than the mean, 100 %: perfect).")

_TABLE_TEXT = {
    "results": (f"Results per loss / sigma / Np on the {HELD_OUT}",
                "The best complete trial of each group (by the study's first objective). "
                "Accuracy = 1 - sqrt(sum dE (T-P)^2) / sum dE T per spectrum, averaged. "
                "Cosine and Pearson losses fix no scale: their rows are judged on normalised "
                "predictions, as in the report. Fair accuracy re-broadens prediction and target "
                "to the reference sigma; W1 is the Wasserstein-1 distance in eV; level error is "
                f"the mean error of the {N_LEVELS} levels recovered from the predicted spectrum. "
                f"{BASELINE_TEXT} "
                "For a paper study, 'report (2019)' is the published accuracy of the same loss, "
                "sigma and Np (Smeds 2019, Tables 2-4; 2500 epochs on the whole dataset)."),
    "negative": (f"Negative predicted intensities on the {HELD_OUT}",
                 "Share of predicted points below zero, and their mean magnitude on "
                 "L2-normalised predictions (for a paper study, beside the published share of "
                 "Table 5)."),
    "trials": ("All trials", "Every trial with its objective value(s) (on the split named) "
               f"and its metrics on the {HELD_OUT} (_n: on normalised predictions), each with "
               "the baseline's beside it; pruned and failed trials say why."),
}


def _figures(study: optuna.Study, store: Any, problems: list[str]) -> list[Figure]:
    best = best_trial(study)
    pred, why = None, None
    if best is not None:
        try:
            pred = load_predictions(store, study, best)
        except ReportError as err:  # a corrupt artifact: noted, the report is still written
            why = str(err)
            problems.append(why)
            log.warning("report: %s", why)
    number = best.number if best is not None else None
    optuna_figs = optuna_figures(study)  # the anytime plot right after the optimisation history
    return [*report_figures(study), loss_curves(study, store),
            best_worst_spectra(pred, number, why), accuracy_histogram(pred, number, why),
            *optuna_figs[:1], anytime(study), *optuna_figs[1:]]


def _problems_note(problems: list[str]) -> str:
    return "Could not be read (left out of this report): " + "; ".join(problems)


def write_report(study: optuna.Study, out_dir: str | Path, artifact_store: Any = None, *,
                 formats: Any = ("html",), plotlyjs: str = "inline") -> ReportPaths:
    """Write ``report.md``, ``report.html`` and the tables as CSV (``results.csv``,
    ``negative.csv``, ``trials.csv``, and ``anytime.csv``: the anytime plot's numbers, see
    :func:`~hpo.report.data.anytime_frame`) into ``out_dir``. ``artifact_store``: an Optuna artifact
    store or folder; None uses the folder the study recorded (for the spectra figures).

    ``formats``: "html" (always written) and any of "png", "svg", "pdf" (a list or "png,svg"):
    every drawn figure also as ``figures/<key>.<format>`` (kaleido, see
    :mod:`hpo.report.export_figures`). ``plotlyjs``: "inline" (the default: a self-contained
    page that works offline), "cdn" or "directory" (a small page; see
    :func:`~hpo.report.page.plotly_script`)."""
    wanted = parse_formats(formats)  # bad input fails before anything is written
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    script = plotly_script(plotlyjs, out)
    store = open_artifact_store(study, artifact_store)
    message = study_message(study)
    summary = _summary(study)
    tables = {"results": results_table(study), "negative": negative_table(study),
              "trials": trials_table(study)}
    csv_paths = {key: write_csv(df, out / f"{key}.csv") for key, df in tables.items()}
    # The anytime plot's numbers (one row per finished trial): a CSV only, too long for the page.
    csv_paths["anytime"] = write_csv(anytime_frame(study), out / "anytime.csv")
    best_rows = best_trial_rows(study)
    problems: list[str] = []
    figs = _figures(study, store, problems)

    # Markdown: every value through markdown_text (a description may hold HTML or "<!--")
    md = [f"# Study {markdown_text(study.study_name)}", ""]
    if summary["description"]:
        md += [markdown_text(summary["description"]), ""]
    md += [f"- {markdown_text(line)}" for line in _summary_lines(summary)] + [""]
    if message:
        md += [f"> **{markdown_text(message)}**", ""]
    if problems:
        md += [f"> **{markdown_text(_problems_note(problems))}**", ""]
    if best_rows:
        md += ["## Best trial", "", markdown_table([["field", "value"],
                                                   *[[k, v] for k, v in best_rows]]), ""]
    for key, df in tables.items():
        heading, text = _TABLE_TEXT[key]
        md += [f"## {heading}", "", text, ""]
        md += [markdown_table(format_frame(df)) if len(df) else "_No complete trials._", ""]
    static = write_figures(figs, out / FIGURES_DIR, wanted)
    md += ["## Figures", "", f"In {markdown_text(out / 'report.html')}"
           + (f" and as {', '.join(f for f in wanted if f != 'html').upper()} files in "
              f"{markdown_text(out / FIGURES_DIR)} (named by the key in brackets)"
              if static else "") + ":", ""]
    md += [f"- {markdown_text(f.title)} [{markdown_text(f.key)}]"
           + (f": {markdown_text(f.note)}" if f.fig is None else "") for f in figs]
    md += ["", "The anytime plot's numbers, one row per finished trial: "
           f"`{csv_paths['anytime'].name}`.", ""]
    md_path = out / "report.md"
    md_path.write_text("\n".join(md))

    # HTML
    sections = [f"<h1>Study <code>{esc(study.study_name)}</code></h1>"]
    if summary["description"]:
        sections.append(f"<p>{esc(summary['description'])}</p>")
    sections.append('<ul class="meta">' + "".join(f"<li>{esc(x)}</li>"
                                                 for x in _summary_lines(summary)) + "</ul>")
    if message:
        sections.append(f'<p class="message" id="study-message">{esc(message)}</p>')
    if problems:
        sections.append(f'<p class="message" id="report-problems">'
                        f"{esc(_problems_note(problems))}</p>")
    if best_rows:
        sections.append(section("Best trial", table_html(
            [["field", "value"], *[[k, v] for k, v in best_rows]], "best_trial"), "best-trial"))
    for key, df in tables.items():
        heading, text = _TABLE_TEXT[key]
        body = f'<p class="meta">{esc(text)}</p>' + table_html(format_frame(df), key)
        sections.append(section(heading, body, f"table-{key}"))
    sections.append(section("Figures", "".join(figure_html(f) for f in figs), "figures"))
    sections.append(json_block(summary, "summary"))
    html_path = out / "report.html"
    html_path.write_text(page(f"specopt report: {study.study_name}", sections, script=script))
    return ReportPaths(out, md_path, html_path, csv_paths, message, problems, static)
