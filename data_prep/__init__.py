"""Data preparation: QM9 geometries -> 16 orbital levels -> Coulomb matrices and spectra.

Names are imported on first use (PEP 562), so that the torch-free modules (``files``,
``progress``, ``cache``, ``dataset``, ``qm9``) load without torch: ``hpo`` uses them on its
light import path.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "coulomb_matrices": "data_prep.coulomb",
    "coulomb_matrix": "data_prep.coulomb",
    "randomize_coulomb": "data_prep.coulomb",
    "sort_coulomb": "data_prep.coulomb",
    "TEST": "data_prep.dataset",
    "TRAIN": "data_prep.dataset",
    "VALIDATION": "data_prep.dataset",
    "LevelsDataset": "data_prep.dataset",
    "load_levels": "data_prep.dataset",
    "Geometries": "data_prep.qm9",
    "load_qm9pack": "data_prep.qm9",
    "read_xyz": "data_prep.qm9",
    "broaden": "data_prep.spectra",
    "energy_grid": "data_prep.spectra",
    "TrainingData": "data_prep.training_data",
    "prepare": "data_prep.training_data",
    "DataError": "model.errors",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:
    from data_prep.coulomb import coulomb_matrices, coulomb_matrix, randomize_coulomb, sort_coulomb  # noqa: F401
    from data_prep.dataset import TEST, TRAIN, VALIDATION, LevelsDataset, load_levels  # noqa: F401
    from data_prep.qm9 import Geometries, load_qm9pack, read_xyz  # noqa: F401
    from data_prep.spectra import broaden, energy_grid  # noqa: F401
    from data_prep.training_data import TrainingData, prepare  # noqa: F401
    from model.errors import DataError  # noqa: F401


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'data_prep' has no attribute {name!r}")
