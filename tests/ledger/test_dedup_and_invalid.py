"""Duplicates (the dedup horizon) and invalid input (dead letters leave the state unchanged)."""

import copy
from datetime import timedelta
from decimal import Decimal

import pytest

from billing.config import BillingConfig
from billing.events import MAX_QUANTITY, InvalidEvent, normalize_input
from billing.pricebook import PriceBook
from tests.ledger.builders import (
    Events,
    Run,
    enterprise_postpaid,
    ledger_view,
    money,
    prepaid_with_card,
)

# -- duplicates --------------------------------------------------------------------------------


@pytest.mark.parametrize("make", [
    lambda ev: ev.usage("2"),
    lambda ev: ev.purchase("5"),
    lambda ev: ev.pm_added("pm-2"),
    lambda ev: ev.pm_removed("pm-1"),
    lambda ev: ev.budget("20"),
    lambda ev: ev.budget("2000"),  # rejected the first time: the duplicate emits no rejection
    lambda ev: ev.auto_top_up(minimum_balance="100"),
    lambda ev: ev.close_period("2025-07"),
], ids=["usage", "purchase", "pm_added", "pm_removed", "budget", "rejected_budget",
        "auto_top_up", "close_period"])
def test_duplicate_event_id_changes_nothing_and_emits_nothing(run, ev, make):
    prepaid_with_card(run, ev, credit="10")
    event = make(ev)
    run(event)
    before = copy.deepcopy(run.state())
    transition = run(copy.deepcopy(event))
    assert transition.outputs == []
    assert transition.rated_usage is None
    assert run.state() == before


def test_duplicate_account_opened_is_ignored_not_rejected(run, ev):
    opened = ev.opened()
    run(opened)
    run(ev.usage("0.5"))
    before = copy.deepcopy(run.state())
    assert run(copy.deepcopy(opened)).outputs == []
    assert run.state() == before


def test_duplicate_with_different_content_is_still_a_duplicate(run, ev):
    prepaid_with_card(run, ev, credit="10")
    run(ev.usage("2", event_id="u-1"))
    assert run(ev.usage("7", event_id="u-1")).outputs == []
    assert run.snap()["credit_balance"] == money("9")


def test_same_event_id_for_another_account_is_not_a_duplicate(run):
    a, b = Events("A"), Events("B")
    for events in (a, b):
        enterprise_postpaid(run, events)
    run(a.usage("2", event_id="u-1"))
    assert run(b.usage("3", event_id="u-1")).rated_usage is not None
    assert run.snap("B")["lifetime_spend"] == money("3")


def test_copy_at_the_end_of_the_35_day_horizon_is_ignored(run, ev):
    enterprise_postpaid(run, ev)
    usage = ev.usage("2", event_id="u-1", at="2025-07-01T10:00:00Z")
    run(usage)
    run(ev.purchase("1", at="2025-08-05T10:00:00Z"))  # exactly 35 days later
    assert run(copy.deepcopy(usage)).rated_usage is None
    assert run.snap()["lifetime_spend"] == money("2")


def test_copy_past_the_horizon_is_dead_lettered_not_charged(run, ev):
    enterprise_postpaid(run, ev)
    usage = ev.usage("2", event_id="u-1", at="2025-07-01T10:00:00Z")
    run(usage)
    run(ev.purchase("1", at="2025-08-05T10:00:00.001Z"))  # 35 days + 1 ms later
    before = copy.deepcopy(run.state())
    with pytest.raises(InvalidEvent, match="older than the dedup horizon: cannot prove it is "
                                           "not a copy") as error:
        run(copy.deepcopy(usage))
    assert error.value.field == "timestamp"
    assert run.state() == before


def test_dedup_horizon_is_configurable():
    run, ev = Run(BillingConfig(dedup_horizon=timedelta(hours=1))), Events()
    enterprise_postpaid(run, ev)
    usage = ev.usage("2", event_id="u-1", at="2025-07-01T10:00:00Z")
    run(usage)
    run(ev.purchase("1", at="2025-07-01T11:00:00.001Z"))
    with pytest.raises(InvalidEvent, match="older than the dedup horizon"):
        run(copy.deepcopy(usage))


def test_ids_of_buckets_the_horizon_refuses_are_forgotten():
    """The account's memory of event ids stays within the horizon, however long it runs."""
    run, ev = Run(BillingConfig(dedup_horizon=timedelta(hours=2))), Events()
    enterprise_postpaid(run, ev)
    for hour in range(48):
        run(ev.usage("0.01", at=f"2025-07-{1 + hour // 24:02d}T{hour % 24:02d}:30:00Z"))
    # ids of at most the last 2 hours, plus the hour being filled, are kept
    assert run.ledger.seen.event_ids("acct-1") <= 4


# -- invalid input ------------------------------------------------------------------------


@pytest.mark.parametrize(("product", "quantities", "message"), [
    ("gpt-9", {"input_tokens": 1}, "unknown product"),
    ("llama-v3p1-8b", {"input_tokens": 1, "gpu_seconds": 5}, "unknown meter"),
])
def test_unknown_product_or_meter_raises_and_leaves_the_state_unchanged(run, ev, product,
                                                                       quantities, message):
    prepaid_with_card(run, ev, credit="10")
    run(ev.usage("1", at="2025-07-20T00:00:00Z"))
    before = copy.deepcopy(run.state())
    # past July's close time: even the month close must not happen
    event = ev.usage(product=product, quantities=quantities, at="2025-08-05T00:00:00Z")
    with pytest.raises(InvalidEvent, match=message):
        run(event)
    assert run.state() == before
    # and it is not remembered: re-driven after the price book is fixed it will be processed
    fixed = {**event, "product": "metered", "quantities": {"usd_micros": 1}}
    assert run(fixed).rated_usage is not None


@pytest.mark.parametrize("make", [
    lambda ev: ev.usage("1"), lambda ev: ev.purchase("5"), lambda ev: ev.pm_added(),
    lambda ev: ev.budget("10"), lambda ev: ev.close_period("2025-07"),
    lambda ev: ev.invoice_paid("inv-x-2025-07", "1"),
])
def test_events_for_an_unopened_account_raise(run, make):
    event = make(Events("ghost"))
    with pytest.raises(InvalidEvent, match="never opened") as error:
        run(event)
    assert error.value.field == "account_id"
    assert "ghost" not in run.states


def test_invalid_event_for_one_account_leaves_others_alone(run, ev):
    prepaid_with_card(run, ev, credit="10")
    before = ledger_view(run.state())
    with pytest.raises(InvalidEvent):
        run(Events("ghost").usage("1"))
    assert ledger_view(run.state()) == before


@pytest.mark.parametrize(("raw", "message"), [
    ({"product": "llama-v3p1-8b", "quantities": {"input_tokens": -1}}, "negative"),
    ({"product": "llama-v3p1-8b", "quantities": {"input_tokens": 1.5}}, "whole number"),
    ({"product": "llama-v3p1-8b", "quantities": {}}, "non-empty"),
    ({"quantities": {"input_tokens": 1}}, "missing required field 'product'"),
])
def test_structurally_bad_usage_is_refused_before_the_ledger(raw, message):
    event = {"type": "usage", "event_id": "u", "account_id": "A",
             "timestamp": "2025-07-01T00:00:00Z", **raw}
    with pytest.raises(InvalidEvent, match=message):
        normalize_input(event)


@pytest.mark.parametrize(("raw", "message"), [
    ({"type": "refund"}, "unknown event type"),
    ({"type": "credits_purchased", "amount": 5.0, "payment_id": "p"}, "decimal string"),
    ({"type": "credits_purchased", "amount": "0", "payment_id": "p"}, "greater than zero"),
    ({"type": "credits_purchased", "amount": "1.0000001", "payment_id": "p"}, "6 fractional"),
    ({"type": "budget_set", "monthly_budget": "-1"}, "zero or more"),
    ({"type": "budget_set", "monthly_budget": None, "timestamp": "2025-07-01T00:00:00"},
     "no time zone"),
    ({"type": "credits_purchased", "amount": "1000000000000", "payment_id": "p"}, "too large"),
    ({"type": "budget_set", "monthly_budget": "-1000000000000"}, "too large"),
    ({"type": "budget_set", "monthly_budget": None, "timestamp": "9999-12-31T23:00:00Z"},
     "outside the years 1970 to 2099"),
    ({"type": "budget_set", "monthly_budget": None, "timestamp": "1969-12-31T23:59:59Z"},
     "outside the years 1970 to 2099"),
])
def test_structurally_bad_events_are_refused(raw, message):
    event = {"event_id": "e", "account_id": "A", "timestamp": "2025-07-01T00:00:00Z", **raw}
    with pytest.raises(InvalidEvent, match=message):
        normalize_input(event)


@pytest.mark.parametrize(("make", "field"), [
    # one usage costing $1,000,000,000,000 (an absurd token count): since MAX_QUANTITY, refused
    # as a quantity before the ledger sees it
    (lambda ev: ev.usage(quantities={"input_tokens": 5 * 10**18}, product="llama-v3p1-8b"),
     "quantities.input_tokens"),
    (lambda ev: ev.purchase("999999999999.999999"), "amount"),
])
def test_money_past_decimal_18_6_is_refused_and_leaves_the_state_unchanged(run, ev, make, field):
    """Outputs carry decimal(18, 6): an event that would take a running total past it is
    refused before it changes anything (the worker could not publish its outputs otherwise)."""
    prepaid_with_card(run, ev, credit="10")
    run(ev.purchase("1"))
    before = copy.deepcopy(run.state())
    with pytest.raises(InvalidEvent, match="1,000,000,000,000") as error:
        run(make(ev))
    assert error.value.field == field
    assert run.state() == before


def test_usage_that_would_take_lifetime_spend_past_decimal_18_6_is_refused(ev):
    """One event costs below $10^12 (the price book's bound); many can add up past it."""
    run = Run(pricebook=PriceBook({"big": {"units": Decimal("999999")}}))
    enterprise_postpaid(run, ev)
    run(ev.usage(product="big", quantities={"units": MAX_QUANTITY}))
    before = copy.deepcopy(run.state())
    with pytest.raises(InvalidEvent, match="lifetime spend") as error:
        run(ev.usage(product="big", quantities={"units": MAX_QUANTITY}))
    assert error.value.field == "quantities"
    assert run.state() == before
