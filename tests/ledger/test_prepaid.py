"""Prepaid accounts: credit balance, credits_exhausted pause, auto top-up."""

from decimal import Decimal

import pytest

from tests.ledger.builders import money, of_type, only, prepaid_with_card, types

# -- balance and the credits_exhausted pause --------------------------------------------------


def test_usage_is_taken_from_credit(run, ev):
    prepaid_with_card(run, ev, credit="20")
    run(ev.usage("5.25"))
    snap = run.snap()
    assert snap["credit_balance"] == money("15.75")
    assert snap["outstanding_balance"] == 0
    assert snap["month_to_date_spend"] == snap["lifetime_spend"] == money("5.25")


def test_balance_exactly_zero_pauses(run, ev):
    prepaid_with_card(run, ev, credit="9")
    assert types(run(ev.usage("9.999999")).outputs) == []
    assert run.snap()["credit_balance"] == money("0.000001")
    outputs = run(ev.usage("0.000001")).outputs
    assert types(outputs) == ["usage_paused"]
    assert outputs[0]["reason"] == "credits_exhausted"
    snap = run.snap()
    assert (snap["credit_balance"], snap["status"], snap["pause_reasons"]) == (
        0, "paused", ["credits_exhausted"])


def test_usage_in_flight_may_take_the_balance_below_zero(run, ev):
    prepaid_with_card(run, ev)
    transition = run(ev.usage("3"))
    assert run.snap()["credit_balance"] == money("-2")
    assert transition.rated_usage["cost"] == money("3")  # charged in full, never capped


def test_next_credits_cover_the_negative_balance_first(run, ev):
    prepaid_with_card(run, ev)
    run(ev.usage("3"))  # balance -2
    outputs = run(ev.purchase("2")).outputs
    assert run.snap()["credit_balance"] == 0
    assert types(outputs) == ["credits_applied"]  # balance 0: still paused
    assert run.snap()["status"] == "paused"
    outputs = run(ev.purchase("0.000001")).outputs
    assert only(outputs, "usage_resumed")["reason"] == "credits_exhausted"
    assert run.snap()["status"] == "active"


def test_purchase_on_prepaid_goes_entirely_to_credit(run, ev):
    prepaid_with_card(run, ev)
    applied = only(run(ev.purchase("10")).outputs, "credits_applied")
    assert applied["applied_to_credit"] == money("10")
    assert applied["applied_to_outstanding"] == 0
    assert applied["invoice_id"] is None


def test_usage_while_paused_is_charged_and_flagged_over_limit(run, ev):
    prepaid_with_card(run, ev)
    run(ev.usage("1"))  # paused at 0
    rated = run(ev.usage("0.5")).rated_usage
    assert rated["over_limit"] is True
    assert rated["cost"] == money("0.5")
    assert run.snap()["credit_balance"] == money("-0.5")


def test_the_usage_that_causes_the_pause_is_not_over_limit(run, ev):
    prepaid_with_card(run, ev)
    assert run(ev.usage("1")).rated_usage["over_limit"] is False


# -- auto top-up --------------------------------------------------------------------------------


def test_auto_top_up_requests_at_exactly_the_minimum(run, ev):
    prepaid_with_card(run, ev, credit="9")  # balance 10
    assert types(run(ev.auto_top_up(minimum_balance="5", top_up_amount="20")).outputs) == []
    assert types(run(ev.usage("4.999999")).outputs) == []  # 5.000001 > 5
    outputs = run(ev.usage("0.000001", event_id="u-at-min")).outputs
    request = only(outputs, "top_up_requested")
    assert request["amount"] == money("20")
    assert request["top_up_request_id"] == "topup-acct-1-1"
    assert request["event_id"] == "acct-1:u-at-min:top_up_requested"
    assert run.snap()["pending_top_up_request_id"] == "topup-acct-1-1"
    assert run.snap()["status"] == "active"


def test_only_one_request_while_pending(run, ev):
    prepaid_with_card(run, ev, credit="9")
    run(ev.auto_top_up(minimum_balance="5", top_up_amount="20"))
    outputs = run.all(ev.usage("6"), ev.usage("1"), ev.usage("1"), ev.usage("1"))
    assert len(of_type(outputs, "top_up_requested")) == 1


def test_pending_top_up_keeps_usage_going_until_minus_the_top_up_amount(run, ev):
    prepaid_with_card(run, ev, credit="20")  # balance 21
    run(ev.auto_top_up(minimum_balance="5", top_up_amount="10"))
    assert "top_up_requested" in types(run(ev.usage("16")).outputs)  # balance 5
    assert types(run(ev.usage("14.999999")).outputs) == []  # -9.999999: not paused
    outputs = run(ev.usage("0.000001")).outputs  # exactly -10 = -top_up_amount
    assert types(outputs) == ["usage_paused"]
    assert outputs[0]["reason"] == "credits_exhausted"


def test_answered_top_up_clears_pending_and_requests_again_if_still_low(run, ev):
    prepaid_with_card(run, ev, credit="20")
    run(ev.auto_top_up(minimum_balance="5", top_up_amount="10"))
    run(ev.usage("16"))
    run(ev.usage("15"))  # -10: paused although pending
    outputs = run(ev.purchase("10", top_up_request_id="topup-acct-1-1")).outputs
    # balance 0 <= minimum: a new request at once; pending again, so usage resumes
    assert types(outputs) == ["credits_applied", "top_up_requested", "usage_resumed"]
    assert of_type(outputs, "top_up_requested")[0]["top_up_request_id"] == "topup-acct-1-2"
    assert run.snap()["pending_top_up_request_id"] == "topup-acct-1-2"


def test_answered_top_up_above_the_minimum_clears_pending(run, ev):
    prepaid_with_card(run, ev, credit="20")
    run(ev.auto_top_up(minimum_balance="5", top_up_amount="10"))
    run(ev.usage("16"))
    outputs = run(ev.purchase("10", top_up_request_id="topup-acct-1-1")).outputs
    assert types(outputs) == ["credits_applied"]
    snap = run.snap()
    assert snap["pending_top_up_request_id"] is None
    assert snap["credit_balance"] == money("15")


def test_a_purchase_with_another_id_does_not_clear_the_pending_top_up(run, ev):
    prepaid_with_card(run, ev, credit="20")
    run(ev.auto_top_up(minimum_balance="5", top_up_amount="10"))
    run(ev.usage("16"))
    outputs = run.all(ev.purchase("1", top_up_request_id="topup-acct-1-99"),
                      ev.purchase("1"))
    assert types(outputs) == ["credits_applied", "credits_applied"]
    assert run.snap()["pending_top_up_request_id"] == "topup-acct-1-1"


def test_failed_top_up_with_balance_at_zero_pauses(run, ev):
    prepaid_with_card(run, ev, credit="20")
    run(ev.auto_top_up(minimum_balance="5", top_up_amount="10"))
    run(ev.usage("21"))  # balance 0, pending: not paused
    assert run.snap()["status"] == "active"
    outputs = run(ev.payment_failed(top_up_request_id="topup-acct-1-1")).outputs
    assert types(outputs) == ["usage_paused"]
    assert outputs[0]["reason"] == "top_up_failed"
    snap = run.snap()
    assert snap["pending_top_up_request_id"] is None
    assert snap["pause_reasons"] == ["top_up_failed"]


def test_failed_top_up_with_positive_balance_pauses_only_when_it_runs_out(run, ev):
    prepaid_with_card(run, ev, credit="20")
    run(ev.auto_top_up(minimum_balance="5", top_up_amount="10"))
    run(ev.usage("17"))  # balance 4, pending
    assert types(run(ev.payment_failed(top_up_request_id="topup-acct-1-1")).outputs) == []
    outputs = run.all(ev.usage("3"), ev.usage("1"))  # 1 then 0: no new request, then pause
    assert types(outputs) == ["usage_paused"]
    assert outputs[0]["reason"] == "top_up_failed"


def test_no_new_request_after_a_failure_until_a_purchase_succeeds(run, ev):
    prepaid_with_card(run, ev, credit="20")
    run(ev.auto_top_up(minimum_balance="5", top_up_amount="10"))
    run(ev.usage("21"))
    run(ev.payment_failed(top_up_request_id="topup-acct-1-1"))
    assert "top_up_requested" not in types(run.all(ev.usage("1"), ev.usage("1")))
    outputs = run(ev.purchase("3")).outputs  # balance 1 <= 5: the purchase unblocks requests
    assert types(outputs) == ["credits_applied", "top_up_requested", "usage_resumed"]
    assert only(outputs, "top_up_requested")["top_up_request_id"] == "topup-acct-1-2"


def test_reconfiguring_auto_top_up_after_a_failure_requests_at_once(run, ev):
    prepaid_with_card(run, ev, credit="20")
    run(ev.auto_top_up(minimum_balance="5", top_up_amount="10"))
    run(ev.usage("21"))
    run(ev.payment_failed(top_up_request_id="topup-acct-1-1"))
    outputs = run(ev.auto_top_up(minimum_balance="5", top_up_amount="25")).outputs
    assert types(outputs) == ["top_up_requested", "usage_resumed"]
    assert outputs[0]["amount"] == money("25")


def test_payment_failed_for_another_request_changes_nothing(run, ev):
    prepaid_with_card(run, ev, credit="20")
    run(ev.auto_top_up(minimum_balance="5", top_up_amount="10"))
    run(ev.usage("21"))
    before = run.copy_state()
    assert run(ev.payment_failed(top_up_request_id="topup-acct-1-7")).outputs == []
    assert run(ev.payment_failed()).outputs == []
    assert run.state().pending_top_up_request_id == before.pending_top_up_request_id
    assert run.state().top_up_failed is False


@pytest.mark.parametrize("balance_after", ["5", "0", "-3"])
def test_configuring_with_balance_at_or_below_the_minimum_requests_at_once(run, ev,
                                                                          balance_after):
    prepaid_with_card(run, ev, credit="20")  # 21
    run(ev.usage(str(money(21) - money(balance_after))))
    outputs = run(ev.auto_top_up(minimum_balance="5", top_up_amount="10")).outputs
    assert "top_up_requested" in types(outputs)
    assert run.snap()["auto_top_up"] == {"enabled": True, "minimum_balance": money("5"),
                                         "top_up_amount": money("10")}


def test_configuring_with_balance_above_the_minimum_requests_nothing(run, ev):
    prepaid_with_card(run, ev, credit="20")
    assert run(ev.auto_top_up(minimum_balance="20.999999", top_up_amount="10")).outputs == []


def test_auto_top_up_without_a_payment_method_is_rejected(run, ev):
    run(ev.opened())
    before = run.snap()
    outputs = run(ev.auto_top_up()).outputs
    rejected = only(outputs, "command_rejected")
    assert rejected["rejected_type"] == "auto_top_up_configured"
    assert "payment method" in rejected["reason"]
    assert run.snap() == before


def test_disabling_auto_top_up_without_a_payment_method_is_accepted(run, ev):
    run(ev.opened())
    assert run(ev.auto_top_up(enabled=False)).outputs == []
    assert run.snap()["auto_top_up"]["enabled"] is False


def test_auto_top_up_on_postpaid_is_rejected(run, ev):
    run(ev.opened("enterprise", billing_model="postpaid"))
    run(ev.pm_added())
    before = run.snap()
    rejected = only(run(ev.auto_top_up()).outputs, "command_rejected")
    assert "postpaid" in rejected["reason"]
    assert run.snap() == before


def test_disabled_auto_top_up_pauses_at_zero(run, ev):
    prepaid_with_card(run, ev, credit="20")
    run(ev.auto_top_up(enabled=False, minimum_balance="5", top_up_amount="10"))
    outputs = run(ev.usage("21")).outputs
    assert types(outputs) == ["usage_paused"]


def test_no_top_up_request_without_a_payment_method(run, ev):
    prepaid_with_card(run, ev, credit="20")
    run(ev.auto_top_up(minimum_balance="5", top_up_amount="10"))
    run(ev.pm_removed())
    outputs = run(ev.usage("17")).outputs
    assert "top_up_requested" not in types(outputs)
    assert run.snap()["pending_top_up_request_id"] is None


def test_top_up_request_ids_are_deterministic(run, ev):
    prepaid_with_card(run, ev, credit="20")
    run(ev.auto_top_up(minimum_balance="5", top_up_amount="10"))
    run(ev.usage("16"))
    run(ev.purchase("10", top_up_request_id="topup-acct-1-1"))
    run(ev.usage("11"))
    ids = [o["top_up_request_id"] for o in of_type(run.outputs, "top_up_requested")]
    assert ids == ["topup-acct-1-1", "topup-acct-1-2"]


def test_top_up_purchase_counts_as_a_purchase(run, ev):
    prepaid_with_card(run, ev, credit="20")
    run(ev.auto_top_up(minimum_balance="5", top_up_amount="40"))
    run(ev.usage("16"))
    outputs = run(ev.purchase("40", top_up_request_id="topup-acct-1-1")).outputs
    assert only(outputs, "tier_changed")["to_tier"] == "2"  # 20 + 40 purchased >= 50
    assert run.snap()["lifetime_credits_purchased"] == Decimal("60.000000")
