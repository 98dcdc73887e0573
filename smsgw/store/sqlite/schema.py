"""The SQLite schema: ordered migrations, applied at start-up under the write lock."""

from __future__ import annotations

import sqlite3
import time
from typing import Final

from smsgw.store.base import StoreError

# Ordered migrations: version N is MIGRATIONS[N - 1]. Append, never edit a released one.
# Foreign keys are DEFERRABLE INITIALLY DEFERRED: checked at COMMIT, so a group that would
# leave an orphan fails as a whole (and rows may be written in any order inside a group).
MIGRATIONS: Final[tuple[tuple[str, ...], ...]] = (
    (
        """CREATE TABLE messages (
            id INTEGER PRIMARY KEY,
            appid TEXT NOT NULL,
            msgid TEXT NOT NULL,
            phone TEXT NOT NULL,
            message TEXT NOT NULL,
            msgtype INTEGER NOT NULL,
            segments INTEGER NOT NULL,
            state TEXT NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0,
            accepted_at INTEGER NOT NULL,
            next_attempt_at INTEGER,
            submitted_at INTEGER,
            final_at INTEGER,
            carrier_msgid TEXT,
            stat TEXT,
            error TEXT
        )""",
        # The idempotency key; msgid first so `smsgw status MSGID` without an appid uses it.
        "CREATE UNIQUE INDEX messages_key ON messages (msgid, appid, phone)",
        # Waiting rows in due order: claim_due / next_due_at read it with a LIMIT, so they
        # stay fast however many rows wait. The WHERE must match the queries' text exactly.
        """CREATE INDEX messages_due ON messages (next_attempt_at)
            WHERE state IN ('accepted', 'scheduled')""",
        # counts() and recover() (queued / submitting rows).
        "CREATE INDEX messages_state ON messages (state)",
        """CREATE TABLE message_parts (
            message_id INTEGER NOT NULL
                REFERENCES messages (id) ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED,
            part_no INTEGER NOT NULL,
            carrier_msgid TEXT NOT NULL,
            reported INTEGER NOT NULL DEFAULT 0,
            delivered INTEGER NOT NULL DEFAULT 0,
            stat TEXT,
            reported_at INTEGER,
            PRIMARY KEY (message_id, part_no)
        ) WITHOUT ROWID""",
        "CREATE INDEX message_parts_carrier ON message_parts (carrier_msgid)",
        """CREATE TABLE events (
            id INTEGER PRIMARY KEY,
            message_id INTEGER NOT NULL
                REFERENCES messages (id) ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED,
            kind TEXT NOT NULL,
            at INTEGER NOT NULL,
            attempt INTEGER NOT NULL,
            stat TEXT,
            error TEXT,
            carrier_msgid TEXT
        )""",
        "CREATE INDEX events_message ON events (message_id)",
        """CREATE TABLE pushes (
            id INTEGER PRIMARY KEY,
            appid TEXT NOT NULL,
            message_id INTEGER NOT NULL
                REFERENCES messages (id) ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED,
            kind TEXT NOT NULL,
            body TEXT NOT NULL,
            state TEXT NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0,
            next_attempt_at INTEGER NOT NULL,
            last_error TEXT,
            created_at INTEGER NOT NULL,
            updated_at INTEGER NOT NULL
        )""",
        """CREATE INDEX pushes_due ON pushes (appid, next_attempt_at)
            WHERE state = 'pending'""",
        "CREATE INDEX pushes_message ON pushes (message_id)",
        "CREATE INDEX pushes_state ON pushes (state)",
    ),
    # 2: messages waiting for a delivery report, by when they went out (report timeout).
    (
        """CREATE INDEX messages_awaiting_report ON messages (submitted_at)
            WHERE state = 'submitted'""",
    ),
    # 3: the "accepted" event is the message row's accepted_at (`_history` puts it first),
    # not a row of its own: a third of what storing an accepted message cost.
    ("DELETE FROM events WHERE kind = 'accepted'",),
    # 4: mobile-originated messages (replies from handsets).
    (
        """CREATE TABLE inbound (
            id INTEGER PRIMARY KEY,
            source_addr TEXT NOT NULL,
            destination_addr TEXT NOT NULL,
            text TEXT NOT NULL,
            data_coding INTEGER NOT NULL,
            esm_class INTEGER NOT NULL,
            udh BLOB NOT NULL,
            received_at INTEGER NOT NULL
        )""",
    ),
    # 5: retention (SMSGW_RETENTION) finds old rows without reading the others.
    (
        """CREATE INDEX messages_finished ON messages (final_at)
            WHERE final_at IS NOT NULL""",
        "CREATE INDEX inbound_received ON inbound (received_at)",
    ),
    # 6: several processes on one store (smsgw.lifecycle, owners and leases): claimed rows
    # carry their owner; owners hold leases; reports that came before their parts were
    # recorded are stored; an app's outbox is claimed by one owner; outbox items hold the
    # receipt facts (the pusher encodes the JSON), taken from the old JSON bodies.
    (
        "ALTER TABLE messages ADD COLUMN owner TEXT",
        """CREATE TABLE owners (
            id TEXT PRIMARY KEY,
            host TEXT NOT NULL,
            pid INTEGER NOT NULL,
            started_at INTEGER NOT NULL,
            lease_until INTEGER NOT NULL
        ) WITHOUT ROWID""",
        """CREATE TABLE early_reports (
            id INTEGER PRIMARY KEY,
            carrier_msgid TEXT NOT NULL,
            delivered INTEGER NOT NULL,
            stat TEXT NOT NULL,
            at INTEGER NOT NULL,
            received_at INTEGER NOT NULL
        )""",
        "CREATE INDEX early_reports_carrier ON early_reports (carrier_msgid)",
        "CREATE INDEX early_reports_received ON early_reports (received_at)",
        """CREATE TABLE push_claims (
            appid TEXT PRIMARY KEY,
            owner TEXT NOT NULL
        ) WITHOUT ROWID""",
        """CREATE TABLE pushes_v6 (
            id INTEGER PRIMARY KEY,
            appid TEXT NOT NULL,
            message_id INTEGER NOT NULL
                REFERENCES messages (id) ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED,
            kind TEXT NOT NULL,
            final INTEGER NOT NULL,
            success INTEGER NOT NULL,
            stat TEXT NOT NULL,
            attempt INTEGER NOT NULL,
            sendtime INTEGER NOT NULL,
            carrier_msgid TEXT,
            error TEXT,
            state TEXT NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0,
            next_attempt_at INTEGER NOT NULL,
            last_error TEXT,
            created_at INTEGER NOT NULL,
            updated_at INTEGER NOT NULL
        )""",
        """INSERT INTO pushes_v6 (id, appid, message_id, kind, final, success, stat, attempt,
            sendtime, carrier_msgid, error, state, attempts, next_attempt_at, last_error,
            created_at, updated_at)
            SELECT p.id, p.appid, p.message_id, p.kind, p.kind = 'A002',
                COALESCE(json_extract(p.body, '$.status') = '1', 0),
                COALESCE(json_extract(p.body, '$.stat'), ''),
                COALESCE(json_extract(p.body, '$.attempt'), m.attempts),
                COALESCE(json_extract(p.body, '$.sendtime'), 0),
                json_extract(p.body, '$.carrier_msgid'), json_extract(p.body, '$.error'),
                p.state, p.attempts, p.next_attempt_at, p.last_error, p.created_at, p.updated_at
            FROM pushes p JOIN messages m ON m.id = p.message_id""",
        "DROP TABLE pushes",
        "ALTER TABLE pushes_v6 RENAME TO pushes",
        """CREATE INDEX pushes_due ON pushes (appid, next_attempt_at)
            WHERE state = 'pending'""",
        "CREATE INDEX pushes_message ON pushes (message_id)",
        "CREATE INDEX pushes_state ON pushes (state)",
    ),
)
SCHEMA_VERSION: Final = len(MIGRATIONS)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def schema_version(conn: sqlite3.Connection) -> int:
    row = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'"
    ).fetchone()
    if row is None:
        return 0
    return int(conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_version").fetchone()[0])


def migrate(conn: sqlite3.Connection) -> int:
    """Apply the missing migrations, each in its own transaction; return the version."""
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_version"
        " (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)"
    )
    for version in range(1, SCHEMA_VERSION + 1):
        conn.execute("BEGIN IMMEDIATE")
        try:
            # Read under the write lock: another process may have migrated meanwhile.
            current = schema_version(conn)
            if current > SCHEMA_VERSION:
                raise StoreError(
                    f"the database schema is version {current}, newer than this smsgw"
                    f" supports ({SCHEMA_VERSION}): upgrade smsgw"
                )
            if current < version:
                for statement in MIGRATIONS[version - 1]:
                    conn.execute(statement)
                conn.execute(
                    "INSERT INTO schema_version (version, applied_at) VALUES (?, ?)",
                    (version, _now_ms()),
                )
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
    current = schema_version(conn)
    if current > SCHEMA_VERSION:
        raise StoreError(
            f"the database schema is version {current}, newer than this smsgw"
            f" supports ({SCHEMA_VERSION}): upgrade smsgw"
        )
    return current
