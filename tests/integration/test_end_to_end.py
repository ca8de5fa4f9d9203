"""The walking skeleton, end to end on the real parts: a usage event published with kafka-python
as Avro -> the Faust worker updates the account's table -> account-state events -> the sink ->
rows in the real clickhouse-server, read back with clickhouse-driver."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from billing.events import normalize_input
from runtime.observe import table_snapshots
from runtime.settings import Settings
from sinks.clickhouse import open_writer
from sinks.sink import SinkConfig, build_sink
from tests.integration.pipeline import WorkerProcess, isolated, publish
from tests.integration.test_sink_kafka import run_until

pytestmark = pytest.mark.integration

OPENED = datetime(2026, 5, 4, 9, tzinfo=UTC)


def test_usage_event_reaches_clickhouse(stack: Settings, tmp_path: Path) -> None:
    settings, app_id = isolated(stack, "skeleton")
    settings = replace(settings, clickhouse_url=(
        f"clickhouse://127.0.0.1:{stack.clickhouse_port}/skeleton_{uuid.uuid4().hex[:8]}"))
    publish(settings, [normalize_input(event) for event in (
        {"type": "account_opened", "event_id": "open-1", "account_id": "acct-e2e",
         "timestamp": OPENED, "created_at": OPENED, "contract": "self_serve"},
        # 5,000,000 llama tokens at $0.20 per million: exactly the $1.00 free credit.
        {"type": "usage", "event_id": "usage-1", "account_id": "acct-e2e",
         "timestamp": OPENED + timedelta(minutes=1), "product": "llama-v3p1-8b",
         "quantities": {"input_tokens": 2_000_000, "output_tokens": 3_000_000}},
    )])

    WorkerProcess(settings, app_id, tmp_path / "worker.log").run_to_end(timeout=300)
    snapshot = table_snapshots(settings, app_id)["acct-e2e"]
    assert snapshot["credit_balance"] == Decimal("0.000000")
    assert snapshot["status"] == "suspended"  # no payment method and no credit left

    with open_writer(settings) as writer:
        writer.apply_ddl()
        sink = build_sink(settings, writer, SinkConfig(batch_seconds=0.2),
                          group_id=f"sink-{app_id}")

        def written() -> bool:
            return bool(writer.query("SELECT count() FROM rated_usage")[0][0]) and bool(
                writer.query("SELECT count() FROM account_state_events "
                             "WHERE type = 'account_suspended'")[0][0])

        run_until(sink, written)
        usage = writer.query("SELECT event_id, cost, over_limit FROM rated_usage FINAL")
        assert usage == [("usage-1", Decimal("1.000000"), 0)]
        types = {row[0] for row in writer.query("SELECT type FROM account_state_events FINAL")}
        assert {"account_suspended", "usage_paused", "tier_changed"} <= types
