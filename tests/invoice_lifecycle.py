"""One invoice through its life, for the ``invoices_status`` view and ``billing invoice`` on chdb
(``tests/test_invoices_status.py``) and on clickhouse-server 18.16
(``tests/integration/test_invoices_status_server.py``).

The rows are the ledger's own outputs (``billing.ledger`` through ``tests.ledger.builders``)
mapped by the sink's ``rows_for_account_state`` and inserted stage by stage, as the sink would:

1. ``acct-1`` (enterprise, postpaid) uses $1,234.50 in July 2025; closing July issues
   ``inv-acct-1-2025-07``, due 2025-08-16: **open**, overdue ever since;
2. a credit purchase of $1,000.25 pays it first: **partially paid**, $234.25 left (the stage is
   inserted twice, as a redelivery would: it must count once);
3. an ``invoice_paid`` of $234.25 (payment ``wire-7``): **paid**, no longer overdue.

``acct-2`` has an invoice due in a hundred years (net terms of 36,500 days): open, 0 days
overdue.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from billing.events import normalize_input
from sinks.clickhouse import ClickHouseWriter
from sinks.display import format_money
from sinks.migrate import migrate
from sinks.sqlfiles import load_migrations
from tests.ledger.builders import DEFAULT_CONFIG, Events, Run, enterprise_postpaid
from tests.test_sink_samples import store

INVOICE = "inv-acct-1-2025-07"
ISSUED_AT = datetime(2025, 8, 1, 1, 0, tzinfo=UTC)
DUE = date(2025, 8, 16)
PURCHASED_AT = datetime(2025, 8, 20, 9, 30, tzinfo=UTC)
PAID_AT = datetime(2025, 9, 2, 10, 0, tzinfo=UTC)
STATUS_SQL = ("SELECT account_id, invoice_id, period, amount, issued_at, due_date, amount_paid, "
              "unpaid, status, days_overdue, last_paid_at FROM invoices_status "
              "ORDER BY account_id, invoice_id")
OVERDUE_30_SQL = "SELECT invoice_id FROM invoices_status WHERE days_overdue > 30"


def _invoice_paid(account_id: str, amount: str, payment_id: str) -> dict[str, Any]:
    """An ``invoice_paid`` of ``INVOICE`` at ``PAID_AT``, with a payment id (the builders' has
    none)."""
    return normalize_input({"type": "invoice_paid", "event_id": payment_id,
                            "account_id": account_id,
                            "timestamp": PAID_AT.isoformat().replace("+00:00", "Z"),
                            "invoice_id": INVOICE, "amount": amount, "payment_id": payment_id})


def stages() -> list[list[dict[str, Any]]]:
    """The output events of each stage (the first holds acct-2's invoice too)."""
    run, events = Run(), Events()
    enterprise_postpaid(run, events)
    run(events.usage("1234.5", at="2025-07-10T08:00:00Z"))
    far = Run(dataclasses.replace(DEFAULT_CONFIG, invoice_net_terms=timedelta(days=36_500)))
    later = Events("acct-2")
    enterprise_postpaid(far, later)
    far(later.usage("10", at="2025-07-10T08:00:00Z"))
    issued = run(events.close_period("2025-07", at="2025-08-01T01:00:00Z")).outputs + far(
        later.close_period("2025-07", at="2025-08-01T01:00:00Z")).outputs
    purchased = run(events.purchase("1000.25", payment_id="pay-card-1",
                                    at="2025-08-20T09:30:00Z")).outputs
    paid = run(_invoice_paid("acct-1", "234.25", "wire-7")).outputs
    return [issued, purchased, paid]


def acct_1(status: str, paid: str, last_paid_at: datetime | None) -> tuple[Any, ...]:
    """acct-1's row of the view without days_overdue (the last but one column)."""
    amount = Decimal("1234.5")
    return ("acct-1", INVOICE, "2025-07", amount, ISSUED_AT, DUE, Decimal(paid),
            amount - Decimal(paid), status, last_paid_at)


ACCT_2 = ("acct-2", "inv-acct-2-2025-07", "2025-07", Decimal(10), ISSUED_AT,
          ISSUED_AT.date() + timedelta(days=36_500), Decimal(0), Decimal(10), "open", 0, None)


def status_rows(writer: ClickHouseWriter) -> tuple[list[tuple[Any, ...]], set[int]]:
    """The view's rows, and the days from the due date to today (UTC) read before and after the
    query: either is right when the query ran across midnight."""
    before = (datetime.now(UTC).date() - DUE).days
    rows = [tuple(row) for row in writer.query(STATUS_SQL)]
    return rows, {before, (datetime.now(UTC).date() - DUE).days}


def without_overdue(row: tuple[Any, ...]) -> tuple[Any, ...]:
    return row[:9] + row[10:]


def check_lifecycle(writer: ClickHouseWriter) -> None:
    """Insert the stages one by one; after each, the view says where the invoice stands."""
    issued, purchased, paid = stages()
    store(writer, outputs=issued)
    (row, far), overdue = status_rows(writer)
    assert (without_overdue(row), far) == (acct_1("open", "0", None), ACCT_2)
    assert row[9] in overdue and min(overdue) > 400  # due in August 2025, unpaid since
    assert writer.query(OVERDUE_30_SQL) == [(INVOICE,)]  # the analysts' one-liner

    store(writer, outputs=purchased)
    store(writer, outputs=purchased)  # redelivered: counted once
    (row, far), overdue = status_rows(writer)
    assert (without_overdue(row), far) == (acct_1("partially_paid", "1000.25", PURCHASED_AT),
                                           ACCT_2)
    assert row[9] in overdue  # partly paid is still overdue

    store(writer, outputs=paid)
    (row, far), _ = status_rows(writer)
    assert (row, far) == ((*acct_1("paid", "1234.5", PAID_AT)[:9], 0, PAID_AT), ACCT_2)
    assert writer.query("SELECT type, count() FROM invoice_history FINAL GROUP BY type "
                        "ORDER BY type") == [("invoice_issued", 2), ("invoice_settled", 2)]
    assert writer.query(OVERDUE_30_SQL) == []


def invoices_from_outputs(outputs: list[dict[str, Any]]) -> dict[str, tuple[Any, ...]]:
    """invoice_id -> (account_id, amount, unpaid, status) as the ledger's outputs leave each
    invoice (in their order per account, as the topic keeps it): what invoices_status must say.
    The status is the ledger's own, the view derives its own from the unpaid amounts."""
    invoices: dict[str, tuple[Any, ...]] = {}
    for event in outputs:
        if event["type"] == "invoice_issued":
            invoices[event["invoice_id"]] = (event["account_id"], event["amount"],
                                             event["amount"], "open")
        elif event["type"] == "invoice_settled":
            account_id, amount, *_ = invoices[event["invoice_id"]]
            invoices[event["invoice_id"]] = (account_id, amount, event["unpaid"],
                                             event["status"])
    return invoices


INVOICES_STATUS_SQL = "SELECT invoice_id, account_id, amount, unpaid, status FROM invoices_status"


def check_backfill(writer: ClickHouseWriter) -> None:
    """A database that held invoice events before migration 010 (``writer``'s, empty, not
    migrated): once migrated, invoices_status has them, and the copies the backfill inserted
    collapse (the invoices are not counted twice)."""
    before_010 = [m for m in load_migrations() if m.name < "010"]
    migrate(writer, before_010)
    issued, purchased, _ = stages()
    store(writer, outputs=issued + purchased)
    assert [m.name for m in load_migrations()][len(before_010)] == "010_invoice_history.sql"
    writer.apply_ddl()
    (row, far), _ = status_rows(writer)
    assert (without_overdue(row), far) == (acct_1("partially_paid", "1000.25", PURCHASED_AT),
                                           ACCT_2)
    assert writer.query("SELECT count(), sum(amount) FROM invoices FINAL") == [
        (2, Decimal("1244.5"))]
    assert writer.query("SELECT count() FROM account_state_events FINAL") == [
        (len(issued) + len(purchased),)]


def check_invoice_command(invoke: Callable[..., Any]) -> None:
    """``billing invoice acct-1 2025-07`` once the lifecycle is stored: the invoice's status,
    money in dollars, its due date, days overdue and both payments."""
    result = invoke("acct-1", "2025-07")
    assert result.exit_code == 0, result.output
    invoice = result.output.split("Invoice (as of today, UTC)\n")[1].split("\n\n")[0]
    header, _, line, count = invoice.splitlines()
    assert count == "(1 row)"
    assert header.split() == ["invoice_id", "status", "amount", "amount_paid", "unpaid",
                              "issued_at", "due_date", "days_overdue", "last_paid_at"]
    assert line.split() == [INVOICE, "paid", "$1,234.50", "$1,234.50", "$0.00", "2025-08-01",
                            "01:00:00", "2025-08-16", "0", "2025-09-02", "10:00:00"]
    payments = result.output.split("Payments on the invoice")[1].split("\n\n")[0].splitlines()
    assert payments[1].split() == ["paid_at", "invoice_id", "paid_by", "payment_id",
                                   "cause_event_id", "amount_paid", "unpaid"]
    assert [line.split() for line in payments[3:5]] == [
        ["2025-08-20", "09:30:00", INVOICE, "credits_purchased", "pay-card-1",
         "credits_purchased-5", format_money(Decimal("1000.25")), "$234.25"],
        ["2025-09-02", "10:00:00", INVOICE, "invoice_paid", "wire-7", "wire-7", "$234.25",
         "$0.00"]]
    assert payments[5] == "(2 rows)"
    unknown = invoke("acct-nobody", "2025-07")
    assert (unknown.exit_code, unknown.output) == (1, "Error: no such account: acct-nobody\n")
