"""Hostile and careless inputs to the ``specopt`` command (issue 20): study files, ``--set``,
``SPECOPT_*`` variables, log and output paths, datasets.  Each is injected for real (a file of
binary garbage, a FIFO nobody writes to, a read-only mount, ``/dev/full``, an ``.npz`` with the
wrong arrays) and must end in one ``error: ...`` line naming what is at fault, never in a
traceback, a hang, a write outside the named file, or a silently wrong result."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from hpo.cli import app

runner = CliRunner()
#: Seconds a command may take here: far beyond a refusal, short of a hang.
HANG = 60


def _one_error(output: str, *words: str) -> str:
    assert "Traceback" not in output and "Logging error" not in output, output
    lines = [line for line in output.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1, output
    for word in words:
        assert word in errors[0], (word, output)
    return errors[0]


def _cli(*args: str, code: int = 2, words: tuple[str, ...] = ()) -> str:
    r = runner.invoke(app, list(args))
    assert r.exit_code == code, (r.exit_code, r.output, r.exception)
    return _one_error(r.output, *words)


def _specopt(*args: str, env: dict | None = None, code: int = 2,
             words: tuple[str, ...] = ()) -> str:
    """The real command in its own process (logging set up afresh; a hang is a failure)."""
    r = subprocess.run([sys.executable, "-m", "hpo.cli", *args], capture_output=True,
                       text=True, timeout=HANG, env={**os.environ, **(env or {})})
    assert r.returncode == code, (r.returncode, r.stdout, r.stderr)
    return _one_error(r.stderr, *words)


@pytest.fixture(autouse=True)
def _home(tmp_path, monkeypatch):
    monkeypatch.setenv("SPECOPT_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)


# --- study files --------------------------------------------------------------------------------

VALID = 'name = "t"\n[budget]\nn_trials = 1\n'


@pytest.mark.parametrize(("name", "content", "words"), [
    ("latin1.toml", 'name = "caf\xe9"\n'.encode("latin-1"), ("latin1.toml", "UTF-8")),
    ("garbage.toml", bytes(range(256)) * 8, ("garbage.toml",)),
    ("nested.toml", ("a = " + "[" * 5000 + "]" * 5000 + "\n").encode(), ("nested.toml", "deep")),
    ("nested.json", ("[" * 100_000 + "]" * 100_000).encode(), ("nested.json", "deep")),
    ("list.json", b"[1, 2]", ("list.json", "object")),
    ("text.json", b'"demo"', ("text.json", "object")),
    ("latin1.json", '{"name": "caf\xe9"}'.encode("latin-1"), ("latin1.json", "UTF-8")),
])
def test_a_study_file_that_is_no_study_is_one_error_line(tmp_path, name, content, words):
    path = tmp_path / name
    path.write_bytes(content)
    _cli("worker", str(path), "--print-config", words=words)


def test_a_study_file_too_large_is_refused_unread(tmp_path):
    """A study file is a page of text: a file of gigabytes (here sparse) is refused by its size
    instead of read into memory."""
    path = tmp_path / "huge.toml"
    path.write_text(VALID)
    os.truncate(path, 4 << 30)
    _cli("worker", str(path), "--print-config", words=("huge.toml", "MiB"))


@pytest.mark.slow
def test_a_fifo_or_a_device_as_study_file_does_not_hang(tmp_path):
    fifo = tmp_path / "fifo.toml"
    os.mkfifo(fifo)
    zero = tmp_path / "zero.toml"
    zero.symlink_to("/dev/zero")
    for path in (fifo, zero):
        _specopt("worker", str(path), "--print-config", words=(path.name,))


# --- --set --------------------------------------------------------------------------------------

@pytest.mark.parametrize(("item", "words"), [
    ("sigma=[0.1, 0.3", ("--set", "sigma=[0.1, 0.3", "TOML")),  # a typo, not the string '[0.1'
    ("channels={low = 1", ("--set", "channels", "TOML")),
    ('description="unterminated', ("--set", "description", "TOML")),
    ("space.=1", ("--set", "space.=1")),
    ("budget..n_trials=1", ("--set", "budget..n_trials")),
    ("sigma=" + "[" * 5000 + "]" * 5000, ("--set", "sigma")),
    ("sigma=0.3\n[budget]\nn_trials=9", ("--set", "sigma")),  # one value, not a TOML document
])
def test_a_malformed_set_is_one_error_line_naming_it(item, words):
    _cli("worker", "demo", "--print-config", "--set", item, words=words)


def test_a_set_value_that_is_plain_text_stays_a_string():
    r = runner.invoke(app, ["worker", "demo", "--print-config", "--set",
                            "description=a [draft] run"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["description"] == "a [draft] run"


# --- environment variables ----------------------------------------------------------------------

@pytest.mark.parametrize("value", ["garbage", "-5", "Level 5", "1e400"])
def test_a_bad_log_level_variable_is_one_error_line(value):
    _specopt("studies", env={"SPECOPT_LOG_LEVEL": value}, words=("SPECOPT_LOG_LEVEL",))


@pytest.mark.parametrize("value", ["abc", "-5", "nan", "1e400"])
def test_a_bad_outage_wait_is_one_error_line(value, pg_url):
    _specopt("studies", "--storage", pg_url, env={"SPECOPT_OUTAGE_WAIT": value},
             words=("SPECOPT_OUTAGE_WAIT", value))


# --- log files ----------------------------------------------------------------------------------

def test_a_log_file_that_cannot_be_opened_is_one_error_line(tmp_path, mount_tmpfs):
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    readonly = mount_tmpfs(tmp_path / "ro", "ro,size=1m")
    for path in (tmp_path, a_file / "x.log", readonly / "x.log"):
        _specopt("--log-file", str(path), "studies", words=(path.name,))
    _specopt("studies", env={"SPECOPT_LOG_FILE": str(tmp_path)},
             words=("SPECOPT_LOG_FILE", tmp_path.name))
    _specopt("--log-file", "", "studies", words=("log file",))


def test_a_log_fifo_nobody_reads_does_not_hang(tmp_path):
    fifo = tmp_path / "log.fifo"
    os.mkfifo(fifo)
    _specopt("--log-file", str(fifo), "studies", words=("log.fifo",))


def test_a_log_file_on_a_full_disk_warns_once_and_the_command_goes_on(tmp_path):
    """``/dev/full``: every write fails with ENOSPC. Logging's own handler printed a traceback
    for each line; now one warning says so and the lines still reach stderr."""
    code = ("import logging\nfrom hpo.execution.log import setup_logging\n"
            "setup_logging(log_file='/dev/full')\n"
            "for i in range(3):\n    logging.getLogger('specopt.x').warning('line %d', i)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=HANG)
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr and "Logging error" not in r.stderr, r.stderr
    assert r.stderr.count("/dev/full") == 1, r.stderr
    assert all(f"line {i}" in r.stderr for i in range(3)), r.stderr


# --- datasets -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def arrays():
    from data_prep.dataset import load_levels

    ds = load_levels().subset(300)
    return dict(index=ds.index, levels=ds.levels, split=ds.split, rank=ds.rank,
                provenance=np.array(json.dumps(ds.provenance)))


def _bad(arrays, **changes):
    return {**arrays, **changes}


def _datasets(arrays, root: Path) -> dict[str, tuple[str, ...]]:
    """Broken dataset files written to ``root``: name -> words the error must hold."""
    n = len(arrays["index"])
    made: dict[str, dict] = {
        "text-levels.npz": _bad(arrays, levels=arrays["levels"].astype(str)),
        "complex-levels.npz": _bad(arrays, levels=arrays["levels"].astype(complex)),
        "scalar-index.npz": _bad(arrays, index=np.array(7)),
        "text-index.npz": _bad(arrays, index=arrays["index"].astype(str)),
        "split-7.npz": _bad(arrays, split=np.full(n, 7, np.uint8)),
        "split-2d.npz": _bad(arrays, split=np.stack([arrays["split"]] * 2, 1)),
        "rank-repeated.npz": _bad(arrays, rank=np.zeros(n, np.int32)),
        "rank-float.npz": _bad(arrays, rank=arrays["rank"] + 0.5),
        "provenance-list.npz": _bad(arrays, provenance=np.array("[1, 2]")),
        "coulomb-text.npz": _bad(arrays, coulomb=np.zeros((n, 29, 29)).astype(str)),
    }
    words: dict[str, tuple[str, ...]] = {
        "text-levels.npz": ("levels",), "complex-levels.npz": ("levels",),
        "scalar-index.npz": ("index",), "text-index.npz": ("index",),
        "split-7.npz": ("split",), "split-2d.npz": ("split",),
        "rank-repeated.npz": ("rank",), "rank-float.npz": ("rank",),
        "provenance-list.npz": ("provenance",), "coulomb-text.npz": ("coulomb",),
    }
    for name, data in made.items():
        np.savez(root / name, **data)
    np.save(root / "single-array.npy", arrays["levels"])
    words["single-array.npy"] = ()
    (root / "pickled.npz").write_bytes(b"\x80\x04\x95" + os.urandom(64))
    words["pickled.npz"] = ("pickle",)
    return words


def test_a_broken_dataset_file_is_one_error_line_naming_it(arrays, tmp_path):
    for name, words in _datasets(arrays, tmp_path).items():
        line = _cli("data", "info", str(tmp_path / name), words=(name,))
        said = line.replace(str(tmp_path / name), "")
        assert all(w in said for w in words), (words, line)
        assert "allow_pickle" not in line, line  # never the advice to load it unsafely


@pytest.mark.slow
def test_a_fifo_as_dataset_does_not_hang(tmp_path):
    fifo = tmp_path / "levels.npz"
    os.mkfifo(fifo)
    _specopt("data", "info", str(fifo), words=("levels.npz",))
    _specopt("train", "--dataset", str(fifo), "--print-config", words=("levels.npz",))


@pytest.mark.slow
def test_a_worker_on_a_broken_dataset_stops_without_burning_its_trial(arrays, tmp_path):
    """A dataset file with text for levels: the worker stops with one line (exit 3) and re-queues
    its trial, as for a missing file; before, the trial failed with a traceback."""
    from optuna.trial import TrialState

    from tests.support import run_worker_to_end, study_trials, write_study

    bad = tmp_path / "levels.npz"
    np.savez(bad, **_bad(arrays, levels=arrays["levels"].astype(str)))
    url = f"sqlite:///{tmp_path / 's.db'}"
    path = write_study(tmp_path / "s.toml", "s", space={"epochs": 1, "subset": 200},
                       storage=url, dataset=str(bad))
    log = tmp_path / "worker.log"
    assert run_worker_to_end(path, log=log) == 3, log.read_text()
    _one_error(log.read_text(), "levels.npz")
    assert [t.state for t in study_trials("s", url)] == [TrialState.FAIL, TrialState.WAITING]


def _original(folder: Path, coulomb: np.ndarray | None = None, energies: bytes | None = None):
    rng = np.random.default_rng(0)
    folder.mkdir()
    c = -np.abs(rng.normal(size=(30, 29, 29))) if coulomb is None else coulomb
    np.savez(folder / "coulomb.npz", coulomb=c)
    if energies is None:
        np.savetxt(folder / "energies.txt", np.sort(rng.uniform(-30, -1, (30, 16)), axis=1))
    else:
        (folder / "energies.txt").write_bytes(energies)
    return folder


def test_import_original_refuses_broken_files_in_one_line(tmp_path):
    cases = {
        "latin1": (_original(tmp_path / "latin1", energies="\xe9 1 2\n".encode("latin-1")),
                   ("energies.txt", "UTF-8")),
        "complex": (_original(tmp_path / "complex", coulomb=np.zeros((30, 29, 29), complex)),
                    ("coulomb.npz",)),
        "overflow": (_original(tmp_path / "overflow", energies=b" ".join([b"-1e300"] * 16)),
                     ("energies.txt", "line 1")),
    }
    for folder, words in cases.values():
        _cli("data", "import-original", str(folder), "--out", str(tmp_path / "o.npz"),
             words=words)
    # a missing key: said once, not wrapped in "not a readable .npz file (...)"
    folder = tmp_path / "nokey"
    _original(folder)
    np.savez(folder / "coulomb.npz", matrices=np.zeros(3))
    line = _cli("data", "import-original", str(folder), "--out", str(tmp_path / "o.npz"),
                words=("coulomb.npz", "matrices"))
    assert line.count("coulomb.npz") == 1, line


def test_a_dataset_out_that_is_no_file_is_refused_before_any_work(tmp_path, mount_tmpfs):
    """``--out`` of import-original and build: a folder, a FIFO (a device alike: the write went
    through a rename that replaced it), a path under a file, a read-only mount."""
    folder = _original(tmp_path / "orig")
    fifo = tmp_path / "out.fifo"
    os.mkfifo(fifo)
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    readonly = mount_tmpfs(tmp_path / "ro", "ro,size=1m")
    for out in (tmp_path, fifo, a_file / "x.npz", readonly / "x.npz"):
        _cli("data", "import-original", str(folder), "--out", str(out), code=2,
             words=(out.name,))
        _cli("data", "build", "--out", str(out), "--limit", "3", code=2, words=(out.name,))
    assert fifo.exists() and not fifo.is_file()  # left as it was


@pytest.mark.slow
def test_a_report_out_that_is_no_folder_is_one_error_line(report_study, tmp_path, mount_tmpfs):
    """``--out`` of report and export-best on an existing file or a read-only mount: an OSError
    that no module turned into a SpecoptError still ends in one line (the CLI's handler)."""
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    readonly = mount_tmpfs(tmp_path / "ro", "ro,size=1m")
    for command in ("report", "export-best"):
        for out in (a_file, readonly / "out"):
            _cli(command, report_study.name, "--storage", report_study.url, "--artifacts",
                 str(report_study.artifacts), "--out", str(out), code=3, words=(out.name,))
    assert a_file.read_text() == ""


def test_a_train_json_that_cannot_be_written_is_refused_before_training(tmp_path):
    """``train --json`` on a folder or under a file: one line before any epoch (it was said
    only after the whole run, by the CLI's OSError handler)."""
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    for target in (tmp_path, a_file / "result.json"):
        out = _cli("train", "--subset", "60", "--epochs", "1", "--json", str(target),
                   words=(str(target.name),))
        assert "epoch" not in out and "validation" not in out, out
