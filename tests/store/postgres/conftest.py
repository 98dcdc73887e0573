"""The store tests' `store` fixture, as a PostgresStore on a database of the test's own."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import pytest
import trio

from smsgw.store import Store, open_store

if TYPE_CHECKING:
    from smsgw.store.postgres import PostgresStore


def postgres_store(url: str, **options: object) -> PostgresStore:
    # Imported here: without libpq the tests must still be collected (and left out).
    from smsgw.store.postgres import PostgresStore

    return PostgresStore(url, **options)  # type: ignore[arg-type]


@pytest.fixture
async def store(pg_url: str, nursery: trio.Nursery) -> AsyncIterator[Store]:
    running = open_store(pg_url)
    await nursery.start(running.run)
    yield running
