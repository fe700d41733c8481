"""What the reports write is safe and survives damaged artifacts (issue 9, items 9 and 10):
user text (file names, study names and descriptions) never becomes markup in the HTML, artifact
ids read from the database never lead outside the artifact folder, and a corrupt artifact of
the best trial is noted in the report instead of stopping it with a traceback."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import optuna
import pytest
from typer.testing import CliRunner

from hpo.cli import app
from hpo.report import ReportError, export_best, predict_xyz, write_report
from model.contract import ArtifactName, StudyAttr, TrialAttr
from tests.support import ReportPage

EVIL_XYZ = "<img src=x onerror=alert(1)>"
EVIL_TEXT = "</script><script>alert(3)</script><!--<script>alert(4)</script>"
WATER = """3
gdb 7\t0
O\t0.0\t0.0\t0.1173
H\t0.0\t0.7572\t-0.4692
H\t0.0\t-0.7572\t-0.4692
"""


def check_no_injection(page: str) -> ReportPage:
    """The page's DOM: only the report's own elements and scripts; every JSON block parses."""
    dom = ReportPage(page)
    names = {t for t, _ in dom.tags}
    assert not names & {"img", "iframe", "!--", "object", "embed", "svg"}, names
    assert not any(k.startswith("on") for _, a in dom.tags for k in a)
    for attrs, body in dom.scripts:
        assert attrs.get("type") in ("text/javascript", "application/json"), attrs
        assert "<!--" not in body and "</script" not in body.lower()
        if attrs["type"] == "application/json":
            json.loads(body)
        else:  # plotly.js and the page's drawing script, never user text
            assert "alert(" not in body
    return dom


def _json_blocks(dom: ReportPage) -> dict[str, object]:
    return {a.get("data-figure") or a.get("data-report"): json.loads(b)
            for a, b in dom.scripts if a.get("type") == "application/json"}


@pytest.fixture(scope="module")
def checkpoint(report_study, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("safe-export")
    paths = export_best(report_study.load(), out, report_study.artifacts)
    assert paths.checkpoint is not None
    return paths.checkpoint


def test_predict_html_escapes_file_names(checkpoint, tmp_path):
    evil_ckpt = tmp_path / "<script>alert(2)<!--.pt"
    shutil.copy(checkpoint, evil_ckpt)
    xyz = tmp_path / f"{EVIL_XYZ}.xyz"
    xyz.write_text(WATER)
    paths = predict_xyz(evil_ckpt, [xyz], tmp_path / "out", force=True)  # water: flagged
    page = paths.html.read_text()
    dom = check_no_injection(page)
    text = "".join(dom.text)
    assert "<script>alert(2)<!--.pt" in text  # shown as text, in the heading
    (fig,) = [v for k, v in _json_blocks(dom).items() if k == "spectra"]
    # plotly draws a subset of HTML in legend names: the name is escaped for it
    assert fig["data"][0]["name"] == ("&lt;img src=x onerror=alert(1)&gt;.xyz (H2O) "  # type: ignore[index]
                                      "[outside training domain]")
    assert paths.names == [f"{EVIL_XYZ}.xyz (H2O)"]  # the CSV column keeps the file's own name



def test_predict_csv_headers_never_run_as_spreadsheet_formulas(checkpoint, tmp_path):
    xyz = tmp_path / "=HYPERLINK(1).xyz"
    xyz.write_text(WATER)
    plain = tmp_path / "water.xyz"
    plain.write_text(WATER)
    paths = predict_xyz(checkpoint, [xyz, plain], tmp_path / "out", force=True)
    header = paths.csv.read_text().splitlines()[0].split(",")
    flag = " [outside training domain]"  # water is outside: predicted by force, flagged
    assert header == ["energy_eV", f"'=HYPERLINK(1).xyz (H2O){flag}", f"water.xyz (H2O){flag}"]
    molecules = paths.molecules_csv.read_text() if paths.molecules_csv else ""
    assert "'=HYPERLINK(1).xyz (H2O)" in molecules and "\n=" not in molecules

def _copy_study(report_study, root: Path, name: str) -> tuple[optuna.Study, str]:
    url = f"sqlite:///{root / 'copy.db'}"
    optuna.copy_study(from_study_name=report_study.name, from_storage=report_study.url,
                      to_storage=url, to_study_name=name)
    return optuna.load_study(study_name=name, storage=url), url


def test_report_html_escapes_study_name_and_description(report_study, tmp_path):
    study, _ = _copy_study(report_study, tmp_path, f"tiny {EVIL_XYZ}")
    study.set_user_attr(StudyAttr.DESCRIPTION, EVIL_TEXT)
    paths = write_report(study, tmp_path / "report", report_study.artifacts)
    dom = check_no_injection(paths.html.read_text())
    text = "".join(dom.text)
    assert EVIL_TEXT in text and f"Study tiny {EVIL_XYZ}" in text
    summary = _json_blocks(dom)["summary"]
    assert summary["description"] == EVIL_TEXT  # type: ignore[index]
    assert summary["study"] == f"tiny {EVIL_XYZ}"  # type: ignore[index]
    assert len(dom.scripts) == 3 + sum(1 for a, _ in dom.scripts if a.get("data-figure"))


def _fake_predictions(path: Path) -> None:
    n, np_ = 4, 300
    rng = np.random.default_rng(0)
    np.savez(path, pred=rng.random((n, np_)), target=rng.random((n, np_)),
             index=np.arange(n), grid=np.linspace(-30, 0, np_))


def test_artifact_ids_from_the_database_stay_inside_the_store(tmp_path):
    store_dir = tmp_path / "store"
    store_dir.mkdir()
    _fake_predictions(tmp_path / "outside.npz")  # a file next to the store, reachable by ../
    study = optuna.create_study(study_name="s", storage=f"sqlite:///{tmp_path / 's.db'}")
    trial = study.ask()
    trial.set_user_attr(TrialAttr.ARTIFACTS, {ArtifactName.PREDICTIONS: "../outside.npz"})
    study.tell(trial, 0.5)
    from hpo.report.data import load_predictions

    store = optuna.artifacts.FileSystemArtifactStore(str(store_dir))
    with pytest.raises(ReportError, match=r"trial #0: the artifact id '\.\./outside\.npz' of its "
                                          r"predictions\.npz is not a plain file name"):
        load_predictions(store, study, study.trials[0])
    paths = write_report(study, tmp_path / "report", store)
    assert any("not a plain file name" in p for p in paths.problems)
    dom = check_no_injection(paths.html.read_text())
    assert "not a plain file name" in "".join(dom.text)


def test_study_names_that_are_paths_are_refused(report_study, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    for cmd in (["report", "../../x"], ["export-best", "../../x", "--out", "o"],
                ["dashboard", "../../x", "--port", "0"]):
        r = runner.invoke(app, cmd)
        assert r.exit_code == 2 and r.output.startswith("error:"), r.output
        assert "Traceback" not in r.output and len(r.output.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing written anywhere


# --- corrupt artifacts of the best trial --------------------------------------------------------

def _cli(*args: str) -> subprocess.CompletedProcess:
    """The ``specopt`` command in its own process (its stderr as a user sees it)."""
    return subprocess.run([sys.executable, "-m", "hpo.cli", *args], capture_output=True,
                          text=True, timeout=300)


def _damaged_store(report_study, tmp_path: Path, damage: dict[str, str]) -> tuple[Path, int]:
    """A copy of the study's artifact folder with the best trial's artifacts damaged:
    ``truncate`` (half the file) or ``garbage``."""
    study = report_study.load()
    best = study.best_trial
    ids = {m.filename: m.artifact_id for m in optuna.artifacts.get_all_artifact_meta(
        best, storage=study._storage)}
    copy = tmp_path / "artifacts"
    shutil.copytree(report_study.artifacts, copy)
    for name, how in damage.items():
        f = copy / ids[name]
        data = f.read_bytes()
        f.write_bytes(data[: len(data) // 2] if how == "truncate" else b"\x00garbage" * 9)
    return copy, best.number


@pytest.mark.parametrize("how", ["truncate", "garbage"])
@pytest.mark.slow
def test_report_with_corrupt_predictions_is_still_written(report_study, tmp_path, how):
    store, number = _damaged_store(report_study, tmp_path, {ArtifactName.PREDICTIONS: how})
    paths = write_report(report_study.load(), tmp_path / "report", store)
    (problem,) = paths.problems
    assert problem.startswith(f"the {ArtifactName.PREDICTIONS} of trial #{number} cannot be read")
    assert "\n" not in problem
    dom = check_no_injection(paths.html.read_text())
    text = "".join(dom.text)
    assert "Could not be read" in text and problem in text
    assert "spectra" not in _json_blocks(dom)  # the figure became a note naming the file
    assert "Could not be read" in paths.markdown.read_text()
    # the command line: the report is written, the problem is one line, no traceback
    r = _cli("report", "tiny", "--storage", report_study.url, "--artifacts", str(store),
             "--out", str(tmp_path / "cli"))
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    assert f"report: {problem}\n" in r.stderr and (tmp_path / "cli" / "report.html").is_file()


@pytest.mark.slow
def test_export_best_with_corrupt_checkpoint_and_history(report_study, tmp_path):
    store, number = _damaged_store(report_study, tmp_path, {ArtifactName.CHECKPOINT: "truncate",
                                                            ArtifactName.HISTORY: "garbage"})
    paths = export_best(report_study.load(), tmp_path / "out", store)
    assert paths.checkpoint is None and paths.history is None
    assert paths.predictions is not None and paths.predictions_csv is not None
    assert len(paths.problems) == 2 and all("\n" not in p for p in paths.problems)
    assert any(p.startswith(f"the {ArtifactName.CHECKPOINT} of trial #{number} cannot be read")
               for p in paths.problems)
    assert any(p.startswith(f"the {ArtifactName.HISTORY} of trial #{number} cannot be read")
               for p in paths.problems)
    assert not (tmp_path / "out" / ArtifactName.CHECKPOINT).exists()
    assert paths.report is not None and paths.report.html.is_file()
    r = _cli("export-best", "tiny", "--storage", report_study.url, "--artifacts", str(store),
             "--out", str(tmp_path / "cli"))
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    lines = [x for x in r.stderr.splitlines() if "cannot be read" in x]
    assert len(lines) == 2 and all("export-best: the " in x for x in lines), lines
    assert "PytorchStreamReader failed" in r.stderr and "not JSON" in r.stderr


def test_paths_from_study_names_stay_inside_their_folder(tmp_path, monkeypatch):
    from hpo.report import default_out_dir, inside

    monkeypatch.chdir(tmp_path)
    from hpo.storage.home import home

    assert default_out_dir("demo", "report") == home() / "demo" / "report"
    assert inside(tmp_path, "tiny <b>.x") == tmp_path / "tiny <b>.x"
    for name in ("../../x", "a/b", "..", ".", "", "/etc/x", "a\\..\\b", "x\0y"):
        with pytest.raises(ReportError, match="not a plain file name.*refused"):
            inside(tmp_path, name)
    with pytest.raises(ReportError, match=r"'\.\./\.\./evil' is not a plain file name"):
        default_out_dir("../../evil", "report")


@pytest.mark.slow
def test_predict_refuses_non_finite_matrices_and_damaged_checkpoints(checkpoint, tmp_path):
    import torch

    from model.checkpoint import load_checkpoint
    from model.errors import DataError
    from model.inference import predict
    from model.inference import predict_xyz as predict_spectra

    net, _ = load_checkpoint(checkpoint)
    matrices = np.zeros((3, 29, 29), np.float32)
    matrices[:, 0, 0] = 36.858
    matrices[1, 0, 0] = np.nan
    with pytest.raises(DataError, match=r"1 Coulomb matrices hold NaN or inf \(rows \[1\]\)"):
        predict(net, matrices)
    payload = torch.load(checkpoint, weights_only=True)
    payload["state_dict"].pop(next(iter(payload["state_dict"])))  # a weight went missing
    damaged = tmp_path / "damaged.pt"
    torch.save(payload, damaged)
    xyz = tmp_path / "water.xyz"
    xyz.write_text(WATER)
    with pytest.raises(DataError, match=r"damaged.pt: not a readable checkpoint \(") as err:
        predict_spectra(damaged, [xyz])
    assert "\n" not in str(err.value)
    nan_xyz = tmp_path / "nan.xyz"
    nan_xyz.write_text(WATER.replace("0.7572", "nan", 1))
    r = _cli("predict", str(checkpoint), str(nan_xyz), "--out", str(tmp_path / "p"))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "nan.xyz: atom 2 (H)" in r.stderr + r.stdout and "non-finite" in r.stderr + r.stdout


def test_report_when_an_artifact_cannot_be_read_at_all(report_study, tmp_path):
    """A folder where the best trial's predictions file should be (an I/O error on reading):
    the report is written and says which file could not be read."""
    store, number = _damaged_store(report_study, tmp_path, {})
    study = report_study.load()
    ids = {m.filename: m.artifact_id for m in optuna.artifacts.get_all_artifact_meta(
        study.best_trial, storage=study._storage)}
    f = store / ids[ArtifactName.PREDICTIONS]
    f.unlink()
    f.mkdir()
    paths = write_report(study, tmp_path / "report", store)
    (problem,) = paths.problems
    assert problem.startswith(f"the {ArtifactName.PREDICTIONS} of trial #{number} cannot be "
                              "read (")
    assert "Is a directory" in problem
