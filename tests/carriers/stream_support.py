"""Feeding a PDU stream (`smsgw.sansio.LengthPrefixedStream`: the SMPP and CMPP
connections) in pieces, for the codec tests of both."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, TypeVar

from smsgw.sansio import NEED_DATA, LengthPrefixedStream

EventT = TypeVar("EventT")


def drain(conn: LengthPrefixedStream[EventT, Any]) -> list[EventT]:
    """Every complete PDU the connection holds; fails on any protocol error."""
    out: list[EventT] = []
    for _ in range(10_000):
        event = conn.next_event()
        if event is NEED_DATA:
            return out
        out.append(event)
    raise AssertionError("next_event never returned NEED_DATA")


def feed_in_pieces(
    conn: LengthPrefixedStream[EventT, Any], data: bytes, sizes: Iterable[int]
) -> list[EventT]:
    """Every PDU of ``data``, fed in pieces of these sizes (while any of ``data`` is left;
    what the sizes do not cover comes last), draining after each piece."""
    out: list[EventT] = []
    position = 0
    for size in sizes:
        if position >= len(data):
            break
        conn.receive_data(data[position : position + size])
        position += size
        out.extend(drain(conn))
    conn.receive_data(data[position:])
    out.extend(drain(conn))
    return out
