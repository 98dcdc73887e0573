"""What one commit group tells the other gateways: one NOTIFY per group, never per row.

The payload is JSON: `{"due": <earliest due ms> | null, "push": [appid, …] | "*"}`. It stays
far below PostgreSQL's 8,000-byte limit: past `MAX_APPS` apps it says "*" (every app looks).
"""

from __future__ import annotations

import json
from typing import Final

import attrs
from psycopg import Connection, pq

from smsgw.store.wake import Wake

CHANNEL: Final = "smsgw"
MAX_APPS: Final = 50


@attrs.define
class Wakes:
    """Collected by a group's ops: messages that became due, apps with new pushes."""

    due_ms: int | None = None
    apps: set[str] = attrs.field(factory=set)

    def due(self, at_ms: int) -> None:
        self.due_ms = at_ms if self.due_ms is None else min(self.due_ms, at_ms)

    def push(self, appid: str) -> None:
        self.apps.add(appid)

    def __bool__(self) -> bool:
        return self.due_ms is not None or bool(self.apps)

    def payload(self) -> str:
        apps: list[str] | str = sorted(self.apps) if len(self.apps) <= MAX_APPS else "*"
        return json.dumps({"due": self.due_ms, "push": apps}, separators=(",", ":"))


def notify_and_commit(conn: Connection[object], payload: str) -> bytes:
    """The group's NOTIFY and its COMMIT as one simple query, one round trip; the payload
    quoted by libpq (built here rather than composed by psycopg.sql: once per group)."""
    literal = pq.Escaping(conn.pgconn).escape_literal(payload.encode())
    return b"SELECT pg_notify('" + CHANNEL.encode() + b"', " + literal + b"); COMMIT"


def decode(payload: str) -> Wake:
    """A payload from another gateway; anything unreadable wakes everything (cheap polls)."""
    try:
        data = json.loads(payload)
        due = data["due"]
        apps = data["push"]
        if due is not None and not isinstance(due, int):
            raise TypeError("due")
        if apps == "*":
            return Wake(due, (), all_apps=True)
        if not isinstance(apps, list) or not all(isinstance(app, str) for app in apps):
            raise TypeError("push")
        return Wake(due, tuple(apps))
    except (ValueError, KeyError, TypeError):
        return Wake(0, (), all_apps=True)
