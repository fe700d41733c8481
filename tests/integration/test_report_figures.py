"""The report's own figures (accuracy against sigma, Np and loss), labels and units shared with
the tables, notes instead of meaningless figures, the published numbers of the paper studies,
figures written as real PNG / SVG / PDF files (kaleido with the system Chromium), and the
small shareable page (--plotlyjs cdn|directory)."""

from __future__ import annotations

import struct
import xml.etree.ElementTree as ET

import numpy as np
import optuna
import pandas as pd
import pytest
from optuna.distributions import CategoricalDistribution
from typer.testing import CliRunner

from hpo.report import write_report
from hpo.report.figures import MIN_IMPORTANCE_TRIALS, accuracy_against, optuna_figures
from model.contract import SCALE_FREE_LOSSES
from tests.support import parse_report, plotly_values

pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
runner = CliRunner()
HELD_OUT = "accuracy (%), validation split (held out)"


def _judged_pct(t) -> float:
    m = t.user_attrs["metrics"]
    scale_free = t.user_attrs["params"]["loss"] in SCALE_FREE_LOSSES
    return 100 * m["accuracy_normalised" if scale_free else "accuracy"]


def test_report_figures_of_a_real_study(report_study, tmp_path):
    """The shared real study (loss rmse / cosine x sigma 0.5 / 0.3, one trial each): accuracy
    against sigma, one line per loss, holds each trial's validation accuracy (judged as the
    table judges it) and fair accuracy in %; per loss, one line per sigma; Np is not varied."""
    study = report_study.load()
    page = parse_report(write_report(study, tmp_path, report_study.artifacts).html)
    fig = page.figures["accuracy_vs_sigma"]
    assert fig["layout"]["xaxis"]["title"]["text"] == "sigma (eV)"
    assert fig["layout"]["yaxis"]["title"]["text"] == HELD_OUT
    by = {(t.params["loss"], t.params["sigma"]): t for t in study.trials}
    traces = fig["data"]
    assert {tr["meta"]["metric"] for tr in traces} == {
        "accuracy", "fair_accuracy", "baseline_accuracy", "baseline_fair_accuracy"}  # no paper
    assert len(traces) == 8  # 2 losses x (plain, fair) x (trial, its baseline)
    for tr in traces:
        loss = tr["meta"]["series"]["loss"]
        xs = plotly_values(tr["x"])
        np.testing.assert_allclose(xs, [0.3, 0.5])
        trials = [by[(loss, x)] for x in xs]
        assert tr["meta"]["trials"] == [[t.number] for t in trials]
        metric = tr["meta"]["metric"]
        if metric.startswith("baseline_"):  # the mean training spectrum's, judged as the trial
            expected = [100 * t.user_attrs["baseline"]["validation"][metric[9:]]
                        for t in trials]
        else:
            expected = [_judged_pct(t) if metric == "accuracy"
                        else 100 * t.user_attrs["metrics"]["fair_accuracy"] for t in trials]
            np.testing.assert_allclose(plotly_values(tr["error_y"]["array"]), 0)  # one each
        np.testing.assert_allclose(plotly_values(tr["y"]), expected, rtol=1e-9)
    per_loss = page.figures["accuracy_vs_loss"]
    assert per_loss["layout"]["xaxis"]["title"]["text"] == "loss"
    assert [list(tr["x"]) for tr in per_loss["data"]] == [["rmse", "cosine"]] * 8  # report order
    assert "does not vary Np" in page.notes["accuracy_vs_n_points"]
    # the same labels in the table as in the figures
    assert page.tables["results"][0][:3] == ["loss", "sigma (eV)", "Np"]
    assert "report (2019) accuracy (%)" not in page.tables["results"][0]  # not a paper study


def _study(name: str, cells: dict[float, list[float]], n_points: int = 300) -> optuna.Study:
    """In-memory study: per sigma, one trial per seed with the given validation accuracy."""
    study = optuna.create_study(direction="maximize", study_name=name,
                                storage=optuna.storages.InMemoryStorage())
    study.set_metric_names(["fair_accuracy"])
    study.set_user_attr("objective_split", "test")
    sigmas = sorted(cells)
    for sigma, accs in cells.items():
        for seed, acc in enumerate(accs):
            study.add_trial(optuna.trial.create_trial(
                params={"sigma": sigma, "seed": seed},
                distributions={"sigma": CategoricalDistribution(sigmas),
                               "seed": CategoricalDistribution(list(range(len(accs))))},
                value=acc - 0.01,
                user_attrs={"metrics": {"accuracy": acc, "fair_accuracy": acc - 0.01},
                            "params": {"loss": "rmse", "n_points": n_points, "sigma": sigma,
                                       "seed": seed}}))
    return study


def test_repeated_trials_give_mean_and_min_max_bars():
    study = _study("seeds", {0.1: [0.70, 0.74, 0.72], 0.5: [0.93, 0.95]})
    f = accuracy_against(study, "sigma")
    assert f.fig is not None and "mean" in f.title and "min-max" in f.title, f.title
    plain = next(tr for tr in f.fig.data if tr.meta["metric"] == "accuracy")
    assert list(plain.x) == [0.1, 0.5]
    np.testing.assert_allclose(plain.y, [72.0, 94.0])
    np.testing.assert_allclose(plain.error_y.array, [2.0, 1.0])
    np.testing.assert_allclose(plain.error_y.arrayminus, [2.0, 1.0])
    assert plain.meta["trials"] == [[0, 1, 2], [3, 4]]


def test_too_few_trials_say_so_instead_of_importance_one():
    """Two varied parameters but 6 trials: no importance plot (it would rank noise); one
    varied parameter: no importance (1.00 by construction) and no contour."""
    study = _study("few", {0.1: [0.70, 0.74, 0.72], 0.5: [0.93, 0.95, 0.94]})
    notes = {f.key: f.note for f in optuna_figures(study)}
    importances = notes["param_importances"]
    assert f"at least {MIN_IMPORTANCE_TRIALS}" in importances and "has 6" in importances
    # no surface over seeds: sigma is the one parameter left for a contour
    assert "two varied parameters" in notes["contour"] and "sigma (eV)" in notes["contour"]
    one = optuna.create_study(direction="maximize", storage=optuna.storages.InMemoryStorage())
    for i, lr in enumerate([1e-4, 3e-4, 1e-3] * 4):
        one.add_trial(optuna.trial.create_trial(
            params={"lr": lr}, value=0.5 + i / 100,
            distributions={"lr": optuna.distributions.FloatDistribution(1e-5, 1e-2, log=True)}))
    notes = {f.key: f.note for f in optuna_figures(one)}
    assert "1.00 by construction" in notes["param_importances"]
    assert "learning rate" in notes["param_importances"]  # the label, not "lr"
    assert "needs two varied parameters" in notes["contour"]


def test_plotlyjs_cdn_and_directory_make_small_pages(tmp_path):
    from plotly.offline import get_plotlyjs, get_plotlyjs_version

    study = _study("share", {0.1: [0.70], 0.5: [0.93]})
    inline = write_report(study, tmp_path / "inline").html
    cdn = write_report(study, tmp_path / "cdn", plotlyjs="cdn").html
    folder = write_report(study, tmp_path / "dir", plotlyjs="directory").html
    bundle = get_plotlyjs()
    assert bundle in inline.read_text()
    for small in (cdn, folder):
        text = small.read_text()
        assert bundle not in text and small.stat().st_size < inline.stat().st_size / 10
        assert set(parse_report(small).figures) == set(parse_report(inline).figures)
    assert f'src="https://cdn.plot.ly/plotly-{get_plotlyjs_version()}.min.js"' in cdn.read_text()
    assert 'src="plotly.min.js"' in folder.read_text()
    assert (folder.parent / "plotly.min.js").read_text() == bundle
    from hpo.cli import app

    r = runner.invoke(app, ["report", "x", "--plotlyjs", "somewhere"])
    assert r.exit_code != 0 and "--plotlyjs 'somewhere'" in r.output, r.output
    assert all(choice in r.output for choice in ("inline", "cdn", "directory")), r.output
    r = runner.invoke(app, ["report", "x", "--format", "png,gif"])
    assert r.exit_code != 0 and "unknown figure format 'gif'" in r.output


def _png_size(path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR", path
    return struct.unpack(">II", data[16:24])


def _svg_texts(path) -> list[str]:
    root = ET.parse(path).getroot()  # well-formed XML, or this raises
    assert root.tag.endswith("svg")
    return ["".join(e.itertext()) for e in root.iter() if e.tag.endswith("text")]


@pytest.mark.slow
@pytest.mark.browser  # kaleido draws the figure files with the system Chromium
def test_paper_study_through_the_cli_with_published_numbers_and_figure_files(tmp_path):
    """A tiny run of the shipped paper-sigma study (1 epoch, 200 molecules), then
    `specopt report --format png,svg,pdf`: the results table and the sigma figure show the
    report's published accuracy beside ours, and every drawn figure is a real PNG, SVG and PDF
    with the axis titles of the page."""
    from hpo.cli import app

    url = f"sqlite:///{tmp_path / 'paper.db'}"
    r = runner.invoke(app, ["worker", "paper-sigma", "--epochs", "1", "--subset", "200",
                            "--threads", "1", "--device", "cpu", "--storage", url,
                            "--artifacts", str(tmp_path / "artifacts")])
    assert r.exit_code == 0, r.output
    out = tmp_path / "report"
    r = runner.invoke(app, ["report", "paper-sigma", "--storage", url, "--out", str(out),
                            "--format", "png,svg,pdf"])
    assert r.exit_code == 0, r.output
    assert "fair accuracy" in r.output and "test split" in r.output  # the best trial
    assert "figures: " in r.output
    results = pd.read_csv(out / "results.csv")
    published = dict(zip(results["sigma (eV)"], results["report (2019) accuracy (%)"],
                         strict=True))
    assert published == {0.1: 74.1, 0.3: 90.6, 0.5: 94.8}
    page = parse_report(out / "report.html")
    fig = page.figures["accuracy_vs_sigma"]
    star = next(tr for tr in fig["data"] if tr["meta"]["metric"] == "paper")
    assert star["name"] == "report (2019): accuracy (%)"
    np.testing.assert_allclose(plotly_values(star["x"]), [0.1, 0.3, 0.5])
    np.testing.assert_allclose(plotly_values(star["y"]), [74.1, 90.6, 94.8])
    negative = pd.read_csv(out / "negative.csv")
    assert negative.set_index("sigma (eV)").loc[0.5, "report (2019) negative points (%)"] \
        == 30.4
    files = {p.name for p in (out / "figures").iterdir()}
    drawn = set(page.figures)
    assert files == {f"{k}.{ext}" for k in drawn for ext in ("png", "svg", "pdf")}
    width, height = _png_size(out / "figures" / "accuracy_vs_sigma.png")
    assert (width, height) == (2000, 840)  # 1000 x 420 px at scale 2
    texts = _svg_texts(out / "figures" / "accuracy_vs_sigma.svg")
    assert "sigma (eV)" in texts and HELD_OUT in texts
    assert "report (2019): accuracy (%)" in texts  # the legend
    anytime = _svg_texts(out / "figures" / "anytime.svg")
    assert any("best fair accuracy" in t and "test split" in t for t in anytime), anytime
    assert (out / "figures" / "accuracy_vs_sigma.pdf").read_bytes()[:5] == b"%PDF-"
    md = (out / "report.md").read_text()
    assert "as PNG, SVG, PDF files" in md and "[accuracy_vs_sigma]" in md


def test_dashboard_note_names_the_splits_and_keeps_a_persons_note(report_study, tmp_path):
    """The study note optuna-dashboard shows says which split each number comes from; it is
    written once and never replaces a note somebody wrote."""
    from optuna_dashboard import get_note, save_note

    from hpo.observe.dashboard import write_reading_note

    url = f"sqlite:///{tmp_path / 'copy.db'}"
    optuna.copy_study(from_study_name=report_study.name, from_storage=report_study.url,
                      to_storage=url)
    study = optuna.load_study(study_name=report_study.name, storage=url)
    save_note(study, "")  # as a study that has no note (the dashboard test may have run)
    assert write_reading_note(study) is True
    note = get_note(study)
    assert "`fair_accuracy`" in note and "test split" in note, note  # the objective's split
    assert "`metrics`" in note and "validation split" in note, note
    assert write_reading_note(study) is False  # unchanged: not written again
    save_note(study, "my own note")
    assert write_reading_note(study) is False and get_note(study) == "my own note"


def test_published_numbers_are_the_shipped_paper_studies():
    """paper.PAPER_STUDIES names shipped study files, each grid row of which has its published
    accuracy; the scale-free losses' rows are the normalised ones, as our table judges them."""
    from hpo.report import paper
    from hpo.study.config import load_study_config

    for name in paper.PAPER_STUDIES:
        cfg = load_study_config(name)
        assert cfg.name == name
        space = cfg.to_dict()["space"]
        grid = [dict(loss=space["loss"], sigma=space["sigma"], n_points=space["n_points"])]
        for key in ("loss", "sigma", "n_points"):
            if isinstance(space[key], list):
                grid = [{**g, key: v} for g in grid for v in space[key]]
        for g in grid:
            found = paper.published(g["loss"], g["sigma"], g["n_points"])
            assert found is not None, (name, g)
            assert found.normalised == (g["loss"] in ("cosine", "pearson"))
    assert paper.published("rmse", 0.1, 500).accuracy == 74.2
    assert paper.published("rmse", 0.2, 300) is None and not paper.is_paper_study("demo")


def test_figure_files_without_kaleido_say_what_to_install(tmp_path, monkeypatch):
    import sys

    from hpo.report import ReportError

    monkeypatch.setitem(sys.modules, "kaleido", None)  # import kaleido raises ImportError
    study = _study("nokaleido", {0.1: [0.70], 0.5: [0.93]})
    with pytest.raises(ReportError, match=r"needs kaleido: pip install 'specopt\[figures\]'"):
        write_report(study, tmp_path, formats="svg")
    assert write_report(study, tmp_path / "html").figures == []  # html only: no kaleido needed
