"""``specopt launch --on ray`` against a real local Ray head (``ray start --head``, started by a
session fixture; it fails, never skips, when Ray cannot start): workers as Ray tasks, each with
its CPU share, running a small study to the end through the study's storage only.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time

import pytest
from optuna.trial import TrialState

from model.contract import TrialAttr
from tests.support import study_trials, write_study

pytestmark = [pytest.mark.slow, pytest.mark.ray,
              pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def ray_head(tmp_path_factory):
    """A Ray head on this machine (2 CPUs, no dashboard); its address, HOST:PORT.  Started with
    ``--block`` so that stopping this one process stops the head it started."""
    ray = os.path.join(os.path.dirname(sys.executable), "ray")
    # the head and its clients (the launch commands) on this machine: no token to share
    old_mode = os.environ.get("RAY_AUTH_MODE")
    os.environ["RAY_AUTH_MODE"] = "disabled"
    port = _free_port()
    log = tmp_path_factory.mktemp("ray") / "head.log"
    cmd = [ray, "start", "--head", f"--port={port}", "--node-ip-address=127.0.0.1",
           "--num-cpus=2", "--num-gpus=0", "--include-dashboard=false",
           "--disable-usage-stats", "--block"]
    try:
        head = subprocess.Popen(cmd, stdout=open(log, "wb"), stderr=subprocess.STDOUT,
                                start_new_session=True)
    except OSError as err:
        pytest.fail(f"Ray is needed for this test ({err}); pip install 'specopt[ray]'",
                    pytrace=False)
    address = f"127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:  # up when a client can list its nodes
        probe = subprocess.run([ray, "status", f"--address={address}"], capture_output=True,
                               text=True)
        if probe.returncode == 0:
            break
        if head.poll() is not None or time.monotonic() > deadline:
            head.kill()
            pytest.fail(f"a local Ray head did not start: {' '.join(cmd)}\n"
                        f"{log.read_text()[-2000:]}{probe.stderr[-1000:]}", pytrace=False)
        time.sleep(1)
    yield address
    head.terminate()  # ray start --block stops its processes on SIGTERM
    try:
        head.wait(timeout=60)
    except subprocess.TimeoutExpired:
        head.kill()
    if old_mode is None:
        os.environ.pop("RAY_AUTH_MODE", None)
    else:
        os.environ["RAY_AUTH_MODE"] = old_mode


def test_launch_on_ray_runs_a_study_with_workers_as_tasks(tmp_path, ray_head):
    """Two workers as Ray tasks (1 CPU each, each packing up to 2 trials) on a SQLite study:
    the launcher waits for both, every trial is complete."""
    url, name = f"sqlite:///{tmp_path}/s.db", "on-ray"
    path = write_study(tmp_path / "s.toml", name, storage=url, sampler="random", n_trials=4,
                       artifacts=tmp_path / "art",
                       space={"loss": ["rmse", "logcosh"], "epochs": 2, "subset": 200})
    proc = subprocess.run([sys.executable, "-m", "hpo.cli", "launch", str(path), "--on", "ray",
                           "--address", ray_head, "--workers", "2", "--cpus-per-worker", "1",
                           "--pack", "2"],
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "SPECOPT_HOME": str(tmp_path / "home")})
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "started 2 worker(s) of on-ray as Ray tasks (1 CPU, 0 GPU each) on 1 node(s)" in out
    assert f"study {name}: 4 complete" in out
    trials = study_trials(name, url)
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 4
    workers = {t.user_attrs[TrialAttr.WORKER]["index"] for t in trials}
    assert workers <= {0, 1}
    assert re.search(r"worker [01]\] packing up to 2 trials", out), out  # --pack passed on
    assert re.search(r"file on this machine: fine on this single-node Ray", out), out


def test_launch_on_ray_without_a_cluster_says_how_to_start_one(tmp_path):
    path = write_study(tmp_path / "s.toml", "no-ray", storage=f"sqlite:///{tmp_path}/s.db",
                       space={"loss": "rmse", "epochs": 1, "subset": 200}, n_trials=1)
    env = {**os.environ, "SPECOPT_HOME": str(tmp_path / "home"), "RAY_ADDRESS": ""}
    proc = subprocess.run([sys.executable, "-m", "hpo.cli", "launch", str(path), "--on", "ray",
                           "--address", f"127.0.0.1:{_free_port()}"], capture_output=True,
                          text=True, timeout=120, env=env)
    assert proc.returncode != 0
    assert "cannot connect to Ray at" in proc.stderr and "ray start --head" in proc.stderr, \
        proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr  # one line, no traceback
