"""The listener over real loopback sockets: every kind of bad input gets its status (or is cut
off by the deadline), the server keeps serving, and nothing partial is stored."""

from __future__ import annotations

import contextlib
import json
import struct
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import trio
import trustme

from smsgw.protocol.framing import LengthStyle, encode_request
from smsgw.store.base import CommitFailed, NewMessage, Store
from tests.conftest import (
    APPID,
    SECRET,
    item,
    make_config,
    parse_reply,
    raw_exchange,
    reply_body,
    running_gateway,
    submit_frame,
    submit_raw,
)


async def stored_count(store: Store) -> int:
    return sum((await store.counts()).values())


async def assert_still_serving(port: int) -> None:
    reply = await submit_raw(port, [item(msgid=f"alive-{time.monotonic_ns()}")])
    assert reply["status"] == "0"


async def test_submit_is_stored_before_it_is_acknowledged(tmp_path: Path) -> None:
    async with running_gateway(make_config(tmp_path)) as gw:
        reply = await submit_raw(gw.port, [item(msgid="a1", phone="8613800138000,8613900139000")])
        assert reply["status"] == "0"
        assert [(r["msgid"], r["phone"], r["status"]) for r in reply["results"]] == [
            ("a1", "8613800138000", "0"),
            ("a1", "8613900139000", "0"),
        ]
        (history,) = [h for h in await gw.store.history("a1") if h.message.phone == "8613800138000"]
        assert history.message.appid == APPID
        assert history.message.message == "hello"


@pytest.mark.parametrize("style", [LengthStyle.DECIMAL, LengthStyle.BINARY])
async def test_both_length_styles_are_answered_in_kind(tmp_path: Path, style: LengthStyle) -> None:
    async with running_gateway(make_config(tmp_path)) as gw:
        data = await raw_exchange(gw.port, submit_frame([item()], style=style))
        reply = parse_reply(data)
        assert reply.command == "B001"
        assert reply.length_style is style
        if style is LengthStyle.DECIMAL:
            assert data[:6].isdigit()
        else:
            assert struct.unpack(">I", data[:4])[0] == len(reply.body)


async def test_duplicates_are_acknowledged_and_not_stored_twice(tmp_path: Path) -> None:
    async with running_gateway(make_config(tmp_path)) as gw:
        first = await submit_raw(gw.port, [item(msgid="d1")])
        again = await submit_raw(gw.port, [item(msgid="d1")])
        assert first["results"][0].get("duplicate") is None
        assert again["status"] == "0"
        assert again["results"][0]["duplicate"] is True
        assert await stored_count(gw.store) == 1


async def test_the_pipeline_is_told_when_the_earliest_new_message_is_due(tmp_path: Path) -> None:
    async with running_gateway(make_config(tmp_path)) as gw:
        told: list[int] = []
        gw.gateway.server.on_stored = told.append
        later = int(time.time() * 1000) + 3_600_000
        before = int(time.time() * 1000)
        await submit_raw(gw.port, [item(msgid="s1", sendtime=later)])
        await submit_raw(gw.port, [item(msgid="s2", sendtime=later + 5), item(msgid="now")])
        after = int(time.time() * 1000)
        await submit_raw(gw.port, [item(msgid="s1", sendtime=later)])  # a duplicate: nothing new
        assert told[0] == later
        assert before <= told[1] <= after  # "now" is due first
        assert len(told) == 2


async def test_credentials_padded_any_accepted_way(tmp_path: Path) -> None:
    async with running_gateway(make_config(tmp_path)) as gw:
        body = json.dumps([item()]).encode()
        for appid, secret in [
            (APPID.rjust(15, "0"), SECRET.rjust(15, "0")),
            (APPID.ljust(15), SECRET.ljust(15)),
            (APPID.rjust(15, "\0"), SECRET.ljust(15, "\0")),
        ]:
            frame = b"%06d" % len(body) + b"A001" + appid.encode() + secret.encode() + body
            assert reply_body(await raw_exchange(gw.port, frame))["status"] == "0"


# --- broken frames ---


async def test_length_with_letters(tmp_path: Path) -> None:
    async with running_gateway(make_config(tmp_path)) as gw:
        data = await raw_exchange(gw.port, b"00a012A001" + b"0" * 30 + b"{}")
        reply = parse_reply(data)
        assert reply.command == "B000"
        assert json.loads(reply.body)["status"] == "1001"
        await assert_still_serving(gw.port)


async def test_letters_instead_of_a_length(tmp_path: Path) -> None:
    async with running_gateway(make_config(tmp_path)) as gw:
        reply = reply_body(await raw_exchange(gw.port, b"GET / HTTP/1.1\r\n\r\n"))
        assert reply["status"] == "1001"


async def test_length_larger_than_body_then_stall_is_cut_off(tmp_path: Path) -> None:
    config = make_config(tmp_path, SMSGW_READ_TIMEOUT="300ms")
    async with running_gateway(config) as gw:
        started = trio.current_time()
        frame = submit_frame([item()])
        data = await raw_exchange(gw.port, frame[:-5], timeout=5)
        assert data == b""  # cut off, nothing answered, nothing stored
        assert 0.25 < trio.current_time() - started < 3
        assert await stored_count(gw.store) == 0
        await assert_still_serving(gw.port)


async def test_short_read_at_eof(tmp_path: Path) -> None:
    async with running_gateway(make_config(tmp_path)) as gw:
        frame = submit_frame([item()])
        reply = reply_body(await raw_exchange(gw.port, frame[:-5], shutdown_write=True))
        assert reply["status"] == "1001"
        assert await stored_count(gw.store) == 0


async def test_silent_client_is_cut_off(tmp_path: Path) -> None:
    config = make_config(tmp_path, SMSGW_READ_TIMEOUT="300ms")
    async with running_gateway(config) as gw:
        assert await raw_exchange(gw.port, b"", timeout=5) == b""
        await assert_still_serving(gw.port)


async def test_body_over_the_limit(tmp_path: Path) -> None:
    config = make_config(tmp_path, SMSGW_MAX_BODY="1000")
    async with running_gateway(config) as gw:
        body = json.dumps([item(message="x" * 2000)]).encode()
        # The gateway refuses on the length alone, before the body is sent.
        frame = encode_request("A001", APPID, SECRET, body)[:40]
        reply = reply_body(await raw_exchange(gw.port, frame))
        assert reply["status"] == "1002"
        await assert_still_serving(gw.port)


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b"\xff\xfe not utf-8", "1003"),
        (b"{not json", "1003"),
        (b'"a string"', "1003"),
        (b"42", "1003"),
        (b"null", "1003"),
        (b"[]", "1003"),
        (b"[" * 100_000 + b"]" * 100_000, "1003"),
    ],
    ids=["utf8", "json", "string", "number", "null", "empty", "deep"],
)
async def test_bodies_that_are_not_an_accepted_shape(
    tmp_path: Path, body: bytes, status: str
) -> None:
    async with running_gateway(make_config(tmp_path)) as gw:
        reply = await submit_raw(gw.port, body)
        assert reply["status"] == status
        assert reply["error"]
        assert await stored_count(gw.store) == 0
        await assert_still_serving(gw.port)


async def test_batch_over_max_batch(tmp_path: Path) -> None:
    config = make_config(tmp_path, SMSGW_MAX_BATCH="5")
    async with running_gateway(config) as gw:
        reply = await submit_raw(gw.port, [item(msgid=f"b{n}") for n in range(6)])
        assert reply["status"] == "1002"
        assert "SMSGW_MAX_BATCH" in reply["error"]
        assert await stored_count(gw.store) == 0
        assert (await submit_raw(gw.port, [item(msgid=f"b{n}") for n in range(5)]))["status"] == "0"


async def test_unknown_command(tmp_path: Path) -> None:
    async with running_gateway(make_config(tmp_path)) as gw:
        data = await raw_exchange(gw.port, submit_frame([item()], command="A009"))
        reply = parse_reply(data)
        assert reply.command == "B009"
        assert json.loads(reply.body)["status"] == "1004"


async def test_wrong_secret_and_unknown_appid_look_the_same(tmp_path: Path) -> None:
    async with running_gateway(make_config(tmp_path)) as gw:
        wrong_secret = await submit_raw(gw.port, [item()], secret="nope")
        unknown_app = await submit_raw(gw.port, [item()], appid="ghost")
        assert wrong_secret == unknown_app
        assert wrong_secret["status"] == "1005"
        assert await stored_count(gw.store) == 0


async def test_failed_authentications_are_limited_per_address(tmp_path: Path) -> None:
    config = make_config(tmp_path, SMSGW_AUTH_FAIL_LIMIT="3")
    async with running_gateway(config) as gw:
        statuses = [(await submit_raw(gw.port, [item()], secret="bad"))["status"] for _ in range(5)]
        assert statuses == ["1005", "1005", "1005", "1007", "1007"]
        # Even the right secret is refused from this address until the window passes.
        assert (await submit_raw(gw.port, [item()]))["status"] == "1007"


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"phone": "12ab"}, "phone"),
        ({"phone": "123"}, "phone"),
        ({"phone": None}, "phone"),
        ({"message": ""}, "message"),
        ({"message": None}, "message"),
        ({"msgid": ""}, "msgid"),
        ({"msgid": "x" * 65}, "msgid"),
        ({"msgtype": 3}, "msgtype"),
        ({"msgtype": "notice"}, "msgtype"),
        ({"sendtime": "tomorrow"}, "sendtime"),
    ],
)
async def test_each_invalid_item_field(tmp_path: Path, fields: dict[str, Any], field: str) -> None:
    async with running_gateway(make_config(tmp_path)) as gw:
        bad = item(msgid="bad")
        for name, value in fields.items():
            if value is None:
                bad.pop(name)
            else:
                bad[name] = value
        reply = await submit_raw(gw.port, [bad, item(msgid="good")])
        assert reply["status"] == "2000"
        bad_result, good_result = reply["results"]
        assert bad_result["status"] == "2001"
        assert field in bad_result["error"]
        assert good_result["status"] == "0"
        assert await stored_count(gw.store) == 1


async def test_sendtime_too_far_ahead(tmp_path: Path) -> None:
    config = make_config(tmp_path, SMSGW_MAX_SCHEDULE="1d")
    async with running_gateway(config) as gw:
        later = int(time.time() * 1000) + 2 * 86_400_000
        reply = await submit_raw(gw.port, [item(sendtime=later)])
        assert reply["status"] == "2004"
        assert await stored_count(gw.store) == 0


async def test_message_too_long(tmp_path: Path) -> None:
    config = make_config(tmp_path, SMSGW_MAX_SEGMENTS="2")
    async with running_gateway(config) as gw:
        assert (await submit_raw(gw.port, [item(message="a" * 306)]))["status"] == "0"
        reply = await submit_raw(gw.port, [item(msgid="long", message="a" * 307)])
        assert reply["status"] == "2003"
        assert (await submit_raw(gw.port, [item(msgid="zh", message="中" * 135)]))[
            "status"
        ] == "2003"


# --- per-app rules ---


async def test_source_network_not_allowed(tmp_path: Path) -> None:
    apps = tmp_path / "apps.toml"
    apps.write_text('[apps.shop1]\nsecret = "s3cret"\nnetworks = ["192.0.2.0/24"]\n')
    config = make_config(tmp_path, SMSGW_APPS="", SMSGW_APPS_FILE=str(apps))
    async with running_gateway(config) as gw:
        reply = await submit_raw(gw.port, [item()])
        assert reply["status"] == "1006"
        # Answered before the secret is looked at: a wrong one cannot be told from the right.
        assert await submit_raw(gw.port, [item()], secret="guess") == reply
        assert await stored_count(gw.store) == 0


async def test_tps_limit(tmp_path: Path) -> None:
    apps = tmp_path / "apps.toml"
    apps.write_text('[apps.shop1]\nsecret = "s3cret"\ntps = 2\n')
    config = make_config(tmp_path, SMSGW_APPS="", SMSGW_APPS_FILE=str(apps))
    async with running_gateway(config) as gw:
        statuses = [(await submit_raw(gw.port, [item(msgid=f"t{n}")]))["status"] for n in range(4)]
        assert statuses[:2] == ["0", "0"]
        assert "1007" in statuses[2:]


async def test_keep_alive_serves_several_requests_on_one_connection(tmp_path: Path) -> None:
    apps = tmp_path / "apps.toml"
    apps.write_text('[apps.shop1]\nsecret = "s3cret"\nkeep_alive = true\n')
    config = make_config(
        tmp_path, SMSGW_APPS="", SMSGW_APPS_FILE=str(apps), SMSGW_IDLE_TIMEOUT="300ms"
    )
    async with running_gateway(config) as gw:
        frames = submit_frame([item(msgid="k1")]) + submit_frame([item(msgid="k2")])
        data = await raw_exchange(gw.port, frames, timeout=5)
        first = parse_reply(data[: len(data) // 2])
        second = parse_reply(data[len(data) // 2 :])
        assert json.loads(first.body)["results"][0]["msgid"] == "k1"
        assert json.loads(second.body)["results"][0]["msgid"] == "k2"


async def test_without_keep_alive_the_connection_closes_after_one_reply(tmp_path: Path) -> None:
    async with running_gateway(make_config(tmp_path)) as gw:
        frames = submit_frame([item(msgid="c1")]) + submit_frame([item(msgid="c2")])
        data = await raw_exchange(gw.port, frames)
        assert json.loads(parse_reply(data).body)["results"][0]["msgid"] == "c1"
        assert await stored_count(gw.store) == 1


# --- failures inside the gateway ---


class FailingStore:
    """The real store, except that inserting the msgid "explode" raises."""

    def __init__(self, inner: Store) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def insert_messages(self, messages: Sequence[NewMessage], now_ms: int) -> list[bool]:
        if any(message.msgid == "explode" for message in messages):
            raise RuntimeError("disk on fire")
        if any(message.msgid == "db-down" for message in messages):
            raise CommitFailed("PostgreSQL connection lost (nothing stored)")
        return await self._inner.insert_messages(messages, now_ms)


async def test_internal_error_answers_9999_and_the_server_goes_on(tmp_path: Path) -> None:
    from smsgw.gateway import store_from_config

    config = make_config(tmp_path)
    store: Any = FailingStore(store_from_config(config))
    async with running_gateway(config, store=store) as gw:
        reply = await submit_raw(gw.port, [item(msgid="fine"), item(msgid="explode")])
        assert reply["status"] == "9999"
        assert "request" in reply["error"]
        assert await stored_count(gw.store) == 0
        await assert_still_serving(gw.port)


async def test_a_store_error_answers_1008_and_the_server_goes_on(tmp_path: Path) -> None:
    from smsgw.gateway import store_from_config

    config = make_config(tmp_path)
    store: Any = FailingStore(store_from_config(config))
    async with running_gateway(config, store=store) as gw:
        reply = await submit_raw(gw.port, [item(msgid="fine"), item(msgid="db-down")])
        assert reply["status"] == "1008"
        assert reply["error"] == "store unavailable: retry later"
        assert await stored_count(gw.store) == 0
        await assert_still_serving(gw.port)


# --- load ---


async def test_two_thousand_connections_at_once(tmp_path: Path) -> None:
    config = make_config(tmp_path, SMSGW_MAX_CONNECTIONS="200", SMSGW_READ_TIMEOUT="20s")
    async with running_gateway(config) as gw:
        streams: list[trio.SocketStream] = []
        with trio.fail_after(60):
            for _ in range(2000):
                streams.append(await trio.open_tcp_stream("127.0.0.1", gw.port))
            statuses: list[str] = []

            async def talk(n: int, stream: trio.SocketStream) -> None:
                async with stream:
                    # Refused and closed before we wrote? We still read its answer.
                    with contextlib.suppress(trio.BrokenResourceError):
                        await stream.send_all(submit_frame([item(msgid=f"s{n}")]))
                    received = b""
                    while chunk := await stream.receive_some(65536):
                        received += chunk
                    statuses.append(reply_body(received)["status"])

            async with trio.open_nursery() as nursery:
                for n, stream in enumerate(streams):
                    nursery.start_soon(talk, n, stream)
        assert len(statuses) == 2000
        assert set(statuses) <= {"0", "1008"}
        served = statuses.count("0")
        assert 0 < served <= 2000 - statuses.count("1008")
        assert statuses.count("1008") > 0
        assert await stored_count(gw.store) == served
        await assert_still_serving(gw.port)


async def test_a_refused_connection_ends_its_side_and_waits_for_the_clients_close(
    tmp_path: Path,
) -> None:
    # The 1008 comes with the server's end of stream, so a client reading to the end has it
    # at once. A loaded client may write its request seconds later: the server still reads
    # it, because a close that met unread input would reset the connection, and a reset
    # destroys an answer the client has not read yet.
    config = make_config(tmp_path, SMSGW_MAX_CONNECTIONS="1", SMSGW_READ_TIMEOUT="20s")
    async with running_gateway(config) as gw:
        with trio.fail_after(30):
            # Over the cap, the new connection takes the place of the one that has sent
            # nothing yet: that one is refused.
            refused = await trio.open_tcp_stream("127.0.0.1", gw.port)
            while gw.gateway.server.active_connections < 1:  # noqa: ASYNC110 - a count
                await trio.sleep(0.01)
            holder = await trio.open_tcp_stream("127.0.0.1", gw.port)
            received = b""
            while chunk := await refused.receive_some(65536):
                received += chunk
            assert reply_body(received)["status"] == "1008"
            await trio.sleep(1.5)  # past the fixed second the server used to wait
            frame = submit_frame([item(msgid="late")])
            await refused.send_all(frame)
            await trio.sleep(0.3)  # a closed server's reset to the first write would be back
            await refused.send_all(frame)
            await refused.aclose()
            await holder.aclose()
        assert await stored_count(gw.store) == 0


async def test_tls_listener(tmp_path: Path) -> None:
    authority = trustme.CA()
    cert = authority.issue_cert("127.0.0.1")
    cert.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    cert.cert_chain_pems[0].write_to_path(str(tmp_path / "cert.pem"))
    config = make_config(
        tmp_path,
        SMSGW_TLS_CERT=str(tmp_path / "cert.pem"),
        SMSGW_TLS_KEY=str(tmp_path / "key.pem"),
    )
    import ssl

    from smsgw.client import submit

    client_context = ssl.create_default_context()
    authority.configure_trust(client_context)
    async with running_gateway(config) as gw:
        reply = await submit(
            f"127.0.0.1:{gw.port}", APPID, SECRET, [item()], ssl_context=client_context
        )
        assert reply.status == "0"
        # A plain-TCP client does not get through to the protocol.
        try:
            data = await raw_exchange(gw.port, submit_frame([item(msgid="plain")]))
        except trio.BrokenResourceError:
            data = b""
        assert b"B001" not in data
        assert len(await gw.store.history("plain")) == 0
