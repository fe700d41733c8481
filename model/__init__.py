"""The report's CNN, its losses and metrics, and the training loop."""

from model import losses, metrics
from model.config import TrainConfig
from model.network import SpectraCNN, count_parameters
from model.train import (
    EpochReport,
    Trainer,
    TrainingFailed,
    TrainResult,
    load_checkpoint,
    predict,
    resolve_device,
    train,
)

__all__ = [
    "EpochReport", "SpectraCNN", "TrainConfig", "TrainResult", "Trainer", "TrainingFailed",
    "count_parameters", "load_checkpoint", "losses", "metrics", "predict", "resolve_device",
    "train",
]
