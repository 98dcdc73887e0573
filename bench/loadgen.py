"""A multi-process load generator of short connections (one request per connection).

Two modes, each run in `workers` processes with one Trio loop each:
- closed loop: `concurrency` connections per worker, each sending the next request as soon
  as the last one was answered: measures the server's capacity (requests/s);
- open loop: requests started on a fixed schedule (`rate` per second in all), whatever the
  server does: measures latency at a fixed offered load (p50/p99 from the scheduled start,
  so a stalled server cannot hide its queueing delay).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import attrs
import trio

from smsgw.protocol.framing import encode_request

APPID = "bench"
SECRET = "bench-secret"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
LISTENING = re.compile(r"listening on (\S+):(\d+)")


@attrs.frozen
class LoadResult:
    requests: int
    messages: int
    errors: int
    seconds: float
    latencies: tuple[float, ...] = ()
    cpu_seconds: float = 0.0  # the load processes' own CPU time (utime + stime)

    @property
    def per_second(self) -> float:
        return self.requests / self.seconds

    @property
    def cpu_per_request(self) -> float:
        return self.cpu_seconds / max(self.requests, 1)

    @property
    def messages_per_second(self) -> float:
        return self.messages / self.seconds

    def percentile(self, p: float) -> float:
        ordered = sorted(self.latencies)
        if not ordered:
            return float("nan")
        return ordered[min(len(ordered) - 1, int(len(ordered) * p))]


def frame_for(worker: int, n: int, items: int, sendtime: int | None = None) -> bytes:
    body: list[dict[str, object]] = [
        {
            "phone": "8613800138000",
            "message": "your code is 123456",
            "msgid": f"w{worker}-{n}-{i}-{os.getpid()}",
            "msgtype": 1,
        }
        for i in range(items)
    ]
    if sendtime is not None:
        for item in body:
            item["sendtime"] = sendtime
    raw = json.dumps(body, separators=(",", ":")).encode()
    return encode_request("A001", APPID, SECRET, raw)


async def _one_request(port: int, frame: bytes) -> bool:
    # A bare socket: trio.open_tcp_stream's happy-eyeballs machinery would make the load
    # generator, not the server, the bottleneck.
    with trio.socket.socket() as sock:
        await sock.connect(("127.0.0.1", port))
        view = memoryview(frame)
        while view:
            view = view[await sock.send(view) :]
        received = bytearray()
        while chunk := await sock.recv(65536):
            received += chunk
    return received[10:40].startswith(b'{"status":"0"')


def _closed_loop(args: tuple[int, int, int, float, int, int | None]) -> LoadResult:
    port, worker, concurrency, seconds, items, sendtime = args
    counts = {"ok": 0, "err": 0}

    async def connection(slot: int, deadline: float) -> None:
        n = 0
        while trio.current_time() < deadline:
            n += 1
            try:
                with trio.fail_after(30):
                    frame = frame_for(worker * 1000 + slot, n, items, sendtime)
                    ok = await _one_request(port, frame)
            except (OSError, trio.TooSlowError, trio.BrokenResourceError):
                ok = False
            counts["ok" if ok else "err"] += 1

    async def main() -> float:
        started = trio.current_time()
        async with trio.open_nursery() as nursery:
            for slot in range(concurrency):
                nursery.start_soon(connection, slot, started + seconds)
        return trio.current_time() - started

    cpu = cpu_seconds(os.getpid())
    elapsed = trio.run(main)
    return LoadResult(
        counts["ok"],
        counts["ok"] * items,
        counts["err"],
        elapsed,
        cpu_seconds=cpu_seconds(os.getpid()) - cpu,
    )


def _open_loop(args: tuple[int, int, float, float, int | None]) -> LoadResult:
    port, worker, rate, seconds, sendtime = args
    latencies: list[float] = []
    errors = [0]

    async def one(n: int, scheduled: float) -> None:
        try:
            with trio.fail_after(30):
                ok = await _one_request(port, frame_for(worker, n, 1, sendtime))
        except (OSError, trio.TooSlowError, trio.BrokenResourceError):
            ok = False
        if ok:
            latencies.append(trio.current_time() - scheduled)
        else:
            errors[0] += 1

    async def main() -> float:
        started = trio.current_time()
        total = int(rate * seconds)
        async with trio.open_nursery() as nursery:
            for n in range(total):
                scheduled = started + n / rate
                await trio.sleep_until(scheduled)
                nursery.start_soon(one, n, scheduled)
        return trio.current_time() - started

    cpu = cpu_seconds(os.getpid())
    elapsed = trio.run(main)
    return LoadResult(
        len(latencies),
        len(latencies),
        errors[0],
        elapsed,
        tuple(latencies),
        cpu_seconds=cpu_seconds(os.getpid()) - cpu,
    )


def _merge(results: list[LoadResult]) -> LoadResult:
    return LoadResult(
        requests=sum(r.requests for r in results),
        messages=sum(r.messages for r in results),
        errors=sum(r.errors for r in results),
        seconds=max(r.seconds for r in results),
        latencies=tuple(lat for r in results for lat in r.latencies),
        cpu_seconds=sum(r.cpu_seconds for r in results),
    )


def closed_loop(
    port: int,
    *,
    workers: int,
    concurrency: int,
    seconds: float,
    items: int = 1,
    sendtime: int | None = None,
) -> LoadResult:
    """`sendtime` (ms since the epoch) schedules the messages: a far-future time keeps the
    gateway's pipeline idle, so only the accept path is measured."""
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=context) as pool:
        jobs = [(port, w, concurrency, seconds, items, sendtime) for w in range(workers)]
        return _merge(list(pool.map(_closed_loop, jobs)))


def open_loop(
    port: int, *, workers: int, rate: float, seconds: float, sendtime: int | None = None
) -> LoadResult:
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=context) as pool:
        jobs = [(port, 100 + w, rate / workers, seconds, sendtime) for w in range(workers)]
        return _merge(list(pool.map(_open_loop, jobs)))


@attrs.define
class ServerProcess:
    process: subprocess.Popen[str]
    port: int

    def peak_rss_mib(self) -> float:
        """The server's peak RSS, with its child processes' (a supervisor's workers)."""
        pid = self.process.pid
        children = child_pids(pid)
        total = 0.0
        for process in (pid, *map(int, children)):
            status = Path(f"/proc/{process}/status").read_text()
            match = re.search(r"VmHWM:\s+(\d+) kB", status)
            total += int(match.group(1)) / 1024 if match else float("nan")
        return total

    def stop(self) -> int:
        self.process.terminate()
        try:
            return self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()


def start_server(command: list[str], env: dict[str, str], cwd: Path) -> ServerProcess:
    process = subprocess.Popen(
        command,
        env=env,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=open(cwd / "server.log", "w"),  # noqa: SIM115 - lives as long as the server
        text=True,
    )
    assert process.stdout is not None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        match = LISTENING.search(line)
        if match:
            # Keep draining stdout so the server never blocks on a full pipe.
            _drain_in_background(process)
            return ServerProcess(process, int(match.group(2)))
    process.kill()
    raise RuntimeError(f"{command} did not start: {(cwd / 'server.log').read_text()[-2000:]}")


def _drain_in_background(process: subprocess.Popen[str]) -> None:
    def drain(read: Callable[[], str]) -> None:
        while read():
            pass

    assert process.stdout is not None
    threading.Thread(target=drain, args=(process.stdout.readline,), daemon=True).start()


def child_pids(pid: int) -> list[str]:
    """The process's children, whichever of its threads started them (Trio starts
    processes from a worker thread)."""
    children = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            children.extend((task / "children").read_text().split())
        except (FileNotFoundError, ProcessLookupError):
            continue  # a thread that ended meanwhile
    return children


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process and its children alive now (a supervisor's workers;
    fields 14 and 15 of /proc/PID/stat)."""
    children = child_pids(pid)
    total = 0.0
    for process in (pid, *map(int, children)):
        stat = Path(f"/proc/{process}/stat").read_text()
        fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) "
        total += (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    return total


def python() -> str:
    return sys.executable
