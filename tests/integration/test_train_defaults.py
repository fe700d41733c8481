"""``specopt train`` with no arguments is a quick first look (a subset, a few epochs: about a
minute on a CPU) and says what it is about to do, with an estimate, before it trains;
``--full`` trains as TrainConfig says. TrainConfig's own defaults (those of study files and the
search space) stay the report's."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from hpo.cli import app
from hpo.cli.train import QUICK, plan
from model.config import TrainConfig


@pytest.fixture(autouse=True, scope="module")
def _threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def _config(*args: str) -> dict:
    r = CliRunner().invoke(app, ["train", *args, "--print-config"])
    assert r.exit_code == 0, r.output
    return json.loads(r.output)


def test_bare_train_is_the_quick_run_and_library_defaults_stay_the_reports():
    bare = _config()
    assert (bare["subset"], bare["epochs"]) == (5000, 10) == (QUICK["subset"], QUICK["epochs"])
    library = TrainConfig().model_dump(mode="json")
    assert (library["subset"], library["epochs"]) == (None, 50)  # study files' defaults
    assert {k: v for k, v in bare.items() if k not in QUICK} == \
        {k: v for k, v in library.items() if k not in QUICK}


@pytest.mark.parametrize(("args", "subset", "epochs"), [
    (["--full"], None, 50),
    (["--full", "--subset", "300"], 300, 50),
    (["--epochs", "3"], 5000, 3),
    (["--subset", "300"], 300, 10),
    (["--set", "epochs=4"], 5000, 4),
    (["--sigma", "0.3"], 5000, 10),
])
def test_given_values_and_full_replace_the_quick_ones(args, subset, epochs):
    config = _config(*args)
    assert (config["subset"], config["epochs"]) == (subset, epochs)


def test_help_shows_the_quick_defaults_and_full():
    r = CliRunner().invoke(app, ["train", "--help"], env={"COLUMNS": "200"})
    assert r.exit_code == 0
    assert "--full" in r.output and "5000; --full: all" in r.output
    assert "10; --full: 50" in r.output and "minute" in r.output


def test_plan_of_the_bare_and_the_full_run():
    quick = plan(TrainConfig(**QUICK, device="cpu", num_threads=2), quick=True)
    assert quick[0].startswith("quick run: 5,000 molecules (4,5")
    assert "10 epochs" in quick[0] and "--full" in quick[0]
    assert "estimate: about" in quick[2] and " s (rough" in quick[2]  # seconds, not minutes
    assert not any("long run" in line for line in quick)
    full = plan(TrainConfig(device="cpu", num_threads=2), quick=False)
    assert full[0].startswith("run: 130,") and "50 epochs" in full[0]
    assert "min (rough" in full[2] and "long run" in full[3]


def test_train_says_what_it_does_before_training(tmp_path):
    r = CliRunner().invoke(app, ["train", "--subset", "100", "--epochs", "2", "--device", "cpu",
                                 "--num-threads", "1", "--lr", "1e-3"])
    assert r.exit_code == 0, r.output
    out = r.output
    assert out.index("run: 100 molecules (") < out.index("completed after 2 epochs")
    assert "test for model selection" in out and "2 epochs" in out
    assert "cpu, 1 thread" in out and "estimate" in out
    assert "epoch 1 took" in out and "to go" in out
    quiet = CliRunner().invoke(app, ["-q", "train", "--subset", "100", "--epochs", "2",
                                     "--device", "cpu", "--num-threads", "1"])
    assert quiet.exit_code == 0, quiet.output
    assert "run:" not in quiet.output and "epoch 1 took" not in quiet.output
    assert "validation split (held out)" in quiet.output
