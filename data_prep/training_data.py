"""What training consumes: sorted Coulomb matrices and spectra for one (sigma, Np), cached."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from data_prep.cache import cache_root, discard_bad_cache, log, note_dataset, save_atomic
from data_prep.coulomb import coulomb_matrices, sort_coulomb
from data_prep.dataset import TEST, TRAIN, VALIDATION, LevelsDataset, load_levels
from data_prep.progress import bar
from data_prep.qm9 import Geometries, load_qm9pack
from data_prep.spectra import broaden, check_grid, energy_grid
from model.contract import E_MAX, E_MIN, MATRIX_SIZE
from model.errors import DataError


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


def _problem(array: np.ndarray, shape: tuple[int, ...]) -> str | None:
    """What is wrong with a cached array (None when nothing): its shape, a NaN/inf value, or
    a molecule whose array is all zero."""
    if array.shape != shape:
        return f"shape {array.shape}, expected {shape}"
    if array.dtype != np.float32:
        return f"dtype {array.dtype}, expected float32"
    if not np.isfinite(array).all():
        return "it holds NaN or infinite values"
    if len(array) and not np.abs(array.reshape(len(array), -1)).max(axis=1).all():
        return "a molecule's array is all zero"
    return None


def _cached(path: Path, make, shape: tuple[int, ...]) -> np.ndarray:
    """The array cached at ``path``, else ``make()`` (then cached). A cache file that cannot be
    read (truncated, corrupt) or holds the wrong shape or a NaN is removed, named in a
    warning, and rebuilt; a cache that cannot be written (a full disk) is only warned about."""
    if path.exists():
        try:
            array = np.load(path, allow_pickle=False)
            why = _problem(array, shape)
        except Exception as err:  # deliberately broad: any unreadable cache file is rebuilt
            why = f"unreadable: {err}"
        if why is None:
            return array
        discard_bad_cache(path, why)
    array = make()
    try:
        save_atomic(path, array)
    except OSError as err:
        log.warning("specopt cache: cannot write %s (%s); going on without caching it", path,
                    err.strerror or err)
    return array


#: Molecules per step of the Coulomb-matrix build (a step of its progress bar).
COULOMB_CHUNK = 2048


def sorted_coulomb_matrices(Z: np.ndarray, R: np.ndarray, progress: bool | None = None,
                            chunk: int = COULOMB_CHUNK) -> np.ndarray:
    """``sort_coulomb(coulomb_matrices(Z, R))`` in chunks, with a progress bar (the full QM9
    takes minutes on a slow CPU); the same matrices as in one go."""
    out = np.empty((len(Z), MATRIX_SIZE, MATRIX_SIZE), np.float32)
    with bar(progress, total=len(Z), unit="mol", desc="Coulomb matrices") as shown:
        for s in range(0, len(Z), chunk):
            out[s : s + chunk] = sort_coulomb(coulomb_matrices(Z[s : s + chunk],
                                                               R[s : s + chunk]))
            shown.update(len(out[s : s + chunk]))
    return out


def dataset_coulomb(ds: LevelsDataset, geometries: Geometries | None = None,
                    cache_dir: Path | None = None, progress: bool | None = None) -> np.ndarray:
    """Sorted Coulomb matrices for every molecule of ``ds`` (from its geometries), cached."""
    # v2: near-ties in row norm decided by float64 norms (sorting a sorted matrix is a no-op)
    path = (cache_dir or cache_root()) / "coulomb" / f"{ds.fingerprint}_v2.npy"

    def make() -> np.ndarray:
        if ds.coulomb is not None:  # imported with its matrices (the fingerprint covers them)
            return sort_coulomb(ds.coulomb)
        log.info("Coulomb matrices of %d molecules: computed once, then cached in %s", len(ds),
                 path.parent)
        geoms = geometries or load_qm9pack(cache_dir)
        g = geoms.take(geoms.rows_for(ds.index))
        return sorted_coulomb_matrices(g.Z, g.R, progress)

    return _cached(path, make, (len(ds), MATRIX_SIZE, MATRIX_SIZE))


def dataset_spectra(ds: LevelsDataset, sigma: float, n_points: int, e_min: float = E_MIN,
                    e_max: float = E_MAX, cache_dir: Path | None = None) -> np.ndarray:
    """Spectra of every molecule of ``ds`` at (sigma, Np, window), cached per dataset."""
    check_grid(sigma, n_points, e_min, e_max)
    # repr() is the shortest exact form of a float: sigmas that differ at all never share a file.
    name = (f"{ds.fingerprint}_s{float(sigma)!r}_n{int(n_points)}"
            f"_{float(e_min)!r}_{float(e_max)!r}.npy")
    path = (cache_dir or cache_root()) / "spectra" / name
    def make() -> np.ndarray:
        spectra = broaden(ds.levels, sigma, n_points, e_min, e_max)
        check_spectra(ds, spectra, e_min, e_max)  # never cache (or train on) an empty spectrum
        return spectra

    return _cached(path, make, (len(ds), int(n_points)))


def check_spectra(ds: LevelsDataset, spectra: np.ndarray, e_min: float, e_max: float) -> None:
    """DataError naming the molecules whose spectrum is all zero (every level far outside the
    window: the report's accuracy, a ratio to the target's area, would be meaningless)."""
    empty = ~np.abs(spectra).max(axis=1).astype(bool) if len(spectra) else np.zeros(0, bool)
    if empty.any():
        rows = np.flatnonzero(empty)
        shown = ", ".join(str(int(ds.index[r])) for r in rows[:5])
        raise DataError(f"{len(rows)} of {len(ds)} molecules have no level inside the window "
                        f"{e_min:g}..{e_max:g} eV: their spectra are all zero (QM9 index "
                        f"{shown}{' ...' if len(rows) > 5 else ''}); widen the window "
                        "(e_min, e_max) or drop them from the dataset")


def prepare(
    dataset: LevelsDataset | str | Path | None = None,
    sigma: float = 0.5,
    n_points: int = 300,
    e_min: float = E_MIN,
    e_max: float = E_MAX,
    subset: int | None = None,
    cache_dir: Path | None = None,
    geometries: Geometries | None = None,
    progress: bool | None = None,
) -> TrainingData:
    """Training arrays for one (sigma, Np); the bundled dataset when ``dataset`` is None.
    ``progress``: a progress bar while Coulomb matrices are computed (first use of a dataset;
    None: on a terminal unless switched off, see :mod:`data_prep.progress`)."""
    ds = dataset if isinstance(dataset, LevelsDataset) else load_levels(dataset)
    ds = ds.subset(subset)
    note_dataset(cache_dir or cache_root(), ds, dataset)  # names it in `specopt cache info`
    return TrainingData(
        coulomb=dataset_coulomb(ds, geometries, cache_dir, progress),
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
