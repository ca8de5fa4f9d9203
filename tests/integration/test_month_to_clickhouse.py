"""A generated month through the real broker, the worker and the sink into the Debian
clickhouse-server, with the server stopped and restarted while the sink is writing: afterwards
every event is there exactly once, reconciliation against the ledger finds zero difference, and
invoices_status holds each invoice as the worker's outputs leave it."""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from billing.events import normalize_input, to_jsonable
from devkit.stack.clickhouse import ClickHouseServer
from devkit.workload import generate
from runtime.observe import group_lag, output_events, table_snapshots, wait_until
from runtime.settings import Settings
from sinks.clickhouse import open_writer
from sinks.reconcile import reconcile
from sinks.sink import SinkConfig, build_sink
from tests.integration.pipeline import WorkerProcess, in_merge_order, isolated, publish
from tests.invoice_lifecycle import INVOICES_STATUS_SQL, invoices_from_outputs

pytestmark = pytest.mark.integration


def test_month_survives_a_clickhouse_restart_and_reconciles(stack: Settings,
                                                            tmp_path: Path) -> None:
    settings, app_id = isolated(stack, "month")
    settings = replace(settings, clickhouse_url=(
        f"clickhouse://127.0.0.1:{stack.clickhouse_port}/month_{uuid.uuid4().hex[:8]}"))
    events = in_merge_order([normalize_input(event) for event in generate(
        accounts=300, events=12_000, seed=23, start=datetime(2026, 3, 1, tzinfo=UTC))])
    publish(settings, events)
    WorkerProcess(settings, app_id, tmp_path / "worker.log").run_to_end(timeout=600)
    outputs = output_events(settings)
    snapshots = table_snapshots(settings, app_id)
    # Re-sent usage (same event_id) is rated once.
    rated_count = len({(e["account_id"], e["event_id"]) for e in events if e["type"] == "usage"})

    group = f"sink-{app_id}"
    sink_topics = (settings.topics.account_state, settings.topics.usage_rated,
                   settings.topics.account_status)
    server = ClickHouseServer(stack)
    with open_writer(settings) as writer:
        writer.apply_ddl()
        sink = build_sink(settings, writer, SinkConfig(batch_rows=500, batch_seconds=0.2,
                                                       retry_initial_seconds=0.2,
                                                       retry_max_seconds=2.0),
                          group_id=group)
        thread = threading.Thread(target=sink.run, kwargs={"progress_seconds": 1.0},
                                  daemon=True)
        thread.start()
        try:
            wait_until(lambda: sink.stats.rows_written > 0, 120, 0.2, "the sink's first rows")
            server.stop()  # ClickHouse goes away in the middle of the run ...
            wait_until(lambda: sink.stats.retries > 0, 60, 0.2, "the sink to hit the outage")
            time.sleep(2)
            server.start()  # ... and comes back: the sink retries and holds its position
            wait_until(lambda: group_lag(settings, group, sink_topics) == 0, 300, 1.0,
                       "the sink to catch up after the restart")
        finally:
            sink.stop()
            thread.join(60)
            sink.close()

        stored = writer.query("SELECT count(), uniqExact(event_id) FROM rated_usage FINAL")[0]
        states = writer.query(
            "SELECT count(), uniqExact(event_id) FROM account_state_events FINAL")[0]
        report = reconcile(writer, {key: to_jsonable(value) for key, value in snapshots.items()})
        invoices = {row[0]: tuple(row[1:]) for row in writer.query(INVOICES_STATUS_SQL)}
    assert tuple(stored) == (rated_count, rated_count)
    assert tuple(states) == (len({event["event_id"] for event in outputs}),) * 2
    assert report.ok, report.differences[:5]
    assert invoices == invoices_from_outputs(outputs) and invoices
