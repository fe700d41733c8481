"""Issue 9, item 4: several workers opening one fresh database at once all succeed.

Before the fix, Optuna's table creation raced: PostgreSQL "duplicate key ...
pg_type_typname_nsp_index", SQLite "table studies already exists", in some rounds.
"""

from __future__ import annotations

import multiprocessing as mp
import uuid

import pytest

N_PROCS = 8
ROUNDS = 3


def _open(url: str, barrier, queue) -> None:
    try:
        import optuna

        from hpo.storage.database import open_storage

        optuna.logging.set_verbosity(optuna.logging.ERROR)
        barrier.wait(timeout=60)
        storage = open_storage(url, heartbeat_interval=1, grace_period=3)
        optuna.create_study(storage=storage, study_name="race", load_if_exists=True)
        queue.put("ok")
    except BaseException as err:  # report, do not hang the test
        queue.put(f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}")


def _race(url: str) -> list[str]:
    ctx = mp.get_context("fork")
    barrier = ctx.Barrier(N_PROCS)
    queue = ctx.Queue()
    procs = [ctx.Process(target=_open, args=(url, barrier, queue)) for _ in range(N_PROCS)]
    for p in procs:
        p.start()
    results = [queue.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=30)
    return results


@pytest.mark.slow
def test_sqlite_fresh_file_opened_by_8_processes(tmp_path):
    for i in range(ROUNDS):
        results = _race(f"sqlite:///{tmp_path / f'round{i}.db'}")
        assert results == ["ok"] * N_PROCS, results


def test_postgres_fresh_database_opened_by_8_processes(pg_url):
    import sqlalchemy

    admin = sqlalchemy.create_engine(pg_url, isolation_level="AUTOCOMMIT")
    try:
        for _ in range(ROUNDS):
            db = f"pytest_create_{uuid.uuid4().hex[:10]}"
            with admin.connect() as con:
                con.execute(sqlalchemy.text(f'CREATE DATABASE "{db}"'))
            try:
                url = pg_url.rsplit("/", 1)[0] + f"/{db}"
                results = _race(url)
                assert results == ["ok"] * N_PROCS, results
            finally:
                with admin.connect() as con:
                    con.execute(sqlalchemy.text(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)'))
    finally:
        admin.dispose()


if __name__ == "__main__":  # pragma: no cover
    pytest.main([__file__, "-q"])
