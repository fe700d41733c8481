"""Files written whole or not at all: what the cache, the datasets, checkpoints and a study's
artifacts all write through (:func:`atomic_write`)."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def atomic_write(path: Path, write) -> None:
    """Call ``write(file)`` on a temporary file private to this process, then rename it to
    ``path``: concurrent workers filling the same cache never see (or clobber) half a file.
    When the write fails (``ENOSPC``, an exception in ``write``) the temporary file and the
    folders made for it are removed and the error re-raised; one from a failed file operation
    as an ``OSError`` naming ``path`` (``torch.save`` wraps it in a ``RuntimeError``)."""
    made = []  # the folders this write creates, deepest first
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        made.append(folder)
        folder = folder.parent
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
        tmp.replace(path)
    except BaseException as err:
        # A failed write (a full disk, an interrupt) leaves neither half a file nor its temporary.
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        for folder in made:
            try:
                folder.rmdir()  # only if empty: another process may write there too
            except OSError:
                break
        cause = _os_error(err) if isinstance(err, Exception) else None
        if cause is not None:  # named as the file written, not its temporary
            raise OSError(cause.errno, cause.strerror, str(path)) from err
        raise


def _os_error(err: BaseException | None) -> OSError | None:
    """The failed file operation behind ``err`` (itself, or in its chain), if there is one."""
    seen = 0
    while err is not None and seen < 8:
        if isinstance(err, OSError) and err.errno is not None:
            return err
        err, seen = err.__cause__ or err.__context__, seen + 1
    return None
