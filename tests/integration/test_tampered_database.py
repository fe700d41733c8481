"""A tampered study database (issue 20, items 1 and 2): paths and names read from any storage
never lead outside the folder the user's own configuration (or ``$SPECOPT_HOME``) names.

The databases are real SQLite files written by Optuna with real artifact files, then edited
with ``sqlite3`` as an attacker (or a damaged copy) would: artifact ids with ``../`` or an
absolute path, a recorded artifact folder elsewhere, symlinks inside the artifact folder
pointing out, and study names no file may have (300 characters, a newline, terminal escapes,
bidi overrides, ``-rf``, ``.``, ``..``, empty).  Each is refused with one ``error:`` line (or,
for a listing, shown escaped) and nothing outside is deleted, read or written."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import optuna
import pytest
from optuna.artifacts import FileSystemArtifactStore, upload_artifact
from typer.testing import CliRunner

from hpo.cli import app
from model.contract import ArtifactName, StudyAttr

pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")

#: Names no study folder may have; all of them Optuna stores without complaint.
BAD_NAMES = ("x" * 300, "evil\nstudy 'fake' (sqlite): finished", "esc\x1b[31mred\x1b[0m",
             "rtl\u202egnp.exe", "-rf", ".", "..", "", " padded ", ".hidden", "a/b")


def _cli(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def _one_error_line(r, *words: str) -> None:
    assert r.exit_code == 2, (r.exit_code, r.output, r.exception)
    assert r.output.startswith("error: ") and r.output.count("\n") == 1, r.output
    assert "Traceback" not in r.output
    for w in words:
        assert w in r.output, (w, r.output)


def _files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


class Made:
    """A study ``t`` with one trial and two real artifact files in its home folder, and a
    victim folder beside the home with files a tampered database must never reach."""

    def __init__(self, root: Path, name: str = "t"):
        from hpo.storage.home import home, study_artifacts

        self.home = home()
        self.url = f"sqlite:///{root / 'study.db'}"
        self.name = name
        self.folder = study_artifacts("t", self.url)  # the home's layout, made from "t"
        self.folder.mkdir(parents=True)
        study = optuna.create_study(study_name=name, storage=self.url)
        study.set_user_attr(StudyAttr.ARTIFACT_STORE, str(self.folder))
        store = FileSystemArtifactStore(self.folder)
        trial = study.ask()
        for fname, body in ((ArtifactName.HISTORY, "[]"), ("notes.txt", "n")):
            src = root / fname
            src.write_text(body)
            upload_artifact(artifact_store=store, file_path=str(src), study_or_trial=trial)
        study.tell(trial, 0.5)
        self.victim = root / "victim"
        (self.victim / "sub").mkdir(parents=True)
        (self.victim / "precious").write_text("keep me")
        (self.victim / "sub" / "0").mkdir()  # looks like a training state folder
        (self.victim / "sub" / "0" / "state.pt").write_text("keep me too")

    def sql(self, query: str, *args) -> None:
        with sqlite3.connect(self.url.removeprefix("sqlite:///")) as db:
            db.execute(query, args)

    def set_artifact_ids(self, *ids: str) -> None:
        """Every artifact record of the trial points at one of ``ids`` (in order)."""
        with sqlite3.connect(self.url.removeprefix("sqlite:///")) as db:
            rows = db.execute("SELECT trial_system_attribute_id, value_json FROM "
                              "trial_system_attributes WHERE key LIKE 'artifacts:%' "
                              "ORDER BY trial_system_attribute_id").fetchall()
            for (row, value), new in zip(rows, ids, strict=True):
                meta = json.loads(json.loads(value)) | {"artifact_id": new}
                db.execute("UPDATE trial_system_attributes SET value_json = ? WHERE "
                           "trial_system_attribute_id = ?", (json.dumps(json.dumps(meta)), row))

    def record(self, folder: str) -> None:
        self.sql("UPDATE study_user_attributes SET value_json = ? WHERE key = ?",
                 json.dumps(folder), StudyAttr.ARTIFACT_STORE)

    def names(self) -> list[str]:
        return optuna.get_all_study_names(self.url)


@pytest.fixture
def made(tmp_path, monkeypatch) -> Made:
    monkeypatch.setenv("SPECOPT_HOME", str(tmp_path / "home"))
    return Made(tmp_path)


# --- item 1: paths read from the database ------------------------------------------------------

def test_delete_refuses_a_recorded_artifact_folder_outside_the_home(made):
    (made.victim / "x").write_text("x")
    made.record(str(made.victim))
    made.set_artifact_ids("precious", "x")  # files that are there, in the recorded folder
    before = _files(made.victim)
    r = _cli("delete", "t", "--storage", made.url, "--yes")
    _one_error_line(r, str(made.victim), "--artifacts")
    assert _files(made.victim) == before and made.names() == ["t"]  # nothing deleted
    # the user naming that folder is their own decision
    r = _cli("delete", "t", "--storage", made.url, "--artifacts", made.victim, "--yes")
    assert r.exit_code == 0, r.output
    assert made.names() == [] and _files(made.victim) == ["sub", "sub/0", "sub/0/state.pt"]


@pytest.mark.parametrize("how", ["dotdot", "absolute"])
def test_delete_refuses_artifact_ids_leading_outside_the_folder(made, how):
    """A shared artifact folder (given with --artifacts) loses only this study's files: an id
    that leads out of it (``../``, an absolute path) refuses the whole delete."""
    shared = made.victim.parent / "shared"
    shutil.copytree(made.folder, shared)
    (shared / "someone-else").write_text("other study")
    outside = ("../victim/precious" if how == "dotdot"
               else str(made.victim / "precious"))
    made.set_artifact_ids(outside, next(p.name for p in shared.iterdir()
                                         if p.name != "someone-else"))
    before, kept = _files(made.victim), _files(shared)
    r = _cli("delete", "t", "--storage", made.url, "--artifacts", shared, "--yes")
    _one_error_line(r, "precious", "outside", str(shared))
    assert _files(made.victim) == before and _files(shared) == kept
    assert made.names() == ["t"]


def test_delete_refuses_a_state_folder_that_is_a_symlink_out(made):
    """``state/<trial>`` in a shared folder, a symlink to a folder elsewhere: not followed."""
    shared = made.victim.parent / "shared"
    shutil.copytree(made.folder, shared)
    (shared / "state").mkdir()
    (shared / "state" / "0").symlink_to(made.victim / "sub" / "0")
    before = _files(made.victim)
    r = _cli("delete", "t", "--storage", made.url, "--artifacts", shared, "--yes")
    _one_error_line(r, "state/0", "outside")
    assert _files(made.victim) == before and made.names() == ["t"]


def test_delete_with_a_symlink_loop_in_the_folder_is_one_line(made):
    shared = made.victim.parent / "shared"
    shutil.copytree(made.folder, shared)
    loop = next(p for p in shared.iterdir())
    loop.unlink()
    loop.symlink_to(loop)  # ELOOP on every access
    r = _cli("delete", "t", "--storage", made.url, "--artifacts", shared, "--yes")
    _one_error_line(r, loop.name)
    assert made.names() == ["t"]


def test_delete_with_names_too_long_for_a_file_in_the_database(made):
    """A recorded folder and an artifact id with a 300-character component: looked at, they
    are no folder and no file (not ``File name too long``)."""
    from hpo.storage.artifacts import open_artifact_store

    made.record(str(made.home / ("x" * 300)))
    assert open_artifact_store(optuna.load_study(study_name="t", storage=made.url)) is None
    shared = made.victim.parent / "shared"
    shutil.copytree(made.folder, shared)
    made.set_artifact_ids("y" * 300, "z" * 300)
    r = _cli("delete", "t", "--storage", made.url, "--artifacts", shared, "--yes")
    assert r.exit_code == 0, (r.output, r.exception)
    assert made.names() == [] and len(_files(shared)) == 2  # not this study's files


@pytest.mark.slow
def test_report_and_export_refuse_a_recorded_folder_outside_the_home(report_study, tmp_path,
                                                                      monkeypatch):
    """The study's real artifacts lie outside ``$SPECOPT_HOME``: a database naming them is not
    enough to read them (``--artifacts`` is)."""
    monkeypatch.setenv("SPECOPT_HOME", str(tmp_path / "home"))
    url = f"sqlite:///{tmp_path / 'copy.db'}"
    optuna.copy_study(from_study_name="tiny", from_storage=report_study.url, to_storage=url)
    out = tmp_path / "out"
    for cmd in ("report", "export-best"):
        r = _cli(cmd, "tiny", "--storage", url, "--out", out)
        _one_error_line(r, str(report_study.artifacts), "--artifacts")
        assert not out.exists()
    r = _cli("export-best", "tiny", "--storage", url, "--out", out,
             "--artifacts", report_study.artifacts)
    assert r.exit_code == 0, r.output
    assert (out / ArtifactName.CHECKPOINT).is_file()


@pytest.mark.slow
def test_report_and_export_never_follow_a_symlink_out_of_the_artifact_folder(report_study,
                                                                              tmp_path):
    """The best trial's predictions replaced by a symlink to a (valid) file elsewhere: it is
    neither read into the report nor copied by export-best; the rest is written."""
    from hpo.report import export_best, write_report

    study = report_study.load()
    ids = {m.filename: m.artifact_id for m in optuna.artifacts.get_all_artifact_meta(
        study.best_trial, storage=study._storage)}
    store = tmp_path / "artifacts"
    shutil.copytree(report_study.artifacts, store)
    secret = tmp_path / "secret.npz"
    shutil.move(store / ids[ArtifactName.PREDICTIONS], secret)
    (store / ids[ArtifactName.PREDICTIONS]).symlink_to(secret)
    paths = export_best(study, tmp_path / "export", store)
    assert paths.predictions is None and paths.predictions_csv is None
    assert not (tmp_path / "export" / ArtifactName.PREDICTIONS).exists()
    assert any("outside" in p and ArtifactName.PREDICTIONS in p for p in paths.problems)
    assert paths.checkpoint is not None  # the rest is exported
    report = write_report(study, tmp_path / "report", store)
    assert any("outside" in p for p in report.problems)
    assert secret.read_bytes()[:2] == b"PK"  # untouched


# --- item 2: study names read from the database -------------------------------------------------

@pytest.fixture
def bad_names(tmp_path, monkeypatch) -> str:
    monkeypatch.setenv("SPECOPT_HOME", str(tmp_path / "home"))
    url = f"sqlite:///{tmp_path / 'names.db'}"
    for name in (*BAD_NAMES, "fine"):
        study = optuna.create_study(study_name=name, storage=url)
        study.tell(study.ask(), 1.0)
    return url


@pytest.mark.slow
def test_studies_lists_unsafe_stored_names_escaped(bad_names):
    r = _cli("studies", "--storage", bad_names)
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    assert len(lines) == 2 + len(BAD_NAMES) + 1  # one line per study: no forged lines
    assert "\x1b" not in r.output and "\u202e" not in r.output
    shown = [line.split("  ")[0] for line in lines[2:]]
    assert "fine" in shown and "'-rf'" in shown and "'..'" in shown and "''" in shown
    assert r"'esc\x1b[31mred\x1b[0m'" in shown
    assert not any(line.startswith("study 'fake'") for line in lines)


@pytest.mark.parametrize("name", BAD_NAMES)
@pytest.mark.slow
def test_no_folder_is_made_from_an_unsafe_stored_name(bad_names, tmp_path, monkeypatch, name):
    monkeypatch.chdir(tmp_path)
    home = tmp_path / "home"
    for cmd in ("report", "export-best"):
        r = _cli(cmd, "--storage", bad_names, "--", name)
        _one_error_line(r, "--out")
        assert not home.exists()
    r = _cli("status", "--storage", bad_names, "--", name)
    assert r.exit_code == 0 and len(r.output.splitlines()) >= 2, r.output
    assert r.output.startswith(f"study {name!r} (")
    assert "\x1b" not in r.output and "\u202e" not in r.output
    r = _cli("delete", "--storage", bad_names, "--yes", "--", name)
    assert r.exit_code == 0, r.output
    assert repr(name) in r.output and "\x1b" not in r.output
    assert name not in optuna.get_all_study_names(bad_names)
    assert not home.exists()
    assert all(p.name.startswith("names.db") for p in tmp_path.iterdir())  # and its -wal


@pytest.mark.parametrize("cmd", ["report", "status", "delete", "export-best", "worker",
                                 "dashboard"])
def test_a_name_too_long_for_a_file_is_one_line(tmp_path, monkeypatch, cmd):
    monkeypatch.setenv("SPECOPT_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    r = _cli(cmd, "x" * 300)
    _one_error_line(r)
    assert not any(tmp_path.iterdir())


def test_one_name_rule_for_study_files_and_stored_names(tmp_path):
    from hpo.storage.home import name_problem
    from hpo.study.config import ConfigError, load_study_config
    from tests.support import write_study

    for name in BAD_NAMES:
        assert name_problem(name), name
        f = write_study(tmp_path / "s.toml", name, space={"epochs": 1}, storage="sqlite://")
        with pytest.raises(ConfigError, match="name"):
            load_study_config(f)
    for name in ("demo", "tiny <b>.x", "a.b-c_1", "é" * 50):
        assert name_problem(name) is None, name
    assert name_problem("é" * 51)  # bytes, not characters: it must fit a file name
    dash = tmp_path / "-rf.toml"  # the name taken from the file's own name
    dash.write_text('[space]\nepochs = 1\n')
    with pytest.raises(ConfigError, match="'-rf'"):
        load_study_config(dash)
