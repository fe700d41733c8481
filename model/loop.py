"""The epoch loop of one run: ``train(config)`` trains with test-set model selection and early
stopping, keeps a checkpoint of the best epoch, and scores the best model on the validation set.

Resuming: with a ``state_path`` the run saves its :class:`model.checkpoint.TrainingState` there
at the end of an epoch, at most every ``save_interval`` seconds (0: every epoch), and always
when ``on_epoch`` raises :class:`WorkerInterrupted`; a state or checkpoint that cannot be
written (a full disk) stops the run with an ``InfrastructureError``, the previous state whole.
A run that finds a state there continues
after its epoch; on the CPU it ends with the same weights, history (but the ``seconds``) and
metrics, bit for bit, as a run that was never interrupted (every RNG that training draws from
is part of the state). The work lost by a kill is at most ``save_interval`` plus one epoch.

Baseline: every run scores the mean-training-spectrum predictor (``model.metrics.baseline_metrics``,
no training) on the test and validation splits once, when it starts (a resumed run recomputes it:
it is a function of the data). ``skill`` (the share of the baseline's error removed) is added to
every epoch's test metrics and to the validation metrics; ``TrainResult.baseline`` holds both.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from data_prep import TrainingData, prepare
from data_prep.progress import bar
from model.checkpoint import (
    TrainingState,
    load_training_state,
    save_checkpoint,
    save_training_state,
    state_identity,
)
from model.config import TrainConfig
from model.contract import SCALE_FREE_LOSSES, ArtifactName, Status
from model.errors import WorkerInterrupted
from model.metrics import baseline_metrics, evaluate, skill_score
from model.trainer import Trainer


@dataclass
class EpochReport:
    epoch: int  # 1-based
    train_loss: float
    test_loss: float
    test_metrics: dict[str, float]
    seconds: float  # training and test evaluation of this epoch
    best: bool = False  # lowest test loss so far


@dataclass
class TrainResult:
    status: str  # Status.COMPLETED | Status.EARLY_STOPPED
    best_epoch: int
    best_test_loss: float
    history: list[dict]  # EpochReport as dicts
    metrics: dict[str, float]  # validation set, from model.metrics.evaluate
    val_predictions: np.ndarray  # (n_val, Np) float32
    val_targets: np.ndarray
    val_index: np.ndarray  # QM9 indices of the validation molecules
    val_levels: np.ndarray  # (n_val, 16) eV
    grid: np.ndarray  # (Np,) eV
    checkpoint_path: Path | None
    device: str
    seconds_per_epoch: float  # median over epochs (the first one includes warm-up)
    config: dict = field(default_factory=dict)
    resumed_from: int = 0  # the epoch of the saved state this run continued (0: from scratch)
    epochs_trained: int = 0  # epochs this run trained itself (after resumed_from)
    #: {"test": ..., "validation": ...}: the mean-training-spectrum baseline's metrics
    baseline: dict[str, dict[str, float]] = field(default_factory=dict)




def run_baseline(config: TrainConfig, trainer: Trainer) -> dict[str, dict[str, float]]:
    """The mean training spectrum's metrics on the test split (per-epoch skill) and on the
    validation split (with the level error, beside the final metrics), from the trainer's
    device-resident targets. A run trained with a scale-free loss (``SCALE_FREE_LOSSES``) is
    judged on predictions scaled to each target's norm; its baseline is judged the same way (the
    mean spectrum scaled to each target's norm), so that skill compares like with like."""
    data, scale_free = trainer.data, config.loss in SCALE_FREE_LOSSES
    return {split: baseline_metrics(trainer.y_train, target, data.grid, config.sigma,
                                    config.reference_sigma, levels, scale_free=scale_free)
            for split, target, levels in (
                ("test", trainer.y_test, None),
                ("validation", trainer.y_val, data.levels[data.validation_rows]))}


class _StateSaver:
    """Saves the training state at the end of an epoch, at most every ``interval`` seconds. A
    state that cannot be written (a full disk) stops the run with an ``InfrastructureError``,
    the previous state whole: training on would lose every epoch since, as the results could
    not be written either."""

    def __init__(self, path: Path, interval: float, identity: dict) -> None:
        self.path, self.interval, self.identity = Path(path), float(interval), identity
        self.last = time.monotonic()
        self.saved_epoch = -1

    def save(self, make, epoch: int, force: bool = False) -> None:
        if self.saved_epoch == epoch:
            return
        if not force and time.monotonic() - self.last < self.interval:
            return
        save_training_state(self.path, make())
        self.last, self.saved_epoch = time.monotonic(), epoch


class Run:
    """One run's epoch bookkeeping around a :class:`Trainer`: resume from a saved state, after
    each trained epoch the test evaluation, model selection, history, state saving, ``on_epoch``
    and early stopping, and at the end the validation metrics (:meth:`result`). :func:`train`
    drives one; :mod:`model.packed` drives several whose epochs are trained together. The
    arguments are :func:`train`'s; ``trainer``: a ready :class:`Trainer` (default: a new one)."""

    def __init__(self, config: TrainConfig, data: TrainingData,
                 on_epoch: Callable[[EpochReport], None] | None = None, *,
                 state_path: str | Path | None = None, save_interval: float = 0.0,
                 on_resume: Callable[[TrainingState], None] | None = None,
                 trainer: Trainer | None = None) -> None:
        self.config, self.data, self.on_epoch = config, data, on_epoch
        self.trainer = trainer if trainer is not None else Trainer(config, data)
        self.baseline = run_baseline(config, self.trainer)
        self.checkpoint = (config.checkpoint_dir / ArtifactName.CHECKPOINT
                           if config.checkpoint_dir else None)
        self.history: list[dict] = []
        self.best_loss, self.best_epoch = math.inf, 0
        self.best_state: dict | None = None
        self.status = Status.COMPLETED
        self.saver = (_StateSaver(Path(state_path), save_interval, state_identity(config, data))
                      if state_path is not None else None)
        self.start_epoch = 0
        self.done = False  # no more epochs to train (the last one, or early stopping)
        resumed = (load_training_state(state_path, config, data) if state_path is not None
                   else None)
        if resumed is not None:
            self.trainer.set_state(resumed.trainer)
            self.start_epoch = resumed.epoch
            self.history = [dict(h) for h in resumed.history]
            self.best_loss, self.best_epoch = resumed.best_test_loss, resumed.best_epoch
            self.best_state = resumed.best_weights
            if self.checkpoint is not None and self.best_state is not None:
                save_checkpoint(self.checkpoint, self.best_state, config, data, self.best_epoch,
                                self.best_loss)
            if on_resume is not None:
                on_resume(resumed)
        if self.start_epoch and self._patience_spent(self.start_epoch):
            self.status, self.done = Status.EARLY_STOPPED, True  # the interrupted run had stopped
        elif self.start_epoch >= config.epochs:
            self.done = True

    def _patience_spent(self, epoch: int) -> bool:
        return self.config.patience is not None and epoch - self.best_epoch >= self.config.patience

    def snapshot(self) -> TrainingState:
        best = (None if self.best_state is None else
                {k: v.detach().cpu().clone() for k, v in self.best_state.items()})
        return TrainingState(epoch=self.trainer.epoch, trainer=self.trainer.get_state(),
                             best_epoch=self.best_epoch, best_test_loss=self.best_loss,
                             best_weights=best, history=[dict(h) for h in self.history],
                             identity=self.saver.identity if self.saver else {})

    def end_epoch(self, train_loss: float, seconds: float) -> EpochReport:
        """After the trainer trained its epoch (``seconds`` so far): test evaluation, the best
        model, history, state save, ``on_epoch`` (whatever it raises propagates) and early
        stopping (sets :attr:`done`)."""
        start = time.perf_counter()
        trainer, epoch = self.trainer, self.trainer.epoch
        test_loss, test_metrics = trainer.test_epoch()
        if "fair_accuracy" in test_metrics:
            test_metrics["skill"] = skill_score(test_metrics["fair_accuracy"],
                                                self.baseline["test"]["fair_accuracy"])
        improved = test_loss < self.best_loss
        if improved:
            self.best_loss, self.best_epoch = test_loss, epoch
            self.best_state = {k: v.detach().clone()
                               for k, v in trainer.model.state_dict().items()}
            if self.checkpoint is not None:
                save_checkpoint(self.checkpoint, trainer.model, self.config, self.data, epoch,
                                test_loss)
        report = EpochReport(epoch, train_loss, test_loss, test_metrics,
                             seconds + time.perf_counter() - start, improved)
        self.history.append(asdict(report))
        if self.saver is not None:
            self.saver.save(self.snapshot, epoch)
        if self.on_epoch is not None:
            try:
                self.on_epoch(report)
            except WorkerInterrupted:
                if self.saver is not None:  # always saved when stopped by a signal
                    self.saver.save(self.snapshot, epoch, force=True)
                raise
        if self._patience_spent(epoch):
            self.status, self.done = Status.EARLY_STOPPED, True
        elif epoch >= self.config.epochs:
            self.done = True
        return report

    def result(self) -> TrainResult:
        """The best model's validation metrics and predictions (the run is over)."""
        trainer, data, config = self.trainer, self.data, self.config
        if self.best_state is not None:  # None only if no epoch ran to a finite test loss
            trainer.model.load_state_dict(self.best_state)
        val_pred = trainer.predict(trainer.x_val)
        val_levels = data.levels[data.validation_rows]
        metrics = evaluate(val_pred, trainer.y_val, val_levels, data.grid, config.sigma,
                           config.reference_sigma, scale_free=config.loss in SCALE_FREE_LOSSES,
                           baseline=self.baseline["validation"])
        return TrainResult(
            status=self.status,
            best_epoch=self.best_epoch,
            best_test_loss=self.best_loss,
            history=self.history,
            metrics=metrics,
            val_predictions=val_pred.cpu().numpy(),
            val_targets=data.spectra[data.validation_rows],
            val_index=data.index[data.validation_rows],
            val_levels=val_levels,
            grid=data.grid,
            checkpoint_path=self.checkpoint,
            device=str(trainer.device),
            seconds_per_epoch=statistics.median(h["seconds"] for h in self.history),
            config=config.model_dump(mode="json"),
            resumed_from=self.start_epoch,
            epochs_trained=len(self.history) - self.start_epoch,
            baseline=self.baseline,
        )


def train(config: TrainConfig, data: TrainingData | None = None,
          on_epoch: Callable[[EpochReport], None] | None = None, *,
          state_path: str | Path | None = None, save_interval: float = 0.0,
          on_resume: Callable[[TrainingState], None] | None = None,
          progress: bool | None = None) -> TrainResult:
    """Train one model. ``data`` defaults to ``data_prep.prepare`` with the config's dataset,
    sigma, Np, window and subset. ``on_epoch`` runs after every epoch; whatever it raises
    (e.g. ``optuna.TrialPruned``) propagates unchanged. A NaN or infinite loss raises
    ``TrainingFailed``.

    ``state_path``: where the training state is saved (see the module docstring) and, when a
    state of the same configuration and data is there, continued from; ``on_resume(state)``
    then runs first (its ``history``: the epochs done, for which ``on_epoch`` is not called
    again). The caller removes the state when the run is over.

    ``progress``: progress bars of the data preparation and of the epochs (test loss and
    accuracy shown); None: on when stderr is a terminal, unless switched off
    (:mod:`data_prep.progress`: ``specopt -q``, ``$SPECOPT_PROGRESS=0``)."""
    if data is None:
        data = prepare(config.dataset, config.sigma, config.n_points, config.e_min,
                       config.e_max, subset=config.subset, progress=progress)
    run = Run(config, data, on_epoch, state_path=state_path, save_interval=save_interval,
              on_resume=on_resume)
    if not run.done:
        shown = bar(progress, total=config.epochs, initial=run.start_epoch, unit="epoch",
                    desc="training")
        try:
            while not run.done:
                start = time.perf_counter()
                train_loss = run.trainer.train_epoch()
                report = run.end_epoch(train_loss, time.perf_counter() - start)
                metrics = report.test_metrics
                shown.set_postfix(test_loss=f"{report.test_loss:.4g}", accuracy=(
                    f"{100 * metrics['accuracy']:.2f}%" if "accuracy" in metrics
                    else "-"), refresh=False)
                shown.update(1)
        finally:
            shown.close()
    return run.result()
