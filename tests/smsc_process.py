"""Run the Node SMSC of tests/smsc/ as a subprocess, for tests that need a real SMPP peer.

    async with running_smsc(dlr_delay=0.1) as smsc:
        ...connect an ESME to 127.0.0.1:smsc.port...
        submit = await smsc.next_event("submit_sm")
        await smsc.throttle(5)

The SMSC prints one JSON object per line on stdout (its events) and reads one JSON command
per line on stdin; tests/smsc/smsc.js documents both. `run_blast` runs tests/smsc/blast.js,
the Node ESME the SMPP benchmark uses as its ceiling.

Events reach `Smsc.events` a moment after the SMSC acted: an ESME may see a PDU before its
event is collected, so wait with `next_event`/`wait_for_count` rather than read `events`
directly. A command's reply is a barrier: once `command()` returns, every event the SMSC
printed before it has been collected.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any, Literal, TypedDict, Unpack

import attrs
import trio

from tests.ismg.child import keep_tail, read_events, supervised
from tests.ismg.events import Event as Event  # one decoded stdout line: {"event": kind, ...}
from tests.ismg.events import EventLog, EventWaiting

SMSC_DIR = Path(__file__).resolve().parent / "smsc"
SMSC_SCRIPT = SMSC_DIR / "smsc.js"
BLAST_SCRIPT = SMSC_DIR / "blast.js"

IdStyle = Literal["decimal", "hex"]
ReceiptIdStyle = Literal["same", "decimal"]
BindMode = Literal["transmitter", "transceiver"]

# SMPP command_status values the tests talk about (SMPP 3.4 §5.1.3).
ESME_ROK = 0x00
ESME_RINVBNDSTS = 0x04
ESME_RSYSERR = 0x08
ESME_RBINDFAIL = 0x0D
ESME_RTHROTTLED = 0x58
ESME_RINVCMDID = 0x03

_STOP_GRACE = 5.0  # seconds the SMSC gets to exit after stdin EOF before SIGTERM


class SmscError(Exception):
    """The SMSC did not start, died, or an awaited event did not come."""


class SmscCommandError(SmscError):
    """The SMSC refused a control command; the reply is attached."""

    def __init__(self, reply: Event) -> None:
        super().__init__(f"SMSC refused {reply.get('cmd')!r}: {reply.get('error')}")
        self.reply = reply


def _non_negative(_: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{attribute.name} must be a finite number >= 0, not {value!r}")


def _share(_: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not 0 <= value <= 1:
        raise ValueError(f"{attribute.name} must be between 0 and 1, not {value!r}")


@attrs.frozen(kw_only=True)
class SmscOptions:
    """The command-line options of smsc.js (its --help explains each)."""

    host: str = "127.0.0.1"
    port: int = attrs.field(
        default=0,
        validator=attrs.validators.and_(attrs.validators.ge(0), attrs.validators.le(65535)),
    )
    system_id: str = "smsgw"
    password: str = "secret"
    id_style: IdStyle = attrs.field(
        default="decimal", validator=attrs.validators.in_(("decimal", "hex"))
    )
    id_start: int = attrs.field(default=1, validator=attrs.validators.ge(0))
    receipt_id: ReceiptIdStyle = attrs.field(
        default="same", validator=attrs.validators.in_(("same", "decimal"))
    )
    dlr_delay: float = attrs.field(default=0.0, validator=_non_negative)
    undeliv: float = attrs.field(default=0.0, validator=_share)
    seed: int = 1
    latency: float = attrs.field(default=0.0, validator=_non_negative)
    enquire_link: float = attrs.field(default=0.0, validator=_non_negative)
    dlr_retry: float = attrs.field(default=1.0, validator=_non_negative)
    deliver_window: int = attrs.field(default=10, validator=attrs.validators.ge(1))
    dlr_any: bool = False
    quiet: bool = False

    def args(self) -> list[str]:
        """The smsc.js arguments for these options."""
        args = [
            "--host", self.host,
            "--port", str(self.port),
            "--system-id", self.system_id,
            "--password", self.password,
            "--id-style", self.id_style,
            "--id-start", str(self.id_start),
            "--receipt-id", self.receipt_id,
            "--dlr-delay", repr(self.dlr_delay),
            "--undeliv", repr(self.undeliv),
            "--seed", str(self.seed),
            "--latency", repr(self.latency),
            "--enquire-link", repr(self.enquire_link),
            "--dlr-retry", repr(self.dlr_retry),
            "--deliver-window", str(self.deliver_window),
        ]  # fmt: skip
        if self.dlr_any:
            args.append("--dlr-any")
        if self.quiet:
            args.append("--quiet")
        return args


class SmscOptionFields(TypedDict, total=False):
    """Keyword arguments of `running_smsc`: the fields of `SmscOptions`."""

    host: str
    port: int
    system_id: str
    password: str
    id_style: IdStyle
    id_start: int
    receipt_id: ReceiptIdStyle
    dlr_any: bool
    dlr_delay: float
    undeliv: float
    seed: int
    latency: float
    enquire_link: float
    dlr_retry: float
    deliver_window: int
    quiet: bool


def node_executable() -> str:
    """The `node` binary, or a clear error saying what the SMPP tests need."""
    node = shutil.which("node")
    if node is None:
        raise SmscError("`node` is not on PATH: the SMPP tests need Node.js 18+ (tests/smsc)")
    if not (SMSC_DIR / "node_modules" / "smpp").is_dir():
        raise SmscError(
            f"{SMSC_DIR}/node_modules is missing: run `make pytest` or "
            f"`cd {SMSC_DIR} && npm ci` first"
        )
    return node


class Smsc(EventWaiting):
    """A running smsc.js: its port, its events (waited for with `EventWaiting`'s methods),
    and its control channel."""

    def __init__(self, process: trio.Process, options: SmscOptions) -> None:
        self.options = options
        self.process = process
        self.host = options.host
        self.port = 0
        self.log = EventLog(SmscError, self._exit_report)
        self._stderr_closed = trio.Event()
        self._stderr = bytearray()
        self._stopping = False
        self._next_command_id = 1
        self._send_lock = trio.Lock()

    @property
    def events(self) -> list[Event]:
        """Every event, in arrival order."""
        return self.log.events

    @property
    def returncode(self) -> int | None:
        return self.process.returncode

    @property
    def stderr(self) -> str:
        return self._stderr.decode("utf-8", "replace")

    # -- control channel ---------------------------------------------------------------------

    async def command(self, command: Mapping[str, Any], *, timeout: float = 5.0) -> Event:
        """Send one control command and return its reply; SmscCommandError if refused."""
        command_id = self._next_command_id
        self._next_command_id += 1
        line = json.dumps({**command, "id": command_id}) + "\n"
        stdin = self.process.stdin
        assert stdin is not None, "running_smsc opens the SMSC with a stdin pipe"
        async with self._send_lock:
            try:
                await stdin.send_all(line.encode())
            except (trio.BrokenResourceError, trio.ClosedResourceError) as error:
                raise SmscError(await self._exit_report()) from error
        reply = await self.next_event("reply", timeout=timeout, id=command_id)
        if not reply.get("ok"):
            raise SmscCommandError(reply)
        return reply

    async def stats(self) -> dict[str, int]:
        reply = await self.command({"cmd": "stats"})
        stats: dict[str, int] = reply["stats"]
        return stats

    async def throttle(self, n: int) -> None:
        """Answer the next n submit_sm/data_sm with ESME_RTHROTTLED."""
        await self.command({"cmd": "throttle", "n": n})

    async def fail(self, status: int | str, n: int = 1) -> None:
        """Answer the next n submit_sm/data_sm with `status` (a number or an ESME_* name)."""
        await self.command({"cmd": "fail", "status": status, "n": n})

    async def dlr(self, stat: str, n: int = 1, err: str | None = None) -> None:
        """Make the next n accepted messages end with `stat` (DELIVRD, UNDELIV, EXPIRED...)."""
        command: dict[str, Any] = {"cmd": "dlr", "stat": stat, "n": n}
        if err is not None:
            command["err"] = err
        await self.command(command)

    async def silent(self, on: bool = True) -> None:
        """Stop (or resume) answering submit_sm/data_sm."""
        await self.command({"cmd": "silent", "on": on})

    async def drop(self) -> int:
        """Destroy every connection at once; returns how many there were."""
        reply = await self.command({"cmd": "drop"})
        dropped: int = reply["dropped"]
        return dropped

    async def mo(self, source: str, destination: str, text: str, **fields: Any) -> bool:
        """Send a mobile-originated deliver_sm; True if it waits for a receiver to bind."""
        reply = await self.command(
            {"cmd": "mo", "source": source, "destination": destination, "text": text, **fields}
        )
        queued: bool = reply["queued"]
        return queued

    # -- process -----------------------------------------------------------------------------

    async def _read_stdout(self) -> None:
        await read_events(self.process.stdout, self.log)

    async def _read_stderr(self) -> None:
        try:
            await keep_tail(self.process.stderr, self._stderr)
        finally:
            self._stderr_closed.set()

    async def _exit_report(self) -> str:
        """How the SMSC ended, once its exit code and all of its stderr are in."""
        with trio.move_on_after(2):
            await self.process.wait()
            await self._stderr_closed.wait()
        return f"the SMSC exited (code {self.returncode}); stderr: {self.stderr.strip()!r}"

    async def _wait_listening(self, timeout: float) -> None:
        try:
            listening = await self.next_event("listening", timeout=timeout)
        except SmscError as error:
            raise SmscError(f"the SMSC did not start: {error}") from None
        self.port = int(listening["port"])

    async def _stop(self) -> None:
        """EOF on stdin (the SMSC exits 0), then SIGTERM, then SIGKILL if it lingers."""
        self._stopping = True
        stdin = self.process.stdin
        if stdin is not None:
            with suppress(trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                await stdin.aclose()
        with trio.move_on_after(_STOP_GRACE):
            await self.process.wait()
            return
        self.process.terminate()
        with trio.move_on_after(2):
            await self.process.wait()
            return
        self.process.kill()
        await self.process.wait()


@asynccontextmanager
async def running_smsc(
    *, start_timeout: float = 10.0, **options: Unpack[SmscOptionFields]
) -> AsyncIterator[Smsc]:
    """Start smsc.js, wait until it listens, yield it, stop it (stdin EOF) on exit.

    Raises SmscError if it cannot start, or on a clean exit of the block if the SMSC
    exited on its own with a non-zero code (a crash the test would otherwise miss).
    """
    settings = SmscOptions(**options)
    command = [node_executable(), str(SMSC_SCRIPT), *settings.args()]
    process = await trio.lowlevel.open_process(
        command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    smsc = Smsc(process, settings)
    async with supervised(process, (smsc._read_stdout, smsc._read_stderr), smsc._stop):
        await smsc._wait_listening(start_timeout)
        yield smsc
        crashed = not smsc._stopping and process.poll() not in (None, 0)
    if crashed:
        raise SmscError(
            f"the SMSC exited with code {process.returncode}; stderr: {smsc.stderr.strip()!r}"
        )


@attrs.frozen
class BlastResult:
    submits: int
    ok: int
    failed: int
    seconds: float
    per_second: float


async def run_blast(
    port: int,
    *,
    count: int,
    window: int,
    host: str = "127.0.0.1",
    system_id: str = "smsgw",
    password: str = "secret",
    bind: BindMode = "transmitter",
    registered_delivery: int = 0,
    timeout: int = 60,
) -> BlastResult:
    """Run blast.js against an SMSC: `count` submit_sm with `window` outstanding."""
    command = [
        node_executable(), str(BLAST_SCRIPT),
        "--host", host, "--port", str(port),
        "--count", str(count), "--window", str(window),
        "--system-id", system_id, "--password", password,
        "--bind", bind, "--registered-delivery", str(registered_delivery),
        "--timeout", str(timeout),
    ]  # fmt: skip
    with trio.fail_after(timeout + 5):
        result = await trio.run_process(
            command, capture_stdout=True, capture_stderr=True, check=False
        )
    stderr = result.stderr.decode("utf-8", "replace").strip()
    if result.returncode != 0:
        raise SmscError(f"blast.js exited with code {result.returncode}: {stderr}")
    lines = result.stdout.decode().strip().splitlines()
    try:
        report = json.loads(lines[-1])
        return BlastResult(
            submits=int(report["submits"]),
            ok=int(report["ok"]),
            failed=int(report["failed"]),
            seconds=float(report["seconds"]),
            per_second=float(report["per_second"]),
        )
    except (IndexError, KeyError, TypeError, ValueError) as error:
        raise SmscError(f"blast.js printed no report: {result.stdout!r} {stderr}") from error
