"""The read-only store of `smsgw status` / `smsgw inbox`: reads, never writes or migrates."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from smsgw.store import SqliteStore, StoreError
from smsgw.store.sqlite import SCHEMA_VERSION
from tests.store.conftest import NOW, make_version_1_database, new_message, rows


async def run_read_only(db_path: Path, nursery: trio.Nursery) -> SqliteStore:
    store = SqliteStore(str(db_path), read_only=True)
    await nursery.start(store.run)
    return store


async def test_reads_what_the_writer_stored_and_refuses_to_write(
    store: SqliteStore, db_path: Path, nursery: trio.Nursery
) -> None:
    await store.insert_messages([new_message("m1")], NOW)
    reader = await run_read_only(db_path, nursery)
    assert [h.message.msgid for h in await reader.history("m1")] == ["m1"]
    assert (await reader.counts())["accepted"] == 1
    with pytest.raises(StoreError, match="read-only"):
        await reader.insert_messages([new_message("m2")], NOW)
    assert [h.message.msgid for h in await store.history("m2")] == []


async def test_a_missing_database_is_not_created(tmp_path: Path, nursery: trio.Nursery) -> None:
    missing = tmp_path / "none.db"
    with pytest.raises(StoreError, match="no SQLite database"):
        await run_read_only(missing, nursery)
    assert not missing.exists()


async def test_an_older_schema_is_refused_not_migrated(
    db_path: Path, nursery: trio.Nursery
) -> None:
    make_version_1_database(db_path)
    with pytest.raises(
        StoreError, match=f"schema version 1, this smsgw reads version {SCHEMA_VERSION}"
    ):
        await run_read_only(db_path, nursery)
    assert rows(db_path, "SELECT MAX(version) FROM schema_version") == [(1,)]
