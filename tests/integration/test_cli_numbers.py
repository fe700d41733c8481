"""Numbers on the command line (issue 20): every bad one, of a training setting or of a study
command, ends in one ``error: ...`` line naming the option, never in a traceback or click's
framed usage box, and nothing is started."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from hpo.cli import app


def _one_error_line(r, *words):
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output and "Usage:" not in r.output and "╭" not in r.output
    lines = [line for line in r.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), r.output
    for word in words:
        assert word in lines[0], (word, r.output)


@pytest.mark.parametrize(("args", "words"), [
    (["--np", "1e8"], ["n_points", "at most"]),
    (["--np", "2.5"], ["--n-points", "2.5"]),
    (["--np", "abc"], ["--n-points", "abc"]),
    (["--sigma", "1e9"], ["sigma", "at most"]),
    (["--sigma", "nan"], ["sigma"]),
    (["--lr", "inf"], ["lr"]),
    (["--seed", "1e30"], ["seed"]),
    (["--epochs", "-1"], ["epochs"]),
    (["--epochs", "1e12"], ["epochs"]),
    (["--subset", "1.5"], ["subset"]),
    (["--batch-size", "true"], ["--batch-size"]),
    (["--num-threads", "1e9"], ["num_threads"]),
])
def test_train_numbers(args, words, tmp_path, monkeypatch):
    monkeypatch.setenv("SPECOPT_HOME", str(tmp_path))
    r = CliRunner().invoke(app, ["train", "--print-config", *args])
    _one_error_line(r, *words)


def test_train_subset_larger_than_the_dataset_names_both_numbers(tmp_path, monkeypatch):
    monkeypatch.setenv("SPECOPT_HOME", str(tmp_path))
    from data_prep import load_levels

    r = CliRunner().invoke(app, ["train", "--subset", "200000", "--epochs", "1"])
    _one_error_line(r, "200000", str(len(load_levels())))


@pytest.mark.parametrize(("command", "args", "words"), [
    ("worker", ["--n-trials", "-1"], ["n_trials"]),
    ("worker", ["--n-trials", "1.5"], ["--n-trials", "1.5"]),
    ("worker", ["--n-trials", "1e30"], ["n_trials"]),
    ("worker", ["--timeout", "inf"], ["timeout"]),
    ("worker", ["--timeout", "soon"], ["--timeout", "soon"]),
    ("worker", ["--np", "1e8"], ["n_points", "at most"]),
    ("worker", ["--sigma", "1e9"], ["sigma"]),
    ("worker", ["--worker-index", "-1"], ["--worker-index"]),
    ("worker", ["--add-trials", "0"], ["--add-trials"]),
    ("worker", ["--pack", "-3"], ["--pack"]),
    ("launch", ["--workers", "0"], ["--workers"]),
    ("launch", ["--workers", "100000"], ["--workers"]),
    ("launch", ["--workers", "two"], ["--workers"]),
    ("launch", ["--gpus-per-worker", "-1"], ["--gpus-per-worker"]),
    ("launch", ["--cpus-per-worker", "nan"], ["--cpus-per-worker"]),
    ("run", ["--workers", "-2"], ["--workers"]),
])
def test_study_command_numbers(command, args, words, tmp_path, monkeypatch):
    monkeypatch.setenv("SPECOPT_HOME", str(tmp_path))
    r = CliRunner().invoke(app, [command, "demo", "--print-config", *args])
    _one_error_line(r, *words)
    assert not list(tmp_path.iterdir()), "nothing is created"


@pytest.mark.parametrize(("args", "words"), [
    (["--sigma", "abc"], ["--sigma", "abc"]),
    (["--n-points", "2.5"], ["--n-points", "2.5"]),
])
def test_predict_numbers(args, words, tmp_path, monkeypatch):
    monkeypatch.setenv("SPECOPT_HOME", str(tmp_path))
    r = CliRunner().invoke(app, ["predict", str(tmp_path / "model.pt"),
                                 str(tmp_path / "m.xyz"), *args])
    _one_error_line(r, *words)
