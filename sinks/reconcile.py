"""Reconciliation: does ClickHouse say what the ledger says, to the micro-dollar?

The ledger is the only place money is decided; ClickHouse holds copies of its outputs. This
compares the two and lists every difference:

- per account, ``lifetime_spend`` of the ledger's final snapshot = the sum of ``cost`` of the
  account's rows in rated_usage FINAL;
- per account, ``month_to_date_spend`` = the sum of ``cost`` billed to the snapshot's
  ``open_period`` (the ledger charges late usage to the open month, and so does ``billed_period``);
- every invoice: the invoices table = the ``invoice_issued`` events (from the replay's events file
  when given, else from account_state_events), same account, period and amount;
- the spend_monthly rollup = rated_usage FINAL per account and billed month, which catches a
  duplicate that slipped past the sink's dedup into the summing view.

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

Invoice = tuple[str, str, Decimal]  # account_id, period, amount


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


def load_invoice_events(path: Path) -> dict[str, Invoice]:
    """invoice_id -> (account, period, amount) of every invoice_issued line of an events file."""
    invoices = {}
    for line in path.read_bytes().splitlines():
        if not line.strip():
            continue
        event = orjson.loads(line)
        if event.get("type") == "invoice_issued":
            invoices[event["invoice_id"]] = (event["account_id"], event["period"],
                                             to_money(event["amount"]))
    return invoices


def _spend(rows: Iterable[tuple[str, str, Decimal]]) -> dict[str, dict[str, Decimal]]:
    spend: dict[str, dict[str, Decimal]] = {}
    for account_id, period, cost in rows:
        spend.setdefault(account_id, {})[period] = cost
    return spend


def _invoices(rows: Iterable[tuple[str, str, str, Decimal]]) -> dict[str, Invoice]:
    return {invoice_id: (account_id, period, amount)
            for invoice_id, account_id, period, amount in rows}


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
              invoice_events: Mapping[str, Invoice] | None = None) -> Report:
    """Compare ClickHouse with the ledger's snapshots (and invoice events when given)."""
    spend = _spend(writer.query(SPEND_BY_ACCOUNT_AND_PERIOD_SQL))
    stored_invoices = _invoices(writer.query(INVOICES_SQL))
    expected_invoices = (invoice_events if invoice_events is not None
                         else _invoices(writer.query(INVOICE_EVENTS_SQL)))
    differences = [
        *compare_spend(snapshots, spend),
        *compare_invoices(expected_invoices, stored_invoices),
        *compare_rollup(spend, _spend(writer.query(ROLLUP_BY_ACCOUNT_AND_PERIOD_SQL))),
    ]
    return Report(len(snapshots.keys() | spend.keys()), len(expected_invoices), differences)
