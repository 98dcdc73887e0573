"""The PostgreSQL store (`SMSGW_DB=postgresql://…`): many gateways on one database.

Importing this package imports psycopg (the `smsgw[postgres]` extra); `smsgw.store`
imports it only for a `postgresql://` URL.
"""

from __future__ import annotations

from smsgw.store.postgres.store import PostgresStore
from smsgw.store.postgres.url import connection_settings

__all__ = ["PostgresStore", "connection_settings"]
