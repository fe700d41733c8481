"""The 16 highest occupied orbital energies (eV) per molecule: GFN2-xTB via tblite, or PySCF.

Work is split into chunks written atomically to a parts folder, so an interrupted build resumes
where it stopped and never recomputes a finished chunk. Molecules with fewer than 16 occupied
levels, or whose calculation fails, are dropped and counted.
"""

from __future__ import annotations

import contextlib
import os
from collections import Counter
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from data_prep.cache import discard_bad_cache
from data_prep.files import atomic_write
from data_prep.progress import bar as progress_bar
from data_prep.qm9 import Geometries
from model.contract import BOHR_ANGSTROM, HARTREE_EV, N_LEVELS
from model.errors import DataError

# Per-molecule status codes stored in every chunk.
OK, TOO_FEW, FAILED = 0, 1, 2
STATUS_NAMES = {OK: "ok", TOO_FEW: "fewer than 16 occupied levels", FAILED: "calculation failed"}

XTB_METHODS = {"gfn2-xtb": "GFN2-xTB", "gfn1-xtb": "GFN1-xTB", "ipea1-xtb": "IPEA1-xTB"}


@dataclass(frozen=True)
class Method:
    """A parsed ``--method``: ``gfn2-xtb`` (default), ``gfn1-xtb``, or ``pyscf:XC/BASIS``."""

    name: str

    @classmethod
    def parse(cls, text: str) -> Method:
        t = text.strip().lower()
        if t in XTB_METHODS:
            return cls(t)
        if t.startswith("pyscf:") and "/" in t and all(t[6:].split("/", 1)):
            return cls(t)
        raise DataError(
            f"unknown method {text!r}: use one of {', '.join(XTB_METHODS)} or pyscf:XC/BASIS "
            "(e.g. pyscf:hf/sto-3g, pyscf:pbe0/6-31g)"
        )

    @property
    def is_xtb(self) -> bool:
        return self.name in XTB_METHODS

    def version(self) -> str:
        from importlib.metadata import version

        return f"tblite {version('tblite')}" if self.is_xtb else f"pyscf {version('pyscf')}"


def occupied_top(energies_eV: np.ndarray, n_occupied: int) -> np.ndarray | None:
    """The 16 highest of the lowest ``n_occupied`` orbital energies, ascending; None if fewer."""
    if n_occupied < N_LEVELS:
        return None
    return np.sort(energies_eV)[n_occupied - N_LEVELS : n_occupied]


def _xtb_levels(method: str, Z: np.ndarray, R_bohr: np.ndarray) -> np.ndarray | None:
    from tblite.interface import Calculator

    calc = Calculator(XTB_METHODS[method], Z, R_bohr)
    calc.set("verbosity", 0)
    res = calc.singlepoint()
    occ = res.get("orbital-occupations")
    # Closed-shell molecules: a small electronic temperature can smear the HOMO, so round.
    n_occ = int(round(float(occ.sum()) / 2.0))
    return occupied_top(res.get("orbital-energies") * HARTREE_EV, n_occ)


def _pyscf_levels(method: str, Z: np.ndarray, R_ang: np.ndarray) -> np.ndarray | None:
    from pyscf import dft, gto, scf

    xc, basis = method[len("pyscf:") :].split("/", 1)
    mol = gto.M(atom=[(int(z), r) for z, r in zip(Z, R_ang, strict=True)], basis=basis,
                unit="Angstrom", verbose=0)
    mf = scf.RHF(mol) if xc == "hf" else dft.RKS(mol, xc=xc)
    mf.kernel()
    if not mf.converged:
        raise RuntimeError("SCF did not converge")
    return occupied_top(np.asarray(mf.mo_energy) * HARTREE_EV, mol.nelectron // 2)


def levels_of_one(method: str, Z: np.ndarray, R_ang: np.ndarray) -> np.ndarray | None:
    """16 highest occupied levels (eV, ascending) of one unpadded molecule; None if fewer."""
    if method in XTB_METHODS:
        return _xtb_levels(method, np.asarray(Z, int), np.asarray(R_ang, float) / BOHR_ANGSTROM)
    return _pyscf_levels(method, np.asarray(Z, int), np.asarray(R_ang, float))


def _compute_chunk(method: str, geoms: Geometries) -> tuple[np.ndarray, np.ndarray]:
    levels = np.full((len(geoms), N_LEVELS), np.nan, np.float32)
    status = np.full(len(geoms), OK, np.uint8)
    for i in range(len(geoms)):
        n = int(geoms.n_atoms[i])
        try:
            lv = levels_of_one(method, geoms.Z[i, :n], geoms.R[i, :n])
        except Exception:  # deliberately broad: one molecule's failure is counted, not fatal
            status[i] = FAILED
            continue
        if lv is None:
            status[i] = TOO_FEW
        else:
            levels[i] = lv
    return levels, status


def _single_threaded():
    """Limit the OpenMP / BLAS pools already loaded (tblite's, torch's) to one thread.

    Setting OMP_NUM_THREADS is not enough once torch has loaded libgomp (``import data_prep``
    does), and two OpenMP threads per process on busy cores made GFN2-xTB 10-20x slower.
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
        return contextlib.nullcontext()
    return threadpool_limits(1)


def _worker_init() -> None:
    # One thread per process: the parallelism is over molecules.
    os.environ["OMP_NUM_THREADS"] = "1"
    os.environ["OPENBLAS_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)
    _single_threaded()  # applies for the life of the worker


@dataclass
class LevelsResult:
    index: np.ndarray  # (n_ok,) int32 QM9 indices
    levels: np.ndarray  # (n_ok, 16) float32 eV, ascending
    counts: dict[str, int]  # molecules per status name, plus "total"


def compute_levels(
    geoms: Geometries,
    method: str = "gfn2-xtb",
    parts_dir: Path | None = None,
    workers: int | None = None,
    chunk_size: int = 500,
    progress: bool | None = None,
) -> LevelsResult:
    """Compute levels for every molecule, in parallel; resumable through ``parts_dir``.
    ``progress``: a bar per molecule (None: see :mod:`data_prep.progress`)."""
    m = Method.parse(method)
    workers = workers or os.cpu_count() or 1
    starts = list(range(0, len(geoms), chunk_size))
    todo = [s for s in starts if parts_dir is None
            or _read_part(parts_dir, s, geoms.index[s : s + chunk_size]) is None]
    results: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    if parts_dir is not None:
        parts_dir.mkdir(parents=True, exist_ok=True)

    done = len(geoms) - sum(min(chunk_size, len(geoms) - s) for s in todo)
    bar = progress_bar(progress, total=len(geoms), initial=done, unit="mol",
                       desc=f"levels ({m.name})")

    def finish(s: int, levels: np.ndarray, status: np.ndarray) -> None:
        if parts_dir is not None:
            _save_part(parts_dir, s, geoms.index[s : s + chunk_size], levels, status)
        else:
            results[s] = (levels, status)
        bar.update(len(status))

    if workers == 1 or len(todo) <= 1:
        # No pool: nothing to parallelise (and no process start-up to pay for).
        with _single_threaded():
            for s in todo:
                finish(s, *_compute_chunk(m.name, geoms.take(slice(s, s + chunk_size))))
    else:
        import multiprocessing as mp

        with ProcessPoolExecutor(min(workers, len(todo)), mp_context=mp.get_context("spawn"),
                                 initializer=_worker_init) as pool:
            futures = {
                pool.submit(_compute_chunk, m.name, geoms.take(slice(s, s + chunk_size))): s
                for s in todo
            }
            for fut in as_completed(futures):
                finish(futures[fut], *fut.result())
    bar.close()
    if parts_dir is not None:
        results = {s: _load_part(parts_dir, s, geoms.index[s : s + chunk_size]) for s in starts}
    levels = np.concatenate([results[s][0] for s in starts]) if starts else np.zeros((0, N_LEVELS))
    status = np.concatenate([results[s][1] for s in starts]) if starts else np.zeros(0, np.uint8)
    counts = Counter(STATUS_NAMES[int(c)] for c in status)
    summary = {"total": len(geoms), **{name: counts.get(name, 0) for name in STATUS_NAMES.values()}}
    ok = status == OK
    return LevelsResult(geoms.index[ok], levels[ok].astype(np.float32), summary)


def _part_path(parts_dir: Path, start: int) -> Path:
    return parts_dir / f"chunk_{start:07d}.npz"


def _save_part(parts_dir: Path, start: int, index, levels, status) -> None:
    atomic_write(_part_path(parts_dir, start),
                 lambda f: np.savez(f, index=index, levels=levels, status=status))


def _load_part(parts_dir: Path, start: int, index: np.ndarray):
    part = _read_part(parts_dir, start, index)
    if part is None:
        raise DataError(f"{_part_path(parts_dir, start)}: could not be read back after it was "
                        "written; run the build again (it resumes)")
    return part


def _read_part(parts_dir: Path, start: int, index: np.ndarray):
    """(levels, status) of a finished chunk; None when it is not there, or is truncated,
    corrupt or inconsistent (then it is removed, with a warning naming it, and recomputed).
    A chunk of other molecules is a DataError: the folder belongs to another build."""
    path = _part_path(parts_dir, start)
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as f:
            stored, levels, status = f["index"], f["levels"], f["status"]
    except Exception as err:  # deliberately broad: any unreadable chunk is recomputed
        discard_bad_cache(path, err)
        return None
    if not np.array_equal(stored, index):
        raise DataError(f"{parts_dir}: chunk {start} was computed for other molecules; "
                        "delete the parts folder to start over")
    if status.shape != index.shape or levels.shape != (len(index), N_LEVELS):
        discard_bad_cache(path, f"arrays of the wrong shape (levels {levels.shape}, status "
                          f"{status.shape}, {len(index)} molecules)")
        return None
    good = levels[status == OK]
    if not (np.isfinite(good).all() and (np.diff(good, axis=1) >= 0).all()):
        discard_bad_cache(path, "NaN, infinite or unordered levels of a finished molecule")
        return None
    return levels, status
