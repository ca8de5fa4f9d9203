"""A gateway that asks the billing pipeline "may this account send now?" before each request.

It reads every account's status with :class:`runtime.account_status.AccountStatusClient` (the
compacted ``billing.account-status`` topic, from its earliest offset to the end, then followed) and
answers each request: refused when the account is paused or suspended (with the reason: e.g.
``credits_exhausted``, ``suspended``) or unknown, refused with ``rate_limited`` past its
requests-per-minute limit (a token bucket per account, refilled continuously, sized by the
account's current ``rpm_limit``), allowed otherwise.

    python examples/gateway.py acct-1 acct-2      # one answer per account, against BILLING_* Kafka
    echo acct-1 | python examples/gateway.py      # account ids from stdin, one a line
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from billing.account_status import Decision
from runtime.account_status import AccountStatusClient
from runtime.settings import load_settings


class TokenBucket:
    """``per_minute`` requests a minute, in bursts of at most ``per_minute``."""

    def __init__(self, per_minute: int, now: float) -> None:
        self.per_minute = per_minute
        self.tokens, self.updated = float(per_minute), now

    def take(self, now: float) -> bool:
        elapsed = max(0.0, now - self.updated)
        self.tokens = min(self.per_minute, self.tokens + elapsed * self.per_minute / 60)
        self.updated = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


class Statuses(Protocol):
    """What the gateway needs: :meth:`AccountStatusClient.may_send`."""

    def may_send(self, account_id: str) -> Decision: ...


@dataclass(frozen=True)
class Answer:
    allowed: bool
    reason: str  # "active", the blocked reasons ("credits_exhausted", "suspended"...),
    #              "unknown" or "rate_limited"
    decision: Decision


class Gateway:
    """Admits requests: ``statuses`` is the client (or anything with ``may_send``); ``clock``
    is monotonic seconds (injectable for tests)."""

    def __init__(self, statuses: Statuses,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.statuses, self.clock = statuses, clock
        self.buckets: dict[str, TokenBucket] = {}

    def admit(self, account_id: str) -> Answer:
        decision = self.statuses.may_send(account_id)
        if not decision.allowed:  # paused, suspended, or unknown
            return Answer(False, decision.reason, decision)
        if decision.rpm_limit is None:  # an unknown account a lenient gateway lets through
            return Answer(True, decision.reason, decision)
        now = self.clock()
        bucket = self.buckets.get(account_id)
        if bucket is None or bucket.per_minute != decision.rpm_limit:  # new, or limits changed
            bucket = self.buckets[account_id] = TokenBucket(decision.rpm_limit, now)
        if not bucket.take(now):
            return Answer(False, "rate_limited", decision)
        return Answer(True, decision.reason, decision)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("accounts", nargs="*", help="account ids (default: read from stdin)")
    parser.add_argument("--allow-unknown", action="store_true",
                        help="serve accounts the topic has no record of")
    parser.add_argument("--timeout", type=float, default=300, help="seconds to load statuses")
    args = parser.parse_args(argv)

    def show(progress: object) -> None:
        print(progress, file=sys.stderr)

    with AccountStatusClient(load_settings(), allow_unknown=args.allow_unknown,
                             on_progress=show) as statuses:
        if not statuses.wait_ready(args.timeout):
            print(f"statuses not loaded after {args.timeout:.0f}s: {statuses.progress}",
                  file=sys.stderr)
            return 1
        gateway = Gateway(statuses)
        for line in args.accounts or sys.stdin:
            account_id = line.strip()
            if account_id:
                answer = gateway.admit(account_id)
                d = answer.decision
                print(f"{account_id}\t{'allow' if answer.allowed else 'refuse'}\t"
                      f"{answer.reason}\trpm={d.rpm_limit}\tbalance={d.credit_balance}\t"
                      f"version={d.version}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
