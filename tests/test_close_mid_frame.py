"""What docs/protocol.md §2.5 promises a client that half-closes in the middle of a frame:
`B001 1001` once the command is known, `B000 1001` before its four bytes have arrived."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import (
    item,
    make_config,
    parse_reply,
    raw_exchange,
    running_gateway,
    submit_frame,
)


@pytest.mark.parametrize(("cut", "command"), [(3, "B000"), (9, "B000"), (10, "B001"), (-5, "B001")])
async def test_a_half_close_mid_frame_is_answered_1001(
    tmp_path: Path, cut: int, command: str
) -> None:
    frame = submit_frame([item()])  # six length digits, then "A001" at bytes 6-9
    async with running_gateway(make_config(tmp_path)) as gw:
        data = await raw_exchange(gw.port, frame[:cut], shutdown_write=True)
    reply = parse_reply(data)
    assert reply.command == command
    assert json.loads(reply.body)["status"] == "1001"
