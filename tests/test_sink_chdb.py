"""The tables, views, writer, queries and reconciliation on embedded ClickHouse (chdb): no server.

chdb holds one data directory per process at a time, so each test opens its writer on its own
directory and closes it at the end (the ``writer`` fixture).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from sinks.clickhouse import ClickHouseWriter
from sinks.dedup import new_rated_usage
from sinks.reconcile import load_invoice_events, reconcile
from sinks.rows import (
    ACCOUNT_STATE_COLUMNS,
    ACCOUNT_STATE_TABLE,
    ACCOUNTS_CURRENT_COLUMNS,
    ACCOUNTS_CURRENT_TABLE,
    RATED_USAGE_COLUMNS,
    RATED_USAGE_TABLE,
    rows_for_account_state,
    rows_for_account_status,
    rows_for_rated_usage,
)
from sinks.sqlfiles import load_query, query_names
from tests.invoice_lifecycle import INVOICES_STATUS_SQL, invoices_from_outputs
from tests.test_sink_samples import (
    chdb_with_tables,
    ledger_run,
    output_event,
    rated,
    status,
    store,
)


@pytest.fixture
def writer(tmp_path: Path) -> Iterator[ClickHouseWriter]:
    with chdb_with_tables(tmp_path / "chdb") as opened:
        yield opened


def test_ddl_applies_twice_and_creates_every_table(writer: ClickHouseWriter) -> None:
    assert writer.apply_ddl().steps == []  # second time: every migration recorded, none runs
    tables = dict(writer.query(
        "SELECT name, engine FROM system.tables WHERE database = currentDatabase()"))
    assert tables == {
        "rated_usage": "ReplacingMergeTree", "account_state_events": "ReplacingMergeTree",
        "credit_purchases": "ReplacingMergeTree", "invoices": "ReplacingMergeTree",
        "tier_history": "ReplacingMergeTree", "spend_daily": "SummingMergeTree",
        "spend_monthly": "SummingMergeTree", "credit_purchases_mv": "MaterializedView",
        "invoices_mv": "MaterializedView", "tier_history_mv": "MaterializedView",
        "spend_daily_mv": "MaterializedView", "spend_monthly_mv": "MaterializedView",
        "accounts_current": "ReplacingMergeTree", "schema_migrations": "MergeTree",
        "invoice_history": "ReplacingMergeTree", "invoice_history_mv": "MaterializedView",
        "invoices_status": "View",
    }


@pytest.mark.parametrize(("table", "columns"), [(RATED_USAGE_TABLE, RATED_USAGE_COLUMNS),
                                                (ACCOUNT_STATE_TABLE, ACCOUNT_STATE_COLUMNS),
                                                (ACCOUNTS_CURRENT_TABLE, ACCOUNTS_CURRENT_COLUMNS)])
def test_mapping_columns_are_the_table_columns(writer: ClickHouseWriter, table: str,
                                               columns: tuple[str, ...]) -> None:
    stored = [name for (name,) in writer.query(
        "SELECT name FROM system.columns WHERE database = currentDatabase() AND table = %(t)s",
        {"t": table})]
    assert sorted(stored) == sorted(columns)


def test_money_and_time_round_trip_exactly(writer: ClickHouseWriter) -> None:
    store(writer, [rated(cost="999999999999.999999")])
    ((cost, millis, meters),) = writer.query(
        "SELECT cost, timestamp_ms, quantities.meter FROM rated_usage")
    assert cost == Decimal("999999999999.999999")
    assert millis == 123 and meters == ["input_tokens", "output_tokens"]


def test_duplicates_are_counted_once_with_final(writer: ClickHouseWriter) -> None:
    records = [rated(1, cost="1.5"), rated(2, cost="2.25")]
    store(writer, records)
    store(writer, records)  # a redelivered batch
    store(writer, outputs=[output_event(1, "usage_paused", reason="budget_reached")] * 2)
    assert writer.query("SELECT count(), sum(cost) FROM rated_usage FINAL") == [
        (2, Decimal("3.75"))]
    assert writer.query("SELECT count() FROM account_state_events FINAL") == [(1,)]


def test_rollups_sum_per_day_and_billed_month(writer: ClickHouseWriter) -> None:
    store(writer, [rated(1, cost="1.000001"), rated(2, cost="2", product="deepseek-v3")])
    store(writer, [rated(3, cost="0.5", late=True, billed_period="2026-02")])
    assert writer.query("SELECT day, product, sum(cost), sum(events) FROM spend_daily "
                        "GROUP BY day, product ORDER BY product") == [
        (date(2026, 1, 15), "deepseek-v3", Decimal(2), 1),
        (date(2026, 1, 15), "llama-v3p1-8b", Decimal("1.500001"), 2),  # late: its own day
    ]
    assert writer.query(
        "SELECT toString(billed_month), sum(cost) FROM spend_monthly "
        "GROUP BY billed_month ORDER BY billed_month") == [
        ("2026-01-01", Decimal("3.000001")), ("2026-02-01", Decimal("0.5"))]


def test_the_dedup_guard_keeps_redelivered_usage_out_of_the_rollups(
        writer: ClickHouseWriter) -> None:
    first = rows_for_rated_usage([rated(1, cost="1"), rated(2, cost="2")])
    writer.insert(RATED_USAGE_TABLE, RATED_USAGE_COLUMNS, new_rated_usage(writer, first))
    again = rows_for_rated_usage([rated(2, cost="2"), rated(3, cost="4"), rated(3, cost="4")])
    fresh = new_rated_usage(writer, again)
    assert [row[0] for row in fresh] == ["usage-3"]
    writer.insert(RATED_USAGE_TABLE, RATED_USAGE_COLUMNS, fresh)
    assert writer.query("SELECT sum(cost) FROM spend_monthly") == [(Decimal(7),)]
    assert writer.query("SELECT sum(cost) FROM rated_usage FINAL") == [(Decimal(7),)]


def test_views_fill_credits_invoices_and_tier_history(writer: ClickHouseWriter) -> None:
    events = [
        output_event(1, "credits_applied", amount=Decimal("20"), payment_id="pay-1",
                     invoice_id=None, receipt_url="https://r/1",
                     applied_to_outstanding=Decimal("5"), applied_to_credit=Decimal("15")),
        output_event(2, "invoice_issued", invoice_id="inv-1", period="2026-01",
                     amount=Decimal("63")),
        output_event(3, "tier_changed", from_tier="1", to_tier="2"),
        output_event(4, "rate_limits_changed", rpm_limit=6000, tpm_limit=7_200_000),
    ]
    store(writer, outputs=events + events)
    assert writer.query("SELECT payment_id, amount, applied_to_outstanding, applied_to_credit "
                        "FROM credit_purchases FINAL") == [
        ("pay-1", Decimal(20), Decimal(5), Decimal(15))]
    assert writer.query("SELECT invoice_id, account_id, period, amount, billing_model "
                        "FROM invoices FINAL") == [
        ("inv-1", "acct-1", "2026-01", Decimal(63), "postpaid")]
    assert writer.query("SELECT from_tier, to_tier, lifetime_spend FROM tier_history FINAL") == [
        ("1", "2", Decimal("2.5"))]


def test_latest_snapshot_is_the_largest_offset(writer: ClickHouseWriter) -> None:
    newer = output_event(1, "budget_changed", monthly_budget=Decimal("10"), reason="customer")
    newer["snapshot"]["monthly_budget"] = Decimal("10")
    older = output_event(2, "usage_paused", reason="budget_reached")  # later timestamp
    older["timestamp"] = older["timestamp"].replace(day=31, hour=23, minute=59)
    writer.insert(ACCOUNT_STATE_TABLE, ACCOUNT_STATE_COLUMNS,
                  rows_for_account_state([older, newer], [(0, 7), (0, 8)]))
    store(writer, [rated(1, cost="9")])
    rows = writer.query(load_query("accounts_near_budget"), {"period": "2026-01", "percent": 80})
    assert rows == [("acct-1", "active", "1", Decimal(9), Decimal(10), Decimal(90))]


def test_every_documented_query_runs_on_ledger_output(writer: ClickHouseWriter) -> None:
    run = ledger_run()
    store(writer, run.rated, run.outputs)
    invoice = next(event for event in run.outputs if event["type"] == "invoice_issued")
    params = {"account_id": invoice["account_id"], "period": invoice["period"], "limit": 5,
              "percent": 1, "first_day": "2026-01-01", "last_day": "2026-01-31", "days": 0}
    results = {name: writer.query(load_query(name), params) for name in query_names()}
    assert results["invoice_issued"] == [
        (invoice["invoice_id"], invoice["period"], invoice["amount"],
         invoice["timestamp"].replace(microsecond=0), "postpaid")]
    (status,) = results["invoice_status"]
    assert (status[0], status[2]) == (invoice["invoice_id"], invoice["amount"])
    settled = [event for event in run.outputs if event["type"] == "invoice_settled"
               and event["invoice_id"] == invoice["invoice_id"]]
    assert [row[5] for row in results["invoice_settlements"]] == [
        event["amount_paid"] for event in settled]
    invoices = invoices_from_outputs(run.outputs)
    assert {(row[0], tuple(row[1:])) for row in writer.query(INVOICES_STATUS_SQL)} == set(
        invoices.items())
    assert {row[1] for row in results["overdue_invoices"]} == {  # all due long ago
        invoice_id for invoice_id, (*_, status) in invoices.items() if status != "paid"}
    lines_total = sum(row[-1] for row in results["invoice_lines"])
    assert lines_total == sum(record["cost"] for record in run.rated
                              if record["account_id"] == invoice["account_id"]
                              and record["billed_period"] == invoice["period"])
    assert len(results["top_accounts"]) == 5
    assert sum(row[-1] for row in results["spend_by_tier"]) == sum(
        record["cost"] for record in run.rated if record["billed_period"] == invoice["period"])


def test_reconcile_agrees_with_the_ledger_and_finds_a_tampered_row(
        writer: ClickHouseWriter, tmp_path: Path) -> None:
    run = ledger_run()
    store(writer, run.rated)
    store(writer, run.rated[:100])  # redelivered: FINAL collapses it
    store(writer, outputs=run.outputs)
    events_file = tmp_path / "events.jsonl"
    events_file.write_bytes(run.events_jsonl)
    invoices = load_invoice_events(events_file)
    # The raw re-insert double-counted the rollup (the sink's guard prevents that): reported.
    report = reconcile(writer, run.snapshots_json, invoices)
    assert report.differences and {d.figure.split()[0] for d in report.differences} == {
        "spend_monthly"}
    writer.execute("TRUNCATE TABLE spend_monthly")
    writer.execute("INSERT INTO spend_monthly SELECT toDate(concat(billed_period, '-01')), "
                   "account_id, product, sum(cost), sum(requests), count() FROM rated_usage FINAL "
                   "GROUP BY billed_period, account_id, product")
    report = reconcile(writer, run.snapshots_json, invoices)
    assert report.ok, report.differences
    assert report.invoices == len(invoices) > 0

    victim = run.rated[0]
    store(writer, [{**victim, "event_id": "forged", "cost": Decimal("0.000001")}])
    differences = [str(d) for d in reconcile(writer, run.snapshots_json, invoices).differences]
    assert f"{victim['account_id']} lifetime_spend" in differences[0]
    assert differences[0].endswith("diff=0.000001")


CURRENT_SQL = ("SELECT account_id, version, status, may_send, blocked_reasons, credit_balance, "
               "updated_at, updated_at_ms FROM accounts_current FINAL ORDER BY account_id")


def test_accounts_current_keeps_the_latest_version_per_account(writer: ClickHouseWriter) -> None:
    def insert(records: list[dict], first_offset: int) -> None:
        positions = [(0, first_offset + index) for index in range(len(records))]
        writer.insert(ACCOUNTS_CURRENT_TABLE, ACCOUNTS_CURRENT_COLUMNS,
                      rows_for_account_status(records, positions))

    insert([status("a", 3, credit_balance=Decimal("3.000001")), status("b", 10)], 0)
    # Newer versions, then an older record of "a" arriving later (a redelivery, a re-read),
    # and a copy of b's latest record: each in its own block, so its own part.
    insert([status("a", 7, credit_balance=Decimal("0.000000"), status="paused",
                    pause_reasons=["credits_exhausted"])], 2)
    insert([status("a", 5, credit_balance=Decimal("999999999999.999999"))], 3)
    insert([status("b", 10)], 4)
    insert([status("c", 1, status="suspended")], 5)
    assert writer.query("SELECT count() FROM accounts_current") == [(6,)]  # not merged yet
    expected = [
        ("a", 7, "paused", 0, ["credits_exhausted"], Decimal("0.000000"),
         datetime(2026, 1, 31, 23, 0, 7, tzinfo=UTC), 5),
        ("b", 10, "active", 1, [], Decimal("1.000000"),
         datetime(2026, 1, 31, 23, 0, 10, tzinfo=UTC), 5),
        ("c", 1, "suspended", 0, ["suspended"], Decimal("1.000000"),
         datetime(2026, 1, 31, 23, 0, 1, tzinfo=UTC), 5),
    ]
    assert writer.query(CURRENT_SQL) == expected
    writer.execute("OPTIMIZE TABLE accounts_current FINAL")  # merged: the same rows stay
    assert writer.query("SELECT count() FROM accounts_current") == [(3,)]
    assert writer.query(CURRENT_SQL) == expected
