"""Helpers shared by the end-to-end delivery tests: configuration of a real gateway process,
the simulator's submit log, read-only looks at the gateway's database, and waiting."""

from __future__ import annotations

import json
import sqlite3
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any

import trio

APPID = "shop"
SECRET = "shop-key"
PHONES = ("8613800138000", "8613800138001", "8613800138002")

# Short real timers: each push send waits at most 1 s, retries come back within ~1 s.
FAST_TIMERS = {
    "SMSGW_PUSH_TIMEOUT": "1s",
    "SMSGW_PUSH_BACKOFF": "200ms",
    "SMSGW_RETRY_BACKOFF": "100ms",
    "SMSGW_SHUTDOWN_GRACE": "5s",
}

Row = tuple[Any, ...]


def now_ms() -> int:
    return int(time.time() * 1000)


def sim_url(log: Path, **params: float | str) -> str:
    """`sim://?...&log=LOG`; parameters not given get test-friendly values (no random
    failures, reports after 50 ms)."""
    values: dict[str, float | str] = {"fail": 0, "dlr_delay": 0.05, **params}
    query = "&".join(f"{name}={value}" for name, value in values.items())
    return f"sim://?{query}&log={log}"


def write_apps_file(
    workdir: Path, endpoint: str, *, status_reports: bool = False, appid: str = APPID
) -> Path:
    path = workdir / "apps.toml"
    path.write_text(
        f'[apps.{appid}]\nsecret = "{SECRET}"\nreceipt_endpoint = "{endpoint}"\n'
        f"status_reports = {'true' if status_reports else 'false'}\n"
    )
    return path


def gateway_env(workdir: Path, carrier: str, endpoint: str, **extra: str) -> dict[str, str]:
    """Environment for one app (APPID) pushing to `endpoint`, on the simulator `carrier`."""
    return {
        "SMSGW_APPS": f"{APPID}:{SECRET}@{endpoint}",
        "SMSGW_CARRIER": carrier,
        **FAST_TIMERS,
        **extra,
    }


def sim_log(path: Path) -> list[dict[str, Any]]:
    """Every submit the simulated operator received (one JSON line each)."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def submits_per_msgid(path: Path) -> Counter[tuple[str, str]]:
    return Counter((entry["msgid"], entry["phone"]) for entry in sim_log(path))


def query(db: Path, sql: str, *params: Any) -> list[Row]:
    """A read-only query on a gateway's SQLite database (running or stopped)."""
    connection = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        return connection.execute(sql, params).fetchall()
    finally:
        connection.close()


def state_counts(db: Path) -> dict[str, int]:
    return dict(query(db, "SELECT state, count(*) FROM messages GROUP BY state"))


def push_state_counts(db: Path) -> dict[str, int]:
    return dict(query(db, "SELECT state, count(*) FROM pushes GROUP BY state"))


def all_settled(db: Path) -> bool:
    """Every message final and every push acknowledged or abandoned."""
    states = state_counts(db)
    unfinished = sum(n for state, n in states.items() if state not in ("delivered", "failed"))
    return unfinished == 0 and push_state_counts(db).get("pending", 0) == 0


async def wait_until(
    condition: Callable[[], bool | Awaitable[bool]],
    *,
    timeout: float,
    interval: float = 0.05,
    what: str = "condition",
) -> None:
    """Poll `condition` (sync or async) until it holds; TooSlowError naming `what`."""
    try:
        with trio.fail_after(timeout):
            while True:
                result = condition()
                if not isinstance(result, bool):
                    result = await result
                if result:
                    return
                await trio.sleep(interval)
    except trio.TooSlowError:
        raise trio.TooSlowError(f"{what}: not within {timeout}s") from None


def by_pair(items: Iterable[dict[str, Any]]) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """Items grouped by (msgid, phone), in the order received."""
    grouped: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for item in items:
        grouped.setdefault((item["msgid"], item["phone"]), []).append(item)
    return grouped
