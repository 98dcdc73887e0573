"""The receipt text's fast path (the Appendix B layout in one match) gives exactly what the
general, any-layout parse gives."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from smsgw.carriers.smpp import receipt
from smsgw.carriers.smpp.receipt import parse_receipt_text

KEYS = ("id", "sub", "dlvrd", "submit date", "done date", "stat", "err")

# Values as SMSCs write them, and nasty ones: empty, key look-alikes, non-ASCII digits.
word = st.one_of(
    st.text(alphabet="0123456789abcdefABCDEF", max_size=12),
    st.sampled_from(["", "DELIVRD", "undeliv", "id:7", "stat:", "²", "٣", "text:x", ":"]),
    st.text(alphabet=st.characters(blacklist_categories=("Z", "Cc")), max_size=8),
)


@given(st.lists(word, min_size=7, max_size=7), st.one_of(st.none(), st.text(max_size=40)))
def test_standard_layout_parses_as_the_general_parser_does(
    values: list[str], body: str | None
) -> None:
    text = " ".join(f"{key}:{value}" for key, value in zip(KEYS, values, strict=True))
    if body is not None:
        text += f" text:{body}"
    assert receipt._STANDARD.fullmatch(text) is not None
    assert receipt._fields(text) == receipt._general_fields(text)


@given(st.text(max_size=200))
def test_any_text_parses_as_the_general_parser_does(text: str) -> None:
    assert receipt._fields(text) == receipt._general_fields(text)


def test_typical_receipt_through_the_fast_path() -> None:
    text = (
        "id:0000007B sub:001 dlvrd:001 submit date:2401011200 done date:2401011201 "
        "stat:delivrd err:000 text:Hello  world "
    )
    parsed = parse_receipt_text(text)
    assert (parsed.message_id, parsed.submitted, parsed.delivered) == ("0000007B", 1, 1)
    assert (parsed.stat, parsed.err, parsed.text) == ("DELIVRD", "000", "Hello  world ")
    assert (parsed.submit_date, parsed.done_date) == ("2401011200", "2401011201")


def test_a_digit_that_is_not_a_number_is_none_not_a_crash() -> None:
    parsed = parse_receipt_text("id:1 sub:² dlvrd:³ stat:DELIVRD")
    assert (parsed.submitted, parsed.delivered) == (None, None)
