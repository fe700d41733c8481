"""Where derived arrays (parsed geometries, Coulomb matrices, spectra) are cached on disk, and
what the cache holds (:func:`cache_entries`, ``specopt cache info``; :func:`clear_cache`).

Layout under :func:`cache_root`::

    qm9pack_geometries.npz                       QM9 geometries parsed from qm9pack
    coulomb/<dataset>_v2.npy                     sorted Coulomb matrices of a dataset
    spectra/<dataset>_s<sigma>_n<Np>_<e_min>_<e_max>.npy   its spectra at (sigma, Np, window)
    datasets/<dataset>.json                      what <dataset> (a fingerprint) is

``<dataset>`` is :attr:`data_prep.dataset.LevelsDataset.fingerprint` (of the subset used).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from data_prep.dataset import load_levels
from data_prep.files import atomic_write

log = logging.getLogger("specopt.data")


def cache_root() -> Path:
    """``$SPECOPT_CACHE``, else ``~/.cache/specopt``."""
    root = os.environ.get("SPECOPT_CACHE")
    return Path(root) if root else Path.home() / ".cache" / "specopt"


def save_atomic(path: Path, array: np.ndarray) -> None:
    """Write an .npy file atomically."""
    atomic_write(path, lambda f: np.save(f, array))


#: Sub-folder of the notes saying what each dataset fingerprint is.
DATASETS = "datasets"


def note_dataset(root: Path, ds: Any, source: Any) -> None:
    """Record what the dataset ``ds`` (a LevelsDataset, maybe a subset) is, once per
    fingerprint, so that ``specopt cache info`` can name it: ``source`` is the path it was
    loaded from, None for the bundled one, or the dataset object itself.  A cache that cannot
    be written is no error."""
    path = root / DATASETS / f"{ds.fingerprint}.json"
    if path.exists():
        return
    if source is None:
        where = "bundled"
    elif isinstance(source, str | Path):
        where = str(Path(source).resolve())
    else:
        where = f"{ds.provenance.get('method', 'levels')} (given in memory)"
    about = {"source": where, "subset": ds.provenance.get("subset"), "molecules": len(ds),
             "method": ds.provenance.get("method")}
    with contextlib.suppress(OSError):
        atomic_write(path, lambda f: f.write(json.dumps(about, sort_keys=True).encode()))


@dataclass(frozen=True)
class CacheEntry:
    """One file of the cache and what it is."""

    path: Path
    size: int  # bytes
    kind: str  # geometries, coulomb, spectra, note, temporary, other
    what: str  # one line for people


_SPECTRA = re.compile(r"(?P<fp>[0-9a-f]+)_s(?P<sigma>[^_]+)_n(?P<np>\d+)_(?P<lo>[^_]+)_"
                      r"(?P<hi>[^_]+)\.npy")
_COULOMB = re.compile(r"(?P<fp>[0-9a-f]+)_v\d+\.npy")


def _rows(path: Path) -> int | None:
    """The first dimension of an .npy file, from its header (nothing else is read)."""
    try:
        with open(path, "rb") as f:
            major, _ = np.lib.format.read_magic(f)
            read = (np.lib.format.read_array_header_1_0 if major == 1
                    else np.lib.format.read_array_header_2_0)
            shape = read(f)[0]
        return int(shape[0]) if shape else None
    except (OSError, ValueError):
        return None


class _Datasets:
    """Names of dataset fingerprints: the cache's notes, else the bundled dataset or one of its
    subsets (their fingerprints computed when first asked)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._bundled: Any = None
        self._known: dict[str, str] = {}

    def name(self, fingerprint: str, molecules: int | None) -> str:
        note = self.root / DATASETS / f"{fingerprint}.json"
        try:
            about = json.loads(note.read_text())
            subset = f", subset {about['subset']}" if about.get("subset") else ""
            return f"dataset {about.get('source', '?')}{subset} ({fingerprint})"
        except (OSError, ValueError, AttributeError):
            pass
        if fingerprint not in self._known and molecules:
            self._known[fingerprint] = self._bundled_name(fingerprint, molecules)
        return self._known.get(fingerprint) or f"dataset {fingerprint}"

    def _bundled_name(self, fingerprint: str, molecules: int) -> str:
        try:
            if self._bundled is None:
                self._bundled = load_levels()
            ds = self._bundled
            if molecules >= len(ds) and ds.fingerprint == fingerprint:
                return f"dataset bundled ({fingerprint})"
            if molecules < len(ds) and ds.subset(molecules).fingerprint == fingerprint:
                return f"dataset bundled, subset {molecules} ({fingerprint})"
        except Exception:  # naming is best effort: a missing bundled file names nothing
            pass
        return ""


def _of(datasets: _Datasets, fingerprint: str, molecules: int | None) -> str:
    return (f"{datasets.name(fingerprint, molecules)}, "
            f"{molecules if molecules is not None else '?'} molecules")


def _describe(path: Path, root: Path, datasets: _Datasets) -> tuple[str, str]:
    rel = path.relative_to(root)
    name = path.name
    if name.startswith(".") and name.endswith(".tmp"):
        return "temporary", "left by an interrupted write (safe to delete)"
    if rel.parts[0] == DATASETS:
        return "note", f"what dataset {path.stem} is"
    if rel == Path("qm9pack_geometries.npz"):
        return "geometries", "QM9 geometries parsed from qm9pack (all molecules)"
    if rel.parts[0] == "coulomb" and (m := _COULOMB.fullmatch(name)):
        return "coulomb", f"sorted Coulomb matrices; {_of(datasets, m['fp'], _rows(path))}"
    if rel.parts[0] == "spectra" and (m := _SPECTRA.fullmatch(name)):
        return "spectra", (f"spectra at sigma {m['sigma']} eV, Np {m['np']}, window "
                           f"{m['lo']}..{m['hi']} eV; {_of(datasets, m['fp'], _rows(path))}")
    return "other", "not written by specopt's cache"


def cache_entries(root: Path | None = None) -> list[CacheEntry]:
    """Every file under the cache root with its size and what it is (sorted by path)."""
    root = root or cache_root()
    if not root.is_dir():
        return []
    datasets = _Datasets(root)
    out = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        kind, what = _describe(path, root, datasets)
        out.append(CacheEntry(path, path.stat().st_size, kind, what))
    return out


def clear_cache(root: Path | None = None) -> tuple[int, int]:
    """Remove everything under the cache root (it is rebuilt when needed); returns (files,
    bytes) removed.  The root folder itself stays."""
    root = root or cache_root()
    entries = cache_entries(root)
    for child in root.iterdir() if root.is_dir() else ():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()
    return len(entries), sum(e.size for e in entries)


def discard_bad_cache(path: Path, why: object) -> None:
    """Remove an unreadable or inconsistent cache file (it is rebuilt), saying which and why."""
    log.warning("specopt cache: %s is unusable (%s); removed, rebuilding it", path, why)
    path.unlink(missing_ok=True)
