"""Issue 9, item 3: workers ride out a PostgreSQL outage (a stop of ~20 s, then a restart).

The test runs its OWN PostgreSQL server (initdb/pg_ctl from /usr/lib/postgresql/*/bin on a free
port in a temporary folder, as the ``postgres`` user): the shared server on 5432 is never
stopped.  Missing binaries fail the test (never skip).  Before the fix, every worker died with a
long traceback ending in Optuna's misleading "... e.g. exceeding max length".
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections import Counter
from pathlib import Path

import pytest
from optuna.trial import TrialState

import hpo
from hpo.execution.launch import warm_cache
from tests.support import start_worker, study_trials, wait_for_running, write_study

pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class OwnPostgres:
    """A throw-away PostgreSQL server in ``folder`` on a free port (trust auth)."""

    def __init__(self, folder: Path) -> None:
        bins = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
        if not bins:
            pytest.fail("PostgreSQL server binaries are needed (pg_ctl in "
                        "/usr/lib/postgresql/*/bin: apt-get install postgresql)", pytrace=False)
        self.bin = Path(bins[-1]).parent
        self.folder = folder
        self.data = folder / "data"
        self.port = _free_port()
        folder.mkdir(parents=True, exist_ok=True)
        shutil.chown(folder, "postgres", "postgres")
        self._pg("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "-E", "UTF8")
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _pg(self, tool: str, *args: str) -> None:
        cmd = ["runuser", "-u", "postgres", "--", str(self.bin / tool), *args]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if done.returncode:
            raise RuntimeError(f"{tool} {' '.join(args)} failed: {done.stderr.strip()}")

    def _ctl(self, *args: str) -> None:
        self._pg("pg_ctl", "-D", str(self.data), "-l", str(self.folder / "server.log"), "-w",
                 *args)

    def start(self) -> None:
        self._ctl("-o", f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1",
                  "start")

    def stop(self, mode: str = "fast") -> None:
        self._ctl("-m", mode, "stop")

    def restart(self) -> None:
        self._ctl("-m", "fast", "-o", f"-p {self.port} -k {self.folder} "
                  "-c listen_addresses=127.0.0.1", "restart")


@pytest.fixture
def own_pg():
    # not under pytest's tmp folder: the postgres user cannot enter root's 0700 folders
    folder = Path(tempfile.mkdtemp(prefix="specopt-own-pg-",  # removed below
                                   dir=os.environ.get("SPECOPT_TEST_SYSTEM_TMP")))
    os.chmod(folder, 0o755)
    try:
        server = OwnPostgres(folder / "pg")
        server.start()
        try:
            yield server
        finally:
            try:
                server.stop("immediate")
            except RuntimeError:
                pass  # already stopped
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_workers_ride_out_a_postgres_stop_and_restart(tmp_path, own_pg):
    url, name = own_pg.url, "outage"
    grid = ["rmse", "logcosh", "mae", "smoothl1"]
    path = write_study(tmp_path / "outage.toml", name, storage=url, heartbeat=(1, 3),
                       artifacts=tmp_path / "art",
                       space={"loss": grid, "epochs": 25, "subset": 200, "lr": 1e-4})
    warm_cache(hpo.load_study_config(path))
    logs = [tmp_path / f"w{i}.log" for i in range(2)]
    procs = [start_worker(path, index=i, log=logs[i]) for i in range(2)]
    try:
        wait_for_running(name, url, min_epochs=2, procs=procs)
        own_pg.stop()  # ~20 s outage mid-trial
        time.sleep(20)
        assert all(p.poll() is None for p in procs), _logs(logs)
        own_pg.start()
        time.sleep(8)
        own_pg.restart()  # and a restart
        codes = [p.wait(timeout=400) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGKILL)
    text = _logs(logs)
    assert codes == [0, 0], text
    trials = study_trials(name, url)
    states = Counter(t.state for t in trials)
    assert states == {TrialState.COMPLETE: len(grid)}, (states, text)  # nothing lost or stuck
    assert sorted(t.params["loss"] for t in trials) == sorted(grid)
    assert "postgresql+psycopg://postgres@127.0.0.1" in text and "unreachable" in text, text
    assert "retrying in" in text and "reachable again" in text, text
    assert "Traceback" not in text, text


@pytest.mark.slow
def test_a_worker_started_while_postgres_is_down_waits_for_it(tmp_path, own_pg):
    """Issue 20, item 6: before the fix a worker started during an outage exited at once with
    "cannot connect" (exit 2), though a running one rides out 600 s."""
    url, name = own_pg.url, "late"
    path = write_study(tmp_path / "late.toml", name, storage=url, heartbeat=(1, 3),
                       artifacts=tmp_path / "art", n_trials=1,
                       space={"loss": "rmse", "epochs": 2, "subset": 200, "lr": 1e-3})
    warm_cache(hpo.load_study_config(path))
    own_pg.stop()
    log = tmp_path / "w.log"
    proc = start_worker(path, log=log)
    try:
        time.sleep(10)
        assert proc.poll() is None, _logs([log])  # still waiting, not gone
        own_pg.start()
        code = proc.wait(timeout=300)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
    text = _logs([log])
    assert code == 0, text
    assert [t.state for t in study_trials(name, url)] == [TrialState.COMPLETE], text
    assert "unreachable (opening the storage" in text and "reachable again" in text, text
    assert "Traceback" not in text, text


def _logs(paths) -> str:
    return "\n".join(p.read_text() for p in paths if p.exists())


def test_a_claim_lock_lost_in_a_restart_is_not_acted_on(own_pg, monkeypatch):
    """Worker A has decided to run a trial under the study's claim lock when PostgreSQL
    restarts: the server drops A's lock, and worker B takes it and runs the budget's one trial.
    A must decide again (nothing left), not ask a second trial on its stale decision: before
    the fix it did, and the study ran 2 trials on a budget of 1."""
    from hpo.execution.worker import Worker
    from hpo.storage.locks import ClaimLock
    from hpo.study.config import study_config_from_dict

    cfg = study_config_from_dict({
        "name": "lock", "storage": own_pg.url, "sampler": {"name": "random"},
        "pruner": {"name": "none"}, "budget": {"n_trials": 1},
        "heartbeat": {"interval": 1, "grace": 3, "max_retry": 0}})

    def objective(trial, config, should_stop):
        return trial.suggest_float("x", 0, 1)

    a = Worker(cfg, objective_fn=objective, handle_signals=False, worker_index=0)
    decide, seen = a._decide, []

    def decide_then_restart():
        action = decide()
        if not seen:  # the first decision: the server restarts, B claims and runs meanwhile
            seen.append(action)
            own_pg.restart()
            b = Worker(cfg, objective_fn=objective, handle_signals=False, worker_index=1)
            assert b.run().completed == 1  # B got the lock A still thought it held
        return action

    monkeypatch.setattr(a, "_decide", decide_then_restart)
    summary = a.run()
    assert seen == ["run"] and summary.run == 0
    trials = study_trials("lock", own_pg.url)
    assert [t.state for t in trials] == [TrialState.COMPLETE]
    # the handle itself: held, then not once the server dropped the session
    with ClaimLock(own_pg.url, "other")() as held:
        assert held.still_held()
        own_pg.restart()
        assert not held.still_held()
