"""Where derived arrays (parsed geometries, Coulomb matrices, spectra) are cached on disk."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np


def cache_root() -> Path:
    """``$SPECOPT_CACHE``, else ``~/.cache/specopt``."""
    root = os.environ.get("SPECOPT_CACHE")
    return Path(root) if root else Path.home() / ".cache" / "specopt"


def save_atomic(path: Path, array: np.ndarray) -> None:
    """Write an .npy file so that a concurrent reader never sees half of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        np.save(f, array)
    tmp.replace(path)
