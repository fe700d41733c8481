"""The report's tables as pandas DataFrames (numbers) and Markdown (formatted).

- ``results_table``: per loss / sigma / Np (/ output head), the best complete trial of the group
  on the validation set: accuracy (%), RMSE, MAE, R^2, as in the report's tables; scale-free
  losses (``SCALE_FREE_LOSSES``: cosine, Pearson, SID) are judged on normalised predictions, like
  the report; plus the sigma-fair scores (fair accuracy, Wasserstein-1 distance, level error).
- ``negative_table``: share of negative predicted points (%) and their mean magnitude.
- ``trials_table``: every trial, any state, with all its metrics and why it failed.
- ``best_trial_rows``: the best trial as (field, value) pairs.

Every score has the mean-training-spectrum baseline's value beside it (``baseline ...``
columns, from the trial's ``baseline`` attribute, same split: validation), and ``skill (%)``:
the share of the baseline's error (1 - fair accuracy) that the trial removes. The bundled
GFN2-xTB levels are compressed, so the baseline alone scores about 87 % accuracy at sigma 0.5:
a score means little without it.

Names and units are :mod:`model.contract`'s (``setting_label``, ``metric_label``): the same in
the figures. A paper study (:mod:`hpo.report.paper`) gets the published accuracy beside ours.
"""

from __future__ import annotations

import math
from typing import Any

import optuna
import pandas as pd
from optuna.trial import FrozenTrial, TrialState

from hpo.escape import markdown_text
from hpo.observe.status import baseline_of
from hpo.report import paper
from hpo.report.data import (
    GROUP_SETTINGS,
    best_trial,
    complete_trials,
    directions,
    failure_of,
    history_of,
    is_scale_free,
    metrics_of,
    objective_names,
    searched_settings,
    study_fixed_settings,
    trial_settings,
)
from model.contract import (
    BASELINE_METRICS,
    LOSSES,
    Metric,
    Split,
    StudyAttr,
    TrialAttr,
    baseline_label,
    metric_label,
    metric_scale,
    objective_label,
    setting_label,
)

#: Columns of the published numbers (paper studies only).
PAPER_ACCURACY = f"{paper.LABEL} accuracy (%)"
PAPER_NEGATIVE = f"{paper.LABEL} negative points (%)"


def _num(x: Any) -> float | None:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _pct(x: Any) -> float | None:
    v = _num(x)
    return None if v is None else 100.0 * v


def _group_settings(study: optuna.Study) -> list[str]:
    """loss, sigma, Np always (the report's columns); output head only when varied."""
    varied = searched_settings(study)
    return [k for k in GROUP_SETTINGS if k != "output_head" or k in varied]


def judged_metrics(metrics: dict, loss: Any) -> tuple[dict[str, float | None], str]:
    """accuracy, RMSE, MAE, R^2 as the report judges them: normalised for scale-free losses."""
    suffix = "_normalised" if is_scale_free(loss) and "accuracy_normalised" in metrics else ""
    return ({"accuracy (%)": _pct(metrics.get("accuracy" + suffix)),
             "RMSE": _num(metrics.get("rmse" + suffix)),
             "MAE": _num(metrics.get("mae" + suffix)),
             "R^2": _num(metrics.get("r2" + suffix))},
            "normalised" if suffix else "raw")


def _shown(name: str, values: dict) -> float | None:
    """A metric in the unit it is shown in (accuracies and skill in %)."""
    v = _num(values.get(name))
    return None if v is None else v * metric_scale(name)


def judged_baseline(baseline: dict, judged_on: str) -> dict[str, float | None]:
    """The baseline's accuracy and RMSE judged as the trial's (``judged_metrics``'s scale): a
    scale-free run's baseline was scored on the mean spectrum scaled to each target, whose
    accuracy is also its normalised accuracy; its RMSE is then the normalised one."""
    rmse = "rmse_normalised" if judged_on == "normalised" else "rmse"
    return {baseline_label("accuracy"): _shown("accuracy", baseline),
            baseline_label("rmse"): _num(baseline.get(rmse))}


def objective_baselines(trial: FrozenTrial, names: list[str], split: str | None
                        ) -> dict[str, float | None]:
    """``baseline <objective label>``: the baseline's value of each objective that it has,
    on the objective's split (skill has none: the baseline's skill is 0 by definition)."""
    b = baseline_of(trial, split or Split.TEST)
    return {f"baseline {objective_label(n, split)}": _shown(n, b) for n in names
            if n in (*BASELINE_METRICS, "level_error_eV")}


def scores_beside_baseline(metrics: dict, baseline: dict) -> dict[str, float | None]:
    """The sigma-fair scores, each followed by the baseline's, and the skill (shown units)."""
    out: dict[str, float | None] = {}
    for name in (Metric.FAIR_ACCURACY, Metric.WASSERSTEIN_EV, Metric.LEVEL_ERROR_EV):
        out[metric_label(name)] = _shown(name, metrics)
        out[baseline_label(name)] = _shown(name, baseline)
        if name == Metric.FAIR_ACCURACY:
            out[metric_label(Metric.SKILL)] = _shown(Metric.SKILL, metrics)
    return out


def _sort_key(settings: dict, keys: list[str]) -> tuple:
    out: list[Any] = []
    for k in keys:
        v = settings.get(k)
        if k == "loss":
            out.append(LOSSES.index(v) if v in LOSSES else len(LOSSES))
            out.append(str(v))
        elif k == "sigma":
            out.append(-(_num(v) or 0.0))  # the report: 0.5, 0.3, 0.1
        elif isinstance(v, int | float):
            out.append(v)
        else:
            out.append(str(v))
    return tuple(out)


def objective_key(study: optuna.Study, trial: FrozenTrial) -> float:
    """Larger is better: the first objective with its direction."""
    value = trial.values[0] if trial.values else None
    if value is None or not math.isfinite(value):
        return -math.inf
    maximize = study.directions[0] == optuna.study.StudyDirection.MAXIMIZE
    return value if maximize else -value


def _groups(study: optuna.Study) -> tuple[list[str], list[tuple[dict, list[FrozenTrial]]]]:
    keys = _group_settings(study)
    fixed = study_fixed_settings(study)
    groups: dict[tuple, tuple[dict, list[FrozenTrial]]] = {}
    for t in complete_trials(study):
        s = trial_settings(t, fixed)
        g = tuple(str(s.get(k)) for k in keys)
        groups.setdefault(g, ({k: s.get(k) for k in keys}, []))[1].append(t)
    ordered = sorted(groups.values(), key=lambda item: _sort_key(item[0], keys))
    return keys, ordered


def _setting_columns(settings: dict, keys: list[str]) -> dict[str, Any]:
    return {setting_label(k): settings.get(k) for k in keys}


def _best_of_groups(study: optuna.Study, groups):
    """(settings, trials, best trial, its metrics) of every group."""
    for settings, trials in groups:
        best = max(trials, key=lambda t: objective_key(study, t))
        yield settings, trials, best, metrics_of(best)


def _published(settings: dict) -> paper.Published | None:
    return paper.published(settings.get("loss"), settings.get("sigma"), settings.get("n_points"))


def results_table(study: optuna.Study) -> pd.DataFrame:
    """Per loss / sigma / Np: the group's best trial on the validation set (see module doc);
    for a paper study, the published accuracy of the same loss / sigma / Np beside it."""
    keys, groups = _groups(study)
    rows = []
    with_paper = paper.is_paper_study(study.study_name)
    for settings, trials, best, m in _best_of_groups(study, groups):
        judged, scale = judged_metrics(m, settings.get("loss"))
        pub = _published(settings) if with_paper else None
        baseline = baseline_of(best)
        rows.append({**_setting_columns(settings, keys), "trials": len(trials),
                     "best trial": best.number, **judged, "judged on": scale,
                     **judged_baseline(baseline, scale),
                     PAPER_ACCURACY: pub.accuracy if pub else None,
                     **scores_beside_baseline(m, baseline),
                     "best single (%)": _pct(m.get("accuracy_max")),
                     "worst single (%)": _pct(m.get("accuracy_min"))})
    cols = [setting_label(k) for k in keys] + [
        "trials", "best trial", "accuracy (%)", baseline_label("accuracy"), "RMSE",
        baseline_label("rmse"), "MAE", "R^2", "judged on",
        *([PAPER_ACCURACY] if with_paper else []),
        *scores_beside_baseline({}, {}), "best single (%)", "worst single (%)"]
    return pd.DataFrame(rows, columns=cols)


def negative_table(study: optuna.Study) -> pd.DataFrame:
    """Negative predicted intensities of each group's best trial (the report's Table 5)."""
    keys, groups = _groups(study)
    rows = []
    with_paper = paper.is_paper_study(study.study_name)
    for settings, _, best, m in _best_of_groups(study, groups):
        pub = paper.published_negative(settings.get("loss"), settings.get("sigma"),
                                       settings.get("n_points")) if with_paper else None
        rows.append({**_setting_columns(settings, keys), "best trial": best.number,
                     "negative points (%)": _pct(m.get("negative_share")),
                     PAPER_NEGATIVE: pub,
                     "negative magnitude": _num(m.get("negative_magnitude"))})
    cols = [setting_label(k) for k in keys] + [
        "best trial", "negative points (%)", *([PAPER_NEGATIVE] if with_paper else []),
        "negative magnitude"]
    return pd.DataFrame(rows, columns=cols)


def trials_table(study: optuna.Study) -> pd.DataFrame:
    """Every trial (any state) with its settings, objective value(s) and validation metrics."""
    fixed = study_fixed_settings(study)
    keys = _group_settings(study)
    keys += [k for k in searched_settings(study) if k not in keys]
    names = objective_names(study)
    split = study.user_attrs.get(StudyAttr.OBJECTIVE_SPLIT)
    rows = []
    for t in study.get_trials(deepcopy=False):
        s = trial_settings(t, fixed)
        m = metrics_of(t)
        values = list(t.values) if t.values else [None] * len(names)
        hist = history_of(t, study)
        b = baseline_of(t)
        row = {"trial": t.number, "state": t.state.name.lower(),
               **_setting_columns(s, keys),
               **{f"objective: {objective_label(n, split)}": _scaled(n, v)
                  for n, v in zip(names, values, strict=False)},
               **objective_baselines(t, names, split),
               "accuracy (%)": _pct(m.get("accuracy")),
               baseline_label("accuracy"): _shown("accuracy", b),
               "RMSE": _num(m.get("rmse")), baseline_label("rmse"): _num(b.get("rmse")),
               "MAE": _num(m.get("mae")), "R^2": _num(m.get("r2")),
               "accuracy_n (%)": _pct(m.get("accuracy_normalised")),
               "RMSE_n": _num(m.get("rmse_normalised")),
               baseline_label("rmse_normalised"): _num(b.get("rmse_normalised")),
               "MAE_n": _num(m.get("mae_normalised")), "R^2_n": _num(m.get("r2_normalised")),
               "negative points (%)": _pct(m.get("negative_share")),
               "negative magnitude": _num(m.get("negative_magnitude")),
               **scores_beside_baseline(m, b),
               "epochs": t.user_attrs.get(TrialAttr.EPOCHS_RUN) or len(hist) or None,
               "best epoch": t.user_attrs.get(TrialAttr.BEST_EPOCH),
               "s/epoch": _num(t.user_attrs.get(TrialAttr.SECONDS_PER_EPOCH)),
               "device": t.user_attrs.get(TrialAttr.DEVICE),
               "note": _note(t, len(hist))}
        rows.append(row)
    return pd.DataFrame(rows)


def _scaled(name: str, value: Any) -> float | None:
    """An objective value in the unit it is shown in (accuracies in %)."""
    v = _num(value)
    return None if v is None else v * metric_scale(name)


def _note(t: FrozenTrial, epochs: int) -> str:
    if t.state == TrialState.FAIL:
        return failure_of(t) or "failed"
    if t.state == TrialState.PRUNED:
        return failure_of(t) or (f"pruned after epoch {epochs}" if epochs else "pruned")
    return ""


def best_trial_rows(study: optuna.Study) -> list[tuple[str, str]]:
    """The best trial as (field, formatted value) pairs; empty when no trial completed."""
    t = best_trial(study)
    if t is None:
        return []
    s = trial_settings(t, study_fixed_settings(study))
    m = metrics_of(t)
    rows: list[tuple[str, str]] = [("study", study.study_name), ("trial", str(t.number))]
    for k in [*_group_settings(study), *searched_settings(study)]:
        label = setting_label(k)
        if k in s and label not in dict(rows):
            rows.append((label, _fmt(label, s[k])))
    split = study.user_attrs.get(StudyAttr.OBJECTIVE_SPLIT)
    for name, direction, value in zip(objective_names(study), directions(study), t.values,
                                      strict=False):
        label = objective_label(name, split)
        rows.append((f"objective ({direction}): {label}", _fmt(label, _scaled(name, value))))
        for shown, base in objective_baselines(t, [name], split).items():
            if base is not None:
                rows.append((shown, _fmt(shown, base)))
    judged, scale = judged_metrics(m, s.get("loss"))
    suffix = " (normalised)" if scale == "normalised" else ""
    b = baseline_of(t)
    beside = judged_baseline(b, scale) if b else {}
    for label, value in judged.items():  # the held-out split's numbers from here on
        rows.append((label + suffix + ", validation split (held out)"
                     if label == "accuracy (%)" else label + suffix, _fmt(label, value)))
        key = {"accuracy (%)": "accuracy", "RMSE": "rmse"}.get(label)
        if key is not None and beside.get(baseline_label(key)) is not None:
            shown = baseline_label(key) + suffix
            rows.append((shown, _fmt(shown, beside[baseline_label(key)])))
    for label, value in scores_beside_baseline(m, b).items():
        if value is not None:
            rows.append((label, _fmt(label, value)))
    if "negative_share" in m:
        rows.append(("negative points (%)", _fmt("negative points (%)",
                                                 _pct(m.get("negative_share")))))
    for label, key in (("epochs", TrialAttr.EPOCHS_RUN), ("s/epoch", TrialAttr.SECONDS_PER_EPOCH),
                       ("device", TrialAttr.DEVICE)):
        if t.user_attrs.get(key) is not None:
            rows.append((label, _fmt(label, t.user_attrs[key])))
    return rows


# --- formatting ---------------------------------------------------------------------------------

def _fmt(column: str, value: Any) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return ""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if "(%)" in column:
        return f"{value:.1f}"
    if column in ("s/epoch",):
        return f"{value:.2f}"
    if column in (setting_label("lr"), "Huber delta"):
        return f"{value:.3g}"
    if column == setting_label("sigma"):
        return f"{value:g}"
    integers = (setting_label("n_points"), setting_label("batch_size"), "epochs")
    if value == int(value) and abs(value) < 1e6 and column in integers:
        return str(int(value))
    return f"{value:.3g}" if abs(value) < 1 else f"{value:.4g}"


def format_frame(df: pd.DataFrame) -> list[list[str]]:
    """Rows of formatted cells (header first)."""
    out = [[str(c) for c in df.columns]]
    for row in df.itertuples(index=False):
        cells = []
        for col, v in zip(df.columns, row, strict=True):
            if isinstance(v, float) and math.isnan(v):
                v = None
            if col in ("trial", "best trial", "trials", setting_label("n_points"),
                       setting_label("batch_size"), "epochs", "best epoch") \
                    and isinstance(v, float) and v.is_integer():
                v = int(v)
            cells.append(_fmt(str(col), v))
        out.append(cells)
    return out


def markdown_table(rows: list[list[str]]) -> str:
    """A GitHub-flavoured Markdown table from rows of cells (header first), every cell shown as
    written (:func:`~hpo.escape.markdown_text`)."""
    if not rows:
        return ""
    head, body = rows[0], rows[1:]
    lines = ["| " + " | ".join(markdown_text(c) for c in head) + " |",
             "|" + "|".join("---" for _ in head) + "|"]
    lines += ["| " + " | ".join(markdown_text(c) for c in r) + " |" for r in body]
    return "\n".join(lines)

