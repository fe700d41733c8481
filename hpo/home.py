"""One home for every output: the layout under ``$SPECOPT_HOME`` (default ``./runs``).

::

    $SPECOPT_HOME/
      <study>.db                          the study's SQLite database (when no storage is given)
      <study>/artifacts/<storage-key>/    its trials' checkpoints, training states, predictions
      <study>/report/                     ``specopt report`` and ``run``
      <study>/export/                     ``specopt export-best``
      predictions/                        ``specopt predict``
      data/                               ``specopt data build``

``<storage-key>`` names the storage the study lives in (``sqlite-demo-1a2b3c4d``,
``postgresql-db-host-5432-...``): the same study name in two storages never shares an artifact
folder.  A study's ``artifacts`` (study file or ``--artifacts``) still wins, and a study records
its artifact folder when it is created, so later workers and reports find it wherever the home
has moved since.  ``$SPECOPT_RUNS`` is the old name of ``$SPECOPT_HOME`` (still read, with a
warning).  The data cache is elsewhere: ``$SPECOPT_CACHE`` (see :mod:`data_prep.cache`).
"""

from __future__ import annotations

import hashlib
import os
import re
import warnings
from pathlib import Path

from model.errors import ReportError

__all__ = ["HOME_ENV", "LEGACY_HOME_ENV", "data_dir", "home", "plain_name", "predictions_dir",
           "sqlite_file", "storage_key", "study_artifacts", "study_dir", "study_output"]

HOME_ENV = "SPECOPT_HOME"
#: The old name of ``$SPECOPT_HOME``: still read when ``$SPECOPT_HOME`` is not set.
LEGACY_HOME_ENV = "SPECOPT_RUNS"
_DEFAULT = "runs"
_warned = False


def home() -> Path:
    """The root of every output: ``$SPECOPT_HOME``, else ``$SPECOPT_RUNS`` (deprecated), else
    ``./runs`` (absolute)."""
    global _warned
    raw = os.environ.get(HOME_ENV)
    if not raw and os.environ.get(LEGACY_HOME_ENV):
        raw = os.environ[LEGACY_HOME_ENV]
        if not _warned:  # once per process: workers and reports call this often
            _warned = True
            warnings.warn(f"${LEGACY_HOME_ENV} is deprecated: set ${HOME_ENV} instead",
                          FutureWarning, stacklevel=2)
    return Path(raw or _DEFAULT).expanduser().resolve()


def plain_name(name: str, where: Path) -> str:
    """``name`` when it is one plain file name (a study name read from any database may be
    ``../../x``); else :class:`ReportError`."""
    bad = (not name or name in (".", "..") or "/" in name or "\\" in name or "\0" in name
           or Path(name).is_absolute())
    if bad:
        raise ReportError(f"{name!r} is not a plain file name: it would lead outside {where}; "
                          "refused (give the output folder with --out)")
    return name


def study_dir(study_name: str) -> Path:
    """``$SPECOPT_HOME/<study>``: everything of one study but its SQLite file."""
    root = home()
    return root / plain_name(study_name, root)


def study_output(study_name: str, kind: str) -> Path:
    """A study's default output folder: ``kind`` is ``report`` or ``export``."""
    return study_dir(study_name) / kind


def sqlite_file(study_name: str) -> Path:
    """The default storage of a study: ``$SPECOPT_HOME/<study>.db``."""
    root = home()
    return root / f"{plain_name(study_name, root)}.db"


def predictions_dir() -> Path:
    return home() / "predictions"


def data_dir() -> Path:
    return home() / "data"


def storage_key(url: str) -> str:
    """A short readable folder name for a storage, unique per storage: the scheme, the file's
    stem or the database and host, and a hash of the URL without its credentials (the same
    database reached as another user or with another password is the same storage)."""
    from hpo.storage import normalize_url, storage_file

    url = normalize_url(url)
    scheme, _, rest = url.partition("://")
    scheme = scheme.split("+")[0]
    f = storage_file(url)
    if f is not None:
        readable, ident = f.stem, str(f)
    else:
        hostpart = rest.rpartition("@")[2]  # drop user:password@
        host, _, db = hostpart.partition("/")
        readable, ident = f"{db.split('?')[0]}-{host}", hostpart
    readable = re.sub(r"[^A-Za-z0-9._-]+", "-", readable).strip("-.")[:40] or "storage"
    digest = hashlib.sha256(f"{scheme}://{ident}".encode()).hexdigest()[:8]
    return f"{scheme}-{readable}-{digest}"


def study_artifacts(study_name: str, url: str) -> Path:
    """The default artifact folder of a study in the storage ``url``:
    ``$SPECOPT_HOME/<study>/artifacts/<storage-key>``."""
    return study_dir(study_name) / "artifacts" / storage_key(url)
