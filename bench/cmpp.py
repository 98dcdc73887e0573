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
  with one and two links at window 16 with reports, and one link without; and for
  reference one link at window 64, beyond the spec's 16 (the simulator allows 64 here), to
  tell what the window costs from what the dialect does. The load and the timing are
  bench/smpp.py's (bench/carrier_run.py).
- SMPP in the same run: the Node SMSC, blast.js at window 64, and the gateway with one bind
  at window 16 (like for like) and at window 64 (bench/smpp.py's best single bind). Both
  peers stay up and the gateway runs alternate: CMPP 1 link, SMPP, then the other CMPP
  runs.

Printed for each gateway run: SUBMIT/s counted at the simulator, the ratio to its ceiling,
the gateway's CPU per message and the simulator's (its utime + stime over the run divided
by the messages; near one core in all means the simulator, a Python process, is the cap),
then CMPP's rate and CPU per message over SMPP's (target: a rate ratio >= 1, with reports).

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
    parse_args,
    run_gateway,
)
from bench.loadgen import cpu_seconds
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
WINDOW = 16  # the spec's W, the carrier's default
ISMG_WINDOW = 64  # what the simulator lets one link have unanswered (blast keeps to WINDOW)


@attrs.frozen
class CmppScenario:
    links: int
    reports: bool = True
    window: int = WINDOW

    @property
    def name(self) -> str:
        links = f"{self.links} link{'s' if self.links > 1 else ''}"
        return f"gateway, {links}, window {self.window}{'' if self.reports else ', no reports'}"

    def run(self, ismg: IsmgProcess) -> GatewayRun:
        url = (
            f"cmpp://{DEFAULT_SP_ID}:{DEFAULT_SECRET}@127.0.0.1:{ismg.port}"
            f"?version=3.0&src_id=106900&window={self.window}&binds={self.links}"
            f"&active_test=0&registered_delivery={int(self.reports)}"
        )
        return GatewayRun(url, links=self.links, window=self.window, reports=self.reports)


@attrs.frozen
class CmppFigure:
    scenario: CmppScenario
    result: GatewayResult
    ismg_cpu_seconds: float

    @property
    def ismg_us_per_message(self) -> float:
        return self.ismg_cpu_seconds / self.result.total * 1e6


CMPP_SCENARIOS = (
    CmppScenario(1),
    CmppScenario(2),
    CmppScenario(1, reports=False),
    CmppScenario(1, window=64),  # beyond the spec's W: what the window costs, not the dialect
)
SMPP_SCENARIOS = (Scenario(1, WINDOW), Scenario(1, 64))


@attrs.define
class Figures:
    cmpp: list[CmppFigure] = attrs.field(factory=list)
    smpp: list[tuple[Scenario, GatewayResult]] = attrs.field(factory=list)
    ceilings: dict[str, float] = attrs.field(factory=dict)


async def _ismg_ceiling(ismg: IsmgProcess, count: int, reports: bool) -> float:
    result = await blast(
        ismg.port,
        count=count,
        window=WINDOW,
        sp_id=BLAST_SP_ID,
        registered_delivery=int(reports),
        timeout=300,
    )
    if result.ok != result.submits:
        raise IsmgError(f"blast: {result.failed} of {result.submits} refused")
    return result.per_second


async def measure(args: argparse.Namespace, tmp: Path) -> Figures:
    """Both peers stay up; the gateway runs alternate between them, so a change in the
    machine's load meanwhile weighs on both protocols alike."""
    figures = Figures()
    ceilings = figures.ceilings
    accounts = {DEFAULT_SP_ID: DEFAULT_SECRET, BLAST_SP_ID: DEFAULT_SECRET}
    async with (
        running_ismg_process(
            quiet=True, report_delay=0.0, accounts=accounts, window=ISMG_WINDOW
        ) as ismg,
        running_smsc(quiet=True, dlr_delay=0.0) as smsc,
    ):

        async def cmpp(scenario: CmppScenario) -> None:
            index = len(figures.cmpp)
            cpu_before = cpu_seconds(ismg.process.pid)
            result = await run_gateway(
                ismg,
                ISMG_COUNTERS,
                tmp / f"cmpp{index}",
                scenario.run(ismg),
                messages=args.messages,
                batch=args.batch,
            )
            ismg_cpu = cpu_seconds(ismg.process.pid) - cpu_before
            figures.cmpp.append(CmppFigure(scenario, result, ismg_cpu))

        async def smpp(scenario: Scenario) -> None:
            workdir = tmp / f"smpp{len(figures.smpp)}"
            result = await run_scenario(
                smsc, workdir, scenario, messages=args.messages, batch=args.batch
            )
            figures.smpp.append((scenario, result))

        ceilings["ismg"] = await _ismg_ceiling(ismg, args.blast, True)
        ceilings["ismg_no_reports"] = await _ismg_ceiling(ismg, args.blast, False)
        ceilings["smsc"] = await blast_ceiling(smsc, args.blast, 64)
        await cmpp(CMPP_SCENARIOS[0])
        for scenario in SMPP_SCENARIOS:
            await smpp(scenario)
        for cmpp_scenario in CMPP_SCENARIOS[1:]:
            await cmpp(cmpp_scenario)
        ceilings["ismg_after"] = await _ismg_ceiling(ismg, args.blast, True)
    return figures


def report(args: argparse.Namespace, figures: Figures) -> None:
    ceilings = figures.ceilings
    print(f"{'ISMG ceiling (blast, window 16, reports):':46}{ceilings['ismg']:9.0f} SUBMIT/s")
    print(f"{'  the same after the gateway runs:':46}{ceilings['ismg_after']:9.0f} SUBMIT/s")
    print(f"{'  without reports:':46}{ceilings['ismg_no_reports']:9.0f} SUBMIT/s")
    for figure in figures.cmpp:
        top = ceilings["ismg" if figure.scenario.reports else "ismg_no_reports"]
        print(
            f"{figure.scenario.name + ':':46}{figure.result.describe(top, 'SUBMIT/s')}  "
            f"ISMG CPU {figure.ismg_us_per_message:4.0f} us/message"
        )
    smsc = ceilings["smsc"]
    print(f"{'SMSC ceiling (blast.js, window 64, receipts):':46}{smsc:9.0f} submit_sm/s")
    for scenario, result in figures.smpp:
        name = "SMPP " + scenario.name
        print(f"{name + ':':46}{result.describe(smsc, 'submit_sm/s')}")
    # Each SMPP run against the CMPP run with one link at its window (with reports).
    cmpp_at = {
        f.scenario.window: f.result
        for f in figures.cmpp
        if f.scenario.links == 1 and f.scenario.reports
    }
    for scenario, result in figures.smpp:
        cmpp = cmpp_at[scenario.window]
        rate = cmpp.per_second / result.per_second
        cpu = cmpp.cpu_us_per_message / result.cpu_us_per_message
        label = f"CMPP / SMPP, 1 link, window {scenario.window}:"
        print(f"{label:46}{rate:9.2f} rate (target >= 1), {cpu:.2f} CPU per message")
    print(f"{args.messages} messages a gateway run, in A001 batches of {args.batch}")


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        figures = await measure(args, Path(tmp))
    report(args, figures)


if __name__ == "__main__":
    trio.run(main, parse_args(__doc__))
