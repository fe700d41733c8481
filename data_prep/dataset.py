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
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from data_prep.cache import atomic_write
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
    try:
        with np.load(path, allow_pickle=False) as f:
            return LevelsDataset(
                f["index"], f["levels"], f["split"], f["rank"],
                json.loads(str(f["provenance"])),
                f["coulomb"] if "coulomb" in f.files else None,
            )
    except DataError as err:  # the arrays are there but wrong: say what, naming the file
        raise DataError(f"{path}: {err}") from None
    except (KeyError, ValueError, OSError, EOFError, zipfile.BadZipFile) as err:
        raise DataError(f"{path}: not a specopt levels dataset ({err})") from None
