"""The durable store: the role protocols (`Store` is all of them), their records, and
`open_store(url)`."""

from __future__ import annotations

import urllib.parse

from smsgw.store.base import (
    FINAL_STATES,
    OWNED_STATES,
    WAITING_STATES,
    AcceptStore,
    Applied,
    CommitFailed,
    Event,
    EventKind,
    InboundRecord,
    InboundStore,
    MessageHistory,
    MessageRecord,
    MessageUpdate,
    NewMessage,
    OutboxStore,
    OwnerInfo,
    OwnerRecord,
    OwnerStore,
    PartMatch,
    PartRecord,
    PartReport,
    PipelineStore,
    PushKind,
    PushRecord,
    PushState,
    QueryStore,
    QueueStore,
    Reclaimed,
    ReportStore,
    RetentionStore,
    State,
    Store,
    StoreClosed,
    StoreError,
    StoreService,
    UnknownMessage,
)
from smsgw.store.sqlite import SqliteStore

__all__ = [
    "FINAL_STATES",
    "OWNED_STATES",
    "WAITING_STATES",
    "AcceptStore",
    "Applied",
    "CommitFailed",
    "Event",
    "EventKind",
    "InboundRecord",
    "InboundStore",
    "MessageHistory",
    "MessageRecord",
    "MessageUpdate",
    "NewMessage",
    "OutboxStore",
    "OwnerInfo",
    "OwnerRecord",
    "OwnerStore",
    "PartMatch",
    "PartRecord",
    "PartReport",
    "PipelineStore",
    "PushKind",
    "PushRecord",
    "PushState",
    "QueryStore",
    "QueueStore",
    "Reclaimed",
    "ReportStore",
    "RetentionStore",
    "SqliteStore",
    "State",
    "Store",
    "StoreClosed",
    "StoreError",
    "StoreService",
    "UnknownMessage",
    "open_store",
    "sqlite_path",
]

_SQLITE_FORMS = (
    "sqlite:///relative/path.db, sqlite:////absolute/path.db"
    " or postgresql://user:password@host:port/dbname"
)


def sqlite_path(url: str) -> str:
    """The file path of a `sqlite:` URL: three slashes = relative, four = absolute."""
    scheme, sep, rest = url.partition("://")
    if scheme.lower() != "sqlite" or not sep:
        raise ValueError(f"not a sqlite URL (expected {_SQLITE_FORMS})")
    if not rest.startswith("/"):
        raise ValueError(f"a sqlite URL has no host: expected {_SQLITE_FORMS}")
    if "?" in rest or "#" in rest:
        raise ValueError(f"a sqlite URL takes no query or fragment: expected {_SQLITE_FORMS}")
    path = urllib.parse.unquote(rest[1:])
    if not path or path.endswith("/"):
        raise ValueError(f"a sqlite URL needs a file name: expected {_SQLITE_FORMS}")
    if path == ":memory:":
        raise ValueError("an in-memory SQLite database is not durable: give a file path")
    return path


def open_store(url: str, *, read_only: bool = False) -> Store:
    """The store for a database URL (SMSGW_DB); `read_only` for queries of a database a
    gateway owns (see SqliteStore). Raises ValueError for a URL it cannot use.

    The message never repeats the URL itself: a PostgreSQL URL may hold a password.
    """
    scheme = url.partition("://")[0].lower() if "://" in url else ""
    if scheme == "sqlite":
        return SqliteStore(sqlite_path(url), read_only=read_only)
    if scheme in ("postgresql", "postgres"):
        # Imported here: psycopg is the optional `smsgw[postgres]` extra.
        from smsgw.store.postgres.url import connection_settings

        connection_settings(url)  # a clear ValueError when psycopg or libpq is missing
        from smsgw.store.postgres import PostgresStore

        return PostgresStore(url, read_only=read_only)
    if not scheme:
        raise ValueError(f"not a database URL: expected {_SQLITE_FORMS}")
    raise ValueError(f"unsupported database URL scheme {scheme!r}: expected {_SQLITE_FORMS}")
