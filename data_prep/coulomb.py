"""Coulomb matrices (Rupp et al. 2012) and their randomised variant (Montavon et al. 2013).

Positions are given in Angstrom and converted to bohr, so off-diagonal entries are
Z_i Z_j / |R_i - R_j| in atomic units (hartree per elementary charge squared).
"""

from __future__ import annotations

import numpy as np
import torch

from data_prep.qm9 import MAX_ATOMS, pad
from model.contract import BOHR_PER_ANGSTROM
from model.errors import DataError


def coulomb_matrices(Z: np.ndarray, R_angstrom: np.ndarray, chunk: int = 8192) -> np.ndarray:
    """(N, 29, 29) float32 Coulomb matrices of zero-padded molecules (Z = 0 marks padding)."""
    Z = np.asarray(Z)
    R = np.asarray(R_angstrom, np.float64) * BOHR_PER_ANGSTROM
    if Z.ndim != 2 or R.shape != (*Z.shape, 3):
        raise DataError(f"expected Z (N, n) and R (N, n, 3); got {Z.shape} and {R.shape}")
    if Z.shape[1] > MAX_ATOMS:
        raise DataError(f"{Z.shape[1]} atom slots, more than {MAX_ATOMS}")
    out = np.zeros((len(Z), MAX_ATOMS, MAX_ATOMS), np.float32)
    n = Z.shape[1]
    eye = np.eye(n, dtype=bool)
    if not np.isfinite(R).all():  # finite in Angstrom (1e308) but not once in bohr
        raise DataError("a coordinate is too large: it overflows once converted to bohr")
    for s in range(0, len(Z), chunk):
        z = Z[s : s + chunk].astype(np.float64)
        with np.errstate(over="ignore", invalid="ignore"):
            d = np.linalg.norm(R[s : s + chunk, :, None, :] - R[s : s + chunk, None, :, :],
                               axis=-1)
        zz = z[:, :, None] * z[:, None, :]
        if not np.isfinite(d[zz != 0]).all():
            raise DataError("two atoms are too far apart: their distance overflows")
        with np.errstate(divide="ignore", invalid="ignore"):
            c = np.where(eye, 0.5 * z[:, :, None] ** 2.4, zz / d)
        c[~np.isfinite(c) | (zz == 0)] = 0.0
        if np.any((d < 1e-3) & ~eye & (zz != 0)):
            raise DataError("two atoms at the same position")
        out[s : s + chunk, :n, :n] = c
    return out


def coulomb_matrix(Z, R_angstrom) -> np.ndarray:
    """(29, 29) Coulomb matrix of one molecule; Z (n,), R (n, 3) in Angstrom, unsorted."""
    Zp, Rp = pad(np.asarray(Z), np.asarray(R_angstrom, np.float64))
    return coulomb_matrices(Zp[None], Rp[None].astype(np.float64))[0]


def _permute_by_row_norm(C: torch.Tensor, noise: float, generator) -> torch.Tensor:
    if not noise:
        # The plain sort decides near-ties (symmetric atoms, whose rows differ a lot) by the
        # rounding of the norm, so sum the row's sorted squares in float64: the result does not
        # depend on the column order, and sorting a sorted matrix changes nothing.
        norms = torch.sort(C.double().square(), dim=-1).values.sum(dim=-1).sqrt()
    else:
        norms = torch.linalg.vector_norm(C, dim=-1)
    if noise:
        norms = norms + noise * torch.randn(norms.shape, generator=generator, device=C.device,
                                            dtype=norms.dtype)
    # Padding rows (no atom: zero diagonal) stay at the end whatever the noise draws.
    padding = torch.diagonal(C, dim1=-2, dim2=-1) == 0
    norms = norms.masked_fill(padding, float("-inf"))
    order = torch.argsort(norms, dim=-1, descending=True, stable=True)
    n = C.shape[-1]
    rows = torch.gather(C, -2, order.unsqueeze(-1).expand(*order.shape, n))
    return torch.gather(rows, -1, order.unsqueeze(-2).expand(*order.shape[:-1], n, n))


def randomize_coulomb(C, noise: float = 1.0, generator: torch.Generator | None = None):
    """Randomised Coulomb matrices: add N(0, noise^2) to the row norms, sort them descending,
    and permute rows AND columns by that order. Batched; torch tensors stay on their device,
    numpy arrays come back as numpy arrays."""
    if isinstance(C, np.ndarray):
        return _permute_by_row_norm(torch.from_numpy(C), noise, generator).numpy()
    return _permute_by_row_norm(C, noise, generator)


def sort_coulomb(C):
    """Sort rows and columns by descending row norm (the evaluation-time representation)."""
    return randomize_coulomb(C, noise=0.0)
