"""What the dashboard shows, read from ClickHouse: totals, the account list, one account.

Only SELECTs, through the project's one ClickHouse interface (``sinks.clickhouse``), so the same
code reads the embedded chdb that ``billing demo`` writes and a clickhouse-server 18.16. The SQL
is in ``queries/*.sql`` (the same dialect rules as ``sinks/queries``); the totals reuse the
demo report's queries (``dashboard.report``) so the two pages cannot count differently.

Where each figure comes from, and why:

- status, pause reasons, tier, limits, budget, auto top-up: the account's **latest snapshot** in
  ``account_state_events`` (largest Kafka offset). These change only through an account-state
  event, so the latest snapshot is current (up to the sink's lag).
- balances: usage moves them without emitting an event, so the latest snapshot's balances are as
  of that event. Conservation makes the current net position exact anyway:
  ``credit - outstanding`` now = the snapshot's ``credit - outstanding`` minus the usage charged
  since, and the usage since = lifetime spend in ``rated_usage FINAL`` - the snapshot's
  ``lifetime_spend``. The split between credit and outstanding is the ledger's call and is only
  shown as of the snapshot.
- spend: ``rated_usage FINAL`` (exact, per billed month); the daily chart uses the ``spend_daily``
  rollup through the documented ``daily_spend`` query (dashboards are what it is for).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from importlib import resources
from typing import Any

from billing.events import ZERO, to_money
from dashboard.report import (
    CREDITS_SQL,
    DAILY_SPEND_SQL,
    INVOICES_SQL,
    OUTPUT_COUNTS_SQL,
    USAGE_SQL,
)
from sinks.clickhouse import ClickHouseWriter
from sinks.sqlfiles import load_query as load_sink_query
from sinks.sqlfiles import split_statements

_QUERIES = resources.files("dashboard").joinpath("queries")
# What the dashboard reads; the sink's DDL creates them (`billing sink migrate`, `billing demo`).
REQUIRED_TABLES = ("rated_usage", "account_state_events", "credit_purchases", "invoices",
                   "spend_daily")
DAILY_WINDOW_DAYS = 90  # the account chart: up to this many days, ending at the last usage day
RECENT_EVENTS = 50
Record = dict[str, Any]


class DashboardDataError(RuntimeError):
    """ClickHouse does not hold what the dashboard reads; the message says what to run."""


def load_query(name: str) -> str:
    """The dashboard query ``name`` (``queries/NAME.sql``) with its ``%(param)s`` placeholders."""
    (statement,) = split_statements(_QUERIES.joinpath(f"{name}.sql").read_text("utf-8"))
    return statement


def _normalized(value: Any) -> Any:
    """Money with exactly 6 digits whichever backend answered (the driver drops trailing zeros)."""
    return to_money(value) if isinstance(value, Decimal) else value


def _records(names: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[Record]:
    return [{name: _normalized(value) for name, value in zip(names, row, strict=True)}
            for row in rows]


def daily_series(points: Sequence[tuple[date, Decimal]]) -> tuple[tuple[date, Decimal], ...]:
    """Money per day with the days in between present as zero, so a chart's x axis is time."""
    if not points:
        return ()
    amounts = dict(points)
    first, last = min(amounts), max(amounts)
    return tuple((first + timedelta(days=offset),
                  to_money(amounts.get(first + timedelta(days=offset), ZERO)))
                 for offset in range((last - first).days + 1))


@dataclass(frozen=True)
class Totals:
    """Figures over every account."""

    accounts: int
    accounts_by_status: dict[str, int]
    accounts_by_tier: dict[str, int]
    accounts_by_billing_model: dict[str, int]
    net_balance: Decimal  # sum of credit - outstanding now, see the module docstring
    usage_events: int
    usage_requests: int
    usage_spend: Decimal
    late_usage_events: int
    over_limit_usage_events: int
    credit_purchases: int
    credits_purchased: Decimal
    invoice_payments: int
    invoice_payments_amount: Decimal
    invoices_issued: int
    invoiced: Decimal
    account_events: dict[str, int]  # by type
    pauses_by_reason: dict[str, int]
    daily_spend: tuple[tuple[date, Decimal], ...]


@dataclass(frozen=True)
class AccountView:
    """One account: latest snapshot, balances brought up to date, spend, invoices, events."""

    account_id: str
    snapshot: Record  # account_snapshot.sql: the latest snapshot and when it was taken
    lifetime_spend: Decimal  # rated_usage FINAL
    usage_since_snapshot: Decimal
    net_balance: Decimal  # credit - outstanding now
    latest_month: Record | None  # the last billed month with usage (account_months.sql)
    budget_used_percent: Decimal | None  # of that month's spend, against the budget
    months: tuple[Record, ...]
    daily_spend: tuple[tuple[date, Decimal], ...]
    spend_by_product: dict[str, Decimal]  # over the days of daily_spend
    event_counts: dict[str, int]
    events: tuple[Record, ...]  # newest first, at most RECENT_EVENTS
    invoices: tuple[Record, ...]


class DashboardData:
    """The dashboard's read-only queries over one ClickHouse connection.

    Not thread-safe (neither connection is): the web app calls it from a single worker thread.
    """

    def __init__(self, writer: ClickHouseWriter) -> None:
        self._writer = writer

    def _select(self, sql: str, params: Mapping[str, Any] | None = None) -> list[Record]:
        return _records(*self._writer.query_with_names(sql, params))

    def check_tables(self) -> None:
        """Fail at start, with what to do, when the tables are not there (a wrong URL, an empty
        chdb directory): the dashboard never creates them, it only reads."""
        present = {name for (name,) in self._writer.query(
            "SELECT name FROM system.tables WHERE database = currentDatabase()")}
        missing = [table for table in REQUIRED_TABLES if table not in present]
        if missing:
            raise DashboardDataError(
                f"no billing tables ({', '.join(missing)} missing): point BILLING_CLICKHOUSE_URL "
                "at the ClickHouse the sink writes (`billing demo` prints its chdb:// URL), or "
                "create them with `billing sink migrate`")

    def totals(self) -> Totals:
        population = self._select(load_query("population"))
        by_status: Counter[str] = Counter()
        by_tier: Counter[str] = Counter()
        by_model: Counter[str] = Counter()
        for group in population:
            by_status[group["status"]] += group["accounts"]
            by_tier[group["tier"]] += group["accounts"]
            by_model[group["billing_model"]] += group["accounts"]
        outputs: dict[str, Counter[str]] = {}
        for event_type, detail, count in self._writer.query(OUTPUT_COUNTS_SQL):
            outputs.setdefault(event_type, Counter())[detail] += count
        ((purchases, purchased, invoice_payments, invoices_paid),) = self._writer.query(
            CREDITS_SQL)
        ((invoices, invoiced),) = self._writer.query(INVOICES_SQL)
        ((usage, requests, spend, late, over_limit),) = self._writer.query(USAGE_SQL)
        spend = to_money(spend or ZERO)
        snapshot_net = sum((g["credit_balance"] - g["outstanding_balance"] for g in population),
                           ZERO)
        snapshot_spend = sum((g["lifetime_spend"] for g in population), ZERO)
        return Totals(
            accounts=sum(by_status.values()),
            accounts_by_status=dict(sorted(by_status.items())),
            accounts_by_tier=dict(sorted(by_tier.items())),
            accounts_by_billing_model=dict(sorted(by_model.items())),
            net_balance=snapshot_net - (spend - snapshot_spend),
            usage_events=usage,
            usage_requests=requests or 0,
            usage_spend=spend,
            late_usage_events=late,
            over_limit_usage_events=over_limit,
            credit_purchases=purchases,
            credits_purchased=to_money(purchased or ZERO),
            invoice_payments=invoice_payments,
            invoice_payments_amount=to_money(invoices_paid or ZERO),
            invoices_issued=invoices,
            invoiced=to_money(invoiced or ZERO),
            account_events={event_type: sum(details.values())
                            for event_type, details in sorted(outputs.items())},
            pauses_by_reason=dict(outputs.get("usage_paused", {})),
            daily_spend=daily_series([(day, to_money(cost)) for day, cost
                                      in self._writer.query(DAILY_SPEND_SQL)]),
        )

    def accounts(self, search: str = "", limit: int = 25) -> list[Record]:
        """Accounts whose id contains ``search`` (all when empty), biggest lifetime spend first."""
        return self._select(load_query("accounts"), {"search": search, "limit": limit})

    def account(self, account_id: str) -> AccountView | None:
        """The account's page, or None when ClickHouse has no event of it."""
        params = {"account_id": account_id}
        snapshots = self._select(load_query("account_snapshot"), params)
        if not snapshots:
            return None
        snapshot = {**snapshots[0], **{flag: bool(snapshots[0][flag]) for flag in (
            "has_payment_method", "auto_top_up_enabled")}}  # UInt8 columns: 18.16 has no Bool
        months = self._select(load_query("account_months"), params)
        lifetime_spend = sum((month["cost"] for month in months), ZERO)
        usage_since = lifetime_spend - snapshot["lifetime_spend"]
        latest = months[-1] if months else None
        budget = snapshot["monthly_budget"]
        daily, by_product = self._daily_spend(account_id, months)
        return AccountView(
            account_id=account_id,
            snapshot=snapshot,
            lifetime_spend=lifetime_spend,
            usage_since_snapshot=usage_since,
            net_balance=snapshot["credit_balance"] - snapshot["outstanding_balance"] - usage_since,
            latest_month=latest,
            budget_used_percent=(latest["cost"] * 100 / budget).quantize(Decimal("0.1"))
            if latest and budget else None,
            months=tuple(months),
            daily_spend=daily,
            spend_by_product=by_product,
            event_counts={row["type"]: row["events"] for row in self._select(
                load_query("account_event_counts"), params)},
            events=tuple(self._select(load_query("account_events"),
                                      {**params, "limit": RECENT_EVENTS})),
            invoices=tuple(self._select(load_query("account_invoices"), params)),
        )

    def _daily_spend(self, account_id: str, months: Sequence[Record]
                     ) -> tuple[tuple[tuple[date, Decimal], ...], dict[str, Decimal]]:
        """Spend per day (all products) and per product, over the last DAILY_WINDOW_DAYS days
        that end on the account's last usage day."""
        if not months:
            return (), {}
        last: datetime = max(month["last_usage"] for month in months)
        first: datetime = min(month["first_usage"] for month in months)
        first_day = max(first.date(), last.date() - timedelta(days=DAILY_WINDOW_DAYS - 1))
        rows = self._select(load_sink_query("daily_spend"), {
            "account_id": account_id, "first_day": first_day.isoformat(),
            "last_day": last.date().isoformat()})
        per_day: dict[date, Decimal] = {}
        per_product: dict[str, Decimal] = {}
        for row in rows:
            per_day[row["day"]] = per_day.get(row["day"], ZERO) + row["cost"]
            per_product[row["product"]] = per_product.get(row["product"], ZERO) + row["cost"]
        by_cost = dict(sorted(per_product.items(), key=lambda item: (-item[1], item[0])))
        return daily_series(sorted(per_day.items())), by_cost
