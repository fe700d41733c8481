"""Databases that are no study storage (issue 24): a real MLflow tracking store, a SQLite file
with another program's table, an empty SQLite file, a file that is no database. ``specopt
studies`` leaves them out of its list; ``status`` and ``studies --storage`` on one print one
``error:`` line saying what it is, and change nothing in it."""

from __future__ import annotations

import sqlite3

import pytest
from typer.testing import CliRunner

from hpo.cli import app


def _cli(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def _tables(path) -> set[str]:
    with sqlite3.connect(path) as con:
        return {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}


def _foreign(home) -> dict[str, str]:
    home.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(home / "other.db") as con:
        con.execute("CREATE TABLE notes (x TEXT)")
    sqlite3.connect(home / "empty.db").close()
    (home / "empty.db").touch()
    (home / "junk.db").write_bytes(b"not a database " * 100)
    return {"other": "another program's tables (notes)", "empty": "an empty SQLite database",
            "junk": "not a SQLite database"}


def _check_refused(home, expected: dict[str, str]) -> None:
    before = {n: (home / f"{n}.db").read_bytes() for n in expected}
    for name, what in expected.items():
        for args in (("status", name), ("studies", "--storage", f"sqlite:///{home}/{name}.db")):
            r = _cli(*args)
            assert r.exit_code == 2, r.output
            assert r.output.startswith("error: ") and r.output.count("\n") == 1, r.output
            assert what in r.output and "Traceback" not in r.output
    # read-only: no Optuna table written into any of them, no byte changed
    assert {n: (home / f"{n}.db").read_bytes() for n in expected} == before
    r = _cli("studies")
    assert r.exit_code == 0, r.output
    assert not any(f"{n}.db" in r.output for n in expected), r.output


def test_foreign_sqlite_files_are_no_studies(tmp_path, monkeypatch):
    home = tmp_path / "runs"
    monkeypatch.setenv("SPECOPT_HOME", str(home))
    _check_refused(home, _foreign(home))
    assert _tables(home / "empty.db") == set()


@pytest.mark.slow  # MLflow creates its schema (a few seconds)
def test_an_mlflow_store_is_no_study(tmp_path, monkeypatch):
    mlflow = pytest.importorskip("mlflow")
    home = tmp_path / "runs"
    monkeypatch.setenv("SPECOPT_HOME", str(home))
    home.mkdir()
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{home / 'mlflow.db'}")
    client.create_experiment("x")
    _check_refused(home, {"mlflow": "an MLflow tracking store"})
