"""Every report figure has the one look of :mod:`hpo.report.style` (its template, a horizontal
legend, a titled y-axis on every panel), loss curves of losses of different scales are
normalised and say so, spectra carry their unit, and parallel coordinates never repeat a tick.
On an in-memory study of 12 trials (three losses whose values lie 100x apart, objective values
0.01 points apart: the kind plotly's own ticks repeat)."""

from __future__ import annotations

import numpy as np
import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution

from hpo.report import style
from hpo.report.data import Predictions
from hpo.report.figures import (
    accuracy_histogram,
    anytime,
    best_worst_spectra,
    loss_curves,
    optuna_figures,
    report_figures,
)

pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")

#: Each loss's typical size: logcosh ~100x rmse ~10x cosine, as in real trials.
SCALE = {"rmse": 1.0, "cosine": 0.1, "logcosh": 100.0}


def _study(losses=("rmse", "cosine", "logcosh")) -> optuna.Study:
    study = optuna.create_study(direction="maximize", study_name="style",
                                storage=optuna.storages.InMemoryStorage())
    study.set_metric_names(["fair_accuracy"])
    study.set_user_attr("objective_split", "test")
    dist = {"loss": CategoricalDistribution(list(losses)),
            "sigma": CategoricalDistribution([0.3, 0.5]),
            "lr": FloatDistribution(3e-4, 3e-3, log=True)}
    rng = np.random.default_rng(0)
    for i in range(12):
        loss, sigma = losses[i % len(losses)], (0.3, 0.5)[i % 2]
        lr = float(3e-4 * 10 ** rng.uniform(0, 1))
        value = 0.9231 + 0.0001 * (i % 5)  # narrow: 92.31 .. 92.35 %
        s = SCALE[loss]
        history = [{"epoch": e, "train_loss": s * 2 / e, "test_loss": s * 2.2 / e,
                    "test_metrics": {"accuracy": 0.8 + 0.02 * e}} for e in range(1, 5)]
        study.add_trial(optuna.trial.create_trial(
            params={"loss": loss, "sigma": sigma, "lr": lr}, distributions=dist, value=value,
            user_attrs={"metrics": {"accuracy": value + 0.01, "accuracy_normalised": value,
                                    "fair_accuracy": value},
                        "params": {"loss": loss, "sigma": sigma, "lr": lr, "n_points": 300,
                                   "seed": 0},
                        "history": history, "epochs_run": 4}))
    return study


def _predictions() -> Predictions:
    grid = np.linspace(-30, 0, 300)
    target = np.stack([np.exp(-0.5 * ((grid + 10 + k) / 0.5) ** 2) for k in range(6)])
    return Predictions(pred=target * 0.9, target=target, index=np.arange(6), grid=grid)


@pytest.fixture(scope="module")
def figures():
    """Every figure of the 12-trial study (about 8 s: fANOVA importances, torch for spectra)."""
    return _all_figures(_study())


def _all_figures(study):
    figs = [*report_figures(study), loss_curves(study),
            best_worst_spectra(_predictions(), 3), accuracy_histogram(_predictions(), 3),
            anytime(study), *optuna_figures(study)]
    return {f.key: f for f in figs}


def _y_axes(fig):
    layout = fig.layout
    return [(k, layout[k]) for k in layout if k.startswith("yaxis")]


@pytest.mark.slow
def test_every_figure_uses_the_one_template_and_a_horizontal_legend(figures):
    figs = figures
    drawn = {k: f.fig for k, f in figs.items() if f.fig is not None}
    # the study is made to draw every kind of figure the report has
    assert {"accuracy_vs_sigma", "accuracy_vs_loss", "loss_curves", "spectra",
            "accuracy_histogram", "anytime", "optimization_history", "param_importances",
            "parallel_coordinate", "contour"} <= set(drawn), {k: f.note for k, f in figs.items()}
    want = style.TEMPLATE.to_plotly_json()
    for key, fig in drawn.items():
        assert fig.layout.template.to_plotly_json() == want, key
        legend = fig.layout.legend
        # nothing overrides the template's horizontal legend over the plot
        assert legend.orientation in (None, "h"), key
        assert legend.x is None or legend.x <= 0.5, key
        assert fig.layout.plot_bgcolor is None and fig.layout.font.family is None, key


@pytest.mark.slow
def test_every_panel_with_tick_labels_has_a_y_axis_title(figures):
    figs = figures
    for key in ("accuracy_vs_sigma", "accuracy_vs_loss", "loss_curves", "spectra",
                "accuracy_histogram", "anytime", "optimization_history"):
        fig = figs[key].fig
        for name, ax in _y_axes(fig):
            if ax.showticklabels is False:  # shares the titled axis on its left
                continue
            assert ax.title.text, (key, name)
    spectra = figs["spectra"].fig
    assert [ax.title.text for _, ax in _y_axes(spectra)] == [style.INTENSITY] * 2
    assert "levels/eV" in style.INTENSITY


def test_losses_of_different_scales_get_axes_of_their_own():
    """logcosh ~100x rmse ~10x cosine: one row of (train, test) panels per loss, each y-axis
    named by its loss and holding only that loss's curves (their own values); one accuracy
    panel for all."""
    study = _study()
    f = loss_curves(study)
    fig = f.fig
    titles = {name.replace("yaxis", "y"): ax.title.text for name, ax in _y_axes(fig)}
    loss_of = {t.number: t.params["loss"] for t in study.trials}
    by_axis: dict[str, set] = {}
    for tr in fig.data:
        by_axis.setdefault(tr.yaxis, set()).add(loss_of[tr.meta["trial"]])
    acc_axis = next(a for a, t in titles.items() if t.startswith("accuracy (%)"))
    assert by_axis.pop(acc_axis) == set(SCALE)  # every trial's accuracy on one axis
    assert len(by_axis) == 2 * len(SCALE)  # train and test, per loss
    for axis, losses in by_axis.items():
        (loss,) = losses  # one loss per axis
        assert titles[axis] in (f"train loss ({loss})", f"test loss ({loss})"), titles[axis]
    for tr in fig.data:  # the losses' own values
        if titles[tr.yaxis].startswith("train loss"):
            assert tr.y[0] == pytest.approx(2 * SCALE[loss_of[tr.meta["trial"]]])
    assert "one row per loss" in f.title
    one = loss_curves(_study(losses=("rmse",))).fig  # one loss: one row
    assert sorted(ax.title.text for _, ax in _y_axes(one)) == [
        "accuracy (%), test split", "test loss (rmse)", "train loss (rmse)"]


@pytest.mark.slow
def test_parallel_coordinates_never_repeat_a_tick(figures):
    """Optuna draws the axes' ticks as annotations, 5 values at 3 significant digits: the
    objective 92.31 .. 92.35 % read "92.3" five times."""
    fig = figures["parallel_coordinate"].fig
    axes: dict[int, list] = {}
    for a in fig.layout.annotations:
        axes.setdefault(int(a.x), []).append(a)
    names = list(fig.layout.xaxis.ticktext)
    assert names == ["fair accuracy (%)", "loss", "learning rate", "sigma (eV)"]  # by name
    assert sorted(axes) == list(range(len(names)))
    for k, ticks in axes.items():
        texts = [a.text for a in ticks]
        assert len(texts) >= 2 and len(set(texts)) == len(texts), (names[k], texts)
        assert all(-1e-9 <= a.y <= 1 + 1e-9 for a in ticks), names[k]
    objective = sorted(axes[0], key=lambda a: a.y)
    values = [float(a.text) for a in objective]
    assert values == sorted(values) and values[0] >= 92.31 - 1e-9 and values[-1] <= 92.35 + 1e-9
    for a in objective:  # each tick where its value is: 92.31 at 0, 92.35 at 1
        assert a.y == pytest.approx((float(a.text) - 92.31) / 0.04, abs=1e-6)
    lr = [a.text for a in sorted(axes[2], key=lambda a: a.y)]
    assert all(float(t) in (3e-4, 5e-4, 1e-3, 2e-3) for t in lr), lr


def test_nice_ticks_are_distinct_and_inside():
    from hpo.report.figures import nice_ticks

    for lo, hi, log in ((92.31, 92.35, False), (0.3, 0.5, False), (32, 64, False),
                        (1.0, 1.0001, False), (3e-4, 3e-3, True), (1.2e-4, 1.9e-4, True),
                        (300, 500, False)):
        ticks = nice_ticks(lo, hi, log)
        texts = [t for _, t in ticks]
        assert len(ticks) >= 2 and len(set(texts)) == len(texts), (lo, hi, texts)
        assert all(lo - 1e-9 <= v <= hi + 1e-9 for v, _ in ticks), (lo, hi, ticks)
    assert [t for _, t in nice_ticks(32, 64)] == ["40", "50", "60"]
    assert [t for _, t in nice_ticks(3e-4, 3e-3, log=True)] == ["0.0005", "0.001", "0.002"]
