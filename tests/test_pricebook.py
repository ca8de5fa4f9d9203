"""The price book refuses at load any price that is not a plain decimal, is negative, has more
than 12 fractional digits, or could make one usage event cost past decimal(18, 6); the message
names the file, the product, the meter and the value."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from billing.config import ConfigError
from billing.events import MAX_QUANTITY, MONEY_LIMIT
from billing.pricebook import MAX_PRICE_PLACES, PRICE_SUM_LIMIT, pricebook_from_mapping
from runtime.rules_files import load_pricebook


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(("name", "text", "value", "reason"), [
    ("p.json", '{"products": {"big-model": {"output_tokens": "1e30"}}}', "'1e30'",
     "not a decimal number"),
    ("p.json", '{"products": {"big-model": {"output_tokens": "1E3"}}}', "'1E3'",
     "not a decimal number"),
    ("p.json", '{"products": {"big-model": {"output_tokens": "0_90"}}}', "'0_90'",
     "not a decimal number"),
    ("p.yaml", 'products:\n  big-model:\n    output_tokens: "\u0663"\n', "'\u0663'",
     "not a decimal number"),
    ("p.json", '{"products": {"big-model": {"output_tokens": " 0.90"}}}', "' 0.90'",
     "not a decimal number"),
    ("p.json", '{"products": {"big-model": {"output_tokens": "Infinity"}}}', "'Infinity'",
     "not a decimal number"),
    ("p.json", '{"products": {"big-model": {"output_tokens": "-0.90"}}}', "'-0.90'",
     "must be zero or more"),
    ("p.json", '{"products": {"big-model": {"output_tokens": -1}}}', "-1",
     "must be zero or more"),
    ("p.yaml", "products:\n  big-model:\n    output_tokens: 1e3\n", "'1e3'",  # YAML: a string
     "not a decimal number"),
    ("p.yaml", "products:\n  big-model:\n    output_tokens: 1.0e+3\n", "1000.0",  # a float
     "must be a decimal string"),
    ("p.json", '{"products": {"big-model": {"output_tokens": "0.0000000000001"}}}',
     "'0.0000000000001'", "13 fractional digits; at most 12"),
    # MAX_QUANTITY units of it alone would cost 2 * 10**12
    ("p.json", '{"products": {"big-model": {"output_tokens": "2000000"}}}', "'2000000'",
     "would cost 2,000,000,000,000, and costs must stay below 1,000,000,000,000"),
    ("p.json", '{"products": {"big-model": {"output_tokens": 1000000}}}', "1000000",
     "would cost 1,000,000,000,000,"),
    ("p.json", '{"products": {"big-model": {"output_tokens": "1000000000000000000000000000000"}}}',
     "'1000000000000000000000000000000'", "too high"),
])
def test_a_bad_price_refuses_the_file_naming_file_product_meter_and_value(
    tmp_path: Path, name: str, text: str, value: str, reason: str
) -> None:
    path = write(tmp_path, name, text)
    with pytest.raises(ConfigError) as refused:
        load_pricebook(path)
    message = str(refused.value)
    assert message.startswith(f"{path}: big-model.output_tokens: price")
    assert value in message and reason in message


def test_prices_that_together_could_overflow_one_event_are_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "p.json", '{"products": {"ok": {"tokens": "1"}, "big-model": '
                                     '{"input_tokens": "600000", "output_tokens": "400000"}}}')
    with pytest.raises(ConfigError) as refused:
        load_pricebook(path)
    message = str(refused.value)
    assert message.startswith(f"{path}: product big-model: prices ")
    assert "input_tokens='600000', output_tokens='400000'" in message
    assert "would cost 1,000,000,000,000," in message and "decimal(18, 6)" in message


def test_the_highest_prices_allowed_cannot_overflow_an_event() -> None:
    assert PRICE_SUM_LIMIT == MONEY_LIMIT * 1_000_000 / MAX_QUANTITY == 1_000_000
    top = "999999.999999999999"  # the largest price with 12 fractional digits below the limit
    book = pricebook_from_mapping({"products": {"m": {"a": top},
                                                "n": {"a": "499999.999999999999",
                                                      "b": "500000"}}})
    for product, prices in book.products.items():
        worst = book.rate(product, dict.fromkeys(prices, MAX_QUANTITY))
        assert worst < MONEY_LIMIT, product
    assert book.rate("m", {"a": MAX_QUANTITY}) == Decimal("999999999999.999999")


@pytest.mark.parametrize(("price", "expected"), [
    ("0.20", Decimal("0.20")),
    ("0.0375", Decimal("0.0375")),
    ("0.000000000001", Decimal("0.000000000001")),  # MAX_PRICE_PLACES digits
    ("805.56", Decimal("805.56")),
    ("0", Decimal(0)),
    (805, Decimal(805)),  # a JSON integer is exact
    ("12.", Decimal(12)),
])
def test_plain_prices_are_accepted_exactly(price: object, expected: Decimal) -> None:
    book = pricebook_from_mapping({"products": {"m": {"tokens": price}}})
    assert book.products["m"]["tokens"] == expected
    assert MAX_PRICE_PLACES == 12


def test_the_shipped_price_book_passes_its_own_checks() -> None:
    book = load_pricebook()
    assert book.products["deepseek-v3"]["cached_input_tokens"] == Decimal("0.45")
