"""Workers on a cluster: ``launch --on slurm`` (a submitit job array) and ``--on ray`` (Ray tasks).

Every worker runs the command that a local ``launch`` starts (``python -m hpo.cli worker`` on the
study's JSON definition; the storage URL with its password in the environment only), so that the
workers coordinate only through the study's storage, wherever they run.

SLURM (optional extra ``slurm``: submitit): one array task per worker, each running the worker as
a child process of submitit's job process.  Signals:

- time limit: SLURM sends SIGUSR2 ``signal_delay`` seconds before the limit (``--signal``, set
  by submitit); the worker ignores SIGUSR2 itself, its job process forwards one SIGTERM to it
  (the worker finishes its epoch, saves its training state, re-queues its trial in the study and
  exits), then submitit requeues the array task, which starts a fresh worker that takes up the
  re-queued trial where its state left it.
- ``scancel`` or preemption: SLURM sends SIGTERM to every process of the job; the worker stops
  the same graceful way (its trial re-queued for any other worker); the job process only waits.

Ray (optional extra ``ray``): one Ray task per worker with its share (``num_gpus``, fractions
allowed; ``num_cpus``) running the worker command on its node; the launcher waits for them, and
Ctrl-C cancels the tasks, each stopping its worker gracefully."""

from __future__ import annotations

import logging
import os
import re
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from hpo.execution.launch import worker_command, worker_device, worker_env, worker_spec
from hpo.execution.log import log_env, setup_logging
from hpo.storage.home import mask_url, study_dir
from hpo.study.config import StudyConfig
from hpo.study.create import STORAGE_ENV, create_study, storage_url
from model.errors import ClusterError, ConfigError

_log = logging.getLogger("specopt.cluster")


#: Where ``launch --on`` can start workers.
PLACES = ("local", "slurm", "ray")
#: The default SLURM time limit of one worker job (requeued at the limit, so short is fine).
DEFAULT_TIME = "4:00:00"
#: Seconds before the time limit at which SLURM asks a worker to stop: one epoch and a state save.
SIGNAL_DELAY = 300
#: How many times a worker's array task is requeued at its time limit.
MAX_REQUEUES = 1000
#: Environment variables a Ray worker gets from the launcher (a SLURM job gets all of them).
PASSED_ENV = re.compile(r"^(SPECOPT_\w+|OMP_NUM_THREADS|MKL_NUM_THREADS)$")


@dataclass(frozen=True)
class SlurmOptions:
    """What ``launch --on slurm`` asks of SLURM for each worker."""

    partition: str | None = None
    gpus_per_worker: int = 0
    cpus_per_worker: int | None = None  # default: 1, or 4 with GPUs
    time: str = DEFAULT_TIME  # SLURM's formats: MM, HH:MM:SS, D-HH[:MM[:SS]]
    mem: str | None = None  # e.g. 16G
    sbatch: dict[str, str | bool] = field(default_factory=dict)  # any other sbatch option
    folder: Path | None = None  # submitit's folder (default: $SPECOPT_HOME/<study>/slurm)
    pack: int | str | None = None  # each worker's --pack


@dataclass(frozen=True)
class RayOptions:
    address: str = "auto"  # auto, HOST:PORT or ray://HOST:PORT
    gpus_per_worker: float = 0
    cpus_per_worker: float | None = None  # default: 1
    pack: int | str | None = None  # each worker's --pack


def cpus_for(gpus: float, cpus: float | None) -> float:
    return cpus if cpus is not None else (4 if gpus else 1)


def parse_sbatch(items: list[str]) -> dict[str, str | bool]:
    """``--sbatch KEY=VALUE`` (or a bare ``KEY`` for a flag such as ``requeue``) as a dict."""
    out: dict[str, str | bool] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip().lstrip("-")
        if not key or (sep and not value.strip()):
            raise ConfigError(f"--sbatch {item!r}: expected KEY=VALUE (an sbatch option without "
                              "its dashes, e.g. account=myproj, qos=long, constraint=a100) or KEY")
        out[key] = value.strip() if sep else True
    return out


def time_minutes(text: str) -> int:
    """A SLURM time limit in whole minutes (rounded up): ``MM``, ``MM:SS``, ``HH:MM:SS``,
    ``D-HH``, ``D-HH:MM``, ``D-HH:MM:SS``."""
    m = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", text.strip())
    if not m:
        raise ConfigError(f"--time {text!r}: expected minutes or SLURM's HH:MM:SS / D-HH:MM:SS")
    days, a, b, c = m.groups()
    if days is not None:  # D-HH[:MM[:SS]]
        seconds = int(days) * 86400 + int(a) * 3600 + int(b or 0) * 60 + int(c or 0)
    elif c is not None:  # HH:MM:SS
        seconds = int(a) * 3600 + int(b) * 60 + int(c)
    elif b is not None:  # MM:SS
        seconds = int(a) * 60 + int(b)
    else:
        seconds = int(a) * 60
    if seconds <= 0:
        raise ConfigError(f"--time {text!r}: must be positive")
    return -(-seconds // 60)


def check_storage(url: str, nodes: int, where: str) -> None:
    """A study stored in a file on this machine (SQLite) can be shared by workers on one node
    only: refused when ``where`` may place workers on ``nodes`` > 1 nodes, a warning otherwise."""
    kind = url.split(":", 1)[0]
    if kind not in ("sqlite", "journal"):
        return
    shown = mask_url(url)
    if kind == "sqlite" and nodes > 1:
        raise ClusterError(
            f"the study's storage {shown} is a SQLite file, and {where} may place workers on "
            f"{nodes} nodes, which cannot share it safely: use a database server (--storage "
            "postgresql+psycopg://USER@HOST/DB, password in ~/.pgpass or $SPECOPT_STORAGE), or "
            "restrict the workers to one node (e.g. --sbatch nodelist=NODE)")
    if nodes > 1:
        _log.warning(f"the study's storage {shown} is a file: every node must see it on a shared "
                     "file system with working file locks (a database server is safer)")
    else:
        _log.warning(f"the study's storage {shown} is a file on this machine: fine on this "
                     f"single-node {where}; use PostgreSQL once workers run on several nodes")


def _prepare(config: StudyConfig) -> tuple[str, str]:
    """Create (or join) the study once here, as a local launch does: storage and definition
    errors show before anything is submitted.  Returns the storage URL and the workers' study
    definition (JSON, without the password)."""
    url = storage_url(config)
    create_study(config, url)
    return url, worker_spec(config, url)


def _run_worker_process(spec: str, index: int, threads: int, device: str,
                        pack: int | str | None = None, *,
                        ignore: tuple[int, ...] = ()) -> subprocess.Popen:
    """The worker command on this node, on ``spec`` (JSON text written to a private temp file
    that the worker reads at start); signals in ``ignore`` are ignored by the worker."""
    url = os.environ.get(STORAGE_ENV) or ""
    fd, path = tempfile.mkstemp(prefix="specopt-worker-", suffix=".json")
    with os.fdopen(fd, "w") as f:
        f.write(spec)
    cmd = worker_command(path, index=index, threads=threads, device=device, storage=url,
                         pack=pack)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    old = {s: signal.signal(s, signal.SIG_IGN) for s in ignore}  # inherited through exec
    try:
        proc = subprocess.Popen(cmd, env=env)
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    proc.spec_path = path  # type: ignore[attr-defined]  # removed when the worker has ended
    return proc


def _cleanup(proc: subprocess.Popen) -> None:
    try:
        os.unlink(proc.spec_path)  # type: ignore[attr-defined]
    except OSError:
        pass


def _submitit():
    try:
        import submitit
    except ImportError:
        raise ClusterError("--on slurm needs submitit: pip install 'specopt[slurm]' (or pip "
                           "install submitit)") from None
    return submitit


class SlurmWorker:
    """One worker as a submitit job (pickled into the job folder: no password in it).  Runs the
    worker command as a child process and wires SLURM's signals to its graceful stop."""

    def __init__(self, spec: str, index: int, threads: int, device: str,
                 pack: int | str | None = None) -> None:
        self.spec, self.index, self.threads, self.device = spec, index, threads, device
        self.pack = pack

    def __call__(self) -> str:
        setup_logging()  # this job process's lines as the worker's (level from the environment)
        usr = signal.SIGUSR2  # submitit's time-limit signal (``--signal=USR2@delay``)
        submitit_handler = signal.getsignal(usr)
        # SLURM signals every process of the job: the worker ignores the time-limit signal
        # (this process forwards one SIGTERM for it) and gets SIGTERM (scancel) directly
        proc = _run_worker_process(self.spec, self.index, self.threads, self.device, self.pack,
                                   ignore=(usr,))
        seen: dict[str, int] = {}

        def on_time_limit(signum, frame):
            if "limit" not in seen and proc.poll() is None:
                _log.warning(f"worker {self.index}: time limit near: stopping the worker after "
                             "its epoch, then requeueing this job")
                proc.send_signal(signal.SIGTERM)
            seen["limit"] = signum

        def on_term(signum, frame):  # scancel, preemption: the worker got it too
            _log.warning(f"worker {self.index}: {signal.Signals(signum).name}: waiting for the "
                         "worker to finish its epoch and re-queue its trial")
            seen["term"] = signum

        signal.signal(usr, on_time_limit)
        signal.signal(signal.SIGTERM, on_term)
        try:
            code = proc.wait()
        finally:
            if proc.poll() is None:
                proc.kill()
            _cleanup(proc)
        if "limit" in seen and callable(submitit_handler):
            # submitit: checkpoint() below, then scontrol requeue, and exit
            signal.signal(usr, submitit_handler)
            submitit_handler(seen["limit"], None)
        if code and "term" not in seen:
            raise RuntimeError(f"worker {self.index} exited with status {code}")
        return f"worker {self.index} exited with status {code}"

    def checkpoint(self, *args, **kwargs):
        """Requeued at the time limit: a fresh worker (the study holds all the state)."""
        from submitit.helpers import DelayedSubmission

        return DelayedSubmission(SlurmWorker(self.spec, self.index, self.threads, self.device,
                                             self.pack))


def slurm_nodes(partition: str | None) -> int:
    """Nodes SLURM may place a job on: those of ``partition``, else of the default partition."""
    cmd = ["sinfo", "-h", "-N", "-o", "%N %P"]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError) as err:
        detail = getattr(err, "stderr", None) or err
        raise ClusterError(f"SLURM does not answer (sinfo: {str(detail).strip()}); is this a "
                           "SLURM login node? (a single-node test cluster: .ci/slurm-up.sh)") \
            from None
    pairs = [line.split()[:2] for line in out.splitlines() if len(line.split()) >= 2]
    if partition is None:  # the default partition is starred
        default = [node for node, part in pairs if part.endswith("*")]
        nodes = set(default) if default else {node for node, _ in pairs}
    else:
        nodes = {node for node, part in pairs if part.rstrip("*") == partition}
    if not nodes:
        raise ClusterError(f"SLURM knows no partition {partition!r} (sinfo lists them)"
                           if partition else "SLURM lists no node (sinfo)")
    return len(nodes)


def slurm_folder(config: StudyConfig, options: SlurmOptions) -> Path:
    return Path(options.folder) if options.folder else study_dir(config.name) / "slurm"


def submit_slurm(config: StudyConfig, workers: int, options: SlurmOptions) -> list:
    """Submit ``workers`` workers on ``config`` as one SLURM job array; returns submitit's jobs.
    The storage URL reaches the jobs through the environment (sbatch exports it)."""
    if workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {workers}")
    submitit = _submitit()
    limit = time_minutes(options.time)
    check_storage(storage_url(config), slurm_nodes(options.partition), "SLURM")
    url, spec = _prepare(config)
    folder = slurm_folder(config, options)
    folder.mkdir(parents=True, exist_ok=True)
    gpus = options.gpus_per_worker
    cpus = int(cpus_for(gpus, options.cpus_per_worker))
    executor = submitit.SlurmExecutor(folder=folder, max_num_timeout=MAX_REQUEUES)
    params: dict = {"job_name": f"specopt-{config.name}", "time": limit, "cpus_per_task": cpus,
                    "ntasks_per_node": 1, "nodes": 1,
                    # one epoch and a state save before the limit, even on short limits
                    "signal_delay_s": min(SIGNAL_DELAY, limit * 60 // 4),
                    "additional_parameters": dict(options.sbatch)}
    if options.partition:
        params["partition"] = options.partition
    if gpus:
        params["gpus_per_node"] = gpus
    if options.mem:
        params["mem"] = options.mem
    executor.update_parameters(**params)
    device = worker_device(config.train.device, gpus)
    saved = {k: os.environ.get(k) for k in (STORAGE_ENV, *log_env())}
    os.environ.update({**worker_env(url), **log_env()})  # sbatch passes its environment on
    try:
        with executor.batch():
            jobs = [executor.submit(SlurmWorker(spec, i, cpus, device, options.pack))
                    for i in range(workers)]
    except Exception as err:
        raise ClusterError(f"sbatch failed: {str(err).strip().splitlines()[-1]}") from None
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    _log.info(f"submitted {workers} worker(s) of {config.name} as SLURM job array "
              f"{jobs[0].job_id.split('_')[0]} (logs: {folder})")
    return jobs


def slurm_running(job_ids: list[str]) -> set[str]:
    """The jobs (``ARRAY_TASK``) SLURM still lists (pending, running, requeued)."""
    arrays = sorted({j.split("_")[0] for j in job_ids})
    out = subprocess.run(["squeue", "-h", "-r", "-o", "%i", "-j", ",".join(arrays)],
                         capture_output=True, text=True, timeout=60).stdout
    return {line.strip() for line in out.splitlines() if line.strip()} & set(job_ids)


def wait_slurm(jobs: list, poll: float = 5.0) -> int:
    """Wait until SLURM lists none of ``jobs`` (requeues included); returns the worst exit
    status: 0 when every worker ended well, 1 when one failed or ended without a result
    (cancelled, killed)."""
    ids = [j.job_id for j in jobs]
    while slurm_running(ids):
        time.sleep(poll)
    worst = 0
    for job in jobs:
        result = job.paths.result_pickle
        if not result.exists():
            _log.warning(f"SLURM job {job.job_id} ended without a result (cancelled or killed): "
                         f"see {job.paths.stderr}")
            worst = 1
            continue
        try:
            _log.info(f"SLURM job {job.job_id}: {job.result()}")
        except Exception as err:
            _log.warning(f"SLURM job {job.job_id} failed: {str(err).strip().splitlines()[0]} "
                         f"(see {job.paths.stderr})")
            worst = 1
    return worst


def _ray():
    try:
        import ray
    except ImportError:
        raise ClusterError("--on ray needs Ray: pip install 'specopt[ray]' (or pip install "
                           "'ray>=2.9')") from None
    return ray


def ray_worker(spec: str, index: int, threads: int, device: str,
               pack: int | str | None = None) -> int:
    """A Ray task: the worker command on this node; a cancelled task stops its worker
    gracefully (SIGTERM: the epoch ends, the trial is re-queued)."""
    proc = _run_worker_process(spec, index, threads, device, pack)
    try:
        return proc.wait()
    except KeyboardInterrupt:  # ray.cancel
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout=600)
        finally:
            if proc.poll() is None:
                proc.kill()
    finally:
        _cleanup(proc)


def _check_reachable(address: str, timeout: float = 10.0) -> None:
    """A HOST:PORT (or ray://HOST:PORT) that nothing answers on is refused at once (Ray itself
    would wait for it for ever)."""
    m = re.fullmatch(r"(?:ray://)?\[?([^\]]+?)\]?:(\d+)", address.strip())
    if not m:
        return  # auto, or a form Ray resolves itself
    host, port = m.group(1), int(m.group(2))
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as err:
        raise ClusterError(f"cannot connect to Ray at {address!r}: nothing answers there "
                           f"({err.strerror or err}); start one: ray start --head") from None


def launch_ray(config: StudyConfig, workers: int, options: RayOptions) -> int:
    """Run ``workers`` workers on ``config`` as Ray tasks on the cluster at ``options.address``
    and wait for them; returns the worst exit status."""
    if workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {workers}")
    ray = _ray()
    url = storage_url(config)
    env = {k: v for k, v in os.environ.items() if PASSED_ENV.match(k)}
    env |= {**worker_env(url), **log_env()}
    _check_reachable(options.address)
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")  # every worker's own log lines
    try:
        ray.init(address=options.address, runtime_env={"env_vars": env},
                 log_to_driver=True, logging_level=logging.WARNING)
    except Exception as err:  # ConnectionError, RuntimeError: no cluster there
        raise ClusterError(f"cannot connect to Ray at {options.address!r}: "
                           f"{str(err).strip().splitlines()[0]} (start one: ray start --head)") \
            from None
    try:
        nodes = sum(1 for n in ray.nodes() if n.get("Alive"))
        check_storage(url, nodes, "Ray")
        url, spec = _prepare(config)
        gpus = options.gpus_per_worker
        cpus = cpus_for(gpus, options.cpus_per_worker)
        task = ray.remote(ray_worker).options(num_cpus=cpus, num_gpus=gpus, max_retries=0)
        device = worker_device(config.train.device, gpus)
        refs = [task.remote(spec, i, max(1, int(cpus)), device, options.pack)
                for i in range(workers)]
        _log.info(f"started {workers} worker(s) of {config.name} as Ray tasks "
                  f"({cpus:g} CPU, {gpus:g} GPU each) on {nodes} node(s)")
        return _wait_ray(ray, refs)
    finally:
        ray.shutdown()


def _wait_ray(ray, refs: list) -> int:
    """Wait for the tasks; the first SIGINT/SIGTERM cancels them (each worker stops after its
    epoch), a second one kills them."""
    signals_seen = 0

    def cancel(signum, frame):
        nonlocal signals_seen
        signals_seen += 1
        _log.warning(f"{signal.Signals(signum).name}: stopping the Ray workers"
                     + (" at once" if signals_seen > 1 else " after their epoch"))
        for r in refs:
            ray.cancel(r, force=signals_seen > 1)

    old = {s: signal.signal(s, cancel) for s in (signal.SIGINT, signal.SIGTERM)}
    codes: list[int] = []
    try:
        pending = list(refs)
        while pending:
            done, pending = ray.wait(pending, num_returns=1, timeout=1.0)
            for r in done:
                try:
                    codes.append(int(ray.get(r)))
                except Exception as err:  # cancelled, or the node died
                    _log.warning(f"a Ray worker ended with {type(err).__name__}")
                    codes.append(1)
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    return max(codes, key=abs) if codes else 0

