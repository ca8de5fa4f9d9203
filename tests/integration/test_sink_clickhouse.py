"""The tables, writer, queries and reconciliation on the stack's Debian clickhouse-server 18.16.

The same DDL and queries as the chdb tests, on the oldest server the project supports: this is
where a construct newer than 18.16 would fail. Each test module gets its own database.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import replace
from decimal import Decimal
from pathlib import Path

import pytest

from runtime.settings import Settings
from sinks.clickhouse import ClickHouseError, ClickHouseWriter, DriverWriter, open_writer
from sinks.dedup import new_rated_usage
from sinks.reconcile import load_invoice_events, reconcile
from sinks.rows import (
    ACCOUNTS_CURRENT_COLUMNS,
    ACCOUNTS_CURRENT_TABLE,
    RATED_USAGE_COLUMNS,
    RATED_USAGE_TABLE,
    rows_for_account_status,
    rows_for_rated_usage,
)
from sinks.sqlfiles import load_migrations, load_query, query_names
from tests.test_sink_samples import ledger_run, output_event, rated, status, store

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def clickhouse_server_settings(stack: Settings) -> Settings:
    """The stack's server with a database of this module's own."""
    return replace(stack, clickhouse_url=(f"clickhouse://127.0.0.1:{stack.clickhouse_port}/"
                                          f"sink_{uuid.uuid4().hex[:8]}"))


@pytest.fixture
def writer(clickhouse_server_settings: Settings) -> Iterator[ClickHouseWriter]:
    opened = open_writer(clickhouse_server_settings)
    assert isinstance(opened, DriverWriter)
    opened.apply_ddl()
    for (table,) in opened.query("SELECT name FROM system.tables WHERE database = "
                                 "currentDatabase() AND engine LIKE '%MergeTree' "
                                 "AND name != 'schema_migrations'"):
        opened.execute(f"TRUNCATE TABLE {table}")
    yield opened
    opened.close()


def test_server_is_the_debian_18_16(writer: ClickHouseWriter) -> None:
    assert writer.query("SELECT version()")[0][0].startswith("18.16")


def test_ddl_applies_twice(writer: ClickHouseWriter) -> None:
    assert writer.apply_ddl().lines() == [f"up to date: {len(load_migrations())} migrations"]
    engines = dict(writer.query(
        "SELECT name, engine FROM system.tables WHERE database = currentDatabase()"))
    assert engines["rated_usage"] == "ReplacingMergeTree"
    assert engines["spend_monthly"] == "SummingMergeTree"
    assert engines["invoices_mv"] == "MaterializedView"


def test_rows_go_in_as_data_and_final_shows_each_event_once(writer: ClickHouseWriter) -> None:
    records = [rated(1, cost="999999999999.999999"), rated(2, cost="0.000001")]
    rows = rows_for_rated_usage(records)
    for _ in range(2):  # a redelivered batch
        assert writer.insert(RATED_USAGE_TABLE, RATED_USAGE_COLUMNS, rows) == 2
    assert writer.query("SELECT count() FROM rated_usage") == [(4,)]
    assert writer.query("SELECT count(), sum(cost) FROM rated_usage FINAL") == [
        (2, Decimal("1000000000000.000000"))]
    assert writer.query("SELECT timestamp_ms, quantities.count FROM rated_usage FINAL "
                        "WHERE event_id = %(id)s", {"id": "usage-1"}) == [(123, [100, 515])]


def test_the_dedup_guard_and_the_rollups(writer: ClickHouseWriter) -> None:
    rows = rows_for_rated_usage([rated(1, cost="1"), rated(2, cost="2", late=True,
                                                           billed_period="2026-02")])
    writer.insert(RATED_USAGE_TABLE, RATED_USAGE_COLUMNS, new_rated_usage(writer, rows))
    assert new_rated_usage(writer, rows) == []
    assert writer.query("SELECT sum(cost) FROM spend_daily") == [(Decimal(3),)]
    assert writer.query("SELECT toString(billed_month), sum(cost) FROM spend_monthly "
                        "GROUP BY billed_month ORDER BY billed_month") == [
        ("2026-01-01", Decimal(1)), ("2026-02-01", Decimal(2))]


def test_views_fill_the_derived_tables(writer: ClickHouseWriter) -> None:
    events = [output_event(1, "invoice_issued", invoice_id="inv-1", period="2026-01",
                           amount=Decimal("63")),
              output_event(2, "tier_changed", from_tier="1", to_tier="2")]
    store(writer, outputs=events)
    store(writer, outputs=events)
    assert writer.query("SELECT invoice_id, amount FROM invoices FINAL") == [
        ("inv-1", Decimal(63))]
    assert writer.query("SELECT to_tier FROM tier_history FINAL") == [("2",)]


def test_queries_and_reconcile_on_ledger_output(writer: ClickHouseWriter,
                                                tmp_path: Path) -> None:
    run = ledger_run()
    store(writer, run.rated, run.outputs)
    invoice = next(event for event in run.outputs if event["type"] == "invoice_issued")
    params = {"account_id": invoice["account_id"], "period": invoice["period"], "limit": 5,
              "percent": 1, "first_day": "2026-01-01", "last_day": "2026-01-31", "days": 0}
    for name in query_names():
        writer.query(load_query(name), params)  # each parses and runs on 18.16
    assert writer.query(load_query("invoice_issued"), params)[0][2] == invoice["amount"]
    assert writer.query(load_query("invoice_status"), params)[0][2] == invoice["amount"]
    events_file = tmp_path / "events.jsonl"
    events_file.write_bytes(run.events_jsonl)
    report = reconcile(writer, run.snapshots_json, load_invoice_events(events_file))
    assert report.ok, report.differences


def test_column_comments_work_on_18_16_and_table_comments_do_not(
        writer: ClickHouseWriter) -> None:
    """Why 009 keeps the table's comment as SQL comments and its columns' as COMMENT."""
    assert writer.query("SELECT count(), countIf(comment != '') FROM system.columns WHERE "
                        "database = currentDatabase() AND table = 'accounts_current'") == [
        (len(ACCOUNTS_CURRENT_COLUMNS), len(ACCOUNTS_CURRENT_COLUMNS))]
    with pytest.raises(ClickHouseError, match=r"(?i)syntax error|Code: 62"):
        writer.execute("CREATE TABLE IF NOT EXISTS comment_probe (a String) "
                       "ENGINE = MergeTree ORDER BY a COMMENT 'a table comment'")


def test_accounts_current_keeps_the_latest_version_under_final(writer: ClickHouseWriter) -> None:
    for records, first in (([status("a", 3), status("b", 1)], 0),
                           ([status("a", 9, status="suspended")], 2),
                           ([status("a", 4, credit_balance=Decimal("7.000001"))], 3)):
        writer.insert(ACCOUNTS_CURRENT_TABLE, ACCOUNTS_CURRENT_COLUMNS, rows_for_account_status(
            records, [(0, first + index) for index in range(len(records))]))
    assert writer.query("SELECT account_id, version, may_send, blocked_reasons, credit_balance "
                        "FROM accounts_current FINAL ORDER BY account_id") == [
        ("a", 9, 0, ["suspended"], Decimal("1.000000")), ("b", 1, 1, [], Decimal("1.000000"))]
