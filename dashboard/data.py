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
- can send (and the status and pause reasons the account page shows with it):
  ``accounts_current FINAL`` (what the gateway enforces; newer than the latest event's snapshot
  when a pause reason lapsed without an event) when the sink has written the account's status,
  else the latest snapshot by the same rule; since when, from the account's pause and suspension
  events (:func:`blocking_history`).
- lists: one SQL per kind of list, without LIMIT; a page adds ``LIMIT offset, n`` and the count
  is ``SELECT count() FROM (it)``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
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
    tier_changes_after_opening,
)
from sinks.clickhouse import ClickHouseWriter
from sinks.sqlfiles import load_query as load_sink_query
from sinks.sqlfiles import split_statements

_QUERIES = resources.files("dashboard").joinpath("queries")
# What the dashboard reads; the sink's DDL creates them (`billing sink migrate`, `billing demo`).
REQUIRED_TABLES = ("rated_usage", "account_state_events", "credit_purchases", "invoices",
                   "spend_daily")
DAILY_WINDOW_DAYS = 90  # the account chart: up to this many days, ending where the data ends
RECENT_EVENTS = 50
PAGE_SIZE = 100  # rows of a list page
BUDGET_THRESHOLDS = (80, 100)  # percent of the monthly budget, the lists the home page links
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


def daily_series(points: Sequence[tuple[date, Decimal]], last_day: date | None = None
                 ) -> tuple[tuple[date, Decimal], ...]:
    """Money per day with the days in between present as zero, so a chart's x axis is time;
    up to ``last_day`` when it is later than the last point (days of no usage at the end)."""
    if not points:
        return ()
    amounts = dict(points)
    first, last = min(amounts), max(amounts)
    if last_day is not None and last_day > last:
        last = last_day
    return tuple((first + timedelta(days=offset),
                  to_money(amounts.get(first + timedelta(days=offset), ZERO)))
                 for offset in range((last - first).days + 1))


def is_partial(last_day: date | None, data_end: datetime | None) -> bool:
    """A chart's last day is partial when the data ends within it (the sink has not read the
    rest of that day yet)."""
    return last_day is not None and data_end is not None and data_end.date() == last_day


# -- why an account cannot send ---------------------------------------------------------------

SUSPENDED = "suspended"


@dataclass(frozen=True)
class Period:
    """A time the account could not send: paused or suspended, from ``start`` to ``end`` (None:
    still)."""

    status: str
    start: datetime
    end: datetime | None


@dataclass(frozen=True)
class Blocker:
    """One reason the account cannot send now: ``suspended`` (``detail``: the suspension's reason)
    or a pause reason, and the event that began it (None when no such event is stored)."""

    reason: str
    detail: str | None
    since: datetime | None


@dataclass(frozen=True)
class SendState:
    """May the account send now, and if not, why and since when."""

    may_send: bool
    status: str
    blockers: tuple[Blocker, ...]  # suspended first, then the pause reasons
    source: str  # "accounts_current" (the status the gateway reads) or "latest snapshot"
    as_of: datetime


def blocking_history(changes: Sequence[Record]
                     ) -> tuple[dict[str, tuple[datetime, str | None]], tuple[Period, ...]]:
    """From an account's pauses, resumes, suspensions and reinstatements in emitted order
    (``account_state_changes.sql``): since when each blocker still held at the end holds
    (``suspended`` -> the latest suspension after the last reinstatement, with its reason; a
    pause reason -> the latest pause for it after it was last lifted), and the periods the
    account could not send (the status after each event says when one begins and ends)."""
    held: dict[str, tuple[datetime, str | None]] = {}
    periods: list[Period] = []
    for change in changes:
        at, status = change["timestamp"], change["status_after"]
        if change["type"] == "account_suspended":
            held.setdefault(SUSPENDED, (at, change["reason"]))
        elif change["type"] == "usage_paused" and change["reason"]:
            held.setdefault(change["reason"], (at, None))
        still = {*change["pause_reasons_after"], *([SUSPENDED] if status == SUSPENDED else [])}
        held = {reason: began for reason, began in held.items() if reason in still}
        if periods and periods[-1].end is None and periods[-1].status != status:
            periods[-1] = Period(periods[-1].status, periods[-1].start, at)
        if status != "active" and not (periods and periods[-1].end is None):
            periods.append(Period(status, at, None))
    return held, tuple(periods)


def send_state(current: Record | None, snapshot: Record,
               held: Mapping[str, tuple[datetime, str | None]]) -> SendState:
    """The account's ``accounts_current`` row when the sink has written one (``may_send`` and
    ``blocked_reasons``, what the gateway enforces), else the latest snapshot's status and pause
    reasons (the same rule: only an active account may send); each blocker dated by ``held``."""
    if current is not None:
        may_send, status = bool(current["may_send"]), current["status"]
        reasons, source, as_of = list(current["blocked_reasons"]), "accounts_current", \
            current["updated_at"]
    else:
        status = snapshot["status"]
        may_send = status == "active"
        reasons = [*snapshot["pause_reasons"], *([SUSPENDED] if status == SUSPENDED else [])]
        source, as_of = "latest snapshot", snapshot["as_of"]
    ordered = sorted(set(reasons), key=lambda reason: (reason != SUSPENDED, reason))
    return SendState(may_send, status, tuple(
        Blocker(reason, held[reason][1] if reason in held else None,
                held[reason][0] if reason in held else None) for reason in ordered),
        source, as_of)


# -- what the pages show ----------------------------------------------------------------------


@dataclass(frozen=True)
class ListFilter:
    """Which accounts (or invoices) a list page shows: ``kind`` ``status`` (value active, paused,
    suspended; empty: every account), ``budget`` (value: percent of the monthly budget used in
    the open month, at least) or ``invoices`` (value unpaid or overdue)."""

    kind: str
    value: str

    @property
    def query(self) -> str:
        """The page's query string (``status=suspended``), empty for every account."""
        return f"{self.kind}={self.value}" if self.value else ""


STATUS_FILTERS = ("active", "paused", "suspended")
INVOICE_FILTERS = ("unpaid", "overdue")


@dataclass(frozen=True)
class AccountList:
    """One page of a list: its rows, how many there are in all, where the page starts."""

    filter: ListFilter
    total: int
    offset: int
    rows: tuple[Record, ...]
    open_month: str  # the budget lists' month
    as_of: date  # the overdue lists' day


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
    over_limit_usage_events: int  # served while the account was paused or suspended
    credit_purchases: int
    credits_purchased: Decimal
    invoice_payments: int
    invoice_payments_amount: Decimal
    invoices_issued: int
    invoiced: Decimal
    account_events: dict[str, int]  # by type
    tier_changes_after_opening: int  # tier_changed events but each account's opening one
    pauses_by_reason: dict[str, int]
    daily_spend: tuple[tuple[date, Decimal], ...]
    data_end: datetime | None  # the latest usage timestamp: the day it falls in is partial
    open_month: str  # the latest billed month: budgets are measured in it
    list_counts: dict[str, int]  # ListFilter.query -> rows, for the lists the home page links


@dataclass(frozen=True)
class AccountView:
    """One account: latest snapshot, balances brought up to date, spend, invoices, events."""

    account_id: str
    snapshot: Record  # account_snapshot.sql: the latest snapshot and when it was taken
    send: SendState
    blocked_periods: tuple[Period, ...]
    lifetime_spend: Decimal  # rated_usage FINAL
    usage_since_snapshot: Decimal
    net_balance: Decimal  # credit - outstanding now
    open_month: str  # the latest billed month of all the data
    open_month_spend: Decimal
    budget_used_percent: Decimal | None  # of the open month's spend, against the budget
    months: tuple[Record, ...]
    daily_spend: tuple[tuple[date, Decimal], ...]
    partial_last_day: bool
    data_end: datetime | None
    spend_by_product: dict[str, Decimal]  # over the days of daily_spend
    event_counts: dict[str, int]
    events: tuple[Record, ...]  # newest first, at most RECENT_EVENTS
    invoices: tuple[Record, ...]


# -- reading ClickHouse -----------------------------------------------------------------------

class DashboardData:
    """The dashboard's read-only queries over one ClickHouse connection.

    Not thread-safe (neither connection is): the web app calls it from a single worker thread.
    """

    def __init__(self, writer: ClickHouseWriter) -> None:
        self._writer = writer

    def _select(self, sql: str, params: Mapping[str, Any] | None = None) -> list[Record]:
        return _records(*self._writer.query_with_names(sql, params))

    def _tables(self) -> set[str]:
        return {row["name"] for row in self._select(
            "SELECT name FROM system.tables WHERE database = currentDatabase()")}

    def check_tables(self) -> None:
        """Fail at start, with what to do, when the tables are not there (a wrong URL, an empty
        chdb directory): the dashboard never creates them, it only reads."""
        present = self._tables()
        missing = [table for table in REQUIRED_TABLES if table not in present]
        if missing:
            raise DashboardDataError(
                f"no billing tables ({', '.join(missing)} missing): point BILLING_CLICKHOUSE_URL "
                "at the ClickHouse the sink writes (`billing demo` prints its chdb:// URL), or "
                "create them with `billing sink migrate`")

    def _data_end(self) -> datetime | None:
        ((end, rows),) = self._select_rows("SELECT max(timestamp), count() FROM rated_usage")
        return end if rows else None

    def _open_month(self) -> str:
        ((month,),) = self._select_rows("SELECT max(billed_period) FROM rated_usage")
        return month

    def _select_rows(self, sql: str, params: Mapping[str, Any] | None = None
                     ) -> list[tuple[Any, ...]]:
        return [tuple(row) for row in self._writer.query(sql, params)]

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
        for event_type, detail, count in self._select_rows(OUTPUT_COUNTS_SQL):
            outputs.setdefault(event_type, Counter())[detail] += count
        ((purchases, purchased, invoice_payments, invoices_paid),) = self._select_rows(
            CREDITS_SQL)
        ((invoices, invoiced),) = self._select_rows(INVOICES_SQL)
        ((usage, requests, spend, late, over_limit),) = self._select_rows(USAGE_SQL)
        spend = to_money(spend or ZERO)
        snapshot_net = sum((g["credit_balance"] - g["outstanding_balance"] for g in population),
                           ZERO)
        snapshot_spend = sum((g["lifetime_spend"] for g in population), ZERO)
        daily = daily_series([(day, to_money(cost)) for day, cost
                              in self._select_rows(DAILY_SPEND_SQL)])
        open_month, today = self._open_month(), datetime.now(UTC).date()
        lists = [ListFilter("budget", str(percent)) for percent in BUDGET_THRESHOLDS]
        lists += [ListFilter("invoices", kind) for kind in INVOICE_FILTERS]
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
            tier_changes_after_opening=tier_changes_after_opening(outputs),
            pauses_by_reason=dict(outputs.get("usage_paused", {})),
            daily_spend=daily,
            data_end=self._data_end(),
            open_month=open_month,
            list_counts={item.query: self._count(*self._list_query(item, open_month, today))
                         for item in lists},
        )

    def _list_query(self, item: ListFilter, open_month: str, as_of: date
                    ) -> tuple[str, dict[str, Any]]:
        """The SQL (without LIMIT) and parameters of a list."""
        if item.kind == "budget":
            return load_sink_query("accounts_near_budget"), {
                "period": open_month, "percent": int(item.value)}
        if item.kind == "invoices":
            return load_query("unpaid_invoices"), {
                "as_of": as_of.isoformat(), "overdue_only": int(item.value == "overdue")}
        return load_query("accounts"), {"search": "", "status": item.value}

    def _count(self, sql: str, params: Mapping[str, Any]) -> int:
        ((count,),) = self._select_rows(f"SELECT count() FROM ({sql})", params)
        return count

    def account_list(self, item: ListFilter, offset: int = 0, limit: int = PAGE_SIZE,
                     as_of: date | None = None) -> AccountList:
        """One page of the accounts (or invoices) ``item`` selects, and how many there are."""
        open_month, day = self._open_month(), as_of or datetime.now(UTC).date()
        sql, params = self._list_query(item, open_month, day)
        rows = self._select(f"{sql}\nLIMIT %(offset)s, %(limit)s",
                            {**params, "offset": offset, "limit": limit})
        return AccountList(item, self._count(sql, params), offset, tuple(rows), open_month, day)

    def accounts(self, search: str = "", limit: int = 25) -> list[Record]:
        """Accounts whose id contains ``search`` (all when empty), biggest lifetime spend first."""
        return self._select(f"{load_query('accounts')}\nLIMIT %(limit)s",
                            {"search": search, "status": "", "limit": limit})

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
        open_month, data_end = self._open_month(), self._data_end()
        open_spend = sum((m["cost"] for m in months if m["billed_period"] == open_month), ZERO)
        budget = snapshot["monthly_budget"]
        daily, by_product = self._daily_spend(account_id, months, data_end)
        current = (self._select(load_query("account_current"), params)
                   if "accounts_current" in self._tables() else [])
        held, periods = blocking_history(self._select(load_query("account_state_changes"),
                                                      params))
        return AccountView(
            account_id=account_id,
            snapshot=snapshot,
            send=send_state(current[0] if current else None, snapshot, held),
            blocked_periods=periods,
            lifetime_spend=lifetime_spend,
            usage_since_snapshot=usage_since,
            net_balance=snapshot["credit_balance"] - snapshot["outstanding_balance"] - usage_since,
            open_month=open_month,
            open_month_spend=open_spend,
            budget_used_percent=(open_spend * 100 / budget).quantize(Decimal("0.1"))
            if budget else None,
            months=tuple(months),
            daily_spend=daily,
            partial_last_day=is_partial(daily[-1][0] if daily else None, data_end),
            data_end=data_end,
            spend_by_product=by_product,
            event_counts={row["type"]: row["events"] for row in self._select(
                load_query("account_event_counts"), params)},
            events=tuple(self._select(load_query("account_events"),
                                      {**params, "limit": RECENT_EVENTS})),
            invoices=tuple(self._select(load_query("account_invoices"), params)),
        )

    def _daily_spend(self, account_id: str, months: Sequence[Record], data_end: datetime | None
                     ) -> tuple[tuple[tuple[date, Decimal], ...], dict[str, Decimal]]:
        """Spend per day (all products) and per product, over the last DAILY_WINDOW_DAYS days
        that end where the data ends (days after the account's last usage show as zero: a
        suspended account's chart runs on to now)."""
        if not months:
            return (), {}
        last = max(month["last_usage"] for month in months).date()
        if data_end is not None:
            last = max(last, data_end.date())
        first: datetime = min(month["first_usage"] for month in months)
        first_day = max(first.date(), last - timedelta(days=DAILY_WINDOW_DAYS - 1))
        rows = self._select(load_sink_query("daily_spend"), {
            "account_id": account_id, "first_day": first_day.isoformat(),
            "last_day": last.isoformat()})
        per_day: dict[date, Decimal] = {}
        per_product: dict[str, Decimal] = {}
        for row in rows:
            per_day[row["day"]] = per_day.get(row["day"], ZERO) + row["cost"]
            per_product[row["product"]] = per_product.get(row["product"], ZERO) + row["cost"]
        by_cost = dict(sorted(per_product.items(), key=lambda item: (-item[1], item[0])))
        return daily_series(sorted(per_day.items()), last), by_cost
