"""A bare CMPP SP client on the sans-IO codec, for driving the ISMG simulator in tests, and
`blast`, the raw client whose rate is the simulator's own capacity in benchmarks."""

from __future__ import annotations

import datetime
import time
from typing import TypeVar

import attrs
import trio

from smsgw.carriers.cmpp import auth, codec
from smsgw.carriers.cmpp.codec import NEED_DATA, CmppConnection, CmppVersion, Pdu
from tests.smsc_process import BlastResult

from .server import DEFAULT_SECRET, DEFAULT_SP_ID

PduT = TypeVar("PduT", bound=Pdu)


class SpClient:
    """One connection to an ISMG. PDUs that arrive while waiting for something else are
    kept in order in ``inbox`` for `expect`."""

    def __init__(self, stream: trio.abc.Stream, version: CmppVersion = CmppVersion.V30) -> None:
        self.stream = stream
        self.conn = CmppConnection(version)
        self.inbox: list[Pdu] = []
        self.connect: codec.Connect | None = None
        self._send_lock = trio.Lock()  # the reader may answer while another task submits

    @classmethod
    async def open(
        cls, port: int, version: CmppVersion = CmppVersion.V30, host: str = "127.0.0.1"
    ) -> SpClient:
        return cls(await trio.open_tcp_stream(host, port), version)

    async def aclose(self) -> None:
        with trio.move_on_after(1) as cleanup:
            cleanup.shield = True
            await self.stream.aclose()

    async def send(self, pdu: PduT) -> PduT:
        """Send a request with a fresh Sequence_Id (a response as it is); returns it."""
        if pdu.is_response:
            await self.send_bytes(self.conn.send(pdu))
            return pdu
        numbered, data = self.conn.send_request(pdu)
        await self.send_bytes(data)
        return numbered

    async def send_bytes(self, data: bytes) -> None:
        async with self._send_lock:
            await self.stream.send_all(data)

    async def receive(self, timeout: float = 5.0) -> Pdu | None:
        """The next PDU off the wire (not the inbox), or None at EOF."""
        with trio.fail_after(timeout):
            while True:
                event = self.conn.next_event()
                if event is not NEED_DATA:
                    return event
                data = await self.stream.receive_some(65536)
                if not data:
                    return None
                self.conn.receive_data(data)

    async def expect(self, cls: type[PduT], timeout: float = 5.0, **fields: object) -> PduT:
        """The first PDU of this class (with these field values), from the inbox or the
        wire; the others read meanwhile stay in the inbox."""
        with trio.fail_after(timeout):
            while True:
                for index, pdu in enumerate(self.inbox):
                    if isinstance(pdu, cls) and all(
                        getattr(pdu, name) == value for name, value in fields.items()
                    ):
                        del self.inbox[index]
                        return pdu
                pdu_or_eof = await self.receive(timeout)
                if pdu_or_eof is None:
                    raise EOFError(f"the ISMG closed the connection before a {cls.__name__}")
                self.inbox.append(pdu_or_eof)

    async def request(self, pdu: Pdu, timeout: float = 5.0) -> Pdu:
        """Send a request and wait for the response with its Sequence_Id."""
        numbered = await self.send(pdu)
        response_class = codec.PDU_CLASSES[numbered.command_id | 0x80000000]
        return await self.expect(response_class, timeout, sequence_number=numbered.sequence_number)

    async def login(
        self,
        sp_id: str = DEFAULT_SP_ID,
        secret: str = DEFAULT_SECRET,
        version_octet: int | None = None,
    ) -> codec.ConnectResp:
        connect = auth.connect_request(sp_id, secret, datetime.datetime.now(), self.conn.version)
        if version_octet is not None:
            connect = attrs.evolve(connect, version=version_octet)
        self.connect = connect
        response = await self.request(connect)
        assert isinstance(response, codec.ConnectResp)
        return response

    async def submit(
        self, dest: str = "8613800138000", content: bytes = b"hello", **fields: object
    ) -> codec.SubmitResp:
        fields.setdefault("msg_src", DEFAULT_SP_ID)
        submit = codec.Submit(dest_terminal_ids=(dest,), msg_content=content, **fields)  # type: ignore[arg-type]
        response = await self.request(submit)
        assert isinstance(response, codec.SubmitResp)
        return response

    async def answer(self, deliver: codec.Deliver, result: int = 0) -> None:
        await self.send(codec.response_for(deliver, result=result))


async def blast(
    port: int,
    *,
    count: int,
    window: int = 16,
    version: CmppVersion = CmppVersion.V30,
    host: str = "127.0.0.1",
    sp_id: str = DEFAULT_SP_ID,
    secret: str = DEFAULT_SECRET,
    registered_delivery: int = 0,
    timeout: float = 60.0,
) -> BlastResult:
    """``count`` one-destination SUBMITs with ``window`` unanswered at most, on one link;
    reports (if asked for) are answered. The rate is the ISMG's capacity for one link."""
    client = await SpClient.open(port, version, host)
    conn = client.conn
    ok = failed = sent = 0
    room = trio.Event()  # set when responses have freed some of the window
    template = codec.encode_pdu(
        codec.Submit(
            dest_terminal_ids=("8613800138000",),
            msg_src=sp_id,
            registered_delivery=registered_delivery,
            msg_content=b"benchmark",
        ),
        version,
    )

    async def read() -> None:
        # Everything one read brings is handled before the next, and its answers go out
        # in one write: the client should cost the ISMG as little as it can.
        nonlocal ok, failed, room
        while ok + failed < count:
            answers: list[bytes] = []
            while (pdu := conn.next_event()) is not NEED_DATA:
                if isinstance(pdu, codec.SubmitResp):
                    if pdu.result == 0:
                        ok += 1
                    else:
                        failed += 1
                    room.set()
                elif isinstance(pdu, codec.Deliver):
                    answers.append(conn.send(codec.response_for(pdu)))
                elif isinstance(pdu, codec.ActiveTest):
                    answers.append(
                        conn.send(codec.ActiveTestResp(sequence_number=pdu.sequence_number))
                    )
            if answers:
                await client.send_bytes(b"".join(answers))
            if ok + failed >= count:
                break
            data = await client.stream.receive_some(65536)
            if not data:
                raise EOFError("the ISMG closed the link during the blast")
            conn.receive_data(data)

    try:
        with trio.fail_after(timeout):
            response = await client.login(sp_id, secret)
            if response.status != 0:
                raise RuntimeError(f"login refused: {response.status}")
            started = time.perf_counter()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(read)
                while sent < count:
                    # As many SUBMITs as the window has room for, in one write.
                    batch = min(window - (sent - ok - failed), count - sent)
                    if batch <= 0:
                        room = trio.Event()
                        await room.wait()
                        continue
                    await client.send_bytes(
                        b"".join(conn.number_request(template)[1] for _ in range(batch))
                    )
                    sent += batch
            seconds = time.perf_counter() - started
    finally:
        await client.aclose()
    return BlastResult(count, ok, failed, seconds, count / seconds if seconds > 0 else 0.0)
