"""Logging of the ``specopt`` command and its workers: one format for our lines and Optuna's.

:func:`setup_logging` sends the ``specopt.*`` and ``optuna.*`` loggers to stderr (and a file),
Optuna's own handler removed so that its lines come in the same format.  ``specopt -q`` shows
warnings only and no progress bars, ``-v`` debug lines too (every epoch of a worker, not only
one every few seconds), ``--log-file PATH`` appends every line to PATH as well.  Workers started
by ``specopt launch`` inherit the settings through :func:`log_env` (``$SPECOPT_LOG_LEVEL``,
``$SPECOPT_LOG_FILE``, ``$SPECOPT_PROGRESS``), which :func:`setup_logging` reads by default."""

from __future__ import annotations

import errno
import logging
import os
import sys
from pathlib import Path

from data_prep import progress as bars
from data_prep.progress import PROGRESS_ENV
from model.errors import ConfigError

__all__ = ["FILE_ENV", "LEVEL_ENV", "LOGGERS", "log_env", "setup_logging"]
LEVEL_ENV = "SPECOPT_LOG_LEVEL"
FILE_ENV = "SPECOPT_LOG_FILE"
#: The loggers configured here: the project's and Optuna's.
LOGGERS = ("specopt", "optuna")
_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class _Stderr(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time (a test runner swaps it)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property  # type: ignore[override]
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:  # StreamHandler sets it; sys.stderr is always used
        pass


class _LogFile(logging.FileHandler):
    """Appends to the log file.  A line it cannot write (a full disk, ``/dev/full``) is said
    once on stderr, where every line goes anyway, instead of logging's traceback per line."""

    _failed = False

    def handleError(self, record: logging.LogRecord) -> None:
        if not self._failed:
            self._failed = True
            err = sys.exc_info()[1]
            why = getattr(err, "strerror", None) or type(err).__name__
            sys.stderr.write(f"warning: cannot write to the log file {self.baseFilename} "
                             f"({why}): its lines go to stderr only\n")


def _level(level: int | str | None) -> int:
    if level is None:
        level = os.environ.get(LEVEL_ENV) or logging.INFO
    if isinstance(level, str):
        named = logging.getLevelName(level.strip().upper())
        if not isinstance(named, int):
            raise ConfigError(f"${LEVEL_ENV}: unknown log level {level[:40]!r}: give DEBUG, "
                              "INFO, WARNING or ERROR")
        return named
    return int(level)


def _log_file(path: Path, where: str) -> logging.FileHandler:
    """A handler appending to ``path``; ConfigError naming it where it cannot be (a folder, a
    path under a file, a read-only disk), and for a FIFO no process reads: opening it would
    wait forever."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # O_NONBLOCK: a FIFO without a reader fails (ENXIO) instead of blocking
        os.close(os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NONBLOCK, 0o666))
        return _LogFile(path, encoding="utf-8")  # appends: workers share one file
    except OSError as err:
        why = ("a FIFO that no process reads" if err.errno == errno.ENXIO
               else err.strerror or type(err).__name__)
        raise ConfigError(f"{where} {path}: cannot append to it ({why}): give a writable "
                          "file") from None


def setup_logging(level: int | str | None = None, log_file: str | Path | None = None, *,
                  progress: bool | None = None) -> None:
    """Configure the project's and Optuna's loggers (again: each call replaces what an earlier
    one installed; handlers installed by others are left alone).

    ``level``: a logging level or its name (default ``$SPECOPT_LOG_LEVEL``, else INFO);
    ``log_file``: also append to this file (default ``$SPECOPT_LOG_FILE``); ``progress``: the
    default of every progress bar (see :mod:`data_prep.progress`; None: a terminal decides)."""
    import optuna

    lvl = _level(level)
    path = log_file if log_file is not None else os.environ.get(FILE_ENV) or None
    handlers: list[logging.Handler] = [_Stderr()]
    handlers[0].setFormatter(logging.Formatter(_FORMAT, "%H:%M:%S"))
    if path is not None:
        path = Path(path).resolve()
        fh = _log_file(path, "log file" if log_file is not None else f"${FILE_ENV}")
        fh.setFormatter(logging.Formatter(_FORMAT, "%Y-%m-%d %H:%M:%S"))
        handlers.append(fh)
    optuna.logging.disable_default_handler()
    optuna.logging.enable_propagation()  # also to the root logger (pytest's capture, say)
    for name in LOGGERS:
        logger = logging.getLogger(name)
        for h in [h for h in logger.handlers if getattr(h, "_specopt", False)]:
            logger.removeHandler(h)
            h.close()
        for h in handlers:
            h._specopt = True  # type: ignore[attr-defined]
            logger.addHandler(h)
        # Optuna's debug lines are its internals: INFO at most, even with -v
        logger.setLevel(lvl if name == "specopt" else max(lvl, logging.INFO))
    _set_progress(progress)
    _state.update(level=lvl, file=str(path) if path is not None else None, progress=progress)
_state: dict = {"level": None, "file": None, "progress": None}


def _set_progress(progress: bool | None) -> None:
    bars.set_default(progress)


def log_env() -> dict[str, str]:
    """The environment that gives a child process (a worker of ``launch``) this process's
    logging settings; empty before :func:`setup_logging`."""
    env: dict[str, str] = {}
    if _state["level"] is not None:
        env[LEVEL_ENV] = logging.getLevelName(_state["level"])
    if _state["file"]:
        env[FILE_ENV] = _state["file"]
    if _state["progress"] is not None:
        env[PROGRESS_ENV] = "1" if _state["progress"] else "0"
    return env

