"""The connection caps, without sockets: who is shed, who is refused."""

from __future__ import annotations

from smsgw.admission import Admission, Slot


def admitted(admission: Admission, peer: str) -> Slot:
    slot = admission.admit(peer)
    assert slot is not None
    return slot


def test_over_the_per_address_cap_the_addresss_oldest_waiting_connection_is_shed() -> None:
    admission = Admission(max_connections=100, max_per_address=2)
    first = admitted(admission, "10.0.0.1")
    second = admitted(admission, "10.0.0.1")
    other = admitted(admission, "10.0.0.2")
    third = admitted(admission, "10.0.0.1")
    assert first.shed and first.scope.cancel_called
    assert not second.shed and not other.shed and not third.shed
    assert admission.active == 3


def test_at_the_global_cap_the_oldest_waiting_connection_anywhere_is_shed() -> None:
    admission = Admission(max_connections=2, max_per_address=10)
    working = admitted(admission, "10.0.0.1")
    admission.frame_received(working)  # sent a whole frame: never shed
    idle = admitted(admission, "10.0.0.2")
    newcomer = admitted(admission, "10.0.0.3")
    assert idle.shed and not working.shed and not newcomer.shed
    admission.frame_received(newcomer)
    assert admission.admit("10.0.0.4") is None  # everyone is working: refused
    assert admission.active == 2


def test_release_frees_the_slot_once() -> None:
    admission = Admission(max_connections=1, max_per_address=1)
    slot = admitted(admission, "10.0.0.1")
    assert admitted(admission, "10.0.0.1") is not slot  # `slot` was shed to make room
    admission.release(slot)  # its handler ends later: nothing to free twice
    assert admission.active == 1
    assert admission.shed_count == 1


def test_a_connection_shed_as_its_frame_arrives_reports_it_harmlessly() -> None:
    """Shed between its read and its report of the frame (the cancellation reaches the
    handler only at its next checkpoint): the report and the release change nothing."""
    admission = Admission(max_connections=1, max_per_address=1)
    shed = admitted(admission, "10.0.0.1")
    newcomer = admitted(admission, "10.0.0.1")
    assert shed.shed
    admission.frame_received(shed)
    admission.release(shed)
    assert admission.active == 1
    assert not newcomer.shed
    admission.frame_received(newcomer)
    assert admission.admit("10.0.0.1") is None  # the newcomer is working: refused
    admission.release(newcomer)
    assert admission.active == 0
    assert admitted(admission, "10.0.0.1") is not None
