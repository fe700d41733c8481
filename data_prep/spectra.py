"""Broadened spectra: unit-area Gaussians of width sigma at the 16 levels, on a uniform grid."""

from __future__ import annotations

import math
from numbers import Integral, Real

import numpy as np
import torch

from data_prep.qm9 import DataError

E_MIN, E_MAX = -30.0, 0.0


def check_grid(sigma: float, n_points: int, e_min: float = E_MIN, e_max: float = E_MAX) -> None:
    if isinstance(sigma, bool) or not (isinstance(sigma, Real) and math.isfinite(sigma)
                                       and sigma > 0):
        raise DataError(f"sigma must be a positive number of eV, got {sigma!r}")
    if isinstance(n_points, bool) or not isinstance(n_points, Integral) or n_points < 2:
        raise DataError(f"Np (number of grid points) must be an integer >= 2, got {n_points!r}")
    if not (isinstance(e_min, Real) and isinstance(e_max, Real) and math.isfinite(e_min)
            and math.isfinite(e_max) and e_max > e_min):
        raise DataError(f"empty energy window: e_min={e_min} must be below e_max={e_max}")


def energy_grid(n_points: int, e_min: float = E_MIN, e_max: float = E_MAX) -> np.ndarray:
    """``linspace(e_min, e_max, n_points)`` in eV (float64)."""
    return np.linspace(e_min, e_max, n_points)


def broaden(
    levels_eV, sigma: float, n_points: int, e_min: float = E_MIN, e_max: float = E_MAX,
    chunk: int = 4096,
) -> np.ndarray:
    """(..., n_points) float32 spectra: sum of unit-area Gaussians of width ``sigma`` eV.

    Levels outside the window simply contribute their tails; NaN levels contribute nothing.
    """
    check_grid(sigma, n_points, e_min, e_max)
    levels = np.asarray(levels_eV, np.float32)
    flat = torch.from_numpy(np.ascontiguousarray(levels.reshape(-1, levels.shape[-1])))
    grid = torch.from_numpy(energy_grid(n_points, e_min, e_max).astype(np.float32))
    out = torch.empty(len(flat), n_points)
    norm = 1.0 / (sigma * math.sqrt(2.0 * math.pi))
    with torch.inference_mode():
        for s in range(0, len(flat), chunk):
            x = (grid[None, None, :] - flat[s : s + chunk, :, None]) * (1.0 / sigma)
            g = torch.exp(-0.5 * x * x).nan_to_num_(0.0)
            torch.sum(g, dim=1, out=out[s : s + chunk]).mul_(norm)
    return out.numpy().reshape(*levels.shape[:-1], n_points)
