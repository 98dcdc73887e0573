"""Pipeline benchmark: end-to-end messages/s from A001 accepted to A002 acknowledged, and the
gateway's memory with a large backlog.

1. Throughput. The real gateway (its own process, simulator carrier with no failures and
   immediate delivery reports) sends every message and pushes its A002 to a `ReceiptServer`
   in this process, which counts each item as it acknowledges it. Timed from the first A001
   to the last A002: with the operator answering at once (latency=0), and at 50 ms a submit
   (latency=0.05), in alternating rounds (best of each kept: the machine is shared). Their
   ratio shows whether the senders' concurrency hides the operator's latency (target >= 0.8).
   That takes more submits in flight than the default SMSGW_SENDERS=32 allows (at most
   32 / 0.05 s = 640 msg/s at 50 ms), so the benchmark runs the gateway with --senders 512
   (with 256, each submit also waiting ~10 ms for its SUBMITTING commit, the ratio sat at
   the target's edge: 0.79-0.85 across runs).
2. Memory. Peak RSS (VmHWM) of a gateway holding 100,000 accepted, due-now messages that
   pile up behind a carrier capped at 1 submit/s, against the same with 1,000 (target: within
   1.5x), and with 300,000 to show where it levels off. The dispatcher only ever claims what
   its bounded channel holds; SQLite's page cache grows with the database up to its cap.

3. With --postgres: the throughput at 0 ms on PostgreSQL against SQLite, in alternating
   rounds (target: PostgreSQL >= 0.7 of SQLite); the memory part is skipped.

    python bench/pipeline.py [--messages 20000] [--senders 512] [--rounds 2]
                             [--queued 100000] [--plateau 300000] [--postgres]
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import attrs
import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.databases import database
from bench.loadgen import APPID, SECRET, ServerProcess, python, start_server
from smsgw.client import PushItem, ReceiptServer, submit
from smsgw.store.sqlite import CACHE_KIB

LATENCIES = (0.0, 0.05)  # seconds per submit at the simulated operator
BATCH = 100  # items per A001
SUBMITTERS = 4  # concurrent merchant connections
PHONE = "8613800138000"


def gateway_env(db_url: str, carrier: str, senders: int, log_level: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SMSGW_")}
    env.update(
        SMSGW_LISTEN="127.0.0.1:0",
        SMSGW_DB=db_url,
        SMSGW_APPS=f"{APPID}:{SECRET}",
        SMSGW_CARRIER=carrier,
        SMSGW_SENDERS=str(senders),
        SMSGW_LOG_LEVEL=log_level,
    )
    return env


def batches(prefix: str, count: int) -> Iterator[list[dict[str, object]]]:
    for start in range(0, count, BATCH):
        yield [
            {
                "phone": PHONE,
                "message": "your code is 123456",
                "msgid": f"{prefix}{n}",
                "msgtype": 1,
            }
            for n in range(start, min(start + BATCH, count))
        ]


async def submit_all(port: int, prefix: str, count: int) -> None:
    """Submit `count` messages in 100-item batches over SUBMITTERS connections at a time."""
    pending = batches(prefix, count)

    async def submitter() -> None:
        for items in pending:  # shared: each batch goes to whichever submitter is free
            reply = await submit(f"127.0.0.1:{port}", APPID, SECRET, items, timeout=60)
            if reply.status != "0":
                raise RuntimeError(f"A001 answered {reply.status}: {reply}")

    async with trio.open_nursery() as nursery:
        for _ in range(SUBMITTERS):
            nursery.start_soon(submitter)


@attrs.define
class ReceiptCounter:
    """The merchant's receiver: counts distinct (msgid, phone) of A002 items."""

    expected: int
    seen: set[tuple[str, str]] = attrs.field(factory=set)
    items: int = 0
    done: trio.Event = attrs.field(factory=trio.Event)

    def __call__(self, kind: str, items: list[PushItem]) -> None:
        if kind != "A002":
            return
        self.items += len(items)
        self.seen.update((item.msgid, item.phone) for item in items)
        if len(self.seen) >= self.expected:
            self.done.set()


@attrs.frozen
class Throughput:
    messages: int
    accepted_s: float  # first A001 sent → last B001 received
    receipts_s: float  # first A001 sent → last A002 received
    duplicates: int  # A002 items received more than once

    @property
    def per_second(self) -> float:
        return self.messages / self.receipts_s


async def measure_throughput(
    workdir: Path, latency: float, messages: int, senders: int, log_level: str, db: str = ""
) -> Throughput:
    with database(db, workdir) as db_url:
        return await _measure_throughput(workdir, db_url, latency, messages, senders, log_level)


async def _measure_throughput(
    workdir: Path, db_url: str, latency: float, messages: int, senders: int, log_level: str
) -> Throughput:
    counter = ReceiptCounter(messages)
    server = ReceiptServer(counter)
    async with trio.open_nursery() as nursery:
        receipt_port = await nursery.start(server.run, "127.0.0.1", 0)
        carrier = f"sim://?fail=0&latency={latency:g}&dlr_delay=0"
        env = gateway_env(db_url, carrier, senders, log_level)
        env["SMSGW_APPS"] += f"@127.0.0.1:{receipt_port}"
        gateway = await trio.to_thread.run_sync(start_server, gateway_command(), env, workdir)
        try:
            started = trio.current_time()
            await submit_all(gateway.port, f"t{latency:g}-", messages)
            accepted = trio.current_time()
            with trio.fail_after(300):
                await counter.done.wait()
            finished = trio.current_time()
        finally:
            await stop(gateway)
        nursery.cancel_scope.cancel()
    return Throughput(
        messages, accepted - started, finished - started, counter.items - len(counter.seen)
    )


@attrs.frozen
class Backlog:
    peak_rss_mib: float  # VmHWM
    db_mib: float  # database files on disk
    states: dict[str, int]  # messages per state when measured


async def measure_backlog(workdir: Path, queued: int, senders: int, log_level: str) -> Backlog:
    """A gateway with `queued` due-now messages piling up behind a 1-submit/s operator."""
    carrier = "sim://?fail=0&latency=0&dlr_delay=0&tps=1"
    env = gateway_env(f"sqlite:///{workdir / 'bench.db'}", carrier, senders, log_level)
    gateway = await trio.to_thread.run_sync(start_server, gateway_command(), env, workdir)
    try:
        await submit_all(gateway.port, f"q{queued}-", queued)
        await trio.sleep(2.0)  # dispatcher rounds and idle polls over the whole backlog
        rss = gateway.peak_rss_mib()
        states = await trio.to_thread.run_sync(message_states, workdir / "bench.db")
    finally:
        await stop(gateway)
    size = sum(path.stat().st_size for path in workdir.glob("bench.db*"))
    return Backlog(rss, size / 2**20, states)


def message_states(db: Path) -> dict[str, int]:
    connection = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return dict(connection.execute("SELECT state, count(*) FROM messages GROUP BY state"))
    finally:
        connection.close()


def gateway_command() -> list[str]:
    return [python(), "-m", "smsgw", "serve"]


async def stop(gateway: ServerProcess) -> None:
    code = await trio.to_thread.run_sync(gateway.stop)
    if code != 0:
        print(f"warning: the gateway exited {code} after SIGTERM", file=sys.stderr)


async def compare_postgres(args: argparse.Namespace) -> None:
    print(
        f"pipeline on PostgreSQL vs SQLite: {args.messages} messages, carrier latency 0,"
        f" SMSGW_SENDERS={args.senders}; best of {args.rounds} alternating rounds"
    )
    best: dict[str, float] = {}
    for _ in range(args.rounds):
        for name, db in (("SQLite", ""), ("PostgreSQL", "postgres")):
            with tempfile.TemporaryDirectory() as tmp:
                result = await measure_throughput(
                    Path(tmp), 0.0, args.messages, args.senders, args.log_level, db
                )
            best[name] = max(best.get(name, 0.0), result.per_second)
            print(
                f"  {name:10}: {result.per_second:6.0f} msg/s A001 to A002"
                f" ({result.duplicates} duplicate A002)"
            )
    ratio = best["PostgreSQL"] / best["SQLite"]
    print(f"  ratio PostgreSQL / SQLite: {ratio:.2f}   (target >= 0.70)")


async def run(args: argparse.Namespace) -> None:
    if args.postgres:
        await compare_postgres(args)
        return
    print(
        f"pipeline: {args.messages} messages in {BATCH}-item A001s over {SUBMITTERS} connections,"
        f" SMSGW_SENDERS={args.senders}, simulator fail=0 dlr_delay=0;"
        f" best of {args.rounds} alternating rounds"
    )
    best: dict[float, Throughput] = {}
    for _ in range(args.rounds):
        for latency in LATENCIES:
            with tempfile.TemporaryDirectory() as tmp:
                result = await measure_throughput(
                    Path(tmp), latency, args.messages, args.senders, args.log_level
                )
            if latency not in best or result.per_second > best[latency].per_second:
                best[latency] = result
            print(
                f"  carrier latency {latency * 1000:3.0f} ms: {result.per_second:6.0f} msg/s"
                f" from A001 accepted to A002 acknowledged (all accepted after"
                f" {result.accepted_s:.2f} s, last A002 after {result.receipts_s:.2f} s,"
                f" {result.duplicates} duplicate A002)"
            )
    slow, fast = best[LATENCIES[1]].per_second, best[LATENCIES[0]].per_second
    print(f"  best: {fast:.0f} msg/s at 0 ms, {slow:.0f} msg/s at 50 ms")
    print(f"  ratio 50 ms / 0 ms: {slow / fast:.2f}   (target >= 0.80)")

    print(
        "peak RSS (VmHWM) with due messages piling up behind a carrier capped at 1 submit/s"
        f" (SQLite page cache of the writer: at most {CACHE_KIB // 1024} MiB):"
    )
    peaks: dict[int, float] = {}
    for queued in (args.small_queue, args.queued, *([args.plateau] if args.plateau else [])):
        began = time.monotonic()
        with tempfile.TemporaryDirectory() as tmp:
            backlog = await measure_backlog(Path(tmp), queued, args.senders, args.log_level)
        peaks[queued] = backlog.peak_rss_mib
        print(
            f"  {queued:7d} queued: {backlog.peak_rss_mib:6.1f} MiB   (database"
            f" {backlog.db_mib:.1f} MiB; states {backlog.states}; {time.monotonic() - began:.1f} s)"
        )
    growth = peaks[args.queued] / peaks[args.small_queue]
    print(f"  ratio {args.queued} / {args.small_queue}: {growth:.2f}   (target <= 1.50)")
    if args.plateau:
        plateau = peaks[args.plateau] / peaks[args.queued]
        print(f"  ratio {args.plateau} / {args.queued}: {plateau:.2f}   (bounded: about 1)")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--senders", type=int, default=512, help="the gateway's SMSGW_SENDERS")
    parser.add_argument("--queued", type=int, default=100_000)
    parser.add_argument("--small-queue", type=int, default=1_000)
    parser.add_argument(
        "--plateau", type=int, default=300_000, help="a third backlog size (0: skip it)"
    )
    parser.add_argument("--rounds", type=int, default=2, help="throughput rounds (best kept)")
    parser.add_argument("--log-level", default="warning", help="the gateway's SMSGW_LOG_LEVEL")
    parser.add_argument(
        "--postgres", action="store_true", help="PostgreSQL against SQLite (throughput only)"
    )
    trio.run(run, parser.parse_args())


if __name__ == "__main__":
    main()
