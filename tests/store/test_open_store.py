"""open_store(url): which URLs give which store, and clear errors for the rest."""

from __future__ import annotations

import pytest

from smsgw.store import SqliteStore, open_store, sqlite_path


@pytest.mark.parametrize(
    ("url", "path"),
    [
        ("sqlite:///smsgw.db", "smsgw.db"),
        ("sqlite:///./data/smsgw.db", "./data/smsgw.db"),
        ("sqlite:////var/lib/smsgw/smsgw.db", "/var/lib/smsgw/smsgw.db"),
        ("SQLite:///x.db", "x.db"),
        ("sqlite:///my%20dir/x.db", "my dir/x.db"),
    ],
)
def test_sqlite_urls(url: str, path: str) -> None:
    assert sqlite_path(url) == path
    store = open_store(url)
    assert isinstance(store, SqliteStore)
    assert store.path == path


@pytest.mark.parametrize(
    ("url", "match"),
    [
        ("sqlite://host/x.db", "no host"),
        ("sqlite:///", "file name"),
        ("sqlite:////", "file name"),
        ("sqlite:///data/", "file name"),
        ("sqlite:///x.db?mode=ro", "no query"),
        ("sqlite:///:memory:", "not durable"),
        ("sqlite:x.db", "not a database URL"),
        ("smsgw.db", "not a database URL"),
        ("", "not a database URL"),
        ("mysql://u:p@h/db", "unsupported database URL scheme 'mysql'"),
    ],
)
def test_bad_urls(url: str, match: str) -> None:
    with pytest.raises(ValueError, match=match) as info:
        open_store(url)
    assert "sqlite:///" in str(info.value) or "memory" in str(info.value)


def test_postgresql_urls_are_checked_without_echoing_the_password() -> None:
    for url in ("postgresql://user:s3cret@[::1/smsgw", "postgres://user:s3cret@db/x?bogus=1"):
        with pytest.raises(ValueError, match="PostgreSQL URL") as info:
            open_store(url)
        assert "s3cret" not in str(info.value)
