"""Help that reads at 80 columns: the training options made from TrainConfig grouped in panels
(common ones first), the study's default said once per panel, flags shown as flags, no cut
option names and nothing of the machine or of Python (``None``) in it."""

from __future__ import annotations

import re

import pytest
from typer.testing import CliRunner

from hpo.cli import app
from hpo.cli.study import STUDY_SETTINGS
from hpo.cli.train import QUICK
from model.config import TrainConfig

runner = CliRunner()
DEFAULT_PHRASE = "default: the study's"


def _help(*command: str) -> str:
    r = runner.invoke(app, [*command, "--help"], env={"COLUMNS": "80"})
    assert r.exit_code == 0, r.output
    return r.output


@pytest.mark.parametrize("command", ["worker", "launch", "run", "train"])
def test_help_reads_at_80_columns(command):
    out = _help(command)
    lines = out.splitlines()
    assert max(map(len, lines)) <= 80
    assert "None" not in out and "<bool>" not in out
    assert "..." not in out and "\u2026" not in out  # no cut word, no "and so on"
    assert not re.search(r"\bhere\b", out)  # a speed measured on one machine
    # train's checkpoint_dir is its --out
    fields = ([f for f in TrainConfig.model_fields if f != "checkpoint_dir"]
              if command == "train" else STUDY_SETTINGS)
    for name in fields:  # every setting is still an option, its name whole
        assert re.search(rf"--{name.replace('_', '-')}\b", out), name
    assert "--num-threads" in out and "--threads" in out


#: Lines at 80 columns, at most (before the panels: 268, 303, 298, 192).
@pytest.mark.parametrize("command, most", [("worker", 165), ("launch", 200), ("run", 195),
                                           ("train", 160)])
def test_study_commands_group_their_training_options(command, most):
    out = _help(command)
    assert len(out.splitlines()) <= most
    if command != "train":
        assert "[default: (the study's)]" not in out
        assert 1 <= out.count(DEFAULT_PHRASE) <= 3  # once in each panel's title
    assert "Budget" in out or command == "train"
    panels = [line for line in out.splitlines() if line.startswith("\u256d\u2500 ")]
    titles = [p.strip("\u256d\u2500\u256e ") for p in panels]
    assert any(t.startswith("Training settings") for t in titles), titles
    assert any(t.startswith("Network") for t in titles), titles
    assert any(t.startswith("Device and speed") for t in titles), titles
    # the common settings come first, in the first training panel
    training = out.split("Training settings", 1)[1].split("\u2570", 1)[0]
    first = [m for m in re.findall(r"--[a-z-]+", training) if m != "--full"][:4]
    assert set(first) <= {"--epochs", "--subset", "--sigma", "--n-points", "--np", "--loss",
                          "--lr"}, first


def test_flags_read_as_flags_everywhere():
    for command in ((), ("worker",), ("train",), ("studies",), ("data", "build")):
        assert "<bool>" not in _help(*command), command


def test_train_still_shows_its_own_defaults():
    out = " ".join(_help("train").replace("\u2502", " ").split())
    assert f"{QUICK['subset']}; --full: all" in out and "[default: (0.5)]" in out
