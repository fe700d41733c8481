"""``launch``: N local worker processes on one study, one GPU each when there are GPUs."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import tempfile
import time

from hpo.execution.log import log_env
from hpo.execution.objective import training_data
from hpo.storage.home import mask_url
from hpo.study.config import StudyConfig, config_json
from hpo.study.create import STORAGE_ENV, create_study, storage_url

_log = logging.getLogger("specopt.launch")


def gpu_count() -> int:
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) == "":
        return 0
    try:
        import torch

        return torch.cuda.device_count() if torch.cuda.is_available() else 0
    except Exception:  # a broken CUDA install: run on CPUs
        return 0


def worker_device(configured: str, gpus: float) -> str:
    """The device a worker trains on (its ``--device``): the configured one (the study's
    ``[train] device``), or for ``"auto"`` CUDA where the worker has GPUs (a share of one too),
    else the CPU."""
    return ("cuda" if gpus else "cpu") if configured == "auto" else configured


def worker_plan(workers: int, gpus: int | None = None, cores: int | None = None,
                device: str = "auto") -> list[dict]:
    """Environment per worker: ``CUDA_VISIBLE_DEVICES`` (one GPU each, round robin when there are
    more workers than GPUs; empty without GPUs), the CPU threads it may use and its device
    (:func:`worker_device` of ``device``, the study's)."""
    if workers < 1:
        raise ValueError(f"--workers must be >= 1, got {workers}")
    gpus = gpu_count() if gpus is None else gpus
    cores = cores or os.cpu_count() or 1
    threads = max(1, cores // workers)
    plan = []
    for i in range(workers):
        env = {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
               "CUDA_VISIBLE_DEVICES": str(i % gpus) if gpus else ""}
        plan.append({"index": i, "threads": threads, "device": worker_device(device, gpus),
                     "env": env})
    return plan


def warm_cache(config: StudyConfig) -> None:
    """Prepare the training data once, before the workers start: the first use of a dataset
    parses the QM9 geometries and computes Coulomb matrices, which N workers would otherwise all
    do at once (N times the memory).  Spectra for other sigma / Np are cheap and made by the
    workers."""
    space = config.space
    subsets = space["subset"].values() if "subset" in space and space["subset"].kind != "range" \
        else [None]
    sigma = config.sigma_values()[0]
    n_points = space["n_points"].bounds()[0] if space["n_points"].kind == "range" else \
        space["n_points"].values()[0]
    for subset in subsets:
        training_data(config.train.dataset, sigma, int(n_points), config.train.e_min,
                      config.train.e_max, subset)


def worker_command(spec: str, *, index: int, threads: int, device: str, storage: str,
                   pack: int | str | None = None) -> list[str]:
    """The command line of one worker (``python -m hpo.cli worker``) on a study definition.
    A storage URL with a password is left out (it goes in the environment: :func:`worker_env`),
    so that ``ps`` never shows it. ``pack``: the worker's ``--pack`` (None: none)."""
    where = ["--storage", storage] if mask_url(storage) == storage else []
    packing = ["--pack", str(pack)] if pack is not None else []
    return [sys.executable, "-m", "hpo.cli", "worker", spec, *where,
            "--worker-index", str(index), "--num-threads", str(threads), "--device", device,
            *packing]


def worker_spec(config: StudyConfig, url: str) -> str:
    """The study definition every worker gets (JSON): exactly ``config``, its storage URL without
    the password (that comes by :func:`worker_env`)."""
    return config_json(config.override({"storage": mask_url(url)}))


def worker_env(storage: str) -> dict[str, str]:
    """The environment that gives a worker the storage URL (with its password)."""
    return {STORAGE_ENV: storage}


def launch(config: StudyConfig, workers: int, *, gpus: int | None = None,
           cores: int | None = None, pack: int | str | None = None) -> int:
    """Start ``workers`` worker processes on ``config`` (the final definition, with any
    command-line changes applied) and wait for them; returns the worst exit code.

    SIGINT/SIGTERM are forwarded once to every worker (each finishes its epoch, fails and
    re-queues its trial, and exits); a second signal kills them.
    """
    url = storage_url(config)
    if config.train.device != "auto":  # a device this machine lacks would fail every trial
        from model.device import resolve_device  # torch: kept out of hpo's import

        resolve_device(config.train.device)
    create_study(config, url)  # storage and definition errors show here, once
    _log.info(f"preparing the training data of {config.name} once for all workers")
    warm_cache(config)
    # the workers get exactly this definition, as JSON
    fd, spec = tempfile.mkstemp(prefix=f"specopt-{config.name}-", suffix=".json")
    with os.fdopen(fd, "w") as f:  # no password in the file: the workers get it by worker_env
        f.write(worker_spec(config, url))
    procs: list[subprocess.Popen] = []
    try:
        return _run(config, workers, gpus, cores, url, spec, procs, pack)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
        os.unlink(spec)


def _run(config, workers, gpus, cores, url, spec, procs, pack=None) -> int:
    for w in worker_plan(workers, gpus, cores, config.train.device):
        cmd = worker_command(spec, index=w["index"], threads=w["threads"], device=w["device"],
                             storage=url, pack=pack)
        # log_env: the workers log (and show bars) as this command was told (-q/-v/--log-file)
        env = {**os.environ, **w["env"], **worker_env(url), **log_env()}
        # a new session: a terminal's Ctrl-C reaches only this process, which forwards it once
        procs.append(subprocess.Popen(cmd, env=env, start_new_session=True))
        _log.info(f"worker {w['index']}: pid {procs[-1].pid}, {w['device']}"
                  + (f" {w['env']['CUDA_VISIBLE_DEVICES']}" if w["device"] == "cuda" else "")
                  + f", {w['threads']} thread(s)")

    signals_seen = 0

    def forward(signum, frame):
        nonlocal signals_seen
        signals_seen += 1
        for p in procs:
            if p.poll() is None:
                try:
                    p.send_signal(signum if signals_seen == 1 else signal.SIGKILL)
                except ProcessLookupError:
                    pass

    old = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        while any(p.poll() is None for p in procs):
            time.sleep(0.2)
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    codes = [p.returncode for p in procs]
    return max(codes, key=abs) if codes else 0

