"""Mobile-originated messages in the SQLite store, and the gateway task that stores them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import pytest
import trio

from smsgw.carriers.base import MobileOriginated, ReceivedMo
from smsgw.inbox import store_inbound
from smsgw.store import SqliteStore, Store, StoreError
from tests.store.conftest import NOW


def mo(n: int, text: str = "hi", udh: bytes = b"") -> MobileOriginated:
    return MobileOriginated(
        f"861380000{n:04d}", "10690000", text, 8, 0x40 if udh else 0, udh, NOW + n
    )


async def test_inbound_messages_are_stored_and_listed_newest_first(store: SqliteStore) -> None:
    chinese = mo(1, "回复TD退订 😀")  # outside the BMP too
    split = mo(2, "part one", udh=bytes.fromhex("0500030a0201"))
    await store.insert_inbound([chinese, split])
    await store.insert_inbound([mo(3), mo(3)])  # an MO has no id: a repeat is kept too
    records = await store.recent_inbound(10)
    assert [record.mo for record in records] == [mo(3), mo(3), split, chinese]
    assert [record.id for record in records] == sorted((r.id for r in records), reverse=True)
    page = await store.recent_inbound(2, before_id=records[1].id)
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
    assert sorted(record.mo.at_ms for record in stored) == [NOW + n for n in range(600)]
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
