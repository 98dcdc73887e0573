"""Helpers shared by the end-to-end tests against an operator (SMPP's tests/smsc, CMPP's
tests/ismg): the messages a test sends, the gateway's fast timers, and checks of what the
merchant received and what the gateway stored."""

from __future__ import annotations

import sqlite3
from collections import Counter
from collections.abc import Mapping
from pathlib import Path

import attrs

from tests.e2e.delivery_support import now_ms
from tests.listen_process import Item

FAST_GATEWAY = {
    "SMSGW_RETRY_BACKOFF": "100ms",
    "SMSGW_PUSH_BACKOFF": "200ms",
    "SMSGW_PUSH_TIMEOUT": "2s",
    "SMSGW_SHUTDOWN_GRACE": "5s",
}


@attrs.frozen
class Sms:
    msgid: str
    phone: str
    text: str
    msgtype: int = 1

    def item(self) -> dict[str, object]:
        return {
            "msgid": self.msgid,
            "phone": self.phone,
            "message": self.text,
            "msgtype": self.msgtype,
        }

    @property
    def key(self) -> tuple[str, str]:
        return (self.msgid, self.phone)


def assert_receipts(
    receipts: list[Item],
    expected: Mapping[tuple[str, str], tuple[str, str]],
    *,
    sent_after_ms: int,
) -> None:
    """Exactly one A002 per (msgid, phone), with the expected (status, stat) and a sendtime
    between the submit and now."""
    counts = Counter((item["msgid"], item["phone"]) for item in receipts)
    assert set(counts) == set(expected), f"receipts {sorted(counts)} != {sorted(expected)}"
    assert max(counts.values()) == 1, f"duplicates: {[k for k, n in counts.items() if n > 1]}"
    now = now_ms()
    for item in receipts:
        status, stat = expected[(item["msgid"], item["phone"])]
        assert (item["status"], item["stat"]) == (status, stat), item
        assert isinstance(item["sendtime"], int), item
        assert sent_after_ms <= item["sendtime"] <= now, (item, sent_after_ms, now)


def stored_rows(workdir: Path) -> dict[str, tuple[str, int, str | None]]:
    """msgid → (state, attempts, stat) from the gateway's database (read-only)."""
    uri = f"file:{workdir / 'smsgw.db'}?mode=ro"
    with sqlite3.connect(uri, uri=True) as db:
        rows = db.execute("select msgid, state, attempts, stat from messages").fetchall()
    return {msgid: (state, attempts, stat) for msgid, state, attempts, stat in rows}
