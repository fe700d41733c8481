"""A study's lifecycle through the CLI on real tiny studies (200 molecules, 1 epoch, SQLite):
``studies --storage``, the finished-study message, ``--add-trials``, ``delete`` and ``--fresh``
(with and without ``--yes``), and the message on a changed definition."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState
from typer.testing import CliRunner

from hpo.cli import app
from model.contract import StudyAttr
from tests.support import study_trials, write_study

pytestmark = [pytest.mark.slow,
              pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")]

SPACE = {"lr": [1e-3, 3e-3], "epochs": 1, "subset": 200, "n_points": 300}


def _cli(*args: str):
    return CliRunner().invoke(app, [str(a) for a in args])


def _worker(study: Path, *extra: str):
    r = _cli("worker", study, "--threads", "1", *extra)
    assert r.exit_code == 0, r.output
    return r


def _names(url: str) -> list[str]:
    from hpo.storage.database import open_storage

    return optuna.get_all_study_names(open_storage(url, heartbeat_interval=None))


def _artifact_folder(name: str, url: str) -> Path:
    from hpo.storage.database import open_storage

    study = optuna.load_study(study_name=name, storage=open_storage(url, heartbeat_interval=None))
    return Path(study.user_attrs[StudyAttr.ARTIFACT_STORE])


@pytest.fixture(scope="module")
def two_studies(tmp_path_factory):
    """One SQLite file with two real studies: ``life`` (1 trial of 1) and ``other`` (2 of 2)."""
    root = tmp_path_factory.mktemp("lifecycle")
    url = f"sqlite:///{root / 'two.db'}"
    life = write_study(root / "life.toml", "life", space=SPACE, storage=url, sampler="random",
                       n_trials=1)
    other = write_study(root / "other.toml", "other", space=SPACE, storage=url,
                        sampler="random", n_trials=2)
    _worker(life)
    _worker(other)
    return root, url, life, other


def test_studies_lists_the_studies_of_a_storage_with_counts(two_studies):
    root, url, _, _ = two_studies
    r = _cli("studies", "--storage", url)
    assert r.exit_code == 0, r.output
    rows = {line.split()[0]: line.split() for line in r.stdout.splitlines()[2:]}
    head = r.stdout.splitlines()[1].split()
    assert head == ["study", "complete", "pruned", "failed", "running", "waiting", "total",
                    "budget", "best"]
    assert rows["life"][1:8] == ["1", "0", "0", "0", "0", "1", "1"]
    assert rows["other"][1:8] == ["2", "0", "0", "0", "0", "2", "2"]
    best = max(t.value for t in study_trials("other", url))
    assert rows["other"][8] == f"{best:.4g}"
    # a storage that does not exist is one line, and is not created
    r = _cli("studies", "--storage", f"sqlite:///{root / 'none.db'}")
    assert r.exit_code == 2 and r.output.startswith("error: ") and "does not exist" in r.output
    assert not (root / "none.db").exists()


def test_a_finished_study_says_so_and_add_trials_runs_more(two_studies):
    _, url, life, _ = two_studies
    r = _worker(life)  # budget spent: nothing runs, and it says why
    assert f"study 'life' in {url} is finished: 1 of 1 trials" in r.stderr, r.stderr
    assert "--add-trials N" in r.stderr and "--fresh" in r.stderr  # the two ways on
    assert len(study_trials("life", url)) == 1
    r = _worker(life, "--add-trials", "2")
    assert "budget extended to 3 trials" in r.stderr
    trials = study_trials("life", url)
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 3
    # stored with the study: a later worker with the file's n_trials (1) sees 3 and is done
    r = _worker(life)
    assert "is finished: 3 of 3 trials" in r.stderr and len(study_trials("life", url)) == 3
    r = _cli("studies", "--storage", url)
    assert [line.split()[1:8] for line in r.stdout.splitlines()
            if line.startswith("life ")] == [["3", "0", "0", "0", "0", "3", "3"]]
    # run: no workers on a finished study, the message, its summary and the report
    r = _cli("run", life, "--workers", "1")
    assert r.exit_code == 0, r.output
    assert "is finished: 3 of 3 trials" in r.stderr and "study life: 3 complete" in r.stdout
    assert "report: " in r.stdout and len(study_trials("life", url)) == 3
    # the new trials' artifacts went to the folder the study recorded
    folder = _artifact_folder("life", url)
    ids = {json.loads(v)["artifact_id"] for t in trials for k, v in t.system_attrs.items()
           if k.startswith("artifacts:")}
    assert len(ids) >= 3 and all((folder / i).is_file() for i in ids)


def test_add_trials_is_refused_for_a_grid_study(tmp_path):
    url = f"sqlite:///{tmp_path / 'g.db'}"
    grid = write_study(tmp_path / "g.toml", "g", space=SPACE, storage=url)
    r = _cli("worker", grid, "--add-trials", "1")
    assert r.exit_code == 2 and "is a grid search" in r.output
    assert not (tmp_path / "g.db").exists() or "g" not in _names(url)


def test_delete_asks_and_removes_the_study_and_its_artifacts(two_studies):
    root, url, _, other = two_studies
    folder = _artifact_folder("other", url)
    assert folder.is_dir() and any(folder.iterdir())
    r = _cli("delete", other)  # no terminal here: refused without --yes
    assert r.exit_code == 2, r.output
    assert "Refused" in r.output and "--yes" in r.output and "2 trial(s)" in r.output
    assert "other" in _names(url) and folder.is_dir()
    r = _cli("delete", "other", "--storage", url, "--yes")  # by name in a storage
    assert r.exit_code == 0, r.output
    assert "deleted study 'other' (2 trials)" in r.output
    assert "other" not in _names(url) and "life" in _names(url)
    assert not folder.exists()
    assert _artifact_folder("life", url).is_dir()  # the other study's are left alone
    r = _cli("delete", "other", "--storage", url, "--yes")
    assert r.exit_code == 2 and "no study 'other'" in r.output


def test_fresh_deletes_and_starts_over(tmp_path):
    url = f"sqlite:///{tmp_path / 'f.db'}"
    study = write_study(tmp_path / "f.toml", "f", space=SPACE, storage=url, sampler="random",
                        n_trials=1)
    _worker(study)
    old = study_trials("f", url)[0]
    folder = _artifact_folder("f", url)
    old_files = {p.name for p in folder.iterdir()}
    r = _cli("worker", study, "--fresh")
    assert r.exit_code == 2 and "Refused" in r.output
    assert study_trials("f", url)[0].datetime_start == old.datetime_start
    r = _worker(study, "--fresh", "--yes")
    assert "deleted study 'f' (1 trials)" in r.stderr
    trials = study_trials("f", url)
    assert len(trials) == 1 and trials[0].number == 0 and trials[0].state == TrialState.COMPLETE
    assert trials[0].datetime_start > old.datetime_complete
    assert not old_files & {p.name for p in _artifact_folder("f", url).iterdir()}


def test_a_changed_definition_says_what_works(tmp_path):
    url = f"sqlite:///{tmp_path / 'c.db'}"
    study = write_study(tmp_path / "c.toml", "c", space=SPACE, storage=url, sampler="random",
                        n_trials=1)
    _worker(study)
    write_study(study, "c", space={**SPACE, "lr": 0.01}, storage=url, sampler="random",
                n_trials=1)  # the file edited
    r = _cli("worker", study)
    assert r.exit_code == 2 and r.output.count("\n") == 1, r.output
    assert "space.lr is [0.001,0.003] there, 0.01 here" in r.output
    assert "--fresh" in r.output and "1 trial(s)" in r.output
    assert "--set name=c-2" in r.output
    keep = re.search(r"keep the stored definition: (.*)$", r.output.strip()).group(1)
    assert keep == "--set 'space.lr=[0.001,0.003]'"
    # each suggestion works as written
    r = _worker(study, *shlex.split(keep))
    assert "is finished: 1 of 1 trials" in r.stderr
    r = _worker(study, "--set", "name=c-2")
    assert len(study_trials("c-2", url)) == 1


def test_delete_removes_the_studys_outputs_and_lock_in_the_home(tmp_path, monkeypatch):
    """In the home: the report, export and log folders under ``<study>/`` and the claim lock
    beside ``<study>.db`` go with the study; the database file stays, and a study of the same
    name in another storage keeps the folder while it has artifacts there."""
    home = tmp_path / "runs"
    monkeypatch.setenv("SPECOPT_HOME", str(home))
    study = write_study(tmp_path / "h.toml", "h", space=SPACE, storage=f"sqlite:///{home}/h.db",
                        sampler="random", n_trials=1)
    _worker(study)
    for kind in ("report", "export", "slurm"):  # as report, export-best and SLURM write them
        (home / "h" / kind).mkdir(parents=True, exist_ok=True)
        (home / "h" / kind / "x.txt").write_text("x")
    lock = home / "h.db.h.lock"
    assert lock.is_file() and (home / "h" / "artifacts").is_dir()
    other = f"sqlite:///{home / 'other.db'}"  # the same name in a second storage
    _worker(study, "--storage", other)
    r = _cli("delete", study, "--storage", other, "--yes")
    assert r.exit_code == 0, r.output
    assert (home / "h" / "report" / "x.txt").is_file()  # the first storage's study keeps it
    assert not (home / "other.db.h.lock").exists()
    r = _cli("delete", study, "--yes")
    assert r.exit_code == 0, r.output
    assert f"removed {home / 'h'}" in r.output
    assert not (home / "h").exists() and not lock.exists()
    assert (home / "h.db").is_file() and _names(f"sqlite:///{home / 'h.db'}") == []
