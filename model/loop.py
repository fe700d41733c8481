"""The epoch loop of one run: ``train(config)`` trains with test-set model selection and early
stopping, keeps a checkpoint of the best epoch, and scores the best model on the validation set.

Resuming: with a ``state_path`` the run saves its :class:`model.checkpoint.TrainingState` there
at the end of an epoch, at most every ``save_interval`` seconds (0: every epoch), and always
when ``on_epoch`` raises :class:`WorkerInterrupted`. A run that finds a state there continues
after its epoch; on the CPU it ends with the same weights, history (but the ``seconds``) and
metrics, bit for bit, as a run that was never interrupted (every RNG that training draws from
is part of the state). The work lost by a kill is at most ``save_interval`` plus one epoch.
"""

from __future__ import annotations

import logging
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
from model.metrics import evaluate
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


log = logging.getLogger("specopt.model")


class _StateSaver:
    """Saves the training state at the end of an epoch, at most every ``interval`` seconds."""

    def __init__(self, path: Path, interval: float, identity: dict) -> None:
        self.path, self.interval, self.identity = Path(path), float(interval), identity
        self.last = time.monotonic()
        self.saved_epoch = -1
        self.warned = False

    def save(self, make, epoch: int, force: bool = False) -> None:
        if self.saved_epoch == epoch:
            return
        if not force and time.monotonic() - self.last < self.interval:
            return
        try:
            save_training_state(self.path, make())
        except OSError as err:  # a full disk: the previous state stays whole; training goes on
            if not self.warned:
                log.warning("could not save the training state to %s (%s); the run goes on, "
                            "a restart continues from the last saved state", self.path, err)
                self.warned = True
            return
        self.last, self.saved_epoch = time.monotonic(), epoch


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
    trainer = Trainer(config, data)
    checkpoint = (config.checkpoint_dir / ArtifactName.CHECKPOINT if config.checkpoint_dir
                  else None)
    history: list[dict] = []
    best_loss, best_epoch = math.inf, 0
    best_state: dict | None = None
    status = Status.COMPLETED
    saver = (_StateSaver(Path(state_path), save_interval, state_identity(config, data))
             if state_path is not None else None)
    start_epoch = 0
    resumed = load_training_state(state_path, config, data) if state_path is not None else None
    if resumed is not None:
        trainer.set_state(resumed.trainer)
        start_epoch = resumed.epoch
        history = [dict(h) for h in resumed.history]
        best_loss, best_epoch = resumed.best_test_loss, resumed.best_epoch
        best_state = resumed.best_weights
        if checkpoint is not None and best_state is not None:
            save_checkpoint(checkpoint, best_state, config, data, best_epoch, best_loss)
        if on_resume is not None:
            on_resume(resumed)

    def snapshot() -> TrainingState:
        best = (None if best_state is None else
                {k: v.detach().cpu().clone() for k, v in best_state.items()})
        return TrainingState(epoch=trainer.epoch, trainer=trainer.get_state(),
                             best_epoch=best_epoch, best_test_loss=best_loss, best_weights=best,
                             history=[dict(h) for h in history],
                             identity=saver.identity if saver else {})

    def patience_spent(epoch: int) -> bool:
        return config.patience is not None and epoch - best_epoch >= config.patience

    if start_epoch and patience_spent(start_epoch):
        status = Status.EARLY_STOPPED  # the interrupted run had stopped here
    else:
        shown = bar(progress, total=config.epochs, initial=start_epoch, unit="epoch",
                    desc="training")
        try:
            for epoch in range(start_epoch + 1, config.epochs + 1):
                start = time.perf_counter()
                train_loss = trainer.train_epoch()
                test_loss, test_metrics = trainer.test_epoch()
                improved = test_loss < best_loss
                if improved:
                    best_loss, best_epoch = test_loss, epoch
                    best_state = {k: v.detach().clone()
                                  for k, v in trainer.model.state_dict().items()}
                    if checkpoint is not None:
                        save_checkpoint(checkpoint, trainer.model, config, data, epoch, test_loss)
                report = EpochReport(epoch, train_loss, test_loss, test_metrics,
                                     time.perf_counter() - start, improved)
                history.append(asdict(report))
                shown.set_postfix(test_loss=f"{test_loss:.4g}", accuracy=(
                    f"{100 * test_metrics['accuracy']:.2f}%" if "accuracy" in test_metrics
                    else "-"), refresh=False)
                shown.update(1)
                if saver is not None:
                    saver.save(snapshot, epoch)
                if on_epoch is not None:
                    try:
                        on_epoch(report)
                    except WorkerInterrupted:
                        if saver is not None:  # always saved when stopped by a signal
                            saver.save(snapshot, epoch, force=True)
                        raise
                if patience_spent(epoch):
                    status = Status.EARLY_STOPPED
                    break
        finally:
            shown.close()

    if best_state is not None:  # None only if no epoch ran to a finite test loss
        trainer.model.load_state_dict(best_state)
    val_pred = trainer.predict(trainer.x_val)
    val_levels = data.levels[data.validation_rows]
    metrics = evaluate(val_pred, trainer.y_val, val_levels, data.grid, config.sigma,
                       config.reference_sigma, scale_free=config.loss in SCALE_FREE_LOSSES)
    return TrainResult(
        status=status,
        best_epoch=best_epoch,
        best_test_loss=best_loss,
        history=history,
        metrics=metrics,
        val_predictions=val_pred.cpu().numpy(),
        val_targets=data.spectra[data.validation_rows],
        val_index=data.index[data.validation_rows],
        val_levels=val_levels,
        grid=data.grid,
        checkpoint_path=checkpoint,
        device=str(trainer.device),
        seconds_per_epoch=statistics.median(h["seconds"] for h in history),
        config=config.model_dump(mode="json"),
        resumed_from=start_epoch,
        epochs_trained=len(history) - start_epoch,
    )
