"""`smsgw serve | send | listen | status | inbox | --version`."""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import sys
import textwrap
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, TypeVar

import attrs
import trio

from smsgw import __version__
from smsgw.banner import banner
from smsgw.client import ClientError, PushItem, ReceiptServer, submit_sync
from smsgw.config import (
    DEMO_APPID,
    DEMO_SECRET,
    SETTINGS,
    TEST_PREFIX,
    Config,
    ConfigError,
    config_error_in,
    exception_in,
    load_config,
)
from smsgw.gateway import Gateway, GatewayInfo, start_store, store_from_config
from smsgw.logs import setup_logging
from smsgw.protocol.framing import LengthStyle
from smsgw.protocol.messages import converter
from smsgw.protocol.status import Status
from smsgw.pusher import encode_item
from smsgw.records import InboundRecord
from smsgw.store.base import MessageHistory, Store
from smsgw.supervisor import Supervisor, WorkerStartFailed

EXIT_CONFIG = 2
T = TypeVar("T")


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_CONFIG
    result: int = args.run(args)
    return result


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="smsgw", description="SMS gateway: accept, store, send, push receipts."
    )
    parser.add_argument("--version", action="version", version=f"smsgw {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    serve = commands.add_parser(
        "serve",
        help="run the gateway (configured by SMSGW_* variables)",
        description="Run the gateway. It is configured by the environment variables below,\n"
        "read once at start; a bad value or an unknown SMSGW_* name stops start-up\n"
        "with one line (exit code 2).",
        epilog=settings_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    serve.set_defaults(run=_serve)

    send = commands.add_parser(
        "send",
        help="submit SMS (A001) and print the B001 reply",
        description="Submit SMS (A001) and print the B001 reply as JSON. Exit 0 when every "
        "item was accepted, 1 when some were not, 3 when the gateway could not be reached.",
    )
    send.add_argument(
        "--server", default="127.0.0.1:9000", help="gateway host:port (default: %(default)s)"
    )
    send.add_argument("--appid", default=DEMO_APPID, help="app id (default: %(default)s)")
    send.add_argument("--secret", default=DEMO_SECRET, help="app secret (default: %(default)s)")
    send.add_argument("--phone", help="one number or several, comma-separated")
    send.add_argument("--message", help="the text")
    send.add_argument("--msgid", help="your id for the message (default: a new random id)")
    send.add_argument(
        "--msgtype",
        type=int,
        choices=(1, 2),
        default=1,
        help="1 notice, 2 code (default: %(default)s)",
    )
    send.add_argument(
        "--sendtime", type=int, help="scheduled time, ms since the epoch (default: now)"
    )
    send.add_argument("--file", help="a JSON file holding the A001 body (instead of the flags)")
    send.add_argument(
        "--binary-length",
        action="store_true",
        help="4-byte length field (default: six decimal digits)",
    )
    send.add_argument(
        "--timeout",
        type=float,
        default=30.0,
        help="seconds to wait for the answer (default: %(default)s)",
    )
    send.set_defaults(run=_send)

    listen = commands.add_parser(
        "listen", help="receive A002/A003 pushes: print each item as a JSON line, acknowledge"
    )
    listen.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default: %(default)s)"
    )
    listen.add_argument(
        "--port", type=int, default=9100, help="port (default: %(default)s; 0: any free port)"
    )
    listen.add_argument(
        "--answer", default="0", help="status to answer (default: %(default)s, acknowledges)"
    )
    listen.add_argument("--silent", action="store_true", help="never answer (test timeouts)")
    listen.set_defaults(run=_listen)

    reads_store = (
        f"Reads the store SMSGW_DB names (default: {Config().db_url}), read-only; "
        "the other SMSGW_* variables are checked as smsgw serve checks them."
    )
    status = commands.add_parser(
        "status",
        help="show a message's state and history",
        description="Print one JSON array: one entry (state, events, parts, pushes) per "
        f"phone the msgid was sent to; exit 1 when nothing matches. {reads_store}",
    )
    status.add_argument("msgid")
    status.add_argument("--appid", help="only this app's message")
    status.add_argument("--phone", help="only the message to this phone (as submitted)")
    status.add_argument(
        "--jsonl", action="store_true", help="one compact JSON object per line instead"
    )
    status.set_defaults(run=_status)

    inbox = commands.add_parser(
        "inbox",
        help="list stored mobile-originated messages (replies), newest first",
        description=f"List stored mobile-originated messages, newest first. {reads_store}",
    )
    inbox.add_argument("--limit", type=int, default=20, help="how many (default: %(default)s)")
    inbox.add_argument("--before", type=int, help="only those with a smaller id (paging)")
    inbox.set_defaults(run=_inbox)
    return parser


# --- serve ---


def settings_help() -> str:
    """Every SMSGW_* variable with its default and meaning, from config.SETTINGS."""
    lines = ["configuration (environment variables):"]
    for setting in SETTINGS:
        lines.append(f"  {setting.name} (default: {_plain(setting.default)})")
        lines.extend(
            textwrap.wrap(
                _plain(setting.meaning), 78, initial_indent=" " * 6, subsequent_indent=" " * 6
            )
        )
    lines += [
        "",
        "Durations take 500ms, 10s, 5m, 1h, 30d or plain seconds. Names starting",
        f"{TEST_PREFIX} are left to test harnesses.",
    ]
    return "\n".join(lines)


def _plain(markdown: str) -> str:
    return markdown.replace("`", "")


def _serve(args: argparse.Namespace) -> int:
    try:
        config = load_config()
        setup_logging(config.log_level, config.log_format)
        if config.workers > 1:
            return trio.run(_supervise_async, config)
        raise_open_files_limit()
        trio.run(_serve_async, config)
    except (ConfigError, WorkerStartFailed, BaseExceptionGroup) as exc:
        failed = exception_in(exc, WorkerStartFailed)
        if failed is not None:
            print(f"smsgw: {failed}: not starting", file=sys.stderr)
            return failed.code if failed.code == EXIT_CONFIG else 1
        return _explain_config_error(exc)
    return 0


async def _supervise_async(config: Config) -> int:
    supervisor = Supervisor(config)
    async with trio.open_nursery() as outer:
        outer.start_soon(_pass_signals_on, supervisor)
        async with trio.open_nursery() as inner:
            info = await inner.start(supervisor.run)
            _announce(config, info)
        outer.cancel_scope.cancel()
    return supervisor.exit_code


async def _pass_signals_on(supervisor: Supervisor) -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for signum in signals:
            if supervisor.shutdown_requested:
                print(f"smsgw: {signal.Signals(signum).name} again: stopping now", flush=True)
            supervisor.shutdown(now=supervisor.shutdown_requested)


def _explain_config_error(exc: BaseException) -> int:
    """Print the one line of the ConfigError `exc` carries and give the exit code; re-raise
    anything else."""
    error = config_error_in(exc)
    if error is None:
        raise exc
    print(f"smsgw: configuration error: {error}", file=sys.stderr)
    return EXIT_CONFIG


async def _serve_async(config: Config) -> None:
    gateway = Gateway(config)
    async with trio.open_nursery() as outer:
        outer.start_soon(stop_on_signals, gateway, outer.cancel_scope)
        async with trio.open_nursery() as inner:
            info = await inner.start(gateway.run)
            _announce(config, info)
        outer.cancel_scope.cancel()


async def stop_on_signals(gateway: Gateway, everything: trio.CancelScope) -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for signum in signals:
            if gateway.shutdown_requested:
                # A second signal: stop waiting for in-flight work. Commits already made stay.
                print(f"smsgw: {signal.Signals(signum).name} again: stopping now", flush=True)
                everything.cancel()
                return
            gateway.shutdown()


def _announce(config: Config, info: GatewayInfo) -> None:
    # One write with its last newline (print() writes `end` separately), so whoever reads
    # the banner line by line gets all of it together.
    sys.stdout.write(banner(config, info))
    sys.stdout.flush()


def raise_open_files_limit() -> None:
    """Each connection is a descriptor: take the hard limit so SMSGW_MAX_CONNECTIONS fits."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


# --- send ---


def _send(args: argparse.Namespace) -> int:
    body: Any
    if args.file:
        try:
            with open(args.file, "rb") as handle:
                body = handle.read()
        except OSError as exc:
            print(f"smsgw send: cannot read {args.file}: {exc.strerror}", file=sys.stderr)
            return EXIT_CONFIG
    else:
        if not args.phone or args.message is None:
            print("smsgw send: give --phone and --message, or --file", file=sys.stderr)
            return EXIT_CONFIG
        item: dict[str, Any] = {
            "phone": args.phone,
            "message": args.message,
            "msgid": args.msgid or uuid.uuid4().hex[:20],
            "msgtype": args.msgtype,
        }
        if args.sendtime is not None:
            item["sendtime"] = args.sendtime
        body = [item]
    style = LengthStyle.BINARY if args.binary_length else LengthStyle.DECIMAL
    try:
        reply = submit_sync(
            args.server, args.appid, args.secret, body, length_style=style, timeout=args.timeout
        )
    except ClientError as exc:
        print(f"smsgw send: {exc}", file=sys.stderr)
        return 3
    print(json.dumps(converter.unstructure(reply), ensure_ascii=False))
    return 0 if reply.status == Status.OK else 1


# --- listen ---


def _listen(args: argparse.Namespace) -> int:
    if not 0 <= args.port <= 65535:
        print(f"smsgw listen: port {args.port} is out of range", file=sys.stderr)
        return EXIT_CONFIG
    code: int = trio.run(_listen_async, args)
    return code


def _print_items(kind: str, items: list[PushItem]) -> None:
    for item in items:
        line = {"kind": kind, **converter.unstructure(item)}
        print(json.dumps(line, ensure_ascii=False), flush=True)


async def _listen_async(args: argparse.Namespace) -> int:
    server = ReceiptServer(_print_items, answer=args.answer, silent=args.silent)
    # The signal receiver first: a SIGTERM right after the banner must not kill us.
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with trio.open_nursery() as nursery:
            try:
                port = await nursery.start(server.run, args.host, args.port)
            except OSError as exc:
                print(
                    f"smsgw listen: cannot listen on {args.host}:{args.port}: {exc}",
                    file=sys.stderr,
                )
                return EXIT_CONFIG
            # stderr: stdout carries only the items' JSON lines.
            print(f"smsgw listen: listening on {args.host}:{port}", file=sys.stderr, flush=True)
            async for _ in signals:
                break
            nursery.cancel_scope.cancel()
    return 0


# --- status ---


def _status(args: argparse.Namespace) -> int:
    try:
        config = load_config()
        histories = trio.run(_query, config, lambda store: store.history(args.msgid, args.appid))
    except (ConfigError, BaseExceptionGroup) as exc:
        return _explain_config_error(exc)
    if args.phone is not None:
        histories = [history for history in histories if history.message.phone == args.phone]
    if not histories:
        phone = f" to phone {args.phone!r}" if args.phone is not None else ""
        print(f"smsgw status: no message with msgid {args.msgid!r}{phone}", file=sys.stderr)
        return 1
    documents = [_history_json(history) for history in histories]
    if args.jsonl:
        lines = [json.dumps(document, ensure_ascii=False) for document in documents]
    else:
        lines = [json.dumps(documents, ensure_ascii=False, indent=2)]
    _print_lines(lines)
    return 0


def _print_lines(lines: Iterable[str]) -> None:
    """Print to stdout, stopping quietly when its reader has gone (`smsgw status X | head`)."""
    try:
        for line in lines:
            print(line)
        sys.stdout.flush()
    except BrokenPipeError:
        # As the Python docs advise (signal module, "Note on SIGPIPE"): point stdout at
        # devnull so the flush at exit does not fail a second time.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())


def _history_json(history: MessageHistory) -> dict[str, Any]:
    """The message row with its events, parts and pushes; each push with its receipt facts
    and the body the merchant gets."""
    data: dict[str, Any] = converter.unstructure(history)
    for shown, push in zip(data.get("pushes", []), history.pushes, strict=True):
        shown["body"] = json.loads(encode_item(push))
    return data


async def _query(config: Config, query: Callable[[Store], Awaitable[T]]) -> T:
    """Run one query against the configured store, read-only."""
    store = store_from_config(config, read_only=True)
    async with trio.open_nursery() as nursery:
        await start_store(nursery, store)
        result = await query(store)
        nursery.cancel_scope.cancel()
    return result


# --- inbox ---


def _inbox(args: argparse.Namespace) -> int:
    if not 1 <= args.limit <= 10_000:
        print("smsgw inbox: --limit must be 1 to 10000", file=sys.stderr)
        return EXIT_CONFIG
    try:
        config = load_config()
        records = trio.run(
            _query, config, lambda store: store.recent_inbound(args.limit, before_id=args.before)
        )
    except (ConfigError, BaseExceptionGroup) as exc:
        return _explain_config_error(exc)
    _print_lines(json.dumps(_inbound_json(record), ensure_ascii=False) for record in records)
    return 0


def _inbound_json(record: InboundRecord) -> dict[str, Any]:
    mo = record.mo
    return {
        "id": record.id,
        "from": mo.sender,
        "to": mo.recipient,
        "text": mo.text,
        "received_at": mo.received_at_ms,
        "carrier": mo.carrier,
        "protocol": mo.protocol,
        "concat": attrs.asdict(mo.concat) if mo.concat else None,
        "extra": dict(mo.extra),
    }
