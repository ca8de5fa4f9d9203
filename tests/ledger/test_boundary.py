"""Time and identity at the boundary (billing rules section 4): the acceptance window, copies at
any delay, payment ids as idempotency keys, output ids that never collide, and an error inside
the rules that costs one dead letter."""

import copy
from datetime import timedelta

import pytest

from billing.config import BillingConfig
from billing.events import InvalidEvent
from billing.ledger import Ledger, LedgerFault
from billing.pricebook import PriceBook
from billing.replay import Replay
from tests.ledger.builders import (
    TEST_PRICEBOOK,
    Events,
    Run,
    at,
    enterprise_postpaid,
    grandfathered_postpaid,
    money,
    of_type,
    only,
    prepaid_with_card,
    types,
)


def ingested(event: dict, when: str) -> dict:
    """The event as the worker sees it: with the broker's append time."""
    return {**event, "ingested_at": at(when)}


# -- the acceptance window ----------------------------------------------------------------------


@pytest.mark.parametrize("stamp", ["2025-07-04T10:00:00Z", "2099-01-01T00:00:00Z"])
def test_an_event_ahead_of_the_broker_clock_is_refused_with_both_times(run, ev, stamp):
    prepaid_with_card(run, ev, credit="10")
    before = copy.deepcopy(run.state())
    with pytest.raises(InvalidEvent) as error:
        run(ingested(ev.usage("1", at=stamp), "2025-07-01T10:00:00Z"))
    assert error.value.field == "timestamp"
    assert stamp.replace("Z", ".000Z") in error.value.reason
    assert "2025-07-01T10:00:00.000Z" in error.value.reason
    assert "future tolerance of 0:05:00" in error.value.reason
    assert run.state() == before


def test_the_future_tolerance_is_five_minutes_inclusive(run, ev):
    prepaid_with_card(run, ev, credit="10")
    run(ingested(ev.usage("1", at="2025-07-01T10:05:00Z"), "2025-07-01T10:00:00Z"))
    with pytest.raises(InvalidEvent, match="future tolerance"):
        run(ingested(ev.usage("1", at="2025-07-01T10:05:00.001Z"), "2025-07-01T10:00:00Z"))


def test_without_ingested_at_an_event_counts_as_ingested_at_its_own_time(run, ev):
    """Replay lines without ingested_at (and backfills) pass the future check."""
    prepaid_with_card(run, ev, credit="10")
    assert run(ev.usage("1", at="2099-01-01T00:00:00Z")).rated_usage is not None


def test_lateness_against_the_broker_is_unbounded_by_default(run, ev):
    """Re-publishing history (a backfill) passes the boundary: lateness is measured within the
    account, not against the broker's clock."""
    prepaid_with_card(run, ev, credit="10")
    assert run(ingested(ev.usage("1"), "2026-12-01T00:00:00Z")).rated_usage is not None


def test_maximum_lateness_is_an_option():
    run, ev = Run(BillingConfig(max_lateness=timedelta(days=35))), Events()
    prepaid_with_card(run, ev, credit="10")
    run(ingested(ev.usage("1", at="2025-07-02T00:00:00Z"), "2025-08-06T00:00:00Z"))
    with pytest.raises(InvalidEvent, match="maximum lateness of 35 days"):
        run(ingested(ev.usage("1", at="2025-07-02T00:00:00Z"), "2025-08-06T00:00:00.001Z"))


def test_a_refused_event_never_moves_the_watermark():
    """One gateway's bad clock must never close anybody's month."""
    replay = Replay(Ledger(BillingConfig(), TEST_PRICEBOOK))
    a, b = Events("A"), Events("B")
    for events in (a, b):
        replay.apply(events.opened("enterprise", billing_model="postpaid",
                                   at="2025-07-01T00:00:00Z"))
    replay.apply(b.usage("10", at="2025-07-10T00:00:00Z"))
    for stamp in ("2025-08-03T00:00:00Z", "2099-01-01T00:00:00Z"):
        with pytest.raises(InvalidEvent, match="future tolerance"):
            replay.apply(ingested(a.usage("1", at=stamp), "2025-07-29T00:00:00Z"))
    outputs, _ = replay.apply(b.usage("29", at="2025-07-30T00:00:00Z"))
    assert "invoice_issued" not in types(outputs)
    assert replay.watermark.closed_through == "2025-06"  # before any usage: nothing closed
    assert replay.snapshots()["B"]["month_to_date_spend"] == money("39")


# -- copies at any delay ------------------------------------------------------------------------


def test_a_purchase_delivered_again_ten_days_later_is_credited_once(run, ev):
    prepaid_with_card(run, ev)
    purchase = ev.purchase("50", at="2025-07-01T10:00:00Z")
    run(purchase)
    run(ev.usage("1", at="2025-07-11T10:00:00Z"))
    assert run(ingested(copy.deepcopy(purchase), "2025-07-11T10:00:01Z")).outputs == []
    assert run.snap()["lifetime_credits_purchased"] == money("50")


def test_usage_delivered_again_ten_days_later_is_charged_once(run, ev):
    prepaid_with_card(run, ev, credit="10")
    usage = ev.usage("2", at="2025-07-01T10:00:00Z")
    run(usage)
    run(ev.usage("1", at="2025-07-11T10:00:00Z"))
    assert run(copy.deepcopy(usage)).rated_usage is None
    assert run.snap()["lifetime_spend"] == money("3")


# -- payment ids are idempotency keys for ever -------------------------------------------------


def test_a_purchase_retried_under_a_new_event_id_is_credited_once(run, ev):
    prepaid_with_card(run, ev)
    run(ev.purchase("50", payment_id="pay-1", event_id="e-1"))
    retry = ev.purchase("50", payment_id="pay-1", event_id="e-2")
    assert run(retry).outputs == []
    assert run.snap()["lifetime_credits_purchased"] == money("50")


def test_a_known_payment_id_with_another_amount_is_rejected_naming_both(run, ev):
    prepaid_with_card(run, ev)
    run(ev.purchase("50", payment_id="pay-1"))
    outputs = run(ev.purchase("70", payment_id="pay-1")).outputs
    rejected = only(outputs, "command_rejected")
    assert rejected["rejected_type"] == "credits_purchased"
    assert "50.000000" in rejected["reason"] and "70.000000" in rejected["reason"]
    assert not of_type(outputs, "credits_applied")
    assert run.snap()["lifetime_credits_purchased"] == money("50")


def test_a_payment_id_is_remembered_past_the_dedup_horizon(run, ev):
    prepaid_with_card(run, ev)
    run(ev.purchase("50", payment_id="pay-1", at="2025-07-01T10:00:00Z"))
    run(ev.usage("1", at="2026-07-01T10:00:00Z"))
    assert run(ev.purchase("50", payment_id="pay-1", at="2026-07-01T10:00:01Z")).outputs == []
    assert run.snap()["lifetime_credits_purchased"] == money("50")


def test_a_failed_payment_then_a_purchase_under_its_id_is_rejected(run, ev):
    prepaid_with_card(run, ev)
    failed = ev.payment_failed()
    run(failed)
    outputs = run(ev.purchase("10", payment_id=failed["payment_id"])).outputs
    assert "payment_failed" in only(outputs, "command_rejected")["reason"]
    assert run.snap()["lifetime_credits_purchased"] == money("0")


def invoiced(run, ev) -> str:
    """A grandfathered account with July's $29 invoice open (its $1 free credit paid the rest)."""
    grandfathered_postpaid(run, ev)
    run(ev.usage("30", at="2025-07-10T00:00:00Z"))
    run(ev.close_period("2025-07", at="2025-08-01T02:00:00Z"))
    return next(iter(run.state().invoices))


def test_invoice_paid_with_a_known_payment_id_changes_nothing(run, ev):
    invoice_id = invoiced(run, ev)
    paid = {**ev.invoice_paid(invoice_id, "10"), "payment_id": "pay-9"}
    applied = only(run(paid).outputs, "credits_applied")
    assert applied["payment_id"] == "pay-9"
    assert run({**paid, "event_id": "another"}).outputs == []
    conflict = run({**paid, "event_id": "third", "amount": money("5")}).outputs
    assert "10.000000" in only(conflict, "command_rejected")["reason"]
    assert run.snap()["outstanding_balance"] == money("19")


def test_invoice_paid_without_a_payment_id_is_keyed_by_its_event_id_only(run, ev):
    invoice_id = invoiced(run, ev)
    run(ev.invoice_paid(invoice_id, "10"))
    run(ev.invoice_paid(invoice_id, "10"))
    assert run.snap()["outstanding_balance"] == money("9")


# -- output ids ---------------------------------------------------------------------------------


def test_output_ids_do_not_collide_whatever_the_ids_contain(run):
    ab, a = Events("a:b"), Events("a")
    first = run(ab.opened("enterprise", event_id="c")).outputs
    second = run(a.opened("enterprise", event_id="b:c")).outputs
    ids = {output["event_id"] for output in first} | {output["event_id"] for output in second}
    assert len(ids) == len(first) + len(second)
    assert only(first, "tier_changed")["event_id"] == "a%3Ab:c:tier_changed"
    assert only(second, "tier_changed")["event_id"] == "a:b%3Ac:tier_changed"


def test_plain_ids_keep_their_readable_form(run, ev):
    outputs = run(ev.opened(event_id="open-1")).outputs
    assert only(outputs, "tier_changed")["event_id"] == "acct-1:open-1:tier_changed"


# -- an error inside the rules ------------------------------------------------------------------


class _BrokenPriceBook(PriceBook):
    def rate(self, product, quantities):
        if product == "broken":
            raise ArithmeticError("boom")
        return super().rate(product, quantities)


def test_an_error_inside_the_rules_is_a_fault_that_leaves_the_state_as_it_was(ev):
    run = Run(pricebook=_BrokenPriceBook(TEST_PRICEBOOK.products))
    prepaid_with_card(run, ev, credit="10")
    before = copy.deepcopy(run.state())
    event = ev.usage(product="broken", quantities={"x": 1})
    with pytest.raises(LedgerFault, match="ArithmeticError: boom"):
        run(event)
    assert run.state() == before
    assert run(ev.usage("1")).rated_usage is not None  # the account goes on


def test_a_fault_half_way_through_an_event_is_rolled_back(ev, monkeypatch):
    run = Run()
    enterprise_postpaid(run, ev)
    run(ev.usage("5"))
    before = copy.deepcopy(run.state())

    def broken_settle(*args, **kwargs):
        raise ZeroDivisionError("in settle")

    monkeypatch.setattr(run.ledger, "_settle", broken_settle)
    with pytest.raises(LedgerFault, match="in settle"):
        run(ev.usage("7"))
    assert run.state() == before
    monkeypatch.undo()
    assert run(ev.usage("7")).rated_usage is not None  # not remembered as seen
    assert run.snap()["lifetime_spend"] == money("12")
