"""One gateway run against a carrier peer (an SMSC, an ISMG), shared by bench/smpp.py and
bench/cmpp.py: start `smsgw serve` on a carrier URL, submit A001 batches from a load
process as fast as they are accepted, and count at the peer.

- the rate: submits counted at the peer, from the first poll that saw a submit of the run
  to its last submit (the peer's own counters, polled every `POLL_S`);
- the gateway's CPU time per message: utime + stime of all its threads from /proc/PID/stat,
  from the start of the load to the last report answered (accept, store, submit, report).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import socket
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Protocol

import attrs
import trio

from bench.loadgen import APPID, SECRET, cpu_seconds, frame_for
from tests.gateway_process import GatewayProcess, gateway_process

POLL_S = 0.02  # how often the peer's counters are read while a run goes
RUN_TIMEOUT_S = 120.0  # a run that has not finished by then is reported as stuck


class Peer(Protocol):
    """The carrier simulator's control channel: its counters."""

    async def stats(self) -> dict[str, int]: ...


@attrs.frozen
class PeerCounters:
    """The names a peer gives its counters."""

    submits: str  # submit requests received
    accepted: str  # submit requests answered with success
    reports_answered: str  # reports the SP acknowledged with success
    links: str  # logins accepted


@attrs.frozen
class GatewayRun:
    carrier_url: str
    links: int
    window: int
    reports: bool  # the gateway asks for (and waits for) a report per message
    workers: int = 1  # SMSGW_WORKERS: the links are divided among them

    @property
    def senders(self) -> int:
        return self.window * self.links  # the pipeline's, for a windowed carrier


@attrs.frozen
class GatewayResult:
    messages: int  # timed at the peer
    total: int  # submitted in the run
    submit_seconds: float  # first to last submit of the run at the peer
    cpu_seconds: float  # the gateway's utime + stime over the whole run
    senders: int
    refused: int  # submits the peer did not accept (throttled/failed): should be 0

    @property
    def per_second(self) -> float:
        return self.messages / self.submit_seconds

    @property
    def cpu_us_per_message(self) -> float:
        return self.cpu_seconds / self.total * 1e6

    def describe(self, ceiling: float, unit: str, note: str = "") -> str:
        """One line: the rate, its ratio to the peer's ``ceiling``, the CPU per message."""
        note = f" ({note})" if note else ""
        return (
            f"{self.per_second:9.0f} {unit}  ratio {self.per_second / ceiling:4.2f}{note}  "
            f"CPU {self.cpu_us_per_message:4.0f} us/message  "
            f"[senders={self.senders}, refused={self.refused}]"
        )


class PeerError(Exception):
    """The peer's counters did not move as a run needs."""


# -- the load process -------------------------------------------------------------------------


def _submit_batches(args: tuple[int, int, int, int]) -> int:
    """Runs in its own process: `batches` A001 requests of `items` each, one connection
    a request, one after the other. Returns how many items were accepted."""
    port, worker, batches, items = args
    accepted = 0
    for n in range(batches):
        frame = frame_for(worker, n, items, int(time.time() * 1000))
        with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
            sock.sendall(frame)
            received = bytearray()
            while chunk := sock.recv(65536):
                received += chunk
        if received[10:40].startswith(b'{"status":"0"'):
            accepted += items
    return accepted


# -- measuring ---------------------------------------------------------------------------------


async def wait_counter(peer: Peer, name: str, target: int, timeout: float) -> None:
    deadline = trio.current_time() + timeout
    while (await peer.stats()).get(name, 0) < target:
        if trio.current_time() > deadline:
            raise PeerError(f"counter {name} did not reach {target} within {timeout:g} s")
        await trio.sleep(POLL_S)


def gateway_env(carrier_url: str, batch: int, workers: int) -> dict[str, str]:
    return {
        "SMSGW_WORKERS": str(workers),
        "SMSGW_APPS": f"{APPID}:{SECRET}",
        "SMSGW_CARRIER": carrier_url,
        "SMSGW_MAX_BATCH": str(max(batch, 1000)),
        "SMSGW_LOG_LEVEL": os.environ.get("SMSGW_LOG_LEVEL", "info"),
    }


async def run_gateway(
    peer: Peer,
    counters: PeerCounters,
    workdir: Path,
    run: GatewayRun,
    *,
    messages: int,
    batch: int,
) -> GatewayResult:
    before = await peer.stats()
    env = gateway_env(run.carrier_url, batch, run.workers)
    async with gateway_process(workdir, env) as gateway:
        await wait_counter(peer, counters.links, before.get(counters.links, 0) + run.links, 10)
        return await _measure(peer, counters, gateway, run, before, messages, batch)


async def _measure(
    peer: Peer,
    counters: PeerCounters,
    gateway: GatewayProcess,
    run: GatewayRun,
    before: dict[str, int],
    messages: int,
    batch: int,
) -> GatewayResult:
    cpu_before = cpu_seconds(gateway.process.pid)
    base = before.get(counters.submits, 0)
    target = base + messages
    context = multiprocessing.get_context("spawn")
    first: tuple[float, int] | None = None
    with ProcessPoolExecutor(1, mp_context=context) as pool:
        job = pool.submit(_submit_batches, (gateway.port, 1, messages // batch, batch))
        with trio.fail_after(RUN_TIMEOUT_S):
            while True:
                submits = (await peer.stats()).get(counters.submits, 0)
                now = trio.current_time()
                if first is None and submits > base:
                    first = (now, submits)
                if submits >= target:
                    break
                if job.done() and job.exception() is not None:
                    raise RuntimeError("the load process failed") from job.exception()
                await trio.sleep(POLL_S)
        last = now
        accepted = await trio.to_thread.run_sync(job.result)
    if accepted != messages:
        raise RuntimeError(f"only {accepted} of {messages} items were accepted")
    assert first is not None
    if run.reports:
        answered = before.get(counters.reports_answered, 0) + messages
        await wait_counter(peer, counters.reports_answered, answered, 60)
    await trio.sleep(0.3)  # the last outcomes' store commit
    cpu = cpu_seconds(gateway.process.pid) - cpu_before
    after = await peer.stats()

    def refused(stats: dict[str, int]) -> int:
        return stats.get(counters.submits, 0) - stats.get(counters.accepted, 0)

    # The first poll saw some submits already: time only the ones after it.
    return GatewayResult(
        messages=target - first[1],
        total=messages,
        submit_seconds=max(last - first[0], POLL_S),
        cpu_seconds=cpu,
        senders=run.senders,
        refused=refused(after) - refused(before),
    )


def parse_args(doc: str | None) -> argparse.Namespace:
    """The options every carrier benchmark takes; its docstring's first line describes it."""
    parser = argparse.ArgumentParser(description=(doc or "").splitlines()[0])
    parser.add_argument("--messages", type=int, default=10_000, help="messages per gateway run")
    parser.add_argument("--batch", type=int, default=500, help="items per A001 request")
    parser.add_argument("--blast", type=int, default=20_000, help="submits per ceiling run")
    args = parser.parse_args()
    if args.messages % args.batch:
        parser.error("--messages must be a multiple of --batch")
    return args
