"""Issue 20, item 4: a damaged storage is one line naming the file and the fix, in every command
that opens it, never a traceback.  The storages are real studies (a worker with a fast objective)
damaged for real: SQLite pages overwritten with random bytes in the middle of a table, a journal
with a garbage, binary or unknown record in the middle, a file that is not a database, a
truncated one, another program's database, a journal that is a folder."""

from __future__ import annotations

import os
import shutil
import sqlite3
from pathlib import Path

import pytest
from typer.testing import CliRunner

from hpo.cli import app
from tests.support import small_study_config, write_study

pytestmark = [pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning"),
              pytest.mark.filterwarnings("ignore:Heartbeat of storage:UserWarning")]

NAME = "tiny"


def _fast(trial, config, should_stop=None):
    trial.set_user_attr("pad", "x" * 3000)  # many pages in one table: damage lands in its middle
    return 0.5


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> dict[str, Path]:
    """A finished study (40 trials) in a SQLite file and in a journal."""
    from hpo.execution.run import run_worker

    root = tmp_path_factory.mktemp("pristine")
    cfg = small_study_config(root, NAME, {"lr": [1e-3, 1e-2, 3e-3, 3e-4]}, 40)
    out = {}
    for kind, url in (("sqlite", f"sqlite:///{root / 'studies.db'}"),
                      ("journal", f"journal:///{root / 'studies.log'}")):
        run_worker(cfg.override({"storage": url}), handle_signals=False, objective_fn=_fast)
        out[kind] = root / ("studies.db" if kind == "sqlite" else "studies.log")
    with sqlite3.connect(out["sqlite"]) as con:  # everything into the main file
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return out


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("SPECOPT_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("SPECOPT_OUTAGE_WAIT", "5")
    return tmp_path / "home"


def _study_file(tmp_path: Path) -> Path:
    return write_study(tmp_path / "tiny.toml", NAME, storage="sqlite:///unused.db",
                       space={"lr": [1e-3, 1e-2], "epochs": 1, "subset": 200}, n_trials=2)


def _args(command: str, url: str, tmp_path: Path) -> list[str]:
    return {"studies": ["studies", "--storage", url],
            "status": ["status", NAME, "--storage", url],
            "report": ["report", NAME, "--storage", url],
            "export-best": ["export-best", NAME, "--storage", url],
            "delete": ["delete", NAME, "--storage", url, "--yes"],
            "worker": ["worker", str(_study_file(tmp_path)), "--storage", url, "--threads", "1"],
            }[command]


def _one_line_error(command: str, url: str, tmp_path: Path, *words: str) -> str:
    r = CliRunner().invoke(app, _args(command, url, tmp_path))
    text = r.output
    assert r.exit_code == 2, (command, r.exit_code, text, r.exception)
    assert "Traceback" not in text, text
    lines = [ln for ln in text.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, text
    for w in words:
        assert w in lines[0], (w, lines[0])
    return lines[0]


def _damage_sqlite_pages(db: Path) -> None:
    """Random bytes over pages in the middle of the biggest table (the schema left alone)."""
    with sqlite3.connect(db) as con:
        rows = con.execute("SELECT pageno FROM dbstat WHERE name = 'trial_user_attributes' "
                           "ORDER BY pageno").fetchall()
        size = con.execute("PRAGMA page_size").fetchone()[0]
    pages = [r[0] for r in rows]
    middle = pages[len(pages) // 3: 2 * len(pages) // 3]
    with open(db, "r+b") as f:
        for p in middle:
            f.seek((p - 1) * size)
            f.write(os.urandom(size))


COMMANDS = ["studies", "status", "report", "export-best", "delete", "worker"]


@pytest.mark.parametrize("command", COMMANDS)
def test_damaged_sqlite_pages_are_one_line_naming_the_file_and_the_fix(
        command, pristine, home, tmp_path):
    db = tmp_path / "damaged.db"
    shutil.copy(pristine["sqlite"], db)
    _damage_sqlite_pages(db)
    _one_line_error(command, f"sqlite:///{db}", tmp_path, str(db), ".recover", "backup")


@pytest.mark.parametrize("content, words", [
    (b"this is a text file, not a database\n", ("not a SQLite database", "backup")),
    (None, ("malformed", ".recover")),  # the study's file cut short
])
@pytest.mark.parametrize("command", ["studies", "status", "worker"])
def test_a_file_that_is_no_sqlite_database_or_cut_short(command, content, words, pristine,
                                                        home, tmp_path):
    db = tmp_path / "bad.db"
    if content is None:
        db.write_bytes(pristine["sqlite"].read_bytes()[:100_000])
    else:
        db.write_bytes(content)
    _one_line_error(command, f"sqlite:///{db}", tmp_path, str(db), *words)


@pytest.mark.parametrize("tables", [
    ["CREATE TABLE things (id INTEGER)"],
    # MLflow's and Alembic's own: Optuna read its version table and raised a RuntimeError
    ["CREATE TABLE experiments (id INTEGER, name TEXT)",
     "CREATE TABLE alembic_version (version_num VARCHAR(32))",
     "INSERT INTO alembic_version VALUES ('451aebb31d03')"],
])
@pytest.mark.parametrize("command", ["studies", "status", "worker"])
def test_another_programs_database_is_refused_and_left_alone(command, tables, home, tmp_path):
    db = tmp_path / "other.db"
    with sqlite3.connect(db) as con:
        for sql in tables:
            con.execute(sql)
    before = db.read_bytes()
    _one_line_error(command, f"sqlite:///{db}", tmp_path, str(db), "not a specopt")
    assert db.read_bytes() == before  # no Optuna tables written into it


def _journal_with(pristine: Path, tmp_path: Path, record: bytes) -> tuple[Path, int]:
    """The journal with its middle record replaced; the 1-based number of that line."""
    lines = pristine.read_bytes().split(b"\n")
    k = len(lines) // 2
    lines[k] = record
    path = tmp_path / "damaged.log"
    path.write_bytes(b"\n".join(lines))
    return path, k + 1


RECORDS = {
    "garbage": b"garbage {",
    "binary": b"\xff\xfe\x00\x01\x02binary",
    "unknown": b'{"op_code": 99, "worker_id": "somebody"}',
    "not-an-object": b"[1, 2]",
    "missing-field": b'{"op_code": 5, "worker_id": "somebody"}',
}


@pytest.mark.parametrize("record", list(RECORDS))
@pytest.mark.parametrize("command", ["studies", "status", "worker"])
def test_a_bad_journal_record_names_its_line_and_how_to_keep_the_prefix(
        command, record, pristine, home, tmp_path):
    path, line = _journal_with(pristine["journal"], tmp_path, RECORDS[record])
    _one_line_error(command, f"journal:///{path}", tmp_path, str(path), f"line {line}",
                    f"head -n {line - 1}")


@pytest.mark.parametrize("command", ["report", "export-best", "delete"])
def test_a_bad_journal_record_in_the_other_commands(command, pristine, home, tmp_path):
    path, line = _journal_with(pristine["journal"], tmp_path, RECORDS["garbage"])
    _one_line_error(command, f"journal:///{path}", tmp_path, str(path), f"line {line}")


def test_the_journal_advice_recovers_the_readable_prefix(pristine, home, tmp_path):
    path, line = _journal_with(pristine["journal"], tmp_path, RECORDS["binary"])
    recovered = tmp_path / "recovered.log"
    recovered.write_bytes(b"".join(path.read_bytes().splitlines(keepends=True)[:line - 1]))
    r = CliRunner().invoke(app, ["status", NAME, "--storage", f"journal:///{recovered}"])
    assert r.exit_code == 0 and "Traceback" not in r.output, r.output


def test_a_journal_whose_last_line_is_cut_is_read_up_to_it(pristine, home, tmp_path):
    path = tmp_path / "cut.log"
    path.write_bytes(pristine["journal"].read_bytes()[:-40])
    r = CliRunner().invoke(app, ["studies", "--storage", f"journal:///{path}"])
    assert r.exit_code == 0 and NAME in r.output and "Traceback" not in r.output, r.output


@pytest.mark.parametrize("command", ["studies", "status", "worker"])
def test_a_journal_that_is_a_folder(command, home, tmp_path):
    folder = tmp_path / "journal.log"
    folder.mkdir()
    _one_line_error(command, f"journal:///{folder}", tmp_path, str(folder))


@pytest.mark.parametrize("url", ["sqlite:///{p}/s.db?mode=ro", "journal:///{p}/s.log?x=1"])
def test_a_query_string_on_a_file_url_is_refused(url, home, tmp_path):
    url = url.format(p=tmp_path)
    _one_line_error("worker", url, tmp_path, "query")
    assert not list(tmp_path.glob("s.*"))  # no file named "s.db?mode=ro"


@pytest.mark.parametrize("command", ["studies", "status", "worker"])
def test_a_sqlite_file_on_a_read_only_file_system_says_so(command, pristine, home, tmp_path,
                                                          mount_tmpfs):
    import subprocess

    disk = mount_tmpfs(tmp_path / "disk", "size=4m")
    shutil.copy(pristine["sqlite"], disk / "studies.db")
    subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
    _one_line_error(command, f"sqlite:///{disk / 'studies.db'}", tmp_path, "studies.db",
                    "read-only", "copy it")
