"""The database a benchmark's gateway runs on: SQLite in a directory, or PostgreSQL."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


@contextmanager
def database(db: str, workdir: Path) -> Iterator[str]:
    """An SMSGW_DB: `db` itself when it is a URL; "" = SQLite in `workdir`; "postgres" = a
    fresh database on the tests' PostgreSQL (SMSGW_TEST_PG_DSN's server, else a throwaway
    cluster from the server binaries, fsync on), dropped afterwards."""
    if db and db != "postgres":
        yield db
        return
    if not db:
        yield f"sqlite:///{workdir / 'bench.db'}"
        return
    from tests.pg_cluster import start_cluster

    cluster = start_cluster()
    try:
        url = cluster.new_database()
        try:
            yield url
        finally:
            cluster.drop_database(url)
    finally:
        cluster.stop()
