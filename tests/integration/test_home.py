"""One home for every output (``$SPECOPT_HOME``): the default database, artifacts and report of
a real tiny study go under it; two storages of one study name never share an artifact folder;
a study keeps the artifact folder it recorded when the home moves; ``$SPECOPT_RUNS`` still
works."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
from typer.testing import CliRunner

from hpo.cli import app
from model.contract import StudyAttr
from tests.support import study_trials, write_study

pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")

SPACE = {"lr": [1e-3, 3e-3], "epochs": 1, "subset": 200, "n_points": 300}


def _cli(*args):
    r = CliRunner().invoke(app, [str(a) for a in args])
    assert r.exit_code == 0, r.output
    return r


def _study_file(path: Path, name: str, n_trials: int = 1) -> Path:
    """A study file naming no storage and no artifact folder: the home decides both."""
    lines = [f'name = "{name}"', "[sampler]", 'name = "random"', "seed = 0", "[budget]",
             f"n_trials = {n_trials}", "[train]", 'device = "cpu"', "[space]",
             *(f"{k} = {json.dumps(v)}" for k, v in SPACE.items())]
    path.write_text("\n".join(lines) + "\n")
    return path


def _recorded(name: str, url: str) -> Path:
    from hpo.storage.database import open_storage

    study = optuna.load_study(study_name=name, storage=open_storage(url, heartbeat_interval=None))
    return Path(study.user_attrs[StudyAttr.ARTIFACT_STORE])


def _artifact_ids(name: str, url: str) -> set[str]:
    return {json.loads(v)["artifact_id"] for t in study_trials(name, url)
            for k, v in t.system_attrs.items() if k.startswith("artifacts:")}


@pytest.mark.slow
def test_specopt_home_moves_everything(tmp_path, monkeypatch):
    home = tmp_path / "elsewhere"
    monkeypatch.setenv("SPECOPT_HOME", str(home))
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    study = _study_file(tmp_path / "h.toml", "h")
    _cli("worker", study, "--threads", "1")
    url = f"sqlite:///{home / 'h.db'}"
    assert (home / "h.db").is_file() and len(study_trials("h", url)) == 1
    (folder,) = (home / "h" / "artifacts").iterdir()
    assert folder.name.startswith("sqlite-h-") and _recorded("h", url) == folder
    assert _artifact_ids("h", url) <= {p.name for p in folder.iterdir()}
    r = _cli("report", study)
    assert (home / "h" / "report" / "report.html").is_file()
    assert f"report: {home / 'h' / 'report' / 'report.html'}" in r.stdout
    r = _cli("export-best", study)
    export = home / "h" / "export"
    assert f"checkpoint: {export}" in r.stdout and any(export.glob("*.pt"))
    assert not any(work.iterdir())  # nothing in the working directory
    r = _cli("studies")  # the shipped list also says where the studies run here are
    assert f"stored under {home} (SPECOPT_HOME): h.db" in r.stdout


@pytest.mark.slow
def test_two_storages_of_one_study_never_share_artifacts(tmp_path, monkeypatch):
    home = tmp_path / "home"
    monkeypatch.setenv("SPECOPT_HOME", str(home))
    study = _study_file(tmp_path / "same.toml", "same")
    urls = [f"sqlite:///{tmp_path / 'a' / 'same.db'}", f"journal:///{tmp_path / 'b.log'}"]
    for url in urls:
        _cli("worker", study, "--storage", url, "--threads", "1")
    folders = [_recorded("same", url) for url in urls]
    assert folders[0] != folders[1]
    assert folders[0].parent == folders[1].parent == home / "same" / "artifacts"
    assert folders[0].name.startswith("sqlite-same-")
    assert folders[1].name.startswith("journal-b-")
    for url, folder in zip(urls, folders, strict=True):
        ids = _artifact_ids("same", url)
        assert ids and {p.name for p in folder.iterdir() if p.is_file()} == ids


@pytest.mark.slow
def test_a_recorded_artifact_folder_outside_a_moved_home_needs_artifacts(tmp_path, monkeypatch):
    """The database alone never names a folder outside the home (issue 20): after the home
    moved, the recorded folder is refused with one line saying how to name it, and used when
    the user names it (``--artifacts``)."""
    first, second = tmp_path / "first", tmp_path / "second"
    url = f"sqlite:///{tmp_path / 'k.db'}"
    monkeypatch.setenv("SPECOPT_HOME", str(first))
    study = write_study(tmp_path / "k.toml", "k", space=SPACE, storage=url, sampler="random",
                        n_trials=1)
    _cli("worker", study, "--threads", "1")
    folder = _recorded("k", url)
    assert folder.parent == first / "k" / "artifacts"
    monkeypatch.setenv("SPECOPT_HOME", str(second))
    for cmd in (("worker", study, "--add-trials", "1"), ("report", study)):
        r = CliRunner().invoke(app, [str(a) for a in cmd])
        (line,) = [x for x in r.output.splitlines() if x.startswith("error: ")]
        assert r.exit_code == 2 and "Traceback" not in r.output, r.output
        assert f"--artifacts {folder}" in line
    assert len(study_trials("k", url)) == 1 and not second.exists()
    _cli("worker", study, "--threads", "1", "--add-trials", "1", "--artifacts", folder)
    assert len(study_trials("k", url)) == 2
    assert _artifact_ids("k", url) <= {p.name for p in folder.iterdir()}
    assert not (second / "k" / "artifacts").exists()
    _cli("delete", study, "--yes", "--artifacts", folder)
    assert not folder.exists()


def test_specopt_runs_is_a_deprecated_alias(tmp_path, monkeypatch):
    import hpo.storage.home
    from hpo.storage.home import default_storage_url

    monkeypatch.delenv("SPECOPT_HOME", raising=False)
    monkeypatch.setenv("SPECOPT_RUNS", str(tmp_path / "old"))
    monkeypatch.setattr(hpo.storage.home, "_warned", False)
    with pytest.warns(FutureWarning, match=r"\$SPECOPT_RUNS is deprecated: set \$SPECOPT_HOME"):
        assert hpo.storage.home.home() == tmp_path / "old"
    assert default_storage_url("x") == f"sqlite:///{tmp_path / 'old' / 'x.db'}"
    monkeypatch.setenv("SPECOPT_HOME", str(tmp_path / "new"))  # the new name wins
    assert hpo.storage.home.home() == tmp_path / "new"
    monkeypatch.delenv("SPECOPT_HOME")
    monkeypatch.delenv("SPECOPT_RUNS")
    monkeypatch.chdir(tmp_path)
    assert hpo.storage.home.home() == tmp_path / "runs"


def test_storage_keys_are_readable_and_ignore_credentials(tmp_path):
    from hpo.storage.home import storage_key

    a = storage_key("postgresql://bob:secret@db.example:5432/specopt")
    assert a.startswith("postgresql-specopt-db.example-5432-") and "secret" not in a
    assert storage_key("postgresql+psycopg://alice:other@db.example:5432/specopt") == a
    assert storage_key("postgresql://bob@db.example:5432/other") != a
    assert storage_key(f"sqlite:///{tmp_path}/x.db") != storage_key(f"sqlite:///{tmp_path}/y/x.db")
