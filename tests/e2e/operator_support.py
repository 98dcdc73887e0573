"""Helpers shared by the end-to-end tests against an operator (SMPP's tests/smsc, CMPP's
tests/ismg): the messages a test sends, the gateway's fast timers, and checks of what the
merchant received and what the gateway stored, and the gateway and merchant between the
test and the operator."""

from __future__ import annotations

import sqlite3
from collections import Counter
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path

import attrs

from smsgw.client import submit
from smsgw.protocol.status import Status
from tests.e2e.delivery_support import APPID, SECRET, now_ms
from tests.gateway_process import GatewayProcess, gateway_process
from tests.listen_process import Item, ListenProcess, listen_process

FAST_GATEWAY = {
    "SMSGW_RETRY_BACKOFF": "100ms",
    "SMSGW_PUSH_BACKOFF": "200ms",
    "SMSGW_PUSH_TIMEOUT": "2s",
    "SMSGW_SHUTDOWN_GRACE": "5s",
}


@attrs.frozen
class Sms:
    msgid: str
    phone: str
    text: str
    msgtype: int = 1

    def item(self) -> dict[str, object]:
        return {
            "msgid": self.msgid,
            "phone": self.phone,
            "message": self.text,
            "msgtype": self.msgtype,
        }

    @property
    def key(self) -> tuple[str, str]:
        return (self.msgid, self.phone)


SHORT_LATIN = "Your code is 4821. Thank you!"
SHORT_CHINESE = "您的验证码是四八二九，请在五分钟内输入。"  # 20 characters
LONG_LATIN = " ".join(f"word{n:03d}" for n in range(50))  # 399 characters: 153 + 153 + 93
LONG_CHINESE = "尊敬的客户您好您的订单已经发货请注意查收如有问题请联系客服谢谢" * 5  # 155: 67+67+21

MIXED = (
    Sms("short-latin", "8613800138001", SHORT_LATIN),
    Sms("short-chinese", "8613800138002", SHORT_CHINESE, msgtype=2),
    Sms("long-latin", "8613800138003", LONG_LATIN),
    Sms("long-chinese", "8613800138004", LONG_CHINESE),
)
PARTS = {"short-latin": 1, "short-chinese": 1, "long-latin": 3, "long-chinese": 3}


class GatewayDriver:
    """What a test does through the gateway: submit as the merchant, wait for its A002s.
    An attrs class holding these three (and its operator) takes the methods."""

    merchant: ListenProcess
    gateway: GatewayProcess
    workdir: Path

    async def submit(self, messages: Iterable[Sms]) -> int:
        """A001 the messages in one batch; every item must be accepted. Returns the time
        (ms since the epoch) just before the submit, the earliest a sendtime can be."""
        batch = list(messages)
        before = now_ms()
        reply = await submit(
            self.gateway.address, APPID, SECRET, [sms.item() for sms in batch], timeout=10
        )
        assert [result.status for result in reply.results] == [Status.OK] * len(batch), reply
        return before

    async def receipts_for(self, count: int, *, timeout: float = 15.0) -> list[Item]:
        await self.merchant.wait_for(
            lambda _: len(self.merchant.receipts()) >= count, timeout=timeout
        )
        return self.merchant.receipts()


@asynccontextmanager
async def merchant_and_gateway(
    tmp_path: Path, carrier_url: str, env: Mapping[str, str] | None = None
) -> AsyncIterator[tuple[ListenProcess, GatewayProcess, Path]]:
    """The merchant's `smsgw listen`, and `smsgw serve` sending to ``carrier_url`` (with the
    fast timers and ``env``): yields both and the gateway's workdir; on exit, checks that
    the gateway logged no traceback."""
    async with listen_process(tmp_path / "merchant") as merchant:
        settings = {
            "SMSGW_APPS": f"{APPID}:{SECRET}@{merchant.address}",
            "SMSGW_CARRIER": carrier_url,
            **FAST_GATEWAY,
            **(env or {}),
        }
        workdir = tmp_path / "gateway"
        async with gateway_process(workdir, settings) as gateway:
            yield merchant, gateway, workdir
        assert "Traceback" not in gateway.log_text(), gateway.log_text()[-3000:]


def assert_receipts(
    receipts: list[Item],
    expected: Mapping[tuple[str, str], tuple[str, str]],
    *,
    sent_after_ms: int,
) -> None:
    """Exactly one A002 per (msgid, phone), with the expected (status, stat) and a sendtime
    between the submit and now."""
    counts = Counter((item["msgid"], item["phone"]) for item in receipts)
    assert set(counts) == set(expected), f"receipts {sorted(counts)} != {sorted(expected)}"
    assert max(counts.values()) == 1, f"duplicates: {[k for k, n in counts.items() if n > 1]}"
    now = now_ms()
    for item in receipts:
        status, stat = expected[(item["msgid"], item["phone"])]
        assert (item["status"], item["stat"]) == (status, stat), item
        assert isinstance(item["sendtime"], int), item
        assert sent_after_ms <= item["sendtime"] <= now, (item, sent_after_ms, now)


def stored_rows(workdir: Path) -> dict[str, tuple[str, int, str | None]]:
    """msgid → (state, attempts, stat) from the gateway's database (read-only)."""
    uri = f"file:{workdir / 'smsgw.db'}?mode=ro"
    with sqlite3.connect(uri, uri=True) as db:
        rows = db.execute("select msgid, state, attempts, stat from messages").fetchall()
    return {msgid: (state, attempts, stat) for msgid, state, attempts, stat in rows}


def check_after_drop(
    messages: list[Sms],
    submits: Counter[str],
    receipts: list[Item],
    *,
    workdir: Path,
    sent_after: int,
) -> None:
    """After a link was dropped mid-load: every message got exactly one final A002; a code
    (msgtype 2) reached the operator at most once and failed UNKNOWN when in doubt; at least
    one code was caught in doubt and one notification sent again; the store agrees.
    `submits` counts what reached the operator per msgid."""
    by_msgid = {sms.msgid: sms for sms in messages}
    assert set(submits) <= set(by_msgid)
    expected: dict[tuple[str, str], tuple[str, str]] = {}
    unknown = 0
    resent = 0
    for item in receipts:
        sms = by_msgid[item["msgid"]]
        if sms.msgtype == 1:
            expected[sms.key] = ("1", "DELIVRD")
            resent += submits[sms.msgid] > 1
        else:
            # A code is submitted at most once: in doubt after the drop, it fails UNKNOWN.
            assert submits[sms.msgid] <= 1, (sms.msgid, submits[sms.msgid])
            if item["stat"] == "UNKNOWN":
                expected[sms.key] = ("2", "UNKNOWN")
                unknown += 1
            else:
                expected[sms.key] = ("1", "DELIVRD")
    assert_receipts(receipts, expected, sent_after_ms=sent_after)
    assert len(expected) == len(messages)  # every accepted message got its final A002
    assert unknown >= 1, "the drop caught no verification code in flight"
    assert resent >= 1, "the drop caught no notification in flight"
    rows = stored_rows(workdir)
    assert len(rows) == len(messages)
    assert {state for state, _, _ in rows.values()} <= {"delivered", "failed"}
    for msgid, (state, _, stat) in rows.items():
        if state == "failed":
            assert (by_msgid[msgid].msgtype, stat) == (2, "UNKNOWN")
