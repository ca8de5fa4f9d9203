"""Opening an account: billing model, cutover, free credit, what account_opened emits."""

from decimal import Decimal

import pytest

from billing.config import BillingConfig, Tier
from tests.ledger.builders import (
    CUTOVER,
    JUST_BEFORE_CUTOVER,
    Events,
    Run,
    at,
    money,
    of_type,
    only,
    types,
)

# -- billing model ---------------------------------------------------------------------------


def test_self_serve_created_on_the_cutover_is_prepaid(run, ev):
    run(ev.opened(created_at=CUTOVER))
    assert run.snap()["billing_model"] == "prepaid"


def test_self_serve_created_before_the_cutover_stays_postpaid(run, ev):
    """Source: 'Accounts created before June 1 remain on existing postpaid terms'."""
    run(ev.opened(created_at=JUST_BEFORE_CUTOVER))
    assert run.snap()["billing_model"] == "postpaid"


def test_self_serve_after_the_cutover_is_prepaid(run, ev):
    run(ev.opened(created_at="2025-09-01T00:00:00Z"))
    assert run.snap()["billing_model"] == "prepaid"


def test_model_follows_created_at_not_the_event_time(run, ev):
    """A grandfathered account whose account_opened is replayed after the cutover."""
    run(ev.opened(created_at="2024-11-02T10:00:00Z", at="2025-08-01T00:00:00Z"))
    assert run.snap()["billing_model"] == "postpaid"


def test_cutover_is_configurable():
    run, ev = Run(BillingConfig(prepaid_cutover=at("2030-01-01T00:00:00Z"))), Events()
    run(ev.opened(created_at="2029-12-31T23:59:59Z"))
    assert run.snap()["billing_model"] == "postpaid"


@pytest.mark.parametrize(("created_at", "requested", "model"), [
    (CUTOVER, "postpaid", "prepaid"),
    (JUST_BEFORE_CUTOVER, "prepaid", "postpaid"),
])
def test_self_serve_disagreeing_billing_model_is_rejected(run, ev, created_at, requested, model):
    """A self-serve account cannot choose its model: opened with the rule's model, plus
    command_rejected."""
    outputs = run(ev.opened(created_at=created_at, billing_model=requested)).outputs
    rejected = only(outputs, "command_rejected")
    assert rejected["rejected_type"] == "account_opened"
    assert requested in rejected["reason"]
    assert rejected["event_id"] == "acct-1:account_opened-1:command_rejected"
    assert run.snap()["billing_model"] == model
    assert "tier_changed" in types(outputs)  # the account is opened all the same


@pytest.mark.parametrize(("created_at", "requested"), [
    (CUTOVER, "prepaid"), (JUST_BEFORE_CUTOVER, "postpaid")])
def test_self_serve_agreeing_billing_model_is_accepted(run, ev, created_at, requested):
    outputs = run(ev.opened(created_at=created_at, billing_model=requested)).outputs
    assert "command_rejected" not in types(outputs)
    assert run.snap()["billing_model"] == requested


@pytest.mark.parametrize(("requested", "model"), [
    ("postpaid", "postpaid"), ("prepaid", "prepaid"), (None, "prepaid")])
def test_enterprise_postpaid_on_request_else_prepaid(run, ev, requested, model):
    """Source: 'Enterprise accounts can also be configured for postpaid billing on request'."""
    outputs = run(ev.opened("enterprise", created_at=JUST_BEFORE_CUTOVER,
                            billing_model=requested)).outputs
    assert run.snap()["billing_model"] == model
    assert "command_rejected" not in types(outputs)


# -- free credit -----------------------------------------------------------------------------


def test_new_self_serve_account_gets_one_dollar(run, ev):
    """Source: 'What happens when I finish my $1 credit?'."""
    run(ev.opened())
    snap = run.snap()
    assert snap["credit_balance"] == Decimal("1.000000")
    assert run.state().free_credit_granted == Decimal("1.000000")
    assert snap["lifetime_credits_purchased"] == 0  # a promotion, not a purchase


def test_grandfathered_self_serve_account_gets_the_free_credit_too(run, ev):
    run(ev.opened(created_at=JUST_BEFORE_CUTOVER))
    assert run.snap()["credit_balance"] == Decimal("1.000000")


@pytest.mark.parametrize("requested", ["postpaid", "prepaid", None])
def test_enterprise_gets_no_free_credit(run, ev, requested):
    run(ev.opened("enterprise", billing_model=requested))
    assert run.snap()["credit_balance"] == 0
    assert run.state().free_credit_granted == 0


def test_free_credit_is_configurable():
    run, ev = Run(BillingConfig(free_credit=money("2.5"))), Events()
    run(ev.opened())
    assert run.snap()["credit_balance"] == Decimal("2.500000")


# -- what opening emits -----------------------------------------------------------------------


def test_self_serve_opening_emits_tier_and_limits(run, ev):
    outputs = run(ev.opened(event_id="open-1")).outputs
    assert types(outputs) == ["tier_changed", "rate_limits_changed"]  # tier 0 has no budget
    tier = only(outputs, "tier_changed")
    assert (tier["from_tier"], tier["to_tier"]) == (None, "0")
    limits = only(outputs, "rate_limits_changed")
    assert (limits["rpm_limit"], limits["tpm_limit"]) == (10, 60_000)
    assert [o["event_id"] for o in outputs] == ["acct-1:open-1:tier_changed",
                                                "acct-1:open-1:rate_limits_changed"]
    assert all(o["cause_event_id"] == "open-1" for o in outputs)
    assert all(o["timestamp"] == ev.clock for o in outputs)
    snap = run.snap()
    assert (snap["status"], snap["tier"], snap["monthly_budget"]) == ("active", "0", None)
    assert (snap["rpm_limit"], snap["has_payment_method"]) == (10, False)
    assert snap["open_period"] == "2025-07"
    assert snap["pending_top_up_request_id"] is None


def test_enterprise_opening_emits_enterprise_tier_with_full_limits(run, ev):
    outputs = run(ev.opened("enterprise", billing_model="postpaid")).outputs
    assert types(outputs) == ["tier_changed", "rate_limits_changed"]
    assert only(outputs, "tier_changed")["to_tier"] == "enterprise"
    limits = only(outputs, "rate_limits_changed")
    assert (limits["rpm_limit"], limits["tpm_limit"]) == (6_000, 36_000_000)
    assert run.snap()["monthly_budget"] is None
    assert run.snap()["status"] == "active"


def test_enterprise_prepaid_opens_paused_with_no_credit(run, ev):
    """Prepaid with a zero balance and no auto top-up: paused until it buys credits (not
    suspended: enterprise accounts are never suspended)."""
    outputs = run(ev.opened("enterprise")).outputs
    assert only(outputs, "usage_paused")["reason"] == "credits_exhausted"
    assert "account_suspended" not in types(outputs)
    assert run.snap()["status"] == "paused"
    outputs = run(ev.purchase("10")).outputs
    assert only(outputs, "usage_resumed")
    assert run.snap()["status"] == "active"


def test_opening_emits_budget_changed_when_the_opening_tier_has_a_budget():
    config = BillingConfig(tiers=(Tier("0", Decimal("0"), money("5"), 10, 60_000),
                                  *BillingConfig().tiers[1:]))
    run, ev = Run(config), Events()
    outputs = run(ev.opened()).outputs
    budget = only(outputs, "budget_changed")
    assert (budget["monthly_budget"], budget["reason"]) == (money("5"), "tier_default")


def test_opening_an_open_account_again_is_rejected(run, ev):
    run(ev.opened())
    run(ev.usage("0.25"))
    before = run.snap()
    outputs = run(ev.opened("enterprise", billing_model="postpaid")).outputs
    assert types(outputs) == ["command_rejected"]
    assert outputs[0]["rejected_type"] == "account_opened"
    assert run.snap() == before


def test_opening_outputs_carry_the_snapshot_after_the_change(run, ev):
    outputs = run(ev.opened()).outputs
    assert all(o["snapshot"] == run.snap() for o in outputs)
    assert of_type(outputs, "tier_changed")[0]["snapshot"]["account_id"] == "acct-1"
