"""Benchmark of the data preparation that every trial pays for.

Seconds (best of 3) to build the spectra of all molecules at (sigma 0.5 eV, Np 300) and
(0.1 eV, 700), and to randomise one epoch of Coulomb matrices (all molecules). Target: each
under 2 s for ~130k molecules on a 2-core machine.

    python -m bench.data_prep [--dataset FILE] [--repeat 3] [--dense]

Uses the bundled dataset; when it is missing, 130,831 synthetic level sets drawn like real ones
(and says so).
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from data_prep import (
    broaden,
    coulomb_matrices,
    load_levels,
    load_qm9pack,
    randomize_coulomb,
)
from data_prep.dataset import BUNDLED_PATH
from data_prep.qm9 import N_QM9PACK
from data_prep.training_data import dataset_coulomb

TARGET_S = 2.0


def synthetic_levels(n: int, seed: int = 0) -> np.ndarray:
    """Levels drawn like GFN2-xTB's for QM9: 16 sorted values, about -30 to -8 eV, and
    near-degenerate groups."""
    rng = np.random.default_rng(seed)
    homo = rng.normal(-10.5, 0.8, (n, 1))
    gaps = rng.gamma(1.2, 0.55, (n, 15))
    gaps[rng.random((n, 15)) < 0.2] *= 1e-3  # degeneracies
    levels = homo - np.concatenate([np.zeros((n, 1)), np.cumsum(gaps, axis=1)], axis=1)
    return np.sort(levels, axis=1).astype(np.float32)


def best_of(repeat: int, fn) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", type=Path, default=None, help="levels .npz (default: bundled)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--dense", action="store_true", help="also time the dense broadening")
    args = ap.parse_args()

    path = args.dataset or BUNDLED_PATH
    if path.exists():
        ds = load_levels(path)
        levels = ds.levels
        source = f"{path} ({len(ds):,} molecules, {ds.provenance.get('method', '?')})"
        coulomb = dataset_coulomb(ds)
    else:
        levels = synthetic_levels(N_QM9PACK)
        source = (f"SYNTHETIC: {path} is missing; {N_QM9PACK:,} level sets drawn like real "
                  "ones, Coulomb matrices of all qm9pack molecules")
        g = load_qm9pack()
        coulomb = coulomb_matrices(g.Z, g.R)
    C = torch.from_numpy(coulomb)
    n = len(levels)

    print(f"data: {source}")
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"torch {torch.__version__} with {torch.get_num_threads()} threads")
    rows = []
    for sigma, n_points in [(0.5, 300), (0.1, 700)]:
        t = best_of(args.repeat, lambda s=sigma, p=n_points: broaden(levels, s, p))
        rows.append((f"spectra, sigma {sigma}, Np {n_points}", t))
        if args.dense:
            t = best_of(args.repeat, lambda s=sigma, p=n_points: broaden(levels, s, p,
                                                                         method="dense"))
            rows.append((f"spectra, sigma {sigma}, Np {n_points} (dense)", t))
    gen = torch.Generator().manual_seed(0)
    rows.append(("randomise one epoch of Coulomb matrices",
                 best_of(args.repeat, lambda: randomize_coulomb(C, generator=gen))))

    print(f"\n| step ({n:,} molecules, best of {args.repeat}) | seconds "
          f"| under {TARGET_S:g} s |")
    print("|---|---:|---|")
    for name, t in rows:
        print(f"| {name} | {t:.3f} | {'yes' if t < TARGET_S else 'NO'} |")


if __name__ == "__main__":
    main()
