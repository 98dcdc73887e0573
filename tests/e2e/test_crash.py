"""Interrupting a loaded gateway: `kill -9` and SIGTERM while it sends, then a restart on the
same database. Several merchant clients keep submitting through the interruption (and
submit again what was not answered, as a merchant would); the simulator logs every submit
it receives, and `smsgw listen` prints every receipt."""

from __future__ import annotations

import collections
import signal
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio

from smsgw.client import ClientError, submit
from tests.e2e.delivery_support import (
    APPID,
    PHONES,
    SECRET,
    all_settled,
    by_pair,
    gateway_env,
    query,
    sim_log,
    sim_url,
    state_counts,
    submits_per_msgid,
    wait_until,
)
from tests.gateway_process import GatewayProcess, gateway_process
from tests.listen_process import ListenProcess, listen_process

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

CLIENTS = 4
BATCHES = 15  # per client
BATCH = 50  # items per A001: 4 × 15 × 50 = 3,000 messages
MAX_RETRIES = 3
INTERRUPT_AFTER = 600  # submits the operator has received when the gateway is interrupted

Pair = tuple[str, str]


@attrs.define
class GatewayAddress:
    """Where the clients find the gateway; None while it is down."""

    address: str | None = None
    up: trio.Event = attrs.field(factory=trio.Event)

    def set(self, address: str) -> None:
        self.address = address
        self.up.set()

    def down(self) -> None:
        self.address = None
        self.up = trio.Event()


def batch_items(client: int, batch: int) -> list[dict[str, Any]]:
    items = []
    for n in range(batch * BATCH, (batch + 1) * BATCH):
        items.append(
            {
                "phone": PHONES[n % len(PHONES)],
                "message": f"message {n} of client {client}",
                "msgid": f"c{client}-{n}",
                "msgtype": 1 + n % 2,  # notices and codes, half each
            }
        )
    return items


@attrs.define
class Submissions:
    accepted: set[Pair] = attrs.field(factory=set)  # answered status 0
    resent: int = 0  # batches submitted again after no answer or 1008
    duplicates: int = 0  # items answered "duplicate": stored by an unanswered submit


async def merchant_client(client: int, gateway: GatewayAddress, seen: Submissions) -> None:
    """Submit this client's batches in order, at a steady pace that lasts past the
    interruption; a batch that gets no answer, or 1008, is submitted again (the
    idempotency key makes that safe) once the gateway is back."""
    for batch in range(BATCHES):
        items = batch_items(client, batch)
        while True:
            address = gateway.address
            if address is None:
                await gateway.up.wait()
                continue
            try:
                reply = await submit(address, APPID, SECRET, items, timeout=10)
            except ClientError:
                seen.resent += 1
                await trio.sleep(0.1)
                continue
            if reply.status == "1008":
                seen.resent += 1
                await trio.sleep(0.1)
                continue
            assert reply.status == "0", reply
            seen.accepted.update((result.msgid, result.phone) for result in reply.results)
            seen.duplicates += sum(1 for result in reply.results if result.duplicate)
            await trio.sleep(0.15)
            break


@attrs.frozen
class Outcome:
    """What a run left behind, after every message was final and every receipt pushed."""

    submissions: Submissions
    left_behind: dict[str, int]  # message states in the database right after the interruption
    rows: dict[Pair, tuple[int, str, int, str]]  # (msgtype, state, attempts, stat)
    recovered: set[Pair]  # rows with a "recovered" event (in doubt after a crash)
    submits: collections.Counter[Pair]  # submits the operator received
    receipts: dict[Pair, list[dict[str, Any]]]  # A002 items the merchant received


def loaded_env(tmp_path: Path, merchant: str, **extra: str) -> dict[str, str]:
    """The gateway of these runs (see `run_interrupted`)."""
    return gateway_env(
        tmp_path,
        sim_url(tmp_path / "sim.log", latency=0.1, dlr_delay="none", fail=0.1),
        merchant,
        SMSGW_SENDERS="64",
        SMSGW_MAX_RETRIES=str(MAX_RETRIES),
        **extra,
    )


async def run_interrupted(
    tmp_path: Path,
    interrupt: Callable[[GatewayProcess], Awaitable[None]],
    extra_env: Mapping[str, str] | None = None,
) -> Outcome:
    log = tmp_path / "sim.log"
    db = tmp_path / "smsgw.db"
    submissions = Submissions()
    gateway = GatewayAddress()
    clients_done = trio.Event()

    async def clients() -> None:
        async with trio.open_nursery() as nursery:
            for client in range(CLIENTS):
                nursery.start_soon(merchant_client, client, gateway, submissions)
        clients_done.set()

    merchant: ListenProcess
    with trio.fail_after(50):
        async with listen_process(tmp_path / "merchant") as merchant, trio.open_nursery() as n:
            # Operator latency keeps many submits in flight (64 senders, 100 ms each), and
            # one submit in ten fails for a while, so retries are under way as well.
            # dlr_delay=none: an operator without delivery reports, its acceptance is the
            # final outcome. The simulator lives in the gateway's process, so the reports it
            # still owed die with it, and the gateway has no timeout for a report that
            # never comes: those messages would stay "submitted" for ever.
            env = loaded_env(tmp_path, merchant.address, **(extra_env or {}))
            n.start_soon(clients)
            async with gateway_process(tmp_path, env) as first:
                gateway.set(first.address)
                await wait_until(
                    lambda: len(sim_log(log)) >= INTERRUPT_AFTER, timeout=20, what="sending"
                )
                # The clients keep going meanwhile: whatever they send now gets an error, no
                # answer or 1008, and is sent again to the restarted gateway.
                await interrupt(first)
                gateway.down()
            assert first.process.returncode is not None
            left_behind = state_counts(db)

            async with gateway_process(tmp_path, env) as second:
                gateway.set(second.address)
                await clients_done.wait()
                await wait_until(lambda: all_settled(db), timeout=30, what="everything final")
                assert await second.terminate() == 0

    return outcome_of(tmp_path, submissions, left_behind, merchant)


def outcome_of(
    tmp_path: Path, submissions: Submissions, left_behind: dict[str, int], merchant: ListenProcess
) -> Outcome:
    """What the database, the simulator's log and the merchant's receipts say of a run."""
    db = tmp_path / "smsgw.db"
    rows = {
        (msgid, phone): (msgtype, state, attempts, stat)
        for msgid, phone, msgtype, state, attempts, stat in query(
            db, "SELECT msgid, phone, msgtype, state, attempts, stat FROM messages"
        )
    }
    recovered = set(
        query(
            db,
            "SELECT DISTINCT m.msgid, m.phone FROM events e JOIN messages m"
            " ON m.id = e.message_id WHERE e.kind = 'recovered'",
        )
    )
    return Outcome(
        submissions=submissions,
        left_behind=left_behind,
        rows=rows,
        recovered=recovered,
        submits=submits_per_msgid(tmp_path / "sim.log"),
        receipts=by_pair(merchant.receipts()),
    )


def summary(outcome: Outcome) -> str:
    return (
        f"left behind {outcome.left_behind}; {len(outcome.recovered)} in doubt;"
        f" {sum(outcome.submits.values())} submits; {outcome.submissions.resent} batches"
        f" resent by clients, {outcome.submissions.duplicates} items answered duplicate"
    )


def check_common(outcome: Outcome) -> None:
    """What holds after any interruption."""
    everything = {
        (f"c{c}-{n}", PHONES[n % 3]) for c in range(CLIENTS) for n in range(BATCHES * BATCH)
    }
    assert (
        outcome.submissions.accepted == everything
    )  # the clients got every batch answered in the end
    assert set(outcome.rows) == everything
    for pair, (msgtype, state, attempts, stat) in outcome.rows.items():
        assert state in ("delivered", "failed"), (pair, state)
        sent = outcome.submits[pair]
        # No attempt reaches the operator unrecorded (one may be recorded and not reach it).
        assert sent <= attempts, (pair, sent, attempts)
        if msgtype == 2:
            assert sent <= 1, f"verification code {pair} submitted {sent} times"
        else:
            assert sent <= 1 + MAX_RETRIES, (pair, sent)
        if state == "delivered":
            assert sent >= 1 and stat == "ACCEPTD", (pair, sent, stat)
        # At least one receipt each, all with the final outcome the gateway recorded.
        receipts = outcome.receipts.get(pair, [])
        assert receipts, f"no A002 for {pair}"
        expected = ("1" if state == "delivered" else "2", stat)
        assert {(r["status"], r["stat"]) for r in receipts} == {expected}, (pair, receipts)
    assert set(outcome.receipts) == everything


async def test_kill_9_while_sending_then_restart(tmp_path: Path) -> None:
    async def kill(gw: GatewayProcess) -> None:
        gw.kill()
        assert await gw.process.wait() == -signal.SIGKILL

    outcome = await run_interrupted(tmp_path, kill)
    check_common(outcome)
    assert outcome.left_behind.get("submitting", 0) > 0  # killed with submits in flight
    assert outcome.recovered, "no submit was in doubt: the kill did not happen mid-send"
    for pair in outcome.recovered:
        msgtype, state, attempts, stat = outcome.rows[pair]
        if msgtype == 2:
            # In doubt: maybe sent, maybe not. Never sent again.
            assert (state, stat) == ("failed", "UNKNOWN"), pair
        else:
            # Sent again as a new attempt (or failed UNKNOWN if that was its last one).
            assert attempts >= 2, pair
    unknown = [pair for pair, row in outcome.rows.items() if row[3] == "UNKNOWN"]
    assert set(unknown) <= outcome.recovered
    duplicates = sum(len(items) - 1 for items in outcome.receipts.values())
    print(
        f"kill -9: {summary(outcome)}; {len(unknown)} failed UNKNOWN; {duplicates} duplicate A002"
    )


async def test_sigterm_under_load_loses_nothing(tmp_path: Path) -> None:
    async def terminate(gw: GatewayProcess) -> None:
        assert await gw.terminate() == 0

    outcome = await run_interrupted(tmp_path, terminate)
    check_common(outcome)
    # A graceful stop finishes (and records) every submit in flight: nothing is in doubt...
    assert outcome.left_behind.get("submitting", 0) == 0
    assert outcome.left_behind.get("queued", 0) == 0
    assert not outcome.recovered
    print(f"SIGTERM: {summary(outcome)}")
    for pair, (_, _, attempts, stat) in outcome.rows.items():
        assert stat != "UNKNOWN", pair
        assert outcome.submits[pair] == attempts, pair  # every attempt reached the operator
        # ...and every receipt push in flight is finished and recorded: no duplicates.
        assert len(outcome.receipts[pair]) == 1, (pair, outcome.receipts[pair])


async def test_sigterm_turns_away_submits_still_waiting_for_the_operator(tmp_path: Path) -> None:
    """An operator capped at 2 submits/s: most senders are waiting for their turn when the
    SIGTERM comes. They must be put back (not an attempt), not cancelled mid-submit at the
    end of the grace period, which would leave their verification codes in doubt."""
    log = tmp_path / "sim.log"
    db = tmp_path / "smsgw.db"
    env = gateway_env(
        tmp_path,
        sim_url(log, tps=2, dlr_delay="none"),
        "127.0.0.1:9",  # never pushed to: nothing here is about receipts
        SMSGW_SENDERS="8",
        SMSGW_SHUTDOWN_GRACE="5s",
    )
    codes = [
        {"phone": PHONES[0], "message": "code", "msgid": f"v{n}", "msgtype": 2} for n in range(20)
    ]
    async with gateway_process(tmp_path, env) as gw:
        reply = await submit(gw.address, APPID, SECRET, codes, timeout=10)
        assert reply.status == "0"
        await wait_until(lambda: len(sim_log(log)) >= 2, timeout=10, what="first submits")
        with trio.fail_after(3):  # well within the 5 s grace: nobody waits for a turn
            assert await gw.terminate() == 0
    states = state_counts(db)
    assert states.get("submitting", 0) == 0 and states.get("queued", 0) == 0, states
    sent_before = len(sim_log(log))

    async with gateway_process(tmp_path, {**env, "SMSGW_CARRIER": sim_url(log, dlr_delay="none")}):
        await wait_until(
            lambda: state_counts(db) == {"delivered": 20}, timeout=15, what="all delivered"
        )
    assert sent_before < 20
    assert submits_per_msgid(log) == {(code["msgid"], PHONES[0]): 1 for code in codes}
    assert query(db, "SELECT count(*) FROM messages WHERE stat = 'UNKNOWN'") == [(0,)]
