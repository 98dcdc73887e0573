"""The status codes of the merchant protocol (docs/protocol.md)."""

from enum import StrEnum


class Status(StrEnum):
    OK = "0"
    MALFORMED_FRAME = "1001"
    BODY_TOO_LARGE = "1002"
    BAD_BODY = "1003"
    UNKNOWN_COMMAND = "1004"
    AUTH_FAILED = "1005"
    SOURCE_NOT_ALLOWED = "1006"
    RATE_LIMITED = "1007"
    BUSY = "1008"
    MIXED = "2000"
    INVALID_ITEM = "2001"
    MESSAGE_TOO_LONG = "2003"
    SENDTIME_TOO_FAR = "2004"
    INTERNAL_ERROR = "9999"
