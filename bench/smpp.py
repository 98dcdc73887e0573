"""SMPP benchmark: submit_sm/s end to end through the gateway against the SMSC's own capacity.

One local SMSC (tests/smsc/smsc.js, quiet: no per-PDU events) serves the whole run.
- ceiling: blast.js, a minimal Node ESME, sends submit_sm with 10 and with 64 outstanding on
  one transceiver bind with registered_delivery=1 like the gateway, so the SMSC does the
  same work (answer, then send a receipt and read its deliver_sm_resp); the better of the
  two is the SMSC's capacity. blast.js stays bound until its last receipt has come: one left
  queued at the SMSC would go to the gateway (same system_id) and slow it down. Measured
  again at the end: a drift means the machine was busy with something else meanwhile.
- the gateway (`smsgw serve`, its own process, SQLite in a temporary directory) with one and
  two binds at window 10, one and two binds at window 64, and for reference one bind at
  window 64 without receipts (against blast.js without receipts). A second bind adds
  submits in flight: it helps while the window limits the rate (window 10), not once the
  gateway's own CPU does (window 64). The gateway runs one
  sender per window slot (window x binds). A load process submits `--messages` A001 items
  in batches (sendtime now) as fast as they are accepted; the gateway stores them, sends
  them and records each receipt.

Printed for each: submit_sm/s counted at the SMSC (from the first poll that saw a submit of
the run to its last submit), the ratio to the ceiling (targets: >= 0.5 with one bind, higher
with two) and the gateway's CPU time per message (utime + stime of all its threads from
/proc/PID/stat, from the start of the load to the last receipt recorded: accept, store,
submit, receipt).

With `SMSGW_WORKERS=2` (two binds, one per worker) the target is >= 0.35 of the ceiling.
CPU time counts the supervisor and its workers.

    python bench/smpp.py [--messages 10000] [--batch 500] [--blast 20000] [--workers-only]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import socket
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import attrs
import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.loadgen import APPID, SECRET, cpu_seconds, frame_for
from tests.gateway_process import GatewayProcess, gateway_process
from tests.smsc_process import Smsc, SmscError, run_blast, running_smsc

POLL_S = 0.02  # how often the SMSC's counters are read while a run goes
RUN_TIMEOUT_S = 120.0  # a run that has not finished by then is reported as stuck


@attrs.frozen
class Scenario:
    binds: int
    window: int
    receipts: bool = True  # registered_delivery=1: the SMSC sends a receipt per message
    workers: int = 1  # SMSGW_WORKERS: the binds are divided among them

    @property
    def name(self) -> str:
        binds = f"{self.binds} bind{'s' if self.binds > 1 else ''}"
        receipts = "" if self.receipts else ", no receipts"
        workers = f"{self.workers} workers, " if self.workers > 1 else ""
        return f"gateway, {workers}{binds}, window {self.window}{receipts}"

    @property
    def target(self) -> str:
        if not self.receipts:
            return "for reference"
        if self.workers > 1:
            return "target >= 0.35"
        return "target >= 0.5" if self.binds == 1 else f"target: above 1 bind at {self.window}"


@attrs.frozen
class GatewayResult:
    scenario: Scenario
    messages: int
    submit_seconds: float  # first to last submit_sm of the run at the SMSC
    cpu_seconds: float  # the gateway's utime + stime over the whole run
    senders: int
    refused: int  # submit_sm the SMSC did not accept (throttled/failed): should be 0

    @property
    def per_second(self) -> float:
        return self.messages / self.submit_seconds


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


async def wait_counter(smsc: Smsc, name: str, target: int, timeout: float) -> None:
    deadline = trio.current_time() + timeout
    while (await smsc.stats())[name] < target:
        if trio.current_time() > deadline:
            raise SmscError(f"SMSC counter {name} did not reach {target} within {timeout:g} s")
        await trio.sleep(POLL_S)


async def run_gateway(
    smsc: Smsc, workdir: Path, scenario: Scenario, *, messages: int, batch: int
) -> GatewayResult:
    url = (
        f"smpp://smsgw:secret@127.0.0.1:{smsc.port}"
        f"?window={scenario.window}&binds={scenario.binds}&enquire_link=0"
        f"&registered_delivery={int(scenario.receipts)}"
    )
    env = {
        "SMSGW_APPS": f"{APPID}:{SECRET}",
        "SMSGW_CARRIER": url,
        "SMSGW_MAX_BATCH": str(max(batch, 1000)),
        "SMSGW_LOG_LEVEL": os.environ.get("SMSGW_LOG_LEVEL", "info"),
        "SMSGW_WORKERS": str(scenario.workers),
    }
    before = await smsc.stats()
    async with gateway_process(workdir, env) as gateway:
        await wait_counter(smsc, "binds", before["binds"] + scenario.binds, 10)
        senders = scenario.window * scenario.binds  # the pipeline's, for a windowed carrier
        return await _measure(smsc, gateway, scenario, before, messages, batch, senders)


async def _measure(
    smsc: Smsc,
    gateway: GatewayProcess,
    scenario: Scenario,
    before: dict[str, int],
    messages: int,
    batch: int,
    senders: int,
) -> GatewayResult:
    cpu_before = cpu_seconds(gateway.process.pid)
    base = before["submit_sm"]
    target = base + messages
    context = multiprocessing.get_context("spawn")
    first: tuple[float, int] | None = None
    with ProcessPoolExecutor(1, mp_context=context) as pool:
        job = pool.submit(_submit_batches, (gateway.port, 1, messages // batch, batch))
        with trio.fail_after(RUN_TIMEOUT_S):
            while True:
                stats = await smsc.stats()
                now = trio.current_time()
                if first is None and stats["submit_sm"] > base:
                    first = (now, stats["submit_sm"])
                if stats["submit_sm"] >= target:
                    break
                if job.done() and job.exception() is not None:
                    raise RuntimeError("the load process failed") from job.exception()
                await trio.sleep(POLL_S)
        last = now
        accepted = await trio.to_thread.run_sync(job.result)
    if accepted != messages:
        raise RuntimeError(f"only {accepted} of {messages} items were accepted")
    assert first is not None
    if scenario.receipts:
        # Every receipt acknowledged by the gateway.
        await wait_counter(smsc, "deliver_sm_ok", before["deliver_sm_ok"] + messages, 60)
    await trio.sleep(0.3)  # the last outcomes' store commit
    cpu = cpu_seconds(gateway.process.pid) - cpu_before
    after = await smsc.stats()
    # The first poll saw some submits already: time only the ones after it.
    seconds = max(last - first[0], POLL_S)
    measured = target - first[1]
    return GatewayResult(
        scenario=scenario,
        messages=measured,
        submit_seconds=seconds,
        cpu_seconds=cpu,
        senders=senders,
        refused=(after["submit_sm"] - after["submit_ok"])
        - (before["submit_sm"] - before["submit_ok"]),
    )


# -- main ----------------------------------------------------------------------------------------

SCENARIOS = (
    Scenario(1, 10),
    Scenario(2, 10),
    Scenario(1, 64),
    Scenario(2, 64),
    Scenario(1, 64, receipts=False),
    Scenario(2, 10, workers=2),
    Scenario(2, 64, workers=2),
)
WORKER_SCENARIOS = (Scenario(2, 64), Scenario(2, 64, workers=2))


async def main(args: argparse.Namespace) -> None:
    results: list[GatewayResult] = []
    async with running_smsc(quiet=True, dlr_delay=0.0) as smsc:

        async def blast(window: int, receipts: bool = True) -> float:
            result = await run_blast(
                smsc.port,
                count=args.blast,
                window=window,
                bind="transceiver",
                registered_delivery=int(receipts),
            )
            if result.ok != result.submits:
                raise SmscError(f"blast.js: {result.failed} of {result.submits} refused")
            return result.per_second

        wide = await blast(64)
        narrow = await blast(10)
        ceiling = max(wide, narrow)
        ceiling_no_receipts = await blast(64, receipts=False)
        with tempfile.TemporaryDirectory() as tmp:
            scenarios = WORKER_SCENARIOS if args.workers_only else SCENARIOS
            for index, scenario in enumerate(scenarios):
                result = await run_gateway(
                    smsc,
                    Path(tmp) / f"run{index}",
                    scenario,
                    messages=args.messages,
                    batch=args.batch,
                )
                results.append(result)
        # The same SMSC after the gateway runs: a drift says the machine was busy meanwhile.
        ceiling_after = max(await blast(64), await blast(10))

    print(
        f"{'SMSC ceiling (best of blast.js windows):':46}{ceiling:9.0f} submit_sm/s (receipts on)"
    )
    print(f"{'  window 64 / window 10:':46}{wide:9.0f} / {narrow:.0f} submit_sm/s")
    print(f"{'  the same after the gateway runs:':46}{ceiling_after:9.0f} submit_sm/s")
    print(f"{'  without receipts, window 64:':46}{ceiling_no_receipts:9.0f} submit_sm/s")
    for result in results:
        scenario = result.scenario
        top = ceiling if scenario.receipts else ceiling_no_receipts
        per_message_us = result.cpu_seconds / args.messages * 1e6
        print(
            f"{scenario.name + ':':46}{result.per_second:9.0f} submit_sm/s  "
            f"ratio {result.per_second / top:4.2f} ({scenario.target})  "
            f"CPU {per_message_us:4.0f} us/message  "
            f"[senders={result.senders}, refused={result.refused}]"
        )
    print(f"{args.messages} messages a gateway run, in A001 batches of {args.batch}")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--messages", type=int, default=10_000, help="messages per gateway run")
    parser.add_argument("--batch", type=int, default=500, help="items per A001 request")
    parser.add_argument("--blast", type=int, default=20_000, help="submit_sm per ceiling run")
    parser.add_argument(
        "--workers-only", action="store_true", help="only 2 binds at window 64, 1 and 2 workers"
    )
    args = parser.parse_args()
    if args.messages % args.batch:
        parser.error("--messages must be a multiple of --batch")
    return args


if __name__ == "__main__":
    trio.run(main, parse_args())
