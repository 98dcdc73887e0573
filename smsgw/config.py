"""The gateway's configuration: every `SMSGW_*` variable parsed once into typed, checked values.

A bad value raises `ConfigError` naming the variable; `smsgw serve` prints that one line and
exits 2. With nothing set the result is the embedded demo (README, Configuration).
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
import string
import tomllib
from collections.abc import Callable, Mapping
from typing import Any, Literal, TypeVar

import attrs
import trio

from smsgw.protocol.framing import MAX_BINARY_LENGTH, LengthStyle, canonical_credential

T = TypeVar("T")

DEMO_APPID = "demo"
DEMO_SECRET = "demo-secret"
CREDENTIAL_WIDTH = 15

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class ConfigError(Exception):
    """A setting is missing or wrong; `str()` is the one line to print."""

    def __init__(self, variable: str, reason: str) -> None:
        super().__init__(f"{variable}: {reason}")
        self.variable = variable
        self.reason = reason


E = TypeVar("E", bound=BaseException)


def exception_in(exc: BaseException, kind: type[E]) -> E | None:
    """The `kind` of exception `exc` is or carries (nurseries wrap errors raised at start-up
    in exception groups), or None."""
    if isinstance(exc, kind):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            if (found := exception_in(inner, kind)) is not None:
                return found
    return None


def config_error_in(exc: BaseException) -> ConfigError | None:
    """The ConfigError an exception is or carries, or None."""
    return exception_in(exc, ConfigError)


@attrs.frozen
class Endpoint:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @classmethod
    def of_sockname(cls, name: Any) -> Endpoint:
        """From a socket's getsockname() (the real port of one bound to port 0)."""
        return cls(str(name[0]), int(name[1]))


@attrs.frozen
class AppConfig:
    appid: str
    secret: str = attrs.field(repr=False)
    receipt_endpoint: Endpoint | None = None
    status_reports: bool = False
    keep_alive: bool = False
    networks: tuple[IPNetwork, ...] = ()
    tps: float | None = None
    push_length_style: LengthStyle = LengthStyle.DECIMAL

    @property
    def key(self) -> str:
        """The form a request's APPID field is compared in (padding rules of docs/protocol.md)."""
        return canonical_credential(self.appid)

    def allows(self, address: str) -> bool:
        if not self.networks:
            return True
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self.networks)


@attrs.frozen
class Config:
    listen: Endpoint = Endpoint("127.0.0.1", 9000)
    db_url: str = "sqlite:///./smsgw.db"
    carrier_url: str = "sim://?fail=0.05&dlr_delay=1"
    apps: tuple[AppConfig, ...] = ()
    demo: bool = False
    max_body: int = 1_048_576
    max_batch: int = 1000
    max_segments: int = 10
    max_schedule: float = 30 * 86400.0
    max_retries: int = 3
    retry_backoff: float = 10.0
    report_timeout: float = 3 * 86400.0
    lease: float = 30.0  # an owner's claims outlive it this long (smsgw.lease)
    retention: float | None = 30 * 86400.0  # None: keep every row forever
    read_timeout: float = 10.0
    idle_timeout: float = 30.0
    max_connections: int = 1024
    max_connections_per_address: int = 256
    auth_fail_limit: int = 10
    auth_fail_app_limit: int = 100
    push_timeout: float = 60.0
    push_attempts: int = 3
    push_backoff: float = 5.0
    shutdown_grace: float = 10.0
    senders: int = 32
    log_level: str = "INFO"
    log_format: Literal["text", "json"] = "text"
    metrics: Endpoint | None = None
    workers: int = 1  # processes (SMSGW_WORKERS; `auto` resolved to the cores here)
    tls_cert: str | None = None
    tls_key: str | None = None

    def app_by_key(self) -> dict[str, AppConfig]:
        return {app.key: app for app in self.apps}


# --- value parsers: each raises ValueError with the reason, `_read` adds the variable name ---

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(text: str) -> float:
    """Seconds from `10`, `10s`, `500ms`, `5m`, `1h`, `30d`."""
    match = _DURATION.match(text)
    if not match:
        raise ValueError(f"expected a duration like 10s, 500ms, 5m, 1h or 30d, got {text!r}")
    return float(match.group(1)) * _DURATION_UNITS[match.group(2) or "s"]


async def open_listeners(
    variable: str, endpoint: Endpoint, *, reuse_port: bool = False
) -> list[trio.SocketListener]:
    """TCP listeners on an endpoint a variable names; a ConfigError naming the variable
    when the address cannot be had (in use, not this machine's, not allowed).

    `reuse_port`: each of several processes opens its own listener on the same port and
    the kernel spreads new connections among them (SO_REUSEPORT, which
    `trio.open_tcp_listeners` cannot set: its options are set before the bind)."""
    try:
        if not reuse_port:
            return await trio.open_tcp_listeners(endpoint.port, host=endpoint.host)
        return await _open_reuse_port_listeners(endpoint)
    except OSError as exc:
        raise ConfigError(variable, f"cannot listen on {endpoint}: {exc.strerror or exc}") from None


LISTEN_BACKLOG = 0xFFFF  # trio's default: the kernel caps it at somaxconn


async def _open_reuse_port_listeners(endpoint: Endpoint) -> list[trio.SocketListener]:
    listeners: list[trio.SocketListener] = []
    for family, kind, proto, _, address in await trio.socket.getaddrinfo(
        endpoint.host, endpoint.port, type=trio.socket.SOCK_STREAM, flags=trio.socket.AI_PASSIVE
    ):
        sock = trio.socket.socket(family, kind, proto)
        try:
            sock.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_REUSEADDR, 1)
            sock.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_REUSEPORT, 1)
            if family == trio.socket.AF_INET6:
                sock.setsockopt(trio.socket.IPPROTO_IPV6, trio.socket.IPV6_V6ONLY, 1)
            await sock.bind(address)
            sock.listen(LISTEN_BACKLOG)
        except OSError:
            sock.close()
            for listener in listeners:
                listener.socket.close()
            raise
        listeners.append(trio.SocketListener(sock))
    return listeners


def parse_endpoint(text: str) -> Endpoint:
    """`host:port` or `[v6]:port`; the port is 0–65535 (0 lets the OS choose)."""
    text = text.strip()
    if text.startswith("["):
        host, sep, port_text = text[1:].partition("]:")
    else:
        host, sep, port_text = text.rpartition(":")
    if not sep or not host or not port_text.isdigit():
        raise ValueError(f"expected host:port, got {text!r}")
    port = int(port_text)
    if port > 65535:
        raise ValueError(f"port {port} is out of range")
    return Endpoint(host, port)


def parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ValueError(f"expected true or false, got {text!r}")


def _int_at_least(minimum: int, maximum: int | None = None) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text.strip())
        except ValueError:
            raise ValueError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise ValueError(f"must be at least {minimum}, got {value}")
        if maximum is not None and value > maximum:
            raise ValueError(f"must be at most {maximum}, got {value}")
        return value

    return parse


def _positive_duration(text: str) -> float:
    value = parse_duration(text)
    if value <= 0:
        raise ValueError(f"must be more than zero, got {text!r}")
    return value


def _retention(text: str) -> float | None:
    if text.strip().lower() == "off":
        return None
    value = parse_duration(text)
    if value < 3600:
        raise ValueError(f"must be at least 1h (or off), got {text!r}")
    return value


# App ids and secrets: what survives a shell, a systemd environment file and SMSGW_APPS's own
# separators (`,` `:` `@`) unquoted, and covers base64 and `secrets.token_urlsafe()`.
CREDENTIAL_CHARS = frozenset(string.ascii_letters + string.digits + "-_.~+=/")
CREDENTIAL_ALPHABET = "A-Z a-z 0-9 - _ . ~ + = /"
CREDENTIAL_RULE = (
    f"1 to {CREDENTIAL_WIDTH} characters from {CREDENTIAL_ALPHABET}, not starting with 0"
)


def _credential(kind: str, value: str, *, secret: bool = False) -> str:
    """An app id or secret checked against CREDENTIAL_RULE. Messages about a secret never
    quote it; the leading-0 rule is the wire's padding (`canonical_credential`): `0123`
    and `123` are one key there, and `000` is opened by an empty field."""
    shown = "" if secret else f" {value!r}"
    if not value:
        raise ValueError(f"{kind} is empty")
    if len(value) > CREDENTIAL_WIDTH:
        raise ValueError(f"{kind}{shown} is longer than {CREDENTIAL_WIDTH} characters")
    if not set(value) <= CREDENTIAL_CHARS:
        hint = " (separate apps with commas)" if ";" in value and secret else ""
        raise ValueError(f"{kind}{shown} has a character outside {CREDENTIAL_ALPHABET}{hint}")
    if value.startswith("0"):
        raise ValueError(
            f"{kind}{shown} starts with 0: on the wire leading 0s are padding "
            "(0123 is 123, 000 is an empty field), so it must start with another character"
        )
    return value


def _network(text: str) -> IPNetwork:
    try:
        return ipaddress.ip_network(text.strip(), strict=False)
    except ValueError:
        raise ValueError(f"{text!r} is not an IP network") from None


def _tps(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"tps must be a number, got {value!r}")
    try:
        tps = float(value)
    except ValueError:
        raise ValueError(f"tps must be a number, got {value!r}") from None
    if tps <= 0:
        raise ValueError(f"tps must be more than zero, got {value!r}")
    return tps


def parse_apps_compact(text: str) -> list[AppConfig]:
    """`appid:secret[@host:port]`, comma-separated."""
    apps = []
    entries = filter(None, (part.strip() for part in text.split(",")))
    for number, entry in enumerate(entries, 1):
        appid, sep, rest = entry.partition(":")
        if not sep:
            # Not quoted: without its colon the entry may well be a secret.
            raise ValueError(f"entry {number} is not appid:secret[@host:port]")
        secret, at, endpoint = rest.rpartition("@") if "@" in rest else (rest, "", "")
        apps.append(
            AppConfig(
                appid=_credential("appid", appid),
                secret=_credential(f"secret of {appid!r}", secret, secret=True),
                receipt_endpoint=parse_endpoint(endpoint) if at else None,
            )
        )
    return apps


_APP_KEYS = {
    "secret",
    "receipt_endpoint",
    "status_reports",
    "keep_alive",
    "networks",
    "tps",
    "push_length",
}


def parse_apps_toml(text: str) -> list[AppConfig]:
    """`[apps.ID]` tables: secret, receipt_endpoint, status_reports, keep_alive, networks,
    tps, push_length ("decimal" | "binary")."""
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"not valid TOML: {exc}") from None
    tables = document.get("apps")
    if not isinstance(tables, dict) or not tables:
        raise ValueError("expected at least one [apps.ID] table")
    apps = []
    for appid, table in tables.items():
        if not isinstance(table, dict):
            raise ValueError(f"apps.{appid} must be a table")
        apps.append(_app_from_table(appid, table))
    return apps


def _app_from_table(appid: str, table: dict[str, Any]) -> AppConfig:
    def typed(key: str, kind: type[T], default: T) -> T:
        value = table.get(key, default)
        if not isinstance(value, kind):
            raise ValueError(f"apps.{appid}.{key} must be a {kind.__name__}")
        return value

    unknown = set(table) - _APP_KEYS
    if unknown:
        raise ValueError(f"apps.{appid}: unknown key(s) {', '.join(sorted(unknown))}")
    if "secret" not in table:
        raise ValueError(f"apps.{appid}.secret is missing")
    endpoint = typed("receipt_endpoint", str, "")
    push_length = typed("push_length", str, "decimal")
    if push_length not in {"decimal", "binary"}:
        raise ValueError(f"apps.{appid}.push_length must be decimal or binary")
    networks = typed("networks", list, [])
    try:
        return AppConfig(
            appid=_credential("appid", appid),
            secret=_credential(f"apps.{appid}.secret", typed("secret", str, ""), secret=True),
            receipt_endpoint=parse_endpoint(endpoint) if endpoint else None,
            status_reports=typed("status_reports", bool, False),
            keep_alive=typed("keep_alive", bool, False),
            networks=tuple(_network(str(network)) for network in networks),
            tps=_tps(table["tps"]) if "tps" in table else None,
            push_length_style=LengthStyle(push_length),
        )
    except ValueError as exc:
        raise ValueError(f"apps.{appid}: {exc}") from None


def _check_unique(apps: list[AppConfig]) -> None:
    # With CREDENTIAL_RULE two ids are one on the wire only when they are equal.
    seen: set[str] = set()
    for app in apps:
        if app.key in seen:
            raise ValueError(f"app {app.appid!r} is defined twice")
        seen.add(app.key)


def redact_url(url: str) -> str:
    """The URL with any password in it (user part, or a `password=` query parameter as libpq
    takes) replaced by `***`, fit for logs and banners."""
    url = _QUERY_PASSWORD.sub(r"\1password=***", url)
    scheme, sep, rest = url.partition("://")
    netloc, slash, tail = rest.partition("/")
    userinfo, at, hostport = netloc.rpartition("@")
    if not sep or not at or ":" not in userinfo:
        return url
    user = userinfo.split(":", 1)[0]
    return f"{scheme}://{user}:***@{hostport}{slash}{tail}"


_QUERY_PASSWORD = re.compile(r"([?&])password=[^&#]*")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _log_level(text: str) -> str:
    level = text.strip().upper()
    if level not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
        raise ValueError(f"expected debug, info, warning, error or critical, got {text!r}")
    return level


def _log_format(text: str) -> str:
    value = text.strip().lower()
    if value not in {"text", "json"}:
        raise ValueError(f"expected text or json, got {text!r}")
    return value


def _read_text(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except OSError as exc:
        raise ValueError(f"cannot read {path!r}: {exc.strerror}") from None


def _readable_file(path: str) -> str:
    _read_text(path)
    return path


MAX_WORKERS = 256


def _workers(text: str) -> int:
    if text.strip().lower() == "auto":
        return available_cores()
    try:
        return _int_at_least(1, MAX_WORKERS)(text)
    except ValueError as exc:
        raise ValueError(f"{exc} (or auto: one per core)") from None


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity, not every core of the host)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


# --- the variables ---


@attrs.frozen
class Setting:
    """One `SMSGW_*` variable. `SETTINGS` is the one list of them: `load_config` reads what it
    names, a name not in it stops start-up, and `smsgw serve --help` and README's table are
    made from it (a test holds README to it)."""

    name: str
    default: str  # as shown: Markdown, `code` for a literal value
    meaning: str  # one line of Markdown
    # The Config attribute the parsed value sets; None for what load_config combines itself
    # (the apps, which depend on each other and on SMSGW_LISTEN).
    field: str | None = None
    parse: Callable[[str], Any] = str.strip


SETTINGS: tuple[Setting, ...] = (
    Setting(
        "SMSGW_LISTEN",
        "`127.0.0.1:9000`",
        "listener `host:port` (`[::1]:9000` for IPv6)",
        "listen",
        parse_endpoint,
    ),
    Setting(
        "SMSGW_DB",
        "`sqlite:///./smsgw.db`",
        "store URL: `sqlite:////absolute/path.db`, or"
        " `postgresql://user:password@host:port/dbname` (see PostgreSQL)",
        "db_url",
    ),
    Setting(
        "SMSGW_CARRIER",
        "`sim://?fail=0.05&dlr_delay=1`",
        "upstream operator URL: `sim://`, `smpp://` or `cmpp://` (see Carriers)",
        "carrier_url",
    ),
    Setting(
        "SMSGW_APPS",
        "demo app",
        "`appid:secret[@host:port]`, comma-separated (`@host:port`: receipt endpoint); "
        "ids and secrets: " + CREDENTIAL_RULE,
    ),
    Setting(
        "SMSGW_APPS_FILE",
        "—",
        "TOML file of per-app settings: `secret`, `receipt_endpoint`, "
        "`status_reports`, `keep_alive`, `networks`, `tps`, `push_length`",
    ),
    Setting(
        "SMSGW_MAX_BODY",
        "`1048576`",
        "largest request body in bytes (`1002` above it)",
        "max_body",
        _int_at_least(64, MAX_BINARY_LENGTH),
    ),
    Setting(
        "SMSGW_MAX_BATCH",
        "`1000`",
        "most deliveries (phones) in one A001 (`1002` above it)",
        "max_batch",
        _int_at_least(1),
    ),
    Setting(
        "SMSGW_MAX_SEGMENTS",
        "`10`",
        "most SMS segments per message (`2003` above it)",
        "max_segments",
        _int_at_least(1, 255),
    ),
    Setting(
        "SMSGW_MAX_SCHEDULE",
        "`30d`",
        "how far ahead `sendtime` may be (`2004` beyond)",
        "max_schedule",
        _positive_duration,
    ),
    Setting(
        "SMSGW_MAX_RETRIES",
        "`3`",
        "further attempts for a notification (msgtype 1) after a failure",
        "max_retries",
        _int_at_least(0, 100),
    ),
    Setting(
        "SMSGW_RETRY_BACKOFF",
        "`10s`",
        "first retry delay (doubles, with jitter)",
        "retry_backoff",
        _positive_duration,
    ),
    Setting(
        "SMSGW_REPORT_TIMEOUT",
        "`3d`",
        "a message still without its delivery report this long after it was sent fails "
        "with stat `UNKNOWN` (A002 status `2`)",
        "report_timeout",
        _positive_duration,
    ),
    Setting(
        "SMSGW_LEASE",
        "`30s`",
        "how long a process's claims outlive it: after this without a renewal, another "
        "process takes over what it held (see Several processes)",
        "lease",
        _positive_duration,
    ),
    Setting(
        "SMSGW_RETENTION",
        "`30d`",
        "finished messages (with their history and receipts) and MOs are deleted this long "
        "after they finished or arrived; at least `1h`, or `off` to keep everything",
        "retention",
        _retention,
    ),
    Setting(
        "SMSGW_READ_TIMEOUT",
        "`10s`",
        "a request frame must arrive within this, or the connection is cut",
        "read_timeout",
        _positive_duration,
    ),
    Setting(
        "SMSGW_IDLE_TIMEOUT",
        "`30s`",
        "keep-alive connections: idle time before closing",
        "idle_timeout",
        _positive_duration,
    ),
    Setting(
        "SMSGW_MAX_CONNECTIONS",
        "`1024`",
        "concurrent connections; a new one over it takes the place of the oldest "
        "connection that has not yet sent a whole frame (that one gets `1008`); only when"
        " all are busy with a request is the new one answered `1008`. A connection "
        "answered `1008` waits for its client to close while descriptors are left for "
        "that (the open-files limit less this and 256), else it is closed at once",
        "max_connections",
        _int_at_least(1),
    ),
    Setting(
        "SMSGW_MAX_CONNECTIONS_PER_ADDRESS",
        "`256`",
        "concurrent connections from one source address, with the same rule among that "
        "address's connections",
        "max_connections_per_address",
        _int_at_least(1),
    ),
    Setting(
        "SMSGW_AUTH_FAIL_LIMIT",
        "`10`",
        "failed authentications per address per minute before `1007`",
        "auth_fail_limit",
        _int_at_least(1),
    ),
    Setting(
        "SMSGW_AUTH_FAIL_APP_LIMIT",
        "`100`",
        "failed authentications per app per minute, counted from outside the app's "
        "`networks` (for an app open to all: from addresses it has not authenticated "
        "from); then those get `1007` for that app",
        "auth_fail_app_limit",
        _int_at_least(1),
    ),
    Setting(
        "SMSGW_PUSH_TIMEOUT",
        "`60s`",
        "wait for a merchant's B002/B003",
        "push_timeout",
        _positive_duration,
    ),
    Setting(
        "SMSGW_PUSH_ATTEMPTS",
        "`3`",
        "sends of one receipt before it is abandoned",
        "push_attempts",
        _int_at_least(1, 100),
    ),
    Setting(
        "SMSGW_PUSH_BACKOFF",
        "`5s`",
        "delay before a failed push is sent again (doubles)",
        "push_backoff",
        _positive_duration,
    ),
    Setting(
        "SMSGW_SHUTDOWN_GRACE",
        "`10s`",
        "time given to in-flight work on SIGTERM",
        "shutdown_grace",
        parse_duration,
    ),
    Setting(
        "SMSGW_SENDERS",
        "`32`",
        "concurrent submits to a carrier without a window (`sim://`; raise it for a slow "
        "carrier: throughput ≈ senders ÷ latency). SMPP runs `window × binds`",
        "senders",
        _int_at_least(1, 4096),
    ),
    Setting(
        "SMSGW_LOG_LEVEL",
        "`info`",
        "`debug`, `info`, `warning`, `error` or `critical`",
        "log_level",
        _log_level,
    ),
    Setting(
        "SMSGW_LOG_FORMAT",
        "`text`",
        "`text`, or `json` for one JSON object per line",
        "log_format",
        _log_format,
    ),
    Setting(
        "SMSGW_TLS_CERT",
        "—",
        "PEM certificate (chain): TLS on the listener, with `SMSGW_TLS_KEY`",
        "tls_cert",
        _readable_file,
    ),
    Setting(
        "SMSGW_TLS_KEY",
        "—",
        "PEM private key of `SMSGW_TLS_CERT`",
        "tls_key",
        _readable_file,
    ),
    Setting(
        "SMSGW_METRICS",
        "off",
        "`host:port` of a plain-HTTP `/metrics` (Prometheus) and `/healthz` (below)",
        "metrics",
        parse_endpoint,
    ),
    Setting(
        "SMSGW_WORKERS",
        "`1`",
        "worker processes (see Workers); `auto`: one per core this process may use, at most"
        " one per SMPP or CMPP bind",
        "workers",
        _workers,
    ),
)

# Variables a test harness sets for itself (SMSGW_TEST_PYZ, SMSGW_TEST_PG_DSN): never the
# gateway's, so never unknown.
PREFIX = "SMSGW_"
TEST_PREFIX = "SMSGW_TEST_"


def check_names(env: Mapping[str, str]) -> None:
    """A ConfigError for the first `SMSGW_*` name that is not a setting (a misspelling would
    otherwise leave its setting on the default without a word), naming the closest one."""
    known = [setting.name for setting in SETTINGS]
    for name in sorted(env):
        if not name.startswith(PREFIX) or name in known or name.startswith(TEST_PREFIX):
            continue
        # Compared without the prefix every name shares, which would make all look close.
        close = difflib.get_close_matches(
            name.removeprefix(PREFIX), [k.removeprefix(PREFIX) for k in known], n=1
        )
        hint = f"did you mean {PREFIX}{close[0]}?" if close else "no such setting"
        raise ConfigError(name, f"unknown variable, {hint} (`smsgw serve --help` lists them)")


def load_config(env: Mapping[str, str] | None = None) -> Config:
    """Read every `SMSGW_*` variable of `env` (default: the process environment)."""
    env = os.environ if env is None else env
    check_names(env)
    defaults = Config()
    values: dict[str, Any] = {}

    def read(name: str, field: str, parse: Callable[[str], Any]) -> None:
        raw = env.get(name)
        if raw is None or raw.strip() == "":
            return
        try:
            values[field] = parse(raw)
        except ValueError as exc:
            raise ConfigError(name, str(exc)) from None

    for setting in SETTINGS:
        if setting.field is not None:
            read(setting.name, setting.field, setting.parse)

    if ("tls_cert" in values) != ("tls_key" in values):
        missing = "SMSGW_TLS_KEY" if "tls_cert" in values else "SMSGW_TLS_CERT"
        raise ConfigError(missing, "TLS needs both SMSGW_TLS_CERT and SMSGW_TLS_KEY")

    apps: list[AppConfig] = []
    read("SMSGW_APPS", "_compact", parse_apps_compact)
    apps.extend(values.pop("_compact", []))
    read("SMSGW_APPS_FILE", "_file", _read_text)
    if "_file" in values:
        try:
            apps.extend(parse_apps_toml(values.pop("_file")))
        except ValueError as exc:
            raise ConfigError("SMSGW_APPS_FILE", str(exc)) from None
    try:
        _check_unique(apps)
    except ValueError as exc:
        raise ConfigError("SMSGW_APPS", str(exc)) from None
    listen: Endpoint = values.get("listen", defaults.listen)
    if not apps:
        if not _is_loopback(listen.host):
            raise ConfigError(
                "SMSGW_APPS",
                "required when SMSGW_LISTEN is not a loopback address "
                "(the demo app is for loopback only)",
            )
        apps = [AppConfig(appid=DEMO_APPID, secret=DEMO_SECRET)]
        values["demo"] = True
    values["apps"] = tuple(apps)
    if "workers" in values:
        values["workers"] = _workers_for_carrier(
            values["workers"], values.get("carrier_url", defaults.carrier_url), env
        )
    return attrs.evolve(defaults, **values)


def _workers_for_carrier(workers: int, carrier_url: str, env: Mapping[str, str]) -> int:
    """Each worker needs its own share of the carrier (SMPP, CMPP: a bind at least): `auto`
    is capped there, a number past it is an error."""
    from smsgw.carriers import divisions  # the carriers import this module

    try:
        most = divisions(carrier_url)
    except ValueError:
        return workers  # the gateway names the bad URL when it builds the carrier
    if most is None or workers <= most:
        return workers
    if env.get("SMSGW_WORKERS", "").strip().lower() == "auto":
        return most
    raise ConfigError(
        "SMSGW_WORKERS",
        f"{workers} workers need at least {workers} binds (one each), the carrier has "
        f"binds={most}: raise binds or lower SMSGW_WORKERS",
    )
