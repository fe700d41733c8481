"""Every error specopt raises on purpose, in one hierarchy (as ``optuna/exceptions.py``).

Each message is one line that names the file, value or URL at fault and, where there is one, the
fix; the ``specopt`` command prints it as ``error: ...`` (the traceback only under ``--debug``).
A leaf module like :mod:`model.contract`: every package may import it.
"""

from __future__ import annotations

import errno
from typing import Any


class SpecoptError(Exception):
    """Base class of specopt's errors."""

    #: Exit status of the ``specopt`` command when this error ends it.
    exit_code = 2


class DataError(SpecoptError, ValueError):
    """Bad or missing input data: a dataset, geometry, cache or grid (data_prep)."""


class OutOfDomain(DataError):
    """Molecules outside the model's training domain, refused (``force`` predicts them):
    ``model.inference.predict_xyz``."""

    def __init__(self, refused: list[Any], total: int, force_helps: bool = True):
        """``refused``: the ``model.inference.Molecule``s, each with its ``name`` and
        ``reasons``."""
        self.refused = refused
        how = ("--force (force=True) predicts them anyway, flagged" if force_helps
               else "a Coulomb matrix cannot hold them, even with --force")
        #: The first sentence alone (the command prints each molecule on a line of its own).
        self.summary = (f"{len(refused)} of {total} molecules are outside the model's training "
                        f"domain ({how})")
        super().__init__(f"{self.summary}: " + "; ".join(
            f"{m.name}: {', '.join(m.reasons)}" for m in refused))


class ConfigError(SpecoptError, ValueError):
    """An invalid study definition or training setting."""


class StorageError(SpecoptError, RuntimeError):
    """A storage URL is malformed or its server cannot be reached (password masked)."""


class ClusterError(SpecoptError):
    """A cluster launch that cannot go ahead (missing package, scheduler, shared storage)."""


class ReportError(SpecoptError, ValueError):
    """A study cannot be opened or reported."""


class TrainingFailed(SpecoptError, RuntimeError):
    """The loss became NaN or infinite: the run cannot go on (often a too-high lr)."""

    exit_code = 1

    def __init__(self, epoch: int, reason: str) -> None:
        super().__init__(f"training failed in epoch {epoch}: {reason}")
        self.epoch = epoch
        self.reason = reason


class TrialError(SpecoptError):
    """Trials failed: several in a row with unexpected errors (the worker stops), or every
    trial of a ``specopt run``."""

    exit_code = 1


class WorkerInterrupted(SpecoptError):
    """The worker got SIGINT/SIGTERM: the trial stopped after its current epoch."""

    exit_code = 130


class InfrastructureError(SpecoptError):
    """Not the configuration's fault: a missing or corrupt data file, an unwritable folder, a full
    disk.  The worker re-queues its trial (the budget is left alone) and stops with one line
    naming the file and the fix."""

    exit_code = 3


#: What to do about a file operation that failed, by its errno: the fix a one-line message
#: ends with.
OS_ERROR_FIXES = {
    errno.ENOSPC: "free disk space", errno.EDQUOT: "free disk space (quota)",
    errno.EFBIG: "free disk space or raise the file size limit",
    errno.EROFS: "make it writable or point the study elsewhere (artifacts/storage)",
    errno.EACCES: "make it writable/readable for this user",
    errno.EPERM: "make it writable/readable for this user",
    errno.ENOENT: "check the path", errno.ENOTDIR: "check the path",
    errno.EEXIST: "remove what is in the way"}


def describe_os_error(err: OSError) -> tuple[str, str]:
    """(what failed and on which file, the fix) of ``err``, for a one-line message."""
    what = err.strerror or type(err).__name__
    where = err.filename if err.filename is not None else "a file"
    return f"{what}: {where}", OS_ERROR_FIXES.get(err.errno or 0, "fix it")
