"""Progress of long work, through the ``specopt`` command on real tiny studies: a worker's epoch
lines (``-v``: every epoch; ``--log-file`` gets them and Optuna's own lines), ``specopt status``
on a finished study, ``--version``, ``-q`` hiding the progress bars, and the compact trial
attributes (the full history in the ``history.json`` artifact)."""

from __future__ import annotations

import json
import re

import optuna
import pytest
from typer.testing import CliRunner

from hpo.cli import app
from hpo.execution.log import FILE_ENV, LEVEL_ENV
from hpo.report.data import history_of
from hpo.study.create import open_study
from model.contract import TrialAttr
from tests.support import write_study

pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")

runner = CliRunner()


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    """-q/-v/--log-file change this process's logging: back to the defaults afterwards."""
    for name in (LEVEL_ENV, FILE_ENV, "SPECOPT_PROGRESS"):
        monkeypatch.delenv(name, raising=False)
    yield
    from hpo.execution.log import setup_logging

    setup_logging(progress=None)


def test_version():
    from importlib.metadata import version

    r = runner.invoke(app, ["--version"])
    assert r.exit_code == 0 and r.output.strip() == f"specopt {version('specopt')}"


def test_launched_workers_get_the_logging_options(tmp_path):
    from hpo.execution.log import log_env

    r = runner.invoke(app, ["-q", "--log-file", str(tmp_path / "x.log"), "studies"])
    assert r.exit_code == 0, r.output
    assert log_env() == {LEVEL_ENV: "WARNING", FILE_ENV: str(tmp_path / "x.log"),
                         "SPECOPT_PROGRESS": "0"}
    r = runner.invoke(app, ["studies"])
    assert log_env() == {LEVEL_ENV: "INFO"}
    assert runner.invoke(app, ["-q", "-v", "studies"]).exit_code == 2


@pytest.mark.slow
def test_worker_epoch_lines_log_file_status_and_compact_attrs(tmp_path):
    url = f"sqlite:///{tmp_path}/p.db"
    study_file = write_study(tmp_path / "p.toml", "p", storage=url, artifacts=tmp_path / "art",
                             space={"sigma": [0.3, 0.5], "loss": "rmse", "lr": 1e-3,
                                    "epochs": 3, "subset": 200, "seed": 1})
    log_file = tmp_path / "logs" / "specopt.log"
    r = runner.invoke(app, ["-v", "--log-file", str(log_file), "worker", str(study_file),
                            "--worker-index", "0", "--threads", "1"])
    assert r.exit_code == 0, r.output
    # one line per epoch at -v: trial, epoch/total, the objective's name and value, s/epoch
    lines = re.findall(r"\[p worker 0\] trial (\d) epoch (\d)/3: test fair accuracy ([0-9.e-]+)%, "
                       r"([0-9.e-]+) s/epoch", r.output)
    assert sorted((int(t), int(e)) for t, e, _, _ in lines) == [
        (t, e) for t in (0, 1) for e in (1, 2, 3)], r.output
    assert all(0 <= float(v) <= 100 and float(s) > 0 for _, _, v, s in lines)  # in %
    text = log_file.read_text()
    assert "trial 1 epoch 3/3: test fair accuracy" in text
    assert re.search(r"trial 0 complete: fair accuracy [0-9.]+% \(test split\)", text), text
    # Optuna's own line, in the same format (time, level, logger name)
    assert re.search(r"^\d{4}-\d\d-\d\d [\d:]{8} INFO optuna[\w.]*: A new study created",
                     text, re.M), text

    # compact dashboard attributes: no per-epoch history; it is in the history.json artifact
    opened = open_study(str(study_file))
    for t in opened.study.get_trials():
        attrs = t.user_attrs
        assert TrialAttr.HISTORY not in attrs
        assert attrs[TrialAttr.EPOCHS_RUN] == 3
        assert attrs[TrialAttr.PROGRESS]["epoch"] == 3 and attrs[TrialAttr.PROGRESS]["epochs"] == 3
        assert len(attrs) <= 20 and len(json.dumps(attrs)) < 6000, json.dumps(attrs)
        assert all(len(json.dumps(v)) < 3500 for v in attrs.values())
        h = history_of(t, opened.study)
        assert [e["epoch"] for e in h] == [1, 2, 3] and all(e["seconds"] > 0 for e in h)

    # status of the finished study: through the command, text and JSON
    r = runner.invoke(app, ["status", str(study_file)])
    assert r.exit_code == 0, r.output
    assert "finished: 2 of 2 trials" in r.output
    assert "best on the test split: fair accuracy" in r.output
    r = runner.invoke(app, ["status", "p", "--storage", url, "--json"])
    assert r.exit_code == 0, r.output
    data = json.loads(r.output)
    assert data["state"] == "finished" and data["finished"] == 2 and data["n_trials"] == 2
    assert data["counts"]["complete"] == 2 and data["running"] == []
    assert data["best"]["number"] in (0, 1) and set(data["best"]["params"]) == {"sigma"}
    assert data["seconds_per_epoch"] > 0 and data["eta_seconds"] == 0


@pytest.mark.slow
def test_quiet_hides_the_progress_bars(tmp_path, monkeypatch):
    # bars forced on (stderr is not a terminal here): the training bar shows; -q hides it
    monkeypatch.setenv("SPECOPT_PROGRESS", "1")
    monkeypatch.setenv("SPECOPT_CACHE", str(tmp_path / "cache"))  # the Coulomb bar too
    args = ["train", "--epochs", "2", "--subset", "200", "--device", "cpu", "--num-threads", "1",
            "--checkpoint-dir", str(tmp_path / "ckpt")]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    assert re.search(r"training: 100%.*2/2", r.output), r.output
    assert re.search(r"Coulomb matrices: 100%.*200/200", r.output), r.output
    monkeypatch.setenv("SPECOPT_CACHE", str(tmp_path / "cache2"))
    r = runner.invoke(app, ["-q", *args])
    assert r.exit_code == 0, r.output
    assert "training:" not in r.output and "Coulomb" not in r.output and "%|" not in r.output
    assert "validation split (held out)" in r.output  # the result is still printed


@pytest.mark.slow
def test_the_coulomb_matrix_build_advances_its_bar_and_gives_the_same_matrices(capsys,
                                                                               monkeypatch):
    import data_prep.training_data as td
    from data_prep import coulomb_matrices, load_qm9pack, sort_coulomb

    updates: list[int] = []
    real_bar = td.bar

    def spied(progress=None, **kwargs):
        shown = real_bar(progress, **kwargs)
        update = shown.update
        shown.update = lambda n=1: (updates.append(n), update(n))[1]
        return shown

    monkeypatch.setattr(td, "bar", spied)
    g = load_qm9pack().take(slice(0, 1000))
    chunked = td.sorted_coulomb_matrices(g.Z, g.R, progress=True, chunk=256)
    # the bar moves chunk by chunk (it stayed at 0 until the end before)
    assert updates == [256, 256, 256, 232]
    err = capsys.readouterr().err
    assert "Coulomb matrices" in err and "1000/1000" in err, err
    assert (chunked == sort_coulomb(coulomb_matrices(g.Z, g.R))).all()
    td.sorted_coulomb_matrices(g.Z[:10], g.R[:10], progress=False)
    assert capsys.readouterr().err == ""


class _PruneFirst(optuna.pruners.BasePruner):
    def prune(self, study, trial) -> bool:
        return True


@pytest.mark.slow
def test_a_pruned_trial_keeps_its_curve_in_history_json_not_in_attributes(tmp_path):
    from optuna.artifacts import FileSystemArtifactStore

    from hpo.execution.objective import objective
    from hpo.report.data import anytime_frame
    from tests.support import small_study_config

    cfg = small_study_config(tmp_path, "pr", {"loss": "rmse", "sigma": 0.5, "epochs": 3}, 1)
    (tmp_path / "art").mkdir()
    store = FileSystemArtifactStore(str(tmp_path / "art"))
    study = optuna.create_study(direction="maximize", pruner=_PruneFirst(),
                                storage=optuna.storages.InMemoryStorage())
    study.optimize(lambda t: objective(t, cfg, artifact_store=store), n_trials=1)
    [t] = study.trials
    assert t.state == optuna.trial.TrialState.PRUNED
    assert TrialAttr.HISTORY not in t.user_attrs and t.user_attrs[TrialAttr.EPOCHS_RUN] == 1
    h = history_of(t, study, store)
    assert [e["epoch"] for e in h] == [1] and h[0]["seconds"] > 0
    assert anytime_frame(study, store=store).loc[0, "seconds"] == pytest.approx(h[0]["seconds"])


@pytest.mark.slow
def test_launched_workers_log_to_the_same_file(tmp_path):
    url = f"sqlite:///{tmp_path}/l.db"
    study_file = write_study(tmp_path / "l.toml", "l", storage=url, artifacts=tmp_path / "art",
                             space={"sigma": 0.5, "loss": "rmse", "lr": 1e-3, "epochs": 2,
                                    "subset": 200, "seed": 1}, sampler="random", n_trials=1)
    log_file = tmp_path / "launch.log"
    r = runner.invoke(app, ["--log-file", str(log_file), "launch", str(study_file), "-w", "1"])
    assert r.exit_code == 0, r.output
    text = log_file.read_text()
    assert "specopt.launch: worker 0: pid" in text  # the launching process
    # the worker process (python -m hpo.cli worker) got the file through its environment
    assert re.search(r"\[l worker 0\] trial 0 epoch 2/2: test fair accuracy", text), text
