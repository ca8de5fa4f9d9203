"""Monthly budget: tier default, customer budget, budget_reached pause and when it lifts."""

from decimal import Decimal

from tests.ledger.builders import (
    SMALL_TIERS_CONFIG,
    Events,
    Run,
    enterprise_postpaid,
    ledger_view,
    money,
    only,
    prepaid_with_card,
    types,
)


def test_default_budget_is_the_tier_maximum(run, ev):
    run(ev.opened())
    assert run.snap()["monthly_budget"] is None  # tier 0: none
    run(ev.pm_added())
    assert run.snap()["monthly_budget"] == Decimal("50.000000")


def test_enterprise_has_no_budget_by_default(run, ev):
    enterprise_postpaid(run, ev)
    assert run.snap()["monthly_budget"] is None


def test_budget_follows_the_tier_upward_until_set(run, ev):
    prepaid_with_card(run, ev)
    budget = only(run(ev.purchase("50")).outputs, "budget_changed")
    assert (budget["monthly_budget"], budget["reason"]) == (money("500"), "tier_default")
    run(ev.budget("100"))
    outputs = run(ev.purchase("500")).outputs  # tier 3: the customer's budget stays
    assert only(outputs, "tier_changed")["to_tier"] == "3"
    assert "budget_changed" not in types(outputs)
    assert run.snap()["monthly_budget"] == money("100")


def test_budget_set_emits_budget_changed_by_customer(run, ev):
    prepaid_with_card(run, ev)
    outputs = run(ev.budget("20")).outputs
    budget = only(outputs, "budget_changed")
    assert (budget["monthly_budget"], budget["reason"]) == (money("20"), "customer")


def test_budget_set_null_returns_to_the_tier_default(run, ev):
    prepaid_with_card(run, ev, credit="50")  # tier 2
    run(ev.budget("20"))
    budget = only(run(ev.budget(None)).outputs, "budget_changed")
    assert (budget["monthly_budget"], budget["reason"]) == (money("500"), "tier_default")
    run(ev.purchase("500"))
    assert run.snap()["monthly_budget"] == money("5000")  # following the tier again


def test_budget_exactly_the_tier_maximum_is_accepted(run, ev):
    prepaid_with_card(run, ev)
    outputs = run(ev.budget("50")).outputs
    assert "command_rejected" not in types(outputs)
    assert run.state().customer_budget == money("50")


def test_budget_above_the_tier_maximum_is_rejected(run, ev):
    prepaid_with_card(run, ev)
    run(ev.budget("20"))
    before = ledger_view(run.state())
    outputs = run(ev.budget("50.000001")).outputs
    rejected = only(outputs, "command_rejected")
    assert rejected["rejected_type"] == "budget_set"
    assert "50.000001" in rejected["reason"]
    assert types(outputs) == ["command_rejected"]
    assert ledger_view(run.state()) == before


def test_any_budget_is_accepted_at_tier_0_and_capped_by_the_tier_later(run, ev):
    run(ev.opened())
    outputs = run(ev.budget("100000")).outputs
    assert only(outputs, "budget_changed")["monthly_budget"] == money("100000")
    outputs = run(ev.pm_added()).outputs  # tier 1: effective min(100000, 50)
    budget = only(outputs, "budget_changed")
    assert (budget["monthly_budget"], budget["reason"]) == (money("50"), "tier_default")
    run(ev.purchase("5000"))  # tier 4: min(100000, 50000)
    assert run.snap()["monthly_budget"] == money("50000")


def test_enterprise_accepts_any_budget(run, ev):
    enterprise_postpaid(run, ev)
    assert only(run(ev.budget("1000000")).outputs, "budget_changed")


def test_spend_exactly_the_budget_pauses(run, ev):
    prepaid_with_card(run, ev, credit="100")
    run(ev.budget("30"))
    assert types(run(ev.usage("29.999999")).outputs) == []
    outputs = run(ev.usage("0.000001")).outputs
    assert types(outputs) == ["usage_paused"]
    assert outputs[0]["reason"] == "budget_reached"
    snap = run.snap()
    assert (snap["status"], snap["pause_reasons"]) == ("paused", ["budget_reached"])
    assert snap["month_to_date_spend"] == money("30")


def test_usage_past_the_budget_is_charged_and_flagged_over_limit(run, ev):
    prepaid_with_card(run, ev, credit="100")
    run(ev.budget("30"))
    run(ev.usage("30"))
    rated = run(ev.usage("5")).rated_usage
    assert (rated["cost"], rated["over_limit"]) == (money("5"), True)
    assert run.snap()["credit_balance"] == money("66")


def test_budget_pause_lifts_when_the_budget_rises_above_the_spend(run, ev):
    prepaid_with_card(run, ev, credit="100")
    run(ev.budget("30"))
    run(ev.usage("30"))
    assert run(ev.budget("30")).outputs == []  # not above the spend: still paused
    outputs = run(ev.budget("40")).outputs
    assert types(outputs) == ["budget_changed", "usage_resumed"]
    assert outputs[1]["reason"] == "budget_reached"


def test_budget_pause_lifts_when_budget_set_null_returns_to_a_higher_default(run, ev):
    prepaid_with_card(run, ev, credit="100")  # tier 2: default budget 500
    run(ev.budget("30"))
    run(ev.usage("30"))
    assert "usage_resumed" in types(run(ev.budget(None)).outputs)


def test_budget_pause_lifts_when_the_tier_rises_above_the_spend():
    run, ev = Run(SMALL_TIERS_CONFIG), Events()
    prepaid_with_card(run, ev, credit="50")
    assert run.snap()["monthly_budget"] == money("10")  # tier 1 of the small table
    outputs = run(ev.usage("10")).outputs
    assert only(outputs, "usage_paused")["reason"] == "budget_reached"
    outputs = run(ev.purchase("50")).outputs  # 100 purchased: tier 2, budget 1000
    assert types(outputs) == ["credits_applied", "tier_changed", "rate_limits_changed",
                              "budget_changed", "usage_resumed"]


def test_budget_pause_lifts_at_the_month_rollover(run, ev):
    prepaid_with_card(run, ev, credit="100")
    run(ev.budget("30"))
    run(ev.usage("30", at="2025-07-31T23:00:00Z"))
    outputs = run(ev.usage("1", at="2025-08-01T00:10:00Z")).outputs  # new month, not closed
    assert only(outputs, "usage_resumed")["reason"] == "budget_reached"
    snap = run.snap()
    assert (snap["open_period"], snap["month_to_date_spend"], snap["status"]) == (
        "2025-08", money("1"), "active")


def test_budget_pause_lifts_when_the_month_closes(run, ev):
    prepaid_with_card(run, ev, credit="100")
    run(ev.budget("30"))
    run(ev.usage("30", at="2025-07-31T23:00:00Z"))
    outputs = run(ev.close_period("2025-07")).outputs
    resumed = only(outputs, "usage_resumed")
    assert resumed["event_id"] == "acct-1:close:2025-07:usage_resumed"
    assert run.snap()["month_to_date_spend"] == 0


def test_budget_pause_and_credit_pause_together(run, ev):
    """usage_paused per new reason; usage_resumed only when no reason is left."""
    prepaid_with_card(run, ev, credit="19")  # 20
    run(ev.budget("20"))
    outputs = run(ev.usage("20", event_id="u-20")).outputs
    assert [(o["event_id"], o["reason"]) for o in outputs] == [
        ("acct-1:u-20:usage_paused", "budget_reached"),
        ("acct-1:u-20:usage_paused:2", "credits_exhausted")]  # second of a type: ":2"
    assert run.snap()["pause_reasons"] == ["budget_reached", "credits_exhausted"]
    assert run(ev.purchase("10")).outputs[1:] == []  # credits back, budget still reached
    assert run.snap()["pause_reasons"] == ["budget_reached"]
    outputs = run(ev.budget(None)).outputs  # tier 1 default: 50 > 20
    assert types(outputs) == ["budget_changed", "usage_resumed"]


def test_zero_budget_pauses_at_once(run, ev):
    prepaid_with_card(run, ev, credit="10")
    outputs = run(ev.budget("0")).outputs
    assert types(outputs) == ["budget_changed", "usage_paused"]
