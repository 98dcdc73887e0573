"""The SQLite store (WAL, group commits): `SqliteStore` over its writer (writer.py), schema
(schema.py) and statements (queries.py)."""

from smsgw.store.sqlite.queries import (
    CLAIM_SQL,
    DELETE_FINISHED_SELECT,
    DUE_PUSHES_SQL,
    MESSAGE_WITH_PARTS_SQL,
    NEXT_DUE_SQL,
    TAKE_PART_REPORT_SQL,
    UPDATE_SQL,
)
from smsgw.store.sqlite.schema import MIGRATIONS, SCHEMA_VERSION, migrate, schema_version
from smsgw.store.sqlite.store import SqliteStore
from smsgw.store.sqlite.writer import BUSY_TIMEOUT_S, CACHE_KIB

__all__ = [
    "BUSY_TIMEOUT_S",
    "CACHE_KIB",
    "CLAIM_SQL",
    "DELETE_FINISHED_SELECT",
    "DUE_PUSHES_SQL",
    "MESSAGE_WITH_PARTS_SQL",
    "MIGRATIONS",
    "NEXT_DUE_SQL",
    "SCHEMA_VERSION",
    "TAKE_PART_REPORT_SQL",
    "UPDATE_SQL",
    "SqliteStore",
    "migrate",
    "schema_version",
]
