"""The test PostgreSQL itself: a database of our own per test, reachable, fsync on."""

from __future__ import annotations


def test_each_test_gets_an_empty_database(pg_url: str) -> None:
    import psycopg  # here, not at the top: without libpq the module must still be collected

    with psycopg.connect(pg_url) as conn:
        tables = conn.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'"
        ).fetchone()
        assert tables == (0,)
        assert conn.execute("SHOW fsync").fetchone() == ("on",)
