"""`smsgw status` and `smsgw inbox` as real processes against a store prepared here: one
JSON document, `--jsonl`, `--phone`, exit 1 when nothing matches, and a reader that goes
away early (`| head`) ends nothing in a traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import trio

from smsgw.carriers.base import MobileOriginated
from smsgw.config import load_config
from smsgw.gateway import start_store, store_from_config
from smsgw.store.base import NewMessage
from tests.gateway_process import base_env, run_cli, smsgw_command

PHONES = ("8613800138000", "8613900139000")


async def prepare(tmp_path: Path) -> dict[str, str]:
    env = base_env(tmp_path, {})
    store = store_from_config(load_config({"SMSGW_DB": env["SMSGW_DB"]}))
    async with trio.open_nursery() as nursery:
        await start_store(nursery, store)
        messages = [NewMessage("demo", "multi", phone, "hi", 1, None, 1) for phone in PHONES]
        await store.insert_messages(messages, 1_700_000_000_000)
        await store.insert_inbound(
            [
                MobileOriginated(PHONES[0], "10690000", "TD", 8, 0, b"", 1_700_000_000_000 + n)
                for n in range(5)
            ]
        )
        nursery.cancel_scope.cancel()
    return env


async def run_with_stdout_closed(args: list[str], env: dict[str, str]) -> tuple[int, bytes]:
    """Run the CLI with a stdout pipe whose reader is already gone, like `| head` that has
    read its lines; the exit status and stderr."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        with trio.fail_after(30):
            done = await trio.run_process(
                [*smsgw_command(), *args],
                env=env,
                stdout=write_end,
                capture_stderr=True,
                check=False,
            )
    finally:
        os.close(write_end)
    return done.returncode, done.stderr


async def test_status_prints_one_document_filters_and_fails_when_unknown(tmp_path: Path) -> None:
    env = await prepare(tmp_path)
    shown = await run_cli(["status", "multi"], env)
    assert shown.returncode == 0, shown.stderr
    document = json.loads(shown.stdout)  # one document, whatever the number of phones
    assert [entry["message"]["phone"] for entry in document] == list(PHONES)

    lines = await run_cli(["status", "multi", "--jsonl"], env)
    assert lines.returncode == 0, lines.stderr
    parsed = [json.loads(line) for line in lines.stdout.decode().splitlines()]
    assert [entry["message"]["phone"] for entry in parsed] == list(PHONES)

    one = await run_cli(["status", "multi", "--phone", PHONES[1]], env)
    assert one.returncode == 0, one.stderr
    assert [entry["message"]["phone"] for entry in json.loads(one.stdout)] == [PHONES[1]]

    for args in (["status", "multi", "--phone", "8610000000000"], ["status", "nothing"]):
        missing = await run_cli(args, env)
        assert missing.returncode == 1
        assert missing.stdout == b""
        assert b"no message" in missing.stderr


async def test_a_reader_that_goes_away_early_is_no_error(tmp_path: Path) -> None:
    env = await prepare(tmp_path)
    for args in (["status", "multi"], ["status", "multi", "--jsonl"], ["inbox"]):
        code, stderr = await run_with_stdout_closed(args, env)
        assert b"Traceback" not in stderr and b"BrokenPipeError" not in stderr, stderr
        assert code == 0, (args, stderr)


def test_the_pipe_is_real() -> None:
    # The helper above must really produce EPIPE: a plain writer fails on such a pipe.
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        process = subprocess.run(
            [sys.executable, "-c", "print('x' * 100)"],
            stdout=write_end,
            capture_output=False,
            stderr=subprocess.PIPE,
            check=False,
        )
    finally:
        os.close(write_end)
    assert b"BrokenPipeError" in process.stderr
