"""The account-status record and the may-send decision a gateway acts on."""

from billing.account_status import decide, status_record
from billing.ledger import snapshot
from tests.ledger.builders import at, money, prepaid_with_card


def record(run, version=1):
    return status_record(snapshot(run.state()), at("2025-07-01T00:00:00Z"), version)


def test_an_active_account_may_send_within_its_limits(run, ev):
    prepaid_with_card(run, ev, credit="10")
    decision = decide(record(run))
    assert decision.allowed and decision.reason == "active"
    assert decision.rpm_limit == 6_000 and decision.credit_balance == money("11")


def test_a_paused_account_may_not_send_and_says_why(run, ev):
    prepaid_with_card(run, ev)
    run(ev.usage("2"))
    status = record(run)
    assert status["may_send"] is False and status["blocked_reasons"] == ["credits_exhausted"]
    assert decide(status).reason == "credits_exhausted"


def test_a_suspended_account_is_blocked_as_suspended(run, ev):
    run(ev.opened())
    run(ev.usage("2"))
    status = record(run)
    assert "suspended" in status["blocked_reasons"] and not decide(status).allowed


def test_an_unknown_account_is_refused_unless_configured_otherwise():
    assert not decide(None).allowed and decide(None).reason == "unknown"
    assert decide(None, allow_unknown=True).allowed
