"""Every legal request gets an answer its length field can carry, and the answer stays
bounded per result whatever the request echoes back (real sockets, both length styles)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

from smsgw.protocol.framing import MAX_DECIMAL_LENGTH, LengthStyle
from tests.conftest import make_config, parse_reply, raw_exchange, running_gateway, submit_frame

# What one result may take in the answer (its msgid can be 64 characters that JSON writes
# as six bytes each, and its error echoes a bounded part of what was sent).
RESULT_BOUND = 1024
CONTROL_MSGID = "\u0001" * 64  # a valid msgid: 64 characters


def echo_heavy_request(phones: int) -> list[dict[str, Any]]:
    """One item whose every field echoes as much as it can, split over `phones` numbers, and
    one valid item."""
    bad = "中" * 70
    return [
        {
            "phone": ",".join(["中" * 30] * phones),
            "message": 5,
            "msgid": CONTROL_MSGID,
            "msgtype": bad,
            "sendtime": bad,
        },
        {"phone": "8613800138000", "message": "hi", "msgid": "fine", "msgtype": 1},
    ]


async def exchange(port: int, body: Any, style: LengthStyle) -> tuple[bytes, dict[str, Any]]:
    data = await raw_exchange(port, submit_frame(body, style=style), timeout=30)
    assert data, "no answer"
    reply = parse_reply(data)
    assert reply.length_style is style
    decoded = json.loads(reply.body)
    assert isinstance(decoded, dict)
    return reply.body, decoded


@pytest.mark.parametrize("style", [LengthStyle.DECIMAL, LengthStyle.BINARY])
async def test_an_answer_that_echoes_much_is_bounded_and_fits(
    tmp_path: Path, style: LengthStyle, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    request = echo_heavy_request(999)
    async with running_gateway(make_config(tmp_path)) as gw:
        body, reply = await exchange(gw.port, request, style)
        assert reply["status"] == "2000"
        results = reply["results"]
        assert len(results) == 1000
        assert [r["status"] for r in results] == ["2001"] * 999 + ["0"]
        assert {r["msgid"] for r in results[:999]} == {CONTROL_MSGID}  # the key, unchanged
        assert len(body) <= MAX_DECIMAL_LENGTH
        assert max(len(json.dumps(r, ensure_ascii=False).encode()) for r in results) <= RESULT_BOUND
        assert sum((await gw.store.counts()).values()) == 1
    assert not [record for record in caplog.records if record.exc_info]


async def test_an_answer_too_large_for_six_digits_is_9999_not_silence(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # 3,000 valid deliveries, each answered with its 64-character msgid written as 384 bytes:
    # no six-digit length can carry that answer, a binary one can.
    phones = ",".join(str(8613800000000 + n) for n in range(3000))
    request = [{"phone": phones, "message": "hi", "msgid": CONTROL_MSGID, "msgtype": 1}]
    async with running_gateway(make_config(tmp_path, SMSGW_MAX_BATCH="3000")) as gw:
        _, reply = await exchange(gw.port, request, LengthStyle.DECIMAL)
        assert reply["status"] == "9999"
        assert "fewer deliveries" in reply["error"]
        # What was stored stays stored: the same request with a binary length is answered,
        # every delivery a duplicate.
        _, again = await exchange(gw.port, request, LengthStyle.BINARY)
        assert again["status"] == "0"
        assert len(again["results"]) == 3000
        assert all(result.get("duplicate") is True for result in again["results"])
    assert not [record for record in caplog.records if record.exc_info]
