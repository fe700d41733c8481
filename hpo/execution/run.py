"""A worker process's entry: :func:`run_worker` runs the plain :class:`Worker` or, with
``pack``, a :class:`hpo.execution.packed.PackedWorker` (which builds on the plain one)."""

from __future__ import annotations

from typing import Any

from hpo.execution.worker import Worker, WorkerSummary
from hpo.study.config import StudyConfig

__all__ = ["run_worker"]


def run_worker(config: StudyConfig, **options: Any) -> WorkerSummary:
    """Run trials of ``config``'s study until its budget is spent (see :mod:`hpo.execution.worker`).

    ``options`` are :class:`Worker`'s (storage, n_trials, timeout, worker_index, objective_fn,
    poll_interval, handle_signals, max_errors_in_a_row); the device and CPU threads are the
    study's ``[train]`` settings.
    ``objective_fn(trial, config, should_stop=...)`` replaces the training objective (benchmarks
    and tests of the worker machinery).  Returns what this worker did.  A trial that raises an
    unexpected error is marked FAIL (its ``failure`` attribute says why) and the worker goes on;
    ``max_errors_in_a_row`` such trials in a row stop it with :class:`TrialError`.
    ``pack``: train up to that many trials at once as one batched model (``"auto"``: measured
    on the device, the plain worker when packs are not faster; None or 1: one trial at a
    time), see :mod:`hpo.execution.packed`.
    """
    pack = options.pop("pack", None)
    if pack is not None and pack != 1:
        # torch: kept out of hpo's import (packed trains)
        from hpo.execution.packed import resolve_pack, run_packed_worker

        slots = resolve_pack(config, pack)
        if slots > 1:  # auto measured 1: packs are slower here than the plain worker
            return run_packed_worker(config, pack=slots, **options)
    return Worker(config, **options).run()
