"""Chaos: N real workers on one small grid study, a share of them SIGKILLed every few seconds.

Killed workers are restarted at once (as a cluster's scheduler would).  When the study is done,
prints what the faults cost: trials completed, trials stuck (RUNNING or WAITING at the end), grid
points lost (never COMPLETE) or run twice (COMPLETE more than once), epochs trained against
epochs needed (the lost work, per kill and against the save interval), and the wall time against
the same study run without faults.

    python -m bench.chaos                                  # SQLite, 4 workers, 30 % killed
    python -m bench.chaos --storage journal --workers 4 --kill-share 0.3 --every 4
    python -m bench.chaos --storage postgresql --postgres postgresql+psycopg://u@host/db

Each worker trains tiny real trainings (``--subset`` molecules, ``--epochs`` epochs, 1 thread,
CPU); heartbeat every 1 s, grace 3 s; the training state is saved every ``--save-interval`` s.
Bounded by ``--timeout`` seconds per run (two runs: with and without faults).
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path

from model.contract import LOSSES
from tests.support import start_worker, study_trials, write_study

DEFAULT_PG = os.environ.get("SPECOPT_TEST_POSTGRES_URL",
                            "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def _study(folder: Path, storage: str, pg: str, args, tag: str) -> tuple[Path, str, str]:
    name = f"chaos-{tag}-{uuid.uuid4().hex[:6]}"
    url = {"sqlite": f"sqlite:///{folder / f'{tag}.db'}",
           "journal": f"journal:///{folder / f'{tag}.log'}", "postgresql": pg}[storage]
    path = write_study(folder / f"{tag}.toml", name, storage=url, heartbeat=(1, 3),
                       artifacts=folder / f"art-{tag}",
                       space={"loss": LOSSES[:args.grid], "epochs": args.epochs,
                              "subset": args.subset, "lr": 1e-4})
    text = path.read_text().replace("grace = 3\n", f"grace = 3\nmax_retry = {args.max_retry}\n")
    path.write_text(text + f"[resume]\nsave_interval = {args.save_interval}\n")
    return path, name, url


def _run(path: Path, name: str, url: str, args, kill: bool, folder: Path) -> dict:
    rng = random.Random(args.seed)
    logs = [folder / f"{name}-w{i}.log" for i in range(args.workers)]
    procs = [start_worker(path, index=i, log=logs[i]) for i in range(args.workers)]
    kills = restarts = 0
    start = time.monotonic()
    next_kill = start + args.every
    try:
        while time.monotonic() - start < args.timeout:
            if all(p.poll() is not None for p in procs):
                break
            now = time.monotonic()
            if kill and now >= next_kill:
                alive = [i for i, p in enumerate(procs) if p.poll() is None]
                n = max(1, round(args.kill_share * args.workers))
                for i in rng.sample(alive, min(n, len(alive))):
                    procs[i].send_signal(signal.SIGKILL)
                    procs[i].wait()
                    kills += 1
                    procs[i] = start_worker(path, index=i, log=logs[i])  # the scheduler restarts it
                    restarts += 1
                next_kill = now + args.every
            time.sleep(0.2)
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGKILL)
                p.wait()
    wall = time.monotonic() - start
    from optuna.trial import TrialState

    from model.contract import TrialAttr

    trials = study_trials(name, url)
    states = Counter(t.state for t in trials)
    complete = Counter(t.params.get("loss") for t in trials if t.state == TrialState.COMPLETE)
    trained = 0
    for t in trials:
        if TrialAttr.EPOCHS_TRAINED in t.user_attrs:
            trained += int(t.user_attrs[TrialAttr.EPOCHS_TRAINED])
        else:  # a killed attempt: the epochs it reported past the state it continued
            resumed = t.user_attrs.get(TrialAttr.RESUMED_FROM) or {}
            trained += max(0, len(t.intermediate_values) - int(resumed.get("epoch", 0)))
    grid = LOSSES[:args.grid]
    for g in grid:
        if complete[g] == 0:  # say why a grid point was lost
            for t in trials:
                if t.params.get("loss") == g:
                    print(f"  lost point {g}: trial {t.number} {t.state.name} status="
                          f"{t.user_attrs.get(TrialAttr.STATUS)} failure="
                          f"{str(t.user_attrs.get(TrialAttr.FAILURE))[:150]} "
                          f"retry_history={t.system_attrs.get('retry_history')}", flush=True)
    from hpo.execution.objective import WORKDIR_PREFIX

    left = list(Path(tempfile.gettempdir()).glob(f"{WORKDIR_PREFIX}{name}-*"))
    return {
        "wall": wall, "kills": kills, "restarts": restarts, "left": len(left),
        "complete": states[TrialState.COMPLETE], "failed": states[TrialState.FAIL],
        "stuck": states[TrialState.RUNNING] + states[TrialState.WAITING],
        "lost": sum(1 for g in grid if complete[g] == 0),
        "twice": sum(1 for g in grid if complete[g] > 1),
        "trained": trained, "needed": len(grid) * args.epochs,
        "exit_codes": [p.returncode for p in procs],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--storage", choices=["sqlite", "journal", "postgresql"], default="sqlite")
    ap.add_argument("--postgres", default=DEFAULT_PG)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--kill-share", type=float, default=0.3)
    ap.add_argument("--every", type=float, default=4.0, help="seconds between kill rounds")
    ap.add_argument("--grid", type=int, default=6, help=f"grid points (at most {len(LOSSES)})")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--subset", type=int, default=200)
    ap.add_argument("--save-interval", type=float, default=0.0)
    ap.add_argument("--max-retry", type=int, default=50,
                    help="retries of a trial whose worker died (the study default, 3, gives up "
                         "on a grid point killed 4 times)")
    ap.add_argument("--timeout", type=float, default=600.0)
    ap.add_argument("--keep", help="a folder for the studies and worker logs (kept)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    import hpo
    from hpo.execution.launch import warm_cache

    with tempfile.TemporaryDirectory(prefix="specopt-chaos-") as tmp:
        folder = Path(args.keep or tmp)  # --keep: the studies and worker logs stay there
        folder.mkdir(parents=True, exist_ok=True)
        results = {}
        for tag, kill in (("calm", False), ("chaos", True)):
            path, name, url = _study(folder, args.storage, args.postgres, args, tag)
            warm_cache(hpo.load_study_config(path))
            results[tag] = _run(path, name, url, args, kill, folder)
            if args.storage == "postgresql":
                import optuna

                optuna.delete_study(study_name=name, storage=url)
    calm, chaos = results["calm"], results["chaos"]
    per_kill = (chaos["trained"] - chaos["needed"]) / max(1, chaos["kills"])
    print(f"storage {args.storage}: {args.workers} workers, {args.kill_share:.0%} killed every "
          f"{args.every:g} s, grid {args.grid} x {args.epochs} epochs, save interval "
          f"{args.save_interval:g} s, max_retry {args.max_retry}")
    print(f"{'':22}{'no faults':>12}{'chaos':>12}")
    rows = [("wall time (s)", "wall", "{:.1f}"), ("workers killed", "kills", "{}"),
            ("trials complete", "complete", "{}"), ("trials failed (killed)", "failed", "{}"),
            ("trials stuck", "stuck", "{}"), ("grid points lost", "lost", "{}"),
            ("grid points run twice", "twice", "{}"), ("epochs needed", "needed", "{}"),
            ("epochs trained", "trained", "{}"), ("trial folders left", "left", "{}")]
    for label, key, fmt in rows:
        print(f"{label:22}{fmt.format(calm[key]):>12}{fmt.format(chaos[key]):>12}")
    print(f"worker exit codes at the end: {calm['exit_codes']} / {chaos['exit_codes']}")
    print(f"lost work: {chaos['trained'] - chaos['needed']} epochs over {chaos['kills']} kills "
          f"({per_kill:.2f} epochs per kill); wall time x{chaos['wall'] / calm['wall']:.2f}")


if __name__ == "__main__":
    main()
