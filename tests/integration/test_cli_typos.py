"""A typo on the command line gets the closest known name: a command, an option, a study, a
``--set`` key, a training setting's value."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from hpo.cli import app

runner = CliRunner()


@pytest.mark.parametrize("args, suggestion", [
    (["wroker"], "Did you mean 'worker'?"),  # click's own
    (["worker", "demo", "--epohcs", "3"], "--epochs"),  # click's own
    (["worker", "demoo"], "did you mean 'demo'?"),
    (["worker", "demo", "--set", "epohcs=3", "--print-config"], "did you mean 'epochs'?"),
    (["worker", "demo", "--set", "budgt.n_trials=3", "--print-config"],
     "did you mean 'budget'?"),
    (["worker", "demo", "--set", "budget.n_trails=3", "--print-config"],
     "did you mean 'n_trials'?"),
    (["worker", "demo", "--loss", "rmes", "--print-config"], "did you mean 'rmse'?"),
    (["train", "--loss", "rmes", "--print-config"], "did you mean 'rmse'?"),
    (["train", "--set", "epohcs=3", "--print-config"], "did you mean 'epochs'?"),
    (["train", "--amp", "bf61", "--print-config"], "did you mean 'bf16'?"),
])
def test_a_typo_suggests_the_closest_name(args, suggestion):
    r = runner.invoke(app, args, env={"COLUMNS": "200"})
    assert r.exit_code == 2, r.output
    assert suggestion in " ".join(r.output.replace("\u2502", " ").split()), r.output
    assert "Traceback" not in r.output


def test_a_study_file_with_typos_reports_each_with_its_suggestion(tmp_path):
    study = tmp_path / "typos.toml"
    study.write_text('name = "typos"\n[budgt]\nn_trials = 3\n[sampler]\nname = "tpee"\n'
                     '[space]\nloss = "rmes"\n')
    r = runner.invoke(app, ["worker", str(study), "--print-config"])
    assert r.exit_code == 2 and len(r.output.strip().splitlines()) == 1, r.output
    for part in ("unknown key 'budgt' (did you mean 'budget'?)", "'tpee' is not allowed",
                 "(did you mean 'tpe'?)", "unknown loss 'rmes' (did you mean 'rmse'?)"):
        assert part in r.output, (part, r.output)
