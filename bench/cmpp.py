"""CMPP benchmark: SUBMIT/s end to end through the gateway against the ISMG simulator's own
capacity, and against the SMPP figure of the same run.

One ISMG simulator (`python -m tests.ismg`, its own process, quiet: no per-PDU events,
reports at once) serves the CMPP part of the run.
- ceiling: `blast` (tests/ismg/client.py), a raw CMPP 3.0 client on the sans-IO codec,
  sends SUBMITs with 16 unanswered (the spec's window) on one link, with and without
  reports (it answers each DELIVER). It logs in as another SP than the gateway, so a report
  still queued when it leaves is never sent to the gateway. Measured again after the
  gateway runs: a drift means the machine was busy with something else meanwhile.
- the gateway (`smsgw serve`, SMSGW_CARRIER=cmpp://..., SQLite in a temporary directory)
  with one and two links at window 16 with reports, and one link without. The load and the
  timing are bench/smpp.py's (bench/carrier_run.py).
- SMPP in the same run: the Node SMSC, blast.js at window 64, and the gateway with one bind
  at window 16 (like for like) and at window 64 (bench/smpp.py's best single bind).

Printed for each gateway run: SUBMIT/s counted at the simulator, the ratio to its ceiling,
the gateway's CPU per message and the simulator's (its utime + stime over the run divided
by the messages; near one core in all means the simulator, a Python process, is the cap),
then the CMPP rates over the SMPP ones (target: >= 1 with reports).

    python bench/cmpp.py [--messages 10000] [--batch 500] [--blast 20000]
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
    cpu_seconds,
    parse_args,
    run_gateway,
)
from bench.smpp import Scenario, blast_ceiling, run_scenario
from tests.ismg.client import blast
from tests.ismg.events import IsmgError
from tests.ismg.process import IsmgProcess, running_ismg_process
from tests.ismg.server import DEFAULT_SECRET, DEFAULT_SP_ID
from tests.smsc_process import running_smsc

ISMG_COUNTERS = PeerCounters(
    submits="submit", accepted="submit_result_0", reports_answered="deliver_ok", links="logins"
)
BLAST_SP_ID = "901235"  # not the gateway's: a report left queued for blast never reaches it
WINDOW = 16


@attrs.frozen
class CmppScenario:
    links: int
    reports: bool = True

    @property
    def name(self) -> str:
        links = f"{self.links} link{'s' if self.links > 1 else ''}"
        return f"gateway, {links}, window {WINDOW}{'' if self.reports else ', no reports'}"

    def run(self, ismg: IsmgProcess) -> GatewayRun:
        url = (
            f"cmpp://{DEFAULT_SP_ID}:{DEFAULT_SECRET}@127.0.0.1:{ismg.port}"
            f"?version=3.0&src_id=106900&window={WINDOW}&binds={self.links}"
            f"&active_test=0&registered_delivery={int(self.reports)}"
        )
        return GatewayRun(url, links=self.links, window=WINDOW, reports=self.reports)


@attrs.frozen
class CmppFigure:
    scenario: CmppScenario
    result: GatewayResult
    ismg_cpu_seconds: float

    @property
    def ismg_us_per_message(self) -> float:
        return self.ismg_cpu_seconds / self.result.total * 1e6


CMPP_SCENARIOS = (CmppScenario(1), CmppScenario(2), CmppScenario(1, reports=False))
SMPP_SCENARIOS = (Scenario(1, WINDOW), Scenario(1, 64))


async def _cmpp_part(
    args: argparse.Namespace, tmp: Path
) -> tuple[list[CmppFigure], float, float, float]:
    figures: list[CmppFigure] = []
    accounts = {DEFAULT_SP_ID: DEFAULT_SECRET, BLAST_SP_ID: DEFAULT_SECRET}
    async with running_ismg_process(quiet=True, report_delay=0.0, accounts=accounts) as ismg:

        async def ceiling(reports: bool) -> float:
            result = await blast(
                ismg.port,
                count=args.blast,
                window=WINDOW,
                sp_id=BLAST_SP_ID,
                registered_delivery=int(reports),
                timeout=300,
            )
            if result.ok != result.submits:
                raise IsmgError(f"blast: {result.failed} of {result.submits} refused")
            return result.per_second

        with_reports = await ceiling(True)
        without_reports = await ceiling(False)
        for index, scenario in enumerate(CMPP_SCENARIOS):
            cpu_before = cpu_seconds(ismg.process.pid)
            result = await run_gateway(
                ismg,
                ISMG_COUNTERS,
                tmp / f"cmpp{index}",
                scenario.run(ismg),
                messages=args.messages,
                batch=args.batch,
            )
            figures.append(CmppFigure(scenario, result, cpu_seconds(ismg.process.pid) - cpu_before))
        after = await ceiling(True)
    return figures, with_reports, without_reports, after


async def _smpp_part(
    args: argparse.Namespace, tmp: Path
) -> tuple[list[tuple[Scenario, GatewayResult]], float]:
    results: list[tuple[Scenario, GatewayResult]] = []
    async with running_smsc(quiet=True, dlr_delay=0.0) as smsc:
        top = await blast_ceiling(smsc, args.blast, 64)
        for index, scenario in enumerate(SMPP_SCENARIOS):
            result = await run_scenario(
                smsc, tmp / f"smpp{index}", scenario, messages=args.messages, batch=args.batch
            )
            results.append((scenario, result))
    return results, top


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        figures, with_reports, without_reports, after = await _cmpp_part(args, Path(tmp))
        smpp, smpp_ceiling = await _smpp_part(args, Path(tmp))

    print(f"{'ISMG ceiling (blast, window 16, reports):':46}{with_reports:9.0f} SUBMIT/s")
    print(f"{'  the same after the gateway runs:':46}{after:9.0f} SUBMIT/s")
    print(f"{'  without reports:':46}{without_reports:9.0f} SUBMIT/s")
    for figure in figures:
        top = with_reports if figure.scenario.reports else without_reports
        print(
            f"{figure.scenario.name + ':':46}{figure.result.describe(top, 'SUBMIT/s')}  "
            f"ISMG CPU {figure.ismg_us_per_message:4.0f} us/message"
        )
    print(f"{'SMSC ceiling (blast.js, window 64, receipts):':46}{smpp_ceiling:9.0f} submit_sm/s")
    for scenario, result in smpp:
        name = "SMPP " + scenario.name
        print(f"{name + ':':46}{result.describe(smpp_ceiling, 'submit_sm/s')}")
    cmpp_one = figures[0].result.per_second
    for scenario, result in smpp:
        print(
            f"{'CMPP 1 link / SMPP 1 bind, window ' + str(scenario.window) + ':':46}"
            f"{cmpp_one / result.per_second:9.2f} (target >= 1)"
        )
    print(f"{args.messages} messages a gateway run, in A001 batches of {args.batch}")


if __name__ == "__main__":
    trio.run(main, parse_args(__doc__))
