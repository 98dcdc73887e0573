"""The ceiling for any Trio server on this machine: read one request frame, write a fixed
B001, close. No parsing beyond the length, no store. `python bench/baseline_server.py`
prints "listening on 127.0.0.1:PORT" and serves until killed."""

from __future__ import annotations

import trio

REPLY_BODY = b'{"status":"0","results":[{"msgid":"m","phone":"8613800138000","status":"0"}]}'
REPLY = b"%06dB001" % len(REPLY_BODY) + REPLY_BODY
HEADER = 6 + 4 + 15 + 15


async def handle(stream: trio.SocketStream) -> None:
    try:
        with trio.fail_after(10):
            data = bytearray()
            while len(data) < HEADER or len(data) < HEADER + int(data[:6]):
                chunk = await stream.receive_some(65536)
                if not chunk:
                    return
                data += chunk
            await stream.send_all(REPLY)
    except (trio.TooSlowError, trio.BrokenResourceError, ValueError):
        pass
    finally:
        await stream.aclose()


async def main() -> None:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    print(f"listening on 127.0.0.1:{port}", flush=True)
    await trio.serve_listeners(handle, listeners)


if __name__ == "__main__":
    trio.run(main)
