"""Two pipelines (two owners) on one store, as two processes would run: every message is
decided once, and when one owner stops answering (its lease lapses) the other takes over
what it held while compare-and-set refuses the lost owner's late outcomes.

Real time with a short lease (SMSGW_LEASE): these tests wait for a lease to lapse.
"""

from __future__ import annotations

import collections
import random
from collections.abc import Awaitable, Callable
from typing import Any, cast

import attrs
import trio

from smsgw.clock import WallClock
from smsgw.config import AppConfig, Config, Endpoint
from smsgw.pipeline import Pipeline
from smsgw.store import MessageHistory, NewMessage, PipelineStore, State, Store
from tests.store.contract.conftest import OpenStore
from tests.test_pipeline import ScriptedCarrier, until

LEASE_S = 0.6
APP = "app1"
CONFIG = Config(
    apps=(AppConfig(APP, "secret", receipt_endpoint=Endpoint("127.0.0.1", 9)),),
    senders=4,
    max_retries=3,
    retry_backoff=0.05,
    lease=LEASE_S,
)


class Freezable:
    """A store whose calls hang while frozen: a process that stopped answering (its lease
    renewals stop too), and that may come back later with its stale view."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.thawed = trio.Event()
        self.thawed.set()

    def freeze(self) -> None:
        self.thawed = trio.Event()

    def __getattr__(self, name: str) -> Callable[..., Awaitable[Any]]:
        method = getattr(self.inner, name)

        async def call(*args: Any, **kwargs: Any) -> Any:
            await self.thawed.wait()
            return await method(*args, **kwargs)

        return call


def messages(count: int) -> list[NewMessage]:
    return [
        NewMessage(APP, f"m{n}", "8613800000000", "hi", 1 + n % 2, None, 1) for n in range(count)
    ]


async def finals(store: Store, count: int, *, within: float = 60) -> dict[str, MessageHistory]:
    with trio.fail_after(within):
        while True:
            found = {m.msgid: (await store.history(m.msgid, APP))[0] for m in messages(count)}
            if all(h.message.state in (State.DELIVERED, State.FAILED) for h in found.values()):
                return found
            await trio.sleep(0.05)


def receipts_per_message(found: dict[str, MessageHistory]) -> collections.Counter[str]:
    return collections.Counter(
        {msgid: sum(p.kind == "A002" for p in h.pushes) for msgid, h in found.items()}
    )


def start(store: Any, carrier: ScriptedCarrier) -> Pipeline:
    return Pipeline(CONFIG, cast(PipelineStore, store), carrier, WallClock(), rng=random.Random(1))


async def test_two_pipelines_decide_every_message_once(open_backend: OpenStore) -> None:
    store_a, store_b = await open_backend(), await open_backend()
    carrier_a = ScriptedCarrier(gives_reports=False)
    carrier_b = ScriptedCarrier(gives_reports=False)
    # Neither answers its first submit before the other has one: a pipeline claims at most
    # its channel and senders (12 rows), so both take a share however the tasks are timed.
    a_sent, b_sent = trio.Event(), trio.Event()

    def meet(mine: trio.Event, theirs: trio.Event) -> Callable[..., Awaitable[None]]:
        async def before_answer(*_: object) -> None:
            mine.set()
            await theirs.wait()

        return before_answer

    carrier_a.before_answer = meet(a_sent, b_sent)
    carrier_b.before_answer = meet(b_sent, a_sent)
    async with trio.open_nursery() as nursery:
        a, b = start(store_a, carrier_a), start(store_b, carrier_b)
        await nursery.start(a.run)
        await nursery.start(b.run)
        await store_a.insert_messages(messages(200), WallClock().now_ms())
        a.wake()
        b.wake()
        found = await finals(store_a, 200)
        a.stop()
        b.stop()
    assert set(receipts_per_message(found).values()) == {1}
    submitted = collections.Counter(sms.msgid for _, sms in carrier_a.submits + carrier_b.submits)
    assert set(submitted.values()) == {1} and len(submitted) == 200
    assert carrier_a.submits and carrier_b.submits  # both took a share
    assert all(h.message.state is State.DELIVERED for h in found.values())


async def test_a_lost_owner_is_reclaimed_and_its_late_outcomes_refused(
    open_backend: OpenStore,
) -> None:
    store_a = Freezable(await open_backend())
    store_b = await open_backend()
    carrier_a = ScriptedCarrier(gives_reports=False, default="block")  # hangs mid-submit
    carrier_b = ScriptedCarrier(gives_reports=False)
    count = 40
    async with trio.open_nursery() as nursery:
        a = start(store_a, carrier_a)
        await nursery.start(a.run)
        await store_b.insert_messages(messages(count), WallClock().now_ms())
        a.wake()
        await until(lambda: carrier_a.in_flight == CONFIG.senders, within=30, every=0.01)
        held = {sms.msgid for _, sms in carrier_a.submits}
        store_a.freeze()  # A stops answering, its submits still in flight

        b = start(store_b, carrier_b)
        await nursery.start(b.run)
        found = await finals(store_b, count)
        assert b.stats.recovered == len(held)  # A's in-doubt submits, decided by B
        assert b.stats.reclaimed_owners >= 1

        # A comes back: the operator accepts what it had in flight, too late.
        carrier_a.release.set()
        store_a.thawed.set()
        await until(lambda: a.stats.stale >= len(held), within=30, every=0.01)
        a.stop()
        b.stop()
    found = await finals(store_b, count)
    assert set(receipts_per_message(found).values()) == {1}
    submits = collections.Counter(sms.msgid for _, sms in carrier_a.submits + carrier_b.submits)
    codes = {m.msgid for m in messages(count) if m.msgtype == 2}
    # A code in doubt fails UNKNOWN, never sent again; a notification is sent again.
    assert all(submits[msgid] == 1 for msgid in codes)
    for msgid in held:
        history = found[msgid]
        if msgid in codes:
            assert (history.message.state, history.message.stat) == (State.FAILED, "UNKNOWN")
        else:
            assert submits[msgid] == 2 and history.message.state is State.DELIVERED
    assert len(carrier_a.submits) == len(held)  # A sent nothing after it was reclaimed
    assert attrs.evolve(a.stats, stale=0).submits == len(held)
