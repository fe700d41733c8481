"""Every error specopt raises on purpose, in one hierarchy (as ``optuna/exceptions.py``).

Each message is one line that names the file, value or URL at fault and, where there is one, the
fix; the ``specopt`` command prints it as ``error: ...`` (the traceback only under ``--debug``).
A leaf module like :mod:`model.contract`: every package may import it.
"""

from __future__ import annotations


class SpecoptError(Exception):
    """Base class of specopt's errors."""

    #: Exit status of the ``specopt`` command when this error ends it.
    exit_code = 2


class DataError(SpecoptError, ValueError):
    """Bad or missing input data: a dataset, geometry, cache or grid (data_prep)."""


class ConfigError(SpecoptError, ValueError):
    """An invalid study definition or training setting."""


class StorageError(SpecoptError, RuntimeError):
    """A storage URL is malformed or its server cannot be reached (password masked)."""


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
