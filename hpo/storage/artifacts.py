"""The artifact store of a study (checkpoints, histories, predictions): written atomically, and
only ever in a folder the user gave or under ``$SPECOPT_HOME``."""

from __future__ import annotations

import os
import shlex
import shutil
from pathlib import Path
from typing import Any, BinaryIO

import optuna
from optuna.artifacts import FileSystemArtifactStore

from data_prep.files import atomic_write
from hpo.storage.home import (
    home,
    inside_home,
    is_dir,
)
from hpo.storage.optuna_private import FileArtifactStore, artifact_store_folder
from model.contract import StudyAttr
from model.errors import ReportError

#: Prefix of Optuna's artifact records (system attributes of the trial that uploaded them).
_ARTIFACT_RECORD = "artifacts:"


class AtomicFileSystemArtifactStore(FileArtifactStore):
    """Optuna's file-system artifact store, writing each artifact atomically: a temporary file
    beside it, renamed when complete and removed when the write fails (a full disk leaves no
    partial artifact)."""

    def write(self, artifact_id: str, content_body: BinaryIO) -> None:
        target = self.artifact_file(artifact_id)

        def copy(f: BinaryIO) -> None:
            shutil.copyfileobj(content_body, f)
            f.flush()
            os.fsync(f.fileno())

        try:
            atomic_write(target, copy)
        except OSError as err:
            if err.filename is None:  # name the file at fault
                raise OSError(err.errno, err.strerror, str(target)) from err
            raise


def recorded_artifact_dir(study: optuna.Study) -> Path | None:
    """The artifact folder ``study`` recorded at creation when it is a folder on this machine
    (None: none recorded, or not here).  A recorded folder outside ``$SPECOPT_HOME`` is a
    :class:`ReportError`: the database alone never names a folder to read, write or delete in;
    the user's own ``--artifacts`` (or study file) does."""
    recorded = study.user_attrs.get(StudyAttr.ARTIFACT_STORE)
    if not isinstance(recorded, str) or not recorded or "\0" in recorded:
        return None
    folder = Path(recorded)
    if not is_dir(folder):
        return None
    if not inside_home(folder):
        raise ReportError(f"study {study.study_name!r} recorded its artifact folder as "
                          f"{recorded!r}, outside {home()} (SPECOPT_HOME); refused: give "
                          f"--artifacts {shlex.quote(recorded)} if that folder is yours, or set "
                          "SPECOPT_HOME to the home it was created in")
    return folder


def open_artifact_store(study: optuna.Study, artifacts: Any = None):
    """The artifact store to read ``study``'s checkpoints and predictions from: ``artifacts``
    (an Optuna artifact store, or a folder: :class:`ReportError` if it does not exist), else the
    folder the study recorded at creation when it exists on this machine (inside the home:
    :func:`recorded_artifact_dir`), else None."""
    if artifacts is not None:
        if hasattr(artifacts, "open_reader"):
            return artifacts
        folder = Path(artifacts)
        if not folder.is_dir():
            raise ReportError(f"artifact folder not found: {folder}")
        return FileSystemArtifactStore(str(folder))
    recorded = recorded_artifact_dir(study)
    return FileSystemArtifactStore(str(recorded)) if recorded is not None else None


def store_folder(store: Any) -> Path | None:
    """The folder of a file-system artifact store (None: another kind of store)."""
    base = artifact_store_folder(store)
    return Path(base) if base is not None else None

