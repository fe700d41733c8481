"""The epoch loop of one run: ``train(config)`` trains with test-set model selection and early
stopping, keeps a checkpoint of the best epoch, and scores the best model on the validation set.
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
from model.checkpoint import save_checkpoint
from model.config import TrainConfig
from model.contract import SCALE_FREE_LOSSES, ArtifactName, Status
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


def train(config: TrainConfig, data: TrainingData | None = None,
          on_epoch: Callable[[EpochReport], None] | None = None) -> TrainResult:
    """Train one model. ``data`` defaults to ``data_prep.prepare`` with the config's dataset,
    sigma, Np, window and subset. ``on_epoch`` runs after every epoch; whatever it raises
    (e.g. ``optuna.TrialPruned``) propagates unchanged. A NaN or infinite loss raises
    ``TrainingFailed``."""
    if data is None:
        data = prepare(config.dataset, config.sigma, config.n_points, config.e_min,
                       config.e_max, subset=config.subset)
    trainer = Trainer(config, data)
    checkpoint = (config.checkpoint_dir / ArtifactName.CHECKPOINT if config.checkpoint_dir
                  else None)
    history: list[dict] = []
    best_loss, best_epoch, best_state = math.inf, 0, None
    status = Status.COMPLETED
    for epoch in range(1, config.epochs + 1):
        start = time.perf_counter()
        train_loss = trainer.train_epoch()
        test_loss, test_metrics = trainer.test_epoch()
        improved = test_loss < best_loss
        if improved:
            best_loss, best_epoch = test_loss, epoch
            best_state = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}
            if checkpoint is not None:
                save_checkpoint(checkpoint, trainer.model, config, data, epoch, test_loss)
        report = EpochReport(epoch, train_loss, test_loss, test_metrics,
                             time.perf_counter() - start, improved)
        history.append(asdict(report))
        if on_epoch is not None:
            on_epoch(report)
        if config.patience is not None and epoch - best_epoch >= config.patience:
            status = Status.EARLY_STOPPED
            break

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
    )
