"""Mobile-originated messages in the SQLite store, and the gateway task that stores them."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import cast

import attrs
import pytest
import trio

from smsgw.carriers.base import ReceivedMo
from smsgw.inbox import store_inbound
from smsgw.records import Concat, Extra, MobileOriginated
from smsgw.store import SqliteStore, Store, StoreError
from smsgw.store.sqlite import SCHEMA_VERSION, migrate
from tests.store.conftest import NOW, rows


def mo(n: int, text: str = "hi", concat: Concat | None = None) -> MobileOriginated:
    return MobileOriginated(
        sender=f"861380000{n:04d}",
        recipient="10690000",
        text=text,
        received_at_ms=NOW + n,
        carrier="smpp",
        protocol="smpp",
        concat=concat,
        extra={"data_coding": 8, "esm_class": 0x40 if concat else 0},
    )


async def test_inbound_messages_are_stored_and_listed_newest_first(store: SqliteStore) -> None:
    chinese = mo(1, "回复TD退订 😀")  # outside the BMP too
    split = mo(2, "part one", Concat(0xABCD, 255, 1))
    # Another protocol's facts fit without a migration; JSON's scalars come back as given.
    cmpp = attrs.evolve(
        mo(4),
        carrier="cmpp",
        protocol="cmpp",
        extra={"msg_fmt": 15, "udh": "", "tp_pid": 0, "note": "回复", "flag": True, "x": None},
    )
    await store.insert_inbound([chinese, split, cmpp])
    await store.insert_inbound([mo(3), mo(3)])  # an MO has no id: a repeat is kept too
    records = await store.recent_inbound(10)
    assert [record.mo for record in records] == [mo(3), mo(3), cmpp, split, chinese]
    assert [record.id for record in records] == sorted((r.id for r in records), reverse=True)
    page = await store.recent_inbound(2, before_id=records[2].id)
    assert [record.mo for record in page] == [split, chinese]
    assert await store.recent_inbound(10, before_id=records[-1].id) == []


async def test_inbound_limits_are_checked(store: SqliteStore) -> None:
    await store.insert_inbound([])
    assert await store.recent_inbound(5) == []
    with pytest.raises(ValueError, match="limit"):
        await store.recent_inbound(-1)


async def test_the_inbox_task_stores_everything_until_the_channel_closes(
    store: SqliteStore,
) -> None:
    send, receive = trio.open_memory_channel[ReceivedMo](1000)
    handed = [ReceivedMo(mo(n)) for n in range(600)]  # more than one batch
    for received in handed:
        send.send_nowait(received)
    send.close()
    with trio.fail_after(10):
        await store_inbound(receive, store)
    stored = await store.recent_inbound(1000)
    assert sorted(record.mo.received_at_ms for record in stored) == [NOW + n for n in range(600)]
    with trio.fail_after(1):
        assert all([await received.wait_stored(1) for received in handed])


class FailingOnce:
    """A store whose first insert_inbound fails (a full disk, say)."""

    def __init__(self, inner: SqliteStore) -> None:
        self.inner = inner
        self.failures = 0

    async def insert_inbound(self, messages: Sequence[MobileOriginated]) -> None:
        if self.failures == 0:
            self.failures += 1
            raise StoreError("disk full")
        await self.inner.insert_inbound(messages)


async def test_a_store_error_asks_for_the_batch_again_and_goes_on(store: SqliteStore) -> None:
    failing = FailingOnce(store)
    send, receive = trio.open_memory_channel[ReceivedMo](10)
    first, second = ReceivedMo(mo(1)), ReceivedMo(mo(2))
    await send.send(first)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(store_inbound, receive, cast(Store, failing))
        assert not await first.wait_stored(5)  # decided at once: the operator sends it again
        assert not first.given_up
        await send.send(second)
        assert await second.wait_stored(5)
        await send.aclose()
    assert failing.failures == 1
    assert [record.mo for record in await store.recent_inbound(10)] == [mo(2)]


async def test_mos_their_carrier_gave_up_on_are_not_stored(store: SqliteStore) -> None:
    send, receive = trio.open_memory_channel[ReceivedMo](10)
    late, current = ReceivedMo(mo(1)), ReceivedMo(mo(2))
    assert not await late.wait_stored(0)  # the carrier stopped waiting: it comes again
    assert late.given_up
    send.send_nowait(late)
    send.send_nowait(current)
    send.close()
    with trio.fail_after(10):
        await store_inbound(receive, store)
    assert [record.mo for record in await store.recent_inbound(10)] == [mo(2)]
    assert await current.wait_stored(0)


# MOs as schema 6 (PostgreSQL 1) stored them, with SMPP-shaped columns: (source_addr,
# destination_addr, text, data_coding, esm_class, udh, received_at).
LEGACY_ROWS = [
    ("8613800000001", "10690000", "回复TD 😀", 8, 0, b"", NOW + 1),
    ("8613800000002", "10690000", "part one", 8, 0x40, bytes.fromhex("0500030a0201"), NOW + 2),
    ("8613800000003", "1069", "part two", 0, 0x40, bytes.fromhex("06080401020302"), NOW + 3),
    ("8613800000004", "1069", "other header", 4, 0x40, bytes.fromhex("0201ff"), NOW + 4),
]


def legacy_mo(row: tuple[str, str, str, int, int, bytes, int]) -> MobileOriginated:
    """What a legacy row becomes: its carrier and protocol were never recorded."""
    sender, recipient, text, data_coding, esm_class, udh, received_at = row
    concats = {NOW + 2: Concat(0x0A, 2, 1), NOW + 3: Concat(0x0102, 3, 2)}
    extra: Extra = {"data_coding": data_coding, "esm_class": esm_class, "udh": udh.hex()}
    return MobileOriginated(
        sender, recipient, text, received_at, "", "", concats.get(received_at), extra
    )


async def test_a_version_6_database_keeps_its_mos_as_neutral_records(db_path: Path) -> None:
    conn = sqlite3.connect(str(db_path))
    migrate(conn, up_to=6)
    conn.executemany(
        "INSERT INTO inbound (source_addr, destination_addr, text, data_coding, esm_class, udh,"
        " received_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
        LEGACY_ROWS,
    )
    conn.commit()
    conn.close()
    store = SqliteStore(str(db_path))
    async with trio.open_nursery() as nursery:
        await nursery.start(store.run)
        await store.insert_inbound([mo(9)])
        records = await store.recent_inbound(10)
        nursery.cancel_scope.cancel()
    assert [record.mo for record in records] == [
        mo(9),
        *(legacy_mo(row) for row in reversed(LEGACY_ROWS)),
    ]
    assert [record.id for record in records] == [5, 4, 3, 2, 1]  # ids kept, new ones after
    assert rows(db_path, "SELECT MAX(version) FROM schema_version") == [(SCHEMA_VERSION,)]
    index = "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'inbound'"
    assert rows(db_path, index) == [("inbound_received",)]
