"""The report's figures (plotly): the seed report's own figures (accuracy, plain and sigma-fair,
against sigma, against Np and per loss, with the spread over repeated trials, the
mean-training-spectrum baseline's accuracy beside each line and, for a paper study, the
published numbers), loss curves, best and worst validation spectra, the accuracy
histogram, the anytime plot (best value so far against the compute spent), and Optuna's
optimisation history, parameter importances, parallel coordinates, contour and Pareto front.

Names and units are :mod:`model.contract`'s, as in the tables (accuracies in %, "sigma (eV)",
"Np"); every objective says which split it is scored on and that split's role. A figure that
cannot be drawn for this study, or would mean nothing (too few trials, one parameter, no
predictions artifact), becomes a note saying why, never an exception."""

from __future__ import annotations

import html
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import optuna
import plotly.colors
import plotly.graph_objects as go
from optuna.trial import TrialState
from plotly.subplots import make_subplots

from hpo.observe.status import baseline_of
from hpo.report import paper, style
from hpo.report.data import (
    GROUP_SETTINGS,
    Predictions,
    anytime_frame,
    best_trial,
    complete_trials,
    history_of,
    is_scale_free,
    metrics_of,
    objective_names,
    searched_settings,
    study_fixed_settings,
    trial_settings,
)
from hpo.report.tables import judged_metrics, objective_key
from model.contract import (
    LOSSES,
    SETTING_LABELS,
    ArtifactName,
    Metric,
    Split,
    StudyAttr,
    baseline_label,
    metric_label,
    metric_scale,
    objective_label,
    setting_label,
    split_label,
)

#: Fewer complete trials than this give no parameter importances: fANOVA's forest on a handful
#: of points ranks noise (with one varied parameter it is 1.00 by construction).
MIN_IMPORTANCE_TRIALS = 10
#: A contour interpolates between trials: fewer than this span no surface.
MIN_CONTOUR_TRIALS = 4
#: Where the reported metrics come from.
HELD_OUT = split_label(Split.VALIDATION)
SETTING_NAMES = frozenset(SETTING_LABELS)


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

    def __post_init__(self) -> None:
        if self.fig is not None:  # one look for every figure, the prediction page's too
            style.apply(self.fig)


def _label(study: optuna.Study, trial) -> str:
    s = trial_settings(trial, study_fixed_settings(study))
    varied = [k for k in searched_settings(study) if k in s]
    parts = [f"{setting_label(k)} = {_value_text(s[k])}" for k in varied[:3]]
    return plain(f"#{trial.number}" + (f" ({', '.join(parts)})" if parts else ""))


def _value_text(v: object) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def _objective_split(study: optuna.Study) -> str | None:
    split = study.user_attrs.get(StudyAttr.OBJECTIVE_SPLIT)
    return str(split) if split else None


#: Above this many trials with a history, the loss curves name only the best trial in their
#: legend (one entry per trial would fill the figure); the others are drawn in grey.
MAX_LEGEND_TRIALS = 12
_OTHERS_COLOR = "#B0B0B0"


def loss_curves(study: optuna.Study, store=None) -> Figure:
    """Train and test loss per epoch of every trial with a history (pruned ones too), and the
    test accuracy. Losses of different kinds differ in scale (logcosh ~100x cosine), so each
    loss has its own row of panels (its own y-axes, named by it); the accuracy panel, one
    scale for all, spans the rows. ``store``: where the ``history.json`` files are (default:
    the folder the study recorded)."""
    title = "Train and test loss per epoch"
    fixed = study_fixed_settings(study)
    trials = [t for t in study.get_trials(deepcopy=False) if history_of(t, study, store)]
    if not trials:
        return Figure("loss_curves", title, note="No trial has a training history yet.")
    loss_of = {t.number: str(trial_settings(t, fixed).get("loss")) for t in trials}
    losses = sorted(set(loss_of.values()), key=lambda v: _sort_x("loss", v))
    rows = len(losses)
    fig = make_subplots(rows=rows, cols=3, horizontal_spacing=0.09,
                        vertical_spacing=0.12 / rows,
                        specs=[[{}, {}, {"rowspan": rows} if r == 0 else None]
                               for r in range(rows)])
    many = len(trials) > MAX_LEGEND_TRIALS
    best = _best_number(study)
    colors = _palette(len(trials))
    positive = dict.fromkeys(losses, True)
    others_shown = False
    for t, color in zip(trials, colors, strict=True):
        h = history_of(t, study, store)
        row = losses.index(loss_of[t.number]) + 1
        epochs = [e.get("epoch") for e in h]
        name = _label(study, t) + ("" if t.state == TrialState.COMPLETE
                                   else f" [{t.state.name.lower()}]")
        train = [e.get("train_loss") for e in h]
        test = [e.get("test_loss") for e in h]
        acc = [None if (e.get("test_metrics") or {}).get("accuracy") is None
               else 100.0 * e["test_metrics"]["accuracy"] for e in h]
        positive[loss_of[t.number]] &= all(v is None or v > 0 for v in train + test)
        show, width = True, 2.0
        if many and t.number != best:  # the crowd in grey, one legend entry for all of it
            color, width, show = _OTHERS_COLOR, 1.0, not others_shown
            name, others_shown = f"other trials ({len(trials) - (best is not None)})", True
        common = dict(mode="lines", legendgroup="others" if color == _OTHERS_COLOR
                      else str(t.number), line=dict(color=color, width=width),
                      meta={"trial": t.number})
        fig.add_trace(go.Scatter(x=epochs, y=train, name=name, showlegend=show, **common),
                      row=row, col=1)
        fig.add_trace(go.Scatter(x=epochs, y=test, name=name, showlegend=False, **common),
                      row=row, col=2)
        fig.add_trace(go.Scatter(x=epochs, y=acc, name=name, showlegend=False, **common),
                      row=1, col=3)
    if many:  # the best trial on top of the grey crowd
        fig.data = sorted(fig.data, key=lambda tr: tr.meta["trial"] == best)
    for row, loss in enumerate(losses, start=1):
        for col, which in ((1, "train"), (2, "test")):
            fig.update_yaxes(title_text=plain(f"{which} loss ({loss})"), row=row, col=col)
            if positive[loss]:  # labels at 1, 2, 5 of each decade, not at every digit
                fig.update_yaxes(type="log", **style.LOG_TICKS, row=row, col=col)
            if row == rows:
                fig.update_xaxes(title_text="epoch", row=row, col=col)
    fig.update_xaxes(title_text="epoch", row=1, col=3)
    fig.update_yaxes(title_text=f"accuracy (%), {Split.TEST} split", row=1, col=3)
    fig.update_layout(height=160 + 280 * rows)
    if rows > 1:
        title += f" (one row per loss: {', '.join(losses)} differ in scale)"
    return Figure("loss_curves", title, fig)


def _best_number(study: optuna.Study) -> int | None:
    best = best_trial(study)
    return None if best is None else best.number


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
    fig.update_yaxes(title_text=style.INTENSITY)  # both panels
    # the legend inside the first panel's top left (no level lies near -30 eV): above the
    # plot it would cover the panels' titles
    fig.update_layout(height=420, legend=dict(x=0.01, xanchor="left", y=0.99, yanchor="top",
                                              bgcolor="rgba(255,255,255,0.85)"))
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
                      bargap=0.05, showlegend=False)
    return Figure("accuracy_histogram", title + f" (trial #{trial_number}, {len(acc)} spectra)",
                  fig)


def _palette(n: int) -> list[str]:
    return [style.COLORS[i % len(style.COLORS)] for i in range(n)]


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
    _restyle_optuna(fig)
    if height:
        fig.update_layout(height=height)
    return Figure(key, title, fig)


def _restyle_optuna(fig: go.Figure) -> None:
    """Optuna's own layout (title, legend at the right, background, margins, "Best Value")
    gives way to the report's template and words."""
    fig.update_layout(title=None)
    fig.layout.legend = None
    fig.layout.plot_bgcolor = None
    fig.layout.margin = None
    for tr in fig.data:
        if tr.name == "Best Value":
            tr.name = "best so far"
        bars = [getattr(tr, "colorbar", None), getattr(getattr(tr, "marker", None), "colorbar",
                                                        None)]
        for bar in bars:  # a vertical title: a long objective name does not widen the figure
            if bar is not None and bar.title.text:
                bar.title.side = "right"
    words = {"Trial": "trial", "Hyperparameter": "parameter",
             "Hyperparameter Importance": "importance"}
    for axes in (fig.for_each_xaxis, fig.for_each_yaxis):
        axes(lambda ax: ax.update(title_text=words[ax.title.text])
             if ax.title.text in words else None)
    for axes in (fig.for_each_xaxis, fig.for_each_yaxis):  # a log axis: labels at 1, 2, 5
        axes(lambda ax: ax.update(**style.LOG_TICKS) if ax.type == "log" else None)


def _decimals(step: float) -> int:
    """Decimals that show a multiple of ``step`` exactly (0.25 -> 2, 25 -> 0)."""
    for d in range(12):
        if abs(round(step, d) - step) <= 1e-9 * abs(step):
            return d
    return 12


def nice_ticks(lo: float, hi: float, log: bool = False) -> list[tuple[float, str]]:
    """Ticks of an axis from ``lo`` to ``hi`` (>= 2 where lo < hi): (value, text), the texts
    all different. Linear: multiples of 1, 2, 2.5 or 5 x 10^k, shown with the decimals the step
    needs; ``log``: 1-2-5 steps of each decade, where decades alone give fewer than two."""
    if lo == hi:
        return [(lo, f"{lo:.6g}")]
    if log:
        k0, k1 = math.floor(math.log10(lo)), math.ceil(math.log10(hi))
        for mantissas in ((1,), (1, 2, 5), (1, 1.5, 2, 3, 4, 5, 6, 7, 8, 9)):
            found = [float(f"{m}e{k}") for k in range(k0, k1 + 1) for m in mantissas]
            found = [v for v in found if lo * (1 - 1e-9) <= v <= hi * (1 + 1e-9)]
            if len(found) >= 2:
                return [(v, f"{v:g}") for v in found]
    raw = (hi - lo) / 4
    mag = 10.0 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw * (1 - 1e-9))
    d = _decimals(step)
    first = math.ceil(lo / step - 1e-9)
    ticks = []
    i = first
    while i * step <= hi + 1e-9 * step:
        ticks.append(round(i * step, d + 3))
        i += 1
    return [(v, f"{v:.{d}f}") for v in ticks]


def _parallel_axes(fig: go.Figure, study: optuna.Study, value: Callable, objective: str,
                   colorbar: str) -> None:
    """Optuna's parallel coordinates with ticks that never repeat (it shows 5 values at 3
    significant digits: 92.31 .. 92.35 are "92.3" five times): every numeric axis gets
    :func:`nice_ticks`; axes named by their labels; the colour bar titled upright."""
    trials = [t for t in complete_trials(study)
              if t.values is not None and all(math.isfinite(v) for v in t.values)]
    if not trials:
        return
    params = sorted({p for t in trials for p in t.params})  # Optuna's order of the axes
    axes: list[tuple[list, bool, bool]] = [([value(t) for t in trials], True, False)]
    for p in params:
        dists = [t.distributions[p] for t in trials if p in t.params]
        numeric = len(dists) == len(trials) and not any(
            isinstance(d, optuna.distributions.CategoricalDistribution) for d in dists)
        log = numeric and all(getattr(d, "log", False) for d in dists)
        axes.append(([t.params.get(p) for t in trials], numeric, log))
    font = dict(size=style.FONT_SIZE - 3)
    tick = dict(font=font, bgcolor="rgba(255,255,255,0.85)")  # readable over the lines
    kept, added = [], []
    for a in fig.layout.annotations:
        k = a.x if isinstance(a.x, int | float) and a.xref in (None, "x") else None
        if k is not None and int(k) == k and 0 <= k < len(axes) and axes[int(k)][1]:
            continue  # a numeric axis: its ticks are made again below
        kept.append(a.update(**tick) if k is not None else a)
    for k, (values, numeric, log) in enumerate(axes):
        if not numeric:
            continue
        lo, hi = float(min(values)), float(max(values))
        f = math.log10 if log else float
        for v, text in nice_ticks(lo, hi, log):
            y = 0.5 if lo == hi else (f(v) - f(lo)) / (f(hi) - f(lo))
            added.append(go.layout.Annotation(x=k, y=y, text=text, showarrow=False,
                                              xanchor="right", xshift=-4, **tick))
    fig.layout.annotations = [*kept, *added]
    fig.update_xaxes(ticktext=[plain(objective), *(plain(setting_label(p)) for p in params)],
                     showline=False, ticks="")
    # Optuna paints the best trials nearly white: a scale from light to dark blue instead,
    # the better trials darker and drawn on top.
    better_high = study.directions[0] == optuna.study.StudyDirection.MAXIMIZE
    scale = plotly.colors.sample_colorscale("Blues", [0.3 + 0.7 * i / 8 for i in range(9)])
    lines = [tr for tr in fig.data if tr.mode == "lines" and tr.customdata is not None]

    def darkness(tr) -> float:
        y0 = tr.y[0] if tr.y and tr.y[0] is not None else 0.5
        return y0 if better_high else 1 - y0

    for tr in lines:
        dark = darkness(tr)
        tr.line.color = plotly.colors.sample_colorscale(scale, [min(1.0, max(0.0, dark))])[0]
        tr.opacity = 0.8
    others = [tr for tr in fig.data if tr not in lines]
    lines.sort(key=darkness)
    fig.data = [*lines, *others]
    for tr in fig.data:
        if tr.marker is not None and tr.marker.colorbar is not None:
            tr.marker.colorbar.title = dict(text=colorbar, side="right")
            tr.marker.colorscale = scale
            tr.marker.reversescale = not better_high


def varied_settings(study: optuna.Study) -> dict[str, list]:
    """Searched settings that take at least two values among the complete trials, with their
    distinct values (as recorded)."""
    fixed = study_fixed_settings(study)
    seen: dict[str, list] = {}
    for t in complete_trials(study):
        for k, v in trial_settings(t, fixed).items():
            if k in t.params and v not in seen.setdefault(k, []):
                seen[k].append(v)
    order = searched_settings(study)
    return {k: seen[k] for k in order if len(seen.get(k, ())) >= 2}


def _relabel(fig: go.Figure) -> None:
    """Optuna names parameters as they are stored ("n_points"): show them as the tables do."""
    def axis(ax) -> None:
        if ax.title and ax.title.text in SETTING_NAMES:
            ax.title.text = setting_label(ax.title.text)
        if ax.ticktext:  # parallel coordinates: one tick per dimension
            ax.ticktext = [setting_label(t) if t in SETTING_NAMES else t for t in ax.ticktext]
    fig.for_each_xaxis(axis)
    fig.for_each_yaxis(axis)
    for tr in fig.data:
        if tr.type == "bar" and tr.y is not None:  # importances: one bar per parameter
            tr.y = [setting_label(v) if v in SETTING_NAMES else v for v in tr.y]


def optuna_figures(study: optuna.Study) -> list[Figure]:
    """Optuna's own plots (objective values in the shown unit, parameters by their labels), with
    notes where a plot does not apply or would mean nothing."""
    import optuna.visualization as vis

    names = objective_names(study)
    n_complete = len(complete_trials(study))
    multi = len(study.directions) > 1
    scale = metric_scale(names[0])
    target = None if not multi and scale == 1.0 else (lambda t: scale * t.values[0])
    target_name = objective_label(names[0], _objective_split(study))  # titles (page escapes)
    shown = plain(target_name)  # inside plotly
    varied = list(varied_settings(study))

    def history() -> go.Figure:
        # Optuna drops its best-value line when given a target: scale the single objective after.
        fig = vis.plot_optimization_history(study, target=target if multi else None,
                                            target_name=shown)
        if not multi and scale != 1.0:
            for tr in fig.data:
                if tr.y is not None:
                    tr.y = [None if v is None else scale * v for v in tr.y]
        return fig

    figs: list[Figure] = [
        _optuna_figure("optimization_history", f"Optimisation history ({target_name})", history),
    ]
    title = f"Parameter importances ({target_name})"
    if len(varied) < 2:
        figs.append(Figure("param_importances", title, note=(
            "Parameter importances need at least two parameters that vary among the complete "
            f"trials; this study varies {len(varied)}"
            + (f" ({', '.join(setting_label(k) for k in varied)})" if varied else "")
            + ": one parameter's importance is 1.00 by construction.")))
    elif n_complete < MIN_IMPORTANCE_TRIALS:
        figs.append(Figure("param_importances", title, note=(
            f"Parameter importances need at least {MIN_IMPORTANCE_TRIALS} complete trials; this "
            f"study has {n_complete}: from fewer, the estimate ranks noise.")))
    else:
        figs.append(_optuna_figure("param_importances", title, lambda: vis.plot_param_importances(
            study, target=target if multi else None, target_name=shown)))
    parallel = _optuna_figure("parallel_coordinate", f"Parallel coordinates ({target_name})",
                              lambda: vis.plot_parallel_coordinate(
                                  study, target=target, target_name=shown))
    if parallel.fig is not None:
        _parallel_axes(parallel.fig, study, target or (lambda t: t.value),
                       metric_label(names[0]), shown)
    figs.append(parallel)
    title = f"Contour ({target_name})"
    varied = [k for k in varied if k != "seed"]  # no surface over seeds: the spread is noise
    if len(varied) < 2:
        figs.append(Figure("contour", title, note="A contour plot needs two varied parameters; "
                           f"this study varies {len(varied)}"
                           + (f" ({', '.join(setting_label(k) for k in varied)})."
                              if varied else ".")))
    elif n_complete < MIN_CONTOUR_TRIALS:
        figs.append(Figure("contour", title, note=(
            f"A contour plot needs at least {MIN_CONTOUR_TRIALS} complete trials to span a "
            f"surface; this study has {n_complete}.")))
    else:
        panels = varied[:4]  # a matrix of n x n panels: keep it readable
        figs.append(_optuna_figure("contour", title, lambda: vis.plot_contour(
            study, params=panels, target=target, target_name=shown),
            height=None if len(panels) == 2 else 230 * len(panels)))
    if multi:
        title = "Pareto front"
        if len(names) in (2, 3):
            def pareto() -> go.Figure:
                fig = vis.plot_pareto_front(
                    study, target_names=[plain(metric_label(n)) for n in names],
                    targets=lambda t: [metric_scale(n) * v for n, v in zip(
                        names, t.values, strict=True)])
                return fig
            figs.append(_optuna_figure("pareto_front", title, pareto))
        else:
            figs.append(Figure("pareto_front", title, note=f"A Pareto front plot needs 2 or 3 "
                               f"objectives; this study has {len(names)}."))
    for f in figs:
        if f.fig is not None:
            _relabel(f.fig)
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
    label = objective_label(names[0], _objective_split(study))
    scale = metric_scale(names[0])
    title = f"Anytime performance: best {label} so far against the compute spent"
    if len(study.directions) > 1:
        return Figure("anytime", "Anytime performance", note=(
            f"Not drawn for a study of {len(names)} objectives: the best of each objective on "
            "its own ignores the trade-off between them; see the Pareto front."))
    df = anytime_frame(study)
    if df.empty:
        return Figure("anytime", title, note="No trial has finished yet.")
    df[["value", "best_so_far"]] *= scale  # in the unit the tables show (accuracies in %)
    fig = make_subplots(rows=1, cols=len(ANYTIME_AXES), shared_yaxes=True,
                        horizontal_spacing=0.04)
    hover = [f"trial #{r.trial} ({r.state}): {r.epochs} epochs, {r.seconds:.1f} s"
             for r in df.itertuples()]
    # Pruned and failed trials have no value: they sit on the line, where their cost ends;
    # before the first complete trial, at their last reported value.
    last = {t.number: scale * t.intermediate_values[max(t.intermediate_values)]
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
    fig.update_layout(height=420)
    return Figure("anytime", title, fig)


def _nullable(series) -> list:
    """Floats with NaN as None (a gap in the line, JSON null in the page)."""
    return [None if v is None or v != v else float(v) for v in series]


# --- the seed report's own figures: accuracy against sigma, Np and loss -------------------------

#: Settings the report's figures are drawn against, in the report's order (Tables 2-4).
AGAINST = ("sigma", "n_points", "loss")
# An open diamond around a filled circle: both stay visible where the two agree.
_METRIC_STYLE = {Metric.ACCURACY: dict(dash="solid", symbol="circle", size=8),
                 Metric.FAIR_ACCURACY: dict(dash="dash", symbol="diamond-open", size=14)}
#: The baseline beside each line: dotted, faint, small crosses.
_BASELINE_STYLE = dict(dash="dot", symbol="x-thin-open", size=9)


@dataclass
class Point:
    """One point of a report figure: the best configuration of a cell (the results table's best
    trial, seed aside) with every complete trial of that configuration (repeats: other seeds)."""

    x: object
    settings: dict
    trials: list[int]
    accuracy: list[float | None]  # % per repeat, judged as the table (normalised if scale-free)
    fair_accuracy: list[float | None]  # % per repeat
    #: the mean-training-spectrum baseline's, % per repeat (judged as the trial: its accuracy
    #: is also its normalised accuracy for a scale-free loss)
    baseline_accuracy: list[float | None] = field(default_factory=list)
    baseline_fair_accuracy: list[float | None] = field(default_factory=list)


def _sort_x(setting: str, v: object) -> tuple:
    if setting == "loss":
        return (LOSSES.index(v) if v in LOSSES else len(LOSSES), str(v))
    try:
        return (0, float(v))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return (1, str(v))


def report_points(study: optuna.Study, setting: str) -> dict[tuple, list[Point]]:
    """The points of the figure against ``setting``, one series per combination of the other
    varied report settings (loss, sigma, Np, output head): {series key: points sorted by x}."""
    fixed = study_fixed_settings(study)
    varied = varied_settings(study)
    others = [k for k in GROUP_SETTINGS if k != setting and k in varied]
    cells: dict[tuple, dict[str, list]] = {}
    for t in complete_trials(study):
        s = trial_settings(t, fixed)
        series = tuple((k, s.get(k)) for k in others)
        cells.setdefault(series, {}).setdefault(str(s.get(setting)), []).append((t, s))
    out: dict[tuple, list[Point]] = {}
    for series, by_x in cells.items():
        points = []
        for members in by_x.values():
            best, best_s = max(members, key=lambda m: objective_key(study, m[0]))
            config = {k: v for k, v in best.params.items() if k != "seed"}
            repeats = [(t, s) for t, s in members
                       if {k: v for k, v in t.params.items() if k != "seed"} == config]
            acc: list[float | None] = []
            fair: list[float | None] = []
            base: dict[str, list[float | None]] = {Metric.ACCURACY: [], Metric.FAIR_ACCURACY: []}
            for t, s in repeats:
                m = metrics_of(t)
                judged, _ = judged_metrics(m, s.get("loss"))
                acc.append(judged["accuracy (%)"])
                f = m.get(Metric.FAIR_ACCURACY)
                fair.append(None if f is None else 100.0 * float(f))
                b = baseline_of(t)
                for k, values in base.items():
                    values.append(None if b.get(k) is None else 100.0 * float(b[k]))
            points.append(Point(best_s.get(setting), best_s, [t.number for t, _ in repeats],
                                acc, fair, base[Metric.ACCURACY], base[Metric.FAIR_ACCURACY]))
        points.sort(key=lambda p: _sort_x(setting, p.x))
        out[series] = points
    return dict(sorted(out.items(), key=lambda kv: [_sort_x(k, v) for k, v in kv[0]]))


def _spread(values: list) -> tuple[float | None, float, float]:
    """Mean, and its distance to the max and to the min (0 for one value)."""
    vals = [v for v in values if v is not None and v == v]
    if not vals:
        return None, 0.0, 0.0
    mean = float(np.mean(vals))
    return mean, max(vals) - mean, mean - min(vals)


def accuracy_against(study: optuna.Study, setting: str) -> Figure:
    """The report's figure of accuracy (plain and sigma-fair, %) against ``setting`` (sigma, Np
    or loss) on the held-out split, one line per combination of the other varied settings; a
    point is the group's best configuration, averaged over its repeated trials (other seeds) with
    their min-max range as error bars; a paper study adds the published accuracy."""
    label = setting_label(setting)
    key = f"accuracy_vs_{setting}"
    title = (f"Accuracy against {label}" if setting != "loss" else "Accuracy per loss") \
        + f", {HELD_OUT}"
    values = varied_settings(study).get(setting)
    if not complete_trials(study):
        return Figure(key, title, note="No complete trial yet.")
    if values is None:
        fixed = {trial_settings(t, study_fixed_settings(study)).get(setting)
                 for t in complete_trials(study)}
        shown = ", ".join(_value_text(v) for v in fixed if v is not None) or "unknown"
        return Figure(key, title, note=f"The study does not vary {label} (its complete trials "
                      f"all have {shown}): nothing to draw against it.")
    ref = study.user_attrs.get(StudyAttr.REFERENCE_SIGMA)
    fair_name = metric_label(Metric.FAIR_ACCURACY)  # its reference sigma: in the title
    points = report_points(study, setting)
    colors = _palette(len(points))
    categorical = setting == "loss" or not all(
        isinstance(v, int | float) for pts in points.values() for v in (p.x for p in pts))
    fig = go.Figure()
    repeated = False
    for (series, pts), color in zip(points.items(), colors, strict=True):
        prefix = ", ".join(f"{setting_label(k)} {_value_text(v)}" for k, v in series)
        xs = [p.x for p in pts]
        scaled = sorted({str(p.settings.get("loss")) for p in pts
                         if is_scale_free(p.settings.get("loss"))})
        plain_name = metric_label(Metric.ACCURACY) + (
            ", on normalised predictions" if scaled else "")
        # one legend group per series, titled by it: short entries, no prefix repeated
        group = dict(legendgroup=prefix, legendgrouptitle_text=plain(prefix)) if prefix else {}
        for metric, name in ((Metric.ACCURACY, plain_name), (Metric.FAIR_ACCURACY, fair_name)):
            stats = [_spread(getattr(p, metric)) for p in pts]
            repeated |= any(len(p.trials) > 1 for p in pts)
            hover = [f"trials {', '.join(f'#{n}' for n in p.trials)}" + (
                f" (mean of {len(p.trials)}, min-max bars)" if len(p.trials) > 1 else "")
                for p in pts]
            look = _METRIC_STYLE[metric]
            fig.add_trace(go.Scatter(
                x=xs, y=[m for m, _, _ in stats],
                error_y=dict(type="data", array=[hi for _, hi, _ in stats],
                             arrayminus=[lo for _, _, lo in stats], visible=True),
                mode="markers" if categorical else "lines+markers",
                name=plain(name), **group,
                line=dict(color=color, dash=look["dash"]),
                marker=dict(color=color, symbol=look["symbol"], size=look["size"],
                            line=dict(width=2, color=color)),
                text=hover, hoverinfo="x+y+text",
                meta={"metric": metric, "series": {k: v for k, v in series},
                      "trials": [p.trials for p in pts]}))
            base = [_spread(getattr(p, f"baseline_{metric}"))[0] for p in pts]
            if any(v is not None for v in base):
                bname = baseline_label(metric)
                fig.add_trace(go.Scatter(
                    x=xs, y=base, mode="markers" if categorical else "lines+markers",
                    name=plain(bname), **group, opacity=0.6,
                    line=dict(color=color, dash=_BASELINE_STYLE["dash"], width=1),
                    marker=dict(color=color, symbol=_BASELINE_STYLE["symbol"],
                                size=_BASELINE_STYLE["size"]),
                    hovertext=["mean training spectrum predicted for every molecule"] * len(xs),
                    hoverinfo="x+y+text",
                    meta={"metric": f"baseline_{metric}", "series": {k: v for k, v in series},
                          "trials": [p.trials for p in pts]}))
    if paper.is_paper_study(study.study_name):
        found = [(p.x, paper.published(p.settings.get("loss"), p.settings.get("sigma"),
                                       p.settings.get("n_points")))
                 for pts in points.values() for p in pts]
        pub = [(x, r) for x, r in found if r is not None]
        if pub:
            fig.add_trace(go.Scatter(
                x=[x for x, _ in pub], y=[r.accuracy for _, r in pub], mode="markers",
                name=f"{paper.LABEL}: accuracy (%)",
                marker=dict(color="black", symbol="star", size=13),
                text=[f"{paper.SOURCE}, {r.source}" for _, r in pub], hoverinfo="x+y+text",
                meta={"metric": "paper", "source": [r.source for _, r in pub]}))
    if categorical:
        fig.update_xaxes(type="category")
    elif setting == "sigma":
        fig.update_xaxes(tickvals=sorted(float(v) for v in values))
    elif setting == "n_points":
        fig.update_xaxes(tickvals=sorted(int(v) for v in values))
    fig.update_layout(xaxis_title=plain(label), yaxis_title=plain(f"accuracy (%), {HELD_OUT}"),
                      height=420)
    if repeated:
        title += ": mean over repeated trials, min-max bars"
    if ref:
        title += f" (fair accuracy: prediction and target re-broadened to {ref} eV)"
    return Figure(key, title, fig)


def report_figures(study: optuna.Study) -> list[Figure]:
    """The seed report's figures: accuracy against sigma, against Np and per loss."""
    return [accuracy_against(study, s) for s in AGAINST]
