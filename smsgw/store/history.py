"""`smsgw status`'s read of a message's history, for both stores: the same statements (but
for the parameter marker) and the same records built from their rows."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import attrs

from smsgw.store.base import Event, EventKind, MessageHistory, PartRecord
from smsgw.store.rows import MESSAGE_COLUMNS, PUSH_COLUMNS, message_record, push_record

# Runs one statement with its parameters and returns its rows.
Fetch = Callable[[str, tuple[object, ...]], Iterable[Sequence[Any]]]


@attrs.frozen
class HistorySql:
    messages: str  # by msgid
    app_messages: str  # by msgid and appid
    events: str
    parts: str
    pushes: str


def history_sql(marker: str) -> HistorySql:
    """The statements with `marker` for each parameter (SQLite `?`, psycopg `%s`)."""
    return HistorySql(
        messages=f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE msgid = {marker}"
        " ORDER BY appid, phone, id",
        app_messages=f"SELECT {MESSAGE_COLUMNS} FROM messages"
        f" WHERE msgid = {marker} AND appid = {marker} ORDER BY phone, id",
        events="SELECT kind, at, attempt, stat, error, carrier_msgid FROM events"
        f" WHERE message_id = {marker} ORDER BY id",
        parts="SELECT part_no, carrier_msgid, reported, delivered, stat, reported_at"
        f" FROM message_parts WHERE message_id = {marker} ORDER BY part_no",
        pushes=f"SELECT {PUSH_COLUMNS} FROM pushes p JOIN messages m ON m.id = p.message_id"
        f" WHERE p.message_id = {marker} ORDER BY p.id",
    )


def read_history(
    fetch: Fetch, sql: HistorySql, msgid: str, appid: str | None
) -> list[MessageHistory]:
    """Every message of `msgid` (of `appid` if given) with its events, parts and pushes;
    `reported`/`delivered` as SQLite's 0/1 or PostgreSQL's booleans."""
    if appid is None:
        rows = fetch(sql.messages, (msgid,))
    else:
        rows = fetch(sql.app_messages, (msgid, appid))
    histories: list[MessageHistory] = []
    for row in rows:
        message = message_record(row)
        accepted = Event(EventKind.ACCEPTED.value, message.accepted_at_ms, 0)
        events = (accepted, *(Event(*event) for event in fetch(sql.events, (message.id,))))
        parts = tuple(
            PartRecord(part_no, carrier_msgid, bool(reported), bool(delivered), stat, at)
            for part_no, carrier_msgid, reported, delivered, stat, at in fetch(
                sql.parts, (message.id,)
            )
        )
        pushes = tuple(push_record(push) for push in fetch(sql.pushes, (message.id,)))
        histories.append(MessageHistory(message, events, parts, pushes))
    return histories
