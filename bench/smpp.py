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

    python bench/smpp.py [--messages 10000] [--batch 500] [--blast 20000]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import attrs
import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.carrier_run import (
    GatewayResult,
    GatewayRun,
    PeerCounters,
    parse_args,
    run_gateway,
)
from tests.smsc_process import Smsc, SmscError, run_blast, running_smsc

SMSC_COUNTERS = PeerCounters(
    submits="submit_sm", accepted="submit_ok", reports_answered="deliver_sm_ok", links="binds"
)


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

    def run(self, smsc: Smsc) -> GatewayRun:
        url = (
            f"smpp://smsgw:secret@127.0.0.1:{smsc.port}"
            f"?window={self.window}&binds={self.binds}&enquire_link=0"
            f"&registered_delivery={int(self.receipts)}"
        )
        return GatewayRun(
            url,
            links=self.binds,
            window=self.window,
            reports=self.receipts,
            workers=self.workers,
        )


async def run_scenario(
    smsc: Smsc, workdir: Path, scenario: Scenario, *, messages: int, batch: int
) -> GatewayResult:
    return await run_gateway(
        smsc, SMSC_COUNTERS, workdir, scenario.run(smsc), messages=messages, batch=batch
    )


async def blast_ceiling(smsc: Smsc, count: int, window: int, receipts: bool = True) -> float:
    """blast.js's rate: the SMSC's own capacity for one transceiver bind."""
    result = await run_blast(
        smsc.port,
        count=count,
        window=window,
        bind="transceiver",
        registered_delivery=int(receipts),
    )
    if result.ok != result.submits:
        raise SmscError(f"blast.js: {result.failed} of {result.submits} refused")
    return result.per_second


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


async def main(args: argparse.Namespace) -> None:
    results: list[tuple[Scenario, GatewayResult]] = []
    async with running_smsc(quiet=True, dlr_delay=0.0) as smsc:

        async def blast(window: int, receipts: bool = True) -> float:
            return await blast_ceiling(smsc, args.blast, window, receipts)

        wide = await blast(64)
        narrow = await blast(10)
        ceiling = max(wide, narrow)
        ceiling_no_receipts = await blast(64, receipts=False)
        with tempfile.TemporaryDirectory() as tmp:
            for index, scenario in enumerate(SCENARIOS):
                result = await run_scenario(
                    smsc,
                    Path(tmp) / f"run{index}",
                    scenario,
                    messages=args.messages,
                    batch=args.batch,
                )
                results.append((scenario, result))
        # The same SMSC after the gateway runs: a drift says the machine was busy meanwhile.
        ceiling_after = max(await blast(64), await blast(10))

    print(
        f"{'SMSC ceiling (best of blast.js windows):':46}{ceiling:9.0f} submit_sm/s (receipts on)"
    )
    print(f"{'  window 64 / window 10:':46}{wide:9.0f} / {narrow:.0f} submit_sm/s")
    print(f"{'  the same after the gateway runs:':46}{ceiling_after:9.0f} submit_sm/s")
    print(f"{'  without receipts, window 64:':46}{ceiling_no_receipts:9.0f} submit_sm/s")
    for scenario, result in results:
        top = ceiling if scenario.receipts else ceiling_no_receipts
        print(f"{scenario.name + ':':46}{result.describe(top, 'submit_sm/s', scenario.target)}")
    print(f"{args.messages} messages a gateway run, in A001 batches of {args.batch}")


if __name__ == "__main__":
    trio.run(main, parse_args(__doc__))
