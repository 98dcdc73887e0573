import datetime

import pytest

from smsgw.carriers.cmpp import auth
from smsgw.carriers.cmpp.codec import CmppVersion, ConnectResp, decode_pdu, encode_pdu


def test_authenticator_source_known_answer() -> None:
    # Computed and decoded by tshark (see the CMPP notes).
    assert (
        auth.authenticator_source("901234", "secret", 1130120000).hex()
        == "6e6ccc33a11ae2f568dee99bdf4e785b"
    )
    assert auth.authenticator_source("901234", b"secret", 1130120000) == (
        auth.authenticator_source("901234", "secret", 1130120000)
    )


def test_the_timestamp_is_hashed_as_ten_zero_padded_digits() -> None:
    # 01-02 03:04:05 is the u32 102030405: nine digits on the wire, ten in the hash.
    import hashlib

    expected = hashlib.md5(b"901234" + bytes(9) + b"secret" + b"0102030405").digest()
    assert auth.authenticator_source("901234", "secret", 102030405) == expected
    moment = datetime.datetime(2026, 1, 2, 3, 4, 5)
    assert auth.timestamp_of(moment) == 102030405


def test_connect_request_and_the_ismg_check() -> None:
    moment = datetime.datetime(2026, 11, 30, 12, 0, 0)
    request = auth.connect_request("901234", "secret", moment, CmppVersion.V20)
    assert request.timestamp == 1130120000
    assert request.version == CmppVersion.V20
    assert request.authenticator_source.hex() == "6e6ccc33a11ae2f568dee99bdf4e785b"
    assert auth.check_authenticator_source(request, "secret")
    assert not auth.check_authenticator_source(request, "wrong")


@pytest.mark.parametrize("version", [CmppVersion.V20, CmppVersion.V30])
def test_authenticator_ismg_hashes_the_status_at_its_wire_width(version: CmppVersion) -> None:
    import hashlib

    request = auth.connect_request("901234", "secret", datetime.datetime(2026, 11, 30, 12))
    response = auth.connect_response(request, 0, "secret", version)
    width = version.status_length
    assert (
        response.authenticator_ismg
        == hashlib.md5(bytes(width) + request.authenticator_source + b"secret").digest()
    )
    assert response.sequence_number == request.sequence_number
    # It survives the wire and checks out on the SP's side; a wrong one only fails the check.
    received = decode_pdu(encode_pdu(response, version), version)
    assert isinstance(received, ConnectResp)
    assert auth.check_authenticator_ismg(received, request, "secret", version)
    assert not auth.check_authenticator_ismg(received, request, "other", version)
    assert not auth.check_authenticator_ismg(received, request, "secret", version.other)


def test_a_refusal_carries_no_authenticator() -> None:
    request = auth.connect_request("901234", "wrong", datetime.datetime(2026, 11, 30, 12))
    response = auth.connect_response(request, 3, "secret", CmppVersion.V30)
    assert (response.status, response.authenticator_ismg) == (3, bytes(16))


def test_bad_inputs() -> None:
    with pytest.raises(ValueError, match="MMDDHHMMSS"):
        auth.authenticator_source("901234", "secret", 10_000_000_000)
    with pytest.raises(ValueError, match="6 octets"):
        auth.authenticator_source("9012345", "secret", 1)
    # A CONNECT whose fields cannot have been made by the rule simply fails the check.
    request = auth.connect_request("901234", "secret", datetime.datetime(2026, 1, 1))
    from attrs import evolve

    assert not auth.check_authenticator_source(evolve(request, timestamp=1 << 40), "secret")
