"""Shared fixtures: real (small) data from the bundled GFN2-xTB dataset."""

from __future__ import annotations

import os
import tempfile
import uuid
from pathlib import Path

import pytest

#: The PostgreSQL server of the tests (trust auth, database ``test``).
PG_URL = os.environ.get("SPECOPT_TEST_POSTGRES_URL",
                        "postgresql+psycopg://postgres@127.0.0.1:5432/test")


#: Markers and fixtures of tests that need a service or root (a tmpfs mount, a PostgreSQL
#: server): such a test is slow, so the fast lane ``-m "not slow"`` needs neither.
_SERVICE_MARKERS = ("postgres", "browser", "slurm", "ray")
_SERVICE_FIXTURES = {"mount_tmpfs", "pg_url", "own_pg"}


def pytest_collection_modifyitems(items):
    for item in items:
        if (any(item.get_closest_marker(name) for name in _SERVICE_MARKERS)
                or _SERVICE_FIXTURES.intersection(getattr(item, "fixturenames", ()))):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory):
    """Tests never touch the user's cache or ./runs; one cache and one home per session.  The
    home is the session's temporary root: every study a test builds lies inside it, as a user's
    studies lie inside theirs (a recorded artifact folder is read only inside the home)."""
    os.environ["SPECOPT_CACHE"] = str(tmp_path_factory.mktemp("specopt-cache"))
    os.environ["SPECOPT_HOME"] = str(tmp_path_factory.getbasetemp())
    os.environ.pop("SPECOPT_RUNS", None)
    # temporary files of the product and of what it starts (trial work folders, launch specs,
    # Ray's sessions) go inside the session's folder too, never loose in /tmp: a short name, as
    # Ray's socket paths must stay under 108 characters
    tmp = tmp_path_factory.mktemp("t", numbered=False)
    old = os.environ.get("TMPDIR")
    # for a folder that another user (postgres) must enter: pytest's folders are root's 0700
    os.environ["SPECOPT_TEST_SYSTEM_TMP"] = tempfile.gettempdir()
    os.environ["TMPDIR"] = str(tmp)
    tempfile.tempdir = None  # gettempdir() reads TMPDIR again
    yield
    if old is None:
        os.environ.pop("TMPDIR", None)
    else:
        os.environ["TMPDIR"] = old
    tempfile.tempdir = None


#: files at least this big are removed from the session's folder after a passing session
_BIG = 1 << 20


def pytest_sessionfinish(session, exitstatus):
    """Pytest keeps its last three session folders; after a session that passed, keep their
    small files (study databases, logs) and remove the big ones (checkpoints, the data cache,
    the hostile-input tests' big files), which made one folder about 700 MB."""
    factory = getattr(session.config, "_tmp_path_factory", None)
    if exitstatus != 0 or factory is None or factory._basetemp is None:
        return
    for path in factory.getbasetemp().rglob("*"):
        try:
            if path.is_file() and not path.is_symlink() and path.stat().st_size >= _BIG:
                path.unlink()
        except OSError:
            pass


@pytest.fixture(scope="session")
def levels_dataset():
    """The bundled dataset (or $SPECOPT_TEST_DATASET, a levels .npz)."""
    from data_prep import load_levels

    return load_levels(os.environ.get("SPECOPT_TEST_DATASET") or None)


@pytest.fixture(scope="session")
def small_data(levels_dataset):
    """600 real molecules at sigma 0.5, Np 300 (about 540 train, 30 test, 30 validation)."""
    from data_prep import prepare

    return prepare(levels_dataset, sigma=0.5, n_points=300, subset=600)


@pytest.fixture(scope="module")
def one_torch_thread():
    """Behaviour, not speed, is tested: one torch thread stays quick on a busy machine."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def repo_root() -> Path:
    return Path(__file__).resolve().parents[1]


@pytest.fixture
def pg_url() -> str:
    """The PostgreSQL URL; a missing server fails the test (never skips it)."""
    from hpo.storage.database import StorageError, open_storage

    try:
        open_storage(PG_URL, connect_timeout=5)
    except StorageError as err:
        pytest.fail(f"PostgreSQL is needed for this test and is not reachable ({err}). Start it: "
                    "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start "
                    "(Debian), or docker run -p 5432:5432 -e POSTGRES_HOST_AUTH_METHOD=trust -e "
                    "POSTGRES_DB=test postgres; or set SPECOPT_TEST_POSTGRES_URL.", pytrace=False)
    return PG_URL


@pytest.fixture
def pg_study(pg_url):
    """A fresh study name on the PostgreSQL server, deleted after the test."""
    import optuna

    name = f"pytest-{uuid.uuid4().hex[:10]}"
    yield name
    try:
        optuna.delete_study(study_name=name, storage=pg_url)
    except KeyError:
        pass


@pytest.fixture
def mount_tmpfs():
    """``mount_tmpfs(folder, options)``: a real tmpfs at ``folder`` (the tests run as root; e.g.
    ``"size=1m"`` for a disk that fills up, ``"ro,size=4m"``), unmounted after the test."""
    import subprocess

    mounted = []

    def mount(where: Path, options: str) -> Path:
        where.mkdir(parents=True, exist_ok=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], check=True)
        mounted.append(where)
        return where

    yield mount
    for where in reversed(mounted):
        subprocess.run(["umount", "-l", str(where)], check=False)


@pytest.fixture
def tiny_disk(tmp_path, mount_tmpfs) -> Path:
    """A real 1 MiB tmpfs: writes beyond it fail with ENOSPC (a full disk)."""
    return mount_tmpfs(tmp_path / "disk", "size=1m")
