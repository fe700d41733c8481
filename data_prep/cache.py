"""Where derived arrays (parsed geometries, Coulomb matrices, spectra) are cached on disk."""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

import numpy as np

log = logging.getLogger("specopt.data")


def cache_root() -> Path:
    """``$SPECOPT_CACHE``, else ``~/.cache/specopt``."""
    root = os.environ.get("SPECOPT_CACHE")
    return Path(root) if root else Path.home() / ".cache" / "specopt"


def atomic_write(path: Path, write) -> None:
    """Call ``write(file)`` on a temporary file private to this process, then rename it to
    ``path``: concurrent workers filling the same cache never see (or clobber) half a file.
    When the write fails (``ENOSPC``, an exception in ``write``) the temporary file is removed
    and the error re-raised."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
        tmp.replace(path)
    except BaseException:
        # A failed write (a full disk, an interrupt) leaves neither half a file nor its temporary.
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise


def save_atomic(path: Path, array: np.ndarray) -> None:
    """Write an .npy file atomically."""
    atomic_write(path, lambda f: np.save(f, array))


def discard_bad_cache(path: Path, why: object) -> None:
    """Remove an unreadable or inconsistent cache file (it is rebuilt), saying which and why."""
    log.warning("specopt cache: %s is unusable (%s); removed, rebuilding it", path, why)
    path.unlink(missing_ok=True)
