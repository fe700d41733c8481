"""Packed workers (``specopt worker STUDY --pack K``): up to K trials trained at once, as one
batched model per compatible group (:mod:`model.packed`).

Each trial runs the ordinary path in a thread of its own: :meth:`Worker._run_trial` (heartbeat,
``tell`` and every outcome's handling: pruned, diverged, interrupted and re-queued, failed) around
:func:`hpo.execution.objective.objective` (attributes, per-epoch reports and pruning, saved state
and
resume, artifacts).  Only ``model.train`` is replaced: the trial's run joins a pack and its
epochs are trained by this worker's main thread together with the other members'.  The threads
take turns (one at a time, handing over at fixed points), so the numbers are those of
:func:`model.packed.train_packed` and the database sees one writer at a time, as with one trial.

The main thread: claims trials (under the study's lock, as a lone worker) while slots are free,
trains one epoch of every pack, hands each member its epoch (test evaluation, report to Optuna,
pruning, state save), and refills at once the slot of a trial that finished, was pruned or
failed (fresh seeded weights, or the saved state of a resumed trial).  A trial that cannot share
an existing pack (:func:`model.packed.pack_key`: Np, batch size, network shape, training
molecules) starts a pack of its own; the K slots are shared by all packs.

SIGINT/SIGTERM: no new trials; every member stops after its current epoch (state saved, marked
FAIL and re-queued, as a lone worker's trial). An infrastructure error stops the worker after
the current epoch, its other members re-queued.

``--pack auto`` (:func:`auto_pack`): K is measured, within a bound (on CUDA one slot per 1 GiB
of free device memory, at most 32, where a member needs tens of MB: weights, AdamW state and one
batch's activations; on the CPU min(8, cores)).  A few training steps of the study's network
shape (:func:`timing_config`) are timed on the worker's device for K = 1 (a lone trial,
:class:`model.Trainer`: the plain worker's path), 2, 4, ... (a :class:`model.packed.Pack`),
doubling while the trial-steps per second (K / seconds per step, proportional to trial-epochs
per second) grow and the next K's steps (about twice as long) fit in ``AUTO_BUDGET_S`` seconds
of steps in all (a step that long fills the device already).  The K with the most trial-steps
per second wins, a larger K only when at least ``AUTO_MARGIN`` faster; the measurement is
logged and cached per process.  K = 1 runs the plain :class:`Worker`.  On a CPU packs are
usually slower than the lone trial (``bench/pack_speed.py``), so auto gives 1 there."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import optuna
from optuna.trial import TrialState

from data_prep import TEST, TRAIN, VALIDATION, TrainingData
from hpo.execution.objective import objective
from hpo.execution.worker import Worker, WorkerSummary
from hpo.study.config import StudyConfig
from model.config import TrainConfig
from model.contract import MATRIX_SIZE, N_LEVELS
from model.device import available_cpus, resolve_device, set_threads
from model.errors import ConfigError, TrainingFailed, TrialError, WorkerInterrupted
from model.packed import SHAPE_FIELDS, Pack
from model.trainer import Trainer

_log = logging.getLogger("specopt.worker")


__all__ = ["MAX_AUTO_PACK", "PackedWorker", "auto_pack", "memory_slots", "parse_pack",
           "resolve_pack", "run_packed_worker", "step_seconds", "timing_config"]
#: The most slots ``--pack auto`` gives.
MAX_AUTO_PACK = 32
#: Free device memory per slot of ``--pack auto`` on CUDA.
AUTO_BYTES_PER_SLOT = 1 << 30
#: ``--pack auto``: steps timed per K (after a warm-up step), seconds of steps after which it
#: stops doubling K, and how much faster a larger K must be to be chosen.
AUTO_STEPS = 2
AUTO_BUDGET_S = 2.0
AUTO_MARGIN = 0.05
#: Seconds between the main thread's looks at a signal while a member works.
_POLL = 0.2
_measured: dict[tuple, int] = {}  # auto_pack's answers in this process


def parse_pack(value: str | int | None) -> int | str | None:
    """``--pack`` as given: None (no packing), a positive int, or "auto"."""
    if value is None:
        return None
    if isinstance(value, str) and value.strip().lower() == "auto":
        return "auto"
    try:
        k = int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"--pack {value!r}: expected a number of trials or 'auto'") from None
    if k < 1:
        raise ConfigError(f"--pack {k}: must be at least 1")
    return k


def memory_slots(device: Any) -> int:
    """The most slots ``--pack auto`` considers on ``device`` (a torch.device): its memory
    bound (see the module docstring)."""
    import torch

    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return max(1, min(MAX_AUTO_PACK, int(free // AUTO_BYTES_PER_SLOT)))
    return max(1, min(8, available_cpus()))


def timing_config(study: StudyConfig) -> TrainConfig:
    """A trial of ``study`` as ``--pack auto`` times it: each field that shapes a pack's step
    (:data:`model.packed.SHAPE_FIELDS`) at its fixed value or first choice (a range: its low
    end), the study's ``[train]`` settings (device and threads too); the rest (sigma, loss,
    ...) at TrainConfig's defaults: they do not change a step's cost."""
    params: dict[str, Any] = {}
    for name in SHAPE_FIELDS:
        spec = study.space.get(name)
        if spec is not None:
            params[name] = spec.bounds()[0] if spec.kind == "range" else spec.values()[0]
    return TrainConfig(**study.train_settings(params))


def _timing_data(config: TrainConfig, steps: int) -> TrainingData:
    """Random matrices and spectra of ``config``'s shapes: ``steps`` training batches, one test
    and one validation molecule (a step's cost does not depend on the values)."""
    n = steps * config.batch_size + 2
    rng = np.random.default_rng(0)
    levels = np.sort(rng.uniform(config.e_min, config.e_max, (n, N_LEVELS)), 1)
    return TrainingData(
        coulomb=rng.random((n, MATRIX_SIZE, MATRIX_SIZE), dtype=np.float32),
        spectra=rng.random((n, config.n_points), dtype=np.float32),
        levels=levels.astype(np.float32),
        split=np.array([TRAIN] * (n - 2) + [TEST, VALIDATION], np.uint8), index=np.arange(n),
        sigma=config.sigma, n_points=config.n_points, e_min=config.e_min, e_max=config.e_max,
        fingerprint="pack-timing", provenance={"synthetic": True})


def step_seconds(config: TrainConfig, k: int) -> float:
    """Seconds of one training step of ``k`` trials of ``config``'s shape on its device: a lone
    :class:`model.Trainer` for 1, a :class:`model.packed.Pack` of ``k`` (members of other seeds)
    otherwise; ``AUTO_STEPS`` steps timed after one warm-up step (oneDNN primitives, cuDNN
    autotuning, the capture of a CUDA graph)."""
    import torch

    data = _timing_data(config, AUTO_STEPS)
    epoch: Callable[[int | None], object]
    if k == 1:
        epoch = Trainer(config, data).train_epoch
    else:
        pack = Pack()
        for i in range(k):
            pack.start(config.model_copy(update={"seed": config.seed + i}), data)
        epoch = pack.train_epoch
    cuda = resolve_device(config.device).type == "cuda"

    def timed(batches: int | None) -> float:
        begin = time.perf_counter()
        epoch(batches)
        if cuda:
            torch.cuda.synchronize()
        return time.perf_counter() - begin

    timed(1)
    return timed(None) / AUTO_STEPS


def auto_pack(config: TrainConfig, *, step_time: Callable[[TrainConfig, int], float] | None
              = None, limit: int | None = None) -> int:
    """The K of ``--pack auto`` for trials shaped as ``config`` (:func:`timing_config`), on its
    device: measured (see the module docstring), logged, cached per process.
    ``step_time(config, k)``: seconds per step of a pack of ``k`` (default :func:`step_seconds`;
    tests inject their own); ``limit``: the memory bound (default :func:`memory_slots`)."""
    import torch

    device = resolve_device(config.device)
    key = (str(device), config.num_threads, config.amp,
           *(getattr(config, f) for f in SHAPE_FIELDS))
    if key in _measured:
        return _measured[key]
    limit = limit or memory_slots(device)
    measure = step_time or step_seconds
    rates: dict[int, float] = {}
    best, spent, k, note = 1, 0.0, 1, ""
    while k <= limit:
        try:
            seconds = measure(config, k)
        except torch.OutOfMemoryError:  # beyond the device's memory: the bound is reached
            note = f"; K={k}: out of memory"
            break
        finally:
            if device.type == "cuda":
                torch.cuda.empty_cache()
        rates[k] = k / seconds
        spent += (1 + AUTO_STEPS) * seconds
        if rates[k] >= rates[best] * (1 + AUTO_MARGIN):
            best = k
        if rates[k] < max(rates.values()):  # slower than a smaller pack: larger ones too
            break
        # a pack of 2K steps in about twice the time (or less): past the budget, not timed
        if 2 * k <= limit and spent + (1 + AUTO_STEPS) * 2 * seconds > AUTO_BUDGET_S:
            note = f"; K={2 * k} not timed (a step of K={k} already fills the device)"
            break
        k *= 2
    shown = "; ".join(f"K={n}: {n / r:.3g} s/step, {r:.3g} trial-steps/s"
                      for n, r in rates.items())
    chosen = f"K={best}" if best > 1 else "K=1, the plain worker (packs are not faster)"
    _log.info(f"--pack auto on {device} (at most {limit}): {shown}{note} -> {chosen}")
    _measured[key] = best
    return best


def resolve_pack(study: StudyConfig, pack: int | str) -> int:
    """``--pack``'s K: the number given, or :func:`auto_pack`'s for ``study`` on its device."""
    if pack != "auto":
        return int(pack)
    return auto_pack(timing_config(study))


class _Slot:
    """One trial of the pack and its thread."""

    def __init__(self, trial: optuna.Trial) -> None:
        self.trial = trial
        self.inbox: queue.Queue = queue.Queue()  # (train loss, seconds) or an exception
        self.run: Any = None  # its model.loop.Run once it joined a pack
        self.pack: Any = None
        self.state: TrialState | None = None  # _run_trial's answer (None: interrupted)
        self.error: BaseException | None = None
        self.thread: threading.Thread | None = None


class PackedWorker(Worker):
    """A :class:`Worker` training up to ``pack`` trials at once (see the module docstring)."""

    def __init__(self, config, *, pack: int | str = "auto", **options: Any) -> None:
        super().__init__(config, **options)
        self.slots = resolve_pack(config, pack)
        self.packs: list = []  # model.packed.Pack, one per compatible group
        self._turn = threading.RLock()  # torch and the packs: one thread at a time
        self._events: queue.Queue = queue.Queue()  # (event, slot) from the trials' threads
        self._local = threading.local()

    # -- a trial's thread --------------------------------------------------------------------
    def _member(self, slot: _Slot) -> None:
        self._local.slot = slot
        try:
            slot.state = self._run_trial(slot.trial)
        except BaseException as err:  # handed to the main thread, which decides
            slot.error = err
        finally:
            self._events.put(("over", slot))

    def _evaluate(self, trial: optuna.Trial):
        if self.objective_fn is not None:
            return super()._evaluate(trial)
        s, slot = self.settings, self._local.slot
        return objective(trial, self.config, artifact_store=self.artifacts,
                         should_stop=self.stop, worker=self.info, log_label=s.label,
                         train_fn=lambda *a, **kw: self._train_in_pack(slot, *a, **kw))

    def _train_in_pack(self, slot: _Slot, config, data, on_epoch=None, *, state_path=None,
                       save_interval: float = 0.0, on_resume=None, progress=None):
        """``model.train`` for one trial: join a pack, then take each epoch the main thread
        trains, until the run is over."""
        with self._turn:
            pack = next((p for p in self.packs if p.members and p.fits(config, data)), None)
            if pack is None:
                pack = Pack()
                self.packs.append(pack)
            run = pack.start(config, data, on_epoch, state_path=state_path,
                             save_interval=save_interval, on_resume=on_resume)
            if run.done:  # resumed after its last epoch
                return run.result()
        slot.pack, slot.run = pack, run
        self._events.put(("joined", slot))
        try:
            while True:
                message = slot.inbox.get()
                if isinstance(message, WorkerInterrupted) and run.saver is not None:
                    with self._turn, pack.own_rng(run):  # stopped between epochs: saved
                        run.saver.save(run.snapshot, run.trainer.epoch, force=True)
                if isinstance(message, BaseException):
                    raise message
                loss, seconds = message
                if isinstance(loss, TrainingFailed):
                    raise loss
                with self._turn:
                    pack.end_epoch(run, loss, seconds)
                    if run.done:
                        return run.result()
                self._events.put(("ready", slot))
        finally:
            with self._turn:
                pack.remove(run)

    # -- the main thread ---------------------------------------------------------------------
    def _start(self, trial: optuna.Trial) -> _Slot:
        slot = _Slot(trial)
        slot.thread = threading.Thread(target=self._member, args=(slot,), daemon=True,
                                       name=f"trial-{trial.number}")
        slot.thread.start()
        return slot

    def _wait(self, slot: _Slot) -> str:
        """The next event of ``slot`` (the only thread working now)."""
        while True:
            try:
                event, who = self._events.get(timeout=_POLL)
            except queue.Empty:
                continue
            assert who is slot, "one trial's thread works at a time"
            return event

    def _settle(self, slot: _Slot, errors: list[int]) -> None:
        """Count the finished trial; raise what must stop the worker."""
        if slot.thread is not None:
            slot.thread.join()
        err = slot.error
        if isinstance(err, TrialError):
            errors[0] += 1
            if errors[0] >= self.settings.max_errors_in_a_row:
                raise err
            self.summary.count(TrialState.FAIL)
            return
        if err is not None:
            raise err
        if slot.state is None:
            self.summary.interrupted = True
            return
        errors[0] = 0
        self.summary.count(slot.state)

    def run(self) -> WorkerSummary:
        """Run trials, up to ``slots`` at once, until the budget is spent or a signal stops
        the worker (see the module docstring)."""
        s = self.settings
        set_threads(self.config.train.num_threads)  # the packed steps' threads
        active: list[_Slot] = []
        errors = [0]  # unexpected trial errors in a row
        fatal: BaseException | None = None
        _log.info(f"{s.label} packing up to {self.slots} trials")
        second_signal = KeyboardInterrupt("second signal")
        with self._running(on_second_signal=lambda: self._abort(active, second_signal)) \
                as start:
            action = "run"
            while True:
                out_of_time = self._out_of_time(start)
                while (len(active) < self.slots and fatal is None and not self.stop()
                       and not out_of_time):
                    action, trial = self._claim()
                    if action != "run":
                        break
                    assert trial is not None
                    self.summary.trials.append(trial.number)
                    slot = self._start(trial)
                    if self._wait(slot) == "joined":
                        active.append(slot)
                    else:
                        try:
                            self._settle(slot, errors)
                        except BaseException as err:
                            fatal = err
                if not active:
                    if fatal is not None:
                        raise fatal
                    if self.stop() or out_of_time or action == "done":
                        break
                    time.sleep(s.poll)  # others run the last trials: wait for theirs to end
                    continue
                if fatal is not None:  # stop the others between epochs, states saved
                    self._abort(active, WorkerInterrupted(f"worker stopped: {fatal}"))
                    active.clear()
                    continue
                fatal = self._epoch(active, errors)
        return self.summary

    def _epoch(self, active: list[_Slot], errors: list[int]) -> BaseException | None:
        """One epoch of every pack; members that are over leave ``active``. Returns an error
        that must stop the worker (after this epoch), if one came."""
        fatal: BaseException | None = None
        for pack in [p for p in self.packs if p.members]:
            with self._turn:
                begin = time.perf_counter()
                losses = pack.train_epoch()
                seconds = time.perf_counter() - begin
            for run, loss in losses.items():
                slot = next(x for x in active if x.run is run)
                slot.inbox.put((loss, seconds))
                if self._wait(slot) == "over":
                    active.remove(slot)
                    try:
                        self._settle(slot, errors)
                    except BaseException as err:
                        fatal = fatal or err
        self.packs = [p for p in self.packs if p.members]
        return fatal

    def _abort(self, active: list[_Slot], reason: BaseException) -> None:
        """Stop every member (re-queued by its thread) and wait for their threads."""
        for slot in active:
            slot.inbox.put(reason)
        for slot in active:
            if slot.thread is not None:
                slot.thread.join(timeout=120)


def run_packed_worker(config, *, pack: int | str, **options: Any) -> WorkerSummary:
    """:func:`hpo.execution.run.run_worker` with ``pack`` slots (``"auto"``: :func:`auto_pack`; a
    :class:`PackedWorker` even when that is 1: :func:`hpo.execution.run.run_worker` runs the
    plain worker then)."""
    return PackedWorker(config, pack=pack, **options).run()

