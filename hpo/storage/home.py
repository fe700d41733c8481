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
its artifact folder when it is created; a recorded folder is used only inside the home (a
database names no folder of its own choosing: after the home moved, give ``--artifacts``).
``$SPECOPT_RUNS`` is the old name of ``$SPECOPT_HOME`` (still read, with a warning).  The data
cache is elsewhere: ``$SPECOPT_CACHE`` (see :mod:`data_prep.cache`).

Names and paths read from a database or a study file are never trusted: :func:`name_problem`
is the one rule for study names, :func:`contained` the one check of a path inside a folder."""

from __future__ import annotations

import hashlib
import os
import re
import unicodedata
import warnings
from pathlib import Path

from model.errors import ReportError, StorageError

__all__ = ["HOME_ENV", "LEGACY_HOME_ENV", "NAME_MAX_BYTES", "STORAGE_ENV", "contained",
           "data_dir", "default_storage_url", "home", "inside_home", "is_dir", "is_file",
           "mask_url", "name_problem", "normalize_url", "plain_name", "predictions_dir",
           "resolve_storage_url", "shown_name", "sqlite_file", "storage_file", "storage_key",
           "study_artifacts", "study_dir", "study_output"]
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
#: The longest study name in UTF-8 bytes: with every suffix made from it (``.db-journal``,
#: ``.db-wal``, a lock file's) it still fits a 255-byte file name.
NAME_MAX_BYTES = 100
#: Unicode categories no name may hold: controls (newline, ESC: forged lines, terminal escape
#: sequences), format characters (bidi overrides), surrogates, private and unassigned ones,
#: line and paragraph separators.
_UNSAFE_CATEGORIES = frozenset(("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"))


def name_problem(name: str) -> str | None:
    """Why ``name`` cannot be a study's name (None: it can).  The one rule for study names,
    wherever they come from (a study file, the command line, any database), since each names
    files and folders and is printed: not empty, at most :data:`NAME_MAX_BYTES` bytes, no
    control or invisible character, no path separator, no leading or trailing space, not
    starting with ``-`` (an option) or ``.`` (``.``, ``..``, hidden)."""
    if not name:
        return "is empty"
    if any(unicodedata.category(c) in _UNSAFE_CATEGORIES for c in name):
        return "holds a control or invisible character"
    if len(name.encode()) > NAME_MAX_BYTES:
        return f"is longer than {NAME_MAX_BYTES} bytes"
    if "/" in name or "\\" in name:
        return "holds a path separator"
    if name != name.strip():
        return "starts or ends with a space"
    if name[0] in "-.":
        return f"starts with {name[0]!r}"
    return None


def plain_name(name: str, where: Path, fix: str = "give the output folder with --out") -> str:
    """``name`` when it may name a file or folder in ``where`` (:func:`name_problem`: a study
    name read from any database may be ``../../x``, 300 characters or hold escape sequences);
    else :class:`ReportError` ending with ``fix``."""
    problem = name_problem(name)
    if problem is not None:
        raise ReportError(f"{name!r} is not a plain file name ({problem}): no file or folder "
                          f"is made from it in {where}; refused ({fix})")
    return name


def shown_name(name: str) -> str:
    """A name as printed: itself when it follows :func:`name_problem`'s rule, else escaped
    (``repr``), so that a stored name cannot forge output lines or terminal escapes."""
    return name if name_problem(name) is None else repr(name)


def is_file(path: Path) -> bool:
    """``path.is_file()``, False where the path cannot even be looked at (a component longer
    than a file name may be: ``File name too long`` from a name or id read from a database)."""
    try:
        return path.is_file()
    except OSError:
        return False


def is_dir(path: Path) -> bool:
    """``path.is_dir()``, False where the path cannot be looked at (as :func:`is_file`)."""
    try:
        return path.is_dir()
    except OSError:
        return False


def contained(root: Path, part: str | Path, what: str) -> Path:
    """``root / part`` for a ``part`` read from a database (an artifact id, a trial's state
    folder) that resolves inside ``root``, symlinks followed; else :class:`ReportError` naming
    ``what`` and ``root``: ``../x``, an absolute path, or a symlink inside ``root`` pointing out
    of it are refused, so nothing outside is read, copied or deleted."""
    path = root / part
    try:
        ok = (not Path(part).is_absolute() and "\0" not in str(part)
              and path.resolve().is_relative_to(root.resolve()))
    except (OSError, RuntimeError) as err:  # RuntimeError: a symlink loop (Python 3.11)
        raise ReportError(f"{what} {str(part)!r} in {root} cannot be resolved ({err}): "
                          "refused") from None
    if not ok:
        raise ReportError(f"{what} {str(part)!r} leads outside {root}: refused")
    return path


def inside_home(folder: str | Path) -> bool:
    """Whether ``folder`` (a path read from a database) lies inside the home, not the home
    itself; judged on the path as written (``..`` folded), so that a folder the user linked
    into the home from elsewhere still counts."""
    p = Path(os.path.normpath(folder))
    root = home()
    return p.is_absolute() and p != root and p.is_relative_to(root)


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
    return root / f"{plain_name(study_name, root, 'give its storage with --storage')}.db"


def predictions_dir() -> Path:
    return home() / "predictions"


def data_dir() -> Path:
    return home() / "data"


def storage_key(url: str) -> str:
    """A short readable folder name for a storage, unique per storage: the scheme, the file's
    stem or the database and host, and a hash of the URL without its credentials (the same
    database reached as another user or with another password is the same storage)."""
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


def runs_dir() -> Path:
    """The home of every output (:func:`hpo.storage.home.home`; kept under its old name)."""
    return home()


def default_storage_url(study_name: str) -> str:
    """SQLite under the home: ``$SPECOPT_HOME/<study>.db`` (see :mod:`hpo.storage.home`)."""
    return f"sqlite:///{sqlite_file(study_name)}"


#: The environment variable with the storage URL (and its password): the way ``launch`` passes
#: it to workers, never on a command line; it wins over the study file's storage.
STORAGE_ENV = "SPECOPT_STORAGE"


def resolve_storage_url(study_name: str, configured: str | None = None,
                        storage: str | None = None) -> str:
    """The storage URL in effect for a study, normalized: ``storage`` (the command line's), else
    ``$SPECOPT_STORAGE``, else ``configured`` (the study file's), else SQLite under the home
    (:func:`default_storage_url`)."""
    return normalize_url(storage or os.environ.get(STORAGE_ENV) or configured
                         or default_storage_url(study_name))


def mask_url(url: str) -> str:
    """The URL with its password replaced by ``***``."""
    head, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    creds, at, host = rest.rpartition("@")
    if ":" in creds:
        creds = creds.split(":", 1)[0] + ":***"
    return f"{head}://{creds}{at}{host}"


def _path_of(url: str, scheme: str) -> Path:
    rest = url[len(scheme):]
    if not rest or rest == "/":
        raise StorageError(f"storage {url}: no file path after {scheme!r}")
    if "?" in rest:  # it would become part of the file's name
        raise StorageError(f"storage {url}: a query string ({rest[rest.index('?'):]!r}) is not "
                           f"taken by {scheme}FILE URLs: remove it")
    return Path(rest).resolve()


def _check_credentials(url: str) -> None:
    """Refuse a URL whose user name or password holds an unescaped ``@``: the URL parser ends
    the password at the first one and takes the rest for the host, which errors then show."""
    if url.partition("://")[2].count("@") > 1:
        raise StorageError(
            f"storage {mask_url(url)}: more than one '@' in the URL: percent-escape '@', ':' and "
            "'/' in the user name and password (@ as %40, : as %3A, / as %2F; in Python: "
            "urllib.parse.quote(password, safe=''))")


def normalize_url(url: str) -> str:
    """Canonical form: absolute file paths, ``postgresql+psycopg`` driver."""
    url = url.strip()
    head, sep, rest = url.partition("://")
    if sep:
        url = f"{head.lower()}{sep}{rest}"  # schemes are case-insensitive
    if url.startswith(("postgresql", "postgres:")):
        _check_credentials(url)
    if url.startswith("postgresql://"):
        return "postgresql+psycopg://" + url[len("postgresql://"):]
    if url.startswith("postgres://"):
        return "postgresql+psycopg://" + url[len("postgres://"):]
    if url.startswith("sqlite:///"):
        return f"sqlite:///{_path_of(url, 'sqlite:///')}"
    if url.startswith("journal:///"):
        return f"journal:///{_path_of(url, 'journal:///')}"
    if url.startswith("postgresql+psycopg://"):
        return url
    scheme = url.split("://", 1)[0] if "://" in url else url
    raise StorageError(f"storage {mask_url(url)}: unsupported scheme {scheme!r} (use "
                       "sqlite:///FILE, postgresql+psycopg://USER@HOST:PORT/DB or "
                       "journal:///FILE)")


def storage_file(url: str) -> Path | None:
    """The file behind a SQLite or journal URL (None for PostgreSQL)."""
    url = normalize_url(url)
    for scheme in ("sqlite:///", "journal:///"):
        if url.startswith(scheme):
            return Path(url[len(scheme):])
    return None

