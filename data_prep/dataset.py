"""The levels dataset: 16 orbital energies per molecule, its fixed split, and its provenance.

One compressed ``.npz`` holds ``index`` (QM9 index), ``levels`` (N x 16 float32, eV, ascending),
``split`` (0 train, 1 test, 2 validation: 90/5/5, seeded), ``rank`` (a seeded order for taking
subsets: a subset of n molecules is those of rank < n, so every subset's test and validation
molecules are also test and validation molecules of the full set), ``provenance`` (JSON), and
optionally ``coulomb`` (N x 29 x 29, for datasets imported without geometries).
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from data_prep.files import atomic_write
from model.contract import MATRIX_SIZE, N_LEVELS
from model.errors import DataError

TRAIN, TEST, VALIDATION = 0, 1, 2
SPLIT_NAMES = {TRAIN: "train", TEST: "test", VALIDATION: "validation"}
SPLIT_FRACTIONS = (0.90, 0.05, 0.05)
SPLIT_SEED = 2019

_DATA = Path(__file__).parent / "data"
#: Datasets shipped with specopt, by name (``TrainConfig.dataset``, ``specopt data info NAME``):
#: all of QM9 (qm9pack) at a tblite level. IPEA1-xTB is closer to QM9's B3LYP HOMO and less
#: compressed (docs/levels_quality.md); GFN2-xTB stays the default (the report reproductions).
BUNDLED_DATASETS: dict[str, Path] = {
    "gfn2-xtb": _DATA / "qm9_gfn2xtb_levels.npz",
    "ipea1-xtb": _DATA / "qm9_ipea1xtb_levels.npz",
}
DEFAULT_DATASET = "gfn2-xtb"
BUNDLED_PATH = BUNDLED_DATASETS[DEFAULT_DATASET]


def dataset_path(dataset: str | Path | None) -> Path:
    """The file of a dataset: a bundled name (``gfn2-xtb``, ``ipea1-xtb``), a path, or None (the
    default bundled one)."""
    if dataset is None:
        return BUNDLED_PATH
    return BUNDLED_DATASETS.get(str(dataset), Path(dataset))


def check_output(path: Path) -> None:
    """DataError where a file (a dataset, a result) cannot be written to ``path``, said before
    any work: a folder, FIFO or device is there (the write's final rename would replace a
    device), or the nearest existing folder above it is a file or not writable (read-only, not
    this user's)."""
    if path.exists() and not path.is_file():
        kind = "a folder" if path.is_dir() else "a device, FIFO or socket"
        raise DataError(f"{path}: {kind}, not a file: give a file's path")
    folder = path.parent
    while not folder.exists():  # the root always does
        folder = folder.parent
    if not folder.is_dir():
        raise DataError(f"{path}: {folder} is a file, not a folder: give another path")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise DataError(f"{path}: cannot write in {folder} (read-only or not this user's): "
                        "give a writable path")


def make_split(n: int, seed: int = SPLIT_SEED) -> tuple[np.ndarray, np.ndarray]:
    """(split labels, subset ranks) for n molecules, both from one seeded generator."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(n)
    n_train = int(round(SPLIT_FRACTIONS[0] * n))
    n_test = int(round(SPLIT_FRACTIONS[1] * n))
    split = np.full(n, VALIDATION, np.uint8)
    split[order[:n_train]] = TRAIN
    split[order[n_train : n_train + n_test]] = TEST
    rank = np.empty(n, np.int32)
    rank[rng.permutation(n)] = np.arange(n, dtype=np.int32)
    return split, rank


def _molecules(index: np.ndarray, rows: np.ndarray, most: int = 5) -> str:
    shown = ", ".join(str(int(index[r])) for r in rows[:most])
    return shown + (" ..." if len(rows) > most else "")


def check_levels(index: np.ndarray, levels: np.ndarray) -> None:
    """DataError (one line, naming the molecules) for NaN/inf levels, levels not in ascending
    order, or a QM9 index that occurs twice: such a dataset would train to nonsense."""
    finite = np.isfinite(levels).all(axis=1)
    if not finite.all():
        bad = np.flatnonzero(~finite)
        raise DataError(f"{len(bad)} molecules have NaN or infinite levels (QM9 index "
                        f"{_molecules(index, bad)}); rebuild or re-import the dataset")
    unordered = (np.diff(levels, axis=1) < 0).any(axis=1)
    if unordered.any():
        bad = np.flatnonzero(unordered)
        raise DataError(f"{len(bad)} molecules have levels not in ascending order (QM9 index "
                        f"{_molecules(index, bad)}); rebuild or re-import the dataset")
    values, counts = np.unique(index, return_counts=True)
    if (counts > 1).any():
        dup = values[counts > 1]
        raise DataError(f"{len(dup)} QM9 indices occur more than once ("
                        f"{', '.join(str(int(i)) for i in dup[:5])}"
                        f"{' ...' if len(dup) > 5 else ''}); rebuild or re-import the dataset")


@dataclass(frozen=True)
class LevelsDataset:
    index: np.ndarray
    levels: np.ndarray
    split: np.ndarray
    rank: np.ndarray
    provenance: dict = field(default_factory=dict)
    coulomb: np.ndarray | None = None  # only for imported datasets without geometries

    def __post_init__(self) -> None:
        n = len(self.index)
        if self.levels.shape != (n, N_LEVELS):
            raise DataError(f"levels have shape {self.levels.shape}, expected ({n}, {N_LEVELS})")
        if len(self.split) != n or len(self.rank) != n:
            raise DataError("split and rank must have one entry per molecule")
        size = (MATRIX_SIZE, MATRIX_SIZE)
        if self.coulomb is not None and self.coulomb.shape != (n, *size):
            raise DataError(f"coulomb has shape {self.coulomb.shape}, expected ({n}, {size})")
        check_levels(self.index, self.levels)
        if self.coulomb is not None and not np.isfinite(self.coulomb).all():
            bad = np.flatnonzero(~np.isfinite(self.coulomb.reshape(n, -1)).all(axis=1))
            raise DataError(f"{len(bad)} Coulomb matrices hold NaN or inf (molecule "
                            f"{_molecules(self.index, bad)})")

    def __len__(self) -> int:
        return len(self.index)

    @classmethod
    def create(cls, index, levels, provenance: dict, coulomb=None, seed: int = SPLIT_SEED):
        split, rank = make_split(len(index), seed)
        provenance = {**provenance, "split": {"fractions": SPLIT_FRACTIONS, "seed": seed}}
        return cls(np.asarray(index, np.int32), np.asarray(levels, np.float32), split, rank,
                   provenance, None if coulomb is None else np.asarray(coulomb, np.float32))

    def subset(self, n: int | None) -> LevelsDataset:
        """The n molecules of lowest rank (all when n is None), in dataset order."""
        if n is None or n == len(self):
            return self
        if n > len(self):
            raise DataError(f"subset of {n} molecules is larger than the dataset, which has "
                            f"{len(self)}: give a subset of at most {len(self)}, or none")
        if n < 20:
            raise DataError(f"subset of {n} molecules is too small (at least 20)")
        keep = self.rank < n
        return LevelsDataset(
            self.index[keep], self.levels[keep], self.split[keep], self.rank[keep],
            {**self.provenance, "subset": n},
            None if self.coulomb is None else self.coulomb[keep],
        )

    def rows(self, part: int) -> np.ndarray:
        return np.flatnonzero(self.split == part)

    @property
    def fingerprint(self) -> str:
        """Short content hash: names cache entries derived from this dataset."""
        h = hashlib.sha256()
        for a in (self.index, self.levels, self.split):
            h.update(np.ascontiguousarray(a).tobytes())
        if self.coulomb is not None:
            h.update(np.ascontiguousarray(self.coulomb).tobytes())
        return h.hexdigest()[:16]

    def save(self, path: str | Path) -> None:
        path = Path(path)
        check_output(path)
        arrays = dict(index=self.index, levels=self.levels, split=self.split, rank=self.rank,
                      provenance=np.array(json.dumps(self.provenance, indent=1)))
        if self.coulomb is not None:
            arrays["coulomb"] = self.coulomb
        atomic_write(path, lambda f: np.savez_compressed(f, **arrays))

    def summary(self) -> dict:
        counts = {SPLIT_NAMES[k]: int((self.split == k).sum()) for k in SPLIT_NAMES}
        return {
            "molecules": len(self),
            **counts,
            "levels_eV": [float(self.levels.min()), float(self.levels.max())] if len(self) else [],
            "fingerprint": self.fingerprint,
            "provenance": self.provenance,
        }


#: The first bytes of a zip archive (an .npz), of a single .npy array and of a Python pickle.
_ZIP_MAGIC, _NPY_MAGIC, _PICKLE_MAGIC = (b"PK\x03\x04", b"PK\x05\x06"), b"\x93NUMPY", b"\x80"


def read_npz(path: Path, what: str) -> dict[str, np.ndarray]:
    """Every array of the ``.npz`` archive at ``path``, never unpickling; DataError ``PATH: not
    WHAT (why)`` for anything else: not a regular file (a FIFO would block the read), a single
    ``.npy`` array, a pickle (loading one can run code), object arrays, a corrupt or truncated
    archive, arrays too large for memory."""
    def refused(why: str) -> DataError:
        return DataError(f"{path}: not {what} ({why})")

    try:
        regular = path.is_file()
    except OSError:
        regular = False
    if not regular:
        raise refused("not a regular file")
    pickled = "it holds pickled Python objects, which specopt never loads: they can run code"
    try:
        with open(path, "rb") as f:
            head = f.read(6)
        if not head.startswith(_ZIP_MAGIC):
            raise refused("a single .npy array" if head.startswith(_NPY_MAGIC) else pickled
                          if head.startswith(_PICKLE_MAGIC) else "not a zip archive")
        with np.load(path, allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}
    except DataError:
        raise
    except ValueError as err:  # numpy's advice to load a pickle unsafely is not ours to give
        raise refused(pickled if "pickle" in str(err) else str(err)) from None
    except MemoryError:
        raise refused("its arrays do not fit in memory") from None
    except (OSError, EOFError, KeyError, zipfile.BadZipFile) as err:
        raise refused(str(err)) from None


#: The arrays of a levels dataset file: their dtype kinds and dimensions (``coulomb`` optional).
_LEVELS_ARRAYS = {"index": ("iu", 1), "levels": ("f", 2), "split": ("iu", 1),
                  "rank": ("iu", 1), "provenance": ("U", 0), "coulomb": ("f", 3)}
_KINDS = {"iu": "integers", "f": "floats", "U": "text"}


def _levels_dataset(a: dict[str, np.ndarray]) -> LevelsDataset:
    """The dataset of a file's arrays: each of the right kind, split labels of the three
    parts, ranks a permutation (subsets nest), provenance a JSON object."""
    for key, (kinds, ndim) in _LEVELS_ARRAYS.items():
        if key not in a:
            if key == "coulomb":
                continue
            raise DataError(f"not a specopt levels dataset: no array {key!r} (it has "
                            f"{', '.join(a) or 'none'})")
        if a[key].dtype.kind not in kinds or a[key].ndim != ndim:
            raise DataError(f"{key!r} holds {a[key].dtype} in {a[key].ndim} dimension(s), "
                            f"expected {_KINDS[kinds]} in {ndim}")
    try:
        provenance = json.loads(str(a["provenance"]))
    except ValueError as err:
        raise DataError(f"'provenance' is not JSON ({err})") from None
    if not isinstance(provenance, dict):
        raise DataError(f"'provenance' is JSON {type(provenance).__name__}, expected an object")
    ds = LevelsDataset(a["index"], a["levels"], a["split"], a["rank"], provenance,
                       a.get("coulomb"))
    if not np.isin(ds.split, list(SPLIT_NAMES)).all():
        raise DataError(f"'split' holds labels other than {sorted(SPLIT_NAMES)} "
                        f"({', '.join(SPLIT_NAMES.values())})")
    if not np.array_equal(np.sort(ds.rank), np.arange(len(ds))):
        raise DataError(f"'rank' is not a permutation of 0..{len(ds) - 1}")
    return ds


def load_levels(path: str | Path | None = None) -> LevelsDataset:
    """Load a levels dataset: a file, a bundled name (``BUNDLED_DATASETS``), or the default
    bundled GFN2-xTB one when ``path`` is None."""
    path = dataset_path(path)
    if not path.exists():
        if path in BUNDLED_DATASETS.values():
            hint = " (a bundled dataset is missing: reinstall specopt)"
        else:
            hint = f" (give a levels file or a bundled name: {', '.join(BUNDLED_DATASETS)})"
        raise DataError(f"dataset not found: {path}{hint}")
    arrays = read_npz(path, "a specopt levels dataset")
    try:
        return _levels_dataset(arrays)
    except DataError as err:  # the arrays are there but wrong: say what, naming the file
        fix = "" if "rebuild" in str(err) else "; rebuild or re-import the dataset"
        raise DataError(f"{path}: {err}{fix}") from None
