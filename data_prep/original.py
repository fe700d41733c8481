"""Import the original dataset of Ghosh et al. 2019 (Zenodo 3386508, ``132k_16_opt_eV``).

Its folder holds:

- ``coulomb.npz``, key ``coulomb``: N x 29 x 29 Coulomb matrices, stored NEGATED;
- ``energies.txt``: one line per molecule, 16 orbital energies in eV, ``-10000`` for a missing
  level (a molecule with any missing level is dropped and counted);
- ``spectra.npz``, key ``spectra`` (optional): N x Np spectra. They are not stored (ours are
  recomputed from the levels for any sigma and Np); they are compared with ``broaden`` and the
  comparison goes into the provenance.

The files carry no QM9 index: the imported dataset's ``index`` is the molecule's 0-based row in
the original files, and its Coulomb matrices are stored with it (no geometries are needed).
"""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path

import numpy as np

from data_prep.dataset import LevelsDataset, read_npz
from data_prep.qm9 import MAX_ATOMS
from data_prep.spectra import broaden
from model.contract import E_MAX, E_MIN, N_LEVELS
from model.errors import DataError

MISSING = -10000.0
ZENODO = "Ghosh et al. 2019, Zenodo 3386508 (132k_16_opt_eV)"


def _load_npz_key(path: Path, key: str) -> np.ndarray:
    """Array ``key`` of ``path``: real numbers (not text, not complex), DataError otherwise."""
    if not path.exists():
        raise DataError(f"{path}: file not found (the original dataset has {path.name})")
    arrays = read_npz(path, f"the original dataset's {path.name}")
    if key not in arrays:
        raise DataError(f"{path}: no array {key!r} (it has {', '.join(arrays) or 'none'})")
    a = arrays[key]
    if a.dtype.kind not in "iuf":
        raise DataError(f"{path}: {key!r} holds {a.dtype}, expected real numbers")
    return a


def read_coulomb(path: str | Path, negated: bool = True) -> np.ndarray:
    """(N, 29, 29) float32 Coulomb matrices from ``coulomb.npz``, with the negation undone."""
    path = Path(path)
    c = _load_npz_key(path, "coulomb")
    if c.ndim != 3 or c.shape[1:] != (MAX_ATOMS, MAX_ATOMS):
        raise DataError(f"{path}: 'coulomb' has shape {c.shape}, expected (N, 29, 29)")
    c = np.asarray(c, np.float32)
    if not np.isfinite(c).all():
        raise DataError(f"{path}: 'coulomb' holds NaN or infinite values")
    c = -c if negated else c
    diag = np.diagonal(c, axis1=1, axis2=2)
    if (diag < 0).any():
        hint = "pass negated=False (--not-negated)" if negated else "the file may be negated"
        raise DataError(f"{path}: {int((diag < 0).any(axis=1).sum())} matrices have a negative "
                        f"diagonal after reading ({hint})")
    return c


def read_energies(path: str | Path) -> np.ndarray:
    """(N, 16) float64 energies in eV from ``energies.txt``; NaN marks a missing level."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: file not found (the original dataset has energies.txt)")
    if not path.is_file():  # a FIFO would block the read
        raise DataError(f"{path}: not a regular file (the original dataset's energies.txt)")
    rows = []
    largest = float(np.finfo(np.float32).max)  # levels are stored as float32
    number = 0
    try:
        with open(path, encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                fields = line.replace(",", " ").split()
                if not fields:
                    continue
                if len(fields) != N_LEVELS:
                    raise DataError(f"{path}, line {number}: {len(fields)} values, expected "
                                    f"{N_LEVELS} energies in eV")
                try:
                    row = [float(x) for x in fields]
                except ValueError:
                    raise DataError(f"{path}, line {number}: not a number in "
                                    f"{line.strip()[:200]!r}") from None
                if any(largest < abs(x) < math.inf for x in row):  # inf, NaN: missing
                    raise DataError(f"{path}, line {number}: an energy beyond +-{largest:.3g} "
                                    "eV, not an orbital level")
                rows.append(row)
    except UnicodeDecodeError:
        raise DataError(f"{path}, line {number + 1}: not UTF-8 text (the original dataset's "
                        "energies.txt is plain numbers)") from None
    e = np.array(rows, np.float64).reshape(-1, N_LEVELS)
    e[(e <= MISSING + 0.5) | ~np.isfinite(e)] = np.nan
    return e


def compare_spectra(levels: np.ndarray, spectra: np.ndarray, e_min: float = E_MIN,
                    e_max: float = E_MAX, sample: int = 2000, seed: int = 0) -> dict:
    """How the original spectra compare with ``broaden`` of the same levels at their Np.

    Fits sigma (and an overall scale) on a sample, assuming the grid ``linspace(e_min, e_max,
    Np)``; returns the fitted values and the relative L2 difference at the fit.
    """
    from scipy.optimize import minimize_scalar

    n_points = spectra.shape[1]
    rng = np.random.default_rng(seed)
    rows = rng.choice(len(levels), size=min(sample, len(levels)), replace=False)
    lv, sp = levels[rows], spectra[rows].astype(np.float64)

    def fit(log_sigma: float) -> tuple[float, float]:
        model = broaden(lv, float(np.exp(log_sigma)), n_points, e_min, e_max).astype(np.float64)
        scale = float((model * sp).sum() / max((model * model).sum(), 1e-300))
        return float(np.linalg.norm(scale * model - sp) / max(np.linalg.norm(sp), 1e-300)), scale

    best = minimize_scalar(lambda s: fit(s)[0], bounds=(np.log(0.01), np.log(5.0)),
                           method="bounded", options={"xatol": 1e-4})
    sigma = float(np.exp(best.x))
    rel, scale = fit(best.x)
    de = (e_max - e_min) / n_points
    return {
        "n_points": int(n_points),
        "assumed_window_eV": [e_min, e_max],
        "fitted_sigma_eV": round(sigma, 4),
        "fitted_scale": round(scale, 4),
        "relative_l2_difference_at_fit": round(rel, 6),
        "mean_area_over_16": round(float(sp.sum(axis=1).mean() * de / N_LEVELS), 4),
        "molecules_compared": int(len(rows)),
        "stored": False,
    }


def import_original(folder: str | Path, negated: bool = True) -> LevelsDataset:
    """A levels dataset (with Coulomb matrices) from a folder in the original format."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: not a folder (expected coulomb.npz and energies.txt in it)")
    coulomb = read_coulomb(folder / "coulomb.npz", negated)
    energies = read_energies(folder / "energies.txt")
    if len(coulomb) != len(energies):
        raise DataError(f"{folder}: coulomb.npz has {len(coulomb)} molecules but energies.txt "
                        f"has {len(energies)}")
    missing = np.isnan(energies).any(axis=1)
    keep = np.flatnonzero(~missing)
    levels = np.sort(energies[keep], axis=1).astype(np.float32)
    provenance: dict = {
        "method": "imported",
        "source": f"original dataset of {ZENODO}, imported from {folder.resolve()}",
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d"),
        "levels": "16 orbital energies from energies.txt, eV, sorted ascending",
        "coulomb": "coulomb.npz with the negation undone, otherwise as stored",
        "index": "0-based row in the original files (not a QM9 index)",
        "molecules": {"total": int(len(energies)), "ok": int(len(keep)),
                      "missing levels (-10000)": int(missing.sum())},
    }
    spectra_path = folder / "spectra.npz"
    if spectra_path.exists():
        spectra = _load_npz_key(spectra_path, "spectra")
        if spectra.ndim != 2 or len(spectra) != len(energies):
            raise DataError(f"{spectra_path}: 'spectra' has shape {spectra.shape}, expected "
                            f"({len(energies)}, Np): one spectrum per line of energies.txt")
        if spectra.shape[1] >= 2 and len(keep):
            provenance["original_spectra"] = compare_spectra(levels, spectra[keep])
        else:
            provenance["original_spectra"] = {"n_points": int(spectra.shape[1]), "stored": False}
    else:
        provenance["original_spectra"] = "absent"
    if not len(keep):
        raise DataError(f"{folder}: every molecule has a missing level (-10000); nothing to import")
    return LevelsDataset.create(keep, levels, provenance, coulomb=coulomb[keep])
