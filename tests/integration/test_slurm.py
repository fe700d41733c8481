"""``specopt launch --on slurm`` against a real single-node SLURM (slurmctld + slurmd + munged,
started by ``.ci/slurm-up.sh``): a study run by a job array, a job cancelled mid-trial
(``scancel``) whose trial another job finishes from its saved state, and the time-limit signal
(SIGUSR2, as SLURM sends it before the limit) stopping the worker gracefully and requeueing the
job, which finishes the trial; ``specopt run --on slurm`` (launch, wait, report).  Without a
SLURM that starts, these tests fail (never skip).

Tiny real studies: 200 molecules, 1 CPU per worker, SQLite (one node) or PostgreSQL.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from optuna.trial import TrialState

from hpo.storage.stale import retried_trial_number
from model.contract import Status, TrialAttr
from tests.support import study_trials, wait_for_running, write_study

pytestmark = [pytest.mark.slow, pytest.mark.slurm,
              pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")]

ROOT = Path(__file__).resolve().parents[2]
UP = f"bash {ROOT / '.ci/slurm-up.sh'}"


def _slurm_answers() -> bool:
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True,
                             timeout=20)
    except (OSError, subprocess.SubprocessError):
        return False
    return out.returncode == 0 and bool(re.search(r"idle|mixed|alloc", out.stdout))


@pytest.fixture(scope="session")
def slurm() -> None:
    """A SLURM that answers: started with .ci/slurm-up.sh when it does not (root, apt)."""
    if _slurm_answers():
        return
    done = subprocess.run(UP, shell=True, capture_output=True, text=True, timeout=600)
    if not _slurm_answers():
        pytest.fail(f"SLURM is needed for this test and did not start; run: {UP}\n"
                    f"{done.stdout}{done.stderr}", pytrace=False)


@pytest.fixture
def cancel_at_end():
    """``cancel_at_end(name)``: the study's SLURM jobs are cancelled after the test, whatever
    happened (a failed test leaves nothing queued)."""
    names: list[str] = []
    yield names.append
    for name in names:
        subprocess.run(["scancel", "-n", f"specopt-{name}"], check=False)


def _launch(study: Path, *args: str, home: Path, command: str = "launch",
            **popen) -> subprocess.Popen:
    """``specopt COMMAND STUDY --on slurm --time 10 ARGS`` (launch or run) in a subprocess."""
    env = {**os.environ, "SPECOPT_HOME": str(home)}
    return subprocess.Popen([sys.executable, "-m", "hpo.cli", command, str(study), "--on",
                             "slurm", "--time", "10", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, **popen)


def _run(study: Path, *args: str, home: Path, timeout: float = 300,
         command: str = "launch") -> tuple[int, str]:
    proc = _launch(study, *args, home=home, command=command)
    try:
        out, _ = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc.returncode, out


def _job_ids(out: str) -> list[str]:
    m = re.search(r"SLURM jobs ([\d_ ]+)", out)
    assert m, out
    return m.group(1).split()


def _gone(job: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        q = subprocess.run(["squeue", "-h", "-r", "-o", "%i", "-j", job.split("_")[0]],
                           capture_output=True, text=True)
        if job not in q.stdout.split():
            return
        time.sleep(1)
    raise TimeoutError(f"SLURM job {job} still listed after {timeout} s")


def _start_requeued_now(job: str, timeout: float = 120) -> None:
    """SLURM holds a requeued job for 2 minutes (its BeginTime), so that its old run's job
    credential has expired when it starts again; the test lets it go sooner, once the old run
    has left the node and a few seconds more. Started at once, it raced slurmd ("Killing
    non-startable batch JobId=48: Job credential revoked" in slurmctld.log) and failed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        q = subprocess.run(["squeue", "-h", "-o", "%T %r", "-j", job], capture_output=True,
                           text=True)
        completing = subprocess.run(["squeue", "-h", "-t", "CG"], capture_output=True,
                                    text=True).stdout.strip()
        if "BeginTime" in q.stdout and not completing:
            time.sleep(REQUEUE_SETTLE)
            subprocess.run(["scontrol", "update", f"JobId={job}", "StartTime=now"], check=True)
            return
        time.sleep(0.5)
    raise TimeoutError(f"SLURM job {job} was not requeued in {timeout} s")


#: Seconds between a requeued run's leaving the node and the test's starting it again.
REQUEUE_SETTLE = 5.0


def _logs(home: Path, name: str) -> str:
    folder = home / name / "slurm"
    return "".join(p.read_text() for p in sorted(folder.glob("*_log.*")))


def _long_trial(tmp_path: Path, name: str, cancel_at_end) -> tuple[Path, str, Path]:
    """A study of one 40-epoch trial on SQLite, long enough to be stopped mid-way: (study
    file, storage URL, SPECOPT_HOME); its SLURM jobs are cancelled after the test."""
    url = f"sqlite:///{tmp_path}/s.db"
    cancel_at_end(name)
    path = write_study(tmp_path / "s.toml", name, storage=url, sampler="random", n_trials=1,
                       artifacts=tmp_path / "art",
                       space={"loss": "rmse", "epochs": 40, "subset": 200})
    return path, url, tmp_path / "home"


def _interrupted_then_resumed(name: str, url: str, running, home: Path) -> None:
    """The trial that was ``running`` was stopped gracefully (FAIL, interrupted) and its retry
    completed from the state it saved (epoch 2 or later), training only the epochs left."""
    failed, retry = study_trials(name, url)
    assert failed.number == running.number and failed.state == TrialState.FAIL, _logs(home, name)
    assert failed.user_attrs[TrialAttr.STATUS] == Status.INTERRUPTED
    assert retry.state == TrialState.COMPLETE, _logs(home, name)
    assert retried_trial_number(retry) == failed.number
    resumed = retry.user_attrs[TrialAttr.RESUMED_FROM]
    assert resumed["trial"] == failed.number and resumed["epoch"] >= 2
    assert retry.user_attrs[TrialAttr.EPOCHS_TRAINED] == 40 - resumed["epoch"]


def test_unknown_partition_is_one_line_before_anything_is_submitted(tmp_path, slurm):
    path = write_study(tmp_path / "s.toml", "nowhere", storage=f"sqlite:///{tmp_path}/s.db",
                       space={"loss": "rmse", "epochs": 1, "subset": 200}, n_trials=1)
    code, out = _run(path, "--partition", "no-such-partition", home=tmp_path / "home")
    assert code != 0 and out.strip() == \
        "error: SLURM knows no partition 'no-such-partition' (sinfo lists them)", out
    assert not (tmp_path / "s.db").exists()  # refused before the study was created


@pytest.mark.postgres
def test_launch_on_slurm_runs_a_study_as_a_job_array(tmp_path, slurm, pg_url, pg_study,
                                                     cancel_at_end):
    """Two workers as one SLURM job array on a PostgreSQL study: --wait returns when both have
    ended, every trial is complete, and both array tasks took part."""
    cancel_at_end(pg_study)
    path = write_study(tmp_path / "s.toml", pg_study, storage=pg_url, sampler="random",
                       n_trials=4, artifacts=tmp_path / "art",
                       space={"loss": ["rmse", "logcosh"], "epochs": 2, "subset": 200})
    code, out = _run(path, "--workers", "2", "--wait", home=tmp_path / "home")
    assert code == 0, out + _logs(tmp_path / "home", pg_study)
    jobs = _job_ids(out)
    assert len(jobs) == 2 and all(re.fullmatch(r"\d+_[01]", j) for j in jobs), out
    assert f"study {pg_study}: 4 complete" in out
    trials = study_trials(pg_study, pg_url)
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 4
    indices = {t.user_attrs[TrialAttr.WORKER]["index"] for t in trials}
    assert indices <= {0, 1} and len(indices) >= 1
    script = (tmp_path / "home" / pg_study / "slurm" / f"{jobs[0].split('_')[0]}_submission.sh")
    text = script.read_text()
    assert "--signal=USR2@" in text and "--array=0-1" in text and "--cpus-per-task=1" in text


def test_scancel_mid_trial_and_another_job_finishes_the_trial(tmp_path, slurm, cancel_at_end):
    """scancel stops the worker gracefully (its epoch ends, its state is saved, the trial is
    re-queued); a second job runs the retry from that state to the end."""
    name = "cancelled"
    path, url, home = _long_trial(tmp_path, name, cancel_at_end)
    code, out = _run(path, "--workers", "1", home=home, timeout=120)
    assert code == 0, out
    [job] = _job_ids(out)
    assert "scancel" in out  # how to stop them, printed
    running = wait_for_running(name, url, min_epochs=2, timeout=180)
    subprocess.run(["scancel", job], check=True)
    _gone(job)
    failed, retry = study_trials(name, url)
    assert failed.number == running.number and failed.state == TrialState.FAIL, _logs(home, name)
    assert retry.state == TrialState.WAITING and retried_trial_number(retry) == failed.number

    code, out = _run(path, "--workers", "1", "--wait", home=home)
    assert code == 0, out + _logs(home, name)
    _interrupted_then_resumed(name, url, running, home)


def test_time_limit_signal_stops_the_worker_and_requeues_its_job(tmp_path, slurm,
                                                                 cancel_at_end):
    """SIGUSR2 (what SLURM sends before the time limit, --signal=USR2@...): the worker finishes
    its epoch and re-queues its trial, submitit requeues the job, and the requeued job (same
    job id, a fresh worker) finishes the trial from its saved state; --wait sees it through."""
    name = "limited"
    path, url, home = _long_trial(tmp_path, name, cancel_at_end)
    launcher = _launch(path, "--workers", "1", "--wait", home=home)
    try:
        running = wait_for_running(name, url, min_epochs=2, timeout=180, procs=[])
        q = subprocess.run(["squeue", "-h", "-o", "%i", "-n", f"specopt-{name}"],
                           capture_output=True, text=True, check=True)
        [job] = q.stdout.split()
        subprocess.run(["scancel", "--signal=USR2", job], check=True)
        _start_requeued_now(job)
        out, _ = launcher.communicate(timeout=300)
    finally:
        if launcher.poll() is None:
            launcher.kill()
    logs = _logs(home, name)
    assert launcher.returncode == 0, out + logs
    assert "Requeued job" in logs, logs
    _interrupted_then_resumed(name, url, running, home)
    assert f"study {name}: 1 complete" in out


def test_run_on_slurm_waits_for_the_jobs_then_writes_the_report(tmp_path, slurm,
                                                                cancel_at_end):
    """``specopt run --on slurm``: the workers as a job array (launch's --on options), the
    command waits for them without --wait, prints the summary and writes the report."""
    url, name = f"sqlite:///{tmp_path}/s.db", "run-on-slurm"
    cancel_at_end(name)
    home, report = tmp_path / "home", tmp_path / "report"
    path = write_study(tmp_path / "s.toml", name, storage=url, sampler="random", n_trials=2,
                       artifacts=tmp_path / "art",
                       space={"loss": ["rmse", "logcosh"], "epochs": 2, "subset": 200})
    code, out = _run(path, "--workers", "2", "--cpus-per-worker", "1", "--out", str(report),
                     home=home, command="run")
    assert code == 0, out + _logs(home, name)
    jobs = _job_ids(out)
    assert len(jobs) == 2 and "follow: specopt status" not in out, out  # it waited
    assert f"study {name}: 2 complete" in out
    assert [t.state for t in study_trials(name, url)] == [TrialState.COMPLETE] * 2
    written = re.search(r"^report: (.+)$", out, re.M)
    assert written and Path(written.group(1)).parent == report, out
    assert name in Path(written.group(1)).read_text()
    assert not subprocess.run(["squeue", "-h", "-n", f"specopt-{name}"], capture_output=True,
                              text=True).stdout.strip()  # nothing left queued
