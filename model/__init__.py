"""The report's CNN, its losses and metrics, and the training loop.

Names are imported on first use (PEP 562), so that ``model.contract``, ``model.errors`` and
``model.config`` stay importable without torch: the study-file validation and ``data_prep`` use
them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "TrainConfig": "model.config",
    "SpectraCNN": "model.network",
    "count_parameters": "model.network",
    "EpochReport": "model.loop",
    "Trainer": "model.trainer",
    "TrainResult": "model.loop",
    "load_checkpoint": "model.checkpoint",
    "predict": "model.inference",
    "resolve_device": "model.device",
    "train": "model.loop",
    "TrainingFailed": "model.errors",
}
_MODULES = ("contract", "errors", "losses", "metrics")

__all__ = sorted([*_EXPORTS, *_MODULES])

if TYPE_CHECKING:
    from model import contract, errors, losses, metrics  # noqa: F401
    from model.checkpoint import load_checkpoint  # noqa: F401
    from model.config import TrainConfig  # noqa: F401
    from model.device import resolve_device  # noqa: F401
    from model.errors import TrainingFailed  # noqa: F401
    from model.inference import predict  # noqa: F401
    from model.loop import EpochReport, TrainResult, train  # noqa: F401
    from model.network import SpectraCNN, count_parameters  # noqa: F401
    from model.trainer import Trainer  # noqa: F401


def __getattr__(name: str) -> Any:
    if name in _MODULES:
        return importlib.import_module(f"model.{name}")
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'model' has no attribute {name!r}")
