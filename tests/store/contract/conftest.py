"""The backend contract suite: every store backend must pass these tests.

A backend joins with one fixture param: `open_backend` below yields a factory that opens a
running store on one shared database — each call a new store instance, as another process
would open it (SQLite: the same file; PostgreSQL: the same database). Add the backend's name
to `BACKENDS` and a branch in `_open` that starts it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
import trio

from smsgw.store import SqliteStore, Store, open_store

BACKENDS = ["sqlite", "postgresql"]

OpenStore = Callable[[], Awaitable[Store]]


@pytest.fixture(params=BACKENDS)
async def open_backend(
    request: pytest.FixtureRequest, tmp_path: Path, nursery: trio.Nursery
) -> AsyncIterator[OpenStore]:
    """A factory of running stores on one database (see the module doc)."""

    async def _open() -> Store:
        if request.param == "sqlite":
            store: Store = SqliteStore(str(tmp_path / "contract.db"))
        elif request.param == "postgresql":
            store = open_store(request.getfixturevalue("pg_url"))
        else:  # pragma: no cover - a backend without its branch
            raise AssertionError(f"no contract fixture for backend {request.param!r}")
        await nursery.start(store.run)
        return store

    yield _open


@pytest.fixture
async def store(open_backend: OpenStore) -> Store:
    return await open_backend()
