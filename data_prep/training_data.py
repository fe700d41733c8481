"""What training consumes: sorted Coulomb matrices and spectra for one (sigma, Np), cached."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from data_prep.cache import cache_root, save_atomic
from data_prep.coulomb import coulomb_matrices, sort_coulomb
from data_prep.dataset import TEST, TRAIN, VALIDATION, LevelsDataset, load_levels
from data_prep.qm9 import Geometries, load_qm9pack
from data_prep.spectra import broaden, check_grid, energy_grid
from model.contract import E_MAX, E_MIN


@dataclass(frozen=True)
class TrainingData:
    coulomb: np.ndarray  # (N, 29, 29) float32, sorted by row norm
    spectra: np.ndarray  # (N, Np) float32
    levels: np.ndarray  # (N, 16) float32 eV
    split: np.ndarray  # (N,) 0 train / 1 test / 2 validation
    index: np.ndarray  # (N,) QM9 index
    sigma: float
    n_points: int
    e_min: float
    e_max: float
    fingerprint: str  # of the levels dataset (and subset)
    provenance: dict

    @property
    def grid(self) -> np.ndarray:
        return energy_grid(self.n_points, self.e_min, self.e_max)

    @property
    def de(self) -> float:
        """Grid spacing in eV (the report's dE = 30 / Np)."""
        return (self.e_max - self.e_min) / self.n_points

    def rows(self, part: int) -> np.ndarray:
        return np.flatnonzero(self.split == part)

    @property
    def train_rows(self) -> np.ndarray:
        return self.rows(TRAIN)

    @property
    def test_rows(self) -> np.ndarray:
        return self.rows(TEST)

    @property
    def validation_rows(self) -> np.ndarray:
        return self.rows(VALIDATION)


def _cached(path: Path, make) -> np.ndarray:
    if path.exists():
        return np.load(path)
    array = make()
    save_atomic(path, array)
    return array


def dataset_coulomb(ds: LevelsDataset, geometries: Geometries | None = None,
                    cache_dir: Path | None = None) -> np.ndarray:
    """Sorted Coulomb matrices for every molecule of ``ds`` (from its geometries), cached."""
    # v2: near-ties in row norm decided by float64 norms (sorting a sorted matrix is a no-op)
    path = (cache_dir or cache_root()) / "coulomb" / f"{ds.fingerprint}_v2.npy"

    def make() -> np.ndarray:
        if ds.coulomb is not None:  # imported with its matrices (the fingerprint covers them)
            return sort_coulomb(ds.coulomb)
        geoms = geometries or load_qm9pack(cache_dir)
        g = geoms.take(geoms.rows_for(ds.index))
        return sort_coulomb(coulomb_matrices(g.Z, g.R))

    return _cached(path, make)


def dataset_spectra(ds: LevelsDataset, sigma: float, n_points: int, e_min: float = E_MIN,
                    e_max: float = E_MAX, cache_dir: Path | None = None) -> np.ndarray:
    """Spectra of every molecule of ``ds`` at (sigma, Np, window), cached per dataset."""
    check_grid(sigma, n_points, e_min, e_max)
    # repr() is the shortest exact form of a float: sigmas that differ at all never share a file.
    name = (f"{ds.fingerprint}_s{float(sigma)!r}_n{int(n_points)}"
            f"_{float(e_min)!r}_{float(e_max)!r}.npy")
    path = (cache_dir or cache_root()) / "spectra" / name
    return _cached(path, lambda: broaden(ds.levels, sigma, n_points, e_min, e_max))


def prepare(
    dataset: LevelsDataset | str | Path | None = None,
    sigma: float = 0.5,
    n_points: int = 300,
    e_min: float = E_MIN,
    e_max: float = E_MAX,
    subset: int | None = None,
    cache_dir: Path | None = None,
    geometries: Geometries | None = None,
) -> TrainingData:
    """Training arrays for one (sigma, Np); the bundled dataset when ``dataset`` is None."""
    ds = dataset if isinstance(dataset, LevelsDataset) else load_levels(dataset)
    ds = ds.subset(subset)
    return TrainingData(
        coulomb=dataset_coulomb(ds, geometries, cache_dir),
        spectra=dataset_spectra(ds, sigma, n_points, e_min, e_max, cache_dir),
        levels=ds.levels,
        split=ds.split,
        index=ds.index,
        sigma=float(sigma),
        n_points=int(n_points),
        e_min=float(e_min),
        e_max=float(e_max),
        fingerprint=ds.fingerprint,
        provenance=ds.provenance,
    )
