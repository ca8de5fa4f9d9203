"""Suspension: no payment method and credit at or below zero; sticky until a card is added."""

from billing.config import BillingConfig
from tests.ledger.builders import (
    Events,
    Run,
    enterprise_postpaid,
    grandfathered_postpaid,
    money,
    of_type,
    only,
    prepaid_with_card,
    types,
)


def test_finishing_the_free_dollar_without_a_card_suspends(run, ev):
    """Source: 'When you finish your $1 credit ... Without payment method: Your account will be
    suspended until you add a payment method'."""
    run(ev.opened())
    assert types(run(ev.usage("0.999999")).outputs) == []
    outputs = run(ev.usage("0.000001", event_id="last")).outputs
    assert types(outputs) == ["account_suspended", "usage_paused"]
    suspended = only(outputs, "account_suspended")
    assert suspended["reason"] == "free_credit_exhausted"
    assert suspended["event_id"] == "acct-1:last:account_suspended"
    snap = run.snap()
    assert (snap["status"], snap["credit_balance"]) == ("suspended", 0)
    assert snap["pause_reasons"] == ["credits_exhausted"]


def test_grandfathered_postpaid_without_a_card_is_suspended_too(run, ev):
    grandfathered_postpaid(run, ev, with_card=False)
    outputs = run(ev.usage("3")).outputs
    assert types(outputs) == ["account_suspended"]  # postpaid: no credits_exhausted pause
    snap = run.snap()
    assert (snap["status"], snap["credit_balance"], snap["outstanding_balance"]) == (
        "suspended", 0, money("2"))


def test_usage_while_suspended_is_charged_and_over_limit(run, ev):
    run(ev.opened())
    run(ev.usage("1"))
    rated = run(ev.usage("2")).rated_usage
    assert (rated["cost"], rated["over_limit"]) == (money("2"), True)
    assert run.snap()["credit_balance"] == money("-2")


def test_suspension_is_sticky_until_a_payment_method_is_added(run, ev):
    run(ev.opened())
    run(ev.usage("1"))
    outputs = run(ev.purchase("10")).outputs  # credit back, still no card
    assert types(outputs) == ["credits_applied"]  # no usage_resumed while suspended
    snap = run.snap()
    assert (snap["status"], snap["pause_reasons"]) == ("suspended", [])
    outputs = run(ev.pm_added()).outputs
    assert only(outputs, "account_reinstated")["reason"] == "payment_method_added"
    assert "usage_resumed" not in types(outputs)
    assert run.snap()["status"] == "active"


def test_reinstated_prepaid_without_credit_stays_paused(run, ev):
    """'a prepaid account with no credit then stays paused (credits_exhausted) until it buys
    credits'."""
    run(ev.opened())
    run(ev.usage("1"))
    outputs = run(ev.pm_added()).outputs
    assert types(outputs) == ["tier_changed", "rate_limits_changed", "budget_changed",
                              "account_reinstated"]
    snap = run.snap()
    assert (snap["status"], snap["pause_reasons"]) == ("paused", ["credits_exhausted"])
    outputs = run(ev.purchase("5")).outputs
    assert only(outputs, "usage_resumed")["reason"] == "credits_exhausted"
    assert run.snap()["status"] == "active"


def test_reinstated_postpaid_is_active(run, ev):
    grandfathered_postpaid(run, ev, with_card=False)
    run(ev.usage("3"))
    outputs = run(ev.pm_added()).outputs
    assert "account_reinstated" in types(outputs)
    assert run.snap()["status"] == "active"


def test_removing_the_card_with_no_credit_suspends_again(run, ev):
    prepaid_with_card(run, ev)
    run(ev.usage("1"))  # paused, not suspended: there is a card
    assert run.snap()["status"] == "paused"
    outputs = run(ev.pm_removed()).outputs
    assert types(outputs) == ["rate_limits_changed", "account_suspended"]
    assert run.snap()["status"] == "suspended"


def test_removing_the_card_with_credit_suspends_when_it_runs_out(run, ev):
    prepaid_with_card(run, ev, credit="5")
    assert "account_suspended" not in types(run(ev.pm_removed()).outputs)
    assert types(run(ev.usage("5.5")).outputs) == []
    outputs = run(ev.usage("0.5")).outputs
    assert types(outputs) == ["account_suspended", "usage_paused"]


def test_postpaid_with_a_card_and_no_credit_is_not_suspended(run, ev):
    grandfathered_postpaid(run, ev)
    run(ev.usage("20"))
    assert run.snap()["status"] == "active"
    assert of_type(run.outputs, "account_suspended") == []


def test_enterprise_is_never_suspended(run, ev):
    enterprise_postpaid(run, ev, with_card=False)
    run(ev.usage("100"))
    assert run.snap()["status"] == "active"
    outputs = run.all(ev.pm_added(), ev.pm_removed(), ev.usage("10"))
    assert "account_suspended" not in types(outputs)
    assert run.snap()["status"] == "active"


def test_enterprise_prepaid_without_card_is_paused_not_suspended(run, ev):
    run(ev.opened("enterprise"))
    run(ev.purchase("5"))
    outputs = run(ev.usage("5")).outputs
    assert types(outputs) == ["usage_paused"]
    assert run.snap()["status"] == "paused"


def test_zero_free_credit_suspends_at_opening():
    run, ev = Run(BillingConfig(free_credit=money("0"))), Events()
    outputs = run(ev.opened()).outputs
    assert "account_suspended" in types(outputs)
    assert run.snap()["status"] == "suspended"
