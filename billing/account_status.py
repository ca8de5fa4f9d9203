"""What a gateway needs to know about an account: may it send now, and within which limits.

The worker publishes :func:`status_record` to the compacted ``billing.account-status`` topic for
every account whose snapshot changed in a batch (billing rules sections 3 and 6); the gateway
client and the worker's HTTP endpoint answer "may this account send now?" with :func:`decide`
over that record. Pure: no I/O, no clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

SUSPENDED = "suspended"


def status_record(snapshot: dict[str, Any], updated_at: datetime,
                  version: int) -> dict[str, Any]:
    """The account-status record of a snapshot: the snapshot, ``may_send`` (true only when the
    account is active), ``blocked_reasons`` (its pause reasons, plus ``suspended``),
    ``updated_at`` (event time of the last input applied) and ``version`` (only grows)."""
    blocked = list(snapshot["pause_reasons"])
    if snapshot["status"] == SUSPENDED:
        blocked = sorted([*blocked, SUSPENDED])
    return {**snapshot, "may_send": snapshot["status"] == "active", "blocked_reasons": blocked,
            "updated_at": updated_at, "version": version}


@dataclass(frozen=True)
class Decision:
    """The answer to "may this account send a request now?", with the limits to enforce."""

    allowed: bool
    reason: str  # "active", a blocked reason ("suspended", "credits_exhausted", ...), "unknown"
    rpm_limit: int | None = None
    tpm_limit: int | None = None
    credit_balance: Decimal | None = None
    updated_at: datetime | None = None
    version: int | None = None


def decide(record: dict[str, Any] | None, *, allow_unknown: bool = False) -> Decision:
    """The decision for an account's latest status record (None: never seen). An unknown account
    is refused unless ``allow_unknown``: a gateway that has not caught up, or an id nobody opened,
    must not be served for free."""
    if record is None:
        return Decision(allow_unknown, "unknown")
    blocked = record["blocked_reasons"]
    return Decision(bool(record["may_send"]), ",".join(blocked) if blocked else "active",
                    record["rpm_limit"], record["tpm_limit"], record["credit_balance"],
                    record["updated_at"], record["version"])
