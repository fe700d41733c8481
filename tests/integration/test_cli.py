"""The ``specopt`` command as a whole: help everywhere, options made from TrainConfig,
``--set`` and ``--print-config``, and the one error handler (one line, or a traceback with
``--debug``)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import typer
from typer.testing import CliRunner

from hpo.cli import SpecoptGroup, app, as_written
from hpo.cli.study import STUDY_SETTINGS
from hpo.execution.launch import worker_command
from hpo.study.config import config_json, load_study_config, space_fields
from model.config import TrainConfig

runner = CliRunner()


def _commands(group, path=()):
    for name, cmd in group.commands.items():
        yield (*path, name), cmd
        if hasattr(cmd, "commands"):
            yield from _commands(cmd, (*path, name))


ROOT = typer.main.get_command(app)


def test_help_of_the_root_and_every_command():
    r = runner.invoke(app, ["--help"])
    assert r.exit_code == 0 and "--debug" in r.output
    names = [path for path, _ in _commands(ROOT)]
    assert {("train",), ("worker",), ("launch",), ("run",), ("demo",), ("studies",),
            ("report",), ("export-best",), ("predict",), ("dashboard",), ("data",),
            ("data", "build"), ("data", "info"), ("data", "import-original")} <= set(names)
    for path in names:
        r = runner.invoke(app, [*path, "--help"])
        assert r.exit_code == 0 and "Usage: " in r.output, (path, r.output)


def _shown(output: str) -> str:
    """Help output as one line of words (rich wraps table cells inside its box)."""
    return " ".join(output.replace("\u2502", " ").split())


@pytest.mark.parametrize("path, words", [
    (("worker",), ["[space]", "[train]"]),
    (("launch",), ["pip install", "'specopt[slurm]'"]),
    (("run",), ["pip install", "'specopt[ray]'"]),
    (("export-mlflow",), ["pip install", "'specopt[mlflow]'"]),
])
def test_help_shows_bracketed_text_verbatim(path, words):
    """Help is rendered with rich markup, which reads ``[train]`` as a style tag and drops it."""
    r = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "100"})
    assert r.exit_code == 0, r.output
    assert all(word in _shown(r.output) for word in words), r.output


def test_help_of_any_command_is_not_markup():
    """Text that is markup to rich (a style, a closing tag with no opening one, an escape) is
    shown as written, in the command's help and its options', and the help panels stay."""
    sub = typer.Typer(cls=SpecoptGroup)

    @sub.command()
    def cmd(x: int = typer.Option(0, help="[bold]x[/bold] in [0, 1) [train]",
                                  rich_help_panel="Own panel")) -> None:
        r"""Ends [/section] here, a \[ backslash and [red]red[/]."""

    @sub.command()
    def other() -> None:
        """The other [one]."""

    for args, texts in [(["cmd", "--help"], ["[bold]x[/bold] in [0, 1) [train]", "Own panel",
                                              r"Ends [/section] here, a \[ backslash and "
                                              "[red]red[/]."]),
                        (["--help"], ["The other [one].", "Ends [/section] here"])]:
        r = runner.invoke(sub, args, env={"COLUMNS": "120"})
        assert r.exit_code == 0, r.output
        for text in texts:
            assert text in _shown(r.output), (text, r.output)


@pytest.mark.parametrize("text", [
    "[train]", "[0, 1)", "specopt[slurm]", "[/x]", "[/]", "a \\[ b", "a \\[bold] b",
    "a \\\\[bold] b", "a \\\\\\[x", "[b][/b]", "[#fff]", "[@click]", "ends \\", "[[a]]", "x [",
])
def test_as_written_survives_rich_markup(text):
    from rich.text import Text

    assert Text.from_markup(as_written(text)).plain == text


def _options(command: str) -> set[str]:
    return {o for p in ROOT.commands[command].params for o in (*p.opts, *p.secondary_opts)}


def test_training_options_are_the_train_config_fields():
    train = _options("train")
    for name in TrainConfig.model_fields:
        assert "--" + name.replace("_", "-") in train, name
    assert {"--np", "--set", "--print-config", "--json"} <= train
    # an option has its field's type without None (int | None: an integer, read by the CLI);
    # a value of another type is one error line naming the option (not click's usage box)
    for option, value in (("--subset", "3.5"), ("--patience", "x"), ("--reference-sigma", "x")):
        r = runner.invoke(app, ["train", option, value, "--print-config"])
        assert r.exit_code == 2 and r.output.startswith(f"error: {option} '{value}'"), r.output
    for command in ("worker", "launch", "run"):
        opts = _options(command)
        for name in STUDY_SETTINGS:
            assert "--" + name.replace("_", "-") in opts, (command, name)
        assert "--checkpoint-dir" not in opts  # the worker sets it
        assert {"--set", "--print-config", "--storage", "--n-trials", "--threads"} <= opts
    assert set(space_fields()) <= set(STUDY_SETTINGS)


def test_train_print_config_resolves_options_and_sets():
    r = runner.invoke(app, ["train", "--sigma", "0.3", "--np", "500", "--channels", "16,32",
                            "--set", "lr=0.001", "--set", "betas=[0.8, 0.9]", "--batch-norm",
                            "--print-config"])
    assert r.exit_code == 0, r.output
    cfg = json.loads(r.output)
    from hpo.cli.train import QUICK

    assert TrainConfig(**cfg) == TrainConfig(sigma=0.3, n_points=500, channels=(16, 32),
                                             lr=1e-3, betas=(0.8, 0.9), batch_norm=True,
                                             **QUICK)
    assert cfg["epochs"] == QUICK["epochs"]  # not given: train's quick run (--full: TrainConfig's)


def test_study_options_change_the_file_once():
    r = runner.invoke(app, ["worker", "demo", "--epochs", "3", "--subset", "300", "--threads",
                            "1", "--device", "cpu", "--n-trials", "4", "--storage",
                            "sqlite:///x.db", "--set", "sigma=[0.1, 0.5]", "--set",
                            "budget.timeout=60", "--print-config"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.output)
    assert d["space"]["epochs"] == 3 and d["space"]["subset"] == 300
    assert d["space"]["sigma"] == [0.1, 0.5] and d["budget"] == {"n_trials": 4, "timeout": 60}
    assert d["train"]["num_threads"] == 1 and d["train"]["device"] == "cpu"
    assert d["storage"] == "sqlite:///x.db"
    expected = load_study_config("demo").override({
        "space.epochs": 3, "space.subset": 300, "train.num_threads": 1, "train.device": "cpu",
        "budget.n_trials": 4, "budget.timeout": 60, "storage": "sqlite:///x.db",
        "space.sigma": [0.1, 0.5]})
    assert d == expected.to_dict()


@pytest.mark.parametrize("args, words", [
    (["worker", "no-such-study"], ["unknown study", "'no-such-study'"]),
    (["launch", "demo", "--set", "bogus=1"], ["'bogus'", "study key"]),
    (["run", "demo", "--epochs", "0"], ["demo.toml", "space.epochs"]),
    (["worker", "demo", "--set", "n_trials"], ["--set", "'n_trials'", "KEY=VALUE"]),
    (["train", "--loss", "l3", "--print-config"], ["loss", "'l3'"]),
    (["train", "--set", "colour=red", "--print-config"], ["colour"]),
    (["report", "nope", "--storage", "sqlite:////nonexistent/x.db"], []),
])
def test_errors_are_one_line_with_exit_2(args, words):
    r = runner.invoke(app, args)
    assert r.exit_code == 2, r.output
    assert r.output.startswith("error: ") and all(w in r.output for w in words), r.output
    assert len(r.output.strip().splitlines()) == 1, r.output
    assert "Traceback" not in r.output


def test_debug_shows_the_traceback():
    r = runner.invoke(app, ["--debug", "worker", "no-such-study"])
    assert r.exit_code == 2
    assert "Traceback (most recent call last)" in r.output and "ConfigError" in r.output
    assert r.output.strip().splitlines()[-1].startswith("error: unknown study 'no-such-study'")


@pytest.mark.slow
def test_worker_entry_point_that_launch_starts(tmp_path):
    """``python -m hpo.cli``: the command line launch gives its workers reads their definition."""
    spec = tmp_path / "demo.json"
    spec.write_text(config_json(load_study_config("demo").override(epochs=2)))
    cmd = worker_command(str(spec), index=1, threads=1, device="cpu",
                         storage=f"sqlite:///{tmp_path}/d.db")
    assert cmd[1:4] == ["-m", "hpo.cli", "worker"]
    proc = subprocess.run([*cmd, "--print-config"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    d = json.loads(proc.stdout)
    assert d["space"]["epochs"] == 2 and d["train"]["num_threads"] == 1
    assert d["train"]["device"] == "cpu" and d["storage"] == f"sqlite:///{tmp_path}/d.db"
    proc = subprocess.run([sys.executable, "-m", "hpo.cli", "--debug", "worker", "nope"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "Traceback" in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("error: unknown study 'nope'")


def test_report_of_a_study_named_like_a_path_writes_nothing_outside_runs(tmp_path, monkeypatch):
    """A study name read from a database (any tool can create ``../../evil``) must not choose
    the default report folder outside runs/."""
    import optuna

    runs = tmp_path / "a" / "b" / "runs"
    monkeypatch.setenv("SPECOPT_HOME", str(runs))
    url = f"sqlite:///{tmp_path / 'evil.db'}"
    study = optuna.create_study(study_name="../../evil", storage=url)
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)
    r = runner.invoke(app, ["report", "../../evil", "--storage", url])
    assert r.exit_code == 2, r.output
    assert r.output.count("\n") == 1 and r.output.startswith("error: ")
    assert not (tmp_path / "a" / "evil-report").exists()
    assert not any(p.name.endswith("-report") for p in tmp_path.rglob("*"))


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="a GPU is there")
@pytest.mark.parametrize("command", ["run", "worker"])
def test_a_device_this_machine_lacks_fails_at_once(command, tmp_path, monkeypatch):
    """--device cuda without CUDA: one line before anything starts (it used to create the study
    and fail every trial with a traceback, then exit 0)."""
    monkeypatch.setenv("SPECOPT_HOME", str(tmp_path))
    r = runner.invoke(app, [command, "demo", "--device", "cuda"])
    assert r.exit_code == 2, r.output
    assert r.output.startswith("error: ") and "'cuda'" in r.output, r.output
    assert "CUDA is not available" in r.output
    assert len(r.output.strip().splitlines()) == 1 and "Traceback" not in r.output
    assert not list(tmp_path.iterdir())  # no study, no storage


@pytest.mark.slow
def test_a_run_whose_every_trial_failed_exits_1_after_its_report(tmp_path, monkeypatch):
    """lr 1e9 makes every trial diverge: the report (with its failures) is written, and the
    command says that nothing completed and exits 1 (it exited 0)."""
    monkeypatch.setenv("SPECOPT_HOME", str(tmp_path))
    r = runner.invoke(app, ["run", "demo", "--workers", "1", "--n-trials", "2", "--set",
                            "lr=1e9", "--set", "space.epochs=2", "--set", "space.subset=200",
                            "--num-threads", "1"])
    assert r.exit_code == 1, r.output
    last = r.output.strip().splitlines()[-1]
    assert last.startswith("error: ") and "demo" in last and "2 failed" in last, last
    assert (tmp_path / "demo" / "report" / "report.html").is_file()
