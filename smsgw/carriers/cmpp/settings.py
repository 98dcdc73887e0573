"""The CMPP carrier's settings: ``cmpp://SP_ID:SHARED_SECRET@host:port?param=value&...``.

Every parameter but ``src_id`` is optional; the defaults are shown. Values are
percent-decoded (``%26`` for ``&``, ``%40`` for ``@`` in the secret). A bad value raises
ValueError naming the parameter; no message ever repeats the shared secret.

- ``host`` is required; ``port`` defaults to 7890 (the ISMG's long-connection port).
  ``SP_ID`` (the user part, at most 6 characters) is the Source_Addr of CONNECT and the
  Msg_src of every SUBMIT; ``SHARED_SECRET`` (the password part) signs the CONNECT.
- ``version`` ``3.0``: the protocol version, ``3.0`` or ``2.0`` (the layouts differ; the
  ISMG's CONNECT_RESP version is only logged when it differs).
- ``src_id`` (required, at most 21 characters): the Src_Id of every SUBMIT, the SP's
  service code or a long number starting with it; handsets see it as the sender.
- ``service_id`` ``""`` (at most 10): the Service_Id of every SUBMIT.
- ``registered_delivery`` 1: ask for status reports (the carrier then `gives_reports`);
  0: never (accepted by the ISMG is final).
- ``fee_user_type`` 2 (0 the destination pays, 1 the source, 2 the SP, 3 the
  ``fee_terminal_id``), ``fee_terminal_id`` ``""``, ``fee_type`` ``01`` (free; ``02`` per
  message, ``03`` monthly, two characters), ``fee_code`` ``000000`` (in fen, six digits).
- ``window`` 16: SUBMITs outstanding per connection (the spec's W; 1..1000).
- ``tps`` 0: most SUBMITs per second per connection, evenly spaced (0 = unlimited).
- ``binds`` 1: connections per carrier (1..64), each logged in with its own CONNECT.
- ``active_test`` 180: seconds a connection may stay idle before an ACTIVE_TEST (the
  spec's C; 0 = never); ``active_test_timeout`` 60: seconds to wait for its answer before
  sending another (T); ``active_test_tries`` 3: unanswered ones in a row before the
  connection is dropped and opened again (N).
- ``response_timeout`` 60: seconds to wait for a SUBMIT_RESP (the spec's T; the submit is
  then in doubt) or TERMINATE_RESP, and for a stalled write.
- ``bind_timeout`` 10: seconds for the TCP connect plus the CONNECT_RESP.
- ``bind_wait`` 5: seconds a submit waits for a logged-in connection before failing
  TEMPORARY.
- ``reconnect_min`` 1 / ``reconnect_max`` 60: the reconnect backoff (doubles per failed
  login or lost connection, with jitter, capped; back to reconnect_min once a connection has
  stayed up 10 s).
- ``throttle_pause`` 1: seconds a connection stops submitting after Result 8 (flow
  control); its rate is also halved, and recovers while no more come.
"""

from __future__ import annotations

import attrs

from smsgw.carriers.cmpp.codec import CmppVersion
from smsgw.carriers.link.settings import check_endpoint, check_link_settings
from smsgw.carriers.url import (
    check_non_negative,
    check_positive,
    check_range,
    parameter_error,
    parse_carrier_url,
    parse_values,
)

__all__ = ["CMPP_PARAMETERS", "CmppConfig", "parse_cmpp_url"]

DEFAULT_PORT = 7890

CMPP_PARAMETERS = (
    "version",
    "src_id",
    "service_id",
    "registered_delivery",
    "fee_user_type",
    "fee_terminal_id",
    "fee_type",
    "fee_code",
    "window",
    "tps",
    "binds",
    "active_test",
    "active_test_timeout",
    "active_test_tries",
    "response_timeout",
    "bind_timeout",
    "bind_wait",
    "reconnect_min",
    "reconnect_max",
    "throttle_pause",
)

_VERSIONS = {"3.0": CmppVersion.V30, "2.0": CmppVersion.V20}


def _problem(name: str, message: str) -> ValueError:
    return parameter_error("cmpp", name, message)


def _check_text(name: str, value: str, max_chars: int, *, show: bool = True) -> None:
    shown = f" {value!r}" if show else ""
    if not value.isascii() or not value.isprintable():
        raise _problem(name, f"must be printable ASCII, got{shown or ' other characters'}")
    if len(value) > max_chars:
        raise _problem(name, f"is longer than {max_chars} characters{shown and ':' + shown}")


@attrs.frozen(kw_only=True)
class CmppConfig:
    """The validated parameters (module docstring). ``secret`` never shows in repr."""

    host: str
    port: int = DEFAULT_PORT
    sp_id: str
    secret: str = attrs.field(default="", repr=False)
    version: CmppVersion = CmppVersion.V30
    src_id: str
    service_id: str = ""
    registered_delivery: int = 1
    fee_user_type: int = 2
    fee_terminal_id: str = ""
    fee_type: str = "01"
    fee_code: str = "000000"
    window: int = 16
    tps: float = 0.0
    binds: int = 1
    active_test: float = 180.0
    active_test_timeout: float = 60.0
    active_test_tries: int = 3
    response_timeout: float = 60.0
    bind_timeout: float = 10.0
    bind_wait: float = 5.0
    reconnect_min: float = 1.0
    reconnect_max: float = 60.0
    throttle_pause: float = 1.0

    def __attrs_post_init__(self) -> None:
        check_endpoint("cmpp", self.host, self.port, usage="cmpp://SP_ID:SECRET@host:port")
        if not self.sp_id:
            raise _problem("sp_id", "is required (cmpp://SP_ID:SECRET@host:port)")
        _check_text("sp_id", self.sp_id, 6)
        try:
            self.secret.encode("utf-8")
        except UnicodeEncodeError:
            raise _problem("secret", "must be text") from None
        if not self.src_id:
            raise _problem("src_id", "is required (the SP's service code, e.g. src_id=106900)")
        _check_text("src_id", self.src_id, 21)
        _check_text("service_id", self.service_id, 10)
        _check_text("fee_terminal_id", self.fee_terminal_id, self.version.terminal_id_length)
        if self.registered_delivery not in (0, 1):
            raise _problem("registered_delivery", f"must be 0 or 1, got {self.registered_delivery}")
        check_range("cmpp", "fee_user_type", self.fee_user_type, 0, 3)
        if len(self.fee_type) != 2 or not self.fee_type.isdigit():
            raise _problem("fee_type", f"must be two digits (01, 02, 03), got {self.fee_type!r}")
        if not 1 <= len(self.fee_code) <= 6 or not self.fee_code.isdigit():
            raise _problem("fee_code", f"must be up to six digits (fen), got {self.fee_code!r}")
        check_non_negative("cmpp", "active_test", self.active_test)
        check_positive("cmpp", "active_test_timeout", self.active_test_timeout)
        check_range("cmpp", "active_test_tries", self.active_test_tries, 1, 100)
        check_link_settings("cmpp", self)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def gives_reports(self) -> bool:
        return self.registered_delivery == 1


_INTS = ("registered_delivery", "fee_user_type", "window", "binds", "active_test_tries")
_FLOATS = (
    "tps",
    "active_test",
    "active_test_timeout",
    "response_timeout",
    "bind_timeout",
    "bind_wait",
    "reconnect_min",
    "reconnect_max",
    "throttle_pause",
)
_TEXTS = ("src_id", "service_id", "fee_terminal_id", "fee_type", "fee_code")


def parse_cmpp_url(url: str) -> CmppConfig:
    """Parse and validate a ``cmpp://`` URL; ValueError names the bad part."""
    parts = parse_carrier_url(
        url, "cmpp", CMPP_PARAMETERS, usage="cmpp://SP_ID:SECRET@host:port?src_id=..."
    )
    raw = parts.params
    values = parse_values("cmpp", raw, ints=_INTS, floats=_FLOATS, texts=_TEXTS)
    if "version" in raw:
        version = _VERSIONS.get(raw["version"].strip())
        if version is None:
            raise _problem("version", f"must be 3.0 or 2.0, got {raw['version']!r}")
        values["version"] = version
    values.setdefault("src_id", "")
    return CmppConfig(
        host=parts.host,
        port=DEFAULT_PORT if parts.port is None else parts.port,
        sp_id=parts.username,
        secret=parts.password,
        **values,
    )
