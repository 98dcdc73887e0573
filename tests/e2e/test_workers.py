"""`SMSGW_WORKERS=2`: real processes — the supervisor, its workers, the Node SMSC or the
simulator, `smsgw listen` — on loopback.

Both workers serve (the kernel spreads connections, each worker has its own SMPP bind); a
worker killed with `kill -9` mid-load is replaced and the gateway keeps serving; SIGTERM
under load stops every worker gracefully (exit 0) and loses nothing.
"""

from __future__ import annotations

import json
import os
import re
import signal
from pathlib import Path

import pytest
import trio

from smsgw.client import submit
from smsgw.protocol.status import Status
from tests.e2e.delivery_support import all_settled, sim_log, wait_until
from tests.e2e.operator_support import Sms, assert_receipts
from tests.e2e.test_crash import (
    CLIENTS,
    INTERRUPT_AFTER,
    GatewayAddress,
    Outcome,
    Submissions,
    check_common,
    loaded_env,
    merchant_client,
    outcome_of,
    run_interrupted,
    summary,
)
from tests.e2e.test_smpp import APPID, SECRET, settle, smpp_gateway
from tests.gateway_process import GatewayProcess, gateway_process
from tests.http_client import Samples, http, samples, scrape_until
from tests.listen_process import listen_process

pytestmark = [pytest.mark.e2e]

WORKERS = {"SMSGW_WORKERS": "2", "SMSGW_METRICS": "127.0.0.1:0"}


def requests_per_worker(gateway: GatewayProcess) -> dict[int, int]:
    """B001 answers per worker, from the gateway's log ("[worker N]" on each line)."""
    counts: dict[int, int] = {}
    for match in re.finditer(r"\[worker (\d)\] B001 ", gateway.log_text()):
        counts[int(match.group(1))] = counts.get(int(match.group(1)), 0) + 1
    return counts


async def scrape(gateway: GatewayProcess) -> Samples:
    return samples((await http(await gateway.metrics_port(), "GET", "/metrics")).body)


def worker_pid(found: Samples, worker: int) -> int:
    return int(found[("smsgw_worker_pid", (("worker", str(worker)),))])


async def submit_spread(gateway: GatewayProcess, messages: list[Sms], clients: int) -> None:
    """The messages in batches of 5, each on a connection of its own, `clients` at a time:
    new connections are what the kernel spreads among the workers."""
    batches = [messages[i : i + 5] for i in range(0, len(messages), 5)]
    limit = trio.CapacityLimiter(clients)

    async def one(batch: list[Sms]) -> None:
        async with limit:
            reply = await submit(
                gateway.address, APPID, SECRET, [sms.item() for sms in batch], timeout=20
            )
        assert [r.status for r in reply.results] == [Status.OK] * len(batch), reply

    async with trio.open_nursery() as nursery:
        for batch in batches:
            nursery.start_soon(one, batch)


async def test_two_workers_share_the_port_and_the_binds(tmp_path: Path) -> None:
    messages = [Sms(f"w{n}", f"86138{n:08d}", f"hello {n}") for n in range(200)]
    # Receipts go to any live bind of the account, as real SMSCs' do: many reach the worker
    # that did not submit the message, some before the submitter recorded its operator id.
    async with smpp_gateway(
        tmp_path, smsc_options={"dlr_any": True}, carrier={"binds": 2}, links=2, env=WORKERS
    ) as setup:
        gateway = setup.gateway
        assert "(2 workers)" in await gateway.output_line("listening on")
        assert len([line for line in gateway.stdout if b"listening on" in line]) == 1
        await submit_spread(gateway, messages, clients=8)
        receipts = await setup.receipts_for(len(messages), timeout=30)
        await settle(setup.smsc, len(messages))
        per_worker = requests_per_worker(gateway)
        assert set(per_worker) == {1, 2} and sum(per_worker.values()) == 40, per_worker
        # Each worker holds one of the two binds: both sent, and both took receipts.
        binds = {event.get("session") for event in setup.smsc.events_of("submit_sm")}
        assert len(binds) == 2, binds
        receipt_binds = {event.get("session") for event in setup.smsc.events_of("deliver_sm")}
        assert receipt_binds == binds
        done = ("smsgw_push_items_done_total", (("appid", APPID),))
        port = await gateway.metrics_port()
        found = await scrape_until(port, lambda found: found.get(done) == len(messages))
        assert found[("smsgw_workers_up", ())] == 2
        assert found[("smsgw_carrier_binds", ())] == 2  # 1 + 1: the sum over the workers
        assert found[("smsgw_carrier_binds_up", ())] == 2
        assert found[("smsgw_messages_accepted_total", ())] == len(messages)
        assert found[("smsgw_responses_total", (("status", "0"),))] == 40
        assert found[("smsgw_messages", (("state", "delivered"),))] == len(messages)
        health = await http(port, "GET", "/healthz")
        assert health.status == 200
        assert json.loads(health.body)["checks"]["workers"] == "2/2 up"
        assert_receipts(receipts, {sms.key: ("1", "DELIVRD") for sms in messages}, sent_after_ms=0)


async def kill_9_worker_1(gateway: GatewayProcess) -> None:
    """kill -9 worker 1 (it pushes the receipts too); the supervisor replaces it within
    seconds, and the gateway keeps answering meanwhile."""
    before = await scrape(gateway)
    pid = worker_pid(before, 1)
    assert pid > 0 and worker_pid(before, 2) > 0
    started = trio.current_time()
    os.kill(pid, signal.SIGKILL)
    port = await gateway.metrics_port()
    found = await scrape_until(
        port,
        lambda found: (
            found.get(("smsgw_workers_up", ())) == 2 and worker_pid(found, 1) not in (0, pid)
        ),
        timeout=15,
    )
    assert trio.current_time() - started < 10
    assert found[("smsgw_worker_restarts_total", ())] == 1
    # The counters of the dead worker stay in the totals.
    accepted = ("smsgw_messages_accepted_total", ())
    assert found[accepted] >= before[accepted]
    health = await http(port, "GET", "/healthz")
    assert health.status == 200, health.body


@pytest.mark.slow
async def test_kill_9_one_worker_mid_load(tmp_path: Path) -> None:
    async def kill_then_stop(gateway: GatewayProcess) -> None:
        await kill_9_worker_1(gateway)
        # The survivor and the replacement keep serving the clients; then SIGTERM.
        await trio.sleep(1)
        assert set(requests_per_worker(gateway)) == {1, 2}
        assert await gateway.terminate() == 0

    outcome = await run_interrupted(tmp_path, kill_then_stop, WORKERS)
    check_common(outcome)
    assert_in_doubt_never_sent_twice(outcome)
    print(f"kill -9 of a worker: {summary(outcome)}")


@pytest.mark.slow
async def test_kill_9_one_worker_the_others_finish_its_messages(tmp_path: Path) -> None:
    """The same load and kill as above, but no restart: the survivor (or the replacement)
    reclaims the dead worker's rows once its lease lapses, and everything becomes final."""
    log = tmp_path / "sim.log"
    submissions = Submissions()
    gateway = GatewayAddress()
    with trio.fail_after(90):
        async with listen_process(tmp_path / "merchant") as merchant:
            env = loaded_env(tmp_path, merchant.address, SMSGW_LEASE="2s", **WORKERS)
            async with gateway_process(tmp_path, env) as running:
                gateway.set(running.address)
                async with trio.open_nursery() as clients:
                    for client in range(CLIENTS):
                        clients.start_soon(merchant_client, client, gateway, submissions)
                    await wait_until(
                        lambda: len(sim_log(log)) >= INTERRUPT_AFTER, timeout=20, what="sending"
                    )
                    await kill_9_worker_1(running)
                await wait_until(
                    lambda: all_settled(tmp_path / "smsgw.db"), timeout=30, what="all final"
                )
    outcome = outcome_of(tmp_path, submissions, {}, merchant)
    check_common(outcome)
    assert_in_doubt_never_sent_twice(outcome)


def assert_in_doubt_never_sent_twice(outcome: Outcome) -> None:
    for pair in outcome.recovered:
        msgtype, state, _, stat = outcome.rows[pair]
        if msgtype == 2:
            assert (state, stat) == ("failed", "UNKNOWN"), pair
    unknown = [pair for pair, row in outcome.rows.items() if row[3] == "UNKNOWN"]
    assert set(unknown) <= outcome.recovered


@pytest.mark.slow
async def test_sigterm_under_load_stops_every_worker_and_loses_nothing(tmp_path: Path) -> None:
    async def terminate(gateway: GatewayProcess) -> None:
        assert set(requests_per_worker(gateway)) == {1, 2}
        assert await gateway.terminate() == 0

    outcome = await run_interrupted(tmp_path, terminate, WORKERS)
    check_common(outcome)
    assert outcome.left_behind.get("submitting", 0) == 0
    assert outcome.left_behind.get("queued", 0) == 0
    assert not outcome.recovered
    for pair, (_, _, attempts, stat) in outcome.rows.items():
        assert stat != "UNKNOWN", pair
        assert outcome.submits[pair] == attempts, pair
        assert len(outcome.receipts[pair]) == 1, (pair, outcome.receipts[pair])
    print(f"SIGTERM, 2 workers: {summary(outcome)}")


async def test_a_worker_that_cannot_start_stops_the_gateway(tmp_path: Path) -> None:
    # The store is a directory: the first worker cannot open it; the supervisor exits 2
    # with the worker's one-line reason.
    (tmp_path / "db").mkdir()
    env = {**WORKERS, "SMSGW_DB": f"sqlite:///{tmp_path / 'db'}"}
    with pytest.raises(BaseExceptionGroup) as failed:
        async with gateway_process(tmp_path / "gw", env):
            pass
    reason = r"(?s)exited 2 before listening.*worker 1: configuration error: SMSGW_DB"
    assert failed.group_contains(RuntimeError, match=reason, depth=None)


async def test_workers_stop_when_their_supervisor_is_killed(tmp_path: Path) -> None:
    async with gateway_process(tmp_path, WORKERS) as gateway:
        found = await scrape(gateway)
        pids = [worker_pid(found, 1), worker_pid(found, 2)]
        assert all(pids)
        gateway.kill()  # kill -9: no chance to pass anything on
        await gateway.process.wait()
        # Each worker sees its link end and stops gracefully by itself.
        with trio.fail_after(20):
            while any(Path(f"/proc/{pid}").exists() for pid in pids):  # noqa: ASYNC110
                await trio.sleep(0.1)
    assert "the supervisor is gone: stopping" in gateway.log_text()
