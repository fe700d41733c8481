"""Storage under load: N concurrent worker processes running short dummy objectives.

For each storage (SQLite file, PostgreSQL) and each worker count (8, 32), N processes hammer one
fresh study for a fixed time; each trial sleeps ``--sleep`` seconds and returns a random number.
Two ways of driving the study are compared:

- ``specopt``: ``hpo.run_worker`` (claim lock, heartbeats, budget checks: what real workers do);
- ``optuna``: plain ``study.optimize`` on a storage URL with Optuna's defaults.

Prints trials per second and the errors seen ("database is locked" and the like), as a table.
Trials are counted when they finish inside the measured window: ``--seconds`` after a 1.5 s warm-up
(process set-up and connections).  Bounded: about ``len(storages) * len(workers) * 2 *
(seconds + 4)`` s (about a minute by default).

    python -m bench.storage_load                       # SQLite and PostgreSQL, 8 and 32 workers
    python -m bench.storage_load --postgres URL --workers 8 32 64 --seconds 10
"""

from __future__ import annotations

import argparse
import collections
import datetime
import multiprocessing as mp
import os
import random
import sys
import tempfile
import time
import uuid
from pathlib import Path

DEFAULT_PG = os.environ.get("SPECOPT_TEST_POSTGRES_URL",
                            "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def _classify(err: BaseException) -> str:
    text = f"{type(err).__name__}: {err}".splitlines()[0]
    for key in ("database is locked", "too many clients", "deadlock", "could not serialize",
                "timeout", "UniqueViolation", "IntegrityError"):
        if key.lower() in text.lower():
            return key
    return text[:60]


def _dummy(sleep: float, counter: list | None = None):
    def objective(trial, *args, **kwargs):
        x = trial.suggest_float("x", -10, 10)
        time.sleep(sleep)
        if counter is not None:
            counter[0] += 1
        return x * x + random.random()

    return objective


def _worker(mode: str, url: str, name: str, index: int, seconds: float, sleep: float,
            start_at: float, out: mp.Queue) -> None:
    import logging
    import warnings

    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    logging.getLogger("specopt").setLevel(logging.ERROR)
    warnings.simplefilter("ignore")
    from hpo.execution.run import run_worker
    from hpo.study.config import study_config_from_dict

    errors: collections.Counter = collections.Counter()
    trials = 0
    time.sleep(max(0.0, start_at - time.time()))
    deadline = start_at + seconds
    while time.time() < deadline:
        try:
            if mode == "specopt":
                cfg = study_config_from_dict({
                    "name": name, "storage": url, "sampler": {"name": "random", "seed": 0},
                    "pruner": {"name": "none"}, "budget": {"timeout": 1.0},
                    "heartbeat": {"interval": 5, "grace": 20},
                })
                s = run_worker(cfg, timeout=max(0.05, deadline - time.time()), worker_index=index,
                               objective_fn=_dummy(sleep), handle_signals=False)
                trials += s.run
            else:
                study = optuna.load_study(study_name=name, storage=url,
                                          sampler=optuna.samplers.RandomSampler(seed=index))
                counter = [0]
                study.optimize(_dummy(sleep, counter),
                               timeout=max(0.05, deadline - time.time()))
                trials += counter[0]
        except Exception as err:  # count it and go on, as a real worker restarted by SLURM would
            errors[_classify(err)] += 1
            time.sleep(0.05)
    out.put((index, trials, dict(errors)))


WARMUP = 1.5  # seconds after the start that are not measured (process set-up, connections)


def run_case(mode: str, url: str, workers: int, seconds: float, sleep: float) -> dict:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    name = f"bench-{mode}-{workers}-{uuid.uuid4().hex[:8]}"
    setup_errors = None
    try:
        if mode == "specopt":
            from hpo.study.config import study_config_from_dict
            from hpo.study.create import create_study

            create_study(study_config_from_dict({
                "name": name, "storage": url, "sampler": {"name": "random"},
                "pruner": {"name": "none"}, "budget": {"timeout": 1.0},
                "heartbeat": {"interval": 5, "grace": 20}}))
        else:
            optuna.create_study(study_name=name, storage=url)
    except Exception as err:
        setup_errors = _classify(err)
    if setup_errors:
        return {"trials": 0, "rate": 0.0, "errors": {setup_errors: 1}, "name": name}
    ctx = mp.get_context("fork")
    out = ctx.Queue()
    start_at = time.time() + 1.0  # every process starts together
    procs = [ctx.Process(target=_worker,
                         args=(mode, url, name, i, WARMUP + seconds, sleep, start_at, out))
             for i in range(workers)]
    for p in procs:
        p.start()
    results = []
    for _ in procs:
        try:
            results.append(out.get(timeout=WARMUP + seconds + 60))
        except Exception:
            break
    for p in procs:
        p.join(timeout=10)
        if p.is_alive():
            p.kill()
    storage = optuna.storages.get_storage(url) if mode == "optuna" else None
    window = (datetime.datetime.fromtimestamp(start_at + WARMUP),
              datetime.datetime.fromtimestamp(start_at + WARMUP + seconds))
    try:
        study = optuna.load_study(study_name=name, storage=storage or url)
        finished = sum(1 for t in study.get_trials(deepcopy=False) if t.state.is_finished()
                       and t.datetime_complete and window[0] <= t.datetime_complete < window[1])
        stuck = sum(1 for t in study.get_trials(deepcopy=False)
                    if t.state == optuna.trial.TrialState.RUNNING)
        optuna.delete_study(study_name=name, storage=storage or url)
    except Exception as err:
        finished, stuck = sum(r[1] for r in results), 0
        results.append((-1, 0, {_classify(err): 1}))
    errors: collections.Counter = collections.Counter()
    for _, _, e in results:
        errors.update(e)
    if len(results) < workers:
        errors["worker lost"] += workers - len(results)
    if stuck:
        errors["left RUNNING"] += stuck
    return {"trials": finished, "rate": finished / seconds,
            "errors": dict(errors), "name": name}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, nargs="+", default=[8, 32])
    ap.add_argument("--storages", nargs="+", default=["sqlite", "postgresql"],
                    choices=["sqlite", "postgresql", "journal"])
    ap.add_argument("--modes", nargs="+", default=["specopt", "optuna"],
                    choices=["specopt", "optuna"])
    ap.add_argument("--postgres", default=DEFAULT_PG, help="PostgreSQL URL")
    ap.add_argument("--seconds", type=float, default=2.5, help="load time per case")
    ap.add_argument("--sleep", type=float, default=0.01, help="seconds per dummy trial")
    args = ap.parse_args(argv)

    import hpo.execution.worker  # noqa: F401 - imported once here, inherited by the forked workers

    tmp = Path(tempfile.mkdtemp(prefix="specopt-bench-"))
    rows = []
    for storage in args.storages:
        for workers in args.workers:
            for mode in args.modes:
                if storage == "sqlite":
                    url = f"sqlite:///{tmp / f'{mode}-{workers}.db'}"
                elif storage == "journal":
                    if mode == "optuna":
                        continue
                    url = f"journal:///{tmp / f'{mode}-{workers}.log'}"
                else:
                    url = args.postgres
                t = time.time()
                r = run_case(mode, url, workers, args.seconds, args.sleep)
                errs = ", ".join(f"{k} x{v}" for k, v in sorted(r["errors"].items())) or "none"
                rows.append((storage, str(workers), mode, str(r["trials"]),
                             f"{r['rate']:.1f}", errs))
                print(f"  {storage:10} {workers:3} workers  {mode:8} {r['trials']:6} trials "
                      f"{r['rate']:7.1f}/s  errors: {errs}  ({time.time() - t:.0f} s)",
                      file=sys.stderr, flush=True)
    head = ("storage", "workers", "driver", "trials", "trials/s", "errors")
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]
    print(f"\ntrials finished in {args.seconds:g} s (after {WARMUP:g} s warm-up), dummy trials of "
          f"{args.sleep * 1000:g} ms, "
          f"{os.cpu_count()} CPU cores\n")
    print("| " + " | ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in rows:
        print("| " + " | ".join(x.ljust(w) for x, w in zip(r, widths, strict=True)) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
