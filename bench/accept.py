"""Accept-path benchmark: the real gateway against the ceiling of a minimal Trio server.

Both run in their own processes and are driven by the same multi-process load generator of
short connections (bench/loadgen.py). For each number of gateway worker processes
(`SMSGW_WORKERS`, `--gateway-workers 1,2`) and each number of connections per load process
(`--concurrency 8,32`: 16 and 64 clients with 2 load processes) it prints requests/s of
single-item submits and their ratio to the baseline's at the same load, messages/s for
100-item batches; then p50/p99 latency at a fixed offered load, and the gateway's peak RSS
(its workers' included). Each gateway line is followed by the CPU per request of the
gateway, the baseline and the load generator, which shares the machine's cores: the most
any server could answer here is the cores over (its CPU + the load's) per request.
Targets (2 cores, issue 7): with 2 workers, single-item ratio >= 0.9, batches >= 80,000
msg/s, p99 <= 20 ms at 2,000 req/s; 1 worker no slower than before.

    python bench/accept.py [--seconds 5] [--workers 2] [--concurrency 8,32]
                           [--gateway-workers 1,2] [--db URL|postgres] [--gateways N]

`--db postgres` runs the gateway on a throwaway PostgreSQL cluster (tests/pg_cluster.py:
SMSGW_TEST_PG_DSN's server, else one started from the server binaries, fsync on), a fresh
database for each number of workers; targets there (1 worker): ratio >= 0.4; batches >=
30,000 msg/s. `--gateways N` also measures N independent `smsgw serve` on one database
against one (the scaling factor).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.databases import database
from bench.loadgen import (
    APPID,
    SECRET,
    LoadResult,
    ServerProcess,
    closed_loop,
    cpu_seconds,
    open_loop,
    python,
    start_server,
)

HERE = Path(__file__).resolve().parent


def gateway_env(db_url: str, log_level: str, workers: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SMSGW_")}
    env.update(
        SMSGW_LISTEN="127.0.0.1:0",
        SMSGW_DB=db_url,
        SMSGW_APPS=f"{APPID}:{SECRET}",
        SMSGW_LOG_LEVEL=log_level,
        SMSGW_MAX_CONNECTIONS="4096",
        SMSGW_MAX_CONNECTIONS_PER_ADDRESS="4096",  # every load connection is from 127.0.0.1
        SMSGW_CARRIER="sim://?latency=0&dlr_delay=0",
        SMSGW_WORKERS=str(workers),
    )
    return env


def numbers(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--workers", type=int, default=2, help="load generator processes")
    parser.add_argument(
        "--concurrency", type=numbers, default=[8, 32], help="connections per load process"
    )
    parser.add_argument(
        "--gateway-workers", type=numbers, default=[1, 2], help="SMSGW_WORKERS values"
    )
    parser.add_argument("--rate", type=float, default=2000.0)
    parser.add_argument("--log-level", default="info", help="the gateway's SMSGW_LOG_LEVEL")
    parser.add_argument(
        "--db",
        default="",
        help="SMSGW_DB (default: SQLite in a temporary directory), or"
        " 'postgres' for a throwaway PostgreSQL",
    )
    parser.add_argument(
        "--gateways",
        type=int,
        default=1,
        help="also measure this many independent gateways on one database (the load split"
        " among them) against one: the scaling factor",
    )
    args = parser.parse_args()
    # Scheduled a day ahead: the gateway stores them but its pipeline stays idle, so this
    # measures the accept path alone (bench/pipeline.py measures sending).
    sendtime = int(time.time() * 1000) + 86_400_000
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        baseline = start_server(
            [python(), str(HERE / "baseline_server.py")], dict(os.environ), workdir
        )
        store = "SQLite" if not args.db else "PostgreSQL" if args.db == "postgres" else args.db
        print(f"store: {store}; load: {args.workers} processes, {args.seconds:g}s a measurement")
        try:
            for count in args.gateway_workers:
                measure_gateway(args, count, baseline, workdir, sendtime)
            if args.gateways > 1:
                measure_several(args, workdir, sendtime)
        finally:
            baseline.stop()


def measure_gateway(
    args: argparse.Namespace, count: int, baseline: ServerProcess, workdir: Path, sendtime: int
) -> None:
    """Each gateway figure right after the baseline's at the same load: on a busy machine
    the two see the same background."""
    run_dir = workdir / f"gateway-{count}"
    run_dir.mkdir()
    with database(args.db, run_dir) as db_url:
        measure_on(args, count, baseline, run_dir, db_url, sendtime)


def measure_on(
    args: argparse.Namespace,
    count: int,
    baseline: ServerProcess,
    run_dir: Path,
    db_url: str,
    sendtime: int,
) -> None:
    def load(concurrency: int) -> dict[str, Any]:
        return {"workers": args.workers, "concurrency": concurrency, "seconds": args.seconds}

    gateway = start_server(
        [python(), "-m", "smsgw", "serve"], gateway_env(db_url, args.log_level, count), run_dir
    )
    try:
        for c in args.concurrency:
            base_cpu = cpu_seconds(baseline.process.pid)
            base = closed_loop(baseline.port, **load(c))
            base_cpu = cpu_seconds(baseline.process.pid) - base_cpu
            cpu = cpu_seconds(gateway.process.pid)
            single = closed_loop(gateway.port, **load(c), sendtime=sendtime)
            cpu = cpu_seconds(gateway.process.pid) - cpu
            batch = closed_loop(gateway.port, **load(c), items=100, sendtime=sendtime)
            print(
                f"{count} worker(s), {args.workers * c:3} clients: baseline "
                f"{base.per_second:6.0f} req/s; gateway 1 item {single.per_second:6.0f} req/s"
                f" = {single.per_second / base.per_second:.2f} of baseline, "
                f"{cpu / max(single.requests, 1) * 1e6:.0f} us CPU each; 100 items "
                f"{batch.messages_per_second:6.0f} msg/s (errors {base.errors}/{single.errors}/"
                f"{batch.errors})"
            )
            print(budget(count, base, base_cpu, single, cpu))
        rate, seconds = args.rate, args.seconds
        base_latency = open_loop(baseline.port, workers=args.workers, rate=rate, seconds=seconds)
        latency = open_loop(
            gateway.port, workers=args.workers, rate=rate, seconds=seconds, sendtime=sendtime
        )
        rss = gateway.peak_rss_mib()
    finally:
        code = gateway.stop()
    for name, result in (("baseline", base_latency), ("gateway", latency)):
        p50, p99 = result.percentile(0.50) * 1000, result.percentile(0.99) * 1000
        print(
            f"{count} worker(s), latency at {rate:g} req/s offered, {name:8}: p50={p50:.1f}ms "
            f"p99={p99:.1f}ms ({result.requests} ok, {result.errors} errors)"
        )
    print(f"{count} worker(s): gateway peak RSS {rss:.1f} MiB; exit code after SIGTERM {code}")


def budget(
    count: int, base: LoadResult, base_cpu: float, single: LoadResult, gateway_cpu: float
) -> str:
    """Where the machine's CPU went: the load generator shares the cores, so the most any
    server can answer is the cores over (its CPU + the load's CPU) per request. With the
    baseline's rate as the yardstick, that bounds the ratio a gateway can reach here."""
    cores = os.cpu_count() or 1
    load_us = single.cpu_per_request * 1e6
    gateway_us = gateway_cpu / max(single.requests, 1) * 1e6
    base_us = base_cpu / max(base.requests, 1) * 1e6
    most = cores / ((gateway_us + load_us) / 1e6)
    return (
        f"{count} worker(s): CPU per request: gateway {gateway_us:.0f} us = "
        f"{gateway_us / base_us:.1f}x the baseline's {base_us:.0f} us; load generator "
        f"{load_us:.0f} us. On {cores} cores that allows at most {most:.0f} req/s ="
        f" {most / base.per_second:.2f} of the baseline"
    )


def measure_several(args: argparse.Namespace, workdir: Path, sendtime: int) -> None:
    """`args.gateways` independent `smsgw serve` on one database against one of them, at
    the largest concurrency."""
    run_dir = workdir / "several"
    run_dir.mkdir()
    concurrency = args.concurrency[-1]
    with database(args.db, run_dir) as db_url:
        one = start_server(
            [python(), "-m", "smsgw", "serve"], gateway_env(db_url, args.log_level, 1), run_dir
        )
        try:
            single = closed_loop(
                one.port,
                workers=args.workers,
                concurrency=concurrency,
                seconds=args.seconds,
                sendtime=sendtime,
            ).per_second
        finally:
            one.stop()
        several = several_gateways(args, db_url, run_dir, sendtime, concurrency)
    print(
        f"{args.gateways} gateways on one database, 1 item a request: {several:6.0f} req/s"
        f" (one: {single:.0f}); scaling factor {several / single:.2f}"
    )


def several_gateways(
    args: argparse.Namespace, db_url: str, workdir: Path, sendtime: int, concurrency: int
) -> float:
    """Requests/s of `args.gateways` gateways on one database, the same load split among them."""
    gateways = [
        start_server(
            [python(), "-m", "smsgw", "serve"], gateway_env(db_url, args.log_level, 1), workdir
        )
        for _ in range(args.gateways)
    ]
    results: list[float] = []
    try:
        workers = max(1, args.workers // args.gateways)

        def drive(port: int) -> None:
            load = closed_loop(
                port,
                workers=workers,
                concurrency=concurrency,
                seconds=args.seconds,
                sendtime=sendtime,
            )
            results.append(load.per_second)

        threads = [threading.Thread(target=drive, args=(g.port,)) for g in gateways]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        for gateway in gateways:
            gateway.stop()
    return sum(results)


if __name__ == "__main__":
    main()
