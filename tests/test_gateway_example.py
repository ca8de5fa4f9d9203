"""The example gateway (``examples/gateway.py``): refuses paused, suspended and unknown accounts
with the reason, holds each account to its requests-per-minute limit, allows otherwise."""

from __future__ import annotations

from billing.account_status import Decision
from examples.gateway import Gateway, TokenBucket
from runtime.account_status import StatusTable
from tests.test_account_status_client import record


class Statuses:
    """What the gateway needs of the client: ``may_send``."""

    def __init__(self) -> None:
        self.table = StatusTable()

    def may_send(self, account_id: str) -> Decision:
        return self.table.decision(account_id)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def gateway() -> tuple[Gateway, Statuses, Clock]:
    statuses, clock = Statuses(), Clock()
    return Gateway(statuses, clock=clock), statuses, clock


def test_paused_suspended_and_unknown_accounts_are_refused_with_the_reason() -> None:
    gate, statuses, _ = gateway()
    statuses.table.apply("P", record("P", 1, status="paused",
                                     pause_reasons=("credits_exhausted",)))
    statuses.table.apply("S", record("S", 1, status="suspended"))
    assert (gate.admit("P").allowed, gate.admit("P").reason) == (False, "credits_exhausted")
    assert (gate.admit("S").allowed, gate.admit("S").reason) == (False, "suspended")
    assert (gate.admit("X").allowed, gate.admit("X").reason) == (False, "unknown")


def test_requests_per_minute_are_enforced_and_refill_with_time() -> None:
    gate, statuses, clock = gateway()
    statuses.table.apply("A", record("A", 1, rpm=60))
    assert all(gate.admit("A").allowed for _ in range(60))  # a full minute's burst
    refused = gate.admit("A")
    assert not refused.allowed and refused.reason == "rate_limited"
    clock.now += 1.0  # one request a second comes back
    assert gate.admit("A").allowed and not gate.admit("A").allowed
    clock.now += 30.0
    assert sum(gate.admit("A").allowed for _ in range(40)) == 30


def test_a_new_rate_limit_takes_effect_at_once() -> None:
    gate, statuses, _ = gateway()
    statuses.table.apply("A", record("A", 1, rpm=2))
    assert [gate.admit("A").allowed for _ in range(3)] == [True, True, False]
    statuses.table.apply("A", record("A", 2, rpm=600))  # tier up
    assert gate.admit("A").allowed and gate.admit("A").decision.rpm_limit == 600


def test_a_paused_account_that_resumes_is_served_again() -> None:
    gate, statuses, _ = gateway()
    statuses.table.apply("A", record("A", 1, status="paused", pause_reasons=("budget_reached",)))
    assert gate.admit("A").reason == "budget_reached"
    statuses.table.apply("A", record("A", 2))
    assert gate.admit("A").allowed and gate.admit("A").reason == "active"


def test_the_bucket_never_holds_more_than_a_minute() -> None:
    bucket = TokenBucket(10, now=0.0)
    assert bucket.take(now=3600.0) and bucket.tokens == 9
