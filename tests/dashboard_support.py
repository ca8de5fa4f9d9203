"""What the dashboard tests share: ClickHouse filled with a ledger run, the figures the ledger says
the dashboard must show, a running dashboard, and a small HTTP client.

The data is the shipped ledger over a seeded workload (``tests.test_sink_samples.ledger_run``:
credits, invoices, pauses, suspensions, tier changes over 25 accounts) plus one hand-made account
whose id needs escaping in HTML and in a URL, and whose last account event is older than its last
usage (the balance must be brought up to date from rated usage), and one that spent 105 % of its
budget in the latest billed month (2026-02). ``accounts_current`` holds the ledger run's accounts'
status records (as the sink writes billing.account-status) but not the hand-made ones', so the
account page is tested both ways: from accounts_current, and from the latest snapshot.
"""

from __future__ import annotations

import asyncio
import http.client
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import urlsplit

from aiohttp import web

from billing.account_status import status_record
from billing.events import ZERO
from dashboard.app import AccessLog, build_app
from dashboard.data import DashboardData, ListFilter
from dashboard.pages import send_text
from runtime.web_auth import TOKEN_VARIABLE
from sinks.clickhouse import ClickHouseWriter
from sinks.rows import ACCOUNTS_CURRENT_COLUMNS, ACCOUNTS_CURRENT_TABLE, rows_for_account_status
from tests.test_sink_samples import T0, ledger_run, output_event, rated, snapshot, store

ODD_ACCOUNT = 'odd/<b>"&é?'
# Its last account event: $0.80 spent of the $1 free credit; then $0.25 more usage, no event.
ODD_SNAPSHOT = snapshot(ODD_ACCOUNT, billing_model="prepaid", credit_balance=Decimal("0.200000"),
                        month_to_date_spend=Decimal("0.800000"),
                        lifetime_spend=Decimal("0.800000"), tier="0",
                        monthly_budget=Decimal("5.000000"), rpm_limit=10, tpm_limit=60_000,
                        has_payment_method=False)
ODD_NET_BALANCE = Decimal("-0.050000")
# Postpaid, $2 budget, nothing spent at its last event; then $2.10 of usage billed to 2026-02.
BUDGET_ACCOUNT = "budget-acct"
BUDGET_SNAPSHOT = snapshot(BUDGET_ACCOUNT, credit_balance=ZERO, month_to_date_spend=ZERO,
                           open_period="2026-02", lifetime_spend=ZERO,
                           monthly_budget=Decimal("2.000000"))
SUSPENDED_ACCOUNT = "acct-000008"  # the ledger run suspends it at this time, and pauses it too
SUSPENDED_AT = datetime(2026, 1, 12, 13, 31, 27, 319_000, tzinfo=UTC)
FEBRUARY = datetime(2026, 2, 1, 2, 0, tzinfo=UTC)


class Expected(NamedTuple):
    """An account as the ledger left it: the figures the dashboard must show for it."""

    status: str
    tier: str
    rpm_limit: int
    monthly_budget: Decimal | None
    lifetime_spend: Decimal
    net_balance: Decimal  # credit - outstanding


def _money(value: Any) -> Decimal | None:
    return None if value is None else Decimal(value)


def populate(writer: ClickHouseWriter) -> dict[str, Expected]:
    """Insert the ledger run and the odd account as the sink would; return each account's
    final figures (the ledger's final snapshots, and the odd account's by hand)."""
    run = ledger_run()
    store(writer, run.rated, run.outputs)
    store(writer,
          [rated(9001, ODD_ACCOUNT, cost="0.8"),
           rated(9002, ODD_ACCOUNT, cost="0.25", timestamp=T0.replace(day=20))],
          [output_event(9001, "budget_changed", ODD_ACCOUNT, monthly_budget=Decimal(5),
                        reason="customer", snapshot=ODD_SNAPSHOT,
                        timestamp=T0.replace(day=16))])
    store(writer,
          [rated(9003, BUDGET_ACCOUNT, cost="1.5", timestamp=FEBRUARY, billed_period="2026-02"),
           rated(9004, BUDGET_ACCOUNT, cost="0.6", timestamp=FEBRUARY, billed_period="2026-02")],
          [output_event(9003, "budget_changed", BUDGET_ACCOUNT, monthly_budget=Decimal(2),
                        reason="customer", snapshot=BUDGET_SNAPSHOT, timestamp=T0)])
    last_event = {output["account_id"]: output["timestamp"] for output in run.outputs}
    writer.insert(ACCOUNTS_CURRENT_TABLE, ACCOUNTS_CURRENT_COLUMNS, rows_for_account_status(
        [status_record(snap, last_event[account_id], version)
         for version, (account_id, snap) in enumerate(sorted(run.snapshots_json.items()))]))
    expected = {
        account_id: Expected(
            snap["status"], snap["tier"], snap["rpm_limit"], _money(snap["monthly_budget"]),
            Decimal(snap["lifetime_spend"]),
            Decimal(snap["credit_balance"]) - Decimal(snap["outstanding_balance"]))
        for account_id, snap in run.snapshots_json.items()
    }
    expected[ODD_ACCOUNT] = Expected("active", "0", 10, Decimal(5), Decimal("1.05"),
                                     ODD_NET_BALANCE)
    expected[BUDGET_ACCOUNT] = Expected("active", "1", 6000, Decimal(2), Decimal("2.1"),
                                        Decimal("-2.1"))
    return expected


def assert_shows_the_ledger(data: DashboardData, expected: Mapping[str, Expected]) -> None:
    """Every account's figures and the totals, as the dashboard computes them, equal the
    ledger's final ones (the backend-independent check: chdb and clickhouse-server)."""
    for account_id, figures in expected.items():
        view = data.account(account_id)
        assert view is not None, account_id
        shown = Expected(view.snapshot["status"], view.snapshot["tier"],
                         view.snapshot["rpm_limit"], view.snapshot["monthly_budget"],
                         view.lifetime_spend, view.net_balance)
        assert shown == figures, account_id
    totals = data.totals()
    assert totals.accounts == len(expected)
    assert totals.net_balance == sum((figures.net_balance for figures in expected.values()), ZERO)
    assert totals.usage_spend == sum((f.lifetime_spend for f in expected.values()), ZERO)
    statuses: dict[str, int] = {}
    for figures in expected.values():
        statuses[figures.status] = statuses.get(figures.status, 0) + 1
    assert totals.accounts_by_status == dict(sorted(statuses.items()))
    assert data.account("no-such-account") is None


SUSPENDED_BANNER = (f"Cannot send: suspended (free_credit_exhausted) since "
                    f"{SUSPENDED_AT:%Y-%m-%d %H:%M} UTC; paused: credits_exhausted since "
                    f"{SUSPENDED_AT:%Y-%m-%d %H:%M} UTC")


def assert_lists_and_send_state(data: DashboardData, expected: Mapping[str, Expected]) -> None:
    """The support lists (status, budget used, unpaid and overdue invoices) select and count
    what the ledger left, page by page; the suspended account says why and since when it cannot
    send (from accounts_current), the budget account that it can (from its latest snapshot)."""
    for status in ("active", "paused", "suspended"):
        wanted = sorted(a for a, figures in expected.items() if figures.status == status)
        found = data.account_list(ListFilter("status", status))
        assert found.total == len(wanted), status
        assert sorted(row["account_id"] for row in found.rows) == wanted
        assert {row["status"] for row in found.rows} == {status}
    everyone = data.account_list(ListFilter("status", ""), offset=0, limit=10)
    rest = data.account_list(ListFilter("status", ""), offset=10, limit=100)
    assert everyone.total == rest.total == len(expected) and len(everyone.rows) == 10
    assert {row["account_id"] for row in everyone.rows + rest.rows} == set(expected)
    spends = [row["lifetime_spend"] for row in everyone.rows + rest.rows]
    assert spends == sorted(spends, reverse=True)
    over = data.account_list(ListFilter("budget", "100"))
    assert over.open_month == "2026-02"
    assert [(r["account_id"], r["spend"], r["monthly_budget"]) for r in over.rows] == [
        (BUDGET_ACCOUNT, Decimal("2.1"), Decimal(2))]
    assert data.account_list(ListFilter("budget", "106")).total == 0
    unpaid = data.account_list(ListFilter("invoices", "unpaid"))
    assert unpaid.total == len(unpaid.rows) == 7  # the ledger run's January invoices
    by_id = {row["invoice_id"]: row for row in unpaid.rows}
    part = by_id["inv-acct-000011-2026-01"]  # its latest invoice_settled: partially paid
    assert (part["status"], part["unpaid"]) == ("partially_paid", Decimal("12.472427"))
    assert part["amount_paid"] == part["amount"] - part["unpaid"] > 0
    assert {row["status"] for row in unpaid.rows} == {"open", "partially_paid"}
    assert all(row["due_date"] == date(2026, 2, 16) for row in unpaid.rows)
    assert [row["unpaid"] for row in unpaid.rows] == sorted(
        (row["unpaid"] for row in unpaid.rows), reverse=True)
    on_due_day = data.account_list(ListFilter("invoices", "overdue"), as_of=date(2026, 2, 16))
    day_after = data.account_list(ListFilter("invoices", "overdue"), as_of=date(2026, 2, 18))
    assert (on_due_day.total, day_after.total) == (0, 7)
    assert {row["days_overdue"] for row in day_after.rows} == {2}
    view = data.account(SUSPENDED_ACCOUNT)
    assert view is not None and view.send.source == "accounts_current"
    assert send_text(view.send) == SUSPENDED_BANNER
    assert [(p.status, p.start, p.end) for p in view.blocked_periods] == [
        ("suspended", SUSPENDED_AT.replace(microsecond=0), None)]
    budget = data.account(BUDGET_ACCOUNT)
    assert budget is not None and budget.send.source == "latest snapshot"
    assert send_text(budget.send) == "Can send"
    assert budget.budget_used_percent == Decimal("105.0")  # $2.10 of $2 in 2026-02


# -- a running dashboard and a client ---------------------------------------------------------


@contextmanager
def serving(data: DashboardData, token: str | None = None) -> Iterator[str]:
    """The dashboard app on a free loopback port, in a thread of its own; yields its base URL."""
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(build_app(data, "chdb://test", token), access_log_class=AccessLog,
                           access_log=logging.getLogger("dashboard"))
    loop.run_until_complete(runner.setup())
    site = web.TCPSite(runner, "127.0.0.1", 0)
    loop.run_until_complete(site.start())
    port = runner.addresses[0][1]
    thread = threading.Thread(target=loop.run_forever, name="dashboard-test", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(timeout=30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=30)
        loop.close()


class Reply(NamedTuple):
    status: int
    headers: http.client.HTTPMessage
    body: str


def fetch(url: str, method: str = "GET", headers: Mapping[str, str] | None = None) -> Reply:
    """One request, redirects not followed (the token redirect is under test)."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    try:
        connection.request(method, parts.path + (f"?{parts.query}" if parts.query else ""),
                           headers=dict(headers or {}))
        response = connection.getresponse()
        return Reply(response.status, response.headers, response.read().decode())
    finally:
        connection.close()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def dashboard_process(directory: Path, log_path: Path, token: str | None = None
                      ) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """``billing dashboard`` as a child process over the chdb ``directory`` on a free port,
    answering /healthz; yields its base URL and the process (its output goes to ``log_path``)."""
    port = free_port()
    env = {**os.environ, "BILLING_CLICKHOUSE_URL": f"chdb://{directory}"}
    env.pop(TOKEN_VARIABLE, None)
    if token is not None:
        env[TOKEN_VARIABLE] = token
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "commands.cli", "dashboard", "--port", str(port)],
            env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if fetch(base + "/healthz").status == 200:
                    break
            except OSError:
                pass
            assert process.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, f"no answer on {base}:\n{log_path.read_text()}"
            time.sleep(0.3)
        yield base, process
    finally:
        process.terminate()
        process.wait(timeout=30)
