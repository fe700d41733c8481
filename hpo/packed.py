"""Packed workers (``specopt worker STUDY --pack K``): up to K trials trained at once, as one
batched model per compatible group (:mod:`model.packed`).

Each trial runs the ordinary path in a thread of its own: :meth:`Worker._run_trial` (heartbeat,
``tell`` and every outcome's handling: pruned, diverged, interrupted and re-queued, failed) around
:func:`hpo.training.objective` (attributes, per-epoch reports and pruning, saved state and
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

``--pack auto`` (:func:`auto_pack`): on CUDA one slot per 1 GiB of free device memory, at most
32; on the CPU min(8, cores).  The memory of a member is far below that (weights, AdamW state and
activations of a batch of 90: tens of MB); the bound is the step time, which
``bench/pack_speed.py`` measures.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Any

import optuna
from optuna.trial import TrialState

from hpo.training import objective
from hpo.worker import Worker, WorkerSummary
from model.errors import ConfigError, TrialError, WorkerInterrupted

__all__ = ["MAX_AUTO_PACK", "PackedWorker", "auto_pack", "parse_pack", "run_packed_worker"]

_log = logging.getLogger("specopt.worker")

#: The most slots ``--pack auto`` gives.
MAX_AUTO_PACK = 32
#: Free device memory per slot of ``--pack auto`` on CUDA.
AUTO_BYTES_PER_SLOT = 1 << 30
#: Seconds between the main thread's looks at a signal while a member works.
_POLL = 0.2


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


def auto_pack(device: str | None) -> int:
    """The slots of ``--pack auto`` on ``device`` (see the module docstring)."""
    import torch

    from model.device import available_cpus, resolve_device

    dev = resolve_device(device or "auto")
    if dev.type == "cuda":
        free, _ = torch.cuda.mem_get_info(dev)
        return max(1, min(MAX_AUTO_PACK, int(free // AUTO_BYTES_PER_SLOT)))
    return max(1, min(8, available_cpus()))


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
        self.slots = auto_pack(self.settings.device) if pack == "auto" else int(pack)
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
        return objective(trial, self.config, device=s.device, num_threads=s.num_threads,
                         artifact_store=self.artifacts, should_stop=self.stop,
                         worker=self.info, log_label=s.label,
                         train_fn=lambda *a, **kw: self._train_in_pack(slot, *a, **kw))

    def _train_in_pack(self, slot: _Slot, config, data, on_epoch=None, *, state_path=None,
                       save_interval: float = 0.0, on_resume=None, progress=None):
        """``model.train`` for one trial: join a pack, then take each epoch the main thread
        trains, until the run is over."""
        from model.errors import TrainingFailed
        from model.packed import Pack

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
        import torch

        from model.device import idle_cpus

        s = self.settings
        torch.set_num_threads(s.num_threads or idle_cpus())  # the packed steps' threads
        if s.handle_signals:
            self.stop.install()
        start = time.monotonic()
        active: list[_Slot] = []
        errors = [0]  # unexpected trial errors in a row
        fatal: BaseException | None = None
        _log.info(f"{s.label} packing up to {self.slots} trials")
        try:
            action = "run"
            while True:
                out_of_time = s.timeout is not None and time.monotonic() - start >= s.timeout
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
                        if out_of_time:
                            _log.info(f"{s.label} time budget of {s.timeout:g} s spent")
                        break
                    time.sleep(s.poll)  # others run the last trials: wait for theirs to end
                    continue
                if fatal is not None:  # stop the others between epochs, states saved
                    self._abort(active, WorkerInterrupted(f"worker stopped: {fatal}"))
                    active.clear()
                    continue
                fatal = self._epoch(active, errors)
            if self.stop():
                self.summary.interrupted = True
        except KeyboardInterrupt:
            self._abort(active, KeyboardInterrupt("second signal"))
            self.summary.interrupted = True
        finally:
            if s.handle_signals:
                self.stop.restore()
            self.summary.seconds = time.monotonic() - start
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
    """:func:`hpo.worker.run_worker` with ``pack`` slots (``"auto"``: :func:`auto_pack`)."""
    return PackedWorker(config, pack=pack, **options).run()
