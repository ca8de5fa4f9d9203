"""The month-close policy by event time: one stream's watermark and the months it has closed.

Written once, used by replay (one watermark over the whole file) and by the worker (one per input
partition, kept in its ``partition-clock`` table): the watermark is the largest usage time among
accepted events (a refused event never moves it), and month M is closed for every account when
it reaches M's close time, the start of M+1 plus the grace period (billing rules section 5).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from billing.ledger import next_period, to_millis

if TYPE_CHECKING:
    from billing.ledger import Ledger


@dataclass(slots=True)
class Watermark:
    """The largest accepted usage time (ms) and the latest month closed because of it."""

    watermark_ms: int = 0
    closed_through: str | None = None
    _next_close_ms: int | None = None  # when the next month closes: most usage ends below it

    def advance(self, ledger: Ledger, usage_time: datetime) -> str | None:
        """Take in an applied usage's time; return the month to close through now (it and every
        month before it still open), or None when no close time was passed."""
        usage_ms = to_millis(usage_time)
        if usage_ms <= self.watermark_ms:
            return None
        self.watermark_ms = usage_ms
        if self._next_close_ms is not None and usage_ms < self._next_close_ms:
            return None
        closable = ledger.closable_through(usage_time)
        closed_through = self.closed_through
        newly_closable = closed_through is None or closable > closed_through
        if newly_closable:
            self.closed_through = closed_through = closable
        # Also when nothing new closes (a watermark loaded from its record knows no next close),
        # so the usage that follows skips this until the next close time.
        self._next_close_ms = to_millis(ledger.watermark_close_time(next_period(closed_through)))
        return closable if newly_closable else None

    def to_record(self) -> dict[str, Any]:
        """The stored form (the worker's ``partition-clock`` table)."""
        return {"watermark_ms": self.watermark_ms, "closed_through": self.closed_through}

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Watermark:
        return cls(record["watermark_ms"], record["closed_through"])
