"""Accept-path benchmark: the real gateway against the ceiling of a minimal Trio server.

Both run in their own processes and are driven by the same multi-process load generator of
short connections (bench/loadgen.py). Prints requests/s of each and their ratio for
single-item submits, messages/s for 100-item batches, p50/p99 latency at a fixed offered
load, and the gateway's peak RSS. Targets (2 cores): ratio >= 0.7; batches >= 50,000 msg/s.

    python bench/accept.py [--seconds 5] [--workers 2] [--concurrency 32] [--db URL|postgres]

`--db postgres` runs the gateway on a throwaway PostgreSQL cluster (tests/pg_cluster.py:
SMSGW_TEST_PG_DSN's server, else one started from the server binaries, fsync on); targets
there: ratio >= 0.4; batches >= 30,000 msg/s.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.databases import database
from bench.loadgen import APPID, SECRET, closed_loop, open_loop, python, start_server

HERE = Path(__file__).resolve().parent


def gateway_env(db_url: str, log_level: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SMSGW_")}
    env.update(
        SMSGW_LISTEN="127.0.0.1:0",
        SMSGW_DB=db_url,
        SMSGW_APPS=f"{APPID}:{SECRET}",
        SMSGW_LOG_LEVEL=log_level,
        SMSGW_MAX_CONNECTIONS="4096",
        SMSGW_CARRIER="sim://?latency=0&dlr_delay=0",
    )
    return env


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=32)
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
        help="also measure this many gateways on the one database (the load split among them)"
        " against one: the scaling factor",
    )
    args = parser.parse_args()
    # Scheduled a day ahead: the gateway stores them but its pipeline stays idle, so this
    # measures the accept path alone (bench/pipeline.py measures sending).
    sendtime = int(time.time() * 1000) + 86_400_000
    load = {"workers": args.workers, "concurrency": args.concurrency, "seconds": args.seconds}

    with tempfile.TemporaryDirectory() as tmp, database(args.db, Path(tmp)) as db_url:
        workdir = Path(tmp)
        baseline = start_server(
            [python(), str(HERE / "baseline_server.py")], dict(os.environ), workdir
        )
        try:
            base = closed_loop(baseline.port, **load)
            base_latency = open_loop(
                baseline.port, workers=args.workers, rate=args.rate, seconds=args.seconds
            )
        finally:
            baseline.stop()

        gateway = start_server(
            [python(), "-m", "smsgw", "serve"], gateway_env(db_url, args.log_level), workdir
        )
        try:
            single = closed_loop(gateway.port, **load, sendtime=sendtime)
            batch = closed_loop(gateway.port, **load, items=100, sendtime=sendtime)
            latency = open_loop(
                gateway.port,
                workers=args.workers,
                rate=args.rate,
                seconds=args.seconds,
                sendtime=sendtime,
            )
            rss = gateway.peak_rss_mib()
        finally:
            code = gateway.stop()
        several = several_gateways(args, db_url, workdir, sendtime) if args.gateways > 1 else None

    ratio = single.per_second / base.per_second
    postgres = not db_url.startswith("sqlite:")
    targets = (0.4, 30_000) if postgres else (0.7, 50_000)
    print(f"store: {'PostgreSQL' if postgres else 'SQLite'} (fsync on)")
    print(
        f"load: {args.workers} processes x {args.concurrency} connections, {args.seconds:g}s each"
    )
    print(f"baseline (minimal trio server): {base.per_second:9.0f} req/s  errors={base.errors}")
    print(f"gateway, 1 item a request:      {single.per_second:9.0f} req/s  errors={single.errors}")
    print(f"ratio gateway/baseline:         {ratio:9.2f}   (target >= {targets[0]:.2f})")
    print(
        f"gateway, 100 items a request:   {batch.messages_per_second:9.0f} msg/s "
        f"({batch.per_second:.0f} req/s, errors={batch.errors}; target >= {targets[1]} msg/s)"
    )
    for name, result in (("baseline", base_latency), ("gateway", latency)):
        p50, p99 = result.percentile(0.50) * 1000, result.percentile(0.99) * 1000
        print(
            f"latency at {args.rate:g} req/s offered, {name:8}: p50={p50:.1f}ms p99={p99:.1f}ms "
            f"({result.requests} ok, {result.errors} errors)"
        )
    print(f"gateway peak RSS: {rss:.1f} MiB; exit code after SIGTERM: {code}")
    if several is not None:
        print(
            f"{args.gateways} gateways on one database, 1 item a request: {several:9.0f} req/s"
            f" (one: {single.per_second:.0f}); scaling factor {several / single.per_second:.2f}"
        )


def several_gateways(args: argparse.Namespace, db_url: str, workdir: Path, sendtime: int) -> float:
    """Requests/s of `args.gateways` gateways on one database, the same load split among them."""
    gateways = [
        start_server(
            [python(), "-m", "smsgw", "serve"], gateway_env(db_url, args.log_level), workdir
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
                concurrency=args.concurrency,
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
