"""Rating usage: cost per event, rounded once, half-even, to 6 digits; exact sums elsewhere."""

from decimal import Decimal

import pytest

from billing.events import InvalidEvent
from billing.pricebook import pricebook_from_mapping
from tests.ledger.builders import TEST_PRICEBOOK, Events, Run, money

BOOK = pricebook_from_mapping({"products": {
    "half": {"a": "0.5", "b": "0.5"},          # 1 unit = $0.0000005: exactly half a micro-dollar
    "tenths": {"x": "0.3", "y": "0.3", "z": "0.3"},
}})


def rate(product, **quantities):
    return BOOK.rate(product, quantities)


def test_cost_is_quantity_times_price_per_million():
    """deepseek-v3: 1M input at $0.90 + 2M cached at $0.45 + 0.5M output at $0.90."""
    cost = TEST_PRICEBOOK.rate("deepseek-v3", {"input_tokens": 1_000_000,
                                               "cached_input_tokens": 2_000_000,
                                               "output_tokens": 500_000})
    assert cost == Decimal("2.250000")
    assert cost.as_tuple().exponent == -6


def test_gpu_seconds_are_priced_per_million_units():
    assert TEST_PRICEBOOK.rate("h100-deployment", {"gpu_seconds": 3600}) == Decimal("2.900016")


def test_rounded_once_per_event_not_per_meter():
    """2 units on each of three meters at $0.30/M: per meter 0.0000006 -> 0.000001 (x3 =
    0.000003), but per event 0.0000018 -> 0.000002."""
    assert rate("tenths", x=2, y=2, z=2) == Decimal("0.000002")
    per_meter = sum(rate("tenths", **{meter: 2}) for meter in "xyz")
    assert per_meter == Decimal("0.000003")  # what per-meter rounding would have charged


def test_per_event_rounding_with_the_default_price_book():
    """llama-v3p1-8b ($0.20/M): 3 input + 3 output tokens. Per meter 0.0000006 rounds to 0.000001
    each (0.000002 in all); per event 0.0000012 rounds to 0.000001."""
    cost = TEST_PRICEBOOK.rate("llama-v3p1-8b", {"input_tokens": 3, "output_tokens": 3})
    assert cost == Decimal("0.000001")


@pytest.mark.parametrize(("units", "expected"), [
    (1, "0.000000"),   # 0.0000005 -> even neighbour 0 (half-up would give 0.000001)
    (3, "0.000002"),   # 0.0000015 -> 0.000002 (half-down would give 0.000001)
    (5, "0.000002"),   # 0.0000025 -> 0.000002
    (7, "0.000004"),   # 0.0000035 -> 0.000004
])
def test_ties_round_half_even(units, expected):
    assert rate("half", a=units) == Decimal(expected)


def test_tie_is_decided_on_the_event_total_not_per_meter():
    """a=1 and b=2: per meter 0.0000005 -> 0 and 0.000001 -> 0.000001; per event 0.0000015 is a
    tie that rounds to even 0.000002."""
    assert rate("half", a=1, b=2) == Decimal("0.000002")
    assert rate("half", a=1) + rate("half", b=2) == Decimal("0.000001")


def test_tie_with_the_default_price_book():
    """deepseek-v3 cached tokens at $0.45/M: 10 -> 0.0000045 -> 0.000004; 30 -> 0.0000135 ->
    0.000014."""
    assert TEST_PRICEBOOK.rate("deepseek-v3", {"cached_input_tokens": 10}) == Decimal("0.000004")
    assert TEST_PRICEBOOK.rate("deepseek-v3", {"cached_input_tokens": 30}) == Decimal("0.000014")


def test_zero_quantities_cost_nothing():
    assert TEST_PRICEBOOK.rate("llama-v3p1-8b", {"input_tokens": 0}) == Decimal("0.000000")


def test_huge_quantities_stay_exact():
    cost = TEST_PRICEBOOK.rate("h100-deployment", {"gpu_seconds": 10**15 + 1})
    assert cost == Decimal("805560000000.000806")  # 805.56e9 + 0.00080556, rounded once


def test_ledger_charges_the_rounded_event_cost_and_sums_exactly():
    run, ev = Run(pricebook=BOOK), Events()
    run(ev.opened("enterprise", billing_model="postpaid"))
    costs = []
    for _ in range(5):  # 5 events of 0.0000015 each: each rounds to 0.000002
        transition = run(ev.usage(product="half", quantities={"a": 3}))
        costs.append(transition.rated_usage["cost"])
    assert costs == [Decimal("0.000002")] * 5
    snap = run.snap()
    assert snap["lifetime_spend"] == Decimal("0.000010")  # not round(5 x 0.0000015) = 0.000008
    assert snap["month_to_date_spend"] == Decimal("0.000010")
    assert snap["outstanding_balance"] == Decimal("0.000010")


def test_rated_usage_record(run, ev):
    run(ev.opened())
    rated = run(ev.usage(product="llama-v3p1-8b", quantities={"input_tokens": 1000,
                                                              "output_tokens": 500},
                         requests=3, event_id="u-1")).rated_usage
    assert rated == {
        "event_id": "u-1", "account_id": "acct-1", "timestamp": ev.clock,
        "product": "llama-v3p1-8b", "quantities": {"input_tokens": 1000, "output_tokens": 500},
        "requests": 3, "cost": Decimal("0.000300"), "billed_period": "2025-07", "late": False,
        "over_limit": False, "billing_model": "prepaid", "tier": "0",
    }
    assert run.snap()["credit_balance"] == Decimal("0.999700")


def test_unknown_meter_of_a_known_product_is_never_free():
    with pytest.raises(InvalidEvent, match="unknown meter 'gpu_seconds'") as error:
        TEST_PRICEBOOK.rate("llama-v3p1-8b", {"input_tokens": 1, "gpu_seconds": 1})
    assert error.value.field == "quantities.gpu_seconds"


def test_unknown_product_is_never_free():
    with pytest.raises(InvalidEvent, match="unknown product 'gpt-9'") as error:
        TEST_PRICEBOOK.rate("gpt-9", {"input_tokens": 1})
    assert error.value.field == "product"


def test_input_amounts_may_omit_trailing_zeros(run, ev):
    run(ev.opened())
    outputs = run(ev.purchase("12.5")).outputs
    assert outputs[0]["amount"] == Decimal("12.500000")
    assert str(outputs[0]["amount"]) == "12.500000"
    assert run.snap()["credit_balance"] == money("13.5")
