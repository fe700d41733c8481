"""Helpers for tests of studies and workers (tiny real studies, waiting on trial states)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial, TrialState

from hpo.storage import open_storage
from model.contract import TrialAttr


def write_study(path: Path, name: str, *, space: dict, storage: str, sampler: str = "grid",
                pruner: str = "none", n_trials: int | None = None, heartbeat=(1, 3),
                artifacts: Path | None = None, dataset: str | None = None) -> Path:
    """A study TOML (JSON values are valid TOML for strings, numbers and lists)."""
    dataset = dataset if dataset is not None else os.environ.get("SPECOPT_TEST_DATASET")
    lines = [f"name = {json.dumps(name)}", f"storage = {json.dumps(storage)}"]
    if artifacts is not None:
        lines.append(f"artifacts = {json.dumps(str(artifacts))}")
    lines += ["[sampler]", f"name = {json.dumps(sampler)}", "seed = 0",
              "[pruner]", f"name = {json.dumps(pruner)}"]
    if n_trials is not None:
        lines += ["[budget]", f"n_trials = {n_trials}"]
    lines += ["[heartbeat]", f"interval = {heartbeat[0]}", f"grace = {heartbeat[1]}"]
    if dataset:
        lines += ["[train]", f"dataset = {json.dumps(str(dataset))}", 'device = "cpu"']
    else:
        lines += ["[train]", 'device = "cpu"']
    lines.append("[space]")
    lines += [f"{k} = {json.dumps(v)}" for k, v in space.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def start_worker(study_file: Path, *extra: str, index: int = 0, threads: int = 1,
                 log: Path | None = None, env: dict[str, str] | None = None) -> subprocess.Popen:
    """``specopt worker`` in a subprocess (inherits the environment, plus ``env``: e.g.
    ``SPECOPT_FAULT``), as ``launch`` starts it."""
    cmd = [sys.executable, "-m", "hpo.cli", "worker", str(study_file), "--worker-index",
           str(index), "--threads", str(threads), *extra]
    out = open(log, "ab") if log is not None else subprocess.DEVNULL
    return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                            env={**os.environ, **(env or {})})


def run_worker_to_end(study_file: Path, *extra: str, timeout: float = 180, **options) -> int:
    """:func:`start_worker` (same options), wait for it to end and return its exit status; a
    worker still running after ``timeout`` seconds is killed (and the wait raises)."""
    proc = start_worker(study_file, *extra, **options)
    try:
        return proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()


def study_trials(study_name: str, url: str, states=None) -> list[FrozenTrial]:
    """The trials of a study in any storage URL that :func:`hpo.storage.open_storage` takes
    (``journal:///`` too), read without heartbeats."""
    storage = open_storage(url, heartbeat_interval=None)
    return optuna.load_study(study_name=study_name, storage=storage).get_trials(states=states)


def wait_for_running(study_name: str, url: str, *, min_epochs: int = 1, timeout: float = 120,
                     procs=()) -> FrozenTrial:
    """The first RUNNING trial that has reported ``min_epochs`` epochs."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            for t in study_trials(study_name, url, states=(TrialState.RUNNING,)):
                if len(t.intermediate_values) >= min_epochs and TrialAttr.WORKER in t.user_attrs:
                    return t
        except KeyError:  # the study does not exist yet
            pass
        for p in procs:
            if p.poll() is not None:
                raise RuntimeError(f"worker {p.pid} exited with {p.returncode} too early")
        time.sleep(0.2)
    raise TimeoutError(f"no trial of {study_name} reached epoch {min_epochs} in {timeout} s")


def small_study_config(root: Path, name: str, space: dict, n_trials: int, **extra):
    """A small real study (200 molecules, 2 epochs, CPU, SQLite and artifacts under ``root``)."""
    from hpo.config import study_config_from_dict

    return study_config_from_dict({
        "name": name, "storage": f"sqlite:///{root / 'studies.db'}",
        "artifacts": str(root / "artifacts" / name),
        "sampler": extra.pop("sampler", {"name": "random", "seed": 1}), "pruner": {"name": "none"},
        "budget": {"n_trials": n_trials},
        "train": {"dataset": os.environ.get("SPECOPT_TEST_DATASET") or None, "device": "cpu",
                  "num_threads": 1},
        "space": {"n_points": 300, "lr": 1e-3, "epochs": 2, "subset": 200, **space},
        **extra,
    })
