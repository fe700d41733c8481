"""The report's tables (Markdown, CSV), the best-trial table, and bad input: unknown study,
empty study, a study whose trials all failed."""

from __future__ import annotations

import math
import re

import optuna
import pandas as pd
import pytest
from typer.testing import CliRunner

from hpo.report import ReportError, best_trial_table, write_report
from hpo.study.create import open_study
from model.contract import SCALE_FREE_LOSSES


def md_tables(text: str) -> dict[str, list[dict[str, str]]]:
    """Markdown tables by their section heading: lists of {column: cell}."""
    out: dict[str, list[dict[str, str]]] = {}
    heading = None
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("## "):
            heading = line[3:].strip()
        elif line.startswith("| ") and i + 1 < len(lines) and lines[i + 1].startswith("|---"):
            head = [c.strip() for c in line.strip("|").split(" | ")]
            rows = []
            i += 2
            while i < len(lines) and lines[i].startswith("|"):
                cells = [c.strip() for c in lines[i].strip().strip("|").split(" | ")]
                rows.append(dict(zip(head, cells, strict=True)))
                i += 1
            out[heading] = rows
            continue
        i += 1
    return out


@pytest.fixture(scope="module")
def written(report_study, tmp_path_factory):
    study = report_study.load()
    paths = write_report(study, tmp_path_factory.mktemp("report"), report_study.artifacts)
    return study, paths


def _judged(metrics: dict, loss: str, key: str) -> float:
    return metrics[f"{key}_normalised" if loss in ("cosine", "pearson") else key]


def test_results_table_per_loss_and_sigma(written):
    study, paths = written
    tables = md_tables(paths.markdown.read_text())
    results = tables["Results per loss / sigma / Np on the validation split (held out)"]
    trials = study.trials
    groups = {(t.params.get("loss", "rmse"), t.params["sigma"]) for t in trials}
    assert len(results) == len(groups)
    csv = pd.read_csv(paths.csv["results"])
    assert len(csv) == len(groups)
    for row, (_, c) in zip(results, csv.iterrows(), strict=True):
        group = [t for t in trials if t.user_attrs["params"]["loss"] == row["loss"]
                 and t.user_attrs["params"]["sigma"] == float(row["sigma (eV)"])]
        best = max(group, key=lambda t: t.value)  # the objective is maximised
        m = best.user_attrs["metrics"]
        assert int(row["best trial"]) == best.number and int(row["trials"]) == len(group)
        assert row["Np"] == "300"
        scale_free = row["loss"] in SCALE_FREE_LOSSES
        assert row["judged on"] == ("normalised" if scale_free else "raw")
        # Markdown is rounded, CSV exact
        assert float(row["accuracy (%)"]) == pytest.approx(
            100 * _judged(m, row["loss"], "accuracy"), abs=0.051)
        assert c["accuracy (%)"] == pytest.approx(100 * _judged(m, row["loss"], "accuracy"))
        for col, key in (("RMSE", "rmse"), ("MAE", "mae"), ("R^2", "r2")):
            assert c[col] == pytest.approx(_judged(m, row["loss"], key))
            assert float(row[col]) == pytest.approx(_judged(m, row["loss"], key), rel=0.01)
        assert c["fair accuracy (%)"] == pytest.approx(100 * m["fair_accuracy"])
        assert c["W1 (eV)"] == pytest.approx(m["wasserstein_eV"])
        # the mean-training-spectrum baseline beside each score (judged as the trial is)
        b = best.user_attrs["baseline"]["validation"]
        assert c["baseline accuracy (%)"] == pytest.approx(100 * b["accuracy"])
        assert c["baseline RMSE"] == pytest.approx(
            b["rmse_normalised" if scale_free else "rmse"])
        assert c["baseline fair accuracy (%)"] == pytest.approx(100 * b["fair_accuracy"])
        assert c["baseline W1 (eV)"] == pytest.approx(b["wasserstein_eV"])
        assert c["baseline level error (eV)"] == pytest.approx(b["level_error_eV"])
        assert c["skill (%)"] == pytest.approx(100 * m["skill"])
        assert c["skill (%)"] == pytest.approx(
            100 * (1 - (1 - m["fair_accuracy"]) / (1 - b["fair_accuracy"])), rel=1e-4)
        assert float(row["baseline fair accuracy (%)"]) == pytest.approx(
            100 * b["fair_accuracy"], abs=0.051)
    # each baseline column right after the score it is read against
    cols = list(csv.columns)
    for score in ("accuracy (%)", "RMSE", "fair accuracy (%)", "W1 (eV)", "level error (eV)"):
        assert cols[cols.index(score) + 1] == f"baseline {score}"
    assert cols[cols.index("baseline fair accuracy (%)") + 1] == "skill (%)"


def test_negative_and_trials_tables(written):
    study, paths = written
    tables = md_tables(paths.markdown.read_text())
    negative = tables["Negative predicted intensities on the validation split (held out)"]
    by_number = {t.number: t for t in study.trials}
    assert negative
    for row in negative:
        m = by_number[int(row["best trial"])].user_attrs["metrics"]
        assert float(row["negative points (%)"]) == pytest.approx(
            100 * m["negative_share"], abs=0.051)
    trials = pd.read_csv(paths.csv["trials"])
    assert sorted(trials["trial"]) == sorted(by_number)
    for _, row in trials.iterrows():
        t = by_number[row["trial"]]
        assert row["state"] == "complete"
        assert row["objective: fair accuracy (%), test split (model selection)"] \
            == pytest.approx(100 * t.value)
        assert row["accuracy (%)"] == pytest.approx(100 * t.user_attrs["metrics"]["accuracy"])
        assert row["accuracy_n (%)"] == pytest.approx(
            100 * t.user_attrs["metrics"]["accuracy_normalised"])
        assert row["epochs"] == 2 and row["device"] == "cpu"
        base = t.user_attrs["baseline"]
        assert row["baseline fair accuracy (%), test split (model selection)"] == pytest.approx(
            100 * base["test"]["fair_accuracy"])  # the objective's baseline, on its split
        for col, key in (("baseline accuracy (%)", "accuracy"), ("baseline RMSE", "rmse"),
                         ("baseline RMSE_n", "rmse_normalised"),
                         ("baseline W1 (eV)", "wasserstein_eV")):
            scale = 100 if "(%)" in col else 1
            assert row[col] == pytest.approx(scale * base["validation"][key]), col
        assert row["skill (%)"] == pytest.approx(100 * t.user_attrs["metrics"]["skill"])
    assert len(tables["All trials"]) == len(by_number)


def test_best_trial_table(written):
    study, _ = written
    best = study.best_trial
    text = best_trial_table(study)
    rows = dict(re.findall(r"^\| (.+?) \| (.*?) \|$", text, flags=re.M))
    assert rows["trial"] == str(best.number)
    assert rows["loss"] == best.user_attrs["params"]["loss"]
    m = best.user_attrs["metrics"]
    key = ("accuracy (%) (normalised)" if best.params["loss"] == "cosine" else "accuracy (%)") \
        + ", validation split (held out)"
    acc = m["accuracy_normalised" if best.params["loss"] == "cosine" else "accuracy"]
    assert float(rows[key]) == pytest.approx(100 * acc, abs=0.051)
    assert float(rows["objective (maximize): fair accuracy (%), test split (model selection)"]
                 ) == pytest.approx(100 * best.value, abs=0.051)
    base = best.user_attrs["baseline"]
    assert float(rows["baseline fair accuracy (%), test split (model selection)"]) == \
        pytest.approx(100 * base["test"]["fair_accuracy"], abs=0.051)
    assert float(rows["baseline fair accuracy (%)"]) == pytest.approx(
        100 * base["validation"]["fair_accuracy"], abs=0.051)
    assert float(rows["skill (%)"]) == pytest.approx(100 * m["skill"], abs=0.051)
    assert float(rows["baseline W1 (eV)"]) == pytest.approx(
        base["validation"]["wasserstein_eV"], rel=0.01)
    names = list(rows)
    assert names.index("baseline fair accuracy (%)") == names.index("fair accuracy (%)") + 1


def test_empty_study_says_so(tmp_path):
    study = optuna.create_study(study_name="nothing-yet", storage=f"sqlite:///{tmp_path}/e.db")
    paths = write_report(study, tmp_path / "out")
    assert "has no trials yet" in paths.message
    assert paths.message in paths.markdown.read_text()
    html = paths.html.read_text()
    assert 'id="study-message"' in html and "has no trials yet" in html
    assert "has no trials yet" in best_trial_table(study)
    assert pd.read_csv(paths.csv["results"]).empty


def test_only_failed_trials_say_why(report_failed, tmp_path):
    study = report_failed.load()
    paths = write_report(study, tmp_path / "out")
    assert paths.message.startswith("Study 'broken' has no complete trial yet (2 fail)")
    assert "train loss is nan" in paths.message
    trials = pd.read_csv(paths.csv["trials"])
    assert list(trials["state"]) == ["fail", "fail"]
    assert all("train loss is nan" in n for n in trials["note"])
    from hpo.report import export_best

    with pytest.raises(ReportError, match="no complete trial"):
        export_best(study, tmp_path / "export")


def test_unknown_study_lists_the_known_ones(report_study, tmp_path):
    with pytest.raises(ReportError, match=r"unknown study 'no-such-study'.*demo"):
        open_study("no-such-study")
    with pytest.raises(ReportError, match=r"no study 'nope' in .*studies there: tiny"):
        open_study("nope", report_study.url)
    with pytest.raises(ReportError, match="has not been run"):
        open_study("nope", f"sqlite:///{tmp_path}/missing.db")
    assert not (tmp_path / "missing.db").exists()  # reading never creates a storage


def test_cli_report_and_bad_names(report_study, tmp_path):
    from hpo.cli import app

    runner = CliRunner()
    r = runner.invoke(app, ["report", "tiny", "--storage", report_study.url,
                            "--out", str(tmp_path / "rep")])
    assert r.exit_code == 0, r.output
    assert "report: " in r.output and (tmp_path / "rep" / "report.html").is_file()
    assert "| trial |" in r.output
    r = runner.invoke(app, ["report", "nope", "--storage", report_study.url])
    assert r.exit_code == 2
    assert "studies there: tiny" in r.output and "Traceback" not in r.output
    empty_url = f"sqlite:///{tmp_path}/empty.db"
    optuna.create_study(study_name="empty", storage=empty_url)
    r = runner.invoke(app, ["report", "empty", "--storage", empty_url,
                            "--out", str(tmp_path / "e")])
    assert r.exit_code == 0 and "has no trials yet" in r.output
    assert (tmp_path / "e" / "report.html").is_file()


def test_nan_metrics_do_not_break_tables(tmp_path):
    """A trial whose metrics hold None (the objective writes non-finite values as null)."""
    study = optuna.create_study(direction="maximize")
    study.add_trial(optuna.trial.create_trial(
        params={"sigma": 0.5}, distributions={
            "sigma": optuna.distributions.CategoricalDistribution([0.5, 0.3])},
        value=0.5, user_attrs={"metrics": {"accuracy": None, "rmse": math.nan},
                               "params": {"loss": "rmse", "n_points": 300}}))
    paths = write_report(study, tmp_path)
    rows = md_tables(paths.markdown.read_text())[
        "Results per loss / sigma / Np on the validation split (held out)"]
    assert rows[0]["accuracy (%)"] == "" and rows[0]["RMSE"] == ""
    # recorded before baselines existed: the baseline columns stay empty
    assert rows[0]["baseline accuracy (%)"] == "" and rows[0]["skill (%)"] == ""
