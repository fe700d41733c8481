"""Storage URLs, clear errors, journal heartbeats, joining studies, the CLI's errors."""

from __future__ import annotations

import time

import optuna
import pytest
from optuna.trial import TrialState

from hpo.execution.run import run_worker
from hpo.storage.database import StorageError, open_storage
from hpo.storage.home import default_storage_url, mask_url, normalize_url
from hpo.storage.journal import HeartbeatJournalStorage
from hpo.storage.stale import retried_trial_number
from hpo.study.config import ConfigError, study_config_from_dict
from hpo.study.create import artifact_dir, create_study

pytestmark = [pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning"),
              pytest.mark.filterwarnings("ignore:Heartbeat of storage:UserWarning")]


def _cfg(name="s", **extra):
    return study_config_from_dict({"name": name, "sampler": {"name": "random"},
                                   "pruner": {"name": "none"}, "budget": {"n_trials": 4},
                                   **extra})


def _dummy(trial, config, should_stop):
    return trial.suggest_float("x", 0, 1)


@pytest.mark.parametrize("url, message", [
    ("mysql://u@h/db", "unsupported scheme 'mysql'"),
    ("sqlite://relative.db", "unsupported scheme 'sqlite'"),
    ("redis://localhost", "unsupported scheme 'redis'"),
    ("just-a-file.db", "unsupported scheme"),
    ("journal:///", "no file path"),
    ("postgresql+psycopg://u@127.0.0.1:notaport/db", "malformed URL"),
])
def test_bad_urls(url, message):
    with pytest.raises(StorageError, match=message) as err:
        open_storage(url)
    assert "\n" not in str(err.value)


def test_unreachable_postgres_is_fast_and_masks_the_password():
    start = time.monotonic()
    with pytest.raises(StorageError) as err:
        open_storage("postgresql+psycopg://bob:hunter2@127.0.0.1:1/db",
                     heartbeat_interval=None)  # a reader; a worker waits (item 6, below)
    text = str(err.value)
    assert time.monotonic() - start < 10
    assert "hunter2" not in text and "bob:***@127.0.0.1:1" in text
    assert "cannot connect" in text and "\n" not in text


def test_urls(tmp_path, monkeypatch):
    assert mask_url("postgresql+psycopg://u:pw@h:5/d") == "postgresql+psycopg://u:***@h:5/d"
    assert normalize_url("postgresql://u@h/d") == "postgresql+psycopg://u@h/d"
    monkeypatch.chdir(tmp_path)
    assert normalize_url("sqlite:///r/x.db") == f"sqlite:///{tmp_path}/r/x.db"
    assert normalize_url("journal:////abs/x.log") == "journal:////abs/x.log"
    monkeypatch.setenv("SPECOPT_HOME", str(tmp_path / "runs"))
    assert default_storage_url("demo") == f"sqlite:///{tmp_path}/runs/demo.db"
    cfg = _cfg("demo")
    key = artifact_dir(cfg).name
    assert artifact_dir(cfg) == tmp_path / "runs" / "demo" / "artifacts" / key
    assert key.startswith("sqlite-demo-")


def test_sqlite_default_and_join_rules(tmp_path, monkeypatch):
    monkeypatch.setenv("SPECOPT_HOME", str(tmp_path / "runs"))
    cfg = _cfg()
    summary = run_worker(cfg, objective_fn=_dummy, handle_signals=False)
    assert summary.completed == 4 and (tmp_path / "runs" / "s.db").is_file()
    # the budget is across workers: a second worker finds nothing left to do
    assert run_worker(cfg, objective_fn=_dummy, handle_signals=False).run == 0
    # joining with another search space is refused, with the differing field named
    other = _cfg(space={"sigma": [0.1, 0.5]})
    with pytest.raises(ConfigError, match=r"different definition: space.sigma is"):
        create_study(other)
    # a budget change is fine
    assert run_worker(cfg.override(n_trials=5), objective_fn=_dummy,
                      handle_signals=False).completed == 1


def test_journal_storage_runs_and_detects_stale_trials(tmp_path):
    url = f"journal:///{tmp_path}/j.log"
    cfg = _cfg("j", storage=url, heartbeat={"interval": 1, "grace": 2, "max_retry": 1})
    assert run_worker(cfg, objective_fn=_dummy, handle_signals=False).completed == 4

    storage = open_storage(url, heartbeat_interval=1, grace_period=2, max_retry=1)
    assert isinstance(storage, HeartbeatJournalStorage)
    study = optuna.load_study(study_name="j", storage=storage)
    trial = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    storage.record_heartbeat(trial._trial_id)
    storage.set_trial_system_attr(trial._trial_id, HeartbeatJournalStorage.KEY,
                                  time.time() - 10)  # a worker that died 10 s ago
    optuna.storages.fail_stale_trials(study)
    trials = study.get_trials(deepcopy=False)
    assert trials[-2].state == TrialState.FAIL
    assert trials[-1].state == TrialState.WAITING
    assert trials[-1].params == trials[-2].params
    assert retried_trial_number(trials[-1]) == trials[-2].number


def test_cli_errors_are_one_line(tmp_path):
    from typer.testing import CliRunner

    from hpo.cli import app

    runner = CliRunner()
    r = runner.invoke(app, ["worker", "no-such-study"])
    assert r.exit_code == 2
    assert "unknown study 'no-such-study'" in r.output
    assert "demo" in r.output and "Traceback" not in r.output
    # a worker waits for a database that is down ($SPECOPT_OUTAGE_WAIT), then gives up
    r = runner.invoke(app, ["worker", "demo", "--storage", "postgresql://x:secret@127.0.0.1:1/d"],
                      env={"SPECOPT_OUTAGE_WAIT": "1"})
    assert r.exit_code == 2 and "unreachable" in r.output and "secret" not in r.output
    assert "Traceback" not in r.output
    r = runner.invoke(app, ["studies"])
    assert r.exit_code == 0 and "sigma-pareto" in r.output and "nsga2" in r.output


# --- faults (issue 9): a full disk under a journal; no password stored or on a command line ---

def _fill(disk, keep: int) -> None:
    """Fill the disk but ``keep`` bytes (roughly: tmpfs counts whole pages)."""
    import os

    fd = os.open(disk / "filler", os.O_WRONLY | os.O_CREAT)
    try:
        while os.write(fd, b"\0" * 4096):
            pass
    except OSError:
        pass
    finally:
        os.close(fd)
    size = (disk / "filler").stat().st_size
    os.truncate(disk / "filler", size - keep)


def test_a_journal_on_a_full_disk_stays_readable(tiny_disk):
    url = f"journal:///{tiny_disk}/j.log"
    cfg = _cfg("full", storage=url, heartbeat={"interval": 1, "grace": 3})
    study = create_study(cfg)
    trial = study.ask()
    trial.set_user_attr("small", 1)
    _fill(tiny_disk, keep=4096)
    with pytest.raises(OSError):  # a record bigger than the space left
        trial.set_user_attr("big", "x" * 200_000)
    (tiny_disk / "filler").unlink()  # space again: the worker goes on
    trial.set_user_attr("after", 2)
    study.tell(trial, 0.5)
    lines = (tiny_disk / "j.log").read_bytes().split(b"\n")
    assert lines[-1] == b""  # every record complete
    reader = open_storage(url, heartbeat_interval=None)
    reread = optuna.load_study(study_name="full", storage=reader)
    [t] = reread.get_trials()
    assert t.state == TrialState.COMPLETE and t.user_attrs == {"small": 1, "after": 2}


def test_no_password_in_the_study_or_on_a_worker_command_line(tmp_path, monkeypatch):
    import json

    from hpo.execution.launch import worker_command, worker_env
    from model.contract import StudyAttr

    secret = "s3cr3t-pw"
    url = f"postgresql+psycopg://alice:{secret}@127.0.0.1:5432/test"
    monkeypatch.setenv("SPECOPT_STORAGE", f"sqlite:///{tmp_path}/pw.db")  # where it really goes
    cfg = _cfg("pw", storage=url)
    study = create_study(cfg)
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)
    attrs = json.dumps([study.user_attrs, study._storage.get_study_system_attrs(study._study_id),
                        [(t.user_attrs, t.system_attrs) for t in study.get_trials()]])
    assert secret not in attrs
    assert "alice:***@" in json.loads(study.user_attrs["specopt:config"])["storage"]
    assert StudyAttr.CONFIG == "specopt:config"
    cmd = worker_command("spec.json", index=0, threads=1, device="cpu", storage=url)
    assert secret not in " ".join(cmd)
    assert worker_env(url) == {"SPECOPT_STORAGE": url}  # the URL goes by the environment


def test_a_requeued_trial_inherits_no_artifact_records_and_keeps_its_origin(tmp_path):
    from hpo.storage.stale import requeue_trial
    from model.contract import TrialAttr

    study = create_study(_cfg("arts", storage=f"sqlite:///{tmp_path}/a.db"))
    trial = study.ask()
    trial.suggest_float("x", 0, 1)
    study._storage.set_trial_system_attr(trial._trial_id, "artifacts:abc", '{"id": "abc"}')
    study.tell(trial, state=TrialState.FAIL)
    requeue_trial(study, study._storage.get_trial(trial._trial_id))
    requeue_trial(study, study._storage.get_trial(trial._trial_id))  # at most once
    failed, queued = study.get_trials()
    assert queued.state == TrialState.WAITING and queued.params == failed.params
    assert "artifacts:abc" in failed.system_attrs
    assert not any(k.startswith("artifacts:") for k in queued.system_attrs)
    assert queued.user_attrs[TrialAttr.ORIGIN] == failed.number
    assert retried_trial_number(queued) == failed.number


# --- issue 20, item 9: an unescaped '@' or ':' in a password; item 6: what a worker waits for --

@pytest.mark.postgres  # the escaped URL connects to the test server
@pytest.mark.parametrize("password", ["Xy7@Qz9", "Xy7:Qz9@Wv3", "Xy7@Qz9:Wv3/Rt5", "Xy7@Qz9?Wv3"])
@pytest.mark.parametrize("command", ["studies", "status", "worker"])
def test_an_unescaped_at_in_a_password_says_to_escape_it_and_shows_none_of_it(
        password, command, tmp_path, monkeypatch):
    """Before the fix the error named the host 'Qz9@127.0.0.1' (the password's second half)."""
    from urllib.parse import quote

    from typer.testing import CliRunner

    from hpo.cli import app

    monkeypatch.setenv("SPECOPT_HOME", str(tmp_path))
    url = f"postgresql://postgres:{password}@127.0.0.1:5432/test"
    args = {"studies": ["studies"], "status": ["status", "demo"], "worker": ["worker", "demo"]}
    r = CliRunner().invoke(app, [*args[command], "--storage", url],
                           env={"SPECOPT_OUTAGE_WAIT": "2"})
    assert r.exit_code == 2 and "Traceback" not in r.output, r.output
    (line,) = [ln for ln in r.output.splitlines() if ln.startswith("error:")]
    for part in ("Xy7", "Qz9", "Wv3", "Rt5"):
        assert part not in r.output, r.output
    assert "percent-escape" in line and "urllib.parse.quote" in line, line
    # escaped as it says, the same password connects (the server trusts any password)
    escaped = f"postgresql://postgres:{quote(password, safe='')}@127.0.0.1:5432/test"
    r = CliRunner().invoke(app, ["studies", "--storage", escaped])
    assert r.exit_code == 0, r.output


@pytest.mark.postgres
def test_a_password_with_a_colon_or_slash_needs_no_escaping():
    storage = open_storage("postgresql://postgres:a:b/c#d@127.0.0.1:5432/test",
                           heartbeat_interval=None)
    assert isinstance(optuna.get_all_study_names(storage), list)


def test_url_schemes_are_case_insensitive(tmp_path):
    assert normalize_url(f"SQLite:///{tmp_path}/a.db") == f"sqlite:///{tmp_path}/a.db"
    assert normalize_url("PostgreSQL://u@h/d") == "postgresql+psycopg://u@h/d"


@pytest.mark.slow  # a DNS resolver answers for no-such-host.invalid (without one: an outage)
@pytest.mark.parametrize("url", [  # the server refuses them (without one: an outage)
    pytest.param("postgresql+psycopg://postgres@127.0.0.1:5432/no_such_database",
                 marks=pytest.mark.postgres),
    pytest.param("postgresql+psycopg://no_such_user@127.0.0.1:5432/test",
                 marks=pytest.mark.postgres),
    "postgresql+psycopg://postgres@no-such-host.invalid:5432/test",
])
def test_a_worker_does_not_wait_for_a_database_that_refuses_it_for_good(url, monkeypatch):
    """A worker rides out a server that is down (item 6), but a wrong database, user or host
    is an error at once, not after $SPECOPT_OUTAGE_WAIT."""
    monkeypatch.setenv("SPECOPT_OUTAGE_WAIT", "600")
    start = time.monotonic()
    with pytest.raises(StorageError) as err:
        open_storage(url, heartbeat_interval=1, grace_period=3)
    assert time.monotonic() - start < 15
    assert "cannot connect" in str(err.value) and "\n" not in str(err.value)


@pytest.mark.slow
def test_a_workers_storage_waits_for_a_server_that_is_down():
    """Item 6: before the fix a worker's storage failed at once on a refused connection."""
    start = time.monotonic()
    with pytest.raises(StorageError) as err:
        open_storage("postgresql+psycopg://bob:hunter2@127.0.0.1:1/db", heartbeat_interval=1,
                     grace_period=3, max_wait=3)
    assert time.monotonic() - start >= 3
    text = str(err.value)
    assert "unreachable" in text and "opening the storage" in text and "hunter2" not in text
