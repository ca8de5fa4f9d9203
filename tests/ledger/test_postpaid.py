"""Postpaid accounts: credit first, outstanding balance, purchases, invoices."""

from datetime import date, timedelta
from decimal import Decimal

import pytest

from billing.config import BillingConfig
from tests.ledger.builders import (
    Events,
    Run,
    at,
    enterprise_postpaid,
    grandfathered_postpaid,
    ledger_view,
    money,
    of_type,
    only,
    prepaid_with_card,
    types,
)


def test_usage_takes_credit_first_then_accrues(run, ev):
    enterprise_postpaid(run, ev)
    run(ev.purchase("20"))
    run(ev.usage("25"))
    snap = run.snap()
    assert (snap["credit_balance"], snap["outstanding_balance"]) == (0, money("5"))
    assert snap["lifetime_spend"] == money("25")


def test_postpaid_credit_never_goes_negative(run, ev):
    grandfathered_postpaid(run, ev)
    run(ev.usage("7"))
    snap = run.snap()
    assert (snap["credit_balance"], snap["outstanding_balance"]) == (0, money("6"))
    assert snap["status"] == "active"  # postpaid: no credits_exhausted pause


def test_750_outstanding_plus_500_credits_leaves_250_outstanding_and_no_credit(run, ev):
    """Source: '$750 outstanding bill and added $500 in credits, your bill would reduce to $250,
    with $0 remaining credits'."""
    enterprise_postpaid(run, ev)
    run(ev.usage("750"))
    assert run.snap()["outstanding_balance"] == money("750")
    applied = only(run(ev.purchase("500")).outputs, "credits_applied")
    assert (applied["amount"], applied["applied_to_outstanding"], applied["applied_to_credit"]) \
        == (money("500"), money("500"), 0)
    snap = run.snap()
    assert (snap["outstanding_balance"], snap["credit_balance"]) == (money("250"), 0)


def test_purchase_larger_than_outstanding_leaves_the_rest_as_credit(run, ev):
    enterprise_postpaid(run, ev)
    run(ev.usage("750"))
    applied = only(run(ev.purchase("1000")).outputs, "credits_applied")
    assert (applied["applied_to_outstanding"], applied["applied_to_credit"]) == (
        money("750"), money("250"))
    snap = run.snap()
    assert (snap["outstanding_balance"], snap["credit_balance"]) == (0, money("250"))


def test_20_credits_83_usage_invoice_of_63_at_month_end(run, ev):
    """Source: 'If you deposited $20 in credits but incurred $83 in usage, you'll be billed for the
    $63 difference at month-end'."""
    enterprise_postpaid(run, ev)
    run(ev.purchase("20"))
    run(ev.usage("50"))
    run(ev.usage("33"))
    assert run.outputs and not of_type(run.outputs, "invoice_issued")  # not before month end
    outputs = run(ev.close_period("2025-07", event_id="close-jul")).outputs
    invoice = only(outputs, "invoice_issued")
    assert invoice["amount"] == money("63")
    assert (invoice["invoice_id"], invoice["period"]) == ("inv-acct-1-2025-07", "2025-07")
    assert invoice["event_id"] == "acct-1:close:2025-07:invoice_issued"
    assert invoice["cause_event_id"] == "close-jul"
    assert run.snap()["outstanding_balance"] == money("63")


def test_grandfathered_self_serve_free_dollar_reduces_the_invoice(run, ev):
    """The same example on a grandfathered self-serve account: its $1 free credit is credit too,
    so the invoice is $62."""
    grandfathered_postpaid(run, ev)
    run(ev.purchase("20"))
    run(ev.usage("83"))
    invoice = only(run(ev.close_period("2025-07")).outputs, "invoice_issued")
    assert invoice["amount"] == money("62")


def test_no_invoice_when_credit_covered_the_month(run, ev):
    enterprise_postpaid(run, ev)
    run(ev.purchase("100"))
    run(ev.usage("83"))
    assert run(ev.close_period("2025-07")).outputs == []
    assert run.snap()["credit_balance"] == money("17")


def test_purchases_after_the_usage_reduce_the_invoice(run, ev):
    """'those not covered by credit nor by purchases since'."""
    enterprise_postpaid(run, ev)
    run(ev.usage("83"))
    run(ev.purchase("20"))
    invoice = only(run(ev.close_period("2025-07")).outputs, "invoice_issued")
    assert invoice["amount"] == money("63")


def test_month_fully_paid_by_a_purchase_gets_no_invoice(run, ev):
    enterprise_postpaid(run, ev)
    run(ev.usage("83"))
    run(ev.purchase("83"))
    assert run(ev.close_period("2025-07")).outputs == []


def test_purchase_pays_the_oldest_invoice_first_then_the_open_month():
    run, ev = Run(), Events()
    enterprise_postpaid(run, ev)
    run(ev.usage("10", at="2025-07-10T00:00:00Z"))
    run(ev.usage("20", at="2025-08-10T00:00:00Z"))  # closes July: inv 10
    run(ev.usage("5", at="2025-09-10T00:00:00Z"))   # closes August: inv 20
    state = run.state()
    assert state.invoices == {"inv-acct-1-2025-07": money("10"), "inv-acct-1-2025-08": money("20")}
    assert state.month_unpaid == {"2025-09": money("5")}
    run(ev.purchase("25"))
    assert state.invoices == {"inv-acct-1-2025-08": money("5")}
    assert state.month_unpaid == {"2025-09": money("5")}
    run(ev.purchase("7"))
    assert state.invoices == {}
    assert state.month_unpaid == {"2025-09": money("3")}
    assert run.snap()["outstanding_balance"] == money("3")
    invoice = only(run(ev.close_period("2025-09")).outputs, "invoice_issued")
    assert invoice["amount"] == money("3")


def test_purchase_pays_unclosed_months_oldest_first():
    """July is over but not closed yet (inside the grace hour) when August usage arrives."""
    run, ev = Run(), Events()
    enterprise_postpaid(run, ev)
    run(ev.usage("10", at="2025-07-31T23:00:00Z"))
    run(ev.usage("4", at="2025-08-01T00:30:00Z"))
    assert run.state().month_unpaid == {"2025-07": money("10"), "2025-08": money("4")}
    run(ev.purchase("12"))
    assert run.state().month_unpaid == {"2025-08": money("2")}
    outputs = run(ev.usage("1", at="2025-08-01T01:00:00Z")).outputs  # closes July: nothing owed
    assert of_type(outputs, "invoice_issued") == []


# -- invoice_paid -------------------------------------------------------------------------------


@pytest.fixture
def invoiced() -> tuple[Run, Events]:
    """An enterprise postpaid account with invoice inv-acct-1-2025-07 of $63 open."""
    run, ev = Run(), Events()
    enterprise_postpaid(run, ev)
    run(ev.usage("63"))
    run(ev.close_period("2025-07"))
    run(ev.usage("4"))  # open month charges, not on the invoice
    return run, ev


def test_invoice_paid_in_full(invoiced):
    run, ev = invoiced
    outputs = run(ev.invoice_paid("inv-acct-1-2025-07", "63")).outputs
    applied = only(outputs, "credits_applied")
    assert (applied["invoice_id"], applied["amount"], applied["applied_to_outstanding"],
            applied["applied_to_credit"]) == ("inv-acct-1-2025-07", money("63"), money("63"), 0)
    assert run.state().invoices == {}
    assert run.snap()["outstanding_balance"] == money("4")
    assert run.state().lifetime_invoice_payments == money("63")
    assert run.snap()["lifetime_credits_purchased"] == 0  # not a credit purchase


def test_invoice_paid_in_part(invoiced):
    run, ev = invoiced
    run(ev.invoice_paid("inv-acct-1-2025-07", "60"))
    assert run.state().invoices == {"inv-acct-1-2025-07": money("3")}
    assert run.snap()["outstanding_balance"] == money("7")
    run(ev.invoice_paid("inv-acct-1-2025-07", "3"))
    assert run.state().invoices == {}


@pytest.mark.parametrize(("invoice_id", "amount", "reason"), [
    ("inv-acct-1-2025-06", "1", "not open"),            # unknown
    ("inv-other-2025-07", "1", "not open"),             # someone else's
    ("inv-acct-1-2025-07", "63.000001", "exceeds"),     # more than is unpaid
])
def test_invoice_paid_rejected_changes_nothing(invoiced, invoice_id, amount, reason):
    run, ev = invoiced
    before = ledger_view(run.state())
    outputs = run(ev.invoice_paid(invoice_id, amount, event_id="pay-inv")).outputs
    rejected = only(outputs, "command_rejected")
    assert types(outputs) == ["command_rejected"]
    assert rejected["rejected_type"] == "invoice_paid"
    assert reason in rejected["reason"]
    assert rejected["event_id"] == "acct-1:pay-inv:command_rejected"
    assert ledger_view(run.state()) == before


def test_invoice_paid_for_a_settled_invoice_is_rejected(invoiced):
    run, ev = invoiced
    run(ev.invoice_paid("inv-acct-1-2025-07", "63"))
    before = ledger_view(run.state())
    rejected = only(run(ev.invoice_paid("inv-acct-1-2025-07", "1")).outputs, "command_rejected")
    assert "not open" in rejected["reason"]
    assert ledger_view(run.state()) == before


def test_invoice_settled_by_a_purchase_cannot_be_paid_again(invoiced):
    run, ev = invoiced
    run(ev.purchase("63"))
    assert run.state().invoices == {}
    assert only(run(ev.invoice_paid("inv-acct-1-2025-07", "63")).outputs, "command_rejected")


def test_invoice_paid_on_a_partly_paid_invoice_over_the_rest_is_rejected(invoiced):
    run, ev = invoiced
    run(ev.purchase("60"))  # pays 60 of the invoice
    assert only(run(ev.invoice_paid("inv-acct-1-2025-07", "3.000001")).outputs,
                "command_rejected")
    assert only(run(ev.invoice_paid("inv-acct-1-2025-07", "3")).outputs, "credits_applied")


# -- invoices: who gets them, their ids ------------------------------------------------------


def test_prepaid_accounts_never_get_invoices(run, ev):
    """Source: 'Most self-serve accounts on pre-paid billing should not see month-end overage
    invoices'. Even with a negative balance at month end."""
    prepaid_with_card(run, ev)
    run(ev.usage("30"))
    assert run.snap()["credit_balance"] == money("-29")
    outputs = run.all(ev.close_period("2025-07"), ev.usage("1", at="2025-09-01T02:00:00Z"))
    assert of_type(run.outputs, "invoice_issued") == []
    assert run.state().invoices == {}
    assert run.snap()["outstanding_balance"] == 0
    assert "invoice_issued" not in types(outputs)


def test_invoice_id_is_the_same_however_the_month_closed():
    def invoice_for(*closing):
        run, ev = Run(), Events("acct-9")
        enterprise_postpaid(run, ev)
        run(ev.usage("8", at="2025-07-20T00:00:00Z"))
        for make in closing:
            run(make(ev))
        return only(run.outputs, "invoice_issued")

    by_command = invoice_for(lambda ev: ev.close_period("2025-07", event_id="ops-close"))
    by_own_event = invoice_for(lambda ev: ev.usage("1", at="2025-08-01T01:00:00Z"))
    for invoice in (by_command, by_own_event):
        assert invoice["invoice_id"] == "inv-acct-9-2025-07"
        assert invoice["event_id"] == "acct-9:close:2025-07:invoice_issued"
        assert invoice["amount"] == money("8")
    assert by_command["cause_event_id"] == "ops-close"
    assert by_own_event["cause_event_id"] == "watermark:2025-07"
    assert by_own_event["timestamp"] == at("2025-08-01T01:00:00Z")  # the close time


def test_grandfathered_postpaid_with_a_card_has_the_50_dollar_default_limit(run, ev):
    """Source: 'You can incur bills up to your configured spend limit (default: $50/month for new
    accounts)'."""
    grandfathered_postpaid(run, ev)
    snap = run.snap()
    assert (snap["billing_model"], snap["tier"], snap["monthly_budget"]) == (
        "postpaid", "1", Decimal("50.000000"))


def test_postpaid_spend_is_capped_by_the_budget(run, ev):
    grandfathered_postpaid(run, ev)
    run(ev.budget("30"))
    outputs = run(ev.usage("30")).outputs
    assert only(outputs, "usage_paused")["reason"] == "budget_reached"
    assert run.snap()["outstanding_balance"] == money("29")


# -- the invoice lifecycle (billing rules section 6) -------------------------------------------


def test_an_invoice_goes_open_then_partially_paid_then_paid(run, ev):
    """Issued with a due date; a purchase pays part of it, an invoice_paid the rest."""
    enterprise_postpaid(run, ev)
    run(ev.usage("100", at="2025-07-10T00:00:00Z"))
    issued = only(run(ev.close_period("2025-07", at="2025-08-01T02:00:00Z")).outputs,
                  "invoice_issued")
    assert issued["due_date"] == date(2025, 8, 16)  # issue date + 15 days of net terms
    invoice_id = issued["invoice_id"]
    partly = only(run(ev.purchase("30", payment_id="pay-a")).outputs, "invoice_settled")
    assert (partly["invoice_id"], partly["amount_paid"], partly["unpaid"], partly["status"],
            partly["payment_id"], partly["paid_by"]) == (
        invoice_id, money("30"), money("70"), "partially_paid", "pay-a", "credits_purchased")
    paid = {**ev.invoice_paid(invoice_id, "70"), "payment_id": "pay-b"}
    settled = only(run(paid).outputs, "invoice_settled")
    assert (settled["amount_paid"], settled["unpaid"], settled["status"], settled["paid_by"]) \
        == (money("70"), money("0"), "paid", "invoice_paid")
    assert run.state().invoices == {} and run.snap()["outstanding_balance"] == money("0")


def test_one_purchase_settles_the_oldest_invoices_first_each_with_its_own_output(run, ev):
    enterprise_postpaid(run, ev)
    run(ev.usage("10", at="2025-07-10T00:00:00Z"))
    run(ev.close_period("2025-07", at="2025-08-01T02:00:00Z"))
    run(ev.usage("20", at="2025-08-10T00:00:00Z"))
    run(ev.close_period("2025-08", at="2025-09-01T02:00:00Z"))
    outputs = run(ev.purchase("15")).outputs
    settled = of_type(outputs, "invoice_settled")
    assert [(item["invoice_id"][-7:], item["status"], item["unpaid"]) for item in settled] == [
        ("2025-07", "paid", money("0")), ("2025-08", "partially_paid", money("15"))]
    assert len({item["event_id"] for item in settled}) == 2


def test_net_terms_are_configurable():
    run, ev = Run(BillingConfig(invoice_net_terms=timedelta(days=30))), Events()
    enterprise_postpaid(run, ev)
    run(ev.usage("5", at="2025-07-10T00:00:00Z"))
    issued = only(run(ev.close_period("2025-07", at="2025-08-01T02:00:00Z")).outputs,
                  "invoice_issued")
    assert issued["due_date"] == date(2025, 8, 31)
