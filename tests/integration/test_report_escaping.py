"""Every value a report, export or prediction writes from a study's database or a user's file
stays text in each output format (issue 20, item 8): Markdown (no HTML, comments, links, broken
table rows), CSV (no spreadsheet formulas; real negative numbers stay numbers), JSON (strict:
no NaN), the terminal (no escape sequences) and MLflow (names it accepts)."""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
from pathlib import Path

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState, create_trial
from typer.testing import CliRunner

from hpo.cli import app
from hpo.report import write_report
from model.contract import StudyAttr, TrialAttr
from tests.support import ReportPage

#: An OSC sequence (sets the terminal's title) and a bell: click strips CSI colours from output
#: that is not a terminal, not these, and a real terminal runs both.
OSC = "\x1b]0;pwned\x07"
NAME = f"evil `x` | <b>y</b> {OSC}"
DESCRIPTION = ("<!-- swallow the rest\n<script>alert(1)</script>\n# not a heading\n"
               "| a | b |\n[click](javascript:alert(2)) `code` *em* ~~gone~~ _u_ \\")
EVIL_PARAM = "<img src=x onerror=alert(3)>|p"
FORMULA = '=HYPERLINK("http://evil","x")'
LOSS = "<script>alert(4)</script>|`rm`"
DEVICE = f"@SUM(1+1){OSC}"
FAILURE = f"=cmd|' /C calc'!A0\nnext | line {OSC}"
METRIC = "+evil|<i>metric</i>"
WATER = """3
gdb 7\t0
O\t0.0\t0.0\t0.1173
H\t0.0\t0.7572\t-0.4692
H\t0.0\t-0.7572\t-0.4692
"""


def hostile_study(root: Path) -> tuple[optuna.Study, str]:
    """A study whose every name and value is hostile: its name, description, metric name,
    stored definition (a NaN fixed setting, a formula), a parameter name and value, the loss,
    device and failure attributes; one real negative number (``shift``)."""
    url = f"sqlite:///{root / 'evil.db'}"
    study = optuna.create_study(study_name=NAME, storage=url, direction="maximize")
    study.set_metric_names([METRIC])
    study.set_user_attr(StudyAttr.DESCRIPTION, DESCRIPTION)
    study.set_user_attr(StudyAttr.CONFIG,
                        json.dumps({"space": {"dropout": math.nan, "note": "-2+3"}}))
    dists = {"sigma": CategoricalDistribution([0.5, 0.3]),
             EVIL_PARAM: CategoricalDistribution([FORMULA, "plain"]),
             "shift": FloatDistribution(-5.0, 5.0)}
    attrs = {TrialAttr.PARAMS: {"loss": LOSS, "n_points": 300},
             TrialAttr.METRICS: {"accuracy": 0.9, "rmse": 0.1, "r2": -0.25},
             TrialAttr.DEVICE: DEVICE}
    study.add_trial(create_trial(params={"sigma": 0.5, EVIL_PARAM: FORMULA, "shift": -1.5},
                                 distributions=dists, value=0.5, user_attrs=attrs))
    study.add_trial(create_trial(params={"sigma": 0.3, EVIL_PARAM: "plain", "shift": 1.0},
                                 distributions=dists, state=TrialState.FAIL,
                                 user_attrs={**attrs, TrialAttr.FAILURE: FAILURE}))
    return study, url


@pytest.fixture
def report(tmp_path):
    study, url = hostile_study(tmp_path)
    return study, url, write_report(study, tmp_path / "report")


# --- Markdown -----------------------------------------------------------------------------------

def _markdown(text: str):
    markdown_it = pytest.importorskip("markdown_it")
    # CommonMark with raw HTML on (as GitHub's renderer before its sanitiser) and GFM tables
    return markdown_it.MarkdownIt("commonmark").enable(["table", "strikethrough"]), text


def test_markdown_report_shows_every_value_as_text(report):
    _, _, paths = report
    text = paths.markdown.read_text()
    md, _ = _markdown(text)
    rendered = md.render(text)
    dom = ReportPage(rendered)
    tags = {t for t, _ in dom.tags}
    assert not tags & {"script", "img", "b", "i", "!--", "em", "del", "a"}, tags
    assert [t for t, _ in dom.tags].count("h1") == 1
    shown = "".join(dom.text)
    for heading in ("Best trial", "All trials", "Figures"):  # not swallowed by a comment
        assert heading in shown
    # the description as written (its line breaks as spaces), the values likewise
    for value in ("<!-- swallow the rest <script>alert(1)</script> # not a heading | a | b | "
                  "[click](javascript:alert(2)) `code` *em* ~~gone~~ _u_ \\",
                  "evil `x` | <b>y</b>", EVIL_PARAM, FORMULA, LOSS, METRIC, "@SUM(1+1)",
                  "=cmd|' /C calc'!A0 next | line"):
        assert value in shown, value
    assert "\x1b" not in text and "\x07" not in text
    # every table row has as many cells as its header
    tokens = md.parse(text)
    widths: list[int] = []
    for tok in tokens:
        if tok.type == "tr_open":
            widths.append(0)
        elif tok.type in ("th_open", "td_open"):
            widths[-1] += 1
        elif tok.type == "table_close":
            assert len(set(widths)) == 1, widths
            widths = []


def test_best_trial_table_on_the_terminal_has_no_escape_sequences(report, tmp_path):
    _, url, _ = report
    r = CliRunner().invoke(app, ["report", NAME, "--storage", url, "--out", str(tmp_path / "o")])
    assert r.exit_code == 0, r.output
    assert "Traceback" not in r.output
    assert "\x1b" not in r.output and "\x07" not in r.output
    assert "@SUM(1+1)" in r.output and "\\x1b" in r.output  # shown, escaped


def test_failure_message_on_the_terminal_has_no_escape_sequences(tmp_path):
    url = f"sqlite:///{tmp_path / 'f.db'}"
    study = optuna.create_study(study_name="failed", storage=url)
    study.add_trial(create_trial(state=TrialState.FAIL,
                                 user_attrs={TrialAttr.FAILURE: FAILURE}))
    r = CliRunner().invoke(app, ["report", "failed", "--storage", url,
                                 "--out", str(tmp_path / "o")])
    assert r.exit_code == 0 and "Traceback" not in r.output, r.output
    assert "=cmd|' /C calc'!A0" in r.output
    assert "\x1b" not in r.output and "\x07" not in r.output


def test_dashboard_note_shows_a_stored_objective_name_as_text(tmp_path):
    """optuna-dashboard renders the study's note as Markdown: an objective name from the
    database (StudyAttr.OBJECTIVES) is text there, never a code span it breaks out of."""
    from markdown_it import MarkdownIt

    from hpo.observe.dashboard import reading_note

    study, _ = hostile_study(tmp_path)
    evil = "x` <img src=x onerror=alert(5)> [a](javascript:alert(6)) `y"
    study.set_user_attr(StudyAttr.OBJECTIVES, [evil])
    tokens = MarkdownIt("commonmark").parseInline(
        next(line for line in reading_note(study).splitlines() if "Objective" in line))
    kinds = {t.type for t in tokens[0].children}
    assert kinds <= {"text", "code_inline", "softbreak"}, kinds
    assert evil in "".join(t.content for t in tokens[0].children)


# --- CSV ----------------------------------------------------------------------------------------

def _cells(path: Path) -> list[list[str]]:
    with path.open(newline="") as f:
        return list(csv.reader(f))


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def test_csv_cells_never_run_as_spreadsheet_formulas(report):
    _, _, paths = report
    assert set(paths.csv) == {"results", "negative", "trials", "anytime"}
    for path in paths.csv.values():
        for row in _cells(path):
            for cell in row:
                assert cell[:1] not in ("=", "+", "-", "@", "\t", "\r") or _is_number(cell), \
                    (path.name, cell)
    trials = _cells(paths.csv["trials"])
    head, rows = trials[0], trials[1:]
    assert f"'{EVIL_PARAM}" not in head and EVIL_PARAM in head  # '<' starts no formula
    column = dict(zip(head, zip(*rows, strict=True), strict=True))
    assert column[EVIL_PARAM][0] == "'" + FORMULA  # shown as text, as written
    assert column["shift"][0] == "-1.5"  # a real negative number stays a number
    assert column["R^2"][0] == "-0.25"
    assert column["note"][1].startswith("'=cmd|")
    assert any(METRIC in h for h in head)  # the objective's column


# --- JSON ---------------------------------------------------------------------------------------

def _strict(text: str):
    def refuse(name: str):
        raise ValueError(f"not JSON: {name}")

    return json.loads(text, parse_constant=refuse)


def test_json_in_the_page_is_strict_json(report):
    _, _, paths = report
    dom = ReportPage(paths.html.read_text())
    blocks = [b for a, b in dom.scripts if a.get("type") == "application/json"]
    assert blocks
    parsed = [_strict(b) for b in blocks]
    (summary,) = [p for (a, _), p in zip(
        [s for s in dom.scripts if s[0].get("type") == "application/json"], parsed,
        strict=True) if a.get("data-report") == "summary"]
    assert summary["fixed"]["dropout"] is None and summary["fixed"]["note"] == "-2+3"
    assert summary["description"] == DESCRIPTION and summary["study"] == NAME


def test_export_best_writes_strict_json(tmp_path):
    from hpo.report import export_best

    study, _ = hostile_study(tmp_path)
    paths = export_best(study, tmp_path / "export")
    params = _strict(paths.params.read_text())
    assert params["settings"]["dropout"] is None  # the stored NaN, as JSON has it
    metrics = _strict(paths.metrics.read_text())
    assert metrics["validation"]["r2"] == -0.25 and metrics["study"] == NAME


# --- predict ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def checkpoint(report_study, tmp_path_factory) -> Path:
    from hpo.report import export_best

    paths = export_best(report_study.load(), tmp_path_factory.mktemp("escape-export"),
                        report_study.artifacts)
    assert paths.checkpoint is not None
    return paths.checkpoint


def test_predict_outputs_and_terminal_lines_keep_file_names_as_text(checkpoint, tmp_path):
    evil = tmp_path / f"@x|y{OSC}.xyz"
    evil.write_text(WATER)
    negative = tmp_path / "-2+3.xyz"
    negative.write_text(WATER)
    shutil.copy(checkpoint, tmp_path / f"m{OSC}.pt")
    r = CliRunner().invoke(app, ["predict", str(tmp_path / f"m{OSC}.pt"), str(evil),
                                 str(negative), "--force", "--out", str(tmp_path / "out")])
    assert r.exit_code == 0 and "Traceback" not in r.output, r.output
    assert "\x1b" not in r.output and "\x07" not in r.output
    assert "@x|y\\x1b]0;pwned\\x07.xyz (H2O)" in r.output
    for name in ("spectra.csv", "molecules.csv"):
        for row in _cells(tmp_path / "out" / name):
            for cell in row:
                assert cell[:1] not in ("=", "+", "-", "@", "\t", "\r") or _is_number(cell), \
                    (name, cell)
    head = _cells(tmp_path / "out" / "spectra.csv")[0]
    assert head[1].startswith(f"'@x|y{OSC}.xyz (H2O)")  # the file's own name, made inert
    assert head[2].startswith("'-2+3.xyz (H2O)")


# --- MLflow -------------------------------------------------------------------------------------

@pytest.mark.slow
def test_mlflow_export_of_hostile_names(tmp_path):
    pytest.importorskip("mlflow")
    from hpo.report.mlflow_export import export_mlflow

    study, url = hostile_study(tmp_path)
    study.add_trial(create_trial(  # names MLflow refuses as they are, or that collide
        params={"a/../b": 1.0, "a:b": 2.0, "..": 3.0, "a<b": 4.0, "a>b": 5.0},
        distributions={k: FloatDistribution(0, 9) for k in ("a/../b", "a:b", "..", "a<b",
                                                             "a>b")},
        value=0.1, user_attrs={TrialAttr.BASELINE: {"x/../y": {"accuracy": 0.5}},
                               TrialAttr.ARTIFACTS: {f"h{OSC}.json": "x"}}))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    r = CliRunner().invoke(app, ["export-mlflow", NAME, "--storage", url,
                                 "--tracking-uri", uri])
    assert r.exit_code == 0 and "Traceback" not in r.output, r.output
    assert "3 new" in r.output and "h\\x1b]0;pwned\\x07.json" in r.output
    assert "\x1b" not in r.output and "\x07" not in r.output
    done = export_mlflow(study, storage_url=url, tracking_uri=uri)  # idempotent: found again
    assert sorted(done.unchanged) == [0, 1, 2]
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    note = client.get_experiment(done.experiment_id).tags["mlflow.note.content"]
    md, _ = _markdown(note)
    dom = ReportPage(md.render(note))  # MLflow's page renders the note as Markdown
    assert not {t for t, _ in dom.tags} & {"script", "a", "!--", "em", "del"}
    assert "[click](javascript:alert(2))" in "".join(dom.text)
    params = client.get_run(done.runs[2]).data.params
    assert sorted(v for v in params.values() if v[:1] in "12345") == ["1.0", "2.0", "3.0",
                                                                      "4.0", "5.0"]


def test_predict_with_a_file_name_that_is_not_utf8(checkpoint, tmp_path):
    """A file name of bytes that are no UTF-8 (as a copy from another system has): predicted,
    its name shown with the replacement character, no traceback."""
    odd = tmp_path / os.fsdecode(b"caf\xe9.xyz")
    odd.write_text(WATER)
    r = CliRunner().invoke(app, ["predict", str(checkpoint), str(odd), "--force",
                                 "--out", str(tmp_path / "out")])
    assert r.exit_code == 0 and "Traceback" not in r.output, r.output
    assert "caf\\udce9.xyz (H2O)" in r.output
    head = _cells(tmp_path / "out" / "spectra.csv")[0]
    assert head[1].startswith("caf\ufffd.xyz (H2O)")
    assert "caf\ufffd.xyz" in (tmp_path / "out" / "spectra.html").read_text()
