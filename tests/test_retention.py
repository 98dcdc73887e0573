"""The retention task (SMSGW_RETENTION) on a real store, in virtual time."""

from __future__ import annotations

from pathlib import Path

import trio

from smsgw.carriers.base import MobileOriginated
from smsgw.clock import WallClock
from smsgw.config import ConfigError
from smsgw.retention import DELETE_BATCH, SWEEP_INTERVAL_S, Retention
from smsgw.store import Event, EventKind, MessageUpdate, NewMessage, State
from tests.conftest import make_config
from tests.store.test_sqlite_retention import done_pushes, finished
from tests.test_pipeline import open_store

HOUR_S = 3600.0


async def test_rows_leave_once_past_retention_at_the_next_sweep(
    tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    clock = WallClock()
    async with open_store(tmp_path / "smsgw.db") as store:
        await finished(store, "m1", clock.now_ms())
        await done_pushes(store)
        await store.insert_inbound(
            [MobileOriginated("861", "1069", "hi", 0, 0, b"", clock.now_ms())]
        )
        retention = Retention(store, clock, HOUR_S)
        async with trio.open_nursery() as nursery:
            await nursery.start(retention.run)
            await trio.sleep(HOUR_S - 1)
            assert len(await store.history("m1")) == 1  # not yet past retention
            assert retention.stats.sweeps >= 2
            await trio.sleep(SWEEP_INTERVAL_S + 2)
            assert await store.history("m1") == []
            assert await store.recent_inbound(10) == []
            assert (retention.stats.messages_deleted, retention.stats.inbound_deleted) == (1, 1)
            nursery.cancel_scope.cancel()


async def test_a_large_backlog_goes_in_batches_within_one_sweep(
    tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    clock = WallClock()
    backlog = 2 * DELETE_BATCH + 7
    async with open_store(tmp_path / "smsgw.db") as store:
        await finished(store, "first", clock.now_ms(), push=False)
        messages = [
            NewMessage("app1", f"b{n}", "+86138", "x", 2, None, 1) for n in range(backlog - 1)
        ]
        await store.insert_messages(messages, clock.now_ms())
        claimed = await store.claim_due(clock.now_ms() + 1, backlog, owner="o1")
        now = clock.now_ms()
        applied = await store.apply(
            [
                update
                for r in claimed
                for update in (
                    MessageUpdate(r.id, State.SUBMITTING, Event(EventKind.SUBMITTING, now, 1)),
                    MessageUpdate(r.id, State.FAILED, Event(EventKind.FINAL, now, 1)),
                )
            ]
        )
        assert all(result.applied for result in applied)
        await trio.sleep(2 * HOUR_S)
        retention = Retention(store, clock, HOUR_S)
        assert await retention.sweep() == (backlog, 0)
        assert (await store.counts())["failed"] == 0
        assert await retention.sweep() == (0, 0)


def test_retention_setting(tmp_path: Path) -> None:
    assert make_config(tmp_path).retention == 30 * 86400
    assert make_config(tmp_path, SMSGW_RETENTION="7d").retention == 7 * 86400
    assert make_config(tmp_path, SMSGW_RETENTION="off").retention is None
    for bad in ("10m", "soon", "-1d"):
        try:
            make_config(tmp_path, SMSGW_RETENTION=bad)
        except ConfigError as exc:
            assert "SMSGW_RETENTION" in str(exc)
        else:
            raise AssertionError(f"SMSGW_RETENTION={bad} was accepted")
