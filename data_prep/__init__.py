"""Data preparation: QM9 geometries -> 16 orbital levels -> Coulomb matrices and spectra."""

from data_prep.coulomb import coulomb_matrices, coulomb_matrix, randomize_coulomb, sort_coulomb
from data_prep.dataset import TEST, TRAIN, VALIDATION, LevelsDataset, load_levels
from data_prep.qm9 import Geometries, load_qm9pack, read_xyz
from data_prep.spectra import broaden, energy_grid
from data_prep.training_data import TrainingData, prepare
from model.errors import DataError

__all__ = [
    "DataError", "Geometries", "LevelsDataset", "TEST", "TRAIN", "TrainingData", "VALIDATION",
    "broaden", "coulomb_matrices", "coulomb_matrix", "energy_grid", "load_levels",
    "load_qm9pack", "prepare", "randomize_coulomb", "read_xyz", "sort_coulomb",
]
