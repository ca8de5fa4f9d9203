"""Reconciliation: does ClickHouse say what the ledger says, to the micro-dollar?

The ledger is the only place money is decided; ClickHouse holds copies of its outputs. This
compares the two and lists every difference. Missing rows are not enough to look for: a row that
collapsed into another (two outputs with one ``event_id`` under ReplacingMergeTree) or a row lost
after a mutation is found only by comparing money, so every figure below is a sum per account.

Per account, the ledger's final snapshot against ClickHouse:

- ``lifetime_spend`` = the sum of ``cost`` of the account's rows in rated_usage FINAL;
- ``month_to_date_spend`` = the sum of ``cost`` billed to the snapshot's ``open_period`` (the
  ledger charges late usage to the open month, and so does ``billed_period``);
- ``lifetime_credits_purchased`` = the sum of ``amount`` of the account's credits_applied rows in
  credit_purchases FINAL that came from a purchase (``invoice_id`` NULL; an ``invoice_paid``
  yields a credits_applied row with ``invoice_id`` set, which is not a purchase);
- **conservation**: ``credit_balance - outstanding_balance`` of the snapshot = free credit +
  credits purchased + invoice payments - lifetime spend, the right-hand side entirely from
  ClickHouse. This is the ledger's own invariant (``billing.ledger``), so it holds for every
  account; it is what catches a lost or collapsed invoice payment or opening row, which the
  snapshot has no figure of its own for.

  The snapshot carries neither the free credit nor the invoice payments. Invoice payments are the
  credits_applied rows with ``invoice_id`` set. Free credit is derived from the account's opening
  output: ``account_opened`` emits ``tier_changed`` with ``from_tier`` NULL (its only output that
  has no from_tier), and its snapshot is the account just after opening, before any usage or
  payment, so its ``credit_balance - outstanding_balance`` is exactly the free credit granted
  ($1.00 for self-serve by default, nothing for enterprise, whatever the ledger's configuration
  said). Reading it there rather than from a configuration keeps reconcile free of the ledger's
  settings, and a lost opening row shows up as a difference instead of being assumed.

Per invoice and per account, the invoices:

- every invoice: the invoices table = the ``invoice_issued`` events (from the replay's events file
  when given, else from account_state_events), same account, period and amount;
- ``invoiced``: the per-account sum of those amounts, on the same two sides.

With the replay's events file (``--events``), the money in its output lines is compared per
account with ClickHouse too: ``free_credit``, ``credits_purchased`` and ``invoice_payments``
(figures suffixed ``(events)``). The lines are summed as they are, one per line: the file is the
ledger's word, so two lines with one event_id count twice there, and once in ClickHouse.

Inside ClickHouse, a derived table against its source (the "ledger" side of these differences is
the source table):

- the spend_monthly rollup = rated_usage FINAL per account and billed month, which catches a
  duplicate that slipped past the sink's dedup into the summing view;
- the credit_purchases view = the credits_applied rows of account_state_events FINAL, per account,
  purchases and invoice payments apart (an insert that reached one table and not the other, or a
  row deleted from one of them).

Inputs are the files ``billing replay`` writes: ``--snapshots-out`` (one JSON object keyed by
account_id, money as strings) and ``--events-out`` (JSON lines).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson

from billing.events import ZERO, to_money
from sinks.clickhouse import ClickHouseWriter
from sinks.display import format_value

SPEND_BY_ACCOUNT_AND_PERIOD_SQL = """
SELECT account_id, billed_period, sum(cost)
FROM rated_usage FINAL
GROUP BY account_id, billed_period
"""
ROLLUP_BY_ACCOUNT_AND_PERIOD_SQL = """
SELECT account_id, substring(toString(billed_month), 1, 7) AS billed_period, sum(cost)
FROM spend_monthly
GROUP BY account_id, billed_period
"""
INVOICES_SQL = "SELECT invoice_id, account_id, period, amount FROM invoices FINAL"
INVOICE_EVENTS_SQL = """
SELECT invoice_id, account_id, period, amount
FROM account_state_events FINAL
WHERE type = 'invoice_issued'
"""
# Money in per account: purchases (no invoice_id) and invoice payments (an invoice_id).
CREDITS_SQL = """
SELECT account_id, sumIf(amount, invoice_id IS NULL), sumIf(amount, invoice_id IS NOT NULL)
FROM credit_purchases FINAL
GROUP BY account_id
"""
CREDIT_EVENTS_SQL = """
SELECT account_id,
       sumIf(assumeNotNull(amount), invoice_id IS NULL),
       sumIf(assumeNotNull(amount), invoice_id IS NOT NULL)
FROM account_state_events FINAL
WHERE type = 'credits_applied'
GROUP BY account_id
"""
# The opening output (account_opened emits tier_changed from no tier): the snapshot then holds
# nothing but the free credit.
FREE_CREDIT_SQL = """
SELECT account_id, sum(snapshot_credit_balance - snapshot_outstanding_balance)
FROM account_state_events FINAL
WHERE type = 'tier_changed' AND from_tier IS NULL
GROUP BY account_id
"""

Invoice = tuple[str, str, Decimal]  # account_id, period, amount
Money = dict[str, dict[str, Decimal]]  # account_id -> figure -> amount

FREE_CREDIT, PURCHASED, INVOICE_PAYMENTS = "free_credit", "credits_purchased", "invoice_payments"
MONEY_IN = (FREE_CREDIT, PURCHASED, INVOICE_PAYMENTS)


@dataclass(frozen=True)
class Difference:
    """One figure on which the ledger and ClickHouse disagree (None: absent on that side)."""

    subject: str  # an account_id or an invoice_id
    figure: str
    ledger: Any
    clickhouse: Any

    def __str__(self) -> str:
        text = (f"{self.subject} {self.figure}: ledger={format_value(self.ledger)} "
                f"clickhouse={format_value(self.clickhouse)}")
        if isinstance(self.ledger, Decimal) and isinstance(self.clickhouse, Decimal):
            text += f" diff={format_value(self.clickhouse - self.ledger)}"
        return text


@dataclass(frozen=True)
class Report:
    """What was compared and what differed."""

    accounts: int
    invoices: int
    differences: list[Difference]

    @property
    def ok(self) -> bool:
        return not self.differences


def load_snapshots(path: Path) -> dict[str, dict[str, Any]]:
    """The replay's final snapshots, keyed by account_id (money still as strings)."""
    snapshots = orjson.loads(path.read_bytes())
    if not isinstance(snapshots, dict):
        raise ValueError(f"{path}: expected one JSON object keyed by account_id")
    return snapshots


@dataclass(frozen=True)
class LedgerEvents:
    """What reconcile reads from the ledger's events file."""

    invoices: dict[str, Invoice]  # invoice_id -> (account, period, amount)
    invoiced: dict[str, Decimal]  # account -> sum of its invoice_issued lines
    money: Money  # account -> free_credit / credits_purchased / invoice_payments


def load_events(path: Path) -> LedgerEvents:
    """The invoices and the money in per account of an events file (``billing replay
    --events-out``): invoice_issued, credits_applied (split by invoice_id), and the opening
    tier_changed's snapshot for the free credit. Every line counts in the sums, duplicates
    included (``invoices`` is keyed by invoice_id: there a repeated line replaces the first)."""
    invoices: dict[str, Invoice] = {}
    invoiced: dict[str, Decimal] = {}
    money: Money = {}

    def add(account_id: str, figure: str, amount: Decimal) -> None:
        figures = money.setdefault(account_id, dict.fromkeys(MONEY_IN, ZERO))
        figures[figure] += amount

    for line in path.read_bytes().splitlines():
        if not line.strip():
            continue
        event = orjson.loads(line)
        kind = event.get("type")
        if kind == "invoice_issued":
            amount = to_money(event["amount"])
            invoices[event["invoice_id"]] = (event["account_id"], event["period"], amount)
            invoiced[event["account_id"]] = invoiced.get(event["account_id"], ZERO) + amount
        elif kind == "credits_applied":
            add(event["account_id"], PURCHASED if event.get("invoice_id") is None
                else INVOICE_PAYMENTS, to_money(event["amount"]))
        elif kind == "tier_changed" and event.get("from_tier") is None:
            opened = event["snapshot"]
            add(event["account_id"], FREE_CREDIT,
                to_money(opened["credit_balance"]) - to_money(opened["outstanding_balance"]))
    return LedgerEvents(invoices, invoiced, money)


def load_invoice_events(path: Path) -> dict[str, Invoice]:
    """invoice_id -> (account, period, amount) of every invoice_issued line of an events file."""
    return load_events(path).invoices


def _spend(rows: Iterable[tuple[str, str, Decimal]]) -> dict[str, dict[str, Decimal]]:
    spend: dict[str, dict[str, Decimal]] = {}
    for account_id, period, cost in rows:
        spend.setdefault(account_id, {})[period] = cost
    return spend


def _invoices(rows: Iterable[tuple[str, str, str, Decimal]]) -> dict[str, Invoice]:
    return {invoice_id: (account_id, period, amount)
            for invoice_id, account_id, period, amount in rows}


def _credits(rows: Iterable[tuple[str, Decimal, Decimal]]) -> Money:
    return {account_id: {PURCHASED: purchased, INVOICE_PAYMENTS: paid}
            for account_id, purchased, paid in rows}


def clickhouse_money(writer: ClickHouseWriter) -> Money:
    """Money in per account as ClickHouse holds it: free credit (opening row of
    account_state_events FINAL), purchases and invoice payments (credit_purchases FINAL)."""
    money: Money = {account_id: dict.fromkeys(MONEY_IN, ZERO) | figures
                    for account_id, figures in _credits(writer.query(CREDITS_SQL)).items()}
    for account_id, free_credit in writer.query(FREE_CREDIT_SQL):
        money.setdefault(account_id, dict.fromkeys(MONEY_IN, ZERO))[FREE_CREDIT] = free_credit
    return money


def compare_spend(snapshots: Mapping[str, Mapping[str, Any]],
                  spend: Mapping[str, Mapping[str, Decimal]]) -> list[Difference]:
    """Lifetime and month-to-date spend of each account, ledger vs rated_usage."""
    differences = []
    for account_id in sorted(snapshots.keys() | spend.keys()):
        periods = spend.get(account_id, {})
        snapshot = snapshots.get(account_id)
        if snapshot is None:
            differences.append(Difference(account_id, "lifetime_spend", None,
                                          sum(periods.values(), ZERO)))
            continue
        for figure, ledger, clickhouse in (
            ("lifetime_spend", snapshot["lifetime_spend"], sum(periods.values(), ZERO)),
            (f"month_to_date_spend {snapshot['open_period']}", snapshot["month_to_date_spend"],
             periods.get(snapshot["open_period"], ZERO)),
        ):
            ledger = to_money(ledger, figure)
            if ledger != clickhouse:
                differences.append(Difference(account_id, figure, ledger, clickhouse))
    return differences


def compare_invoices(expected: Mapping[str, Invoice],
                     stored: Mapping[str, Invoice]) -> list[Difference]:
    """Every invoice on both sides with the same account, period and amount."""
    differences = []
    for invoice_id in sorted(expected.keys() | stored.keys()):
        want, have = expected.get(invoice_id), stored.get(invoice_id)
        if want is None or have is None or want[:2] != have[:2]:
            differences.append(Difference(invoice_id, "invoice (account, period, amount)",
                                          want, have))
        elif want[2] != have[2]:
            differences.append(Difference(invoice_id, f"invoice amount {want[0]} {want[1]}",
                                          want[2], have[2]))
    return differences


def invoiced_by_account(invoices: Mapping[str, Invoice]) -> dict[str, Decimal]:
    """The sum of the invoice amounts of each account."""
    totals: dict[str, Decimal] = {}
    for account_id, _period, amount in invoices.values():
        totals[account_id] = totals.get(account_id, ZERO) + amount
    return totals


def compare_invoiced(want: Mapping[str, Decimal],
                     have: Mapping[str, Decimal]) -> list[Difference]:
    """Per account, the sum of the invoices issued (the ledger's vs the invoices table's)."""
    return [Difference(account_id, "invoiced", want.get(account_id, ZERO),
                       have.get(account_id, ZERO))
            for account_id in sorted(want.keys() | have.keys())
            if want.get(account_id, ZERO) != have.get(account_id, ZERO)]


def compare_credits(snapshots: Mapping[str, Mapping[str, Any]],
                    money: Mapping[str, Mapping[str, Decimal]]) -> list[Difference]:
    """``lifetime_credits_purchased`` of each snapshot vs the purchases in ClickHouse; an account
    with purchases in ClickHouse and no snapshot is reported with ledger=None."""
    differences = []
    for account_id in sorted(snapshots.keys() | money.keys()):
        stored = money.get(account_id, {}).get(PURCHASED, ZERO)
        snapshot = snapshots.get(account_id)
        if snapshot is None:
            if stored:
                differences.append(Difference(account_id, "lifetime_credits_purchased", None,
                                              stored))
            continue
        ledger = to_money(snapshot["lifetime_credits_purchased"], "lifetime_credits_purchased")
        if ledger != stored:
            differences.append(Difference(account_id, "lifetime_credits_purchased", ledger,
                                          stored))
    return differences


def compare_balances(snapshots: Mapping[str, Mapping[str, Any]],
                     spend: Mapping[str, Mapping[str, Decimal]],
                     money: Mapping[str, Mapping[str, Decimal]]) -> list[Difference]:
    """Conservation, per account in the snapshots: ``credit_balance - outstanding_balance`` (the
    ledger) vs free credit + purchases + invoice payments - lifetime spend (ClickHouse's rows)."""
    differences = []
    for account_id in sorted(snapshots):
        snapshot = snapshots[account_id]
        ledger = (to_money(snapshot["credit_balance"], "credit_balance")
                  - to_money(snapshot["outstanding_balance"], "outstanding_balance"))
        figures = money.get(account_id, {})
        stored = (sum((figures.get(figure, ZERO) for figure in MONEY_IN), ZERO)
                  - sum(spend.get(account_id, {}).values(), ZERO))
        if ledger != stored:
            differences.append(Difference(
                account_id, "credit_balance - outstanding_balance "
                            "(free credit + purchases + invoice payments - spend)",
                ledger, stored))
    return differences


def compare_money(expected: Mapping[str, Mapping[str, Decimal]],
                  stored: Mapping[str, Mapping[str, Decimal]],
                  figures: Iterable[str] = MONEY_IN, suffix: str = "") -> list[Difference]:
    """The same per-account figures on two sides (a missing account or figure is zero)."""
    differences = []
    figures = tuple(figures)
    for account_id in sorted(expected.keys() | stored.keys()):
        want, have = expected.get(account_id, {}), stored.get(account_id, {})
        for figure in figures:
            if want.get(figure, ZERO) != have.get(figure, ZERO):
                differences.append(Difference(account_id, figure + suffix,
                                              want.get(figure, ZERO), have.get(figure, ZERO)))
    return differences


def compare_rollup(exact: Mapping[str, Mapping[str, Decimal]],
                   rollup: Mapping[str, Mapping[str, Decimal]]) -> list[Difference]:
    """spend_monthly vs rated_usage FINAL, per account and billed month ("ledger" = FINAL)."""
    differences = []
    for account_id in sorted(exact.keys() | rollup.keys()):
        want, have = exact.get(account_id, {}), rollup.get(account_id, {})
        for period in sorted(want.keys() | have.keys()):
            if want.get(period, ZERO) != have.get(period, ZERO):
                differences.append(Difference(account_id, f"spend_monthly rollup {period}",
                                              want.get(period, ZERO), have.get(period, ZERO)))
    return differences


def reconcile(writer: ClickHouseWriter, snapshots: Mapping[str, Mapping[str, Any]],
              invoice_events: Mapping[str, Invoice] | None = None, *,
              events: LedgerEvents | None = None) -> Report:
    """Compare ClickHouse with the ledger's snapshots, and with its events file when given
    (``events``, from :func:`load_events`; ``invoice_events`` alone: only its invoices)."""
    spend = _spend(writer.query(SPEND_BY_ACCOUNT_AND_PERIOD_SQL))
    money = clickhouse_money(writer)
    stored_invoices = _invoices(writer.query(INVOICES_SQL))
    if events is not None:
        invoice_events = events.invoices
    expected_invoices = (invoice_events if invoice_events is not None
                         else _invoices(writer.query(INVOICE_EVENTS_SQL)))
    differences = [
        *compare_spend(snapshots, spend),
        *compare_credits(snapshots, money),
        *compare_balances(snapshots, spend, money),
        *compare_invoices(expected_invoices, stored_invoices),
        *compare_invoiced(events.invoiced if events is not None
                          else invoiced_by_account(expected_invoices),
                          invoiced_by_account(stored_invoices)),
        *(compare_money(events.money, money, suffix=" (events)") if events is not None else ()),
        *compare_rollup(spend, _spend(writer.query(ROLLUP_BY_ACCOUNT_AND_PERIOD_SQL))),
        *compare_money(_credits(writer.query(CREDIT_EVENTS_SQL)), money,
                       (PURCHASED, INVOICE_PAYMENTS), " (credit_purchases view)"),
    ]
    accounts = snapshots.keys() | spend.keys() | money.keys()
    return Report(len(accounts), len(expected_invoices), differences)
