"""Pure parts of the sink: row mapping, SQL file splitting, dedup within a batch, display, and the
reconciliation comparisons. No ClickHouse needed."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from billing.events import InvalidEvent
from schemas import load_schema
from sinks.dedup import first_of_each_event, latest_of_each_account
from sinks.display import format_table, format_value
from sinks.reconcile import Difference, compare_invoices, compare_rollup, compare_spend
from sinks.rows import (
    ACCOUNT_STATE_COLUMNS,
    ACCOUNTS_CURRENT_COLUMNS,
    RATED_USAGE_COLUMNS,
    rows_for_account_state,
    rows_for_account_status,
    rows_for_rated_usage,
    split_time,
)
from sinks.sink import SinkConfig
from sinks.sqlfiles import (
    ddl_statements,
    load_migrations,
    load_query,
    query_names,
    split_statements,
)
from tests.test_sink_samples import output_event, rated, snapshot, status


def as_dict(columns: tuple[str, ...], row: tuple) -> dict:
    assert len(columns) == len(row)
    return dict(zip(columns, row, strict=True))


def test_rated_usage_row_keeps_money_exact_and_splits_milliseconds() -> None:
    (row,) = rows_for_rated_usage([rated(cost="12.345678", late=True, over_limit=True)])
    values = as_dict(RATED_USAGE_COLUMNS, row)
    assert values["cost"] == Decimal("12.345678") and isinstance(values["cost"], Decimal)
    assert values["timestamp"] == datetime(2026, 1, 15, 12, 0, 0, tzinfo=UTC)
    assert values["timestamp_ms"] == 123
    assert values["quantities.meter"] == ["input_tokens", "output_tokens"]
    assert values["quantities.count"] == [100, 515]
    assert (values["late"], values["over_limit"]) == (1, 1)


@pytest.mark.parametrize("bad", [0.1, Decimal("0.0000001")])
def test_rated_usage_refuses_a_float_or_a_seventh_digit(bad: object) -> None:
    with pytest.raises(InvalidEvent):
        rows_for_rated_usage([rated(cost=bad)])  # type: ignore[arg-type]


def test_split_time_truncates_to_the_second() -> None:
    moment = datetime(2026, 3, 1, 0, 0, 59, 999_000, tzinfo=UTC)
    assert split_time(moment) == (datetime(2026, 3, 1, 0, 0, 59, tzinfo=UTC), 999)


def test_account_state_row_flattens_fields_and_snapshot() -> None:
    event = output_event(1, "credits_applied", amount=Decimal("20.000000"), payment_id="pay-1",
                         invoice_id=None, receipt_url=None,
                         applied_to_outstanding=Decimal("5.000000"),
                         applied_to_credit=Decimal("15.000000"))
    (row,) = rows_for_account_state([event], [(3, 42)])
    values = as_dict(ACCOUNT_STATE_COLUMNS, row)
    assert values["type"] == "credits_applied" and values["amount"] == Decimal("20.000000")
    assert values["applied_to_credit"] == Decimal("15.000000")
    assert values["from_tier"] is None and values["invoice_id"] is None  # not on this type
    assert values["snapshot_monthly_budget"] == Decimal("50.000000")
    assert values["snapshot_has_payment_method"] == 1
    assert values["snapshot_auto_top_up_enabled"] == 0
    assert values["snapshot_pause_reasons"] == []
    assert (values["source_partition"], values["source_offset"]) == (3, 42)


def test_account_state_without_positions_uses_the_order() -> None:
    events = [output_event(n, "usage_paused", reason="budget_reached") for n in range(3)]
    offsets = [as_dict(ACCOUNT_STATE_COLUMNS, row)["source_offset"]
               for row in rows_for_account_state(events)]
    assert offsets == [0, 1, 2]
    with pytest.raises(ValueError, match="positions"):
        rows_for_account_state(events, [(0, 0)])


def test_a_missing_required_snapshot_field_is_an_error() -> None:
    event = output_event(1, "usage_paused", reason="x")
    event["snapshot"] = snapshot(credit_balance=None)
    with pytest.raises(ValueError, match="credit_balance"):
        rows_for_account_state([event])


def test_unlimited_budget_is_null() -> None:
    event = output_event(1, "budget_changed", monthly_budget=None, reason="tier_default")
    event["snapshot"] = snapshot(monthly_budget=None)
    values = as_dict(ACCOUNT_STATE_COLUMNS, rows_for_account_state([event])[0])
    assert values["monthly_budget"] is None and values["snapshot_monthly_budget"] is None


def test_first_of_each_event_keeps_the_first_copy() -> None:
    assert RATED_USAGE_COLUMNS[0] == ACCOUNT_STATE_COLUMNS[0] == "event_id"
    rows = [("a", 1), ("b", 2), ("a", 3)]
    assert first_of_each_event(rows) == [("a", 1), ("b", 2)]


def test_split_statements_drops_comments_and_splits_on_semicolons() -> None:
    text = "-- why\nCREATE TABLE a (x UInt8)\nENGINE = Log;\n\n-- and\nSELECT 1;\n"
    assert split_statements(text) == ["CREATE TABLE a (x UInt8)\nENGINE = Log", "SELECT 1"]


def test_migrations_are_numbered_and_create_idempotently() -> None:
    migrations = load_migrations()
    assert [m.version for m in migrations] == list(range(1, len(migrations) + 1))
    statements = ddl_statements()
    names = [statement.name for statement in statements]
    assert names == sorted(names) and names[0].startswith("001_")
    for statement in statements:
        if statement.sql.startswith("CREATE"):
            assert "IF NOT EXISTS" in statement.sql, statement.name
        for banned in ("TTL", "CODEC", "DateTime64", "JSONExtract", "OVER (", "WITH "):
            assert banned not in statement.sql, (statement.name, banned)


def test_every_documented_query_loads() -> None:
    assert {"invoice_lines", "spend_by_tier", "accounts_near_budget", "top_accounts",
            "over_limit_usage"} <= set(query_names())
    for name in query_names():
        assert load_query(name).lstrip().upper().startswith("SELECT")
    with pytest.raises(KeyError):
        load_query("no_such_query")


def test_format_value_pads_money_without_rounding() -> None:
    assert format_value(Decimal("1.5")) == "1.500000"
    assert format_value(Decimal("0.000000000001")) == "1E-12"
    assert format_value(None) == "NULL"
    assert format_value(datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)) == "2026-01-02 03:04:05"
    assert format_value(["a", Decimal("2")]) == "[a, 2.000000]"


def test_format_table_aligns_numbers_right() -> None:
    text = format_table(["account", "cost"], [("a", Decimal("1.5")), ("bb", Decimal("10"))])
    assert text.splitlines() == [
        "account       cost",
        "-------  ---------",
        "a         1.500000",
        "bb       10.000000",
        "(2 rows)",
    ]


def test_compare_spend_reports_each_figure_to_the_micro_dollar() -> None:
    snapshots = {"a": {"lifetime_spend": "3.000001", "month_to_date_spend": "1",
                       "open_period": "2026-02"}}
    spend = {"a": {"2026-01": Decimal("2"), "2026-02": Decimal("1")},
             "ghost": {"2026-01": Decimal("5")}}
    differences = compare_spend(snapshots, spend)
    assert [str(difference) for difference in differences] == [
        "a lifetime_spend: ledger=3.000001 clickhouse=3.000000 diff=-0.000001",
        "ghost lifetime_spend: ledger=NULL clickhouse=5.000000",
    ]


def test_compare_invoices_and_rollup() -> None:
    expected = {"inv-1": ("a", "2026-01", Decimal("63")), "inv-2": ("b", "2026-01", Decimal("1"))}
    stored = {"inv-1": ("a", "2026-01", Decimal("62.999999"))}
    assert compare_invoices(expected, stored) == [
        Difference("inv-1", "invoice amount a 2026-01", Decimal("63"), Decimal("62.999999")),
        Difference("inv-2", "invoice (account, period, amount)", expected["inv-2"], None),
    ]
    assert compare_rollup({"a": {"2026-01": Decimal("1")}}, {"a": {"2026-01": Decimal("2")}})
    assert not compare_rollup({"a": {"2026-01": Decimal("1")}}, {"a": {"2026-01": Decimal("1")}})


def test_backoff_doubles_and_is_capped() -> None:
    config = SinkConfig(retry_initial_seconds=0.5, retry_max_seconds=4)
    assert [config.backoff(attempt) for attempt in range(6)] == [0.5, 1, 2, 4, 4, 4]
    with pytest.raises(ValueError):
        SinkConfig(batch_rows=0)


def test_account_status_row_is_the_record_column_for_column() -> None:
    record = status("acct-9", version=42, status="suspended", pause_reasons=["top_up_failed"],
                    credit_balance=Decimal("-0.000001"), monthly_budget=None,
                    pending_top_up_request_id="tu-1",
                    auto_top_up={"enabled": True, "minimum_balance": Decimal("5.000000"),
                                 "top_up_amount": Decimal("999999999999.999999")})
    (row,) = rows_for_account_status([record], [(3, 17)])
    values = as_dict(ACCOUNTS_CURRENT_COLUMNS, row)
    assert values == {
        "account_id": "acct-9", "billing_model": "postpaid", "contract": "self_serve",
        "status": "suspended", "pause_reasons": ["top_up_failed"],
        "credit_balance": Decimal("-0.000001"), "outstanding_balance": Decimal("0.000000"),
        "month_to_date_spend": Decimal("0.500000"), "open_period": "2026-01",
        "lifetime_spend": Decimal("2.500000"), "lifetime_credits_purchased": Decimal("0.000000"),
        "tier": "1", "monthly_budget": None, "rpm_limit": 6000, "tpm_limit": 3_600_000,
        "has_payment_method": 1, "pending_top_up_request_id": "tu-1",
        "may_send": 0, "blocked_reasons": ["suspended", "top_up_failed"],
        "auto_top_up_enabled": 1, "auto_top_up_minimum_balance": Decimal("5.000000"),
        "auto_top_up_amount": Decimal("999999999999.999999"),
        "updated_at": datetime(2026, 1, 31, 23, 0, 42, tzinfo=UTC), "updated_at_ms": 5,
        "version": 42, "source_partition": 3, "source_offset": 17,
    }
    assert all(isinstance(values[name], Decimal) for name in (
        "credit_balance", "outstanding_balance", "month_to_date_spend", "lifetime_spend",
        "lifetime_credits_purchased", "auto_top_up_minimum_balance", "auto_top_up_amount"))


def test_account_status_columns_follow_the_snapshot_and_the_schema() -> None:
    fields = [field["name"] for field in load_schema("account_status")["fields"]]
    flattened = [name for name in fields if name not in ("auto_top_up", "updated_at")]
    columns = set(ACCOUNTS_CURRENT_COLUMNS)
    assert set(flattened) <= columns
    assert {"auto_top_up_enabled", "auto_top_up_minimum_balance", "auto_top_up_amount",
            "updated_at", "updated_at_ms", "source_partition", "source_offset"} <= columns
    assert len(columns) == len(ACCOUNTS_CURRENT_COLUMNS) == len(flattened) + 7


@pytest.mark.parametrize("bad", [{"credit_balance": 0.1},
                                 {"lifetime_spend": Decimal("0.0000001")}])
def test_account_status_refuses_a_float_or_a_seventh_digit(bad: dict) -> None:
    with pytest.raises(InvalidEvent):
        rows_for_account_status([status(**bad)])


def test_account_status_refuses_a_negative_version_and_a_position_mismatch() -> None:
    with pytest.raises(ValueError, match="version"):
        rows_for_account_status([status(version=-1)])
    with pytest.raises(ValueError, match="positions"):
        rows_for_account_status([status()], [])


def test_latest_of_each_account_keeps_the_largest_version() -> None:
    rows = rows_for_account_status([status("a", 5), status("b", 1), status("a", 3),
                                    status("a", 5, tier="2"), status("b", 2)])
    latest = latest_of_each_account(rows)
    account, version, tier = (ACCOUNTS_CURRENT_COLUMNS.index(name)
                              for name in ("account_id", "version", "tier"))
    assert [(row[account], row[version], row[tier]) for row in latest] == [
        ("a", 5, "2"), ("b", 2, "1")]
