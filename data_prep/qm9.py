"""Real QM9 geometries: the PyPI package ``qm9pack`` and the original ``dsgdb9nsd_*.xyz`` files.

Geometries are kept zero-padded to 29 atoms, positions in Angstrom as QM9 gives them.
"""

from __future__ import annotations

import importlib.util
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from data_prep.cache import cache_root, discard_bad_cache
from data_prep.files import atomic_write
from model.contract import MATRIX_SIZE as MAX_ATOMS
from model.errors import DataError

ELEMENTS = {"H": 1, "C": 6, "N": 7, "O": 8, "F": 9}
#: Every element up to xenon, so that a molecule outside QM9 (Cl, S, ...) can be read and then
#: refused by name (``specopt predict``'s domain check) instead of failing on the symbol.
PERIODIC = {s: z for z, s in enumerate((
    "H He Li Be B C N O F Ne Na Mg Al Si P S Cl Ar K Ca Sc Ti V Cr Mn Fe Co Ni Cu Zn Ga Ge As "
    "Se Br Kr Rb Sr Y Zr Nb Mo Tc Ru Rh Pd Ag Cd In Sn Sb Te I Xe").split(), start=1)}
SYMBOLS = {z: s for s, z in PERIODIC.items()}
_NOBLE_CORES = (0, 2, 10, 18, 36)


def valence_electrons(Z) -> int:
    """Valence electrons of a neutral molecule with atomic numbers ``Z`` (0 = padding): each
    atom's electrons outside its noble-gas core, a filled d shell of a p-block atom counted as
    core (as GFN2-xTB's valence basis does: H 1, C 4, N 5, O 6, F 7, S 6, Cl 7)."""
    total = 0
    for z in np.asarray(Z, int).ravel():
        if z <= 0:
            continue
        v = int(z) - max(c for c in _NOBLE_CORES if c < z)
        total += v - 10 if v > 12 else v
    return total


def formula(Z) -> str:
    """The Hill formula of atomic numbers ``Z`` (0 = padding): C and H first, then A-Z."""
    counts: dict[str, int] = {}
    for z in np.asarray(Z, int).ravel():
        if z > 0:
            sym = SYMBOLS.get(int(z), f"Z{z}")
            counts[sym] = counts.get(sym, 0) + 1
    first = [s for s in ("C", "H") if s in counts] if "C" in counts else []
    order = first + sorted(s for s in counts if s not in first)
    return "".join(f"{s}{counts[s] if counts[s] > 1 else ''}" for s in order)
N_QM9PACK = 130_831


@dataclass(frozen=True)
class Geometries:
    """A batch of molecules, zero-padded to ``MAX_ATOMS`` atoms."""

    index: np.ndarray  # (N,) int32: QM9 index (the number in dsgdb9nsd_NNNNNN.xyz)
    n_atoms: np.ndarray  # (N,) int16
    Z: np.ndarray  # (N, 29) uint8 atomic numbers, 0 = padding
    R: np.ndarray  # (N, 29, 3) float32 positions in Angstrom

    def __len__(self) -> int:
        return len(self.index)

    def take(self, rows: np.ndarray) -> Geometries:
        return Geometries(self.index[rows], self.n_atoms[rows], self.Z[rows], self.R[rows])

    def rows_for(self, qm9_index: np.ndarray) -> np.ndarray:
        """Row numbers of the given QM9 indices; DataError names any that are missing."""
        order = np.argsort(self.index)
        pos = np.searchsorted(self.index, qm9_index, sorter=order)
        pos = np.clip(pos, 0, len(order) - 1)
        rows = order[pos]
        missing = self.index[rows] != qm9_index
        if missing.any():
            raise DataError(f"QM9 indices not in the geometries: {qm9_index[missing][:5].tolist()}")
        return rows


def atomic_numbers(symbols: list[str], source: str = "input",
                   any_element: bool = False) -> np.ndarray:
    try:
        return np.array([(PERIODIC if any_element else ELEMENTS)[s] for s in symbols],
                        dtype=np.uint8)
    except KeyError as err:
        raise DataError(f"{source}: unknown element {err.args[0]!r} "
                        f"({'H to Xe are read' if any_element else 'QM9 has H, C, N, O, F'})"
                        ) from None


def pad(Z: np.ndarray, R: np.ndarray, source: str = "input") -> tuple[np.ndarray, np.ndarray]:
    """Zero-pad one molecule to 29 atoms."""
    n = len(Z)
    if n > MAX_ATOMS:
        raise DataError(f"{source}: {n} atoms, more than the {MAX_ATOMS} a Coulomb matrix holds")
    if R.shape != (n, 3):
        raise DataError(f"{source}: positions have shape {R.shape}, expected ({n}, 3)")
    Zp = np.zeros(MAX_ATOMS, np.uint8)
    Rp = np.zeros((MAX_ATOMS, 3), np.float32)
    Zp[:n], Rp[:n] = Z, R
    return Zp, Rp


#: Atoms an ``.xyz`` file may declare: a molecule, not a crystal (``predict`` reads more than
#: MAX_ATOMS only to refuse them by name). A larger count is refused before any atom is read.
MAX_XYZ_ATOMS = 10_000
#: Characters of one line of an ``.xyz`` file (QM9's longest, the InChI, has about 100).
_MAX_LINE = 4096


def _xyz_line(f, path: Path, number: int) -> str:
    """Line ``number`` (1-based) of an open ``.xyz`` file, at most ``_MAX_LINE`` characters."""
    raw = f.readline(_MAX_LINE + 1)
    if len(raw) > _MAX_LINE:
        raise ValueError(f"line {number} is longer than {_MAX_LINE} characters")
    return raw.decode("utf-8")


def read_xyz(path: str | Path, any_molecule: bool = False) -> tuple[int, np.ndarray, np.ndarray]:
    """Read one QM9 ``.xyz`` file; returns (QM9 index, Z, R in Angstrom).

    QM9 writes Mathematica exponents (``1.2*^-6``); they are read as ``1.2e-6``.
    ``any_molecule``: also elements outside QM9 (up to Xe) and more than 29 atoms, for a caller
    that checks the molecule itself (``specopt predict``). The file is streamed: its atom count
    is checked first, then only that many atom lines are read (whatever follows is not).
    """
    path = Path(path)
    most = MAX_XYZ_ATOMS if any_molecule else MAX_ATOMS
    try:
        with path.open("rb") as f:
            first = _xyz_line(f, path, 1).split()
            if not first:
                raise ValueError("empty: no atom count on its first line")
            try:
                n = int(first[0])
            except ValueError:
                raise ValueError(f"atom count {first[0]!r} is not a whole number") from None
            if n < 1:
                raise ValueError(f"atom count {n}: a molecule has at least one atom")
            if n > most:
                raise DataError(f"{path}: {n} atoms, more than the {most} "
                                + ("a Coulomb matrix holds" if most == MAX_ATOMS else
                                   "an .xyz molecule may have (a molecule, not a crystal)"))
            header = _xyz_line(f, path, 2).split()
            rows = []
            for k in range(n):
                line = _xyz_line(f, path, 3 + k)
                if not line:
                    break
                rows.append(line.replace("*^", "e").split())
        index = int(header[1]) if len(header) > 1 and header[0] == "gdb" else _index_from_name(path)
        if len(rows) != n or any(len(r) < 4 for r in rows):
            raise ValueError(f"expected {n} atom lines")
        Z = atomic_numbers([r[0] for r in rows], str(path), any_element=any_molecule)
        R = np.array([[float(x) for x in r[1:4]] for r in rows], dtype=np.float64)
        bad = np.flatnonzero(~np.isfinite(R).all(axis=1))
        if len(bad):
            i = int(bad[0])
            raise DataError(f"{path}: atom {i + 1} ({rows[i][0]}) has a non-finite coordinate "
                            f"({' '.join(rows[i][1:4])}); fix the file")
    except DataError:
        raise
    except (ValueError, IndexError, OSError) as err:
        raise DataError(f"{path}: malformed QM9 .xyz file ({err})") from None
    return index, Z, R


def _index_from_name(path: Path) -> int:
    # The last number: "dsgdb9nsd_000003" is molecule 3 (not the 9 in "dsgdb9nsd").
    numbers = re.findall(r"\d+", path.stem)
    return int(numbers[-1]) if numbers else 0


def read_xyz_files(paths: list[Path]) -> tuple[Geometries, list[str]]:
    """Read many ``.xyz`` files, skipping bad ones.

    Returns the geometries and one error line per bad file (a batch never dies on one file).
    """
    idx, nat, Zs, Rs, errors = [], [], [], [], []
    for p in paths:
        try:
            i, Z, R = read_xyz(p)
        except DataError as err:
            errors.append(str(err))
            continue
        Zp, Rp = pad(Z, R, str(p))
        idx.append(i), nat.append(len(Z)), Zs.append(Zp), Rs.append(Rp)
    geoms = Geometries(
        np.array(idx, np.int32),
        np.array(nat, np.int16),
        np.array(Zs, np.uint8).reshape(-1, MAX_ATOMS),
        np.array(Rs, np.float32).reshape(-1, MAX_ATOMS, 3),
    )
    return geoms, errors


def qm9pack_dir() -> Path:
    # find_spec does not import qm9pack, whose __init__ needs the removed pkg_resources.
    spec = importlib.util.find_spec("qm9pack")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("the qm9pack package is not installed: pip install qm9pack")
    return Path(spec.submodule_search_locations[0]) / "data"


def _parse_numbers(strings: list[str]) -> np.ndarray:
    # XYZ_Ang holds Python float literals such as "0." (not JSON): strip the brackets, split.
    text = " ".join(strings).translate(str.maketrans("[],", "   "))
    return np.array(text.split(), dtype=np.float64)


def _read_geometries_cache(cache: Path) -> Geometries | None:
    """The cached geometries, or None (a warning naming the file, which is removed) when the
    file is truncated, corrupt, of the wrong shape or holds a non-finite position."""
    try:
        with np.load(cache, allow_pickle=False) as f:
            g = Geometries(f["index"], f["n_atoms"], f["Z"], f["R"])
        n = len(g.index)
        if g.n_atoms.shape != (n,) or g.Z.shape != (n, MAX_ATOMS) or g.R.shape != (n, MAX_ATOMS, 3):
            raise ValueError("arrays of the wrong shape")
        if not np.isfinite(g.R).all():
            raise ValueError("non-finite positions")
        return g
    except Exception as err:  # deliberately broad: any unreadable cache file is rebuilt
        discard_bad_cache(cache, err)
        return None


def load_qm9pack(cache_dir: Path | None = None) -> Geometries:
    """All 130,831 QM9 geometries from qm9pack, cached as ``.npz`` after the first parse."""
    cache = (cache_dir or cache_root()) / "qm9pack_geometries.npz"
    if cache.exists():
        cached = _read_geometries_cache(cache)
        if cached is not None:
            return cached
    import pandas as pd

    parts = sorted(qm9pack_dir().glob("qm9_part*.csv"))
    if not parts:
        raise DataError(f"no qm9_part*.csv in {qm9pack_dir()}")
    cols = ["Index", "N_atoms", "Elements", "XYZ_Ang"]
    df = pd.concat([pd.read_csv(p, usecols=cols) for p in parts], ignore_index=True)
    df = df.sort_values("Index", kind="stable").reset_index(drop=True)
    n_atoms = df["N_atoms"].to_numpy(np.int16)
    if n_atoms.max() > MAX_ATOMS:
        raise DataError(f"qm9pack: a molecule has {n_atoms.max()} atoms (> {MAX_ATOMS})")
    symbols = " ".join(df["Elements"]).translate(str.maketrans("[],'\"", "     ")).split()
    Z_flat = atomic_numbers(symbols, "qm9pack")
    R_flat = _parse_numbers(df["XYZ_Ang"].tolist()).reshape(-1, 3)
    if len(Z_flat) != n_atoms.sum() or len(R_flat) != n_atoms.sum():
        raise DataError("qm9pack: element or coordinate counts disagree with N_atoms")
    mask = np.arange(MAX_ATOMS)[None, :] < n_atoms[:, None]
    Z = np.zeros((len(df), MAX_ATOMS), np.uint8)
    R = np.zeros((len(df), MAX_ATOMS, 3), np.float32)
    Z[mask], R[mask] = Z_flat, R_flat
    geoms = Geometries(df["Index"].to_numpy(np.int32), n_atoms, Z, R)
    atomic_write(cache, lambda f: np.savez(f, index=geoms.index, n_atoms=geoms.n_atoms,
                                           Z=geoms.Z, R=geoms.R))
    return geoms
