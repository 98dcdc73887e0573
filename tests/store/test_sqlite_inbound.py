"""Mobile-originated messages in the SQLite store, and the gateway task that stores them."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
import trio

from smsgw.carriers.base import MobileOriginated
from smsgw.inbox import store_inbound
from smsgw.store import SqliteStore, StoreError
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
    send, receive = trio.open_memory_channel[MobileOriginated](1000)
    for n in range(600):  # more than one batch
        send.send_nowait(mo(n))
    send.close()
    with trio.fail_after(10):
        await store_inbound(receive, store)
    stored = await store.recent_inbound(1000)
    assert sorted(record.mo.at_ms for record in stored) == [NOW + n for n in range(600)]


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


async def test_a_store_error_keeps_the_batch_and_tries_again(
    store: SqliteStore, autojump_clock: trio.abc.Clock
) -> None:
    failing = FailingOnce(store)
    send, receive = trio.open_memory_channel[MobileOriginated](10)
    await send.send(mo(1))
    send.close()
    await store_inbound(receive, failing)  # type: ignore[arg-type]
    assert failing.failures == 1
    assert [record.mo for record in await store.recent_inbound(10)] == [mo(1)]
