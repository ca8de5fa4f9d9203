"""Tiers and rate limits: payment method, qualifying amount, never down, RPM without a card."""

from decimal import Decimal

import pytest

from tests.ledger.builders import (
    enterprise_postpaid,
    grandfathered_postpaid,
    ledger_view,
    money,
    of_type,
    only,
    prepaid_with_card,
    types,
)


def test_no_payment_method_means_10_rpm(run, ev):
    """Source: 'accounts without a payment method are subject to a provisional rate limit of 10
    requests per minute (RPM)'."""
    run(ev.opened())
    assert (run.snap()["rpm_limit"], run.snap()["tpm_limit"]) == (10, 60_000)


def test_adding_a_payment_method_gives_6000_rpm_and_tier_1(run, ev):
    """Source: 'To access full rate limits (up to 6,000 RPM), add a payment method'."""
    run(ev.opened())
    outputs = run(ev.pm_added()).outputs
    assert types(outputs) == ["tier_changed", "rate_limits_changed", "budget_changed"]
    tier = only(outputs, "tier_changed")
    assert (tier["from_tier"], tier["to_tier"]) == ("0", "1")
    limits = only(outputs, "rate_limits_changed")
    assert (limits["rpm_limit"], limits["tpm_limit"]) == (6_000, 3_600_000)
    budget = only(outputs, "budget_changed")
    assert (budget["monthly_budget"], budget["reason"]) == (Decimal("50.000000"), "tier_default")


def test_a_second_payment_method_changes_nothing(run, ev):
    prepaid_with_card(run, ev)
    assert run(ev.pm_added("pm-2")).outputs == []
    assert run(ev.pm_added("pm-1")).outputs == []  # already on file


def test_removing_the_payment_method_drops_rpm_but_not_the_tier(run, ev):
    prepaid_with_card(run, ev, credit="60")  # tier 2
    assert run.snap()["tier"] == "2"
    outputs = run(ev.pm_removed()).outputs
    assert types(outputs) == ["rate_limits_changed"]
    assert (outputs[0]["rpm_limit"], outputs[0]["tpm_limit"]) == (10, 7_200_000)
    snap = run.snap()
    assert (snap["tier"], snap["rpm_limit"], snap["has_payment_method"]) == ("2", 10, False)
    assert snap["monthly_budget"] == money("500")  # the tier, and its budget, stay
    outputs = run(ev.pm_added("pm-2")).outputs
    assert types(outputs) == ["rate_limits_changed"]
    assert outputs[0]["rpm_limit"] == 6_000


def test_removing_one_of_two_payment_methods_keeps_the_limits(run, ev):
    prepaid_with_card(run, ev)
    run(ev.pm_added("pm-2"))
    assert run(ev.pm_removed("pm-1")).outputs == []
    assert run.snap()["rpm_limit"] == 6_000


def test_removing_an_unknown_payment_method_is_rejected(run, ev):
    prepaid_with_card(run, ev)
    before = ledger_view(run.state())
    rejected = only(run(ev.pm_removed("pm-404")).outputs, "command_rejected")
    assert rejected["rejected_type"] == "payment_method_removed"
    assert ledger_view(run.state()) == before


def test_enterprise_keeps_6000_rpm_without_a_payment_method(run, ev):
    enterprise_postpaid(run, ev, with_card=False)
    assert run.snap()["rpm_limit"] == 6_000
    run(ev.pm_added())
    assert run(ev.pm_removed()).outputs == []
    assert (run.snap()["rpm_limit"], run.snap()["tier"]) == (6_000, "enterprise")


@pytest.mark.parametrize(("purchased", "tier"), [
    ("49.999999", "1"), ("50", "2"), ("499.999999", "2"), ("500", "3"), ("4999.999999", "3"),
    ("5000", "4"), ("1000000", "4")])
def test_tier_thresholds_by_credits_purchased(run, ev, purchased, tier):
    prepaid_with_card(run, ev, credit=purchased)
    assert run.snap()["tier"] == tier


def test_tier_thresholds_by_lifetime_spend(run, ev):
    """Qualifying amount = max(lifetime spend, lifetime credits purchased)."""
    grandfathered_postpaid(run, ev)
    run(ev.usage("49.999999"))
    assert run.snap()["tier"] == "1"
    outputs = run(ev.usage("0.000001")).outputs
    assert only(outputs, "tier_changed")["to_tier"] == "2"


def test_qualifying_is_the_max_not_the_sum(run, ev):
    grandfathered_postpaid(run, ev)
    run(ev.purchase("30"))
    run(ev.usage("30"))
    assert run.snap()["tier"] == "1"


def test_jump_over_several_tiers_emits_one_tier_changed(run, ev):
    prepaid_with_card(run, ev)
    outputs = run(ev.purchase("5000")).outputs
    tier = only(outputs, "tier_changed")
    assert (tier["from_tier"], tier["to_tier"]) == ("1", "4")
    limits = only(outputs, "rate_limits_changed")
    assert (limits["rpm_limit"], limits["tpm_limit"]) == (6_000, 36_000_000)
    assert only(outputs, "budget_changed")["monthly_budget"] == money("50000")


def test_purchases_without_a_payment_method_count_once_one_is_added(run, ev):
    run(ev.opened())
    run(ev.purchase("600"))
    assert run.snap()["tier"] == "0"
    outputs = run(ev.pm_added()).outputs
    tier = only(outputs, "tier_changed")
    assert (tier["from_tier"], tier["to_tier"]) == ("0", "3")


def test_tier_never_goes_down(run, ev):
    prepaid_with_card(run, ev, credit="600")
    run.all(ev.pm_removed(), ev.usage("700"), ev.close_period("2025-07"),
            ev.usage("1", at="2025-09-15T00:00:00Z"))
    assert of_type(run.outputs, "tier_changed")[-1]["to_tier"] == "3"
    assert run.snap()["tier"] == "3"


def test_tier_changes_only_once_per_threshold(run, ev):
    prepaid_with_card(run, ev)
    run.all(*(ev.purchase("10") for _ in range(10)))
    changes = [(o["from_tier"], o["to_tier"]) for o in of_type(run.outputs, "tier_changed")]
    assert changes == [(None, "0"), ("0", "1"), ("1", "2")]


def test_enterprise_tier_never_changes(run, ev):
    enterprise_postpaid(run, ev)
    run.all(ev.purchase("10000"), ev.usage("6000"))
    assert [o["to_tier"] for o in of_type(run.outputs, "tier_changed")] == ["enterprise"]
