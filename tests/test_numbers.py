"""Numbers on the wire (billing rules section 1): one strict parser, ``parse_decimal``, for
amounts and prices; quantities are JSON integers up to ``MAX_QUANTITY``. Python's ``Decimal()``
and ``int()`` accept several spellings the contract refuses; none may get through."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from billing.config import ConfigError
from billing.events import (
    MAX_QUANTITY,
    MONEY_LIMIT,
    InvalidEvent,
    normalize_input,
    parse_decimal,
    to_money,
    unknown_fields,
)
from billing.pricebook import pricebook_from_mapping

# Each is refused for an amount, a price and (as a string) a quantity.
REFUSED_SPELLINGS = [
    "0_90", "5_000", "1_000.00",  # underscores: Decimal() reads 90, 5000
    # other scripts' digits (Arabic-Indic 3, full-width 12, Devanagari 12, Arabic-Indic 5, the
    # superscript 2): Decimal() reads the first four as 3, 12, 12, 12.5
    "\u0663", "\uff11\uff12", "\u0967\u0968", "12.\u0665", "\u00b2",
    " 12", "12 ", "1 2", "12\n", "\t1", "12\u00a0",  # spaces, inside or around
    "1e30", "1E3", "1e-3", "12.5e0",  # exponents
    "NaN", "nan", "sNaN", "-NaN", "Infinity", "-Infinity", "inf", "Inf",
    "+5", "+0.5", "--5", "-+5",  # a plus sign, or two signs
    "", ".", "-", "-.", "1.2.3", "1..2", "12,50", "1,000", "$12", "12USD", "0x10", "abc",
]
REFUSED_VALUES = [1.5, 0.0, float("nan"), float("inf"), True, False, None, [], {}, b"12",
                  Decimal("NaN"), Decimal("Infinity"), Decimal("-Infinity"), Decimal("sNaN")]


@pytest.mark.parametrize("value", [*REFUSED_SPELLINGS, *REFUSED_VALUES])
def test_an_amount_refuses_what_is_not_a_plain_decimal(value: Any) -> None:
    with pytest.raises(InvalidEvent) as refused:
        to_money(value, "top_up_amount")
    assert refused.value.field == "top_up_amount"
    assert refused.value.reason.startswith("top_up_amount")
    assert '"12.50"' in refused.value.reason or "finite" in refused.value.reason


@pytest.mark.parametrize("value", [*REFUSED_SPELLINGS, *REFUSED_VALUES, "-1", "-0.20", "-0"])
def test_a_price_refuses_what_is_not_a_plain_non_negative_decimal(value: Any) -> None:
    with pytest.raises(ConfigError) as refused:
        pricebook_from_mapping({"products": {"my-model": {"input_tokens": value}}}, "prices.json")
    assert "prices.json: my-model.input_tokens: price" in str(refused.value)


@pytest.mark.parametrize("value", [*REFUSED_SPELLINGS, "12", "0", "-1", 1.0, 1.5, True, None,
                                   Decimal("12")])
def test_a_quantity_must_be_a_json_integer(value: Any) -> None:
    with pytest.raises(InvalidEvent) as refused:
        normalize_input(usage({"input_tokens": value}))
    assert refused.value.field == "quantities.input_tokens"


@pytest.mark.parametrize(("value", "expected"), [
    ("12.5", "12.500000"),
    ("12.500000", "12.500000"),
    ("-3", "-3.000000"),
    ("0", "0.000000"),
    (0, "0.000000"),
    (12, "12.000000"),
    ("0.000001", "0.000001"),
    ("007.10", "7.100000"),
    ("12.", "12.000000"),  # digits, at most one ".", at least one digit
    (".5", "0.500000"),
    ("-.5", "-0.500000"),
    ("-0", "0.000000"),  # never a negative zero: Avro has none, so JSON must not either
    ("-0.000", "0.000000"),
    (Decimal("-0"), "0.000000"),
    (Decimal("12.5"), "12.500000"),
    (Decimal("1E+2"), "100.000000"),  # a Decimal instance is a number, not a spelling
    ("999999999999.999999", "999999999999.999999"),
    ("-999999999999.999999", "-999999999999.999999"),
])
def test_an_amount_accepts_plain_decimals(value: Any, expected: str) -> None:
    assert str(to_money(value)) == expected


@pytest.mark.parametrize(("value", "message"), [
    ("1000000000000", "too large"),
    ("-1000000000000", "too large"),
    (10**12, "too large"),
    ("0.0000001", "more than 6 fractional digits"),
    ("12.5000001", "more than 6 fractional digits"),
])
def test_an_amount_stays_within_decimal_18_6(value: Any, message: str) -> None:
    with pytest.raises(InvalidEvent, match=message):
        to_money(value)


def test_parse_decimal_keeps_the_scale_and_can_refuse_a_sign() -> None:
    assert parse_decimal("0.037500", "price").as_tuple().exponent == -6
    assert parse_decimal("-2", "balance") == -2
    for value in ("-2", -2, Decimal("-0.1")):
        with pytest.raises(InvalidEvent, match="price must be zero or more"):
            parse_decimal(value, "price", signed=False)
    assert parse_decimal(Decimal("-0"), "price", signed=False) == 0


def test_a_refused_value_is_shown_short() -> None:
    with pytest.raises(InvalidEvent) as refused:
        to_money("9" * 10_000 + "x")
    assert len(refused.value.reason) < 300


def test_quantities_up_to_max_quantity_are_accepted_and_above_refused() -> None:
    assert MAX_QUANTITY == 10**12
    assert normalize_input(usage({"input_tokens": MAX_QUANTITY, "output_tokens": 0}))[
        "quantities"] == {"input_tokens": MAX_QUANTITY, "output_tokens": 0}
    with pytest.raises(InvalidEvent) as refused:
        normalize_input(usage({"input_tokens": 1, "output_tokens": MAX_QUANTITY + 1}))
    assert refused.value.field == "quantities.output_tokens"
    assert "1,000,000,000,001" in refused.value.reason
    assert "1,000,000,000,000" in refused.value.reason


# Money with at most 6 fractional digits, inside decimal(18, 6).
MAX_MONEY = MONEY_LIMIT - Decimal("0.000001")
money = st.decimals(-MAX_MONEY, MAX_MONEY, places=6)


@given(amount=money)
def test_any_amount_written_as_plain_digits_round_trips(amount: Decimal) -> None:
    text = format(amount, "f")  # never exponent notation (str(Decimal("1E-6")) is "0.000001",
    assert "e" not in text.lower()  # but str(Decimal("0E-7")) is "0E-7")
    parsed = to_money(text)
    assert parsed == amount and parsed.as_tuple().exponent == -6
    assert to_money(str(parsed)) == parsed  # and what to_money returns, printed, reads back
    assert to_money(amount) == amount


@given(count=st.integers(0, MAX_QUANTITY))
def test_any_whole_quantity_in_range_is_accepted(count: int) -> None:
    assert normalize_input(usage({"input_tokens": count}))["quantities"] == {"input_tokens": count}


@given(text=st.text(max_size=12))
def test_whatever_parse_decimal_accepts_is_plain_ascii(text: str) -> None:
    try:
        number = parse_decimal(text, "amount")
    except InvalidEvent:
        return
    assert text.isascii() and set(text) <= set("-.0123456789") and number.is_finite()
    assert number == Decimal(text)


# -- unknown fields -------------------------------------------------------------------------------


def test_unknown_fields_of_a_raw_event_in_their_order() -> None:
    raw = {**usage({"input_tokens": 1}), "request": 500, "ingested_at": "2026-01-31T12:00:01Z",
           "colour": "red"}
    assert unknown_fields(raw) == ["request", "colour"]  # ingested_at: the broker's, known
    assert unknown_fields(usage({"input_tokens": 1})) == []
    assert unknown_fields({"type": "refund_issued", "x": 1}) == []  # the type is the problem
    assert unknown_fields(["not", "a", "mapping"]) == []


def usage(quantities: dict[str, Any]) -> dict[str, Any]:
    return {"type": "usage", "event_id": "u-1", "account_id": "acct-1",
            "timestamp": "2026-01-31T12:00:00Z", "product": "deepseek-v3",
            "quantities": quantities}
