"""Where derived arrays (parsed geometries, Coulomb matrices, spectra) are cached on disk."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np


def cache_root() -> Path:
    """``$SPECOPT_CACHE``, else ``~/.cache/specopt``."""
    root = os.environ.get("SPECOPT_CACHE")
    return Path(root) if root else Path.home() / ".cache" / "specopt"


def atomic_write(path: Path, write) -> None:
    """Call ``write(file)`` on a temporary file private to this process, then rename it to
    ``path``: concurrent workers filling the same cache never see (or clobber) half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        write(f)
    tmp.replace(path)


def save_atomic(path: Path, array: np.ndarray) -> None:
    """Write an .npy file atomically."""
    atomic_write(path, lambda f: np.save(f, array))
