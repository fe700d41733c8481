"""The report's figures (plotly): loss curves, best and worst validation spectra, the accuracy
histogram, the anytime plot (best value so far against the compute spent), and Optuna's
optimisation history, parameter importances, parallel coordinates,
contour and Pareto front.  A figure that cannot be drawn for this study (too few trials, one
parameter, no predictions artifact) becomes a note saying why, never an exception."""

from __future__ import annotations

import html
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import optuna
import plotly.graph_objects as go
from optuna.trial import TrialState
from plotly.subplots import make_subplots

from hpo.report.data import (
    Predictions,
    anytime_frame,
    history_of,
    objective_names,
    searched_settings,
    study_fixed_settings,
    trial_settings,
)
from model.contract import ArtifactName, StudyAttr


def plain(text: object) -> str:
    """User text (a file or study name, a setting's value) for a plotly title, legend entry or
    label: plotly draws a subset of HTML (``<a href>``, ``<b>``, ...) in those, so ``& < >``
    are escaped and it shows the text as it is."""
    return html.escape(str(text), quote=False)


@dataclass
class Figure:
    """One figure of the report: a plotly figure, or a note saying why there is none."""

    key: str
    title: str
    fig: go.Figure | None = None
    note: str = ""


def _label(study: optuna.Study, trial) -> str:
    s = trial_settings(trial, study_fixed_settings(study))
    varied = [k for k in searched_settings(study) if k in s]
    parts = [f"{k}={s[k]:.3g}" if isinstance(s[k], float) else f"{k}={s[k]}" for k in varied[:3]]
    return plain(f"#{trial.number}" + (f" ({', '.join(parts)})" if parts else ""))


def loss_curves(study: optuna.Study) -> Figure:
    """Train and test loss per epoch of every trial with a history (pruned ones too)."""
    title = "Train and test loss per epoch"
    trials = [t for t in study.get_trials(deepcopy=False) if history_of(t)]
    if not trials:
        return Figure("loss_curves", title, note="No trial has a training history yet.")
    fig = make_subplots(rows=1, cols=3, subplot_titles=(
        "train loss", "test loss", "test accuracy (%)"))
    colors = _palette(len(trials))
    all_positive = True
    for t, color in zip(trials, colors, strict=True):
        h = history_of(t)
        epochs = [e.get("epoch") for e in h]
        name = _label(study, t) + ("" if t.state == TrialState.COMPLETE
                                   else f" [{t.state.name.lower()}]")
        train = [e.get("train_loss") for e in h]
        test = [e.get("test_loss") for e in h]
        acc = [None if (e.get("test_metrics") or {}).get("accuracy") is None
               else 100.0 * e["test_metrics"]["accuracy"] for e in h]
        all_positive &= all(v is None or v > 0 for v in train + test)
        common = dict(mode="lines", legendgroup=str(t.number), line=dict(color=color),
                      meta={"trial": t.number})
        fig.add_trace(go.Scatter(x=epochs, y=train, name=name, **common), row=1, col=1)
        fig.add_trace(go.Scatter(x=epochs, y=test, name=name, showlegend=False, **common),
                      row=1, col=2)
        fig.add_trace(go.Scatter(x=epochs, y=acc, name=name, showlegend=False, **common),
                      row=1, col=3)
    for col in (1, 2, 3):
        fig.update_xaxes(title_text="epoch", row=1, col=col)
    if all_positive:
        fig.update_yaxes(type="log", row=1, col=1)
        fig.update_yaxes(type="log", row=1, col=2)
    fig.update_layout(height=420, legend=dict(font=dict(size=10)), margin=dict(t=50))
    return Figure("loss_curves", title, fig)


def best_worst_spectra(pred: Predictions | None, trial_number: int | None,
                       unreadable: str | None = None) -> Figure:
    """``unreadable``: why the predictions could not be read (the figure's note says so)."""
    title = "Best and worst validation spectra of the best trial"
    if pred is None and unreadable:
        return Figure("spectra", title, note=f"No spectra to show: {unreadable}.")
    if pred is None:
        return Figure("spectra", title, note=f"The best trial has no {ArtifactName.PREDICTIONS} "
                      "artifact (or the artifact store was not found): no spectra to show.")
    acc = pred.accuracy()
    best, worst = int(np.argmax(acc)), int(np.argmin(acc))
    fig = make_subplots(rows=1, cols=2, subplot_titles=(
        f"best: molecule {int(pred.index[best])}, accuracy {100 * acc[best]:.1f}%",
        f"worst: molecule {int(pred.index[worst])}, accuracy {100 * acc[worst]:.1f}%"))
    grid = pred.grid.tolist()
    pred_name = "prediction (scaled to the target)" if pred.scaled else "prediction"
    for col, (which, i) in enumerate((("best", best), ("worst", worst)), start=1):
        meta = {"which": which, "row": i, "molecule": int(pred.index[i]),
                "accuracy": float(acc[i])}
        fig.add_trace(go.Scatter(x=grid, y=pred.target[i].tolist(), name="target",
                                 line=dict(color="black"), showlegend=col == 1,
                                 meta={**meta, "series": "target"}), row=1, col=col)
        fig.add_trace(go.Scatter(x=grid, y=pred.pred[i].tolist(), name=pred_name,
                                 line=dict(color="#d62728", dash="dash"), showlegend=col == 1,
                                 meta={**meta, "series": "prediction"}), row=1, col=col)
        fig.update_xaxes(title_text="energy (eV)", row=1, col=col)
    fig.update_yaxes(title_text="intensity", row=1, col=1)
    fig.update_layout(height=400, margin=dict(t=50))
    return Figure("spectra", title + f" (trial #{trial_number})", fig)


def accuracy_histogram(pred: Predictions | None, trial_number: int | None,
                       unreadable: str | None = None) -> Figure:
    title = "Accuracy of every validation spectrum of the best trial"
    if pred is None and unreadable:
        return Figure("accuracy_histogram", title,
                      note=f"No per-spectrum accuracies to show: {unreadable}.")
    if pred is None:
        return Figure("accuracy_histogram", title, note="The best trial has no "
                      f"{ArtifactName.PREDICTIONS} artifact: no per-spectrum accuracies to show.")
    acc = 100.0 * pred.accuracy()
    fig = go.Figure(go.Histogram(x=acc.tolist(), nbinsx=min(40, max(5, len(acc) // 3)),
                                 name="spectra", marker=dict(color="#1f77b4")))
    fig.add_vline(x=float(acc.mean()), line=dict(color="black", dash="dash"),
                  annotation_text=f"mean {acc.mean():.1f}%")
    fig.update_layout(xaxis_title="accuracy (%)", yaxis_title="spectra", height=380,
                      margin=dict(t=40), bargap=0.05)
    return Figure("accuracy_histogram", title + f" (trial #{trial_number}, {len(acc)} spectra)",
                  fig)


def _palette(n: int) -> list[str]:
    import plotly.colors

    base = plotly.colors.qualitative.Plotly + plotly.colors.qualitative.D3
    return [base[i % len(base)] for i in range(n)]


def _optuna_figure(key: str, title: str, make: Callable[[], go.Figure],
                   height: int | None = None) -> Figure:
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            fig = make()
    except Exception as err:  # deliberately broad: Optuna refuses, show why instead
        return Figure(key, title, note=f"Not available for this study: {err}")
    finally:
        optuna.logging.set_verbosity(verbosity)
    if not fig.data:
        why = "; ".join(str(w.message) for w in caught
                        if not isinstance(w.message, optuna.exceptions.ExperimentalWarning))
        return Figure(key, title, note="Not available for this study"
                      + (f": {why}" if why else " (no data to plot)."))
    fig.update_layout(title=None, margin=dict(t=40))
    if height:
        fig.update_layout(height=height)
    return Figure(key, title, fig)


def optuna_figures(study: optuna.Study) -> list[Figure]:
    """Optuna's own plots, with notes where a plot does not apply."""
    import optuna.visualization as vis

    names = objective_names(study)
    n_complete = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    multi = len(study.directions) > 1
    target = (lambda t: t.values[0]) if multi else None
    target_name = names[0]  # in the figures' titles (escaped by the page)
    shown = plain(target_name)  # inside plotly
    params = searched_settings(study)
    figs: list[Figure] = [
        _optuna_figure("optimization_history", f"Optimisation history ({target_name})",
                       lambda: vis.plot_optimization_history(study, target=target,
                                                             target_name=shown)),
    ]
    title = f"Parameter importances ({target_name})"
    if n_complete < 2:
        figs.append(Figure("param_importances", title, note="Parameter importances need at "
                           f"least 2 complete trials; this study has {n_complete}."))
    elif not params:
        figs.append(Figure("param_importances", title, note="The study varies no parameter."))
    else:
        figs.append(_optuna_figure("param_importances", title, lambda: vis.plot_param_importances(
            study, target=target, target_name=shown)))
    figs.append(_optuna_figure("parallel_coordinate", f"Parallel coordinates ({target_name})",
                               lambda: vis.plot_parallel_coordinate(
                                   study, target=target, target_name=shown)))
    title = f"Contour ({target_name})"
    if len(params) < 2:
        figs.append(Figure("contour", title, note="A contour plot needs two varied parameters; "
                           f"this study varies {len(params)}"
                           + (f" ({', '.join(params)})." if params else ".")))
    else:
        panels = params[:4]  # a matrix of n x n panels: keep it readable
        figs.append(_optuna_figure("contour", title, lambda: vis.plot_contour(
            study, params=panels, target=target, target_name=shown),
            height=None if len(panels) == 2 else 230 * len(panels)))
    if multi:
        title = "Pareto front"
        if len(names) in (2, 3):
            figs.append(_optuna_figure("pareto_front", title, lambda: vis.plot_pareto_front(
                study, target_names=[plain(n) for n in names])))
        else:
            figs.append(Figure("pareto_front", title, note=f"A Pareto front plot needs 2 or 3 "
                               f"objectives; this study has {len(names)}."))
    return figs


#: The anytime plot's panels: x column of :func:`~hpo.report.data.anytime_frame`, axis title.
ANYTIME_AXES = (("cum_seconds", "training time (s)"), ("cum_epochs", "epochs trained"),
                ("wall_seconds", "wall-clock time since the first trial started (s)"))
_PRUNED_COLOR, _FAILED_COLOR, _BEST_COLOR = "#ff7f0e", "#d62728", "#1f77b4"


def anytime(study: optuna.Study) -> Figure:
    """The best objective value so far against cumulative training time, epochs trained and wall
    time, every finished trial's cost counted (pruned and failed ones as markers of their own
    colour where their cost ends). One objective only: for several, the best of each alone
    says nothing about the trade-off, so the note points to the Pareto front instead."""
    names = objective_names(study)
    split = study.user_attrs.get(StudyAttr.OBJECTIVE_SPLIT)
    label = names[0] + (f" ({split} split)" if split else "")
    title = f"Anytime performance: best {label} so far against the compute spent"
    if len(study.directions) > 1:
        return Figure("anytime", "Anytime performance", note=(
            f"Not drawn for a study of {len(names)} objectives: the best of each objective on "
            "its own ignores the trade-off between them; see the Pareto front."))
    df = anytime_frame(study)
    if df.empty:
        return Figure("anytime", title, note="No trial has finished yet.")
    fig = make_subplots(rows=1, cols=len(ANYTIME_AXES), shared_yaxes=True,
                        horizontal_spacing=0.04)
    hover = [f"trial #{r.trial} ({r.state}): {r.epochs} epochs, {r.seconds:.1f} s"
             for r in df.itertuples()]
    # Pruned and failed trials have no value: they sit on the line, where their cost ends;
    # before the first complete trial, at their last reported value.
    last = {t.number: t.intermediate_values[max(t.intermediate_values)]
            for t in study.get_trials(deepcopy=False) if t.intermediate_values}
    on_line = df["best_so_far"].where(df["best_so_far"].notna(), df["trial"].map(last))
    for col, (x, axis_title) in enumerate(ANYTIME_AXES, start=1):
        xs = df[x].tolist()
        first = col == 1
        fig.add_trace(go.Scatter(
            x=xs, y=_nullable(df["best_so_far"]), mode="lines", line_shape="hv",
            name="best so far", legendgroup="best", showlegend=first,
            line=dict(color=_BEST_COLOR, width=2), text=hover, hoverinfo="x+y+text",
            meta={"series": "best_so_far", "x": x}), row=1, col=col)
        for state, color, symbol, y in (
                ("complete", "#7f7f7f", "circle", df["value"]),
                ("pruned", _PRUNED_COLOR, "triangle-down", on_line),
                ("fail", _FAILED_COLOR, "x", on_line)):
            rows = df["state"] == state
            if not rows.any():
                continue
            fig.add_trace(go.Scatter(
                x=df.loc[rows, x].tolist(), y=_nullable(y[rows]), mode="markers",
                name={"complete": "complete trial (its value)", "pruned": "pruned trial",
                      "fail": "failed trial"}[state],
                legendgroup=state, showlegend=first,
                marker=dict(color=color, symbol=symbol, size=8 if state != "complete" else 6),
                text=[h for h, keep in zip(hover, rows, strict=True) if keep],
                hoverinfo="x+text", meta={"series": state, "x": x}), row=1, col=col)
        fig.update_xaxes(title_text=axis_title, rangemode="tozero", row=1, col=col)
    fig.update_yaxes(title_text=plain(f"best {label}"), row=1, col=1)
    fig.update_layout(height=420, margin=dict(t=40), legend=dict(font=dict(size=10)))
    return Figure("anytime", title, fig)


def _nullable(series) -> list:
    """Floats with NaN as None (a gap in the line, JSON null in the page)."""
    return [None if v is None or v != v else float(v) for v in series]
