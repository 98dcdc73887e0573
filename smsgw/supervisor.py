"""`SMSGW_WORKERS=N` (N > 1): `smsgw serve` supervises N worker processes (`smsgw.worker`).

Each worker is a whole gateway on the shared store, opening its own listener on one port
(SO_REUSEPORT: the kernel spreads new connections among them) with its share of the
carrier's and the apps' limits (`smsgw.shares`). The supervisor

- fixes the port once: it binds (without listening) a SO_REUSEPORT socket of its own, so a
  port 0 becomes one port for every worker and stays theirs while it runs;
- starts the workers one after another at start-up, and replaces one that dies (crashed,
  `kill -9`) within seconds, backing off when a worker keeps dying young;
- passes a graceful stop on (SIGTERM/SIGINT: the cli calls `shutdown`) and exits 0 when
  every worker stopped cleanly; a second signal passes "now" on;
- serves `SMSGW_METRICS` for the whole gateway: at each scrape it asks every worker for its
  samples and checks over its link, waits at most `COLLECT_TIMEOUT_S` for each (a dead or
  stuck worker never hangs a scrape), and merges them (`smsgw.observe`). A replaced
  worker's counters stay in the totals.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import subprocess
import sys
from collections.abc import Callable
from typing import Any, Final

import trio

from smsgw.config import Config, ConfigError, Endpoint
from smsgw.gateway import GatewayInfo
from smsgw.metrics import MetricsServer
from smsgw.observe import (
    Check,
    Sample,
    counter,
    gauge,
    merge_checks,
    merge_samples,
    retired,
    shared,
)
from smsgw.shares import Share
from smsgw.workerlink import Link, LinkClosed, decode_report

log = logging.getLogger("smsgw.supervisor")

START_TIMEOUT_S: Final = 60.0  # for a worker to open its store, carrier and listener
COLLECT_TIMEOUT_S: Final = 2.0  # a worker's answer to a scrape
RESTART_MIN_S: Final = 0.2
RESTART_MAX_S: Final = 5.0
HEALTHY_AFTER_S: Final = 10.0  # a worker that lived this long is replaced at once again
KILL_MARGIN_S: Final = 10.0  # past the shutdown grace, a worker still running is killed
EXIT_CONFIG: Final = 2

_WORKER_MAIN: Final = "import sys; from smsgw.worker import main; sys.exit(main(sys.argv[1:]))"


class WorkerStartFailed(Exception):
    def __init__(self, name: str, code: int) -> None:
        super().__init__(f"{name} exited with code {code} while starting")
        self.code = code


class Worker:
    """One worker slot: its current process and link."""

    def __init__(self, share: Share) -> None:
        self.share = share
        self.process: trio.Process | None = None
        self.link: Link | None = None
        self.ready = False
        self.starts = 0
        self.last_exit: int | None = None
        self.last_samples: list[Sample] = []
        self._seq = 0
        self._collect_lock = trio.Lock()
        self._waiting = -1
        self._reply: dict[str, object] | None = None
        self._replied = trio.Event()
        # What this worker stored (see smsgw.worker.Nudges): for the other workers.
        self.on_nudge: Callable[[Worker, dict[str, Any]], None] = lambda worker, nudge: None

    @property
    def up(self) -> bool:
        return self.ready and self.process is not None and self.process.returncode is None

    async def read_link(self, link: Link, ready: trio.Event) -> None:
        """Everything the worker says: first that it is ready, then answers to scrapes and
        the apps it wrote new receipts for."""
        while True:
            try:
                message = await link.receive()
            except LinkClosed:
                return
            if "ready" in message:
                ready.set()
            elif "nudge" in message:
                self.on_nudge(self, message["nudge"])
            elif message.get("seq") == self._waiting:
                self._reply = message
                self._replied.set()

    async def collect(self) -> tuple[list[Sample], list[Check]] | None:
        """The worker's samples and checks, or None if it does not answer in time."""
        async with self._collect_lock:
            link = self.link
            if link is None or not self.up:
                return None
            self._seq += 1
            self._waiting, self._reply, self._replied = self._seq, None, trio.Event()
            with trio.move_on_after(COLLECT_TIMEOUT_S):
                try:
                    await link.send({"collect": self._seq})
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    return None
                await self._replied.wait()
            reply, self._waiting = self._reply, -1
            if reply is None:
                log.warning("%s did not answer a scrape in time", self.share.name)
                return None
            samples, checks = decode_report(reply)
            self.last_samples = samples
            return samples, checks

    async def nudge(self, nudge: dict[str, Any]) -> None:
        link = self.link
        if link is None or not self.up:
            return  # a worker that starts looks at the store anyway
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await link.send({"nudge": nudge})

    async def tell_stop(self, now: bool) -> None:
        link = self.link
        if link is None:
            return
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await link.send({"stop": "now" if now else "graceful"})  # unless it is gone


class Supervisor:
    """Build inside `trio.run`; `run` until every worker stopped, then `exit_code`."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.count = config.workers
        self.workers = [Worker(Share(index, self.count)) for index in range(self.count)]
        for worker in self.workers:
            worker.on_nudge = self._pass_nudge
        self.restarts = 0
        self.exit_code = 0
        self._stopping = False
        self._stopping_now = False
        self._retired: list[Sample] = []
        self._port = 0
        self._stop_started: float | None = None

    @property
    def shutdown_requested(self) -> bool:
        return self._stopping

    def _pass_nudge(self, sender: Worker, nudge: dict[str, Any]) -> None:
        """What one worker stored, to the others: the time new messages are due, and to
        the first worker (it pushes the receipts: smsgw.gateway) the apps with new ones."""
        for worker in self.workers:
            if worker is sender:
                continue
            told: dict[str, Any] = {}
            if nudge.get("due_ms") is not None:
                told["due_ms"] = nudge["due_ms"]
            if worker.share.first and nudge.get("pushes"):
                told["pushes"] = nudge["pushes"]
            if told:
                trio.lowlevel.spawn_system_task(worker.nudge, told)

    def shutdown(self, *, now: bool = False) -> None:
        """Stop every worker: gracefully, or (a second signal) at once."""
        self._stopping = True
        self._stopping_now = self._stopping_now or now
        for worker in self.workers:
            trio.lowlevel.spawn_system_task(worker.tell_stop, now)

    async def run(
        self, *, task_status: trio.TaskStatus[GatewayInfo] = trio.TASK_STATUS_IGNORED
    ) -> None:
        reserved = _reserve_port(self.config.listen)
        try:
            self._port = reserved[0].getsockname()[1]
            listen = [Endpoint.of_sockname(sock.getsockname()) for sock in reserved]
            async with trio.open_nursery() as serving:
                async with trio.open_nursery() as keeping:
                    for worker in self.workers:
                        await keeping.start(self._keep, worker)
                    metrics = None
                    if self.config.metrics is not None:
                        server = MetricsServer(self.config.metrics, self)
                        metrics = await serving.start(server.run)
                    task_status.started(GatewayInfo(listen=listen, metrics=metrics))
                # Every slot has returned: the gateway stopped.
                serving.cancel_scope.cancel()
        finally:
            for sock in reserved:
                sock.close()
        codes = [worker.last_exit for worker in self.workers]
        self.exit_code = 0 if all(code == 0 for code in codes) else 1
        log.info("all workers stopped", extra={"exit_codes": codes})

    async def _keep(self, worker: Worker, *, task_status: trio.TaskStatus[None]) -> None:
        """Run the slot's worker until the gateway stops, replacing it each time it dies."""
        backoff = RESTART_MIN_S
        first = True
        while True:
            started = trio.current_time()
            code = await self._run_once(worker, task_status if first else None)
            first = False
            if self._stopping:
                return
            lived = trio.current_time() - started
            backoff = RESTART_MIN_S if lived >= HEALTHY_AFTER_S else min(backoff * 2, RESTART_MAX_S)
            log.warning(
                "%s exited with code %s after %.1fs: replacing it in %.1fs",
                worker.share.name,
                code,
                lived,
                backoff,
            )
            self.restarts += 1
            await trio.sleep(backoff)
            if self._stopping:
                return

    async def _run_once(self, worker: Worker, task_status: trio.TaskStatus[None] | None) -> int:
        """One process of the slot, from its start to its exit; its exit code."""
        ours, theirs = socket.socketpair()
        worker.starts += 1
        try:
            process = await trio.lowlevel.open_process(
                [sys.executable, "-c", _WORKER_MAIN, *self._argv(worker, theirs.fileno())],
                pass_fds=(theirs.fileno(),),
                env=_worker_env(),
                # Its own process group: a terminal's Ctrl-C reaches the supervisor only,
                # which passes the stop on once (a second one would mean "stop now").
                start_new_session=True,
                stdin=subprocess.DEVNULL,
            )
        finally:
            theirs.close()
        link = Link(ours)
        worker.process, worker.link, worker.ready = process, link, False
        log.info("%s started (pid %d)", worker.share.name, process.pid)
        if self._stopping:
            await worker.tell_stop(self._stopping_now)
        ready = trio.Event()  # set when it is ready, or when it exited first
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(worker.read_link, link, ready)
                with trio.move_on_after(START_TIMEOUT_S):
                    async with trio.open_nursery() as starting:
                        starting.start_soon(_set_when_exited, process, ready)
                        await ready.wait()
                        starting.cancel_scope.cancel()
                if process.returncode is None and ready.is_set():
                    worker.ready = True
                    if task_status is not None:
                        task_status.started()
                        task_status = None
                elif process.returncode is None:
                    log.error(
                        "%s did not start in %.0fs: killing it", worker.share.name, START_TIMEOUT_S
                    )
                    process.kill()
                code = await self._wait(process)
                nursery.cancel_scope.cancel()
        finally:
            worker.ready = False
            worker.last_exit = process.returncode
            self._retired.extend(retired(worker.last_samples))
            worker.last_samples = []
            worker.process, worker.link = None, None
            await link.aclose()
        if task_status is not None:
            # It never became ready: the gateway cannot start (a configuration error the
            # worker printed, a store it cannot open); stop the workers already started.
            self.shutdown()
            raise WorkerStartFailed(worker.share.name, code)
        return code

    async def _wait(self, process: trio.Process) -> int:
        """The exit code; a worker still running past the shutdown grace is killed."""
        while True:
            with trio.move_on_after(1.0):
                return await process.wait()
            if self._stopping and self._stop_overdue():
                log.error("worker pid %d did not stop in time: killing it", process.pid)
                process.kill()

    def _stop_overdue(self) -> bool:
        now = trio.current_time()
        if self._stop_started is None:
            self._stop_started = now
        return now - self._stop_started > self.config.shutdown_grace + KILL_MARGIN_S

    def _argv(self, worker: Worker, fd: int) -> list[str]:
        numbers = (worker.share.index, self.count, self._port, fd)
        return [str(number) for number in numbers]

    # --- the gateway's /metrics and /healthz (a `smsgw.observe.Source`) ---

    async def _collect_all(self) -> list[tuple[Worker, tuple[list[Sample], list[Check]]]]:
        found: list[tuple[Worker, tuple[list[Sample], list[Check]]]] = []

        async def one(worker: Worker) -> None:
            report = await worker.collect()
            if report is not None:
                found.append((worker, report))

        async with trio.open_nursery() as nursery:
            for worker in self.workers:
                nursery.start_soon(one, worker)
        found.sort(key=lambda entry: entry[0].share.index)
        return found

    def _own_samples(self) -> list[Sample]:
        up = sum(worker.up for worker in self.workers)
        own = [
            gauge("smsgw_shutting_down", "1 once a graceful stop has begun", self._stopping),
            gauge("smsgw_workers", "worker processes configured (SMSGW_WORKERS)", self.count),
            gauge("smsgw_workers_up", "worker processes serving", up),
            counter("smsgw_worker_restarts", "workers replaced after they died", self.restarts),
        ]
        for worker in self.workers:
            pid = worker.process.pid if worker.up and worker.process is not None else 0
            own.append(
                gauge(
                    "smsgw_worker_pid",
                    "each worker's process id (0 while it is being replaced)",
                    pid,
                    worker=str(worker.share.index + 1),
                )
            )
        return [shared(sample) for sample in own]

    async def samples(self) -> list[Sample]:
        reports = [samples for _, (samples, _) in await self._collect_all()]
        return merge_samples([self._own_samples(), *reports, self._retired])

    async def checks(self) -> list[Check]:
        up = sum(worker.up for worker in self.workers)
        own = [
            Check("gateway", not self._stopping, "shutting down" if self._stopping else "ok"),
            Check("workers", up > 0, f"{up}/{self.count} up"),
        ]
        reports = [(w.share.name, checks) for w, (_, checks) in await self._collect_all()]
        return merge_checks([("supervisor", own), *reports])


async def _set_when_exited(process: trio.Process, event: trio.Event) -> None:
    await process.wait()
    event.set()


def _worker_env() -> dict[str, str]:
    """The supervisor's environment, with its module path: the worker imports smsgw the
    same way (from a checkout, a virtualenv or the zipapp's unpacked site-packages)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(path for path in sys.path if path)
    return env


def _reserve_port(endpoint: Endpoint) -> list[socket.socket]:
    """Bound, not listening, SO_REUSEPORT sockets on every address of the endpoint, all on
    one port (the one the OS picks for the first when the endpoint's port is 0): the
    workers' listeners join them; the kernel gives connections to listening sockets only."""
    try:
        addresses = socket.getaddrinfo(
            endpoint.host, endpoint.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except OSError as exc:
        raise ConfigError("SMSGW_LISTEN", f"cannot listen on {endpoint}: {exc}") from None
    reserved: list[socket.socket] = []
    port = endpoint.port
    try:
        for family, kind, proto, _, address in addresses:
            sock = socket.socket(family, kind, proto)
            reserved.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind((address[0], port, *address[2:]))
            port = sock.getsockname()[1]
    except OSError as exc:
        for sock in reserved:
            sock.close()
        raise ConfigError(
            "SMSGW_LISTEN", f"cannot listen on {endpoint}: {exc.strerror or exc}"
        ) from None
    return reserved
