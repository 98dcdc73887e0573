"""Start the real `smsgw serve` (or the zipapp) as a child process, for end-to-end tests."""

from __future__ import annotations

import os
import re
import resource
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import attrs
import trio

LISTENING = re.compile(rb"listening on (\S+):(\d+)")


@attrs.define
class GatewayProcess:
    process: trio.Process
    port: int
    workdir: Path
    stdout: list[bytes]

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def output_line(self, needle: str, timeout: float = 10.0) -> str:
        """The first stdout line holding `needle`, waiting for it to arrive (pipes split writes)."""
        with trio.fail_after(timeout):
            while True:
                for line in self.stdout:
                    if needle.encode() in line:
                        return line.decode()
                await trio.sleep(0.01)

    async def metrics_port(self) -> int:
        """The port of /metrics and /healthz, from the banner (SMSGW_METRICS set)."""
        line = await self.output_line("metrics: http://")
        match = re.search(r"http://\S+:(\d+)/", line)
        assert match, line
        return int(match.group(1))

    def log_text(self) -> str:
        return (self.workdir / "gateway.log").read_text(errors="replace")

    async def terminate(self, timeout: float = 15.0) -> int:
        """SIGTERM, then the exit code (the gateway must stop by itself within `timeout`)."""
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
        with trio.fail_after(timeout):
            return await self.process.wait()

    def kill(self) -> None:
        if self.process.returncode is None:
            self.process.kill()


def smsgw_command() -> list[str]:
    """The gateway under test: the zipapp when SMSGW_TEST_PYZ names one, else this checkout."""
    pyz = os.environ.get("SMSGW_TEST_PYZ")
    if pyz:
        return [sys.executable, pyz]
    return [sys.executable, "-m", "smsgw"]


def base_env(workdir: Path, extra: Mapping[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SMSGW_")}
    env.update(
        {
            "SMSGW_LISTEN": "127.0.0.1:0",
            "SMSGW_DB": f"sqlite:///{workdir / 'smsgw.db'}",
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(extra)
    return env


async def run_cli(
    args: Sequence[str], env: Mapping[str, str], timeout: float = 30.0
) -> subprocess.CompletedProcess[bytes]:
    with trio.fail_after(timeout):
        return await trio.run_process(
            [*smsgw_command(), *args],
            env=dict(env),
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )


@asynccontextmanager
async def gateway_process(
    workdir: Path,
    env: Mapping[str, str] | None = None,
    *,
    start_timeout: float = 30.0,
    command: Sequence[str] | None = None,
    open_files: int | None = None,
) -> AsyncIterator[GatewayProcess]:
    """A running gateway; on exit it gets SIGTERM and must exit 0 (killed if it hangs).
    `command` replaces `smsgw_command()` (e.g. to run it as another user); `open_files`:
    its RLIMIT_NOFILE, soft and hard (the gateway cannot raise it)."""
    workdir.mkdir(parents=True, exist_ok=True)
    log_file = open(workdir / "gateway.log", "ab")  # noqa: SIM115 - closed below

    def limit_open_files() -> None:
        if open_files is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (open_files, open_files))

    process = await trio.lowlevel.open_process(
        [*(command or smsgw_command()), "serve"],
        env=base_env(workdir, env or {}),
        cwd=str(workdir),
        stdout=subprocess.PIPE,
        stderr=log_file,
        preexec_fn=limit_open_files,
    )
    lines: list[bytes] = []
    listening: list[int] = []
    found = trio.Event()

    async def pump() -> None:
        assert process.stdout is not None
        buffer = b""
        async for chunk in process.stdout:
            buffer += chunk
            *complete, buffer = buffer.split(b"\n")
            for line in complete:
                lines.append(line)
                match = LISTENING.search(line)
                if match and not listening:
                    listening.append(int(match.group(2)))
                    found.set()
        found.set()

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(pump)
            with trio.fail_after(start_timeout):
                await found.wait()
            if not listening:
                code = await process.wait()
                raise RuntimeError(
                    f"gateway exited {code} before listening: "
                    f"{(workdir / 'gateway.log').read_text(errors='replace')[-2000:]}"
                )
            gateway = GatewayProcess(process, listening[0], workdir, lines)
            try:
                yield gateway
            finally:
                with trio.CancelScope(shield=True):
                    try:
                        await gateway.terminate()
                    except trio.TooSlowError:
                        gateway.kill()
                        await process.wait()
                        raise
            nursery.cancel_scope.cancel()
    finally:
        if process.returncode is None:
            process.kill()
            with trio.CancelScope(shield=True):
                await process.wait()
        log_file.close()
