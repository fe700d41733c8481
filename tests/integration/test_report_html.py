"""The HTML report, parsed: every table and figure is there, the figures hold the study's data
(loss curves = the trials' histories, spectra = the best trial's predictions artifact, ...), and
the page needs no network (plotly.js inlined, no external script, link or stylesheet)."""

from __future__ import annotations

import io
import re

import numpy as np
import optuna
import pytest

from hpo.report import write_report
from hpo.report.data import history_of
from tests.support import parse_report, plotly_values

FIGURES = ("accuracy_vs_sigma", "accuracy_vs_loss", "loss_curves", "spectra",
           "accuracy_histogram", "optimization_history", "parallel_coordinate", "contour")
OBJECTIVE = "fair accuracy (%), test split (model selection)"  # as the figures label it
TABLES = ("best_trial", "results", "negative", "trials")


@pytest.fixture(scope="module")
def report(report_study, tmp_path_factory):
    study = report_study.load()
    paths = write_report(study, tmp_path_factory.mktemp("html"), report_study.artifacts)
    return study, report_study, paths, parse_report(paths.html)


def test_every_table_and_figure_is_present(report):
    _, _, _, page = report
    assert set(FIGURES) <= set(page.figures), (set(page.figures), page.notes)
    for key in TABLES:
        assert len(page.tables[key]) > 1, key
    assert "pareto_front" not in page.figures  # single objective
    assert "at least 10 complete trials" in page.notes["param_importances"]  # 4 trials


def test_works_offline(report):
    _, _, paths, page = report
    text = paths.html.read_text()
    assert not [a for a, _ in page.scripts if a.get("src")]
    assert not [x for x in page.links if x.get("href") or x.get("src")]
    from plotly.offline import get_plotlyjs

    bundle = get_plotlyjs()
    assert text.count(bundle) == 1  # the plotly bundle, inlined once
    # Outside the bundle (whose only URL is the default for geo maps, unused), no URL at all.
    assert not re.findall(r"https?://", text.replace(bundle, ""))


def test_loss_curves_are_the_trials_histories(report):
    study, _, _, page = report
    traces = page.figures["loss_curves"]["data"]
    for t in study.trials:
        mine = [tr for tr in traces if tr["meta"]["trial"] == t.number]
        assert len(mine) == 3  # train loss, test loss, test accuracy
        h = history_of(t, study)
        np.testing.assert_allclose(plotly_values(mine[0]["x"]), [e["epoch"] for e in h])
        np.testing.assert_allclose(plotly_values(mine[0]["y"]), [e["train_loss"] for e in h])
        np.testing.assert_allclose(plotly_values(mine[1]["y"]), [e["test_loss"] for e in h])
        np.testing.assert_allclose(plotly_values(mine[2]["y"]),
                                   [100 * e["test_metrics"]["accuracy"] for e in h])


def _predictions(study, built):
    best = study.best_trial
    meta = {m.filename: m.artifact_id for m in optuna.artifacts.get_all_artifact_meta(
        best, storage=study._storage)}
    store = optuna.artifacts.FileSystemArtifactStore(str(built.artifacts))
    with store.open_reader(meta["predictions.npz"]) as f:
        z = np.load(io.BytesIO(f.read()))
        return {k: z[k] for k in z.files}


def test_spectra_and_histogram_are_the_best_trials_predictions(report):
    from model.metrics import accuracy_per_spectrum, scaled_to_target

    study, built, _, page = report
    z = _predictions(study, built)
    grid = z["grid"]
    # Scale-free losses are judged (and drawn) on predictions scaled to their targets.
    scaled = study.best_trial.params.get("loss") in ("cosine", "pearson")
    if scaled:
        z["pred"] = scaled_to_target(z["pred"].astype(np.float64), z["target"].astype(np.float64))
    acc = accuracy_per_spectrum(z["pred"].astype(np.float64), z["target"].astype(np.float64),
                                (grid[-1] - grid[0]) / len(grid))
    names = {tr["name"] for tr in page.figures["spectra"]["data"]}
    assert names == {"target", "prediction (scaled to the target)" if scaled else "prediction"}
    traces = page.figures["spectra"]["data"]
    assert len(traces) == 4
    for tr in traces:
        row = int(np.argmax(acc) if tr["meta"]["which"] == "best" else np.argmin(acc))
        assert tr["meta"]["row"] == row
        assert tr["meta"]["molecule"] == int(z["index"][row])
        np.testing.assert_allclose(plotly_values(tr["x"]), grid)
        series = z["target"] if tr["meta"]["series"] == "target" else z["pred"]
        np.testing.assert_allclose(plotly_values(tr["y"]), series[row], rtol=1e-6)
    hist = page.figures["accuracy_histogram"]["data"][0]
    assert hist["type"] == "histogram"
    np.testing.assert_allclose(np.sort(plotly_values(hist["x"])), np.sort(100 * acc), rtol=1e-9)
    # the histogram agrees with the trial's recorded validation accuracy
    m = study.best_trial.user_attrs["metrics"]
    assert np.mean(acc) == pytest.approx(m["accuracy"], abs=1e-5)


def test_optuna_figures_hold_the_objective_values(report):
    study, _, _, page = report
    hist = page.figures["optimization_history"]["data"]
    ys = np.concatenate([plotly_values(tr["y"]) for tr in hist if tr.get("name") == OBJECTIVE])
    np.testing.assert_allclose(np.sort(ys), np.sort([100 * t.value for t in study.trials]))
    # Optuna 5 draws parallel coordinates as one line per trial, its values in customdata
    lines = [tr for tr in page.figures["parallel_coordinate"]["data"] if tr.get("mode") == "lines"]
    drawn = sorted((dict(tr["customdata"])["loss"], float(dict(tr["customdata"])["sigma"]),
                    float(dict(tr["customdata"])[OBJECTIVE])) for tr in lines)
    expected = sorted((t.params["loss"], t.params["sigma"], 100 * t.value) for t in study.trials)
    assert [d[:2] for d in drawn] == [e[:2] for e in expected]
    np.testing.assert_allclose([d[2] for d in drawn], [e[2] for e in expected], rtol=2e-3)
    assert page.figures["contour"]["data"]


def test_tables_in_the_html_match_the_markdown(report):
    _, _, paths, page = report
    md = paths.markdown.read_text()
    for row in page.tables["results"][1:]:
        assert "| " + " | ".join(row) + " |" in md


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
def test_multi_objective_study_has_a_pareto_front(report, tmp_path):
    """A two-objective study (fair accuracy up, Wasserstein distance down) built from the real
    trials' records: the report adds the Pareto front and still draws the rest."""
    study, _, _, _ = report
    multi = optuna.create_study(directions=["maximize", "minimize"], study_name="pareto")
    multi.set_metric_names(["fair_accuracy", "wasserstein_eV"])
    for t in study.trials:
        m = t.user_attrs["metrics"]
        multi.add_trial(optuna.trial.create_trial(
            params=t.params, distributions=t.distributions, user_attrs=t.user_attrs,
            values=[m["fair_accuracy"], m["wasserstein_eV"]]))
    paths = write_report(multi, tmp_path)
    page = parse_report(paths.html)
    front = page.figures["pareto_front"]["data"]
    xs = np.concatenate([plotly_values(tr["x"]) for tr in front])
    np.testing.assert_allclose(np.sort(xs), np.sort([100 * t.values[0] for t in multi.trials]))
    assert {"loss_curves", "optimization_history", "parallel_coordinate"} <= set(page.figures)
    assert "spectra" in page.notes  # no artifact store given: a note, not a failure


def test_too_few_trials_give_notes_not_errors(tmp_path):
    study = optuna.create_study(direction="maximize")
    dist = {"lr": optuna.distributions.FloatDistribution(1e-5, 1e-3, log=True)}
    study.add_trial(optuna.trial.create_trial(
        params={"lr": 1e-4}, distributions=dist, value=0.9,
        user_attrs={"metrics": {"accuracy": 0.9}, "params": {"loss": "rmse", "sigma": 0.5},
                    "history": [{"epoch": 1, "train_loss": 0.5, "test_loss": 0.6}]}))
    page = parse_report(write_report(study, tmp_path).html)
    assert "at least two parameters that vary" in page.notes["param_importances"]
    assert "needs two varied parameters" in page.notes["contour"]
    assert "loss_curves" in page.figures and "optimization_history" in page.figures
