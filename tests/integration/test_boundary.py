"""Time and identity at the boundary, on the real broker: a gateway's bad clock is dead-lettered
and closes nobody's month; a purchase delivered again ten days of event time later is credited
once, in the ledger and in ClickHouse; the pipeline ends where ``billing replay`` ends."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from billing.events import normalize_input
from billing.ledger import WATERMARK_CAUSE_PREFIX, period_of
from commands.deadletter import read_dead_letters
from runtime.observe import output_events
from runtime.settings import Settings
from schemas.codec import Codec
from sinks.clickhouse import open_writer
from tests.integration.pipeline import (
    WorkerProcess,
    assert_matches,
    isolated,
    publish,
    replay_of,
    sink_into_clickhouse,
)

pytestmark = pytest.mark.integration


def make(event_type: str, event_id: str, account_id: str, timestamp: datetime,
         **fields: Any) -> dict[str, Any]:
    return normalize_input({"type": event_type, "event_id": event_id, "account_id": account_id,
                            "timestamp": timestamp, **fields})


def usage(event_id: str, account_id: str, timestamp: datetime) -> dict[str, Any]:
    return make("usage", event_id, account_id, timestamp, product="llama-v3p1-8b",
                quantities={"input_tokens": 1_000_000})


def opened(account_id: str, timestamp: datetime) -> dict[str, Any]:
    return make("account_opened", f"open-{account_id}", account_id, timestamp,
                created_at=timestamp, contract="enterprise", billing_model="postpaid")


def test_bad_clocks_are_dead_lettered_and_late_copies_change_nothing(stack: Settings,
                                                                      tmp_path: Path) -> None:
    settings, app_id = isolated(stack, "boundary")
    now = datetime.now(UTC).replace(microsecond=0)
    start = now - timedelta(days=12)
    purchase = make("credits_purchased", "buy-1", "C", start + timedelta(hours=1),
                    amount="50", payment_id="pay-1")
    first = [opened("A", start), opened("B", start), opened("C", start),
             usage("a-1", "A", start + timedelta(hours=2)),
             usage("b-1", "B", start + timedelta(hours=2)),
             purchase,
             usage("c-1", "C", now - timedelta(days=2))]  # C's event time moves 10 days on
    publish(settings, first)
    worker = WorkerProcess(settings, app_id, tmp_path / "worker.log").run_to_end(timeout=300)

    ahead = usage("a-ahead", "A", now + timedelta(days=3))
    far_ahead = usage("a-2099", "A", datetime(2099, 1, 1, tzinfo=UTC))
    retried = {**purchase, "event_id": "buy-1-retry"}  # the same payment under a new event id
    second = [ahead, far_ahead, purchase, retried, usage("b-2", "B", now - timedelta(hours=1))]
    publish(settings, second)
    worker.run_to_end(timeout=300)

    letters = [entry.letter for entry in read_dead_letters(settings, Codec(settings.topics))]
    reasons = {letter["offset"]: letter["reason"] for letter in letters}
    assert len(letters) == 2, list(reasons.values())
    for letter in letters:
        assert "future tolerance" in letter["reason"] and "check the producer's clock" in \
            letter["reason"]
    assert any("2099-01-01T00:00:00.000Z" in reason for reason in reasons.values())

    outputs = output_events(settings)
    current = period_of(now)  # no clock of a gateway may close it, nor anything after it
    assert not [output for output in outputs
                if output["type"] == "invoice_issued" and output["period"] >= current]
    assert not [output for output in outputs
                if output["cause_event_id"] >= f"{WATERMARK_CAUSE_PREFIX}{current}"
                and output["cause_event_id"].startswith(WATERMARK_CAUSE_PREFIX)]
    credits = [output for output in outputs if output["type"] == "credits_applied"]
    assert len({output["event_id"] for output in credits}) == 1

    # The broker appended everything at about `now`: replay with that clock is the oracle.
    expected = replay_of([{**event, "ingested_at": now} for event in first + second])
    assert expected[0]["C"]["lifetime_credits_purchased"] == Decimal("50.000000")
    assert_matches(settings, app_id, expected)

    # ClickHouse holds the credit once, and the money agrees.
    with open_writer(sink_into_clickhouse(settings, app_id)) as writer:
        rows = writer.query("SELECT event_id, amount FROM credit_purchases FINAL "
                            "WHERE account_id = 'C'")
    assert rows == [(credits[0]["event_id"], Decimal("50.000000"))]
