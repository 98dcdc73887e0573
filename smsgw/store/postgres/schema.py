"""The PostgreSQL schema: ordered migrations, applied under an advisory lock.

The tables mirror the SQLite store's (same columns, same meaning; times are bigint
milliseconds since the epoch, booleans are booleans). Several gateways may start at once on
one database: each migration runs in its own transaction holding a transaction-level
advisory lock, and re-reads the version under it.
"""

from __future__ import annotations

import time
from typing import Final

from psycopg import Connection
from psycopg.rows import TupleRow

from smsgw.store.base import StoreError

Conn = Connection[TupleRow]

# Ordered migrations: version N is MIGRATIONS[N - 1]. Append, never edit a released one.
MIGRATIONS: Final[tuple[tuple[str, ...], ...]] = (
    (
        """CREATE TABLE messages (
            id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            appid text NOT NULL,
            msgid text NOT NULL,
            phone text NOT NULL,
            message text NOT NULL,
            msgtype integer NOT NULL,
            segments integer NOT NULL,
            state text NOT NULL,
            attempts integer NOT NULL DEFAULT 0,
            accepted_at bigint NOT NULL,
            next_attempt_at bigint,
            submitted_at bigint,
            final_at bigint,
            carrier_msgid text,
            stat text,
            error text,
            owner text  -- the owner that claimed it (QUEUED, SUBMITTING), else NULL
        )""",
        # The idempotency key; msgid first so `smsgw status MSGID` without an appid uses it.
        "CREATE UNIQUE INDEX messages_key ON messages (msgid, appid, phone)",
        # The queue: waiting rows in due order, read with LIMIT … FOR UPDATE SKIP LOCKED.
        """CREATE INDEX messages_due ON messages (next_attempt_at, id)
            WHERE state IN ('accepted', 'scheduled')""",
        "CREATE INDEX messages_state ON messages (state)",
        """CREATE INDEX messages_awaiting_report ON messages (submitted_at)
            WHERE state = 'submitted'""",
        """CREATE INDEX messages_finished ON messages (final_at)
            WHERE final_at IS NOT NULL""",
        """CREATE TABLE message_parts (
            message_id bigint NOT NULL
                REFERENCES messages (id) ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED,
            part_no integer NOT NULL,
            carrier_msgid text NOT NULL,
            reported boolean NOT NULL DEFAULT false,
            delivered boolean NOT NULL DEFAULT false,
            stat text,
            reported_at bigint,
            PRIMARY KEY (message_id, part_no)
        )""",
        "CREATE INDEX message_parts_carrier ON message_parts (carrier_msgid)",
        """CREATE TABLE events (
            id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            message_id bigint NOT NULL
                REFERENCES messages (id) ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED,
            kind text NOT NULL,
            at bigint NOT NULL,
            attempt integer NOT NULL,
            stat text,
            error text,
            carrier_msgid text
        )""",
        "CREATE INDEX events_message ON events (message_id)",
        """CREATE TABLE pushes (
            id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            appid text NOT NULL,
            message_id bigint NOT NULL
                REFERENCES messages (id) ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED,
            kind text NOT NULL,
            final boolean NOT NULL,
            success boolean NOT NULL,
            stat text NOT NULL,
            attempt integer NOT NULL,
            sendtime bigint NOT NULL,
            carrier_msgid text,
            error text,
            state text NOT NULL,
            attempts integer NOT NULL DEFAULT 0,
            next_attempt_at bigint NOT NULL,
            last_error text,
            created_at bigint NOT NULL,
            updated_at bigint NOT NULL
        )""",
        """CREATE INDEX pushes_due ON pushes (appid, next_attempt_at, id)
            WHERE state = 'pending'""",
        "CREATE INDEX pushes_message ON pushes (message_id)",
        "CREATE INDEX pushes_state ON pushes (state)",
        """CREATE TABLE inbound (
            id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            source_addr text NOT NULL,
            destination_addr text NOT NULL,
            text text NOT NULL,
            data_coding integer NOT NULL,
            esm_class integer NOT NULL,
            udh bytea NOT NULL,
            received_at bigint NOT NULL
        )""",
        "CREATE INDEX inbound_received ON inbound (received_at)",
        # Owners and leases (smsgw.store.base): who may finish whose claimed rows.
        """CREATE TABLE owners (
            id text PRIMARY KEY,
            host text NOT NULL,
            pid integer NOT NULL,
            started_at bigint NOT NULL,
            lease_until bigint NOT NULL
        )""",
        # Reports that came before their parts were recorded (another process's link).
        """CREATE TABLE early_reports (
            id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            carrier_msgid text NOT NULL,
            delivered boolean NOT NULL,
            stat text NOT NULL,
            at bigint NOT NULL,
            received_at bigint NOT NULL
        )""",
        "CREATE INDEX early_reports_carrier ON early_reports (carrier_msgid)",
        "CREATE INDEX early_reports_received ON early_reports (received_at)",
        # An app's outbox is pushed by one owner at a time.
        "CREATE TABLE push_claims (appid text PRIMARY KEY, owner text NOT NULL)",
    ),
)
SCHEMA_VERSION: Final = len(MIGRATIONS)
# pg_advisory_xact_lock key of the migrations ("smsgw" in ASCII).
MIGRATION_LOCK: Final = 0x736D736777


def schema_version(conn: Conn) -> int:
    """The version the database is at (0: no smsgw schema)."""
    exists = conn.execute("SELECT to_regclass('schema_version') IS NOT NULL").fetchone()
    if not exists or not exists[0]:
        return 0
    row = conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_version").fetchone()
    return int(row[0]) if row else 0


def _too_new(current: int) -> StoreError:
    return StoreError(
        f"the database schema is version {current}, newer than this smsgw"
        f" supports ({SCHEMA_VERSION}): upgrade smsgw"
    )


def migrate(conn: Conn) -> int:
    """Apply the missing migrations, each in its own transaction; return the version.
    `conn` is in autocommit mode (transactions are explicit here)."""
    for version in range(1, SCHEMA_VERSION + 1):
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_version"
                " (version integer PRIMARY KEY, applied_at bigint NOT NULL)"
            )
            current = schema_version(conn)  # under the lock: another may have migrated
            if current > SCHEMA_VERSION:
                raise _too_new(current)
            if current < version:
                for statement in MIGRATIONS[version - 1]:
                    conn.execute(statement.encode())
                conn.execute(
                    "INSERT INTO schema_version (version, applied_at) VALUES (%s, %s)",
                    (version, time.time_ns() // 1_000_000),
                )
    current = schema_version(conn)
    if current > SCHEMA_VERSION:
        raise _too_new(current)
    return current
